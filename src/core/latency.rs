//! Latency histograms: how long an event takes from entering this node's log to the
//! kernel taking its frame for each subscriber (`sse_delivery_seconds`) and for the last of
//! them (`sse_fanout_seconds`), and in cluster mode from its publish to its application here
//! (`sse_bus_apply_seconds`).
//!
//! The per-event state lives on the event's log entry ([`Fanout`]), not on clients: a
//! client costs nothing more. An entry counts the streams that have it pending (`waiting`):
//! set to the topic's subscribers when it is appended, raised for a stream that starts
//! before it (a resume from the cache), lowered when a stream's write completes its frame,
//! when a stream ends, and when a stream's cursor is moved past it unwritten (the `latest`
//! policy, an epoch change, a held resume released). The invariant
//! ([`Core::check_fanout_counts`]): `waiting` equals the cursors at or before the entry plus
//! the streams with its frame partly written.
//!
//! Definitions (what the README states):
//! - a delivery is observed when the kernel takes the last byte of the frame for a stream,
//!   while the event's fan-out is open; a replay after it closed (a resume of an old event)
//!   is not a live delivery and is not observed;
//! - the fan-out closes, and is observed once, when `waiting` reaches 0; its value is the
//!   latency of the latest delivery, so streams that ended or were skipped past it before
//!   taking it do not hold it open. An event that falls out of the log while open is
//!   observed then, with the latency of its latest delivery. An event nobody took (no
//!   subscriber, or every one left first) is not observed;
//! - the clock starts when the event is appended here: at publish for the memory log, when
//!   the tail applies it in cluster mode (the bus's own leg is `sse_bus_apply_seconds`).
//! - ticks are events: they count like publishes.
//!
//! Cost: per delivery a decrement, a flag and, for the delivery histogram, a comparison
//! with the current run (deliveries of one event written at one instant, added to the
//! histogram together when the next one differs, and included whenever it is read); the
//! subtraction and the bucket search happen once per run. Each retained log entry grows by
//! 40 bytes; a client by nothing.
//!
//! A frame partly written is found again, when it completes, as the entry just before one of
//! the stream's cursors holding the same `Rc` ([`partial_entry`]); an entry evicted meanwhile
//! is not found and the delivery is not observed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Core;
use super::client::{Client, ClientId, Cursor};
use super::event_log::EventLog;
use super::histogram::Histogram;
use super::topic::Entry;

/// The latency histograms of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Append → frame written, per live delivery, except those of `run`.
    delivery: Histogram,
    /// The latest deliveries not yet in `delivery`: one event's to many streams in one drain
    /// share its append time and the write time, so they are counted together (a compare
    /// and an increment each, not a subtraction and a bucket search).
    run: Option<Run>,
    /// Append → frame written to the last stream that had it pending, per event.
    pub fanout: Histogram,
    /// Cluster mode: publish accepted (any node, wall clock) → applied on this node.
    pub bus_apply: Histogram,
}

/// Deliveries with one append time, written at one instant.
#[derive(Debug, Clone, Copy)]
struct Run {
    appended: Instant,
    at: Instant,
    count: u64,
}

impl Latency {
    /// One delivery, of an event appended at `appended`, written at `now`.
    #[inline]
    fn deliver(&mut self, appended: Instant, now: Instant) {
        if let Some(r) = &mut self.run
            && r.appended == appended
            && r.at == now
        {
            r.count += 1;
            return;
        }
        if let Some(r) = self.run.replace(Run {
            appended,
            at: now,
            count: 1,
        }) {
            self.delivery
                .observe_n(r.at.saturating_duration_since(r.appended), r.count);
        }
    }

    /// The delivery histogram, every delivery so far included.
    pub fn delivery(&self) -> Histogram {
        let mut h = self.delivery.clone();
        if let Some(r) = self.run {
            h.observe_n(r.at.saturating_duration_since(r.appended), r.count);
        }
        h
    }

    /// Appends the three histograms' text (`sse_bus_apply_seconds` only in cluster mode).
    pub fn render(&self, out: &mut String, cluster: bool) {
        self.fanout.render(
            out,
            "sse_fanout_seconds",
            "Per event: appended to this node's log to its frame written to the last subscriber that had it pending.",
        );
        self.delivery().render(
            out,
            "sse_delivery_seconds",
            "Per delivery: appended to this node's log to the frame written to that subscriber.",
        );
        if cluster {
            self.bus_apply.render(
                out,
                "sse_bus_apply_seconds",
                "Per event read from the shared log: publish accepted (wall clock of the accepting node) to applied here; includes clock skew between hosts.",
            );
        }
    }
}

/// One event's fan-out, kept on its log entry. Cells: the write path changes it through the
/// shared borrow it reads frames with.
#[derive(Debug)]
pub struct Fanout {
    /// When the event entered this node's log.
    appended: Instant,
    /// Streams with the event pending (see the module documentation).
    waiting: Cell<u32>,
    /// Not observed yet: deliveries count, and the fan-out is observed when `waiting` hits 0.
    open: Cell<bool>,
    /// When the latest delivery was written, while open.
    latest: Cell<Option<Instant>>,
}

impl Fanout {
    /// An event appended at `now` for `waiting` subscribers (none: closed from the start).
    pub fn new(now: Instant, waiting: usize) -> Fanout {
        let waiting = u32::try_from(waiting).unwrap_or(u32::MAX);
        Fanout {
            appended: now,
            waiting: Cell::new(waiting),
            open: Cell::new(waiting > 0),
            latest: Cell::new(None),
        }
    }

    /// Streams with the event pending.
    pub fn waiting(&self) -> u32 {
        self.waiting.get()
    }

    /// A stream took the last byte of the frame at `now`.
    #[inline]
    pub fn delivered(&self, now: Instant, h: &mut Latency) {
        let waiting = self.waiting.get().saturating_sub(1);
        self.waiting.set(waiting);
        if self.open.get() {
            h.deliver(self.appended, now);
            self.latest.set(Some(now));
            if waiting == 0 {
                h.fanout
                    .observe(now.saturating_duration_since(self.appended));
                self.open.set(false);
            }
        }
    }

    /// A stream no longer has the event pending without taking it (ended, skipped past it).
    pub fn released(&self, h: &mut Latency) {
        let waiting = self.waiting.get().saturating_sub(1);
        self.waiting.set(waiting);
        if waiting == 0 {
            self.close(h);
        }
    }

    /// A stream that starts before the event (a resume) has it pending.
    pub fn joined(&self) {
        self.waiting.set(self.waiting.get().saturating_add(1));
    }

    /// The fan-out ends (every stream done with it, or the event leaves the log): observed
    /// once, if anyone took it.
    pub fn close(&self, h: &mut Latency) {
        if self.open.replace(false)
            && let Some(at) = self.latest.get()
        {
            h.fanout
                .observe(at.saturating_duration_since(self.appended));
        }
    }
}

/// The log entry whose frame is the stream's partly written one: the entry just before one
/// of its cursors, holding the same frame.
pub fn partial_entry<'a>(
    log: &'a EventLog,
    cursors: &[Cursor],
    frame: &Rc<[u8]>,
) -> Option<&'a Entry> {
    cursors.iter().find_map(|cur| {
        let e = log.topic(cur.topic).get(cur.next.checked_sub(1)?)?;
        Rc::ptr_eq(&e.frame, frame).then_some(e)
    })
}

/// The partly written frame's entry of a streaming client, if any.
fn partial_of<'a>(log: &'a EventLog, c: &Client) -> Option<&'a Entry> {
    let frame = c.pending()?.frame()?;
    partial_entry(log, c.cursors(), frame)
}

impl Core {
    /// A stream starts with its cursors placed (`stream.rs`): the events already in the log
    /// after a cursor are pending for it.
    pub(super) fn join_pending(&self, id: ClientId) {
        let Some(c) = self.client(id) else { return };
        for cur in c.cursors() {
            let t = self.log.topic(cur.topic);
            for seq in cur.next.max(t.first_seq())..t.end_seq() {
                if let Some(e) = t.get(seq) {
                    e.fanout.joined();
                }
            }
        }
    }

    /// A stream ends (`Core::leave_stream`, before its cursors are taken): nothing it has
    /// pending waits for it any more.
    pub(super) fn release_pending(&mut self, id: ClientId) {
        let Some(c) = self.connections.get(id) else {
            return;
        };
        if let Some(e) = partial_of(&self.log, c) {
            e.fanout.released(&mut self.metrics.latency);
        }
        for cur in c.cursors() {
            let t = self.log.topic(cur.topic);
            for seq in cur.next.max(t.first_seq())..t.end_seq() {
                if let Some(e) = t.get(seq) {
                    e.fanout.released(&mut self.metrics.latency);
                }
            }
        }
    }

    /// Moves a stream's cursors forward to `to` (one position per cursor, in order) without
    /// writing what they pass: those events no longer wait for it. A partly written frame
    /// whose cursor moves is released too (it is still written, but no longer found).
    pub(super) fn move_cursors(&mut self, id: ClientId, to: &[u64]) {
        let Some(c) = self.connections.get(id) else {
            return;
        };
        let h = &mut self.metrics.latency;
        let log = &self.log;
        let partial = c.pending().and_then(|p| p.frame()).and_then(|frame| {
            c.cursors().iter().zip(to).find_map(|(cur, &next)| {
                let e = log.topic(cur.topic).get(cur.next.checked_sub(1)?)?;
                Rc::ptr_eq(&e.frame, frame).then_some((e, next != cur.next))
            })
        });
        if let Some((e, true)) = partial {
            e.fanout.released(h);
        }
        for (cur, &next) in c.cursors().iter().zip(to) {
            let t = self.log.topic(cur.topic);
            for seq in cur.next.max(t.first_seq())..next.min(t.end_seq()) {
                if let Some(e) = t.get(seq) {
                    e.fanout.released(h);
                }
            }
        }
        if let Some(c) = self.connections.get_mut(id) {
            for (cur, &next) in c.cursors_mut().iter_mut().zip(to) {
                cur.next = next;
            }
        }
    }

    /// Cluster mode: an event read from the shared log is applied; its publish time (wall
    /// clock milliseconds of the node that accepted it, `None` for entries written without
    /// one) against this node's wall clock at `now`, clamped at 0 (clocks of other hosts
    /// may be behind).
    pub(super) fn observe_bus_apply(&mut self, accepted_ms: Option<u64>, now: Instant) {
        let Some(accepted) = accepted_ms else { return };
        let here = self.wall.unix_millis(now);
        let d = Duration::from_millis(here.saturating_sub(accepted));
        self.metrics.latency.bus_apply.observe(d);
    }

    /// The invariant of the module documentation, for every retained entry: `waiting`
    /// equals the cursors at or before it plus the streams with its frame partly written.
    pub(super) fn check_fanout_counts(&self) -> Result<(), String> {
        // Per topic, cursors per position (a difference array over the retained entries).
        let mut expected: Vec<Vec<i64>> = self
            .log
            .topics()
            .map(|(_, t)| vec![0; t.len() + 1])
            .collect();
        for (_, c) in self.connections.iter() {
            for cur in c.cursors() {
                let t = self.log.topic(cur.topic);
                let at = cur.next.saturating_sub(t.first_seq()) as usize;
                expected[cur.topic as usize][at.min(t.len())] += 1;
            }
        }
        let mut partial: std::collections::HashMap<u64, i64> = Default::default();
        for (_, c) in self.connections.iter() {
            if let Some(e) = partial_of(&self.log, c) {
                *partial.entry(e.gseq).or_default() += 1;
            }
        }
        for (tid, t) in self.log.topics() {
            let mut running = 0i64;
            for (i, e) in t.entries().enumerate() {
                running += expected[tid as usize][i];
                let partly = partial.get(&e.gseq).copied().unwrap_or(0);
                if i64::from(e.fanout.waiting()) != running + partly {
                    return Err(format!(
                        "event {} of topic {tid} waits for {} streams, {} have it pending",
                        e.gseq,
                        e.fanout.waiting(),
                        running + partly
                    ));
                }
            }
        }
        Ok(())
    }
}
