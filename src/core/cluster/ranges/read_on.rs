//! Streams the cache moved past: a held stream reads on from the shared log, a live one
//! that a tail batch outran becomes a reader, and one that does not read its socket gets
//! the slow-client policy.

use std::collections::VecDeque;
use std::rc::Rc;

use super::super::super::Core;
use super::super::super::client::{ClientId, Cursor};
use super::super::super::event_log::TICK_TOPIC_ID;
use super::super::super::metrics::CloseReason;
use super::super::super::topic::TopicId;
use super::Reader;
use crate::config::SlowClientPolicy;

/// Streams the cache moved past.
impl Core {
    /// With a shared log: (local sequence, gseq) of `topic`'s oldest entry.
    pub(in crate::core) fn log_front(&self, topic: TopicId) -> Option<(u64, u64)> {
        self.cluster.as_ref()?;
        let t = self.log.topic(topic);
        t.get(t.first_seq()).map(|e| (t.first_seq(), e.gseq))
    }

    /// A live stream whose cursor on `topic` the cache just moved past while its socket
    /// took everything offered (one tail batch brought more events of the topic than the
    /// cache keeps, with no write in between): it is held and reads what it missed from
    /// the shared log instead of being dropped as slow. `front` is the entry the append
    /// evicted first (the one the cursor pointed at). False when that does not apply, and
    /// under `--slow-client latest` (such a client wants the newest event, not the range).
    pub(in crate::core) fn read_passed_from_log(
        &mut self,
        key: u32,
        topic: TopicId,
        front: Option<(u64, u64)>,
    ) -> bool {
        if self.cfg.slow_client != SlowClientPolicy::Drop {
            return false;
        }
        let (Some((front_seq, front_gseq)), Some(id)) = (front, self.id_for_key(key)) else {
            return false;
        };
        let Some(c) = self
            .client(id)
            .filter(|c| c.is_streaming() && c.is_writable())
        else {
            return false;
        };
        let Some(cl) = self.cluster.as_ref() else {
            return false;
        };
        let Some(epoch) = cl.epoch.clone() else {
            return false;
        };
        // Everything below the first entry it has not started was written, in gseq order
        // across its topics; nothing from there on.
        let mut next = front_gseq;
        for cur in c.cursors().iter().filter(|cur| cur.topic != TICK_TOPIC_ID) {
            let t = self.log.topic(cur.topic);
            if cur.topic == topic {
                if cur.next != front_seq || cur.next >= t.first_seq() {
                    return false;
                }
            } else if cur.next < t.first_seq() {
                return false;
            } else if let Some(e) = t.get(cur.next) {
                next = next.min(e.gseq);
            }
        }
        let after = next.saturating_sub(1).saturating_sub(cl.gseq_base);
        let through = cl.last_offset;
        if after >= through {
            return false;
        }
        let topics: Vec<String> = c
            .cursors()
            .iter()
            .filter(|cur| cur.topic != TICK_TOPIC_ID)
            .map(|cur| self.log.topic(cur.topic).name.to_string())
            .collect();
        let ends: Vec<u64> = c
            .cursors()
            .iter()
            .map(|cur| self.log.topic(cur.topic).end_seq())
            .collect();
        let reader = Reader {
            epoch,
            after,
            through,
            topics,
            restart: false,
            cached: Vec::new(),
            frames: VecDeque::new(),
            waiting: None,
            started: false,
            pushed: false,
        };
        if let Some(cl) = self.cluster.as_mut() {
            cl.stats.range_extensions += 1;
            cl.ranges.readers.insert(id, reader);
        }
        // What it skips is read from the log: those entries no longer wait for it.
        self.move_cursors(id, &ends);
        if let Some(c) = self.client_mut(id) {
            c.hold();
        }
        self.serve_reader(id);
        true
    }

    /// True when one of `c`'s cursors points before what its topic retains.
    pub(in crate::core) fn fell_out_of_cache(&self, cursors: &[Cursor]) -> bool {
        cursors
            .iter()
            .any(|cur| cur.next < self.log.topic(cur.topic).first_seq())
    }

    /// The cache moved past a cursor of the held stream in slot `key`. Ticks are never
    /// replayed, and a stream waiting for the tail skips what comes before its resume point:
    /// such cursors move to the oldest entry retained. A reading stream reads on from the log
    /// through the newest offset applied, its cursors at the live edge; one whose socket
    /// refused bytes and that left its page unwritten since the last such move does not read
    /// its socket: the slow-client policy. Bytes a socket that takes everything has not been
    /// offered yet are no slowness: one tail batch can move the cache past a stream several
    /// times before anything is written (a `reset` put in front of the batch, then more
    /// events of its topic than the cache keeps).
    pub(in crate::core) fn held_fell_behind(&mut self, key: u32) {
        let Some(id) = self.id_for_key(key) else {
            return;
        };
        let Some(c) = self.client(id) else { return };
        let unwritten = !c.is_writable() && (c.pending().is_some() || self.has_range_frames(id));
        let events_passed = c.cursors().iter().any(|cur| {
            cur.topic != TICK_TOPIC_ID && cur.next < self.log.topic(cur.topic).first_seq()
        });
        let reading = self
            .cluster
            .as_ref()
            .and_then(|cl| cl.ranges.readers.get(&id))
            .map(|r| r.pushed);
        match reading {
            Some(true) if unwritten && events_passed => self.held_slow(id),
            Some(_) if events_passed => self.read_on(id, unwritten),
            _ => {
                let to: Vec<u64> = c
                    .cursors()
                    .iter()
                    .map(|cur| cur.next.max(self.log.topic(cur.topic).first_seq()))
                    .collect();
                self.move_cursors(id, &to);
            }
        }
    }

    /// Reader `id` reads the log on through the newest offset applied; its cursors move to
    /// the live edge (a restart that had no page yet keeps what they collected, for the
    /// events its log may have trimmed).
    fn read_on(&mut self, id: ClientId, unwritten: bool) {
        let collected: Vec<(u64, Rc<[u8]>)> = self.client(id).map_or(Vec::new(), |c| {
            let kept: Vec<Cursor> = c
                .cursors()
                .iter()
                .filter(|cur| cur.topic != TICK_TOPIC_ID)
                .map(|cur| Cursor {
                    next: cur.next.max(self.log.topic(cur.topic).first_seq()),
                    ..*cur
                })
                .collect();
            self.log
                .pending_frames(&kept)
                .map(|(_, e)| (e.gseq, e.frame.clone()))
                .collect()
        });
        let ends: Vec<u64> = self.client(id).map_or(Vec::new(), |c| {
            c.cursors()
                .iter()
                .map(|cur| self.log.topic(cur.topic).end_seq())
                .collect()
        });
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let last = cl.last_offset;
        let Some(r) = cl.ranges.readers.get_mut(&id) else {
            return;
        };
        r.through = r.through.max(last);
        r.pushed = unwritten;
        if r.restart {
            r.cached.extend(collected);
        }
        cl.stats.range_extensions += 1;
        self.move_cursors(id, &ends);
        self.serve_reader(id);
    }

    /// The slow-client policy for a held stream that does not read: dropped, or (`latest`)
    /// its read abandoned and its cursors moved to the newest event.
    fn held_slow(&mut self, id: ClientId) {
        log::info!("a resuming client does not read its range: slow");
        match self.cfg.slow_client {
            SlowClientPolicy::Drop => self.remove(id, CloseReason::Slow),
            SlowClientPolicy::Latest => {
                self.forget_reader(id);
                if let Some(c) = self.client_mut(id) {
                    c.release();
                }
                self.apply_slow_policy(id.key);
            }
        }
    }
}
