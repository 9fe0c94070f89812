//! Routing a complete request head to its endpoint, and the small endpoints themselves
//! (`/` demo page, `/health`, `/metrics`, `/clients`, bearer-token checks). Routing sees the
//! whole parsed head ([`RequestHead`]), so a decision about who may do what belongs here.
use std::fmt::Write as _;
use std::time::Instant;

use super::Core;
use super::client::{AfterAnswer, BodyPurpose, ClientId, Held, Phase};
use super::error::{Allow, RequestError};
use super::event_log::TICK_TOPIC_ID;
use super::exchange::{answer, connection_for, fail, read_body};
use super::metrics::{Gauges, MAX_TOPIC_SERIES};
use super::publish::begin_publish;
use super::stream::start_stream;
use crate::auth::Endpoint;
use crate::http::body::BodyReader;
use crate::http::request::{Method, RequestHead};
use crate::http::response::{self, ALLOW_PUBLISH, ALLOW_READ, Connection};

/// Most clients listed by `GET /clients`.
pub const MAX_LISTED_CLIENTS: usize = 100;

/// Routes a complete request head: `Host` first (400), then a body on anything but a
/// publish is read past and dropped before the head is routed (413 past `--max-body`), so
/// the next pipelined request is found where the head says. `more`: input follows the head
/// in what was read.
pub(super) fn route(core: &mut Core, id: ClientId, head: RequestHead, more: bool, now: Instant) {
    // First, so that every answer to this request (errors too) carries its CORS policy.
    core.remember_origin(id, &head);
    let publishes = head.method == Method::Post && head.path == "/publish";
    if !publishes && core.client(id).is_some_and(|c| !c.publishes.is_empty()) {
        // Publishes before it wait for the log's answer; this request waits for their
        // answers (it may start a stream, which no answer may follow).
        if let Some(c) = core.client_mut(id) {
            c.phase = Phase::Pipelined(Box::new(Held {
                head: Some(head),
                early: Vec::new(),
            }));
        }
        return;
    }
    if let Err(reason) = head.host_problem() {
        fail(core, id, RequestError::BadHost(reason), now);
        return;
    }
    if head.has_body() && !publishes {
        match BodyReader::for_discard(&head, core.cfg.max_body) {
            Ok(reader) => read_body(core, id, reader, BodyPurpose::ThenRoute(Box::new(head))),
            Err(e) => fail(core, id, e.into(), now),
        }
        return;
    }
    route_bodiless(core, id, head, more, now);
}

/// Routes a request whose body (if any) is read past already, or is a publish's.
pub(super) fn route_bodiless(
    core: &mut Core,
    id: ClientId,
    head: RequestHead,
    more: bool,
    now: Instant,
) {
    let conn = connection_for(core, &head);
    let read = matches!(head.method, Method::Get | Method::Head);
    let reply = Reply {
        conn,
        head_only: head.method == Method::Head,
        now,
    };
    if head.method == Method::Options {
        return options(core, id, &head, reply);
    }
    match head.path.as_str() {
        "/" if read && wants_page(&head) => {
            let html = "text/html; charset=utf-8";
            answer_ok(core, id, html, DEMO_PAGE.as_bytes(), reply);
        }
        "/" | "/events" if read => start_stream(core, id, &head, now),
        "/publish" if head.method == Method::Post => begin_publish(core, id, &head, more, now),
        "/publish" => fail(core, id, RequestError::MethodNotAllowed(Allow::Post), now),
        "/health" if read && core.bus_down() => {
            // The log cannot take appends: a load balancer may send new clients elsewhere.
            let plain = "text/plain; charset=utf-8";
            let r = response::answer(503, plain, &[], b"bus down\n", reply.conn, reply.head_only);
            let then = AfterAnswer::after(reply.conn);
            answer(core, id, 503, r, then, reply.now);
        }
        "/health" if read => {
            answer_ok(core, id, "text/plain; charset=utf-8", b"ok\n", reply);
        }
        "/metrics" if read => {
            let body = render_metrics(core);
            let prometheus = "text/plain; version=0.0.4; charset=utf-8";
            answer_ok(core, id, prometheus, body.as_bytes(), reply);
        }
        "/clients" if read => {
            let peer_local = core.client(id).is_some_and(|c| c.peer.ip().is_loopback());
            if !peer_local && !core.may_list_clients(&head) {
                fail(core, id, RequestError::ClientsForbidden, now);
                return;
            }
            let body = render_clients(core, now);
            answer_ok(core, id, "application/json", body.as_bytes(), reply);
        }
        p if is_known_path(p) => fail(
            core,
            id,
            RequestError::MethodNotAllowed(Allow::GetHead),
            now,
        ),
        _ => fail(core, id, RequestError::NotFound, now),
    }
}

/// The paths the server answers (each with its own methods).
fn is_known_path(path: &str) -> bool {
    matches!(
        path,
        "/" | "/events" | "/publish" | "/health" | "/metrics" | "/clients"
    )
}

/// How to send a complete answer to one request.
struct Reply {
    conn: Connection,
    /// A HEAD request: the head only.
    head_only: bool,
    now: Instant,
}

/// `OPTIONS`: a CORS preflight on a known path gets the preflight answer; a plain `OPTIONS`
/// (or `OPTIONS *`) a 204 with the path's `Allow`. An unknown path is 404.
fn options(core: &mut Core, id: ClientId, head: &RequestHead, reply: Reply) {
    let allow = match head.path.as_str() {
        "/publish" => ALLOW_PUBLISH,
        "*" if !head.is_preflight() => "Allow: GET, HEAD, POST, OPTIONS",
        p if is_known_path(p) => ALLOW_READ,
        _ => return fail(core, id, RequestError::NotFound, reply.now),
    };
    let r = if head.is_preflight() {
        // The origin policy (`--allow-origin`) decides what a cross-origin page may do.
        let endpoint = if head.path == "/publish" {
            Endpoint::Publish
        } else {
            Endpoint::Stream
        };
        core.preflight(head, endpoint)
    } else {
        response::answer(204, "", &[allow], b"", reply.conn, false)
    };
    let then = AfterAnswer::after(reply.conn);
    answer(core, id, 204, r, then, reply.now);
}

/// Answers 200 with a complete `body` (for HEAD, the same head without the body).
fn answer_ok(core: &mut Core, id: ClientId, content_type: &str, body: &[u8], reply: Reply) {
    let r = response::answer(200, content_type, &[], body, reply.conn, reply.head_only);
    let then = AfterAnswer::after(reply.conn);
    answer(core, id, 200, r, then, reply.now);
}

/// The demo page, served at `/` to browser navigations.
pub const DEMO_PAGE: &str = include_str!("../demo.html");

/// A browser navigation: asks for HTML and not for an event stream (`curl` sends `*/*`,
/// EventSource sends `text/event-stream`: both get the stream).
pub(super) fn wants_page(head: &RequestHead) -> bool {
    head.accept
        .as_deref()
        .is_some_and(|a| a.contains("text/html"))
        && !head.accepts_event_stream()
}

pub(super) fn render_metrics(core: &Core) -> String {
    let mut topics: Vec<(&str, usize, usize, usize)> = core
        .log
        .topics()
        .filter(|(i, _)| *i != TICK_TOPIC_ID)
        .map(|(_, t)| (&*t.name, t.subscribers.len(), t.len(), t.retained_bytes()))
        .collect();
    let topics_total = topics.len();
    if topics.len() > MAX_TOPIC_SERIES {
        topics.sort_unstable_by(|a, b| (b.1, b.3, a.0).cmp(&(a.1, a.3, b.0)));
        topics.truncate(MAX_TOPIC_SERIES);
    }
    let g = Gauges {
        clients: core.streaming,
        connections: core.clients.len(),
        max_clients: core.cfg.max_clients,
        topics,
        topics_total,
    };
    core.render_all_metrics(&g)
}

/// The most lagging streaming clients as JSON, worst first, at most [`MAX_LISTED_CLIENTS`].
pub(super) fn render_clients(core: &Core, now: Instant) -> String {
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
        crate::json::push_json_string(&mut out, &c.peer.to_string());
        out.push_str(",\"topics\":[");
        let mut first = true;
        for cur in c.cursors.iter().filter(|cur| cur.topic != TICK_TOPIC_ID) {
            if !first {
                out.push(',');
            }
            first = false;
            crate::json::push_json_string(&mut out, &core.log.topic(cur.topic).name);
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
