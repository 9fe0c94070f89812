//! The HTTP phases of a connection: reading a request head, reading a body, answering
//! (with keep-alive back to reading a head), and lingering until the last bytes are taken.
//! Head, body and linger timeouts are handled here too.
use std::time::Instant;

use super::Core;
use super::client::{AfterAnswer, Bytes, ClientId, Pending, Phase};
use super::endpoints::route;
use super::error::RequestError;
use super::metrics::CloseReason;
use super::publish::finish_publish;
use super::timers::TimerKind;
use crate::http::chunked::ChunkError;
use crate::http::request::{HeadProgress, HeadReader};
use crate::http::response;
use crate::sse::frame;

/// Feeds bytes read from a connection into whatever phase it is in.
pub(super) fn on_bytes(core: &mut Core, id: ClientId, bytes: &[u8], now: Instant) {
    let (max_head, max_body, max_send) = (
        core.cfg.max_head,
        core.cfg.max_body,
        core.cfg.max_client_send,
    );
    let Some(c) = core.client_mut(id) else { return };
    match &mut c.phase {
        Phase::Head(reader) => match reader.feed(bytes, max_head) {
            Ok(HeadProgress::Partial) => {}
            Ok(HeadProgress::Complete { head, rest }) => route(core, id, head, rest, now),
            Err(e) => fail(core, id, RequestError::Head(e), now),
        },
        Phase::Body(st) => {
            let (used, done) = match &mut st.chunked {
                Some(decoder) => match decoder.feed(bytes, &mut st.body, max_body) {
                    Ok(progress) => progress,
                    Err(ChunkError::TooLarge) => {
                        return fail(core, id, RequestError::BodyTooLarge, now);
                    }
                    Err(ChunkError::Malformed) => {
                        return fail(core, id, RequestError::MalformedChunked, now);
                    }
                },
                None => {
                    let take = (st.need - st.body.len()).min(bytes.len());
                    st.body.extend_from_slice(&bytes[..take]);
                    (take, st.body.len() == st.need)
                }
            };
            if done {
                let Phase::Body(st) =
                    std::mem::replace(&mut c.phase, Phase::Closing(CloseReason::Normal))
                else {
                    return;
                };
                finish_publish(core, id, *st, bytes[used..].to_vec(), now);
            }
        }
        Phase::Streaming => {
            c.received_after_request += bytes.len();
            if c.received_after_request > max_send {
                log::debug!(
                    "closing {}: sent {} bytes after its request",
                    c.peer,
                    c.received_after_request
                );
                core.remove(id, CloseReason::Limit);
            }
        }
        Phase::Answering { early, .. } => {
            if early.len() + bytes.len() > max_head + max_body {
                core.remove(id, CloseReason::Limit);
            } else {
                early.extend_from_slice(bytes);
            }
        }
        Phase::Closing(_) => {}
    }
}

/// Answers with an error and closes once it is sent.
pub(super) fn fail(core: &mut Core, id: ClientId, err: RequestError, now: Instant) {
    fail_with(core, id, err, None, now);
}

/// Answers a refused request (401/403 of private topics: a message and headers of its own)
/// and closes once it is sent.
pub(super) fn refuse(core: &mut Core, id: ClientId, refusal: super::access::Refusal, now: Instant) {
    let Some(c) = core.client_mut(id) else { return };
    if c.is_streaming() {
        core.remove(id, CloseReason::Error);
        return;
    }
    let headers: Vec<&str> = refusal.headers.iter().map(String::as_str).collect();
    let bytes = response::error(refusal.status, &refusal.message, &headers);
    let bytes = core.with_client_cors(id, bytes);
    let Some(c) = core.client_mut(id) else { return };
    c.pending = Some(Pending {
        bytes: Bytes::Owned(bytes.into()),
        offset: 0,
    });
    c.phase = Phase::Closing(CloseReason::Normal);
    c.answer_since = now;
    core.metrics.count_response(refusal.status);
    core.timers
        .arm(id, TimerKind::Linger, now + core.cfg.linger);
    core.schedule(id);
}

/// [`fail`] with one more header line than the error itself carries.
pub(super) fn fail_with(
    core: &mut Core,
    id: ClientId,
    err: RequestError,
    extra_header: Option<&str>,
    now: Instant,
) {
    let Some(c) = core.client_mut(id) else { return };
    if c.is_streaming() {
        // Never write a response into a stream.
        core.remove(id, CloseReason::Error);
        return;
    }
    let own = err.headers();
    let headers: Vec<&str> = own.as_deref().into_iter().chain(extra_header).collect();
    let status = err.status();
    let bytes = response::error(status, err.message(), &headers);
    let bytes = core.with_client_cors(id, bytes);
    let Some(c) = core.client_mut(id) else { return };
    c.pending = Some(Pending {
        bytes: Bytes::Owned(bytes.into()),
        offset: 0,
    });
    c.phase = Phase::Closing(CloseReason::Normal);
    c.answer_since = now;
    core.metrics.count_response(status);
    core.timers
        .arm(id, TimerKind::Linger, now + core.cfg.linger);
    core.schedule(id);
}

/// Queues a complete response; then the connection closes or reads another request
/// (never during shutdown).
pub(super) fn answer(
    core: &mut Core,
    id: ClientId,
    status: u16,
    bytes: Vec<u8>,
    then: AfterAnswer,
    early: Vec<u8>,
    now: Instant,
) {
    let then = if core.shutdown_deadline.is_some() {
        AfterAnswer::Close
    } else {
        then
    };
    let bytes = core.with_client_cors(id, bytes);
    let Some(c) = core.client_mut(id) else { return };
    c.pending = Some(Pending {
        bytes: Bytes::Owned(bytes.into()),
        offset: 0,
    });
    c.phase = Phase::Answering { then, early };
    c.answer_since = now;
    core.metrics.count_response(status);
    core.timers
        .arm(id, TimerKind::Linger, now + core.cfg.linger);
    core.schedule(id);
}

/// A complete response was sent: close, or read the next request.
pub(super) fn answer_sent(core: &mut Core, id: ClientId, now: Instant) {
    let Some(c) = core.client_mut(id) else { return };
    match std::mem::replace(&mut c.phase, Phase::Closing(CloseReason::Normal)) {
        Phase::Answering {
            then: AfterAnswer::KeepAlive,
            early,
        } => {
            c.phase = Phase::Head(HeadReader::default());
            c.answered = true;
            c.head_since = now;
            core.timers
                .arm(id, TimerKind::Head, now + core.cfg.head_timeout);
            if !early.is_empty() {
                on_bytes(core, id, &early, now);
            }
        }
        Phase::Closing(reason) => core.remove(id, reason),
        _ => core.remove(id, CloseReason::Normal),
    }
}

impl Core {
    pub(super) fn on_timer(&mut self, id: ClientId, kind: TimerKind, now: Instant) {
        let Some(c) = self.client(id) else { return };
        match (kind, &c.phase) {
            // A head timer of an earlier head phase of this connection (armed at accept or
            // after a previous answer): the current phase has a timer of its own.
            (TimerKind::Head, Phase::Head(_) | Phase::Body(_))
                if now < c.head_since + self.cfg.head_timeout => {}
            (TimerKind::Head, Phase::Head(r)) => {
                if r.buffered() == 0 && c.answered {
                    // An idle kept-alive connection between requests: just close it.
                    self.remove(id, CloseReason::Timeout);
                } else {
                    fail(self, id, RequestError::HeadTimeout, now);
                }
            }
            (TimerKind::Head, Phase::Body(_)) => fail(self, id, RequestError::BodyTimeout, now),
            // A linger timer of an earlier response on this kept-alive connection.
            (TimerKind::Linger, Phase::Answering { .. } | Phase::Closing(_))
                if now < c.answer_since + self.cfg.linger => {}
            (TimerKind::Linger, Phase::Answering { .. } | Phase::Closing(_)) => {
                self.remove(id, CloseReason::Timeout)
            }
            (TimerKind::TokenExpiry, Phase::Streaming) => self.expire_token(id, now),
            (TimerKind::KeepAlive, Phase::Streaming) => {
                let Some(ka) = self.cfg.keepalive else { return };
                let idle_since = c.last_write;
                if self.has_pending(c) {
                    // Behind, not idle: look again later (the slow policy handles lag).
                    self.arm_keepalive(id, now);
                } else if now.saturating_duration_since(idle_since) >= ka {
                    if let Some(c) = self.client_mut(id) {
                        c.pending = Some(Pending {
                            bytes: Bytes::Static(frame::KEEPALIVE),
                            offset: 0,
                        });
                    }
                    self.metrics.keepalives += 1;
                    self.schedule(id);
                    self.arm_keepalive(id, now);
                } else {
                    self.arm_keepalive(id, idle_since);
                }
            }
            _ => {}
        }
    }

    /// Closes the oldest connection still reading its first request head. Returns false
    /// when there is none.
    pub(super) fn evict_oldest_head_reader(&mut self) -> bool {
        while let Some(id) = self.head_readers.pop_front() {
            if self
                .client(id)
                .is_some_and(|c| matches!(c.phase, Phase::Head(_)) && !c.answered)
            {
                self.remove(id, CloseReason::Limit);
                return true;
            }
        }
        false
    }
}
