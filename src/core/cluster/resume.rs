//! Cluster mode's resume paths: from the local cache, held until this node's tail applied
//! the resume point, or read from Redis (`FetchRange`) and written before the live events;
//! and the ids resets carry, and the cluster metrics.

use std::fmt::Write as _;
use std::time::Instant;

use super::super::Core;
use super::super::client::{ClientId, Cursor};
use super::super::event_log::{Resume, TICK_TOPIC_ID};
use super::super::log_engine::Start;
use super::super::topic::TopicId;
use super::{Awaiting, FETCH_LIMIT, Fetch, TOO_OLD, UNKNOWN_ID, admissible, encode_bus_event};
use crate::bus::types::{BusRequest, ClusterId, FetchRange, RangeReply, resume};
use crate::config::Config;
use crate::sse::frame;

/// Event data one page of a range read from Redis carries at most (one event more): with
/// the parking of pages, what a resuming client holds beyond its socket.
const PAGE_BYTES: usize = 256 * 1024;

/// The page size for this configuration: at most half the slow-client backlog, so that a
/// page alone never makes its client look slow.
fn page_bytes(cfg: &Config) -> usize {
    let half_backlog = usize::try_from(cfg.max_backlog / 2).unwrap_or(usize::MAX);
    PAGE_BYTES.min(half_backlog).max(1)
}

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

    /// Holds a new stream (its cursors at the live edge) and asks Redis for the events of
    /// `topics` after `after` up to the newest offset applied.
    pub(in crate::core) fn begin_fetch(
        &mut self,
        id: ClientId,
        after: u64,
        restart: bool,
        topics: Vec<String>,
    ) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let through = cl.last_offset;
        if after >= through {
            return;
        }
        let Some(epoch) = cl.epoch.clone() else {
            return;
        };
        cl.next_token += 1;
        let token = cl.next_token;
        cl.stats.range_fetches += 1;
        cl.stats.range_pages += 1;
        let fetch = Fetch {
            client: id,
            epoch,
            after,
            through,
            topics,
            restart,
        };
        cl.requests
            .push_back(fetch.request(token, page_bytes(&self.cfg)));
        cl.fetches.insert(token, fetch);
        if let Some(c) = self.client_mut(id) {
            c.hold();
        }
    }

    pub(super) fn on_range(&mut self, range: RangeReply, now: Instant) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let Some(mut f) = cl.fetches.remove(&range.token) else {
            return;
        };
        let id = f.client;
        if !self
            .client(id)
            .is_some_and(|c| c.is_held() && c.is_streaming())
        {
            return;
        }
        if range.epoch != f.epoch {
            // The log was lost meanwhile: the epoch change reaches this node's tail too.
            self.end_stream_with_retry(id, now);
            return;
        }
        let mut bytes = Vec::new();
        let lost = !f.restart && range.lost_events_after(f.after);
        if lost {
            let gap_id = format!("{}-{}", f.epoch, f.through);
            frame::encode_event(&mut bytes, Some(&gap_id), Some("reset"), TOO_OLD);
        } else {
            if f.restart {
                // From the epoch's start: first what this node still caches that Redis
                // has trimmed (a quiet topic's cache reaches back further than a busy log).
                let before = range
                    .first_retained_offset
                    .unwrap_or(u64::MAX)
                    .min(f.through.saturating_add(1));
                self.cached_frames_before(id, before, &mut bytes);
            }
            let mut refused = 0;
            for e in range
                .events
                .iter()
                .filter(|e| e.offset > f.after && e.offset <= f.through)
            {
                match admissible(e) {
                    Ok(()) => bytes.extend_from_slice(&encode_bus_event(e)),
                    Err(why) => {
                        refused += 1;
                        log::warn!("shared log entry {} refused ({why:?}) in a range", e.offset);
                    }
                }
            }
            if let Some(cl) = self.cluster.as_mut() {
                cl.stats.entries_refused += refused;
            }
        }
        if let Some(c) = self.client_mut(id) {
            c.queue_after_pending(bytes);
        }
        let more = !lost && !range.complete && range.scanned_through < f.through;
        if more && range.scanned_through > f.after {
            f.after = range.scanned_through;
            f.restart = false;
            let written = self.client(id).is_some_and(|c| c.pending().is_none());
            if written {
                self.request_page(f);
            } else if let Some(cl) = self.cluster.as_mut() {
                cl.parked.insert(id, f);
            }
        } else if let Some(c) = self.client_mut(id) {
            c.release();
        }
        self.schedule(id);
    }
}

/// Paging: a range is read a page at a time, each once the client has written the last.
impl Core {
    /// Asks Redis for the next page of `f`.
    fn request_page(&mut self, f: Fetch) {
        if let Some(cl) = self.cluster.as_mut() {
            cl.next_token += 1;
            cl.stats.range_pages += 1;
            let token = cl.next_token;
            cl.requests
                .push_back(f.request(token, page_bytes(&self.cfg)));
            cl.fetches.insert(token, f);
        }
    }

    /// Client `id` has written everything queued ahead of its cursors: the next page of its
    /// range fetch, if one waits for that.
    pub(in crate::core) fn request_parked_page(&mut self, id: ClientId) {
        if let Some(f) = self.cluster.as_mut().and_then(|cl| cl.parked.remove(&id)) {
            self.request_page(f);
        }
    }

    /// Forgets the parked page of a client that is gone.
    pub(in crate::core) fn forget_parked_page(&mut self, id: ClientId) {
        if let Some(cl) = self.cluster.as_mut() {
            cl.parked.remove(&id);
        }
    }

    /// Debug check: every parked page belongs to a live, held client.
    pub(in crate::core) fn check_parked_pages(&self) -> Result<(), String> {
        let Some(cl) = self.cluster.as_ref() else {
            return Ok(());
        };
        for id in cl.parked.keys() {
            if !self.client(*id).is_some_and(|c| c.is_held()) {
                return Err(format!("a parked range page of client {} not held", id.key));
            }
        }
        Ok(())
    }
}

/// The local cache in a fetch.
impl Core {
    /// Appends to `out` the frames this node caches for client `id`'s topics at offsets below
    /// `offset` of the current epoch, in log order: those after the newest hole in the cache
    /// (`complete_from`), so that none is left out between them.
    fn cached_frames_before(&self, id: ClientId, offset: u64, out: &mut Vec<u8>) {
        let (Some(c), Some(cl)) = (self.client(id), self.cluster.as_ref()) else {
            return;
        };
        let end = cl.gseq_base.saturating_add(offset);
        let from_start: Vec<Cursor> = c
            .cursors()
            .iter()
            .filter(|cur| cur.topic != TICK_TOPIC_ID)
            .map(|cur| Cursor {
                next: self.log.topic(cur.topic).first_seq(),
                ..*cur
            })
            .collect();
        for (_, e) in self.log.pending_frames(&from_start) {
            if e.gseq >= end {
                break;
            }
            if e.gseq >= cl.complete_from {
                out.extend_from_slice(&e.frame);
            }
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
        let rows: [(&str, &str, &str, String); 14] = [
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
                "resumes read from Redis (failed ones in sse_bus_range_failures_total)",
                s.range_fetches.to_string(),
            ),
            (
                "sse_bus_range_pages_total",
                "counter",
                "pages of those read (each asked for once the client wrote the last)",
                s.range_pages.to_string(),
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
            "# HELP {name} range fetches that failed (the client was told to retry)\n# TYPE {name} counter\n{name} {}",
            s.range_failures
        );
    }
}

impl Fetch {
    /// The request for the next page, of at most `max_bytes` of event data (and one event).
    fn request(&self, token: u64, max_bytes: usize) -> BusRequest {
        BusRequest::FetchRange(FetchRange {
            token,
            after_offset: self.after,
            through_offset: Some(self.through),
            topics: Some(self.topics.clone()),
            limit: FETCH_LIMIT,
            max_bytes,
        })
    }
}
