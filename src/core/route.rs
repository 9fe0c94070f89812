//! What the core does with a connection's bytes: reading heads and bodies, routing requests,
//! starting streams (with resume), publishing, and the small endpoints.

use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Core;
use super::client::{BodyState, Bytes, ClientId, Cursor, Pending, Phase};
use super::event_log::{DEFAULT_TOPIC, DEFAULT_TOPIC_ID, Resume, TICK_TOPIC_ID};
use super::metrics::{self, CloseReason, Gauges};
use super::timers::TimerKind;
use super::topic::TopicId;
use crate::http::chunked::{ChunkError, ChunkedDecoder};
use crate::http::request::{HeadError, HeadProgress, HeadReader, Method, RequestHead};
use crate::http::response;
use crate::sse::frame;

/// Longest topic name, event type or event id accepted, in bytes.
pub const MAX_NAME: usize = 256;
/// Most clients listed by `GET /clients`.
pub const MAX_LISTED_CLIENTS: usize = 100;

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
            Err(e) => fail(core, id, e.status(), head_error_text(e), &[], now),
        },
        Phase::Body(st) => {
            let (used, done) = match &mut st.chunked {
                Some(decoder) => match decoder.feed(bytes, &mut st.body, max_body) {
                    Ok(progress) => progress,
                    Err(ChunkError::TooLarge) => {
                        return fail(core, id, 413, "body larger than --max-body", &[], now);
                    }
                    Err(ChunkError::Malformed) => {
                        return fail(core, id, 400, "malformed chunked body", &[], now);
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

fn head_error_text(e: HeadError) -> &'static str {
    match e {
        HeadError::Malformed => "malformed request",
        HeadError::TooLarge => "request head too large",
        HeadError::BadFraming => "conflicting or invalid Content-Length / Transfer-Encoding",
    }
}

/// Answers with an error and closes once it is sent.
pub(super) fn fail(
    core: &mut Core,
    id: ClientId,
    status: u16,
    message: &str,
    headers: &[&str],
    now: Instant,
) {
    let Some(c) = core.client_mut(id) else { return };
    if c.is_streaming() {
        // Never write a response into a stream.
        core.remove(id, CloseReason::Error);
        return;
    }
    c.pending = Some(Pending {
        bytes: Bytes::Owned(response::error(status, message, headers).into()),
        offset: 0,
    });
    c.phase = Phase::Closing(CloseReason::Normal);
    c.answer_since = now;
    core.metrics.count_response(status);
    core.timers
        .arm(id, TimerKind::Linger, now + core.cfg.linger);
    core.schedule(id);
}

/// Queues a complete response; keeps the connection for another request if `keep_alive`.
fn answer(
    core: &mut Core,
    id: ClientId,
    status: u16,
    bytes: Vec<u8>,
    keep_alive: bool,
    early: Vec<u8>,
    now: Instant,
) {
    let keep_alive = keep_alive && core.shutdown_deadline.is_none();
    let Some(c) = core.client_mut(id) else { return };
    c.pending = Some(Pending {
        bytes: Bytes::Owned(bytes.into()),
        offset: 0,
    });
    c.phase = Phase::Answering { keep_alive, early };
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
            keep_alive: true,
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

fn route(core: &mut Core, id: ClientId, head: RequestHead, rest: Vec<u8>, now: Instant) {
    let keep_alive = !head.close;
    match head.path.as_str() {
        "/" if matches!(head.method, Method::Get | Method::Head) && wants_page(&head) => {
            let r = response::complete(
                200,
                "text/html; charset=utf-8",
                &[],
                DEMO_PAGE.as_bytes(),
                !keep_alive,
            );
            answer(
                core,
                id,
                200,
                head_only_if(head.method, r, DEMO_PAGE.len()),
                keep_alive,
                rest,
                now,
            );
        }
        "/" | "/events" => match head.method {
            Method::Get | Method::Head => start_stream(core, id, &head, rest, now),
            _ => fail(core, id, 405, "use GET", &["Allow: GET, HEAD"], now),
        },
        "/publish" => match head.method {
            Method::Post => begin_publish(core, id, &head, rest, now),
            _ => fail(core, id, 405, "use POST", &["Allow: POST"], now),
        },
        "/health" => match head.method {
            Method::Get | Method::Head => {
                let r =
                    response::complete(200, "text/plain; charset=utf-8", &[], b"ok\n", !keep_alive);
                answer(
                    core,
                    id,
                    200,
                    head_only_if(head.method, r, 3),
                    keep_alive,
                    rest,
                    now,
                );
            }
            _ => fail(core, id, 405, "use GET", &["Allow: GET, HEAD"], now),
        },
        "/metrics" => match head.method {
            Method::Get => {
                let body = render_metrics(core);
                let r = response::complete(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    &[],
                    body.as_bytes(),
                    !keep_alive,
                );
                answer(core, id, 200, r, keep_alive, rest, now);
            }
            _ => fail(core, id, 405, "use GET", &["Allow: GET"], now),
        },
        "/clients" => match head.method {
            Method::Get => {
                let peer_local = core.client(id).is_some_and(|c| c.peer.ip().is_loopback());
                if !peer_local && authorize(core, &head).is_err() {
                    fail(
                        core,
                        id,
                        403,
                        "/clients is for loopback or token holders",
                        &[],
                        now,
                    );
                    return;
                }
                let body = render_clients(core, now);
                let r =
                    response::complete(200, "application/json", &[], body.as_bytes(), !keep_alive);
                answer(core, id, 200, r, keep_alive, rest, now);
            }
            _ => fail(core, id, 405, "use GET", &["Allow: GET"], now),
        },
        _ => fail(core, id, 404, "no such path (try / or /events)", &[], now),
    }
}

/// The demo page, served at `/` to browser navigations.
pub const DEMO_PAGE: &str = include_str!("../demo.html");

/// A browser navigation: asks for HTML and not for an event stream (`curl` sends `*/*`,
/// EventSource sends `text/event-stream`: both get the stream).
fn wants_page(head: &RequestHead) -> bool {
    head.accept
        .as_deref()
        .is_some_and(|a| a.contains("text/html"))
        && !head.accepts_event_stream()
}

/// For a HEAD request, drops the body of a complete response (its head still announces the
/// body's length, as for GET).
fn head_only_if(method: Method, mut response: Vec<u8>, body_len: usize) -> Vec<u8> {
    if method == Method::Head {
        response.truncate(response.len() - body_len);
    }
    response
}

fn valid_topic_name(name: &str) -> bool {
    name.len() <= MAX_NAME && !name.contains('\0')
}

/// The topic named `name`, created or recycled if needed (see [`EventLog::topic_for`]).
///
/// [`EventLog::topic_for`]: super::event_log::EventLog::topic_for
fn topic_for(core: &mut Core, name: &str) -> Result<TopicId, (u16, &'static str)> {
    core.log
        .topic_for(name)
        .ok_or((503, "too many topics in use"))
}

fn start_stream(core: &mut Core, id: ClientId, head: &RequestHead, rest: Vec<u8>, now: Instant) {
    if head.method == Method::Head {
        let r = response::STREAM_HEAD.as_bytes().to_vec();
        answer(core, id, 200, r, false, Vec::new(), now);
        return;
    }
    // The topics: none means the default stream; `topic=` (empty) names it explicitly.
    let mut names: Vec<&str> = Vec::new();
    for n in head.params("topic") {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    if names.is_empty() {
        names.push(DEFAULT_TOPIC);
    }
    if names.len() > core.cfg.max_topics_per_client {
        fail(core, id, 400, "too many topics", &[], now);
        return;
    }
    if !names.iter().all(|n| valid_topic_name(n)) {
        fail(core, id, 400, "invalid topic name", &[], now);
        return;
    }
    // Over the limit only once the request itself is known to be valid.
    if core.streaming >= core.cfg.max_clients {
        over_limit(core, id, head, now);
        return;
    }
    let mut topic_ids: Vec<TopicId> = Vec::with_capacity(names.len() + 1);
    for n in &names {
        match topic_for(core, n) {
            Ok(t) => topic_ids.push(t),
            Err((status, msg)) => {
                fail(core, id, status, msg, &["Retry-After: 5"], now);
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
    let resume = core.log.resolve(last);
    let mut gap = resume == Resume::Unknown || resume == Resume::EarlierRun;
    let mut replaying = false;
    let mut cursors: smallvec::SmallVec<[Cursor; 2]> = smallvec::SmallVec::new();
    for &t in &topic_ids {
        let topic = core.log.topic(t);
        let next = match resume {
            _ if t == TICK_TOPIC_ID => topic.end_seq(),
            Resume::Fresh | Resume::Unknown => topic.end_seq(),
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
            Resume::EarlierRun => ("restart", Some(core.log.event_id(0))),
            Resume::Unknown => ("unknown-id", Some(core.log.last_event_id())),
            _ => ("too-old", (!replaying).then(|| core.log.last_event_id())),
        };
        let mut bytes = core.prelude.to_vec();
        let data = format!("{{\"reason\":\"{reason}\"}}");
        frame::encode_event(&mut bytes, gap_id.as_deref(), Some("reset"), &data);
        Bytes::Owned(bytes.into())
    } else {
        Bytes::Shared(Rc::clone(&core.prelude))
    };
    let peer = core.client(id).map(|c| c.peer);
    if let Some(c) = core.client_mut(id) {
        c.cursors = cursors;
        c.pending = Some(Pending {
            bytes: pending,
            offset: 0,
        });
        c.phase = Phase::Streaming;
        c.received_after_request = rest.len();
    }
    core.streaming += 1;
    log::debug!("client added, {} clients ({:?})", core.streaming, peer);
    core.arm_keepalive(id, now);
    core.schedule(id);
    if rest.len() > core.cfg.max_client_send {
        core.remove(id, CloseReason::Limit);
    }
}

/// A streaming request over `--max-clients`: an EventSource gets a 200 with a jittered
/// `retry:` and a close (it never retries after a 503); anything else gets 503.
fn over_limit(core: &mut Core, id: ClientId, head: &RequestHead, now: Instant) {
    let delay = core.jitter(Duration::from_secs(2), Duration::from_secs(5));
    if head.accepts_event_stream() {
        let mut r = response::STREAM_HEAD.as_bytes().to_vec();
        frame::encode_retry(&mut r, delay.as_millis() as u64);
        answer(core, id, 200, r, false, Vec::new(), now);
        // Closed after sending, and counted as a limit close.
        if let Some(c) = core.client_mut(id) {
            c.phase = Phase::Closing(CloseReason::Limit);
        }
    } else {
        let retry_after = format!("Retry-After: {}", delay.as_secs().max(1));
        fail(core, id, 503, "too many clients", &[&retry_after], now);
    }
}

/// Checks `Authorization: Bearer <token>` when a token is configured.
fn authorize(core: &Core, head: &RequestHead) -> Result<(), (u16, &'static str)> {
    let Some(token) = &core.cfg.publish_token else {
        return Ok(());
    };
    let Some(auth) = &head.authorization else {
        return Err((401, "a bearer token is required"));
    };
    let given = match auth.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => return Err((401, "a bearer token is required")),
    };
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err((403, "wrong token"))
    }
}

/// Compares in time that depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

fn begin_publish(core: &mut Core, id: ClientId, head: &RequestHead, rest: Vec<u8>, now: Instant) {
    if let Err((status, msg)) = authorize(core, head) {
        let hdrs: &[&str] = if status == 401 {
            &["WWW-Authenticate: Bearer"]
        } else {
            &[]
        };
        fail(core, id, status, msg, hdrs, now);
        return;
    }
    let topic = head.param("topic").unwrap_or(DEFAULT_TOPIC).to_owned();
    let event = head.param("event").map(str::to_owned);
    let event_id = head.param("id").map(str::to_owned);
    if !valid_topic_name(&topic) {
        fail(core, id, 400, "invalid topic name", &[], now);
        return;
    }
    if let Err(msg) = check_fields(event.as_deref(), event_id.as_deref()) {
        fail(core, id, 400, msg, &[], now);
        return;
    }
    // A body is framed by Content-Length or by chunked coding (both at once was refused by
    // the parser as a smuggling shape).
    let chunked = match (head.transfer_encoding, head.chunked) {
        (true, true) => Some(ChunkedDecoder::default()),
        (true, false) => {
            fail(
                core,
                id,
                501,
                "the only Transfer-Encoding supported is chunked",
                &[],
                now,
            );
            return;
        }
        (false, _) => None,
    };
    let need = match (&chunked, head.content_length) {
        (Some(_), _) => 0,
        (None, Some(len)) if len > core.cfg.max_body as u64 => {
            fail(core, id, 413, "body larger than --max-body", &[], now);
            return;
        }
        (None, Some(len)) => len as usize,
        (None, None) => {
            fail(
                core,
                id,
                411,
                "a Content-Length (or a chunked body) is required",
                &[],
                now,
            );
            return;
        }
    };
    let body_follows = chunked.is_some() || need > 0;
    let state = BodyState {
        chunked,
        topic,
        event,
        id: event_id,
        need,
        body: Vec::with_capacity(need),
        keep_alive: !head.close,
    };
    if let Some(c) = core.client_mut(id) {
        c.phase = Phase::Body(Box::new(state));
        if head.expect_continue && rest.is_empty() && body_follows {
            c.pending = Some(Pending {
                bytes: Bytes::Static(b"HTTP/1.1 100 Continue\r\n\r\n"),
                offset: 0,
            });
        }
    }
    core.schedule(id);
    if !body_follows {
        let Some(c) = core.client_mut(id) else { return };
        let Phase::Body(st) = std::mem::replace(&mut c.phase, Phase::Closing(CloseReason::Normal))
        else {
            return;
        };
        finish_publish(core, id, *st, rest, now);
    } else if !rest.is_empty() {
        on_bytes(core, id, &rest, now);
    }
}

fn check_fields(event: Option<&str>, id: Option<&str>) -> Result<(), &'static str> {
    if let Some(e) = event
        && (e.is_empty() || e.len() > MAX_NAME || !frame::valid_field_value(e))
    {
        return Err("event must be 1 to 256 bytes without CR, LF or NUL");
    }
    if let Some(i) = id
        && (i.is_empty() || i.len() > MAX_NAME || !frame::valid_field_value(i))
    {
        return Err("id must be 1 to 256 bytes without CR, LF or NUL");
    }
    Ok(())
}

fn finish_publish(core: &mut Core, id: ClientId, st: BodyState, early: Vec<u8>, now: Instant) {
    let Ok(data) = String::from_utf8(st.body) else {
        fail(core, id, 400, "the body is not UTF-8", &[], now);
        return;
    };
    match core.publish(now, &st.topic, st.event.as_deref(), st.id.as_deref(), &data) {
        Ok(event_id) => {
            let body = format!("{event_id}\n");
            let r = response::complete(
                200,
                "text/plain; charset=utf-8",
                &[],
                body.as_bytes(),
                !st.keep_alive,
            );
            answer(core, id, 200, r, st.keep_alive, early, now);
        }
        Err((status, msg)) => fail(core, id, status, msg, &[], now),
    }
}

impl Core {
    /// Validates, encodes once, appends to the topic's log, wakes its subscribers.
    pub(super) fn publish(
        &mut self,
        now: Instant,
        topic: &str,
        event: Option<&str>,
        id: Option<&str>,
        data: &str,
    ) -> Result<String, (u16, &'static str)> {
        if self.shutdown_deadline.is_some() {
            return Err((503, "shutting down"));
        }
        if !valid_topic_name(topic) {
            return Err((400, "invalid topic name"));
        }
        check_fields(event, id).map_err(|m| (400, m))?;
        if data.is_empty() {
            return Err((
                400,
                "an event needs data (EventSource drops events with empty data)",
            ));
        }
        let t = topic_for(self, topic)?;
        let gseq = self.log.assign_gseq();
        let event_id = match id {
            Some(i) => i.to_owned(),
            None => self.log.event_id(gseq),
        };
        let mut buf = Vec::with_capacity(data.len() + 32 + event_id.len());
        frame::encode_event(&mut buf, Some(&event_id), event, data);
        self.metrics.events_published += 1;
        self.append(now, t, gseq, Rc::from(buf), id);
        Ok(event_id)
    }
}

fn render_metrics(core: &Core) -> String {
    let topics = core
        .log
        .topics()
        .filter(|(i, _)| *i != TICK_TOPIC_ID)
        .map(|(_, t)| (&*t.name, t.subscribers.len(), t.len(), t.retained_bytes()))
        .collect();
    let g = Gauges {
        clients: core.streaming,
        connections: core.clients.len(),
        max_clients: core.cfg.max_clients,
        topics,
    };
    metrics::render(&core.metrics, &g)
}

/// The most lagging streaming clients as JSON, worst first, at most [`MAX_LISTED_CLIENTS`].
fn render_clients(core: &Core, now: Instant) -> String {
    let mut rows: Vec<(u64, usize)> = core
        .clients
        .iter()
        .filter(|(_, c)| c.is_streaming())
        .map(|(k, c)| (core.backlog_of(c).0, k))
        .collect();
    rows.sort_unstable_by(|a, b| b.cmp(a));
    let mut out = String::from("{\"clients\":[");
    for (i, (queued, key)) in rows.iter().take(MAX_LISTED_CLIENTS).enumerate() {
        let Some(c) = core.clients.get(*key) else {
            continue;
        };
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"address\":");
        response::push_json_string(&mut out, &c.peer.to_string());
        out.push_str(",\"topics\":[");
        let mut first = true;
        for cur in c.cursors.iter().filter(|cur| cur.topic != TICK_TOPIC_ID) {
            if !first {
                out.push(',');
            }
            first = false;
            response::push_json_string(&mut out, &core.log.topic(cur.topic).name);
        }
        let _ = write!(
            out,
            "],\"queued_bytes\":{queued},\"since_last_write_ms\":{},\"connected_ms\":{}}}",
            now.saturating_duration_since(c.last_write).as_millis(),
            now.saturating_duration_since(c.connected_at).as_millis()
        );
    }
    let _ = writeln!(out, "],\"total\":{}}}", rows.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
