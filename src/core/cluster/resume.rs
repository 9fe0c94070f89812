//! Cluster mode's resume paths: from the local cache, held until this node's tail applied
//! the resume point, or read from the shared log (`ranges.rs`) and written before the live
//! events; and the cluster metrics.

use std::fmt::Write as _;

use super::super::Core;
use super::super::client::ClientId;
use super::super::event_log::{Resume, TICK_TOPIC_ID};
use super::super::log_engine::Start;
use super::super::topic::TopicId;
use super::{Awaiting, UNKNOWN_ID};
use crate::bus::types::{ClusterId, resume};
use crate::sse::frame;

/// Resume: from the cache, or from Redis.
impl Core {
    /// Where a cluster stream with `Last-Event-ID` `last` on `topics` starts.
    pub(in crate::core) fn resolve_cluster(&self, last: Option<&str>, topics: &[TopicId]) -> Start {
        let Some(cl) = self.cluster.as_ref() else {
            return Start::Here(Resume::Unknown);
        };
        let Some(last) = last.filter(|s| !s.is_empty()) else {
            return Start::Here(Resume::Fresh);
        };
        let Some(epoch) = cl.epoch.as_deref() else {
            return Start::NotReady;
        };
        let covers = |g: u64| {
            g.saturating_add(1) >= cl.complete_from
                && topics
                    .iter()
                    .filter(|&&t| t != TICK_TOPIC_ID)
                    .all(|&t| self.log.topic(t).resume_after(g).is_some())
        };
        // A publisher-given id still in the cache first, as in embedded mode: it may have
        // the form of a cluster id (`order-17`), and is then no position in the shared log.
        if let Some(g) = self.log.custom_id_gseq(last) {
            return if covers(g) {
                Start::Here(Resume::After(g))
            } else {
                Start::Fetch {
                    after: g.saturating_sub(cl.gseq_base),
                    restart: false,
                }
            };
        }
        let Some(id) = ClusterId::parse(last) else {
            return Start::Here(Resume::Unknown);
        };
        let head = cl.head_offset.max(cl.last_offset);
        match resume(&id, epoch, cl.first_retained.unwrap_or(0), head) {
            // Ahead of the head this node knows of: maybe published a moment ago on another
            // node, or while the tail is away; wait for the tail to say (two of its replies
            // showing a head below it make it unknown).
            crate::bus::Resume::Unknown => Start::Await {
                gseq: cl.gseq_base + id.offset,
                offset: id.offset,
            },
            crate::bus::Resume::TooOld => Start::Here(Resume::TooOld),
            crate::bus::Resume::Restart if covers(cl.gseq_base) => Start::Here(Resume::EarlierRun),
            crate::bus::Resume::Restart => Start::Fetch {
                after: 0,
                restart: true,
            },
            crate::bus::Resume::After(n) if n > cl.last_offset => Start::Await {
                gseq: cl.gseq_base + n,
                offset: n,
            },
            crate::bus::Resume::After(n) if covers(cl.gseq_base + n) => {
                Start::Here(Resume::After(cl.gseq_base + n))
            }
            crate::bus::Resume::After(n) => Start::Fetch {
                after: n,
                restart: false,
            },
        }
    }

    /// Holds a new stream whose resume point (`gseq`) this node has not applied yet.
    pub(in crate::core) fn await_applied(&mut self, id: ClientId, gseq: u64, offset: u64) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        cl.awaiting.push(Awaiting {
            client: id,
            gseq,
            offset,
            rounds: 0,
        });
        if let Some(c) = self.client_mut(id) {
            c.hold();
        }
        self.release_awaiting(None);
    }

    /// Releases the held clients whose resume point was applied: each cursor skips the
    /// entries up to it (they were collected while the client waited). With `head` (the
    /// head an `Events` reply reported), a resume point still beyond it after two replies
    /// was never issued: that client gets `reset` `unknown-id` and live events.
    pub(super) fn release_awaiting(&mut self, head: Option<u64>) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        if cl.awaiting.is_empty() {
            return;
        }
        let applied = cl.gseq_base + cl.last_offset;
        let mut ready = Vec::new();
        let mut unknown = Vec::new();
        for mut a in std::mem::take(&mut cl.awaiting) {
            if a.gseq <= applied {
                ready.push((a.client, a.gseq));
            } else if head.is_some_and(|h| h < a.offset) && a.rounds >= 1 {
                unknown.push(a.client);
            } else {
                a.rounds += u8::from(head.is_some_and(|h| h < a.offset));
                cl.awaiting.push(a);
            }
        }
        for id in unknown {
            if !self
                .client(id)
                .is_some_and(|c| c.is_held() && c.is_streaming())
            {
                continue;
            }
            let mut reset = Vec::new();
            let newest = self.newest_reset_id();
            frame::encode_event(&mut reset, Some(&newest), Some("reset"), UNKNOWN_ID);
            let ends: Vec<u64> = self.client(id).map_or(Vec::new(), |c| {
                c.cursors()
                    .iter()
                    .map(|cur| self.log.topic(cur.topic).end_seq())
                    .collect()
            });
            self.move_cursors(id, &ends);
            if let Some(c) = self.client_mut(id) {
                c.queue_after_pending(reset);
                c.release();
            }
            self.schedule(id);
        }
        for (id, g) in ready {
            let Some(c) = self.client(id).filter(|c| c.is_held() && c.is_streaming()) else {
                continue;
            };
            let nexts: Vec<u64> = c
                .cursors()
                .iter()
                .map(|cur| {
                    let t = self.log.topic(cur.topic);
                    t.resume_after(g).unwrap_or(t.end_seq()).max(cur.next)
                })
                .collect();
            self.move_cursors(id, &nexts);
            if let Some(c) = self.client_mut(id) {
                c.release();
            }
            self.schedule(id);
        }
    }
}

/// Metrics.
impl Core {
    /// Cluster metrics in Prometheus text format (nothing in the embedded mode).
    pub(in crate::core) fn render_cluster_metrics(&self, out: &mut String) {
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        let s = &cl.stats;
        let lag = cl.head_offset.saturating_sub(cl.last_offset);
        let rows: [(&str, &str, &str, String); 16] = [
            (
                "sse_bus_connected",
                "gauge",
                "1 while the tail is connected to Redis",
                u8::from(cl.connected).to_string(),
            ),
            (
                "sse_bus_reconnects_total",
                "counter",
                "times the bus lost Redis",
                s.reconnects.to_string(),
            ),
            (
                "sse_bus_epoch_changes_total",
                "counter",
                "times the shared log was lost (reset restart)",
                s.epoch_changes.to_string(),
            ),
            (
                "sse_bus_events_received_total",
                "counter",
                "events read from the shared log (duplicates included)",
                s.events_received.to_string(),
            ),
            (
                "sse_bus_duplicates_dropped_total",
                "counter",
                "events dropped as already applied",
                s.duplicates_dropped.to_string(),
            ),
            (
                "sse_bus_gaps_total",
                "counter",
                "events trimmed before this node read them (reset too-old)",
                s.gaps.to_string(),
            ),
            (
                "sse_bus_entries_refused_total",
                "counter",
                "shared log entries no publish could have written (invalid fields), skipped",
                s.entries_refused.to_string(),
            ),
            (
                "sse_bus_foreign_entries_total",
                "counter",
                "shared log entries no node wrote, skipped or moved to {prefix}:foreign",
                s.foreign_entries.to_string(),
            ),
            (
                "sse_bus_lag_events",
                "gauge",
                "how far this node's cursor is behind the stream head",
                lag.to_string(),
            ),
            (
                "sse_bus_publish_failed_total",
                "counter",
                "publishes answered 503",
                s.publishes_failed.to_string(),
            ),
            (
                "sse_bus_publish_seconds_sum",
                "counter",
                "time from a publish handed to the bus to its answer",
                format!("{:.6}", s.publish_seconds_sum),
            ),
            (
                "sse_bus_publish_seconds_count",
                "counter",
                "publishes accepted by the shared log",
                s.publishes_accepted.to_string(),
            ),
            (
                "sse_bus_range_fetches_total",
                "counter",
                "range reads begun for resumes older than the cache (resumes that share one count once)",
                s.range_fetches.to_string(),
            ),
            (
                "sse_bus_range_pages_total",
                "counter",
                "pages asked of the shared log (each once a reader wrote the last)",
                s.range_pages.to_string(),
            ),
            (
                "sse_bus_range_pages_shared_total",
                "counter",
                "pages a resume took from a read another one asked for (in flight or kept)",
                s.range_pages_shared.to_string(),
            ),
            (
                "sse_bus_range_extensions_total",
                "counter",
                "times a held resume read on from the log because the cache moved past it",
                s.range_extensions.to_string(),
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let name = "sse_bus_range_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} range reads that failed (their streams were told to retry)\n# TYPE {name} counter\n{name} {}",
            s.range_failures
        );
    }
}
