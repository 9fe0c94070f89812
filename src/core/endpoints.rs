//! Routing a complete request head to its endpoint, and the small endpoints themselves
//! (`/` demo page, `/health`, `/metrics`, `/clients`, bearer-token checks). Routing sees the
//! whole parsed head ([`RequestHead`]), so a decision about who may do what belongs here.
use std::fmt::Write as _;
use std::time::Instant;

use super::Core;
use super::answers::{answer, connection_for, fail, read_body};
use super::client::{ClientId, Listener};
use super::error::{Allow, RequestError};
use super::event_log::TICK_TOPIC_ID;
use super::exchange::{AfterAnswer, BodyPurpose};
use super::metrics::{Gauges, MAX_TOPIC_SERIES};
use super::publish::begin_publish;
use super::stream::start_stream;
use crate::auth::Endpoint;
use crate::http::body::BodyReader;
use crate::http::request::{Method, RequestHead};
use crate::http::response::{self, ALLOW_PUBLISH, ALLOW_READ, Connection};

/// Most clients listed by `GET /clients`.
pub const MAX_LISTED_CLIENTS: usize = 100;

/// What routing decided a request asks for; applied in one place ([`route`]).
#[derive(Debug)]
pub(super) enum Action {
    /// Publishes before it wait for the log's answer: it waits for their answers (it may
    /// start a stream, which no answer may follow).
    WaitForPublishes,
    /// A body on anything but a publish: read past and dropped, then the head is routed.
    DiscardBody(BodyReader),
    /// A complete answer; then keep the connection alive or close, as `then` says.
    Answer {
        status: u16,
        response: Vec<u8>,
        then: AfterAnswer,
    },
    /// An error answer, then close.
    Fail(RequestError),
    /// The stream endpoint (its own checks: topics, token, limits, resume).
    Stream,
    /// The publish endpoint (its own checks, then its body).
    Publish,
}

/// Decides what a complete request head asks for, from the request and what it may read of
/// the server's state: `Host` first (400), then a body on anything but a publish is read
/// past and dropped before the head is routed (413 past `--max-body`), so the next
/// pipelined request is found where the head says; then the endpoint.
///
/// A connection from the internal listener (`--metrics-listen`) is served `/metrics` and
/// `/health` only: any other path is 404 (a publish's body is read past like any other).
pub(super) fn decide(core: &Core, id: ClientId, head: &RequestHead, now: Instant) -> Action {
    let internal = core
        .client(id)
        .is_some_and(|c| c.listener() == Listener::Internal);
    let publishes = !internal && head.method == Method::Post && head.path == "/publish";
    if !publishes
        && core
            .client(id)
            .is_some_and(|c| !c.http.publishes().is_empty())
    {
        return Action::WaitForPublishes;
    }
    if let Err(reason) = head.host_problem() {
        return Action::Fail(RequestError::BadHost(reason));
    }
    if head.has_body() && !publishes {
        return match BodyReader::for_discard(head, core.cfg.max_body) {
            Ok(reader) => Action::DiscardBody(reader),
            Err(e) => Action::Fail(e.into()),
        };
    }
    let conn = connection_for(core, head);
    let read = matches!(head.method, Method::Get | Method::Head);
    let ok = |content_type: &str, body: &[u8]| {
        let head_only = head.method == Method::Head;
        Action::Answer {
            status: 200,
            response: response::answer(200, content_type, &[], body, conn, head_only),
            then: AfterAnswer::after(conn),
        }
    };
    if internal && !matches!(head.path.as_str(), "/metrics" | "/health") {
        return Action::Fail(RequestError::NotFound);
    }
    if head.method == Method::Options {
        return options(core, head, conn);
    }
    match head.path.as_str() {
        "/" if read && wants_page(head) => ok("text/html; charset=utf-8", DEMO_PAGE.as_bytes()),
        "/" | "/events" if read => Action::Stream,
        "/publish" if head.method == Method::Post => Action::Publish,
        "/publish" => Action::Fail(RequestError::MethodNotAllowed(Allow::Post)),
        // The log cannot take appends (unreachable, or refusing every one: out of memory,
        // read-only, …): a load balancer may send new clients elsewhere.
        "/health" if read && core.bus_down() => unhealthy(b"bus down\n", head, conn),
        "/health" if read && core.publishing_refused() => {
            unhealthy(b"publish refused\n", head, conn)
        }
        // Reachable, but the log moved on without this node: its streams are going stale.
        "/health" if read && core.not_applying_log(now) => {
            unhealthy(b"not applying the log\n", head, conn)
        }
        "/health" if read => ok("text/plain; charset=utf-8", b"ok\n"),
        "/metrics" | "/clients" if read && !core.may_read_stats(head) => {
            Action::Fail(RequestError::StatsNeedToken)
        }
        "/metrics" if read => {
            let mut body = render_metrics(core);
            core.render_apply_metrics(&mut body, now);
            ok("text/plain; version=0.0.4; charset=utf-8", body.as_bytes())
        }
        "/clients" if read => {
            let peer_local = core.client(id).is_some_and(|c| c.peer().ip().is_loopback());
            if !peer_local && !core.may_list_clients(head) {
                return Action::Fail(RequestError::ClientsForbidden);
            }
            let body = render_clients(core, now);
            ok("application/json", body.as_bytes())
        }
        p if is_known_path(p) => Action::Fail(RequestError::MethodNotAllowed(Allow::GetHead)),
        _ => Action::Fail(RequestError::NotFound),
    }
}

/// Routes a complete request head: remembers its origin (every answer to it, errors too,
/// carries its CORS policy), [`decide`]s, and applies the action. `more`: input follows the
/// head in what was read.
pub(super) fn route(core: &mut Core, id: ClientId, head: RequestHead, more: bool, now: Instant) {
    core.remember_origin(id, &head);
    match decide(core, id, &head, now) {
        Action::WaitForPublishes => {
            if let Some(c) = core.client_mut(id) {
                c.http.wait_for_publishes(Some(head));
            }
        }
        Action::DiscardBody(reader) => {
            read_body(core, id, reader, BodyPurpose::ThenRoute(Box::new(head)))
        }
        Action::Answer {
            status,
            response,
            then,
        } => answer(core, id, status, response, then, now),
        Action::Fail(e) => fail(core, id, e, now),
        Action::Stream => start_stream(core, id, &head, None, now),
        Action::Publish => begin_publish(core, id, &head, more, None, now),
    }
}

/// The paths the server answers (each with its own methods).
fn is_known_path(path: &str) -> bool {
    matches!(
        path,
        "/" | "/events" | "/publish" | "/health" | "/metrics" | "/clients"
    )
}

/// `OPTIONS`: a CORS preflight on a known path gets the preflight answer; a plain `OPTIONS`
/// (or `OPTIONS *`) a 204 with the path's `Allow`. An unknown path is 404.
fn options(core: &Core, head: &RequestHead, conn: Connection) -> Action {
    let allow = match head.path.as_str() {
        "/publish" => ALLOW_PUBLISH,
        "*" if !head.is_preflight() => "Allow: GET, HEAD, POST, OPTIONS",
        p if is_known_path(p) => ALLOW_READ,
        _ => return Action::Fail(RequestError::NotFound),
    };
    let response = if head.is_preflight() {
        // The origin policy (`--allow-origin`) decides what a cross-origin page may do.
        let endpoint = if head.path == "/publish" {
            Endpoint::Publish
        } else {
            Endpoint::Stream
        };
        core.preflight(head, endpoint)
    } else {
        response::answer(204, "", &[allow], b"", conn, false)
    };
    Action::Answer {
        status: 204,
        response,
        then: AfterAnswer::after(conn),
    }
}

/// The demo page, served at `/` to browser navigations.
pub const DEMO_PAGE: &str = include_str!("../demo.html");

/// `/health`'s failure: 503 with `body`, the connection kept as the request asked.
fn unhealthy(body: &[u8], head: &RequestHead, conn: Connection) -> Action {
    let head_only = head.method == Method::Head;
    Action::Answer {
        status: 503,
        response: response::answer(503, "text/plain; charset=utf-8", &[], body, conn, head_only),
        then: AfterAnswer::after(conn),
    }
}

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
        worker: core.cfg.worker_index,
        clients: core.connections.streaming(),
        connections: core.connections.len(),
        max_clients: core.cfg.max_clients,
        topics,
        topics_total,
        token_cache: {
            let cache = core.token_cache();
            (cache.capacity() > 0).then(|| (cache.stats(), cache.len()))
        },
        token_checks: (core.cfg.auth.verify_queue() > 0)
            .then(|| (core.check_stats(), core.checks_in_flight())),
    };
    core.render_all_metrics(&g)
}

/// The most lagging streaming clients as JSON, worst first, at most [`MAX_LISTED_CLIENTS`].
pub(super) fn render_clients(core: &Core, now: Instant) -> String {
    let mut rows: Vec<(u64, u32)> = core
        .connections
        .iter()
        .filter(|(_, c)| c.is_streaming())
        .map(|(id, c)| (core.backlog_of(c).0, id.key))
        .collect();
    rows.sort_unstable_by(|a, b| b.cmp(a));
    let mut out = String::from("{\"clients\":[");
    for (i, (queued, key)) in rows.iter().take(MAX_LISTED_CLIENTS).enumerate() {
        let Some(c) = core.connections.by_key(*key) else {
            continue;
        };
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"address\":");
        crate::json::push_json_string(&mut out, &c.peer().to_string());
        out.push_str(",\"topics\":[");
        let mut first = true;
        for cur in c.cursors().iter().filter(|cur| cur.topic != TICK_TOPIC_ID) {
            if !first {
                out.push(',');
            }
            first = false;
            crate::json::push_json_string(&mut out, &core.log.topic(cur.topic).name);
        }
        let _ = write!(
            out,
            "],\"queued_bytes\":{queued},\"since_last_write_ms\":{},\"connected_ms\":{}}}",
            now.saturating_duration_since(c.last_write()).as_millis(),
            now.saturating_duration_since(c.connected_at()).as_millis()
        );
    }
    let _ = writeln!(out, "],\"total\":{}}}", rows.len());
    out
}
