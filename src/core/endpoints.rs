//! Routing a complete request head to its endpoint, and the small endpoints themselves
//! (`/` demo page, `/health`, `/metrics`, `/clients`, bearer-token checks). Routing sees the
//! whole parsed head ([`RequestHead`]), so a decision about who may do what belongs here.
use std::fmt::Write as _;
use std::time::Instant;

use super::Core;
use super::client::{AfterAnswer, ClientId};
use super::connection::{answer, fail};
use super::error::{Allow, RequestError};
use super::event_log::TICK_TOPIC_ID;
use super::metrics::{self, Gauges};
use super::publish::begin_publish;
use super::stream::start_stream;
use crate::auth::Endpoint;
use crate::http::request::{Method, RequestHead};
use crate::http::response;

/// Most clients listed by `GET /clients`.
pub const MAX_LISTED_CLIENTS: usize = 100;

pub(super) fn route(core: &mut Core, id: ClientId, head: RequestHead, rest: Vec<u8>, now: Instant) {
    let then = AfterAnswer::for_request(head.close);
    core.remember_origin(id, &head);
    match head.path.as_str() {
        "/" | "/events" | "/publish" if head.method == Method::Options => {
            let endpoint = if head.path == "/publish" {
                Endpoint::Publish
            } else {
                Endpoint::Stream
            };
            let r = core.preflight(&head, endpoint);
            answer(core, id, 204, r, then, rest, now);
        }
        "/" if matches!(head.method, Method::Get | Method::Head) && wants_page(&head) => {
            let page = DEMO_PAGE.as_bytes();
            answer_ok(
                core,
                id,
                head.method,
                "text/html; charset=utf-8",
                page,
                then,
                rest,
                now,
            );
        }
        "/" | "/events" => match head.method {
            Method::Get | Method::Head => start_stream(core, id, &head, rest, now),
            _ => fail(
                core,
                id,
                RequestError::MethodNotAllowed(Allow::GetHead),
                now,
            ),
        },
        "/publish" => match head.method {
            Method::Post => begin_publish(core, id, &head, rest, now),
            _ => fail(core, id, RequestError::MethodNotAllowed(Allow::Post), now),
        },
        "/health" => match head.method {
            Method::Get | Method::Head => {
                let plain = "text/plain; charset=utf-8";
                answer_ok(core, id, head.method, plain, b"ok\n", then, rest, now);
            }
            _ => fail(
                core,
                id,
                RequestError::MethodNotAllowed(Allow::GetHead),
                now,
            ),
        },
        "/metrics" => match head.method {
            Method::Get => {
                let body = render_metrics(core);
                let prometheus = "text/plain; version=0.0.4; charset=utf-8";
                answer_ok(
                    core,
                    id,
                    head.method,
                    prometheus,
                    body.as_bytes(),
                    then,
                    rest,
                    now,
                );
            }
            _ => fail(core, id, RequestError::MethodNotAllowed(Allow::Get), now),
        },
        "/clients" => match head.method {
            Method::Get => {
                let peer_local = core.client(id).is_some_and(|c| c.peer.ip().is_loopback());
                if !peer_local && !core.may_list_clients(&head) {
                    fail(core, id, RequestError::ClientsForbidden, now);
                    return;
                }
                let body = render_clients(core, now);
                let json = "application/json";
                answer_ok(
                    core,
                    id,
                    head.method,
                    json,
                    body.as_bytes(),
                    then,
                    rest,
                    now,
                );
            }
            _ => fail(core, id, RequestError::MethodNotAllowed(Allow::Get), now),
        },
        _ => fail(core, id, RequestError::NotFound, now),
    }
}

/// Answers 200 with a complete `body` (for HEAD, the same head without the body).
#[allow(clippy::too_many_arguments)]
fn answer_ok(
    core: &mut Core,
    id: ClientId,
    method: Method,
    content_type: &str,
    body: &[u8],
    then: AfterAnswer,
    rest: Vec<u8>,
    now: Instant,
) {
    let r = response::complete(200, content_type, &[], body, then.closes());
    answer(
        core,
        id,
        200,
        head_only_if(method, r, body.len()),
        then,
        rest,
        now,
    );
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

/// For a HEAD request, drops the body of a complete response (its head still announces the
/// body's length, as for GET).
pub(super) fn head_only_if(method: Method, mut response: Vec<u8>, body_len: usize) -> Vec<u8> {
    if method == Method::Head {
        response.truncate(response.len() - body_len);
    }
    response
}

pub(super) fn render_metrics(core: &Core) -> String {
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
