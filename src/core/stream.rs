//! The stream write path: starting a stream (topics, resume, the reset event), the backlog
//! checks and the slow-client policy, waking subscribers after an append, keep-alives, and
//! what is offered to and taken by each `writev` ([`Core::write_slices`],
//! [`Core::handle_written`]).
use std::collections::HashSet;
use std::io::IoSlice;
use std::rc::Rc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use super::Core;
use super::client::{AfterAnswer, Bytes, Client, ClientId, Cursor, Pending, Phase};
use super::connection::{answer, fail, fail_with, refuse};
use super::error::RequestError;
use super::event_log::{DEFAULT_TOPIC, DEFAULT_TOPIC_ID, Resume, TICK_TOPIC_ID};
use super::log_engine::Start;
use super::metrics::CloseReason;
use super::publish::valid_topic_name;
use super::timers::TimerKind;
use super::topic::TopicId;
use crate::config::SlowClientPolicy;
use crate::http::request::{Method, RequestHead};
use crate::http::response;
use crate::sse::frame;

pub(super) fn start_stream(core: &mut Core, id: ClientId, head: &RequestHead, now: Instant) {
    // The topics: none means the default stream; `topic=` (empty) names it explicitly.
    // Counted before anything else is done with them (a repeated name counts each time),
    // then deduplicated in linear time.
    if head.params("topic").count() > core.cfg.max_topics_per_client {
        fail(core, id, RequestError::TooManyTopicsPerClient, now);
        return;
    }
    let mut seen = HashSet::new();
    let mut names: Vec<&str> = head.params("topic").filter(|n| seen.insert(*n)).collect();
    if names.is_empty() {
        names.push(DEFAULT_TOPIC);
    }
    if !names.iter().all(|n| valid_topic_name(n)) {
        fail(core, id, RequestError::InvalidTopic, now);
        return;
    }
    // Private topics: decided before anything is written or counted (401/403).
    let grant = match core.authorize_stream(head, &names, now) {
        Ok(grant) => grant,
        Err(refusal) => {
            refuse(core, id, refusal, now);
            return;
        }
    };
    // HEAD: the stream's head only (after the same checks as GET), then close.
    if head.method == Method::Head {
        let r = response::STREAM_HEAD.as_bytes().to_vec();
        answer(core, id, 200, r, AfterAnswer::Close, now);
        return;
    }
    // Over the limit only once the request itself is known to be valid.
    if core.streaming >= core.cfg.max_clients {
        over_limit(core, id, head, now);
        return;
    }
    let mut topic_ids: Vec<TopicId> = Vec::with_capacity(names.len() + 1);
    for n in &names {
        match core
            .log
            .topic_for_avoiding(n, &topic_ids)
            .ok_or(RequestError::TooManyTopics)
        {
            Ok(t) => topic_ids.push(t),
            Err(e) => {
                // Topics free up as subscribers leave: ask to come back soon.
                fail_with(core, id, e, Some("Retry-After: 5"), now);
                return;
            }
        }
    }
    if topic_ids.contains(&DEFAULT_TOPIC_ID) {
        topic_ids.push(TICK_TOPIC_ID);
    }
    let last = head
        .last_event_id
        .as_deref()
        .or_else(|| head.param("lastEventId"));
    let start = core.stream_start(last, &topic_ids);
    let resume = match start {
        Start::Here(resume) => resume,
        Start::NotReady => {
            over_limit(core, id, head, now);
            return;
        }
        // Held at the live edge while the log catches up (`begin_deferred_start` below).
        Start::Fetch { .. } | Start::Await { .. } => Resume::Fresh,
    };
    let restart = matches!(start, Start::Fetch { restart: true, .. });
    let mut gap = matches!(
        resume,
        Resume::Unknown | Resume::EarlierRun | Resume::TooOld
    ) || restart;
    let mut replaying = false;
    let mut cursors: smallvec::SmallVec<[Cursor; 2]> = smallvec::SmallVec::new();
    for &t in &topic_ids {
        let topic = core.log.topic(t);
        let next = match resume {
            _ if t == TICK_TOPIC_ID => topic.end_seq(),
            Resume::Fresh | Resume::Unknown | Resume::TooOld => topic.end_seq(),
            Resume::EarlierRun => topic.first_seq(),
            Resume::After(g) => topic.resume_after(g).unwrap_or_else(|| {
                gap = true;
                topic.end_seq()
            }),
        };
        replaying |= next < topic.end_seq();
        cursors.push(Cursor {
            topic: t,
            next,
            sub_index: topic.subscribers.len() as u32,
        });
        core.log.topic_mut(t).subscribers.push(id.key);
    }
    let pending = if gap {
        let (reason, gap_id) = match resume {
            _ if restart => ("restart", Some(core.restart_reset_id())),
            Resume::EarlierRun => ("restart", Some(core.restart_reset_id())),
            Resume::Unknown => ("unknown-id", Some(core.newest_reset_id())),
            _ => ("too-old", (!replaying).then(|| core.newest_reset_id())),
        };
        let mut bytes = core.stream_prelude(head).as_slice().to_vec();
        let data = format!("{{\"reason\":\"{reason}\"}}");
        frame::encode_event(&mut bytes, gap_id.as_deref(), Some("reset"), &data);
        Bytes::Owned(bytes.into())
    } else {
        core.stream_prelude(head)
    };
    let peer = core.client(id).map(|c| c.peer);
    if let Some(c) = core.client_mut(id) {
        c.cursors = cursors;
        c.pending = Some(Pending {
            bytes: pending,
            offset: 0,
        });
        c.phase = Phase::Streaming;
        c.received_after_request = 0;
    }
    core.streaming += 1;
    log::debug!("client added, {} clients ({:?})", core.streaming, peer);
    core.begin_deferred_start(id, start, &names);
    core.arm_keepalive(id, now);
    core.keep_grant(id, grant, now);
    core.schedule(id);
}

/// A streaming request over `--max-clients`: an EventSource gets a 200 with a jittered
/// `retry:` and a close (it never retries after a 503); anything else gets 503.
pub(super) fn over_limit(core: &mut Core, id: ClientId, head: &RequestHead, now: Instant) {
    let delay = core.jitter(Duration::from_secs(2), Duration::from_secs(5));
    if head.accepts_event_stream() {
        let mut r = response::STREAM_HEAD.as_bytes().to_vec();
        frame::encode_retry(&mut r, delay.as_millis() as u64);
        answer(core, id, 200, r, AfterAnswer::Close, now);
        // Closed after sending, and counted as a limit close.
        if let Some(c) = core.client_mut(id) {
            c.phase = Phase::Closing(CloseReason::Limit);
        }
    } else {
        let retry_after_secs = delay.as_secs().max(1);
        fail(
            core,
            id,
            RequestError::TooManyClients { retry_after_secs },
            now,
        );
    }
}

impl Core {
    /// Fills `iov` with the bytes to offer the client next, in order; returns how many slices
    /// were filled (0 when nothing is pending or `id` is stale).
    pub fn write_slices<'a>(&'a self, id: ClientId, iov: &mut [IoSlice<'a>]) -> usize {
        let Some(c) = self.client(id) else { return 0 };
        let mut n = 0;
        if let Some(p) = &c.pending
            && n < iov.len()
        {
            iov[n] = IoSlice::new(p.rest());
            n += 1;
        }
        if c.is_streaming() && !c.held {
            let mut frames = self.log.pending_frames(&c.cursors);
            while n < iov.len() {
                let Some((i, e)) = frames.next() else { break };
                debug_assert!(
                    c.cursors[i].topic == TICK_TOPIC_ID
                        || self.may_see_topic(id, &self.log.topic(c.cursors[i].topic).name),
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
        let Some(c) = self
            .clients
            .get_mut(id.key as usize)
            .filter(|c| c.generation == id.generation)
        else {
            return;
        };
        self.metrics.write_calls += 1;
        self.metrics.bytes_written += written as u64;
        if written > 0 {
            c.last_write = now;
        }
        let mut left = written;
        if let Some(p) = &mut c.pending {
            let rest = p.bytes.as_slice().len() - p.offset;
            if left >= rest {
                left -= rest;
                if matches!(p.bytes, Bytes::Frame(_)) {
                    self.metrics.frames_written += 1;
                }
                c.pending = None;
            } else {
                p.offset += left;
                left = 0;
            }
        }
        if left > 0 && c.is_streaming() && !c.held {
            let mut frames = self.log.pending_frames(&c.cursors);
            let mut delivered = 0u64;
            let mut partial = None;
            while left > 0 {
                let Some((_, e)) = frames.next() else { break };
                if left >= e.frame.len() {
                    left -= e.frame.len();
                    delivered += 1;
                } else {
                    partial = Some(Pending {
                        bytes: Bytes::Frame(e.frame.clone()),
                        offset: left,
                    });
                    left = 0;
                }
            }
            debug_assert_eq!(left, 0, "the kernel took more bytes than were offered");
            for (cursor, pos) in c.cursors.iter_mut().zip(frames.positions()) {
                cursor.next = pos;
            }
            if partial.is_some() {
                // The partly written frame is counted when it completes.
                c.pending = partial;
            }
            self.metrics.frames_written += delivered;
        }
        // A held stream wrote the page of its range fetch: the next one may come.
        let page_written = c.pending.is_none() && c.held && c.is_streaming();
        let finished_answer = c.pending.is_none()
            && match c.phase {
                Phase::Answering { .. } | Phase::Closing(_) => true,
                // A request waited for the answers of the publishes before it.
                Phase::Pipelined(ref held) => held.head.is_some() && c.publishes.is_empty(),
                _ => false,
            };
        // The client ended its side and every pipelined publish is answered and written.
        let input_done = c.pending.is_none()
            && c.input_closed
            && c.publishes.is_empty()
            && match &c.phase {
                Phase::Reading(r) => !r.reads_body(),
                Phase::Pipelined(_) => true,
                _ => false,
            };
        if finished_answer {
            // The answer is written: the state says what comes next, then the read step
            // picks up what the client sent meanwhile, as for a read.
            if let Some(next) = super::connection::answer_sent(self, id) {
                super::connection::read_next(self, id, next, now);
            }
        } else if input_done {
            self.remove(id, CloseReason::Normal);
        } else if self.shutdown_deadline.is_some()
            && self
                .client(id)
                .is_some_and(|c| c.is_streaming() && !self.has_pending(c))
        {
            self.remove(id, CloseReason::Shutdown);
        } else {
            self.schedule(id);
        }
        if page_written {
            self.request_parked_page(id);
        }
        self.check_fanout_done(now);
        self.debug_check();
    }

    /// Queues the client for a write if it has bytes, is writable and is not queued yet.
    pub(super) fn schedule(&mut self, id: ClientId) {
        let Some(c) = self.client(id) else { return };
        if c.writable && !c.queued && self.has_pending(c) {
            let streaming = c.is_streaming();
            if let Some(c) = self.client_mut(id) {
                c.queued = true;
            }
            if streaming {
                self.ready.push_back(id);
            } else {
                self.answers.push_back(id);
            }
        }
    }

    pub(super) fn has_pending(&self, c: &Client) -> bool {
        c.pending.is_some()
            || (c.is_streaming()
                && !c.held
                && c.cursors
                    .iter()
                    .any(|cur| cur.next < self.log.topic(cur.topic).end_seq()))
    }

    /// The backlog a client may have before the slow-client policy applies: `--max-backlog`
    /// and `--max-backlog-events`, raised to a whole history on every topic of the client, so
    /// that a resume of every retained event on all its topics is never taken for slowness
    /// (issue 11, finding 4). Memory is not at stake: a backlog is cursors into the shared log.
    pub(super) fn backlog_limit_of(&self, c: &Client) -> (u64, u64) {
        // Ticks are never replayed: the tick topic adds nothing to a resume.
        let topics = c
            .cursors
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
        let mut bytes = c.pending.as_ref().map_or(0, |p| p.rest().len() as u64);
        let mut events = 0;
        for cur in &c.cursors {
            let t = self.log.topic(cur.topic);
            match t.bytes_from(cur.next) {
                Some(b) => bytes += b,
                None => return (u64::MAX, u64::MAX),
            }
            events += t.end_seq().saturating_sub(cur.next);
        }
        (bytes, events)
    }

    pub(super) fn arm_keepalive(&mut self, id: ClientId, from: Instant) {
        if let Some(ka) = self.cfg.keepalive {
            let spread = (ka / 8).min(Duration::from_secs(1));
            let at = from + self.jitter(ka, spread);
            self.timers.arm(id, TimerKind::KeepAlive, at);
        }
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
        self.log.append(topic, gseq, frame, custom_id);
        // Wake the subscribers; apply the slow policy to those too far behind.
        let mut woken = 0;
        let subs = std::mem::take(&mut self.log.topic_mut(topic).subscribers);
        let mut lagging: Vec<u32> = Vec::new();
        for &key in &subs {
            let Some(c) = self.clients.get(key as usize) else {
                continue;
            };
            let (bytes, events) = self.backlog_of(c);
            let (max_bytes, max_events) = self.backlog_limit_of(c);
            if bytes > max_bytes || events > max_events {
                lagging.push(key);
                continue;
            }
            // A held client (its resume being read from the log) collects, unwoken.
            if c.writable && !c.queued && !c.held {
                let id = ClientId {
                    key,
                    generation: c.generation,
                };
                if let Some(c) = self.clients.get_mut(key as usize) {
                    c.queued = true;
                }
                self.ready.push_back(id);
                woken += 1;
            }
        }
        self.log.topic_mut(topic).subscribers = subs;
        for key in lagging {
            self.apply_slow_policy(key);
        }
        if woken > 0 && self.fanout.is_none() {
            self.fanout = Some((now, woken));
        }
    }

    /// Applies the slow-client policy to a client past the backlog bound.
    pub(super) fn apply_slow_policy(&mut self, key: u32) {
        let Some(c) = self.clients.get(key as usize) else {
            return;
        };
        let id = ClientId {
            key,
            generation: c.generation,
        };
        let (bytes, events) = self.backlog_of(c);
        match self.cfg.slow_client {
            SlowClientPolicy::Drop => {
                if bytes == u64::MAX {
                    log::info!(
                        "dropping slow client {}: fell out of the retained history",
                        c.peer
                    );
                } else {
                    log::info!(
                        "dropping slow client {}: {bytes} bytes / {events} events behind",
                        c.peer
                    );
                }
                self.remove(id, CloseReason::Slow);
            }
            SlowClientPolicy::Latest => {
                // Everything to the live edge, except the single newest entry among its topics.
                let newest = c
                    .cursors
                    .iter()
                    .enumerate()
                    .filter_map(|(i, cur)| {
                        let t = self.log.topic(cur.topic);
                        t.get(t.end_seq().checked_sub(1)?).map(|e| (e.gseq, i))
                    })
                    .max();
                let ends: SmallVec<[u64; 2]> = c
                    .cursors
                    .iter()
                    .map(|cur| self.log.topic(cur.topic).end_seq())
                    .collect();
                if let Some(c) = self.clients.get_mut(key as usize) {
                    for (i, (cur, end)) in c.cursors.iter_mut().zip(ends).enumerate() {
                        cur.next = if newest.is_some_and(|(_, n)| n == i) {
                            end - 1
                        } else {
                            end
                        };
                    }
                }
                self.metrics.skipped_forward += 1;
                log::debug!(
                    "skipped lagging client forward to the newest event ({bytes} bytes behind)"
                );
                self.schedule(id);
            }
        }
    }

    /// The one way a stream ends, whatever ends it (the client gone, slow, its token
    /// expired, an epoch change or an abandoned range read, shutdown): its cursors leave
    /// their topics, a parked page of its range read is forgotten, its grant is dropped and
    /// the streaming count goes down. The connection itself stays (the caller removes it or
    /// sends last bytes with [`Core::finish_stream`]). False when `id` was not streaming.
    pub(super) fn leave_stream(&mut self, id: ClientId) -> bool {
        let Some(c) = self.client_mut(id).filter(|c| c.is_streaming()) else {
            return false;
        };
        let cursors = std::mem::take(&mut c.cursors);
        c.held = false;
        c.grant = None;
        // Each cursor is on its own topic: a swap-removal in one cannot move another.
        for cur in &cursors {
            self.unsubscribe(cur.topic, cur.sub_index as usize);
        }
        self.forget_parked_page(id);
        self.streaming -= 1;
        log::debug!("stream ended, {} clients", self.streaming);
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
        c.phase = Phase::Closing(reason);
        c.pending = Some(Pending {
            bytes: Bytes::Owned(last.into()),
            offset: 0,
        });
        c.answer_since = now;
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
            && let Some(m) = self.clients.get_mut(moved as usize)
            && let Some(cur) = m.cursors.iter_mut().find(|cur| cur.topic == topic)
        {
            cur.sub_index = index as u32;
        }
    }

    pub(super) fn check_fanout_done(&mut self, now: Instant) {
        if let Some((start, clients)) = self.fanout
            && self.ready.is_empty()
        {
            self.metrics.last_fanout = Some(now.saturating_duration_since(start));
            self.metrics.last_fanout_clients = clients;
            self.fanout = None;
        }
    }
}
