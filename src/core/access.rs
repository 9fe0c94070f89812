//! Private topics in the core: the subscribe and publish decisions of [`crate::auth`] applied
//! to a request head, the wall clock they need, the CORS lines of a stream, and the close of a
//! stream whose token expired (a final `event: reset` with `{"reason":"token-expired"}` and an
//! id to resume from, then a close with reason `token-expired`).
//!
//! The decisions are pure functions of the request and unix seconds; the core derives unix
//! time from the wall-clock anchor the driver (or simulator) gives it with each
//! [`Core::handle_timeout`], so token expiry is deterministic under simulation.

use std::rc::Rc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::Core;
use super::checks::{Answer, Stop, check_token};
use super::client::{Bytes, ClientId, Pending};
use super::event_log::TICK_TOPIC_ID;
use super::metrics::CloseReason;
use super::timers::TimerKind;
use crate::auth::{BearerToken, Endpoint, Grant, Publisher, RequestParts};
use crate::http::request::RequestHead;
use crate::sse::frame;

/// The wall clock as the core knows it: a wall time and the `Instant` it was read at.
#[derive(Debug, Clone, Copy)]
pub(super) struct WallAnchor {
    at: Instant,
    unix_millis: i64,
}

impl WallAnchor {
    pub(super) fn new(now: Instant, wall: DateTime<Utc>) -> WallAnchor {
        WallAnchor {
            at: now,
            unix_millis: wall.timestamp_millis(),
        }
    }

    /// Unix milliseconds at `now` (never before the anchor, never negative).
    pub(super) fn unix_millis(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis();
        let ms = i128::from(self.unix_millis) + since as i128;
        u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
    }
}

/// The request's headers and query as the decisions read them (borrowed from `head`).
struct Parts<'a> {
    headers: Vec<(&'a str, &'a [u8])>,
    query: Vec<(&'a str, &'a str)>,
}

impl<'a> Parts<'a> {
    fn of(head: &'a RequestHead) -> Parts<'a> {
        let mut headers = Vec::with_capacity(2);
        if let Some(a) = &head.authorization {
            headers.push(("authorization", a.as_bytes()));
        }
        if let Some(c) = &head.cookie {
            headers.push(("cookie", c.as_slice()));
        }
        let query = head
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Parts { headers, query }
    }

    fn request(&self) -> RequestParts<'_> {
        RequestParts {
            headers: &self.headers,
            query: &self.query,
        }
    }
}

/// A refused request's answer: status, body and extra header lines (the CORS lines of the
/// request's origin included, so a cross-origin page can read why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub status: u16,
    pub message: String,
    pub headers: Vec<String>,
}

/// Why a decision did not grant: a refusal to answer, or a signature check to make off the
/// reactor first.
#[derive(Debug)]
pub(super) enum Denied {
    Refused(Refusal),
    Check(BearerToken),
}

impl Denied {
    fn of(stop: Stop) -> Denied {
        match stop {
            Stop::Refused(e) => Denied::Refused(Refusal {
                status: e.status(),
                message: e.body(),
                headers: e.headers(),
            }),
            Stop::Check(token) => Denied::Check(token),
        }
    }
}

impl Core {
    /// Unix seconds at `now`, from the wall-clock anchor.
    pub(super) fn unix_now(&self, now: Instant) -> u64 {
        self.wall.unix_millis(now) / 1000
    }

    /// May this stream request see `topics`? `Ok(None)`: yes, and nothing needs keeping
    /// (every topic public, no expiry). `answer`: the check of its token, made off the
    /// reactor, when it came back ([`Denied::Check`] asked for it).
    pub(super) fn authorize_stream(
        &mut self,
        head: &RequestHead,
        topics: &[&str],
        answer: Option<&Answer>,
        now: Instant,
    ) -> Result<Option<Box<Grant>>, Denied> {
        if !self.cfg.auth.tokens_enabled() {
            return Ok(None);
        }
        let parts = Parts::of(head);
        let unix = self.unix_now(now);
        let (auth, cache) = (&self.cfg.auth, &mut self.tokens);
        let decision = auth.subscribe_with(&parts.request(), topics, |t| {
            check_token(auth, cache, t, unix, answer)
        });
        match decision {
            Ok(grant) if grant.source().is_none() => Ok(None),
            Ok(grant) => Ok(Some(Box::new(grant))),
            Err(stop) => Err(Denied::of(stop)),
        }
    }

    /// May this request publish on `topic`? `answer` as for [`Core::authorize_stream`].
    pub(super) fn authorize_publish(
        &mut self,
        head: &RequestHead,
        topic: &str,
        answer: Option<&Answer>,
        now: Instant,
    ) -> Result<Publisher, Denied> {
        let parts = Parts::of(head);
        let unix = self.unix_now(now);
        let (auth, cache) = (&self.cfg.auth, &mut self.tokens);
        auth.publish_with(&parts.request(), topic, |t| {
            check_token(auth, cache, t, unix, answer)
        })
        .map_err(Denied::of)
    }

    /// The cache of verified tokens' counts (`/metrics`) and size.
    pub(super) fn token_cache(&self) -> &crate::auth::TokenCache {
        &self.tokens
    }

    /// Whether a non-loopback peer may read `/clients`: with `--publish-token`, its bearer;
    /// with JWT keys and no publish token, nobody; with neither, anyone (as before).
    pub(super) fn may_list_clients(&self, head: &RequestHead) -> bool {
        let auth = &self.cfg.auth;
        if self.cfg.publish_token.is_none() && !auth.tokens_enabled() {
            return true;
        }
        auth.has_shared_token(&Parts::of(head).request())
    }

    /// Whether `/metrics` and `/clients` may answer `head`: always, unless `--protect-stats`
    /// asks every peer, loopback too, for the publish token.
    pub(super) fn may_read_stats(&self, head: &RequestHead) -> bool {
        !self.cfg.protect_stats || self.cfg.auth.has_shared_token(&Parts::of(head).request())
    }

    /// Remembers, for the answers to this request, the CORS lines of its `Origin` under
    /// `--allow-origin` (nothing to remember under the default `*`).
    pub(super) fn remember_origin(&mut self, id: ClientId, head: &RequestHead) {
        let lines = if self.cfg.auth.cors().allows_credentials() {
            Some(self.cors_lines(head))
        } else {
            None
        };
        if let Some(c) = self.client_mut(id) {
            c.http.set_cors(lines);
        }
    }

    /// A complete answer with the CORS lines of the client's request in place of
    /// `Access-Control-Allow-Origin: *` (unchanged under the default policy).
    pub(super) fn with_client_cors(&self, id: ClientId, answer: Vec<u8>) -> Vec<u8> {
        match self.client(id).and_then(|c| c.http.cors()) {
            Some(lines) => with_cors(&answer, lines).unwrap_or(answer),
            None => answer,
        }
    }

    /// The `204` answer to a CORS preflight (`OPTIONS`) for `endpoint`: the allowed methods
    /// and headers for an allowed origin, no `Access-Control-Allow-*` for any other.
    pub(super) fn preflight(&self, head: &RequestHead, endpoint: Endpoint) -> Vec<u8> {
        let origin = head.origin.as_deref().map(str::as_bytes);
        let mut out = String::from("HTTP/1.1 204 No Content\r\n");
        for line in self.cfg.auth.cors().preflight_headers(origin, endpoint) {
            out.push_str(&line);
            out.push_str("\r\n");
        }
        out.push_str("Cache-Control: no-store\r\n");
        if let Some(h) = head.connection().header() {
            out.push_str(h);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// The CORS header lines for an answer to `head` under `--allow-origin`.
    pub(super) fn cors_lines(&self, head: &RequestHead) -> Vec<String> {
        self.cfg
            .auth
            .cors()
            .response_headers(head.origin.as_deref().map(str::as_bytes))
    }

    /// The head of a stream: the shared prelude, or with `--allow-origin` a copy whose CORS
    /// lines answer this request's `Origin`.
    pub(super) fn stream_prelude(&self, head: &RequestHead) -> Bytes {
        if !self.cfg.auth.cors().allows_credentials() {
            return Bytes::Shared(Rc::clone(&self.prelude));
        }
        match with_cors(&self.prelude, &self.cors_lines(head)) {
            Some(p) => Bytes::Owned(p.into()),
            None => Bytes::Shared(Rc::clone(&self.prelude)),
        }
    }

    /// Keeps the stream's grant and arms its expiry timer.
    pub(super) fn keep_grant(&mut self, id: ClientId, grant: Option<Box<Grant>>, now: Instant) {
        let Some(grant) = grant else { return };
        if let Some(at) = grant.expires_at() {
            let left_ms = (at.saturating_mul(1000)).saturating_sub(self.wall.unix_millis(now));
            self.timers.arm(
                id,
                TimerKind::TokenExpiry,
                now + Duration::from_millis(left_ms),
            );
        }
        if let Some(c) = self.client_mut(id) {
            c.set_grant(grant);
        }
    }

    /// The token of a streaming client expired: finish the frame in flight, send
    /// `event: reset` with `{"reason":"token-expired"}` and the id of the last event it was
    /// sent (a reconnect with that `Last-Event-ID` replays everything after it), then close.
    pub(super) fn expire_token(&mut self, id: ClientId, now: Instant) {
        let Some(c) = self.client(id) else { return };
        if !c.is_streaming() {
            return;
        }
        // Frames are sent in gseq order across the client's topics: everything before its
        // first unsent entry was sent (or is the frame in flight, finished below).
        let first_unsent = self
            .log
            .pending_frames(c.cursors())
            .find(|(i, _)| c.cursors()[*i].topic != TICK_TOPIC_ID)
            .map(|(_, e)| e.gseq);
        let last_sent = match first_unsent {
            Some(g) => g.saturating_sub(1),
            None => self.log.last_gseq(),
        };
        let mut bytes = c.unsent();
        let in_flight_frame = c.pending().is_some_and(Pending::is_frame);
        let resume_id = self.log.event_id(last_sent);
        frame::encode_event(
            &mut bytes,
            Some(&resume_id),
            Some("reset"),
            "{\"reason\":\"token-expired\"}",
        );
        if in_flight_frame {
            // It will be written out with the reset: count it as delivered now.
            self.metrics.frames_written += 1;
        }
        log::debug!("token expired");
        self.finish_stream(id, bytes, CloseReason::TokenExpired, now);
    }

    /// Debug check: every frame a client is offered is of a topic its grant allows.
    pub(super) fn may_see_topic(&self, id: ClientId, topic: &str) -> bool {
        self.client(id)
            .and_then(|c| c.grant())
            .is_none_or(|g| g.may_see(topic))
    }
}

/// A response (a stream head, maybe followed by `retry:`, or a complete answer) with its
/// `Access-Control-Allow-Origin: *` line, searched in the head only, replaced by `cors`;
/// `None` if it has no such line.
pub(super) fn with_cors(response: &[u8], cors: &[String]) -> Option<Vec<u8>> {
    let star = b"\r\nAccess-Control-Allow-Origin: *\r\n";
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4);
    let at = response[..head_end]
        .windows(star.len())
        .position(|w| w == star)?
        + 2;
    let mut lines = Vec::new();
    for l in cors {
        lines.extend_from_slice(l.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    Some(
        [
            &response[..at],
            &lines[..],
            &response[at + star.len() - 2..],
        ]
        .concat(),
    )
}

/// The stream head used by [`Core::stream_prelude`] (for tests).
#[cfg(test)]
pub(super) fn stream_head_with(cors: &[String]) -> Vec<u8> {
    with_cors(crate::http::response::STREAM_HEAD.as_bytes(), cors).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_lines_replace_the_star() {
        let head = stream_head_with(&[
            "Access-Control-Allow-Origin: https://a.example".into(),
            "Access-Control-Allow-Credentials: true".into(),
            "Vary: Origin".into(),
        ]);
        let text = String::from_utf8(head).expect("ascii");
        assert!(text.contains("\r\nAccess-Control-Allow-Origin: https://a.example\r\n"));
        assert!(text.contains("\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"));
        assert!(!text.contains(": *"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn wall_anchor_counts_from_its_instant() {
        let t0 = Instant::now();
        let wall = DateTime::from_timestamp(1_000, 500_000_000).expect("valid");
        let a = WallAnchor::new(t0, wall);
        assert_eq!(a.unix_millis(t0), 1_000_500);
        assert_eq!(a.unix_millis(t0 + Duration::from_millis(600)), 1_001_100);
    }
}
