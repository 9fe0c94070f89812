//! The HTTP phases of a connection: reading a request head, reading a body, answering
//! (with keep-alive back to reading a head), and lingering until the last bytes are taken.
//! Head, body and linger timeouts are handled here too.
use std::time::Instant;

use super::Core;
use super::answers::fail;
use super::client::{Bytes, ClientId};
use super::endpoints::route;
use super::error::RequestError;
use super::exchange::{AfterSent, NextInput};
use super::exchange::{BodyPurpose, Phase};
use super::metrics::CloseReason;
use super::publish::finish_publish;
use super::timers::TimerKind;
use crate::http::pipeline::{Frame, StreamError};
use crate::http::request::BodyFraming;
use crate::sse::frame;

/// Feeds bytes read from a connection into whatever phase it is in: the read step for a
/// connection reading requests; what other phases keep of input otherwise.
pub(super) fn on_bytes(core: &mut Core, id: ClientId, bytes: &[u8], now: Instant) {
    let Some(c) = core.client(id) else { return };
    if c.http.is_reading() {
        read_requests(core, id, bytes, now);
    } else {
        keep_input(core, id, bytes, true);
    }
}

/// The read step: parses requests out of `input` with the connection's framing
/// ([`crate::http::pipeline::RequestStream`]) and acts on each, while the connection reads
/// requests. What is left once it stops (a stream started, an answer is pending, publishes
/// wait for the log) is kept as that phase keeps input. The one place that parses input.
fn read_requests(core: &mut Core, id: ClientId, input: &[u8], now: Instant) {
    let mut at = 0;
    loop {
        let Some(c) = core.client_mut(id) else { return };
        let Some(r) = c.http.reading_mut() else {
            break;
        };
        let (frame, used) = match r.requests.step(&input[at..]) {
            Ok(step) => step,
            Err(StreamError::Head(e)) => return fail(core, id, RequestError::Head(e), now),
            Err(StreamError::Body(e)) => return fail(core, id, e.into(), now),
        };
        at += used;
        let more = at < input.len();
        match frame {
            None => break,
            Some(Frame::Head(head)) => route(core, id, head, more, now),
            Some(Frame::Body(body)) => body_done(core, id, body, more, now),
        }
    }
    if at < input.len() {
        // Bytes that followed the request in the same read: kept whole, as they arrived
        // with it (later reads are bounded by `Core::input_room`).
        keep_input(core, id, &input[at..], false);
    }
}

/// Keeps input that arrives while the connection does not read requests: pipelined bytes
/// while an answer is pending or publishes wait (past `--max-head` + `--max-body`, when
/// `bounded`, the connection closes: reason `limit`), the bytes a stream's client sends
/// after its request (counted, dropped; past `--max-client-send` it closes), nothing while
/// closing.
fn keep_input(core: &mut Core, id: ClientId, bytes: &[u8], bounded: bool) {
    let (max_early, max_send) = (
        core.cfg.max_head + core.cfg.max_body,
        core.cfg.max_client_send,
    );
    let Some(c) = core.client_mut(id) else { return };
    if c.is_streaming() {
        let received = c.count_received(bytes.len());
        if received as usize > max_send {
            log::debug!(
                "closing {}: sent {received} bytes after its request",
                c.peer()
            );
            core.remove(id, CloseReason::Limit);
        }
        return;
    }
    // Nothing is kept while reading (the read step takes it) or closing.
    let Some(early) = c.http.early_input_mut() else {
        return;
    };
    if bounded && early.len() + bytes.len() > max_early {
        core.remove(id, CloseReason::Limit);
        return;
    }
    early.extend_from_slice(bytes);
}

/// A body is complete: publish it, or route the head it followed. `more`: input follows it.
fn body_done(core: &mut Core, id: ClientId, body: Vec<u8>, more: bool, now: Instant) {
    let Some(c) = core.client_mut(id) else { return };
    let Some(r) = c.http.reading_mut() else {
        return;
    };
    match r.body.take() {
        Some(BodyPurpose::Publish(fields)) => finish_publish(core, id, fields, body, now),
        Some(BodyPurpose::ThenRoute(mut head)) => {
            head.framing = BodyFraming::None;
            route(core, id, *head, more, now);
        }
        None => {}
    }
}

/// A complete response was sent: close, or go back to reading requests. Only changes
/// state: the caller runs the read step ([`read_next`]) over what it returns.
pub(super) fn answer_sent(core: &mut Core, id: ClientId) -> Option<NextInput> {
    match core.client_mut(id)?.http.answer_sent() {
        AfterSent::Read(next) => Some(next),
        AfterSent::Close(reason) => {
            core.remove(id, reason);
            None
        }
    }
}

/// The connection reads its next request (keep-alive, or between publishes waiting for
/// the log): a fresh head phase, an eviction candidate again, with its head timer.
pub(super) fn begin_reading(core: &mut Core, id: ClientId, now: Instant) {
    let limits = (core.cfg.max_head, core.cfg.max_body);
    let Some(c) = core.client_mut(id) else { return };
    c.http.begin_reading(limits, now);
    core.connections.note_head_reader(id, now);
    core.timers
        .arm(id, TimerKind::Head, now + core.cfg.head_timeout);
}

/// Goes back to reading requests ([`begin_reading`]), then runs the read step: routes
/// `head` when a parsed request was waiting, and parses the bytes that arrived meanwhile.
pub(super) fn read_next(core: &mut Core, id: ClientId, (head, early): NextInput, now: Instant) {
    begin_reading(core, id, now);
    if let Some(head) = head {
        route(core, id, head, !early.is_empty(), now);
    }
    read_on(core, id, early, now);
}

/// After a held request was acted on: the read step runs over the bytes that arrived
/// meanwhile (or they are kept, as the phase now keeps input); then, if the client ended its
/// side and nothing is left to answer, the connection closes.
pub(super) fn read_on(core: &mut Core, id: ClientId, early: Vec<u8>, now: Instant) {
    let Some(input_closed) = core.client(id).map(|c| c.http.input_closed()) else {
        return;
    };
    // Received earlier, within the bound then: kept whole whatever the phase is now.
    if core.client(id).is_some_and(|c| c.http.is_reading()) {
        read_requests(core, id, &early, now);
    } else {
        keep_input(core, id, &early, false);
    }
    // The client ended its side: once the requests it sent are answered, close.
    if input_closed
        && core.client(id).is_some_and(|c| {
            c.http.publishes().is_empty()
                && c.pending().is_none()
                && !matches!(
                    c.http.phase(),
                    Phase::Answering { .. }
                        | Phase::Pipelined(_)
                        | Phase::Closing(_)
                        | Phase::Checking(_)
                )
        })
    {
        core.remove(id, CloseReason::Normal);
    }
}

impl Core {
    pub(super) fn on_timer(&mut self, id: ClientId, kind: TimerKind, now: Instant) {
        let Some(c) = self.client(id) else { return };
        match (kind, c.http.phase()) {
            // A head timer of an earlier head phase of this connection (armed at accept or
            // after a previous answer): the current phase has a timer of its own.
            (TimerKind::Head, Phase::Reading(_))
                if now < c.http.head_since() + self.cfg.head_timeout => {}
            // A token check is under way: the request is being acted on.
            (TimerKind::Head, Phase::Checking(_)) => {
                self.timers
                    .arm(id, TimerKind::Head, now + self.cfg.head_timeout);
            }
            // Pipelined publishes wait for the log: not an idle connection.
            (TimerKind::Head, Phase::Reading(r))
                if !r.reads_body() && !c.http.publishes().is_empty() =>
            {
                self.timers
                    .arm(id, TimerKind::Head, now + self.cfg.head_timeout);
            }
            (TimerKind::Head, Phase::Reading(r)) if !r.reads_body() => {
                if r.requests.buffered_head() == 0 && c.http.answered() {
                    // An idle kept-alive connection between requests: just close it.
                    self.remove(id, CloseReason::Timeout);
                } else {
                    fail(self, id, RequestError::HeadTimeout, now);
                }
            }
            (TimerKind::Head, Phase::Reading(_)) => fail(self, id, RequestError::BodyTimeout, now),
            // A linger timer of an earlier response on this kept-alive connection.
            (TimerKind::Linger, Phase::Answering { .. } | Phase::Closing(_))
                if now < c.http.answer_since() + self.cfg.linger => {}
            (TimerKind::Linger, Phase::Answering { .. } | Phase::Closing(_)) => {
                self.remove(id, CloseReason::Timeout)
            }
            (TimerKind::TokenExpiry, Phase::Streaming) => self.expire_token(id, now),
            (TimerKind::KeepAlive, Phase::Streaming) => {
                let Some(ka) = self.cfg.keepalive else { return };
                let idle_since = c.last_write();
                if self.has_pending(id, c) {
                    // Behind, not idle: look again later (the slow policy handles lag).
                    self.arm_keepalive(id, now);
                } else if now.saturating_duration_since(idle_since) >= ka {
                    if let Some(c) = self.client_mut(id) {
                        c.set_pending(Bytes::Static(frame::KEEPALIVE));
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

    /// Closes the connection that has been reading a request head or body the longest.
    /// Returns false when there is none.
    pub(super) fn evict_oldest_head_reader(&mut self) -> bool {
        let Some(id) = self.connections.oldest_head_reader() else {
            return false;
        };
        self.remove(id, CloseReason::Limit);
        true
    }
}
