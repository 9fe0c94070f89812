//! Starting a stream: topics, authorization, the limit, where it resumes (asked of the log),
//! its cursors and the prelude (or a `reset`), its keep-alives.
use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::Core;
use super::access::Denied;
use super::answers::{answer, fail, fail_with, refuse};
use super::checks::Answer;
use super::client::{Bytes, ClientId, Cursor};
use super::error::RequestError;
use super::event_log::{DEFAULT_TOPIC, DEFAULT_TOPIC_ID, Resume, TICK_TOPIC_ID};
use super::exchange::{AfterAnswer, CheckFor};
use super::log_engine::Start;
use super::metrics::{CloseReason, StreamRefusal};
use super::publish::valid_topic_name;
use super::timers::TimerKind;
use super::topic::TopicId;
use crate::http::request::{Method, RequestHead};
use crate::http::response;
use crate::sse::frame;

/// Starts the stream `head` asks for, or answers why not. `checked`: its token's check, made
/// off the reactor, once it came back (`checked`; `None` on the way in from routing).
pub(super) fn start_stream(
    core: &mut Core,
    id: ClientId,
    head: &RequestHead,
    checked: Option<&Answer>,
    now: Instant,
) {
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
    // The connect-rate bound: once the request is known valid in form (its 400 above), before
    // any token or resume work, so a refused storm costs little. A request coming back from
    // its token check was admitted on its way in; HEAD starts no stream.
    if checked.is_none() && head.method != Method::Head && !core.admit_stream(id, head, now) {
        return;
    }
    // Private topics: decided before anything is written or counted (401/403).
    let grant = match core.authorize_stream(head, &names, checked, now) {
        Ok(grant) => grant,
        Err(Denied::Refused(refusal)) => {
            refuse(core, id, refusal, now);
            return;
        }
        // Held until its signature is checked off the reactor; then this runs again.
        Err(Denied::Check(token)) => {
            core.hold_for_check(id, head, CheckFor::Stream, token, now);
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
    if core.connections.streaming() >= core.cfg.max_clients {
        over_limit(core, id, head, StreamRefusal::Clients, now);
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
                core.metrics.count_stream_refusal(StreamRefusal::Topics);
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
            over_limit(core, id, head, StreamRefusal::LogNotReady, now);
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
    let peer = core.client(id).map(|c| c.peer());
    if let Some(c) = core.client_mut(id) {
        c.set_cursors(cursors);
        c.set_pending(pending);
        c.http.stream();
    }
    core.join_pending(id);
    core.connections.stream_started();
    log::debug!(
        "client added, {} clients ({:?})",
        core.connections.streaming(),
        peer
    );
    core.begin_deferred_start(id, start, &names);
    core.arm_keepalive(id, now);
    core.keep_grant(id, grant, now);
    core.schedule(id);
}

/// A stream request told to come back later (past `--max-clients`, `--max-stream-rate`, the
/// verifier's queue, or before the shared log is ready), counted by `reason`: an EventSource
/// gets a 200 with a jittered `retry:` in [2 s, 7 s) and a close (it never retries after a
/// 503); anything else gets 503 with a jittered `Retry-After` of 2 to 6 s (the verifier's
/// queue: its own fixed `Retry-After`).
pub(super) fn over_limit(
    core: &mut Core,
    id: ClientId,
    head: &RequestHead,
    reason: StreamRefusal,
    now: Instant,
) {
    core.metrics.count_stream_refusal(reason);
    if head.accepts_event_stream() {
        let delay = retry_delay(core);
        let mut r = response::STREAM_HEAD.as_bytes().to_vec();
        frame::encode_retry(&mut r, delay.as_millis() as u64);
        answer(core, id, 200, r, AfterAnswer::Close, now);
        // Closed after sending, and counted as a limit close.
        if let Some(c) = core.client_mut(id) {
            c.http.close_when_sent(CloseReason::Limit);
        }
        return;
    }
    let err = match reason {
        StreamRefusal::VerifyQueue => super::checks::busy(),
        StreamRefusal::Rate => RequestError::StreamRateExceeded {
            retry_after_secs: retry_delay(core).as_secs().max(1),
        },
        StreamRefusal::Topics => RequestError::TooManyTopics,
        StreamRefusal::Clients | StreamRefusal::LogNotReady => RequestError::TooManyClients {
            retry_after_secs: retry_delay(core).as_secs().max(1),
        },
    };
    fail(core, id, err, now);
}

/// When a refused stream should come back: jittered in [2 s, 7 s) by the core's seeded
/// generator, so a refused crowd does not return at once.
fn retry_delay(core: &mut Core) -> Duration {
    core.jitter(Duration::from_secs(2), Duration::from_secs(5))
}

impl Core {
    pub(super) fn arm_keepalive(&mut self, id: ClientId, from: Instant) {
        if let Some(ka) = self.cfg.keepalive {
            let spread = (ka / 8).min(Duration::from_secs(1));
            let at = from + self.jitter(ka, spread);
            self.timers.arm(id, TimerKind::KeepAlive, at);
        }
    }
}
