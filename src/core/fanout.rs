//! Fan-out and the end of streams: an append wakes the topic's subscribers, a client past
//! the backlog bound gets the slow-client policy, and a stream ends one way whatever ends
//! it ([`Core::leave_stream`]).
use std::rc::Rc;
use std::time::Instant;

use smallvec::SmallVec;

use super::Core;
use super::client::{Bytes, Client, ClientId};
use super::event_log::TICK_TOPIC_ID;
use super::latency::Fanout;
use super::metrics::CloseReason;
use super::timers::TimerKind;
use super::topic::TopicId;
use crate::config::SlowClientPolicy;

/// Backlogs and the slow-client policy.
impl Core {
    /// The backlog a client may have before the slow-client policy applies: `--max-backlog`
    /// and `--max-backlog-events`, raised to a whole history on every topic of the client, so
    /// that a resume of every retained event on all its topics is never taken for slowness.
    /// Memory is not at stake: a backlog is cursors into the shared log.
    pub(super) fn backlog_limit_of(&self, c: &Client) -> (u64, u64) {
        // Ticks are never replayed: the tick topic adds nothing to a resume.
        let topics = c
            .cursors()
            .iter()
            .filter(|cur| cur.topic != TICK_TOPIC_ID)
            .count() as u64;
        (
            self.cfg
                .max_backlog
                .max(topics.saturating_mul(self.cfg.history_bytes as u64)),
            self.cfg
                .max_backlog_events
                .max(topics.saturating_mul(self.cfg.history as u64)),
        )
    }

    /// (bytes, events) the client is behind; `u64::MAX` bytes when a cursor fell out of history.
    pub(super) fn backlog_of(&self, c: &Client) -> (u64, u64) {
        let mut bytes = c.pending().map_or(0, |p| p.rest().len() as u64);
        let mut events = 0;
        for cur in c.cursors() {
            let t = self.log.topic(cur.topic);
            match t.bytes_from(cur.next) {
                Some(b) => bytes += b,
                None => return (u64::MAX, u64::MAX),
            }
            events += t.end_seq().saturating_sub(cur.next);
        }
        (bytes, events)
    }

    /// Appends a frame with its (already assigned) gseq to a topic's log and wakes the
    /// topic's subscribers.
    pub(super) fn append(
        &mut self,
        now: Instant,
        topic: TopicId,
        gseq: u64,
        frame: Rc<[u8]>,
        custom_id: Option<&str>,
    ) {
        // The oldest entry the append may evict, for a client the eviction outruns.
        let front = self.log_front(topic);
        let fanout = Fanout::new(now, self.log.topic(topic).subscribers.len());
        let latency = &mut self.metrics.latency;
        self.log
            .append(topic, (gseq, frame), custom_id, fanout, latency);
        // Wake the subscribers; apply the slow policy to those too far behind.
        let mut woken = 0;
        let subs = std::mem::take(&mut self.log.topic_mut(topic).subscribers);
        let mut lagging: Vec<u32> = Vec::new();
        let mut passed: Vec<u32> = Vec::new();
        for &key in &subs {
            let Some(c) = self.connections.by_key(key) else {
                continue;
            };
            // A held client (its resume being read from the log) collects, unwoken; the
            // cache moving past it is no slowness (`held_fell_behind`).
            if c.is_held() {
                if self.fell_out_of_cache(c.cursors()) {
                    passed.push(key);
                }
                continue;
            }
            let (bytes, events) = self.backlog_of(c);
            let (max_bytes, max_events) = self.backlog_limit_of(c);
            if bytes > max_bytes || events > max_events {
                lagging.push(key);
                continue;
            }
            if c.may_queue() {
                let id = ClientId {
                    key,
                    generation: c.generation(),
                };
                if let Some(c) = self.connections.by_key_mut(key) {
                    c.mark_queued();
                }
                self.outputs.push_write(id, true);
                woken += 1;
            }
        }
        self.log.topic_mut(topic).subscribers = subs;
        for key in lagging {
            if !self.read_passed_from_log(key, topic, front) {
                self.apply_slow_policy(key);
            }
        }
        for key in passed {
            self.held_fell_behind(key);
        }
        if woken > 0 && self.fanout.is_none() {
            self.fanout = Some((now, woken));
        }
    }

    /// Applies the slow-client policy to a client past the backlog bound.
    pub(super) fn apply_slow_policy(&mut self, key: u32) {
        let Some(c) = self.connections.by_key(key) else {
            return;
        };
        let id = ClientId {
            key,
            generation: c.generation(),
        };
        let (bytes, events) = self.backlog_of(c);
        match self.cfg.slow_client {
            SlowClientPolicy::Drop => {
                if bytes == u64::MAX {
                    log::info!(
                        "dropping slow client {}: fell out of the retained history",
                        c.peer()
                    );
                } else {
                    log::info!(
                        "dropping slow client {}: {bytes} bytes / {events} events behind",
                        c.peer()
                    );
                }
                self.remove(id, CloseReason::Slow);
            }
            SlowClientPolicy::Latest => {
                // Everything to the live edge, except the single newest entry among its topics.
                let newest = c
                    .cursors()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, cur)| {
                        let t = self.log.topic(cur.topic);
                        t.get(t.end_seq().checked_sub(1)?).map(|e| (e.gseq, i))
                    })
                    .max();
                let ends: SmallVec<[u64; 2]> = c
                    .cursors()
                    .iter()
                    .map(|cur| self.log.topic(cur.topic).end_seq())
                    .collect();
                let to: SmallVec<[u64; 2]> = ends
                    .iter()
                    .enumerate()
                    .map(|(i, &end)| {
                        if newest.is_some_and(|(_, n)| n == i) {
                            end - 1
                        } else {
                            end
                        }
                    })
                    .collect();
                self.move_cursors(id, &to);
                self.metrics.skipped_forward += 1;
                log::debug!(
                    "skipped lagging client forward to the newest event ({bytes} bytes behind)"
                );
                self.schedule(id);
            }
        }
    }

    pub(super) fn check_fanout_done(&mut self, now: Instant) {
        if let Some((start, clients)) = self.fanout
            && self.outputs.streams_done()
        {
            self.metrics.last_fanout = Some(now.saturating_duration_since(start));
            self.metrics.last_fanout_clients = clients;
            self.fanout = None;
        }
    }
}

/// The end of a stream.
impl Core {
    /// The one way a stream ends, whatever ends it (the client gone, slow, its token
    /// expired, an epoch change or an abandoned range read, shutdown): its cursors leave
    /// their topics, its range read is forgotten, its grant is dropped and
    /// the streaming count goes down. The connection itself stays (the caller removes it or
    /// sends last bytes with [`Core::finish_stream`]). False when `id` was not streaming.
    pub(super) fn leave_stream(&mut self, id: ClientId) -> bool {
        if !self.is_streaming(id) {
            return false;
        }
        self.release_pending(id);
        let Some(c) = self.client_mut(id) else {
            return false;
        };
        let cursors = c.take_cursors();
        c.release();
        c.drop_grant();
        // Each cursor is on its own topic: a swap-removal in one cannot move another.
        for cur in &cursors {
            self.unsubscribe(cur.topic, cur.sub_index as usize);
        }
        self.forget_reader(id);
        self.connections.stream_ended();
        log::debug!("stream ended, {} clients", self.connections.streaming());
        true
    }

    /// Ends a stream with `last` (what it had queued, then a final frame) written before the
    /// connection closes for `reason`; lingers for a slow reader.
    pub(super) fn finish_stream(
        &mut self,
        id: ClientId,
        last: Vec<u8>,
        reason: CloseReason,
        now: Instant,
    ) {
        if !self.leave_stream(id) {
            return;
        }
        let Some(c) = self.client_mut(id) else { return };
        c.http.close_after_sent(reason, now);
        c.set_pending(Bytes::Owned(last.into()));
        self.timers
            .arm(id, TimerKind::Linger, now + self.cfg.linger);
        self.schedule(id);
    }

    pub(super) fn unsubscribe(&mut self, topic: TopicId, index: usize) {
        let subs = &mut self.log.topic_mut(topic).subscribers;
        if index >= subs.len() {
            debug_assert!(false, "subscriber index out of range");
            return;
        }
        subs.swap_remove(index);
        if let Some(&moved) = subs.get(index)
            && let Some(m) = self.connections.by_key_mut(moved)
            && let Some(cur) = m.cursors_mut().iter_mut().find(|cur| cur.topic == topic)
        {
            cur.sub_index = index as u32;
        }
    }
}
