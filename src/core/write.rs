//! The write path: what is offered to each `writev` ([`Core::write_slices`]: pending bytes,
//! then frames straight from the shared log) and what the kernel took
//! ([`Core::handle_written`]: cursors advance, answers finish, the next page of a range read
//! is asked for), and the queues that say who has bytes to write.
use std::io::IoSlice;
use std::time::Instant;

use super::Core;
use super::client::{Client, ClientId};
use super::connection::{answer_sent, read_next};
use super::event_log::TICK_TOPIC_ID;
use super::exchange::Phase;
use super::latency::partial_entry;
use super::metrics::CloseReason;

impl Core {
    /// Fills `iov` with the bytes to offer the client next, in order; returns how many slices
    /// were filled (0 when nothing is pending or `id` is stale).
    pub fn write_slices<'a>(&'a self, id: ClientId, iov: &mut [IoSlice<'a>]) -> usize {
        let Some(c) = self.client(id) else { return 0 };
        let mut n = 0;
        if let Some(p) = c.pending()
            && n < iov.len()
        {
            iov[n] = IoSlice::new(p.rest());
            n += 1;
        }
        if c.is_held() {
            // A resume read from the shared log: the frames its reader took.
            for f in self.range_frames(id) {
                if n == iov.len() {
                    break;
                }
                iov[n] = IoSlice::new(f);
                n += 1;
            }
        }
        if c.is_streaming() && !c.is_held() {
            let mut frames = self.log.pending_frames(c.cursors());
            while n < iov.len() {
                let Some((i, e)) = frames.next() else { break };
                debug_assert!(
                    c.cursors()[i].topic == TICK_TOPIC_ID
                        || self.may_see_topic(id, &self.log.topic(c.cursors()[i].topic).name),
                    "a client is offered an event of a topic its token does not allow"
                );
                iov[n] = IoSlice::new(&e.frame);
                n += 1;
            }
        }
        n
    }

    /// The kernel took `written` bytes of what [`Core::write_slices`] offered.
    pub fn handle_written(&mut self, id: ClientId, written: usize, now: Instant) {
        let Some(c) = self.connections.get_mut(id) else {
            return;
        };
        self.metrics.write_calls += 1;
        self.metrics.bytes_written += written as u64;
        if written > 0 {
            c.wrote_at(now);
        }
        let (mut left, completed) = c.take_written(written);
        if let Some(frame) = completed {
            self.metrics.frames_written += 1;
            if let Some(e) = partial_entry(&self.log, c.cursors(), &frame) {
                e.fanout.delivered(now, &mut self.metrics.latency);
            }
        }
        let held = c.is_held() && c.is_streaming();
        if left > 0 && held {
            let (rest, partial, whole) = self.take_range_written(id, left);
            left = rest;
            self.metrics.frames_written += whole;
            if let Some((frame, offset)) = partial
                && let Some(c) = self.connections.get_mut(id)
            {
                // The partly written frame is counted when it completes.
                c.set_partial_frame(frame, offset);
            }
        }
        let Some(c) = self.connections.get_mut(id) else {
            return;
        };
        if left > 0 && c.is_streaming() && !c.is_held() {
            let mut frames = self.log.pending_frames(c.cursors());
            let mut delivered = 0u64;
            let mut partial = None;
            while left > 0 {
                let Some((_, e)) = frames.next() else { break };
                if left >= e.frame.len() {
                    left -= e.frame.len();
                    delivered += 1;
                    e.fanout.delivered(now, &mut self.metrics.latency);
                } else {
                    partial = Some((e.frame.clone(), left));
                    left = 0;
                }
            }
            debug_assert_eq!(left, 0, "the kernel took more bytes than were offered");
            for (cursor, pos) in c.cursors_mut().iter_mut().zip(frames.positions()) {
                cursor.next = pos;
            }
            if let Some((frame, offset)) = partial {
                // The partly written frame is counted when it completes.
                c.set_partial_frame(frame, offset);
            }
            self.metrics.frames_written += delivered;
        }
        let finished_answer = c.pending().is_none()
            && match c.http.phase() {
                Phase::Answering { .. } | Phase::Closing(_) => true,
                // A request waited for the answers of the publishes before it.
                Phase::Pipelined(held) => held.head.is_some() && c.http.publishes().is_empty(),
                _ => false,
            };
        // The client ended its side and every pipelined publish is answered and written.
        let input_done = c.pending().is_none()
            && c.http.input_closed()
            && c.http.publishes().is_empty()
            && (c.http.is_reading_head() || matches!(c.http.phase(), Phase::Pipelined(_)));
        if finished_answer {
            // The answer is written: the state says what comes next, then the read step
            // picks up what the client sent meanwhile, as for a read.
            if let Some(next) = answer_sent(self, id) {
                read_next(self, id, next, now);
            }
        } else if input_done {
            self.remove(id, CloseReason::Normal);
        } else if self.shutdown_deadline.is_some()
            && self
                .client(id)
                .is_some_and(|c| c.is_streaming() && !self.has_pending(id, c))
        {
            self.remove(id, CloseReason::Shutdown);
        } else {
            self.schedule(id);
        }
        if held {
            // A held stream wrote what its range reader took: the next page may come.
            self.range_written(id);
        }
        self.check_fanout_done(now);
        self.debug_check();
    }

    /// Queues the client for a write if it has bytes, is writable and is not queued yet.
    pub(super) fn schedule(&mut self, id: ClientId) {
        let Some(c) = self.client(id) else { return };
        if c.may_queue() && self.has_pending(id, c) {
            let streaming = c.is_streaming();
            if let Some(c) = self.client_mut(id) {
                c.mark_queued();
            }
            self.outputs.push_write(id, streaming);
        }
    }

    /// True when client `id` (`c`) has bytes to write: queued, its range reader's, or from
    /// the log past its cursors.
    pub(super) fn has_pending(&self, id: ClientId, c: &Client) -> bool {
        c.pending().is_some()
            || (c.is_held() && self.has_range_frames(id))
            || (c.is_streaming()
                && !c.is_held()
                && c.cursors()
                    .iter()
                    .any(|cur| cur.next < self.log.topic(cur.topic).end_seq()))
    }
}
