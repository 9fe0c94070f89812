//! The model (the oracle): what each client must receive, computed from the operations and
//! from what the server answered: per-topic retention, publisher ids, the resume rules, the
//! reset event.
//!
//! **Ids, from the outside.** The model numbers the events it saw the server append (a
//! publish answered, a tick counted) 1, 2, 3, … in that order, ticks and events with a
//! publisher-given id included: the README's `<boot>-<n>`, "`n` a sequence number across all
//! topics", with `boot` the start time in milliseconds in base 36, which the model computes
//! from the start time the simulator gives the core ([`boot_prefix`]). Each number it gives
//! an event is checked against what the server says: the id [`Core::publish`] returns, the
//! body of a `POST /publish` answer, the `id:` of every frame a client receives, and the id
//! on every `reset`.
//!
//! **Resume, from the outside** ([`Sim::resolve`]): a `Last-Event-ID` names what the model saw
//! issued, else is read with the README's grammar: a publisher-given id names the newest
//! event published with it, while that event is retained by the model's own retention; an id
//! of this run names the event the model numbered so (a tick's or a publisher-named
//! event's number too, though no frame carried it: the numbering is one sequence), and
//! `<boot>-0`, the id a `restart` reset carries, the start of the run; a number it has not
//! given yet is unknown; an id of another run is an earlier run; anything else is unknown.
//! Then each topic replays its retained events after that place, unless it may have lost
//! one of them (`too-old`): evicted by its retention, or dropped by any recycling of the
//! topic table before the topic was given its name (the table forgets names).
//!
//! What the model shares with the core, exactly (everything else is written here from the
//! README, never taken from the core: no `core::event_log`, no id parsing or numbering, no
//! retention, no topic table, no validation):
//! - the SSE encoder: [`frame::encode_event`] and [`frame::encode_retry`] give the bytes of
//!   each expected frame (tested on its own; clients also decode every frame with the WHATWG
//!   parser, and the model checks the type, data and id it dispatches);
//! - the clients' WHATWG parser ([`Parser`], tested on its own with the spec's vectors);
//! - the stream head's bytes ([`STREAM_HEAD`]);
//! - the tick's text, [`crate::timefmt::tick_text`] (the data of a tick event);
//! - the configuration the core runs with ([`SimConfig::config`]);
//! - what it observes of the core through its interface: the counters `events_published`,
//!   `ticks`, `skipped_forward` and `responses(503)` of [`Core::metrics`] (that an event was
//!   appended, a client skipped, a request refused), [`Core::is_streaming`] and
//!   [`Core::streaming_clients`] (when a stream request became a stream, or met the client
//!   limit), and the ids publishes are answered with (checked, as above).

use chrono::{DateTime, Utc};

use super::*;

impl Sim {
    /// Where a `Last-Event-ID` (empty or absent: none) resumes, decided from what the model
    /// saw the server issue and the README's id grammar (see the module documentation).
    pub(super) fn resolve(&self, last: Option<&str>) -> Resume {
        let Some(last) = last.filter(|s| !s.is_empty()) else {
            return Resume::Fresh;
        };
        // A publisher-given id: after the newest event published with it, while retained
        // (forgotten, it is read like any other id below).
        if let Some(&e) = self.by_custom_id.get(last)
            && self.retained(e)
        {
            return Resume::After(number_of(e));
        }
        match IdForm::of(last) {
            IdForm::Run { boot, .. } if boot != self.boot => Resume::EarlierRun,
            // The start of this run: what the `restart` reset's id names.
            IdForm::Run { n: 0, .. } => Resume::After(0),
            IdForm::Run { n, .. } => match self.numbered(n) {
                Some(e) => Resume::After(number_of(e)),
                None => Resume::Unknown,
            },
            IdForm::Malformed => Resume::Unknown,
        }
    }

    /// The event the model numbered `n` (index into `events`), if it has given that number.
    fn numbered(&self, n: u64) -> Option<usize> {
        let e = usize::try_from(n.checked_sub(1)?).ok()?;
        (e < self.events.len()).then_some(e)
    }

    /// The newest number the model gave an event (0 before any).
    pub(super) fn newest_number(&self) -> u64 {
        self.events.len().checked_sub(1).map_or(0, number_of)
    }

    /// The newest number the model gave an event of one of the topics `names` (indices into
    /// [`TOPICS`]; 0 if none).
    pub(super) fn newest_on(&self, names: &[usize]) -> u64 {
        let on = |e: &MEvent| names.contains(&self.topics[e.topic].name);
        self.events.iter().rposition(on).map_or(0, number_of)
    }

    /// The id of the next event the server appends: the publisher-given `custom`, else
    /// `<boot>-<n>` with the next number.
    pub(super) fn next_event_id(&self, custom: Option<&str>) -> String {
        match custom {
            Some(c) => c.to_owned(),
            None => format!("{}-{}", self.boot, self.newest_number() + 1),
        }
    }

    /// Whether event `e` (index into `events`) is still in its topic's history, by the
    /// model's retention.
    fn retained(&self, e: usize) -> bool {
        let ev = &self.events[e];
        ev.local_seq >= self.topics[ev.topic].first_seq
    }

    /// The core made a connection a stream client: compute what it must receive.
    pub(super) fn subscribe(&mut self, ci: usize) -> Result<(), String> {
        let Some(want) = self.conns[ci].want_stream.take() else {
            return Ok(());
        };
        // The topics, in request order, as the table gives them (created or recycled).
        let mut topics = Vec::new();
        for &name in &want.topics {
            let Some(t) = self.model_topic_for(name, &topics) else {
                return Err(format!(
                    "connection {ci}: streamed topic {:?}, but every topic has subscribers in \
                     the model's table (503 expected)",
                    TOPICS[name]
                ));
            };
            topics.push(t);
        }
        if want.topics.contains(&0) {
            topics.push(TICK);
        }
        let resume = self.resolve(want.last_id.as_deref());
        let mut gap = matches!(resume, Resume::Unknown | Resume::EarlierRun);
        let mut replaying = false;
        let mut starts = Vec::new();
        for &t in &topics {
            let mt = &self.topics[t];
            let start = match resume {
                _ if t == TICK => mt.end_seq(),
                Resume::Fresh | Resume::Unknown => mt.end_seq(),
                Resume::EarlierRun => mt.first_seq,
                Resume::After(n) => mt.resume_after(n).unwrap_or_else(|| {
                    gap = true;
                    mt.end_seq()
                }),
            };
            replaying |= start < mt.end_seq();
            starts.push((t, start));
        }
        self.reach_resume_edges(want.last_id.as_deref(), resume, &starts);
        let mut expected = Vec::new();
        if let Some(retry) = self.cfg.retry {
            let mut b = Vec::new();
            frame::encode_retry(&mut b, retry.as_millis() as u64);
            expected.push(ExpFrame {
                bytes: b.into(),
                event: None,
                model: None,
            });
        }
        if gap {
            // The reset's id: where to resume next time (the start of this run, or its newest
            // event; none when events are replayed after the reset: theirs follow).
            let start = format!("{}-0", self.boot);
            let newest = format!("{}-{}", self.boot, self.newest_number());
            let (reason, gap_id) = match resume {
                Resume::EarlierRun => ("restart", Some(start)),
                Resume::Unknown => ("unknown-id", Some(newest)),
                _ => ("too-old", (!replaying).then_some(newest)),
            };
            self.coverage.reach(match reason {
                "restart" => Reach::ResetRestart,
                "unknown-id" => Reach::ResetUnknownId,
                _ => Reach::ResetTooOld,
            });
            let data = format!("{{\"reason\":\"{reason}\"}}");
            let mut b = Vec::new();
            frame::encode_event(&mut b, gap_id.as_deref(), Some("reset"), &data);
            expected.push(ExpFrame {
                bytes: b.into(),
                event: Some(Expected {
                    event_type: "reset".into(),
                    data,
                    id: gap_id,
                }),
                model: None,
            });
        }
        for e in &self.events {
            if starts
                .iter()
                .any(|&(t, s)| t == e.topic && e.local_seq >= s)
            {
                expected.push(e.frame.clone());
            }
        }
        if replaying {
            self.coverage.reach(Reach::Replayed);
        }
        let c = &mut self.conns[ci];
        c.stream = Some(StreamState {
            topics,
            head_at: c.raw.len(),
            expected,
            matched: 0,
            pos: c.raw.len() + STREAM_HEAD.len(),
            parser: Parser::new(),
            dispatched: Vec::new(),
            received_frame_bytes: 0,
            last_frame: None,
        });
        self.trace("stream", ci as u64, 0);
        Ok(())
    }

    /// Counts the resumes where an off-by-one in resolving an id would show: one past the
    /// newest number, from a retained event of the client's topics (replaying it would be a
    /// duplicate), right before one (skipping it would lose it).
    fn reach_resume_edges(&mut self, last: Option<&str>, resume: Resume, starts: &[(usize, u64)]) {
        let replays = |e: &MEvent| {
            starts
                .iter()
                .any(|&(t, s)| t != TICK && t == e.topic && e.local_seq >= s)
        };
        let subscribed = |e: &MEvent| starts.iter().any(|&(t, _)| t != TICK && t == e.topic);
        let past_newest = format!("{}-{}", self.boot, self.newest_number() + 1);
        match resume {
            Resume::Unknown if last == Some(past_newest.as_str()) => {
                self.coverage.reach(Reach::ResumedPastNewest);
            }
            Resume::After(n) => {
                if let Some(e) = self.numbered(n)
                    && self.retained(e)
                    && subscribed(&self.events[e])
                {
                    self.coverage.reach(Reach::ResumedFromRetained);
                }
                if let Some(e) = n.checked_add(1).and_then(|next| self.numbered(next))
                    && replays(&self.events[e])
                {
                    self.coverage.reach(Reach::ResumedBeforeNext);
                }
            }
            _ => {}
        }
    }

    /// Records an appended event: retention, publisher ids, subscribers' expectations.
    pub(super) fn model_append(
        &mut self,
        topic: usize,
        id: Option<&str>,
        event: Option<&str>,
        data: &str,
        custom: Option<String>,
    ) -> Result<(), String> {
        let number = self.newest_number() + 1;
        let mut bytes = Vec::new();
        frame::encode_event(&mut bytes, id, event, data);
        self.max_frame = self.max_frame.max(bytes.len());
        let len = bytes.len();
        if let Some(c) = custom {
            // A reused id now names this event (the older ones no longer resolve by it).
            self.by_custom_id.insert(c, self.events.len());
        }
        let (max_events, max_bytes) = (self.cfg.history.max(1), self.cfg.history_bytes);
        self.appends += 1;
        let mut evicted = false;
        let mt = &mut self.topics[topic];
        mt.last_used = self.appends;
        let local_seq = mt.end_seq();
        mt.log.push_back((number, len));
        mt.bytes += len;
        while mt.log.len() > 1 && (mt.log.len() > max_events || mt.bytes > max_bytes) {
            if let Some((n, l)) = mt.log.pop_front() {
                mt.bytes -= l;
                mt.first_seq += 1;
                mt.lost = Some(n);
                evicted = true;
            }
        }
        if evicted {
            self.coverage.reach(Reach::HistoryEvicted);
        }
        let ef = ExpFrame {
            bytes: bytes.into(),
            event: Some(Expected {
                event_type: event.unwrap_or("message").to_owned(),
                data: normalise_line_breaks(data),
                id: id.map(str::to_owned),
            }),
            model: Some(self.events.len()),
        };
        self.events.push(MEvent {
            topic,
            local_seq,
            frame: ef.clone(),
        });
        for c in &mut self.conns {
            if let Some(s) = &mut c.stream
                && c.closed.is_none()
                && s.topics.contains(&topic)
            {
                s.expected.push(ef.clone());
            }
        }
        self.appended.push(topic);
        self.trace("append", number, topic as u64);
        Ok(())
    }
}

/// A valid `event` or `id` value as the protocol rules say (1 to 256 bytes, no CR, LF or
/// NUL), written here rather than taken from the core.
pub(super) fn valid_field(v: &str) -> bool {
    !v.is_empty() && v.len() <= 256 && !v.contains(['\r', '\n', '\0'])
}

/// The number the model gives the event at index `e` of `Sim::events`.
fn number_of(e: usize) -> u64 {
    e as u64 + 1
}

/// A `Last-Event-ID` read with the README's grammar, `<boot>-<n>`.
enum IdForm<'a> {
    /// `boot`: a start time in milliseconds in base 36 (1 to 13 of `0-9a-z`, as a `u64` is
    /// written); `n`: a number as the server writes one (decimal, no sign, no leading zero;
    /// written otherwise it was never issued, though the simulator sends no such id).
    Run { boot: &'a str, n: u64 },
    /// Not of that form: never issued.
    Malformed,
}

impl<'a> IdForm<'a> {
    fn of(id: &'a str) -> IdForm<'a> {
        let Some((boot, n)) = id.split_once('-') else {
            return IdForm::Malformed;
        };
        let boot_ok = (1..=13).contains(&boot.len())
            && boot.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z'));
        let n_ok = !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'));
        match n.parse() {
            Ok(n) if boot_ok && n_ok => IdForm::Run { boot, n },
            _ => IdForm::Malformed,
        }
    }
}

/// This run's id prefix: the start time in milliseconds, in base 36 (README, "Ids").
pub(super) fn boot_prefix(start: DateTime<Utc>) -> String {
    let mut ms = u64::try_from(start.timestamp_millis()).unwrap_or(0);
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((ms % 36) as u32, 36).unwrap_or('0'));
        ms /= 36;
        if ms == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}
