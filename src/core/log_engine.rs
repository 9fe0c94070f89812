//! The event log as the rest of the core sees it, in one vocabulary whatever engine keeps
//! it: append an event (taken now with its id, handed to a log that answers later, or
//! refused), where a stream starts (its `Last-Event-ID` resolved against the log), the
//! sequence number a tick takes, the ids `reset` events carry, and the log's health and
//! metrics.
//!
//! Two engines sit behind it. The embedded **memory log** ([`super::event_log`]) answers at
//! once: an append is numbered, encoded and fanned out before the call returns. A **shared
//! log** ([`super::cluster`]: Redis Streams, spoken to by the driver's bus) answers later: an
//! append leaves as [`super::Output::Log`] and its answer comes back through
//! [`Core::handle_bus`]; a resume it cannot serve from this node's cache holds the stream
//! while the range is read. This module is the one place in the core that asks which engine
//! is configured: publishing, starting a stream, resuming and the write path only use what
//! it returns.

use std::rc::Rc;
use std::time::Instant;

use super::Core;
use super::client::ClientId;
use super::error::RequestError;
use super::event_log::Resume;
use super::metrics::Gauges;
use super::topic::TopicId;
use crate::bus::types::Publish;
use crate::sse::frame;

/// What the log did with an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::core) enum Appended {
    /// Taken, numbered and fanned out: its id (the memory log).
    Now(String),
    /// Handed to a log that answers later, under this token: the publisher's answer waits.
    Later(u64),
}

/// Where a new stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::core) enum Start {
    /// From what this node holds, with the `reset` the [`Resume`] implies.
    Here(Resume),
    /// Hold the client (head sent, live events collected) and read the events after offset
    /// `after` from the shared log first (after a `reset` `restart` when `restart`).
    Fetch { after: u64, restart: bool },
    /// The id is ahead of what this node has applied (its tail is catching up): hold the
    /// client at the live edge until events up to this gseq arrived, then skip to after it.
    Await { gseq: u64, offset: u64 },
    /// The log is not reachable yet: come back later (`retry:` and close).
    NotReady,
}

impl Core {
    /// Appends a validated event to `topic`. The memory log numbers, encodes and fans it out
    /// now; a shared log takes it later (a stdin line's outcome, `client` `None`, is only
    /// logged). Refused (503 + `Retry-After`) while a shared log is unreachable.
    pub(in crate::core) fn append_event(
        &mut self,
        client: Option<ClientId>,
        topic: &str,
        event: Option<&str>,
        id: Option<&str>,
        data: &str,
        now: Instant,
    ) -> Result<Appended, RequestError> {
        if self.cluster.is_some() {
            let publish = Publish {
                token: 0,
                topic: topic.to_owned(),
                event: event.map(str::to_owned),
                custom_id: id.map(str::to_owned),
                data: data.to_owned(),
                accepted_ms: self.wall.unix_millis(now),
            };
            return self
                .publish_to_bus(client, publish, now)
                .map(Appended::Later);
        }
        let t = self
            .log
            .topic_for(topic)
            .ok_or(RequestError::TooManyTopics)?;
        let gseq = self.log.assign_gseq();
        let event_id = match id {
            Some(i) => i.to_owned(),
            None => self.log.event_id(gseq),
        };
        let mut buf = Vec::with_capacity(data.len() + 32 + event_id.len());
        frame::encode_event(&mut buf, Some(&event_id), event, data);
        self.metrics.events_published += 1;
        self.append(now, t, gseq, Rc::from(buf), id);
        Ok(Appended::Now(event_id))
    }

    /// The sequence number a tick takes. A shared log numbers events by their offset in it,
    /// so a tick shares the newest number instead of taking one (it is never resumed from).
    pub(in crate::core) fn tick_seq(&mut self) -> u64 {
        if self.cluster.is_some() {
            self.log.last_gseq()
        } else {
            self.log.assign_gseq()
        }
    }

    /// Where a stream with `Last-Event-ID` `last` on `topics` starts.
    pub(in crate::core) fn stream_start(&self, last: Option<&str>, topics: &[TopicId]) -> Start {
        if self.cluster.is_some() {
            self.resolve_cluster(last, topics)
        } else {
            Start::Here(self.log.resolve(last))
        }
    }

    /// Begins a deferred start of the new stream `id` (its cursors at the live edge): a range
    /// read or a wait for the tail. Nothing for [`Start::Here`] and [`Start::NotReady`].
    pub(in crate::core) fn begin_deferred_start(
        &mut self,
        id: ClientId,
        start: Start,
        topics: &[&str],
    ) {
        match start {
            Start::Fetch { after, restart } => {
                let topics = topics.iter().map(|n| (*n).to_owned()).collect();
                self.begin_fetch(id, after, restart, topics);
            }
            Start::Await { gseq, offset } => self.await_applied(id, gseq, offset),
            Start::Here(_) | Start::NotReady => {}
        }
    }

    /// The id a `reset` `restart` carries (`<epoch>-0`, or this run's `<boot>-0`).
    pub(in crate::core) fn restart_reset_id(&self) -> String {
        match self.cluster.as_ref().and_then(|c| c.epoch()) {
            Some(epoch) => format!("{epoch}-0"),
            None => self.log.event_id(0),
        }
    }

    /// The id of the newest event applied (what a `reset` `too-old`/`unknown-id` carries).
    pub(in crate::core) fn newest_reset_id(&self) -> String {
        match self.cluster.as_ref() {
            Some(cl) => format!("{}-{}", cl.epoch().unwrap_or("0"), cl.last_offset()),
            None => self.log.last_event_id(),
        }
    }

    /// True while the log cannot take appends (a shared log not reachable): `/health`
    /// answers 503. The memory log is never down.
    pub fn bus_down(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| !c.is_connected())
    }

    /// True while the log refuses every publish outright (several in a row, none taken
    /// since): `/health` answers 503. The memory log never refuses.
    pub fn publishing_refused(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.publishing_refused())
    }

    /// True while a shared log's head has been known above what this node applied for at
    /// least `--health-apply-bound` (its tail connected but not keeping up, or stuck):
    /// `/health` answers 503. The memory log is always applied.
    pub fn not_applying_log(&self, now: Instant) -> bool {
        self.cluster_not_applying(now)
    }

    /// `/metrics`: the core's counters and gauges, then the log's own.
    pub(in crate::core) fn render_all_metrics(&self, gauges: &Gauges<'_>) -> String {
        let mut out = super::metrics::render(&self.metrics, gauges);
        self.metrics
            .latency
            .render(&mut out, self.cluster.is_some());
        self.render_cluster_metrics(&mut out);
        out
    }
}
