//! Private topics in the core: the token-expiry close (a frame in flight finished, the reset's
//! id resumes exactly what was not sent) and decisions made at the core's own wall clock.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use super::*;
use crate::auth::{AuthConfig, AuthOptions};

const SECRET: &str = "a test secret of at least 32 bytes!";

pub(super) fn wall0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 10, 13, 14, 35, 22).unwrap()
}

pub(super) fn token(exp: i64, subscribe: &[&str]) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
    let claims = json!({"exp": exp, "sse": {"subscribe": subscribe}});
    encode(&Header::new(Algorithm::HS256), &claims, &key).expect("signs")
}

/// Tokens signed with [`SECRET`] (HS256) are required for private topics.
pub(super) fn jwt_auth() -> Arc<AuthConfig> {
    let auth = AuthConfig::new(AuthOptions {
        jwt_secret: Some(SECRET.into()),
        ..AuthOptions::default()
    })
    .expect("valid");
    Arc::new(auth)
}

fn auth_cfg() -> Config {
    Config {
        interval: None,
        keepalive: None,
        auth: jwt_auth(),
        ..Config::default()
    }
}

/// Moves time to `secs` after the start, wall clock and `Instant` together.
fn at(t: &mut T, start: Instant, secs: u64) {
    t.now = start + Duration::from_secs(secs);
    let wall = wall0() + chrono::Duration::seconds(secs as i64);
    t.core.handle_timeout(wall, t.now);
}

/// One write of `n` bytes of what the core offers `c`, after which the socket is full.
fn short_write(t: &mut T, c: ClientId, n: usize) {
    assert_eq!(t.core.poll_output(), Some(Output::Write(c)));
    let bytes: Vec<u8> = offer(&t.core, c, |iov| {
        iov.iter().flat_map(|s| s.iter().copied()).take(n).collect()
    });
    assert_eq!(bytes.len(), n);
    t.entry(c).1.extend_from_slice(&bytes);
    t.core.handle_written(c, n, t.now);
    t.core.handle_would_block(c, t.now);
    // The driver's next attempt finds the socket full.
    while let Some(out) = t.core.poll_output() {
        assert_eq!(out, Output::Write(c));
        t.core.handle_would_block(c, t.now);
    }
}

pub(super) fn request(topics: &str, token: &str, last: Option<&str>) -> Vec<u8> {
    let last = last.map_or(String::new(), |l| format!("Last-Event-ID: {l}\r\n"));
    format!(
        "GET /events?{topics} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{last}\r\n"
    )
    .into_bytes()
}

#[test]
fn expiry_finishes_the_frame_in_flight_then_resets_with_the_last_sent_id() {
    let mut t = T::new(auth_cfg());
    let start = t.now;
    let exp = wall0().timestamp() + 10;
    let c = t.connect();
    let tok = token(exp, &["a", "b"]);
    t.core
        .handle_read(c, &request("topic=a&topic=b", &tok, None), t.now);
    t.drain(None);
    assert!(t.core.is_streaming(c));
    let id1 = t.core.publish("a", None, None, "one", t.now).unwrap();
    let _id2 = t.core.publish("b", None, None, "two", t.now).unwrap();
    // The first frame whole, three bytes of the second: the socket is then full.
    let head_len = t.text(c).len();
    let frame1 = format!("id: {id1}\ndata: one\n\n").len();
    short_write(&mut t, c, frame1 + 3);
    assert_eq!(t.text(c).len(), head_len + frame1 + 3, "{:?}", t.text(c));
    t.core.publish("a", None, None, "three", t.now).unwrap();
    // Not yet: expiry is exp + 5 s of leeway.
    at(&mut t, start, 14);
    assert!(t.core.is_streaming(c));
    at(&mut t, start, 15);
    t.core.handle_writable(c);
    t.drain(None);
    assert!(t.closed(c), "closed after the reset");
    let events = t.events(c);
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("message", "one"),
            ("message", "two"),
            ("reset", "{\"reason\":\"token-expired\"}")
        ]
    );
    let resume_id = events[2].last_event_id.clone();
    assert_eq!(t.core.metrics().closed(CloseReason::TokenExpired), 1);
    assert_eq!(
        t.core.metrics().frames_written,
        2,
        "the frame in flight counts as delivered"
    );
    // A fresh token and the reset's id: exactly the event that was not sent.
    let again = t.connect();
    let fresh = token(exp + 3600, &["a", "b"]);
    t.core.handle_read(
        again,
        &request("topic=a&topic=b", &fresh, Some(&resume_id)),
        t.now,
    );
    t.drain(None);
    let data: Vec<String> = t.events(again).into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["three"]);
}

#[test]
fn decisions_use_the_core_wall_clock() {
    let mut t = T::new(auth_cfg());
    let start = t.now;
    let exp = wall0().timestamp() + 100;
    // Valid now; refused (401) once the core's clock passes exp + leeway.
    let ok = t.connect();
    t.core
        .handle_read(ok, &request("topic=a", &token(exp, &["a"]), None), t.now);
    t.drain(None);
    assert!(t.core.is_streaming(ok));
    at(&mut t, start, 106);
    let late = t.connect();
    t.core
        .handle_read(late, &request("topic=a", &token(exp, &["a"]), None), t.now);
    t.drain(None);
    assert!(t.text(late).starts_with("HTTP/1.1 401"), "{}", t.text(late));
    assert!(t.closed(ok), "the first stream expired meanwhile");
}

/// A subscriber of public topics only keeps no grant, whatever token it carries: nothing
/// to check later, nothing to expire, no memory per client (kills the `source().is_none()`
/// guard in `authorize_stream` replaced by `false`).
#[test]
fn a_public_only_subscriber_keeps_no_grant() {
    let mut t = T::new(auth_cfg());
    let c = t.connect();
    t.core.handle_read(
        c,
        b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        t.now,
    );
    t.drain(None);
    assert!(t.core.is_streaming(c));
    assert!(t.core.connections.by_key(c.key).unwrap().grant().is_none());
    let private = t.connect();
    let tok = token(wall0().timestamp() + 60, &["a"]);
    t.core
        .handle_read(private, &request("topic=a", &tok, None), t.now);
    t.drain(None);
    assert!(
        t.core
            .connections
            .by_key(private.key)
            .unwrap()
            .grant()
            .is_some()
    );
}

/// With JWT keys and no publish token, `/clients` is for loopback only (kills `delete !` in
/// `may_list_clients`).
#[test]
fn with_jwt_keys_and_no_publish_token_clients_is_loopback_only() {
    let mut t = T::new(auth_cfg());
    let remote: std::net::SocketAddr = "10.1.2.3:4567".parse().unwrap();
    let id = t.core.handle_accept(remote, t.now).unwrap();
    t.got.push((id, Vec::new(), false));
    t.core.handle_read(
        id,
        b"GET /clients HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        t.now,
    );
    t.drain(None);
    assert!(t.text(id).starts_with("HTTP/1.1 403 "), "{}", t.text(id));
}

/// At expiry the connection lingers for the reset to be read: a client whose socket is full
/// is not cut off at once, only after `--linger` (kills `now + linger` → `now - linger` in
/// `expire_token`).
#[test]
fn an_expired_stream_lingers_for_its_reset() {
    let mut t = T::new(auth_cfg());
    let start = t.now;
    let exp = wall0().timestamp() + 10;
    let c = t.connect();
    let tok = token(exp, &["a"]);
    t.core
        .handle_read(c, &request("topic=a", &tok, None), t.now);
    t.drain(None);
    t.core.publish("a", None, None, "one", t.now).unwrap();
    short_write(&mut t, c, 3);
    // Expiry (exp + 5 s of leeway): the reset is queued behind a full socket.
    at(&mut t, start, 15);
    assert!(t.core.is_live(c), "lingers for the reset");
    let linger = t.core.config().linger.as_secs();
    at(&mut t, start, 15 + linger - 1);
    assert!(t.core.is_live(c), "still within --linger");
    at(&mut t, start, 15 + linger + 1);
    assert!(!t.core.is_live(c), "gone after --linger");
}

/// A refused stream request (403) is answered, then the connection lingers for a slow
/// reader before the close (kills `now + linger` → `now - linger` in `refuse`).
#[test]
fn a_refusal_lingers_for_a_slow_reader() {
    let mut t = T::new(auth_cfg());
    let c = t.connect();
    let tok = token(wall0().timestamp() + 60, &["a"]);
    t.core
        .handle_read(c, &request("topic=b", &tok, None), t.now);
    t.drain(Some(0));
    let linger = t.core.config().linger;
    t.advance(linger - Duration::from_secs(1));
    assert!(t.core.is_live(c), "within --linger");
    t.advance(Duration::from_secs(2));
    assert!(!t.core.is_live(c), "gone after --linger");
    assert!(t.text(c).is_empty(), "the socket stayed full");
}
