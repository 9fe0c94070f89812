//! Whether this node applies the shared log: `/health` answers `503 not applying the log`
//! when offsets known to be in the log have waited longer than `--health-apply-bound`
//! without this node's tail applying them (its connection may look fine: a tail reading a
//! stale copy of the log, a reactor falling ever further behind, a stuck thread).
//!
//! **How the node learns the head.** Every head it hears of raises it: the tail's greeting
//! and batches, the ids its own publishes were answered with, and a **head probe**
//! ([`BusRequest::ProbeHead`], through the command side, not the tail) sent only after the
//! tail has said nothing for half the bound, then every half bound while it stays quiet
//! (one small read per probe: an idle node stays near zero CPU). A node that publishes
//! nothing still notices a log that moved without it.
//!
//! **The bound.** Each time the known head rises above the applied offset, the new head is
//! noted with the time ([`Mark`]s, one per sixteenth of the bound, at most [`MAX_MARKS`]);
//! a mark goes once the tail applied its offset. The node is *not applying* while its
//! oldest mark is at least the bound old: the known head has then been above the applied
//! offset for the whole bound, and an offset it learned at least fifteen sixteenths of the
//! bound ago is still not applied. Past four bounds of marks the newest absorbs the later
//! heads: a node that far behind stays reported until it caught up with them. A busy
//! node's normal lag (its tail a batch behind its own publishes' answers) clears its marks
//! within tens of milliseconds (benches/README.md). Detection takes about the bound plus at
//! most half of it (the probe's interval) after the head moved.
//!
//! **Outages are not stalls.** While the tail is disconnected `/health` says `bus down`;
//! the marks are dropped then, and at an epoch change, so the bound starts again from the
//! greeting's head once the tail is back. A reactor that is stuck answers no `/health` at
//! all, which a load balancer's timeout sees.
//!
//! **Heads no tail can apply are not owed.** A greeting or probe below heads learned
//! earlier (a publish answered, then lost in a failover) drops them; a log the greeting
//! found holding no event (every entry trimmed, or a failover to a copy that missed them)
//! owes nothing up to its head, from the greeting or from later probes of that head.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::super::Core;
use super::Cluster;
use crate::bus::types::BusRequest;

/// Marks kept at most; past it the newest absorbs what follows (a node that far behind is
/// reported since its oldest mark passed the bound).
pub(super) const MAX_MARKS: usize = 64;

/// A head this node learned while it had not applied it: `offset` (the highest head learned
/// within a sixteenth of the bound after `since`) and when it was first learned.
#[derive(Debug, Clone, Copy)]
struct Mark {
    offset: u64,
    since: Instant,
}

/// The applied offset against the heads learned, and the head probe's schedule.
#[derive(Debug, Default)]
pub(super) struct ApplyWatch {
    /// Oldest first; offsets increasing, every one above the applied offset.
    marks: VecDeque<Mark>,
    /// The token of the head probe in flight.
    probe: Option<u64>,
    /// When the next probe is due: `None` while the tail is away or a probe is in flight.
    next_probe: Option<Instant>,
    /// The current stall was logged.
    reported: bool,
    /// The greeting found the log holding no event at this head (0: it held some): offsets
    /// up to it are in no copy a tail can read, so a later head at or below it (a probe's
    /// answer) owes nothing above the applied offset either.
    unreadable_to: u64,
}

impl ApplyWatch {
    /// The tail greeted or delivered: the next probe waits for another quiet half bound.
    fn tail_heard(&mut self, now: Instant, bound: Duration) {
        if self.probe.is_none() {
            self.next_probe = Some(now + bound / 2);
        }
    }

    /// Forgets every mark and the probe in flight, and stops probing until
    /// [`ApplyWatch::tail_heard`].
    fn reset(&mut self) {
        self.marks.clear();
        self.probe = None;
        self.next_probe = None;
        self.reported = false;
        self.unreadable_to = 0;
    }

    /// `head` is in the log (learned at `now`) and `applied` is the applied offset.
    fn learned(&mut self, head: u64, applied: u64, now: Instant, bound: Duration) {
        if head <= applied {
            return;
        }
        let full = self.marks.len() >= MAX_MARKS;
        match self.marks.back_mut() {
            Some(last) if head <= last.offset => {}
            Some(last) if now < last.since + bound / 16 || full => {
                last.offset = head;
            }
            _ => self.marks.push_back(Mark {
                offset: head,
                since: now,
            }),
        }
    }

    /// The log's own head is `head`: marks above it name offsets it does not hold (a
    /// publish answered, then lost in a failover) and go; what they waited for up to `head`
    /// is still owed, since the earliest of them.
    fn forget_above(&mut self, head: u64, applied: u64) {
        let mut since = None;
        while self.marks.back().is_some_and(|m| m.offset > head) {
            since = self.marks.pop_back().map(|m| m.since);
        }
        if let Some(since) = since
            && head > applied
            && self.marks.back().is_none_or(|m| m.offset < head)
        {
            self.marks.push_back(Mark {
                offset: head,
                since,
            });
        }
    }

    /// Drops the marks the tail has applied.
    fn applied(&mut self, applied: u64) {
        while self.marks.front().is_some_and(|m| m.offset <= applied) {
            self.marks.pop_front();
        }
    }

    /// How long the oldest mark has waited (zero: none waits).
    fn waited(&self, now: Instant) -> Duration {
        self.marks
            .front()
            .map_or(Duration::ZERO, |m| now.saturating_duration_since(m.since))
    }
}

impl Cluster {
    /// The head learned from the greeting, a batch, an answered publish or a probe: raises
    /// the known head and notes it against the applied offset.
    pub(super) fn learn_head(&mut self, head: u64, now: Instant, bound: Duration) {
        self.head_offset = self.head_offset.max(head);
        self.watch.learned(head, self.last_offset, now, bound);
    }

    /// The log's own head, read by a greeting or a head probe in the epoch followed: heads
    /// learned above it are not in the log (see [`ApplyWatch::forget_above`]); then as
    /// [`Cluster::learn_head`]. A head no higher than the one the greeting found the log
    /// holding no event at owes only what was applied (see [`Cluster::greeted`]).
    pub(super) fn log_head(&mut self, head: u64, now: Instant, bound: Duration) {
        self.head_offset = self.head_offset.max(head);
        let owed = if head <= self.watch.unreadable_to {
            self.last_offset.min(head)
        } else {
            head
        };
        self.watch.forget_above(owed, self.last_offset);
        self.learn_head(owed, now, bound);
    }

    /// The tail greeted with the log's head (and its first retained offset, already noted):
    /// as [`Cluster::log_head`], except that a log holding no event owes none, now or when a
    /// probe answers that head again until the tail goes away (a failover to a copy whose
    /// every entry was trimmed or lost keeps its head, which no tail can apply).
    pub(super) fn greeted(&mut self, head: u64, now: Instant, bound: Duration) {
        self.watch.unreadable_to = if self.first_retained.is_none() {
            head
        } else {
            0
        };
        self.log_head(head, now, bound);
    }

    /// The tail greeted or delivered events.
    pub(super) fn tail_heard(&mut self, now: Instant, bound: Duration) {
        self.watch.tail_heard(now, bound);
    }

    /// The tail went away or the log was lost: the bound starts again after the greeting.
    pub(super) fn reset_apply_watch(&mut self) {
        self.watch.reset();
    }

    /// Checks that the marks are increasing, above the applied offset and bounded.
    pub(in crate::core) fn check_apply_watch(&self) -> Result<(), String> {
        let marks = &self.watch.marks;
        let increasing = marks
            .iter()
            .zip(marks.iter().skip(1))
            .all(|(a, b)| a.offset < b.offset && a.since <= b.since);
        let above = marks.front().is_none_or(|m| m.offset > self.last_offset);
        if !increasing || !above || marks.len() > MAX_MARKS {
            return Err(format!(
                "apply marks {marks:?} against applied offset {}",
                self.last_offset
            ));
        }
        Ok(())
    }
}

/// The core's side: the bound, the probe, the verdict, the metrics.
impl Core {
    /// `--health-apply-bound`.
    pub(super) fn apply_bound(&self) -> Duration {
        self.cfg
            .cluster
            .as_ref()
            .map_or(crate::bus::config::DEFAULT_APPLY_BOUND, |b| b.apply_bound)
    }

    /// True while offsets known to be in the shared log have waited at least the bound
    /// without this node applying them (see the module documentation).
    pub(in crate::core) fn cluster_not_applying(&self, now: Instant) -> bool {
        let bound = self.apply_bound();
        self.cluster
            .as_ref()
            .is_some_and(|cl| cl.connected && cl.watch.waited(now) >= bound)
    }

    /// After every bus reply: drops the marks the tail applied, and logs a stall's start
    /// and end once each.
    pub(super) fn after_bus_reply(&mut self, now: Instant) {
        if let Some(cl) = self.cluster.as_mut() {
            cl.watch.applied(cl.last_offset);
        }
        let stalled = self.cluster_not_applying(now);
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        if stalled && !cl.watch.reported {
            cl.watch.reported = true;
            log::warn!(
                "not applying the shared log: offset {} known for {:.1} s, applied {}",
                cl.watch.marks.front().map_or(0, |m| m.offset),
                cl.watch.waited(now).as_secs_f64(),
                cl.last_offset
            );
        } else if cl.watch.reported && cl.watch.marks.is_empty() {
            cl.watch.reported = false;
            log::info!("applying the shared log again (offset {})", cl.last_offset);
        }
    }

    /// The answer to head probe `token`: the log's epoch and head, or why there was none.
    pub(super) fn on_head(
        &mut self,
        token: u64,
        head: Result<(String, u64), String>,
        now: Instant,
    ) {
        let bound = self.apply_bound();
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        if cl.watch.probe != Some(token) {
            return;
        }
        cl.watch.probe = None;
        cl.watch.next_probe = Some(now + bound / 2);
        match head {
            Ok((epoch, head)) if cl.epoch.as_deref() == Some(epoch.as_str()) => {
                cl.log_head(head, now, bound);
            }
            // Another epoch: the tail finds out when it reads again (greeting, EpochChanged).
            Ok(_) => {}
            Err(why) => log::debug!("head probe failed: {why}"),
        }
    }

    /// When [`Core::handle_timeout`] must send the next head probe, if one is planned.
    pub(in crate::core) fn next_probe_at(&self) -> Option<Instant> {
        self.cluster.as_ref().and_then(|cl| cl.watch.next_probe)
    }

    /// Sends the head probe if it is due: the tail has been quiet for half the bound.
    pub(in crate::core) fn probe_head_if_due(&mut self, now: Instant) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        if !cl.connected || cl.watch.next_probe.is_none_or(|at| at > now) {
            return;
        }
        cl.next_token += 1;
        let token = cl.next_token;
        cl.watch.probe = Some(token);
        cl.watch.next_probe = None;
        cl.stats.head_probes += 1;
        cl.requests.push_back(BusRequest::ProbeHead { token });
    }

    /// `sse_bus_apply_stalled` and `sse_bus_unapplied_seconds` (nothing in the embedded
    /// mode).
    pub(in crate::core) fn render_apply_metrics(&self, out: &mut String, now: Instant) {
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        let rows = [
            (
                "sse_bus_apply_stalled",
                "gauge",
                "1 while /health says not applying the log (a known head unapplied past the bound)",
                u8::from(self.cluster_not_applying(now)).to_string(),
            ),
            (
                "sse_bus_unapplied_seconds",
                "gauge",
                "how long the log's head has been known above this node's applied offset (0: caught up)",
                format!("{:.3}", cl.watch.waited(now).as_secs_f64()),
            ),
            (
                "sse_bus_head_probes_total",
                "counter",
                "head probes sent while the tail was quiet",
                cl.stats.head_probes.to_string(),
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}
