//! Token checks handed out of the core (`checks.rs`): the request held until its answer,
//! then going on exactly as with a check made inline (statuses, headers, bytes, the cache);
//! answers late, out of order, after the client left (its slot reused), past the token's
//! `exp`, refused as busy; input kept meanwhile; shutdown with checks in flight.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use super::auth::{request, wall0};
use super::*;
use crate::auth::{AuthConfig, AuthOptions};

const SECRET: &str = "a test secret of at least 32 bytes!";

fn mint(exp: i64, subscribe: &[&str], publish: &[&str]) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
    let claims = json!({"exp": exp, "sse": {"subscribe": subscribe, "publish": publish}});
    encode(&Header::new(Algorithm::HS256), &claims, &key).expect("signs")
}

/// HS256 tokens, their checks handed out (`off_reactor`) or made inline.
fn cfg(off_reactor: bool) -> Config {
    let auth = AuthConfig::new(AuthOptions {
        jwt_secret: Some(SECRET.into()),
        hs256_off_reactor: off_reactor,
        ..AuthOptions::default()
    })
    .expect("valid");
    Config {
        interval: None,
        keepalive: None,
        auth: Arc::new(auth),
        ..Config::default()
    }
}

/// A core whose checks wait in `t.checks` for the test to answer.
fn held() -> T {
    let mut t = T::new(cfg(true));
    t.hold_checks = true;
    t
}

/// Answers the `i`-th waiting check now, as the verifier thread would.
fn answer(t: &mut T, i: usize) {
    let request = t.checks.remove(i).expect("a check waits");
    drain::check_now(&mut t.core, &request, t.now);
    t.drain(None);
}

fn exp_in(secs: i64) -> i64 {
    wall0().timestamp() + secs
}

/// Sends `c`'s request for a stream of topic `a` with a token valid for 60 s that may
/// subscribe to `allowed`, and lets the core act on it (a check is handed out when held).
fn request_stream(t: &mut T, c: ClientId, allowed: &str) {
    t.core.handle_read(
        c,
        &request("topic=a", &mint(exp_in(60), &[allowed], &[]), None),
        t.now,
    );
    t.drain(None);
}

fn publish_request(topic: &str, token: &str, body: &str, close: bool) -> Vec<u8> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    format!(
        "POST /publish?topic={topic} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{conn}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What a client gets for `bytes` with the check inline and with it handed out and answered
/// at once: the same, byte for byte.
fn both_ways(bytes: &[u8]) -> (String, String) {
    let mut out = Vec::new();
    for off in [false, true] {
        let mut t = T::new(cfg(off));
        let c = t.connect();
        t.core.handle_read(c, bytes, t.now);
        t.drain(None);
        t.core
            .publish("a", None, None, "after", t.now)
            .expect("published");
        t.drain(None);
        out.push(t.text(c));
    }
    (out.remove(0), out.remove(0))
}

#[test]
fn an_answered_check_gives_the_bytes_an_inline_check_gives() {
    let cases = [
        request("topic=a", &mint(exp_in(60), &["a"], &[]), None),
        request("topic=a", &mint(exp_in(60), &["b"], &[]), None),
        request("topic=a", &mint(exp_in(-60), &["a"], &[]), None),
        request("topic=a", "not-a-token", None),
        request(
            "topic=a",
            &format!("{}x", mint(exp_in(60), &["a"], &[])),
            None,
        ),
        publish_request("a", &mint(exp_in(60), &[], &["a"]), "hi", true),
        publish_request("a", &mint(exp_in(60), &[], &["b"]), "hi", true),
    ];
    for (i, case) in cases.iter().enumerate() {
        let (inline, handed_out) = both_ways(case);
        assert!(inline.starts_with("HTTP/1.1 "), "case {i}: {inline:?}");
        assert_eq!(handed_out, inline, "case {i}");
    }
}

#[test]
fn a_stream_waits_for_its_check_and_misses_nothing_published_after_it_starts() {
    let mut t = held();
    let c = t.connect();
    let tok = mint(exp_in(60), &["a"], &[]);
    t.core
        .handle_read(c, &request("topic=a", &tok, None), t.now);
    t.drain(None);
    assert_eq!(t.text(c), "", "no answer before the check");
    assert_eq!(t.checks.len(), 1);
    assert_eq!(t.core.checks_in_flight(), 1);
    assert!(!t.core.is_streaming(c));
    answer(&mut t, 0);
    assert!(t.core.is_streaming(c));
    assert_eq!(t.core.checks_in_flight(), 0);
    t.core.publish("a", None, None, "one", t.now).unwrap();
    t.drain(None);
    assert!(t.text(c).starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(t.events(c).last().map(|e| e.data.as_str()), Some("one"));
    // Kept in the cache: the same token again is answered without a check.
    let d = t.connect();
    t.core
        .handle_read(d, &request("topic=a", &tok, None), t.now);
    t.drain(None);
    assert!(t.core.is_streaming(d));
    assert!(t.checks.is_empty());
    let stats = t.core.token_cache().stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    assert_eq!(t.core.check_stats().handed_out, 1);
}

#[test]
fn answers_out_of_order_reach_their_own_requests() {
    let mut t = held();
    let a = t.connect();
    let b = t.connect();
    t.core.handle_read(
        a,
        &request("topic=a", &mint(exp_in(60), &["a"], &[]), None),
        t.now,
    );
    t.core.handle_read(
        b,
        &request("topic=b", &mint(exp_in(60), &["a"], &[]), None),
        t.now,
    );
    t.drain(None);
    assert_eq!(t.checks.len(), 2);
    answer(&mut t, 1);
    assert!(t.text(b).starts_with("HTTP/1.1 403 "), "{}", t.text(b));
    assert_eq!(t.text(a), "");
    answer(&mut t, 0);
    assert!(t.core.is_streaming(a));
}

#[test]
fn a_late_answer_for_a_client_that_left_is_dropped_and_misses_the_slots_new_owner() {
    let mut t = held();
    let a = t.connect();
    request_stream(&mut t, a, "a");
    t.core.handle_read_closed(a);
    t.drain(None);
    assert!(t.closed(a));
    // The slot goes to a newcomer, whose own request waits for its own check.
    let b = t.connect();
    assert_eq!(b.key, a.key);
    assert_ne!(b.generation, a.generation);
    request_stream(&mut t, b, "b");
    assert_eq!(t.checks.len(), 2);
    answer(&mut t, 0);
    assert_eq!(t.text(b), "", "the old answer does not reach the new owner");
    assert_eq!(t.core.checks_in_flight(), 1);
    answer(&mut t, 0);
    assert!(t.text(b).starts_with("HTTP/1.1 403 "));
    assert_eq!(t.core.checks_in_flight(), 0);
    assert!(t.closed(b), "closed after its 403");
    assert_eq!(t.core.connections(), 0);
}

#[test]
fn a_check_for_a_client_gone_before_it_was_handed_out_is_never_handed_out() {
    let mut t = held();
    let a = t.connect();
    t.core.handle_read(
        a,
        &request("topic=a", &mint(exp_in(60), &["a"], &[]), None),
        t.now,
    );
    t.core.handle_io_error(a, IoFailure::Reset);
    t.drain(None);
    assert!(t.checks.is_empty());
    assert_eq!(t.core.check_stats().handed_out, 0);
    assert_eq!(t.core.checks_in_flight(), 0);
}

#[test]
fn an_answer_is_held_to_the_time_it_is_applied_and_an_expired_token_is_not_kept() {
    let mut t = held();
    let start = t.now;
    let c = t.connect();
    // Valid until exp + 5 s of leeway = 7 s from now; the answer comes after 10 s.
    t.core.handle_read(
        c,
        &request("topic=a", &mint(exp_in(2), &["a"], &[]), None),
        t.now,
    );
    t.drain(None);
    t.now = start + Duration::from_secs(10);
    t.core
        .handle_timeout(wall0() + chrono::Duration::seconds(10), t.now);
    answer(&mut t, 0);
    let text = t.text(c);
    assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
    assert!(
        text.contains("error_description=\"token expired\""),
        "{text}"
    );
    assert_eq!(t.core.token_cache().len(), 0, "never cached past exp");
}

#[test]
fn a_full_queue_is_503_with_retry_after_or_an_eventsource_retry() {
    let mut t = held();
    let tok = mint(exp_in(60), &["a"], &["a"]);
    let plain = t.connect();
    let es = t.connect();
    let publisher = t.connect();
    t.core
        .handle_read(plain, &request("topic=a", &tok, None), t.now);
    let mut es_request = request("topic=a", &tok, None);
    es_request.truncate(es_request.len() - 2);
    es_request.extend_from_slice(b"Accept: text/event-stream\r\n\r\n");
    t.core.handle_read(es, &es_request, t.now);
    t.core
        .handle_read(publisher, &publish_request("a", &tok, "x", false), t.now);
    t.drain(None);
    assert_eq!(t.checks.len(), 3);
    for request in std::mem::take(&mut t.checks) {
        let reply = request.reply(VerifyOutcome::Busy);
        t.core.handle_verified(reply, t.now);
    }
    t.drain(None);
    for c in [plain, publisher] {
        let text = t.text(c);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("\r\nRetry-After: 1\r\n"), "{text}");
        assert!(
            text.ends_with("too many tokens waiting to be checked, try again\n"),
            "{text}"
        );
    }
    let text = t.text(es);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("\nretry: "),
        "{text}"
    );
    assert!(t.closed(es));
    assert_eq!(t.core.check_stats().refused, 3);
    let (_, metrics) = t.get_once("/metrics");
    assert!(
        metrics.contains("\nsse_jwt_verify_refused_total 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nsse_jwt_verify_checks_total 3\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nsse_jwt_verify_queue 0\n"), "{metrics}");
}

#[test]
fn a_publish_waits_with_its_body_and_pipelined_requests_then_goes_on_in_order() {
    let mut t = held();
    let c = t.connect();
    let mut bytes = publish_request("a", &mint(exp_in(60), &[], &["a"]), "hello", false);
    let health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    bytes.extend_from_slice(health);
    t.core.handle_read(c, &bytes, t.now);
    t.drain(None);
    assert_eq!(t.text(c), "");
    // Input is kept meanwhile, within --max-head + --max-body.
    let room = t.core.input_room(c);
    assert_eq!(
        room,
        t.core.config().max_head + t.core.config().max_body - "hello".len() - health.len()
    );
    // The head timer passing does not time the held request out.
    t.now += t.core.config().head_timeout + Duration::from_secs(1);
    t.core.handle_timeout(wall0(), t.now);
    answer(&mut t, 0);
    let text = t.text(c);
    let (first, second) = text.split_once("\r\n\r\n").expect("two answers");
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        second.contains("HTTP/1.1 200 OK\r\n") && second.ends_with("ok\n"),
        "{text}"
    );
    assert!(!t.closed(c));
    assert_eq!(t.core.metrics().events_published, 1);
}

#[test]
fn a_stream_request_whose_client_hangs_up_while_checked_closes_now() {
    let mut t = held();
    let c = t.connect();
    request_stream(&mut t, c, "a");
    t.core.handle_read_closed(c);
    t.drain(None);
    assert!(t.closed(c));
    answer(&mut t, 0);
    assert_eq!(t.text(c), "");
    assert_eq!(t.core.connections(), 0);
}

#[test]
fn shutdown_closes_requests_waiting_for_a_check_and_finishes() {
    let mut t = held();
    let c = t.connect();
    request_stream(&mut t, c, "a");
    t.core.shutdown(t.now);
    t.drain(None);
    assert!(t.closed(c));
    assert!(t.core.is_finished());
    answer(&mut t, 0);
    assert_eq!(t.text(c), "");
    assert_eq!(t.core.checks_in_flight(), 0);
}
