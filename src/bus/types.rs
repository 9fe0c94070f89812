//! The messages between the core and the bus, and the pure rules the core applies to them.
//!
//! Nothing here does I/O: the core consumes [`BusReply`] values and produces [`BusRequest`]
//! values, whether a real Redis sits behind them ([`super::BusHandle`]) or the simulator.

use std::fmt;

/// Longest epoch accepted in an id (the bus makes 13-character ones).
pub const MAX_EPOCH_LEN: usize = 32;

/// A position in the shared log, and the cluster-wide event id `<epoch>-<offset>`.
///
/// The epoch names one life of the log: it changes only when Redis lost the log (a restart
/// without persistence, a flush), so an id of another epoch cannot be placed in the current
/// log. The offset counts events across all topics from 1; offset 0 means "before the first
/// event" (a valid resume point: everything retained of that epoch follows).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterId {
    /// Lowercase base-36 digits, 1 to [`MAX_EPOCH_LEN`] of them.
    pub epoch: String,
    pub offset: u64,
}

impl ClusterId {
    /// Parses `<epoch>-<offset>`: the epoch lowercase base 36, the offset decimal without
    /// sign or leading zeros (one textual form per id). Anything else is `None`: the core
    /// then answers as for an unknown id (a custom id, or garbage).
    pub fn parse(text: &str) -> Option<ClusterId> {
        let (epoch, offset) = text.split_once('-')?;
        if !is_valid_epoch(epoch) || !is_canonical_decimal(offset) {
            return None;
        }
        Some(ClusterId {
            epoch: epoch.to_owned(),
            offset: offset.parse().ok()?,
        })
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.offset)
    }
}

/// Whether `epoch` can be the epoch part of an id: 1 to [`MAX_EPOCH_LEN`] of `[0-9a-z]`.
pub fn is_valid_epoch(epoch: &str) -> bool {
    !epoch.is_empty()
        && epoch.len() <= MAX_EPOCH_LEN
        && epoch
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

fn is_canonical_decimal(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 20
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
}

/// Formats `n` in lowercase base 36 (the epoch's alphabet).
pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(13);
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// A fresh epoch name: 13 base-36 characters from a random value.
pub fn new_epoch(random: u64) -> String {
    format!("{:0>13}", base36(random))
}

/// One event of the shared log, as every node receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusEvent {
    /// Its place in the global order (1, 2, 3, … within an epoch, no holes when published).
    pub offset: u64,
    /// The cluster-wide id, `<epoch>-<offset>`: what the publish answered.
    pub id: ClusterId,
    /// The topic; empty is the default stream.
    pub topic: String,
    /// The `event:` name, if the publisher gave one.
    pub event: Option<String>,
    /// A publisher-given id, sent as the frame's `id:` instead of [`Self::id`].
    pub custom_id: Option<String>,
    pub data: String,
    /// When the accepting node took the publish, in unix milliseconds of its wall clock
    /// (`sse_bus_apply_seconds`); `None` for entries written without it.
    pub accepted_ms: Option<u64>,
}

impl BusEvent {
    /// The id the SSE frame carries: the publisher's own, else the cluster id.
    pub fn frame_id(&self) -> String {
        match &self.custom_id {
            Some(custom) => custom.clone(),
            None => self.id.to_string(),
        }
    }
}

/// What the core asks of the bus. Every request has a token and gets exactly one reply
/// naming that token: [`BusReply::Published`]/[`BusReply::PublishFailed`] for a publish,
/// [`BusReply::Range`]/[`BusReply::RangeFailed`] for a range,
/// [`BusReply::Head`]/[`BusReply::HeadFailed`] for a head probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusRequest {
    Publish(Publish),
    FetchRange(FetchRange),
    /// Read the log's epoch and head offset through the command side (not the tail): how a
    /// node whose tail has been quiet learns whether the log moved without it.
    ProbeHead {
        token: u64,
    },
}

/// One round trip's work for a command thread: the requests taken together, each kind in
/// arrival order.
#[derive(Debug, Default)]
pub struct Batch {
    pub publishes: Vec<Publish>,
    pub ranges: Vec<FetchRange>,
    /// The tokens of head probes.
    pub probes: Vec<u64>,
}

/// Takes `first` and whatever else is already queued in `requests`, up to `batch` in all.
pub fn take_batch(
    first: BusRequest,
    requests: &std::sync::mpsc::Receiver<BusRequest>,
    batch: usize,
) -> Batch {
    let mut out = Batch::default();
    let mut taken = 0;
    let mut next = Some(first);
    while let Some(request) = next.take() {
        match request {
            BusRequest::Publish(p) => out.publishes.push(p),
            BusRequest::FetchRange(r) => out.ranges.push(r),
            BusRequest::ProbeHead { token } => out.probes.push(token),
        }
        taken += 1;
        if taken < batch {
            next = requests.try_recv().ok();
        }
    }
    out
}

/// Append one event to the shared log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Chosen by the core to match the reply to the waiting publisher.
    pub token: u64,
    pub topic: String,
    pub event: Option<String>,
    pub custom_id: Option<String>,
    pub data: String,
    /// The accepting node's wall clock when the core took the publish, unix milliseconds:
    /// stored with the entry so every node can measure how long it took to apply it.
    pub accepted_ms: u64,
}

/// Read retained events after an offset (a resume older than the local cache).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRange {
    pub token: u64,
    /// Events with offsets strictly greater than this.
    pub after_offset: u64,
    /// And at most this (inclusive); `None` is up to the head.
    pub through_offset: Option<u64>,
    /// Only these topics' events are returned (all of them are still scanned); `None` is all.
    pub topics: Option<Vec<String>>,
    /// At most this many log entries are scanned per request (and never more than
    /// [`super::BusConfig::batch`]: bounds the reply and Redis's work);
    /// [`RangeReply::scanned_through`] says where to continue.
    pub limit: usize,
    /// A page also ends with the event whose data takes the matching events' data to this
    /// many bytes (at least one entry is always scanned): it bounds what one page costs the
    /// resuming client.
    pub max_bytes: usize,
}

/// How many of a range read's scanned entries one page keeps: all of them, unless the
/// matching events' data (`sizes`, 0 for an entry that does not match) reaches `max_bytes`
/// first; then up to and including the entry that reached it.
pub fn page_len(sizes: impl IntoIterator<Item = usize>, max_bytes: usize) -> usize {
    let mut total = 0usize;
    let mut kept = 0;
    for size in sizes {
        kept += 1;
        total = total.saturating_add(size);
        if total >= max_bytes {
            break;
        }
    }
    kept
}

/// The answer to a [`FetchRange`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeReply {
    pub token: u64,
    /// The log's epoch when the range was read: events of another epoch than the one asked
    /// about do not continue the client's stream (the core answers `restart`).
    pub epoch: String,
    /// The oldest offset still in the log, `None` when it is empty.
    pub first_retained_offset: Option<u64>,
    /// The matching events, in offset order.
    pub events: Vec<BusEvent>,
    /// Every offset up to this one has been looked at: continue with `after_offset` set to it
    /// when it is below what was asked for. Equal to the request's `after_offset` when
    /// nothing was there.
    pub scanned_through: u64,
    /// True when the scan reached `through_offset` (or the log's end).
    pub complete: bool,
}

impl RangeReply {
    /// Whether events after `after_offset` were trimmed before they could be read: the
    /// client must get `reset` `too-old` instead of a silent hole.
    pub fn lost_events_after(&self, after_offset: u64) -> bool {
        match self.first_retained_offset {
            Some(first) => first > after_offset.saturating_add(1),
            None => false,
        }
    }
}

/// Why a publish was not accepted. The publisher gets `503` with `Retry-After` for all of
/// them; none leaves an id behind, except [`PublishFailure::Unknown`] (see there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishFailure {
    /// No connection to Redis (down, unreachable, reconnecting).
    Unavailable(String),
    /// The bus's queue is full: Redis is slower than the publishers.
    Overloaded,
    /// Redis answered with an error (out of memory, a script error, …).
    Rejected(String),
    /// The connection broke or timed out after the publish was sent: it may or may not be
    /// in the log (if it is, it reaches every node as usual).
    Unknown(String),
}

impl fmt::Display for PublishFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishFailure::Unavailable(why) => write!(f, "log unavailable: {why}"),
            PublishFailure::Overloaded => write!(f, "bus queue full"),
            PublishFailure::Rejected(why) => write!(f, "the log refused the publish: {why}"),
            PublishFailure::Unknown(why) => write!(f, "publish outcome unknown: {why}"),
        }
    }
}

/// What the bus tells the core. Delivered in the order the bus threads produced them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusReply {
    /// The tail (re)connected. `head_offset` is the newest offset in the log (0: none yet);
    /// the events after `after_offset` follow as [`BusReply::Events`]: a node that has seen
    /// nothing yet (first start, or after [`BusReply::EpochChanged`]) takes `after_offset`
    /// as its last seen offset, and its local logs hold every event from `after_offset + 1`.
    Connected {
        epoch: String,
        head_offset: u64,
        first_retained_offset: Option<u64>,
        after_offset: u64,
    },
    /// The tail lost Redis; it reconnects by itself with jittered backoff. Sent once per
    /// outage, not per failed attempt.
    Disconnected {
        reason: String,
    },
    /// Redis lost the log (its epoch is not the one the tail followed): offsets restart, and
    /// every event of the new epoch still retained follows as [`BusReply::Events`]. Comes
    /// right before the [`BusReply::Connected`] (with `after_offset` 0) of the greeting that
    /// saw it, whether that greeting follows a reconnect or a change seen while tailing.
    EpochChanged {
        previous: String,
        epoch: String,
    },
    /// New events in offset order (a batch of one `XREAD`), and the log's head offset as far
    /// as the tail knows it (for the lag metric and `/health`'s `not applying the log`).
    Events {
        events: Vec<BusEvent>,
        head_offset: u64,
    },
    Published {
        token: u64,
        id: ClusterId,
    },
    /// Entries no node of this deployment wrote were found in the log and moved out of its
    /// way (or skipped): each one is counted and logged, none reaches a client.
    Foreign {
        entries: u64,
    },
    PublishFailed {
        token: u64,
        reason: PublishFailure,
    },
    Range(RangeReply),
    RangeFailed {
        token: u64,
        reason: String,
    },
    /// The answer to [`BusRequest::ProbeHead`]: the log's epoch and the last offset handed
    /// out in it (0: none yet), as the command side read them.
    Head {
        token: u64,
        epoch: String,
        head_offset: u64,
    },
    /// A head probe the command side could not answer (the log unreachable, no epoch yet).
    HeadFailed {
        token: u64,
        reason: String,
    },
}

impl BusReply {
    /// The answer to head probe `token`: the (epoch, head offset) read, or why not.
    pub fn head(token: u64, read: Result<(String, u64), String>) -> BusReply {
        match read {
            Ok((epoch, head_offset)) => BusReply::Head {
                token,
                epoch,
                head_offset,
            },
            Err(reason) => BusReply::HeadFailed { token, reason },
        }
    }
}

/// How an arriving event's offset relates to the last offset the core applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Already applied (redelivery after a reconnect): drop it.
    Duplicate,
    /// The very next one: apply it.
    Next,
    /// Offsets `missing_from..=missing_to` were never seen and never will be (trimmed during
    /// an outage, or unreadable): clients that needed them get `reset` `too-old`; then apply.
    Gap { missing_from: u64, missing_to: u64 },
}

/// Classifies `offset` against `last_seen` (0 before any event of the epoch).
pub fn classify(last_seen: u64, offset: u64) -> Delivery {
    if offset <= last_seen {
        Delivery::Duplicate
    } else if offset == last_seen + 1 {
        Delivery::Next
    } else {
        Delivery::Gap {
            missing_from: last_seen + 1,
            missing_to: offset - 1,
        }
    }
}

/// Where a client resuming with a cluster id stands against the log the node follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Send the events with offsets greater than this one (from the local cache, or from a
    /// [`FetchRange`] when the cache starts later), then live ones.
    After(u64),
    /// The id is of another epoch: `reset` `restart`, then every retained event.
    Restart,
    /// Events the client missed were trimmed: `reset` `too-old`, then live events.
    TooOld,
    /// The id names an offset the log never reached: `reset` `unknown-id`, then live events.
    Unknown,
}

/// Decides a resume from `id` given the node's view of the log: its `epoch`, the
/// `first_retained` offset (the oldest event still in Redis, or anything larger if unknown:
/// erring towards a fetch that finds out) and the newest offset `head` known to exist.
pub fn resume(id: &ClusterId, epoch: &str, first_retained: u64, head: u64) -> Resume {
    if id.epoch != epoch {
        Resume::Restart
    } else if id.offset > head {
        Resume::Unknown
    } else if id.offset.saturating_add(1) < first_retained {
        Resume::TooOld
    } else {
        Resume::After(id.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for text in ["a-0", "mwuvs048-7", "0-18446744073709551615", "z9-10"] {
            let id = ClusterId::parse(text).unwrap();
            assert_eq!(id.to_string(), text);
        }
        let id = ClusterId::parse("k3x9-42").unwrap();
        assert_eq!(id.epoch, "k3x9");
        assert_eq!(id.offset, 42);
    }

    #[test]
    fn a_page_ends_with_the_event_that_reaches_its_bytes() {
        assert_eq!(page_len([10, 10, 10], 100), 3, "all within");
        assert_eq!(page_len([10, 10, 10], 20), 2, "the one reaching it is kept");
        assert_eq!(page_len([10, 10, 10], 15), 2);
        assert_eq!(page_len([50, 0, 0], 10), 1, "at least one, however large");
        assert_eq!(
            page_len([0, 0, 5, 5], 5),
            3,
            "entries of other topics cost nothing"
        );
        assert_eq!(page_len([], 5), 0);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for text in [
            "",
            "-",
            "-1",
            "abc",
            "abc-",
            "ABC-1",
            "ab c-1",
            "abc-01",
            "abc-+1",
            "abc--1",
            "abc-1-2",
            "abc-1 ",
            "abc-18446744073709551616",
            "abc-99999999999999999999",
            "abc-١",
            &format!("{}-1", "a".repeat(MAX_EPOCH_LEN + 1)),
        ] {
            assert_eq!(ClusterId::parse(text), None, "{text:?}");
        }
        assert!(ClusterId::parse(&format!("{}-1", "a".repeat(MAX_EPOCH_LEN))).is_some());
    }

    #[test]
    fn base36_formats_the_epoch_alphabet() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(u64::MAX), "3w5e11264sgsf");
        assert!(is_valid_epoch(&base36(u64::MAX)));
    }

    #[test]
    fn delivery_drops_duplicates_and_reports_gaps() {
        assert_eq!(classify(0, 1), Delivery::Next);
        assert_eq!(classify(5, 6), Delivery::Next);
        assert_eq!(classify(5, 5), Delivery::Duplicate);
        assert_eq!(classify(5, 1), Delivery::Duplicate);
        assert_eq!(
            classify(5, 9),
            Delivery::Gap {
                missing_from: 6,
                missing_to: 8
            }
        );
        assert_eq!(
            classify(0, 2),
            Delivery::Gap {
                missing_from: 1,
                missing_to: 1
            }
        );
    }

    #[test]
    fn resume_decisions() {
        let id = |e: &str, o| ClusterId {
            epoch: e.into(),
            offset: o,
        };
        // Same epoch, everything after 10 retained (first retained 11): exact resume.
        assert_eq!(resume(&id("e", 10), "e", 11, 20), Resume::After(10));
        assert_eq!(resume(&id("e", 10), "e", 1, 20), Resume::After(10));
        // The head itself: nothing missed.
        assert_eq!(resume(&id("e", 20), "e", 1, 20), Resume::After(20));
        // Event 11 was trimmed (first retained 12): a hole.
        assert_eq!(resume(&id("e", 10), "e", 12, 20), Resume::TooOld);
        // Offset 0 of an epoch whose start was trimmed.
        assert_eq!(resume(&id("e", 0), "e", 2, 20), Resume::TooOld);
        assert_eq!(resume(&id("e", 0), "e", 1, 20), Resume::After(0));
        assert_eq!(resume(&id("old", 10), "e", 1, 20), Resume::Restart);
        assert_eq!(resume(&id("e", 21), "e", 1, 20), Resume::Unknown);
    }

    #[test]
    fn range_reply_detects_trimmed_events() {
        let reply = |first| RangeReply {
            token: 1,
            epoch: "e".into(),
            first_retained_offset: first,
            events: vec![],
            scanned_through: 0,
            complete: true,
        };
        assert!(!reply(Some(11)).lost_events_after(10));
        assert!(reply(Some(12)).lost_events_after(10));
        assert!(!reply(Some(3)).lost_events_after(10));
        assert!(!reply(None).lost_events_after(10));
        assert!(!reply(Some(1)).lost_events_after(0));
    }

    #[test]
    fn frame_id_prefers_the_publishers_id() {
        let mut event = BusEvent {
            offset: 3,
            id: ClusterId {
                epoch: "e".into(),
                offset: 3,
            },
            topic: String::new(),
            event: None,
            custom_id: None,
            data: "x".into(),
            accepted_ms: None,
        };
        assert_eq!(event.frame_id(), "e-3");
        event.custom_id = Some("order-17".into());
        assert_eq!(event.frame_id(), "order-17");
    }
}
