//! What handling a request does to its connection, for every endpoint: answer it
//! (keep-alive or close), fail or refuse it (an error answer, then close, after the answers
//! of publishes still waiting for the log), or read its body. Endpoints and the read step
//! build on these; nothing here parses or routes.
use std::time::Instant;

use super::Core;
use super::access::Refusal;
use super::client::{Bytes, ClientId};
use super::error::RequestError;
use super::exchange::{AfterAnswer, BodyPurpose};
use super::metrics::CloseReason;
use super::timers::TimerKind;
use crate::http::body::BodyReader;
use crate::http::request::RequestHead;
use crate::http::response::{self, Connection};

/// What a complete answer says about the connection: close while shutting down, else what
/// the request asked for (HTTP/1.0 keep-alive is announced).
pub(super) fn connection_for(core: &Core, head: &RequestHead) -> Connection {
    if core.is_shutting_down() {
        Connection::Close
    } else {
        head.connection()
    }
}

/// Reads the body of the head just routed with `reader`, for `purpose`; the next read step
/// acts on it once complete.
pub(super) fn read_body(core: &mut Core, id: ClientId, reader: BodyReader, purpose: BodyPurpose) {
    let Some(c) = core.client_mut(id) else { return };
    if let Some(r) = c.http.reading_mut() {
        r.requests.read_body(reader);
        r.body = Some(purpose);
    }
}

/// Answers with an error and closes once it is sent.
pub(super) fn fail(core: &mut Core, id: ClientId, err: RequestError, now: Instant) {
    fail_with(core, id, err, None, now);
}

/// Answers a refused request (401/403 of private topics: a message and headers of its own)
/// and closes once it is sent.
pub(super) fn refuse(core: &mut Core, id: ClientId, refusal: Refusal, now: Instant) {
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
    c.set_pending(Bytes::Owned(bytes.into()));
    c.http.close_after_sent(CloseReason::Normal, now);
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
    c.queue_after_pending(bytes);
    c.http.answer(then, now);
    core.metrics.count_response(status);
    core.timers
        .arm(id, TimerKind::Linger, now + core.cfg.linger);
    core.schedule(id);
}
