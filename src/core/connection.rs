//! The HTTP phases of a connection: reading a request head, reading a body, answering
//! (with keep-alive back to reading a head), and lingering until the last bytes are taken.
//! Head, body and linger timeouts are handled here too.
use std::time::Instant;

use super::Core;
use super::client::{AfterAnswer, BodyPurpose, BodyState, Bytes, ClientId, Pending, Phase};
use super::endpoints::{route, route_bodiless};
use super::error::RequestError;
use super::metrics::CloseReason;
use super::publish::finish_publish;
use super::timers::TimerKind;
use crate::http::body::BodyReader;
use crate::http::request::{BodyFraming, HeadProgress, HeadReader, RequestHead};
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
        Phase::Body(st) => match st.reader.feed(bytes) {
            Err(e) => fail(core, id, e.into(), now),
            Ok(progress) if progress.done => {
                let Phase::Body(st) =
                    std::mem::replace(&mut c.phase, Phase::Closing(CloseReason::Normal))
                else {
                    return;
                };
                body_done(core, id, *st, bytes[progress.used..].to_vec(), now);
            }
            Ok(_) => {}
        },
        Phase::Streaming => {
            let received = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            c.received_after_request = c.received_after_request.saturating_add(received);
            if c.received_after_request as usize > max_send {
                log::debug!(
                    "closing {}: sent {} bytes after its request",
                    c.peer,
                    c.received_after_request
                );
                core.remove(id, CloseReason::Limit);
            }
        }
        Phase::Answering { early, .. } => {
            if !keep_early(early, bytes, max_head + max_body) {
                core.remove(id, CloseReason::Limit);
            }
        }
        Phase::Pipelined(held) => {
            if !keep_early(&mut held.early, bytes, max_head + max_body) {
                core.remove(id, CloseReason::Limit);
            }
        }
        Phase::Closing(_) => {}
    }
}

/// Keeps bytes that arrive while earlier requests are answered. False past `bound` (the
/// caller closes).
fn keep_early(early: &mut Vec<u8>, bytes: &[u8], bound: usize) -> bool {
    if early.len() + bytes.len() > bound {
        return false;
    }
    early.extend_from_slice(bytes);
    true
}

/// Enters the body phase for a request whose body `reader` reads, with the bytes that
/// followed the head; acts on the request at once when the body is already complete.
pub(super) fn read_body(
    core: &mut Core,
    id: ClientId,
    reader: BodyReader,
    purpose: BodyPurpose,
    rest: Vec<u8>,
    now: Instant,
) {
    let Some(c) = core.client_mut(id) else { return };
    let st = BodyState { reader, purpose };
    if st.reader.is_done() {
        c.phase = Phase::Closing(CloseReason::Normal);
        body_done(core, id, st, rest, now);
        return;
    }
    c.phase = Phase::Body(Box::new(st));
    if !rest.is_empty() {
        on_bytes(core, id, &rest, now);
    }
}

/// A body is complete: publish it, or route the head it followed.
fn body_done(core: &mut Core, id: ClientId, st: BodyState, rest: Vec<u8>, now: Instant) {
    match st.purpose {
        BodyPurpose::Publish(fields) => {
            finish_publish(core, id, fields, st.reader.into_body(), rest, now);
        }
        BodyPurpose::ThenRoute(mut head) => {
            head.framing = BodyFraming::None;
            route_bodiless(core, id, *head, rest, now);
        }
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
    answer_error_then_close(core, id, refusal.status, &refusal.message, &headers, now);
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
    answer_error_then_close(core, id, err.status(), err.message(), &headers, now);
}

/// Answers a (non-stream) request with an error and closes once it is sent, after the
/// answers of any publishes still in flight before it; lingers for a slow reader.
fn answer_error_then_close(
    core: &mut Core,
    id: ClientId,
    status: u16,
    message: &str,
    headers: &[&str],
    now: Instant,
) {
    let bytes = response::error(status, message, headers);
    let bytes = core.with_client_cors(id, bytes);
    if core.answer_after_publishes(id, status, bytes.clone(), now) {
        return;
    }
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
    // An unsent interim answer (`100 Continue`) goes first.
    let bytes = match c.pending.take() {
        Some(p) => [p.rest(), &bytes].concat(),
        None => bytes,
    };
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
        } => read_next(core, id, None, early, now),
        Phase::Pipelined(held) => read_next(core, id, held.head, held.early, now),
        Phase::Closing(reason) => core.remove(id, reason),
        _ => core.remove(id, CloseReason::Normal),
    }
}

/// Goes back to reading requests (keep-alive): routes `head` when a parsed request was
/// waiting, then parses the bytes that arrived meanwhile (`early`).
pub(super) fn read_next(
    core: &mut Core,
    id: ClientId,
    head: Option<RequestHead>,
    early: Vec<u8>,
    now: Instant,
) {
    let Some(c) = core.client_mut(id) else { return };
    c.phase = Phase::Head(HeadReader::default());
    c.answered = true;
    c.head_since = now;
    let input_closed = c.input_closed;
    core.note_head_reader(id, now);
    core.timers
        .arm(id, TimerKind::Head, now + core.cfg.head_timeout);
    if let Some(head) = head {
        route(core, id, head, early, now);
    } else if !early.is_empty() {
        on_bytes(core, id, &early, now);
    }
    // The client ended its side: once the requests it sent are answered, close.
    if input_closed
        && core.client(id).is_some_and(|c| {
            c.publishes.is_empty()
                && c.pending.is_none()
                && !matches!(
                    c.phase,
                    Phase::Answering { .. } | Phase::Pipelined(_) | Phase::Closing(_)
                )
        })
    {
        core.remove(id, CloseReason::Normal);
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
            // Pipelined publishes wait for the log: not an idle connection.
            (TimerKind::Head, Phase::Head(_)) if !c.publishes.is_empty() => {
                self.timers
                    .arm(id, TimerKind::Head, now + self.cfg.head_timeout);
            }
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

    /// Records that the client began reading a request head at `since` (accept, or back
    /// from a kept-alive answer): it is an eviction candidate until it is answered.
    /// Requests pipelined in one read share their instant: one entry stands for them all.
    pub(super) fn note_head_reader(&mut self, id: ClientId, since: Instant) {
        if self.head_readers.back() == Some(&(id, since)) {
            return;
        }
        self.head_readers.push_back((id, since));
        if self.head_readers.len() > 2 * self.clients.len() + 64 {
            // Drop entries of connections that left the phase: keeps this O(clients).
            let clients = &self.clients;
            self.head_readers.retain(|&(id, since)| {
                clients.get(id.key as usize).is_some_and(|c| {
                    c.generation == id.generation && c.head_since == since && reads_request(c)
                })
            });
            debug_assert!(
                self.head_readers.len() <= 2 * self.clients.len() + 64,
                "{} head-reader entries for {} connections after a compaction",
                self.head_readers.len(),
                self.clients.len()
            );
        }
    }

    /// Closes the connection that has been reading a request head or body the longest.
    /// Returns false when there is none.
    pub(super) fn evict_oldest_head_reader(&mut self) -> bool {
        while let Some((id, since)) = self.head_readers.pop_front() {
            if self
                .client(id)
                .is_some_and(|c| c.head_since == since && reads_request(c))
            {
                self.remove(id, CloseReason::Limit);
                return true;
            }
        }
        false
    }
}

/// True while the client is reading a request head or body (it holds a slot and may make no
/// progress: an eviction candidate).
pub(super) fn reads_request(c: &super::client::Client) -> bool {
    matches!(c.phase, Phase::Head(_) | Phase::Body(_)) && c.publishes.is_empty()
}
