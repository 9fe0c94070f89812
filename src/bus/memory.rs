//! An in-memory stand-in for the bus, for the simulator and the core's tests: a
//! [`MemoryLog`] with the semantics of the Redis log (epochs, offsets without holes,
//! trimming, loss) and a [`MemoryTail`] per node that turns it into the same
//! [`BusReply`] sequences the real tail thread produces, with faults injected on demand
//! (disconnects, small or delayed batches, redelivery of seen offsets, epoch changes,
//! trims during an outage, a failover to a copy that missed the newest events). A
//! [`MemoryCommands`] per node answers requests as the command thread does. Both check the
//! log against the tail's fingerprint (`fingerprint.rs`) whenever they (re)connect, as the
//! Redis threads do. Pure and deterministic: no threads, no clock.

use super::fingerprint::{AtOffset, Delivered};
use super::types::{
    BusEvent, BusReply, BusRequest, ClusterId, FetchRange, Publish, PublishFailure, RangeReply,
    base36, page_len,
};
use std::collections::VecDeque;

/// The shared log, as Redis holds it.
#[derive(Clone, Debug)]
pub struct MemoryLog {
    epoch: String,
    /// The last offset handed out in this epoch (0: none).
    head: u64,
    /// Retained events, oldest first; offsets contiguous, ending at `head`.
    entries: VecDeque<BusEvent>,
    /// Retention bound (what `MAXLEN` does, exactly rather than approximately).
    max_len: usize,
    /// Which server holds the log: a failover moves it to another, and every connection to
    /// the old one drops.
    server: u64,
    /// Epochs this log started itself (when a node found it behind or rewritten).
    renewals: u64,
}

impl MemoryLog {
    pub fn new(epoch: &str, max_len: usize) -> MemoryLog {
        MemoryLog {
            epoch: epoch.to_owned(),
            head: 0,
            entries: VecDeque::new(),
            max_len: max_len.max(1),
            server: 0,
            renewals: 0,
        }
    }

    /// Which server holds the log (changed by [`MemoryLog::fail_over`]).
    pub fn server(&self) -> u64 {
        self.server
    }

    /// A failover to a copy that missed the newest `lost` retained events: the epoch stays,
    /// the head goes back, the next publishes reuse those offsets, and every connection to
    /// the old server drops.
    pub fn fail_over(&mut self, lost: usize) {
        for _ in 0..lost.min(self.entries.len()) {
            self.entries.pop_back();
            self.head -= 1;
        }
        self.server += 1;
    }

    /// What the log holds at `offset`.
    pub fn at(&self, offset: u64) -> AtOffset<'_> {
        match self.first_retained() {
            Some(first) if offset >= first => self
                .entries
                .get((offset - first) as usize)
                .map_or(AtOffset::Nothing, AtOffset::Event),
            _ => AtOffset::Nothing,
        }
    }

    /// What the hello script does when a node (re)connects, with the tail fingerprint's
    /// read-back: a log still in the epoch `position` names, whose head is below its offset
    /// or which holds another event where `delivered` was, starts a new epoch (as if lost).
    pub fn greet(&mut self, position: Option<(&str, u64)>, delivered: Option<&Delivered>) {
        let Some((epoch, offset)) = position else {
            return;
        };
        if epoch != self.epoch {
            return;
        }
        let rewritten = delivered.is_some_and(|d| d.rewritten(&self.epoch, self.at(d.offset)));
        if self.head < offset || rewritten {
            self.renewals += 1;
            let epoch = format!("r{}", base36(self.renewals));
            self.lose(&epoch);
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// The oldest retained offset, `None` when empty.
    pub fn first_retained(&self) -> Option<u64> {
        self.entries.front().map(|e| e.offset)
    }

    /// Appends, as the publish script does; answers `Published`.
    pub fn publish(&mut self, publish: &Publish) -> BusReply {
        self.head += 1;
        let id = ClusterId {
            epoch: self.epoch.clone(),
            offset: self.head,
        };
        self.entries.push_back(BusEvent {
            offset: self.head,
            id: id.clone(),
            topic: publish.topic.clone(),
            event: publish.event.clone(),
            custom_id: publish.custom_id.clone(),
            data: publish.data.clone(),
            accepted_ms: Some(publish.accepted_ms),
        });
        self.trim(self.max_len);
        BusReply::Published {
            token: publish.token,
            id,
        }
    }

    /// Keeps only the newest `keep` events (an `XTRIM`).
    pub fn trim(&mut self, keep: usize) {
        while self.entries.len() > keep {
            self.entries.pop_front();
        }
    }

    /// Redis lost everything: a new, empty epoch.
    pub fn lose(&mut self, new_epoch: &str) {
        self.epoch = new_epoch.to_owned();
        self.head = 0;
        self.entries.clear();
    }

    /// Up to `max` retained events with offsets after `after`.
    pub fn read_after(&self, after: u64, max: usize) -> Vec<BusEvent> {
        let skip = match self.first_retained() {
            Some(first) if after >= first => (after - first + 1) as usize,
            _ => 0,
        };
        self.entries.iter().skip(skip).take(max).cloned().collect()
    }

    /// Answers a head probe as the command thread does.
    pub fn probe(&self, token: u64) -> BusReply {
        BusReply::Head {
            token,
            epoch: self.epoch.clone(),
            head_offset: self.head,
        }
    }

    /// Answers a range fetch as the command thread does.
    pub fn range(&self, fetch: &FetchRange) -> RangeReply {
        let through = fetch.through_offset.unwrap_or(u64::MAX);
        let wanted = |e: &BusEvent| {
            fetch
                .topics
                .as_ref()
                .is_none_or(|topics| topics.contains(&e.topic))
        };
        let mut scanned: Vec<BusEvent> = self
            .read_after(fetch.after_offset, fetch.limit.max(1))
            .into_iter()
            .filter(|e| e.offset <= through)
            .collect();
        let kept = page_len(
            scanned
                .iter()
                .map(|e| if wanted(e) { e.data.len() } else { 0 }),
            fetch.max_bytes,
        );
        let cut = kept < scanned.len();
        scanned.truncate(kept);
        let last = scanned.last().map(|e| e.offset);
        let complete =
            !cut && (scanned.len() < fetch.limit.max(1) || last.is_some_and(|l| l >= through));
        let scanned_through = match (complete, fetch.through_offset, last) {
            (true, Some(t), _) => t.max(fetch.after_offset),
            (_, _, Some(last)) => last,
            (_, _, None) => fetch.after_offset,
        };
        let events = scanned.into_iter().filter(|e| wanted(e)).collect();
        RangeReply {
            token: fetch.token,
            epoch: self.epoch.clone(),
            first_retained_offset: self.first_retained(),
            events,
            scanned_through,
            complete,
        }
    }
}

/// The answer of a command side that cannot reach the log, for every kind of request: each
/// is refused as unavailable, naming its token.
pub fn unavailable(request: BusRequest, reason: &str) -> BusReply {
    match request {
        BusRequest::Publish(p) => BusReply::PublishFailed {
            token: p.token,
            reason: PublishFailure::Unavailable(reason.to_owned()),
        },
        BusRequest::FetchRange(f) => BusReply::RangeFailed {
            token: f.token,
            reason: reason.to_owned(),
        },
        BusRequest::ProbeHead { token } => BusReply::HeadFailed {
            token,
            reason: reason.to_owned(),
        },
    }
}

/// One node's tail over a [`MemoryLog`]: connection state and cursor, like the tail thread.
#[derive(Clone, Debug, Default)]
pub struct MemoryTail {
    epoch: Option<String>,
    cursor: u64,
    connected: bool,
    /// The fingerprint of the newest event handed over in the epoch followed (a rewind,
    /// which the real tail never does, does not move it back).
    delivered: Option<Delivered>,
    /// The log's server when it connected.
    server: u64,
}

impl MemoryTail {
    /// A tail that has not connected yet; its first [`MemoryTail::connect`] decides where it
    /// starts (after all but the newest `warm` events).
    pub fn new() -> MemoryTail {
        MemoryTail::default()
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The epoch followed and the newest offset seen in it (what the tail shares with the
    /// command side), `None` before the first greeting.
    pub fn position(&self) -> Option<(&str, u64)> {
        let delivered = self.delivered.as_ref().map_or(0, |d| d.offset);
        let epoch = self.epoch.as_deref()?;
        Some((epoch, self.cursor.max(delivered)))
    }

    /// The fingerprint of the newest event handed over in the epoch followed.
    pub fn delivered(&self) -> Option<&Delivered> {
        self.delivered.as_ref()
    }

    /// The greeting, after checking the log against the position and fingerprint (which
    /// may start a new epoch): `EpochChanged` if the log is not the one followed, then
    /// `Connected`.
    pub fn connect(&mut self, log: &mut MemoryLog, warm: u64) -> Vec<BusReply> {
        let position = self.position().map(|(e, o)| (e.to_owned(), o));
        log.greet(
            position.as_ref().map(|(e, o)| (e.as_str(), *o)),
            self.delivered.as_ref(),
        );
        self.server = log.server;
        let mut replies = Vec::new();
        match self.epoch.replace(log.epoch.clone()) {
            Some(previous) if previous != log.epoch => {
                replies.push(BusReply::EpochChanged {
                    previous,
                    epoch: log.epoch.clone(),
                });
                self.cursor = 0;
                self.delivered = None;
            }
            Some(_) => {}
            None => self.cursor = log.head.saturating_sub(warm),
        }
        self.connected = true;
        replies.push(BusReply::Connected {
            epoch: log.epoch.clone(),
            head_offset: log.head,
            first_retained_offset: log.first_retained(),
            after_offset: self.cursor,
        });
        replies
    }

    /// The connection dropped (once per outage, like the real tail).
    pub fn disconnect(&mut self, reason: &str) -> Option<BusReply> {
        std::mem::take(&mut self.connected).then(|| BusReply::Disconnected {
            reason: reason.to_owned(),
        })
    }

    /// The next batch of at most `batch` events, if connected and any are there. A log
    /// whose epoch changed under a connected tail is noticed here, like the real tail's
    /// epoch check: the greeting's replies come back instead. A log now on another server
    /// (a failover) dropped the connection: `Disconnected`.
    pub fn poll(&mut self, log: &mut MemoryLog, batch: usize) -> Vec<BusReply> {
        if !self.connected {
            return Vec::new();
        }
        if self.server != log.server {
            return self.disconnect("the server changed").into_iter().collect();
        }
        if self.epoch.as_deref() != Some(log.epoch.as_str()) {
            return self.connect(log, 0);
        }
        let events = log.read_after(self.cursor, batch.max(1));
        match events.last() {
            Some(last) => {
                self.cursor = last.offset;
                if self
                    .delivered
                    .as_ref()
                    .is_none_or(|d| last.offset >= d.offset)
                {
                    self.delivered = Some(Delivered::of(last));
                }
                vec![BusReply::Events {
                    events,
                    head_offset: log.head,
                }]
            }
            None => Vec::new(),
        }
    }

    /// Fault: the next batches start `back` offsets earlier (a redelivery of seen events,
    /// which the real tail never does but the core must survive).
    pub fn rewind(&mut self, back: u64) {
        self.cursor = self.cursor.saturating_sub(back);
    }
}

/// One node's command side over a [`MemoryLog`], like the command thread: its connection
/// drops when the log moves to another server (a failover), and every (re)connect checks
/// the log against the node's tail (its position and fingerprint) before anything is
/// served, as does every range read, so no range hands out a reused offset.
#[derive(Clone, Debug)]
pub struct MemoryCommands {
    /// The server connected to; `None` until the first request, or after a disconnect.
    server: Option<u64>,
    /// Entries one range page scans at most (the command thread's batch size).
    batch: usize,
}

impl MemoryCommands {
    /// A command side capping range pages at `batch` entries.
    pub fn new(batch: usize) -> MemoryCommands {
        MemoryCommands {
            server: None,
            batch: batch.max(1),
        }
    }

    /// The connection dropped (the next request reconnects).
    pub fn disconnect(&mut self) {
        self.server = None;
    }

    /// Answers `request` against `log`, reconnecting first if needed; `tail` is the same
    /// node's tail, whose position and fingerprint the log is checked against.
    pub fn serve(
        &mut self,
        log: &mut MemoryLog,
        tail: &MemoryTail,
        request: BusRequest,
    ) -> BusReply {
        if self.server != Some(log.server) {
            log.greet(tail.position(), tail.delivered());
            self.server = Some(log.server);
        }
        match request {
            BusRequest::Publish(p) => log.publish(&p),
            BusRequest::FetchRange(mut f) => {
                log.greet(tail.position(), tail.delivered());
                f.limit = f.limit.min(self.batch);
                BusReply::Range(log.range(&f))
            }
            BusRequest::ProbeHead { token } => log.probe(token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::types::{Delivery, classify};

    fn publish(log: &mut MemoryLog, topic: &str, data: &str) -> ClusterId {
        let reply = log.publish(&Publish {
            token: 0,
            topic: topic.into(),
            event: None,
            custom_id: None,
            data: data.into(),
            accepted_ms: 0,
        });
        match reply {
            BusReply::Published { id, .. } => id,
            other => panic!("{other:?}"),
        }
    }

    fn offsets(replies: &[BusReply]) -> Vec<u64> {
        replies
            .iter()
            .flat_map(|r| match r {
                BusReply::Events { events, .. } => events.iter().map(|e| e.offset).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn tails_see_one_order_in_batches() {
        let mut log = MemoryLog::new("e", 100);
        let mut tail = MemoryTail::new();
        assert!(matches!(
            &tail.connect(&mut log, 10)[..],
            [BusReply::Connected {
                after_offset: 0,
                ..
            }]
        ));
        for i in 0..5 {
            assert_eq!(publish(&mut log, "", &i.to_string()).offset, i + 1);
        }
        assert_eq!(offsets(&tail.poll(&mut log, 2)), vec![1, 2]);
        assert_eq!(offsets(&tail.poll(&mut log, 10)), vec![3, 4, 5]);
        assert!(tail.poll(&mut log, 10).is_empty());
    }

    #[test]
    fn an_outage_with_a_trim_shows_as_a_gap_and_redelivery_as_duplicates() {
        let mut log = MemoryLog::new("e", 100);
        let mut tail = MemoryTail::new();
        tail.connect(&mut log, 0);
        publish(&mut log, "", "1");
        assert_eq!(offsets(&tail.poll(&mut log, 10)), vec![1]);
        assert!(tail.disconnect("cut").is_some());
        assert!(tail.disconnect("cut").is_none());
        for i in 2..=10 {
            publish(&mut log, "", &i.to_string());
        }
        assert!(tail.poll(&mut log, 10).is_empty());
        log.trim(3);
        tail.connect(&mut log, 0);
        let got = offsets(&tail.poll(&mut log, 10));
        assert_eq!(got, vec![8, 9, 10]);
        assert_eq!(
            classify(1, got[0]),
            Delivery::Gap {
                missing_from: 2,
                missing_to: 7
            }
        );
        tail.rewind(2);
        assert_eq!(offsets(&tail.poll(&mut log, 10)), vec![9, 10]);
    }

    #[test]
    fn a_lost_log_is_an_epoch_change_connected_or_not() {
        let mut log = MemoryLog::new("a", 100);
        let mut tail = MemoryTail::new();
        tail.connect(&mut log, 0);
        publish(&mut log, "", "x");
        tail.poll(&mut log, 10);
        log.lose("b");
        publish(&mut log, "", "y");
        let replies = tail.poll(&mut log, 10);
        assert!(
            matches!(&replies[0], BusReply::EpochChanged { previous, epoch } if previous == "a" && epoch == "b")
        );
        assert!(matches!(
            &replies[1],
            BusReply::Connected {
                after_offset: 0,
                ..
            }
        ));
        assert_eq!(offsets(&tail.poll(&mut log, 10)), vec![1]);
    }

    #[test]
    fn ranges_match_the_redis_command_threads_answers() {
        let mut log = MemoryLog::new("e", 100);
        for i in 1..=30 {
            publish(
                &mut log,
                if i % 2 == 0 { "even" } else { "odd" },
                &i.to_string(),
            );
        }
        let fetch = |after, through, topics: Option<Vec<String>>, limit| FetchRange {
            token: 7,
            after_offset: after,
            through_offset: through,
            topics,
            limit,
            max_bytes: usize::MAX,
        };
        let of = |r: &RangeReply| r.events.iter().map(|e| e.offset).collect::<Vec<_>>();
        let all = log.range(&fetch(10, None, None, 100));
        assert_eq!(of(&all), (11..=30).collect::<Vec<_>>());
        assert!(all.complete && all.scanned_through == 30);
        let page = log.range(&fetch(10, None, None, 5));
        assert!(!page.complete && page.scanned_through == 15);
        let bounded = log.range(&fetch(10, Some(20), None, 100));
        assert_eq!(of(&bounded), (11..=20).collect::<Vec<_>>());
        assert!(bounded.complete && bounded.scanned_through == 20);
        // A byte budget cuts the page after the event that reaches it (data "11".."30": two
        // bytes each), counting only the topics asked for.
        let cut = log.range(&FetchRange {
            max_bytes: 6,
            ..fetch(10, None, None, 100)
        });
        assert_eq!(of(&cut), [11, 12, 13]);
        assert!(!cut.complete && cut.scanned_through == 13);
        let cut_even = log.range(&FetchRange {
            max_bytes: 4,
            ..fetch(10, None, Some(vec!["even".into()]), 100)
        });
        assert_eq!(of(&cut_even), [12, 14]);
        assert!(!cut_even.complete && cut_even.scanned_through == 14);
        let even = log.range(&fetch(10, None, Some(vec!["even".into()]), 100));
        assert_eq!(of(&even).len(), 10);
        log.trim(10);
        let trimmed = log.range(&fetch(10, None, None, 100));
        assert_eq!(trimmed.first_retained_offset, Some(21));
        assert!(trimmed.lost_events_after(10));
    }

    fn fetch_all(after: u64) -> BusRequest {
        BusRequest::FetchRange(FetchRange {
            token: 1,
            after_offset: after,
            through_offset: None,
            topics: None,
            limit: 100,
            max_bytes: usize::MAX,
        })
    }

    /// A failover to a copy that missed the newest events, whose offsets another writer
    /// reused: the tail's greeting reads back its last delivered offset and starts a new
    /// epoch; so does the command side's reconnect, before the tail noticed.
    #[test]
    fn a_rewritten_tail_is_a_new_epoch_for_the_tail_and_the_command_side() {
        for commands_first in [false, true] {
            let mut log = MemoryLog::new("e", 100);
            let mut tail = MemoryTail::new();
            let mut commands = MemoryCommands::new(10);
            tail.connect(&mut log, 0);
            for i in 1..=6 {
                publish(&mut log, "", &format!("old{i}"));
            }
            assert_eq!(
                offsets(&tail.poll(&mut log, 10)),
                (1..=6).collect::<Vec<_>>()
            );
            log.fail_over(3);
            assert_eq!((log.epoch(), log.head()), ("e", 3));
            for i in 4..=8 {
                assert_eq!(publish(&mut log, "", &format!("other{i}")).offset, i);
            }
            if commands_first {
                let BusReply::Range(r) = commands.serve(&mut log, &tail, fetch_all(2)) else {
                    panic!("a range reply");
                };
                assert_ne!(r.epoch, "e", "{r:?}");
                assert!(r.events.is_empty(), "{r:?}");
            }
            assert!(matches!(
                &tail.poll(&mut log, 10)[..],
                [BusReply::Disconnected { .. }]
            ));
            let replies = tail.connect(&mut log, 0);
            assert!(
                matches!(&replies[..], [BusReply::EpochChanged { previous, .. }, BusReply::Connected { after_offset: 0, .. }] if previous == "e"),
                "{replies:?}"
            );
            assert_ne!(log.epoch(), "e");
        }
    }

    /// Without a rewrite the fingerprint holds: a failover to a copy that kept everything
    /// delivered, or one trimmed past it, keeps the epoch.
    #[test]
    fn a_copy_holding_what_was_delivered_keeps_the_epoch() {
        let mut log = MemoryLog::new("e", 100);
        let mut tail = MemoryTail::new();
        let mut commands = MemoryCommands::new(10);
        tail.connect(&mut log, 0);
        for i in 1..=6 {
            publish(&mut log, "", &format!("old{i}"));
        }
        tail.poll(&mut log, 4);
        log.fail_over(2);
        publish(&mut log, "", "new5");
        let BusReply::Range(r) = commands.serve(&mut log, &tail, fetch_all(0)) else {
            panic!("a range reply");
        };
        assert_eq!((r.epoch.as_str(), r.events.len()), ("e", 5));
        tail.poll(&mut log, 10);
        assert!(matches!(
            &tail.connect(&mut log, 0)[..],
            [BusReply::Connected {
                after_offset: 4,
                ..
            }]
        ));
        assert_eq!(offsets(&tail.poll(&mut log, 10)), [5]);
        publish(&mut log, "", "new6");
        log.trim(1);
        log.fail_over(0);
        tail.poll(&mut log, 10);
        tail.connect(&mut log, 0);
        assert_eq!(log.epoch(), "e", "a trimmed entry proves nothing");
    }
}
