//! Applying what the tail delivers: greetings, events classified by offset, gaps, epoch
//! changes, and the refusal of entries no publish could have made.

use std::time::{Duration, Instant};

use super::*;
use crate::bus::types::{BusEvent, Delivery, classify};
use crate::core::Core;
use crate::core::client::{Bytes, ClientId};
use crate::core::error::RequestError;
use crate::core::metrics::CloseReason;
use crate::core::publish::{check_fields, valid_topic_name};
use crate::sse::frame;

/// The tail: greetings, events, epochs.
impl Core {
    pub(super) fn on_connected(
        &mut self,
        epoch: String,
        head_offset: u64,
        first_retained: Option<u64>,
        after_offset: u64,
        now: Instant,
    ) {
        let known = self.cluster.as_ref().and_then(|c| c.epoch.clone());
        if known.as_ref().is_some_and(|k| *k != epoch) {
            // A greeting in another epoch without an EpochChanged first: treat it as one.
            self.change_epoch(epoch.clone(), now);
        }
        let base = self.cluster.as_ref().map_or(0, |c| c.gseq_base);
        let bound = self.apply_bound();
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        log::info!("bus connected: epoch {epoch}, head {head_offset}");
        cl.connected = true;
        cl.epoch = Some(epoch);
        cl.first_retained = first_retained;
        if !cl.positioned {
            // First start or a new epoch: the cache starts right after `after_offset`.
            cl.positioned = true;
            cl.last_offset = after_offset;
            cl.complete_from = base + after_offset + 1;
            self.log.claim_gseq(base + after_offset);
        }
        if let Some(cl) = self.cluster.as_mut() {
            cl.greeted(head_offset, now, bound);
            cl.tail_heard(now, bound);
        }
    }

    pub(super) fn on_bus_event(&mut self, event: BusEvent, now: Instant) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        if !cl.positioned {
            return;
        }
        cl.stats.events_received += 1;
        match classify(cl.last_offset, event.offset) {
            Delivery::Duplicate => {
                cl.stats.duplicates_dropped += 1;
                return;
            }
            Delivery::Next => {}
            Delivery::Gap { missing_to, .. } => {
                cl.stats.gaps += 1;
                cl.complete_from = cl.gseq_base + missing_to + 1;
                let epoch = cl.epoch.clone().unwrap_or_default();
                log::warn!("events up to {missing_to} were trimmed before this node read them");
                let mut reset = Vec::new();
                let gap_id = format!("{epoch}-{missing_to}");
                frame::encode_event(&mut reset, Some(&gap_id), Some("reset"), TOO_OLD);
                self.interject_all(&reset, now);
            }
        }
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        cl.last_offset = event.offset;
        cl.head_offset = cl.head_offset.max(event.offset);
        if let Err(why) = admissible(&event) {
            cl.stats.entries_refused += 1;
            log::warn!(
                "shared log entry {} refused ({why:?}): not written by a publish; skipped",
                event.offset
            );
            return;
        }
        let gseq = cl.gseq_base + event.offset;
        self.log.claim_gseq(gseq);
        self.observe_bus_apply(event.accepted_ms, now);
        let Some(t) = self.log.topic_for(&event.topic) else {
            // Every topic slot has subscribers and none of them wants this one: nobody here
            // can receive it. A later subscriber's resume then finds the topic incomplete.
            if let Some(cl) = self.cluster.as_mut() {
                cl.complete_from = gseq + 1;
            }
            return;
        };
        let frame = encode_bus_event(&event);
        self.append(now, t, gseq, frame.into(), event.custom_id.as_deref());
    }

    /// The shared log was lost: every stream gets `reset` `restart`, the cache is emptied,
    /// and numbering continues above every sequence number used so far.
    pub(super) fn change_epoch(&mut self, epoch: String, now: Instant) {
        let mut reset = Vec::new();
        let restart_id = format!("{epoch}-0");
        frame::encode_event(&mut reset, Some(&restart_id), Some("reset"), RESTART);
        self.interject_all(&reset, now);
        self.log.clear_all_history();
        let base = self.log.last_gseq();
        if let Some(cl) = self.cluster.as_mut() {
            cl.stats.epoch_changes += 1;
            cl.epoch = Some(epoch);
            cl.positioned = false;
            cl.last_offset = 0;
            cl.head_offset = 0;
            cl.reset_apply_watch();
            cl.gseq_base = base;
            cl.complete_from = base + 1;
            cl.ranges.forget_pages();
        }
    }

    /// Puts `frame` into every stream now, after what each client has queued (its backlog is
    /// copied out of the log first, so nothing it was owed is lost). A client whose resume
    /// is being read from Redis is told to come back instead.
    fn interject_all(&mut self, frame: &[u8], now: Instant) {
        let ids: Vec<ClientId> = self
            .all_ids()
            .into_iter()
            .filter(|&id| self.is_streaming(id))
            .collect();
        for id in ids {
            if self.client(id).is_some_and(|c| c.is_held()) {
                self.end_stream_with_retry(id, now);
                continue;
            }
            let Some(c) = self.client(id) else { continue };
            let mut bytes = c.unsent();
            for (_, e) in self.log.pending_frames(c.cursors()) {
                bytes.extend_from_slice(&e.frame);
            }
            bytes.extend_from_slice(frame);
            let ends: Vec<u64> = c
                .cursors()
                .iter()
                .map(|cur| self.log.topic(cur.topic).end_seq())
                .collect();
            // Everything it had pending is copied into `bytes`: no event waits for it.
            self.release_pending(id);
            if let Some(c) = self.client_mut(id) {
                for (cur, end) in c.cursors_mut().iter_mut().zip(ends) {
                    cur.next = end;
                }
                c.set_pending(Bytes::Owned(bytes.into()));
            }
            self.schedule(id);
        }
    }

    /// Ends a stream with a jittered `retry:` (2–7 s) after what it has queued: its browser
    /// comes back later with the same `Last-Event-ID` and loses nothing.
    pub(in crate::core) fn end_stream_with_retry(&mut self, id: ClientId, now: Instant) {
        if !self.is_streaming(id) {
            return;
        }
        let delay = self.jitter(Duration::from_secs(2), Duration::from_secs(5));
        let Some(c) = self.client(id) else { return };
        let mut bytes = c.unsent();
        frame::encode_retry(&mut bytes, delay.as_millis() as u64);
        // Its resume is abandoned: no next page of it is read (`leave_stream`).
        self.finish_stream(id, bytes, CloseReason::Normal, now);
    }
}

/// Whether an entry of the shared log may be sent: whoever wrote it (another deployment
/// sharing the prefix, an operator, a buggy writer), it must be what a publish request could
/// have made, or its fields would forge others (`event: x\ndata: …`, an id with a CR).
pub(super) fn admissible(e: &BusEvent) -> Result<(), RequestError> {
    if !valid_topic_name(&e.topic) {
        return Err(RequestError::InvalidTopic);
    }
    check_fields(e.event.as_deref(), e.custom_id.as_deref())
}

/// The SSE frame of an event of the shared log (its id is the cluster id, or the
/// publisher's own).
pub(super) fn encode_bus_event(e: &BusEvent) -> Vec<u8> {
    let id = e.frame_id();
    let mut buf = Vec::with_capacity(e.data.len() + 32 + id.len());
    frame::encode_event(&mut buf, Some(&id), e.event.as_deref(), &e.data);
    buf
}
