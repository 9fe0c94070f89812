//! The connect-rate bound (`--max-stream-rate`, `admission.rs`) through the core: the
//! bucket's burst and its exact refill with the core's clock, the refused answers' bytes
//! (503 + `Retry-After`, an EventSource's 200 + `retry:`), what is not limited, no token
//! work for a refused request, and the counters.

use super::auth::{jwt_auth, request, token, wall0};
use super::*;
use crate::core::metrics::StreamRefusal;

const PLAIN: &[u8] = b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n";

fn rated(rate: u32) -> T {
    let mut c = cfg();
    c.max_stream_rate = rate;
    T::new(c)
}

/// A new connection sends `bytes`; drained. Its id.
fn send(t: &mut T, bytes: &[u8]) -> ClientId {
    let id = t.connect();
    t.core.handle_read(id, bytes, t.now);
    t.drain(None);
    id
}

/// `n` EventSource stream requests at the current time: how many started streaming.
fn storm(t: &mut T, n: usize) -> usize {
    (0..n)
        .filter(|_| {
            let id = send(t, GET);
            t.core.is_streaming(id)
        })
        .count()
}

fn refused_rate(t: &T) -> u64 {
    t.core.metrics().streams_refused(StreamRefusal::Rate)
}

#[test]
fn the_bound_is_off_by_default() {
    assert_eq!(Config::default().max_stream_rate, 0);
    let mut t = T::new(cfg());
    assert_eq!(storm(&mut t, 200), 200);
    assert_eq!(t.core.metrics().stream_requests, 200);
    assert_eq!(refused_rate(&t), 0);
}

#[test]
fn a_burst_of_n_then_one_more_for_each_nth_of_a_second() {
    let mut t = rated(4);
    assert_eq!(storm(&mut t, 6), 4, "the burst is the rate");
    // A quarter of a second refills one token: not a nanosecond earlier.
    t.now += Duration::from_nanos(249_999_999);
    assert_eq!(storm(&mut t, 1), 0);
    t.now += Duration::from_nanos(1);
    assert_eq!(storm(&mut t, 2), 1);
    // Refused requests took nothing: the next quarter gives exactly one again.
    t.now += Duration::from_millis(250);
    assert_eq!(storm(&mut t, 3), 1);
    // A long quiet time fills the bucket to the burst, never past it.
    t.now += Duration::from_secs(60);
    assert_eq!(storm(&mut t, 10), 4);
    assert_eq!(t.core.metrics().stream_requests, 6 + 1 + 2 + 3 + 10);
    assert_eq!(refused_rate(&t), 2 + 1 + 1 + 2 + 6);
}

/// A rate that does not divide a second: the refill is exact to the nanosecond, with no
/// rounding that accumulates (3 a second: a token every 333,333,333⅓ ns).
#[test]
fn a_rate_that_does_not_divide_a_second_refills_exactly() {
    let mut t = rated(3);
    assert_eq!(storm(&mut t, 3), 3);
    let start = t.now;
    t.now = start + Duration::from_nanos(333_333_333);
    assert_eq!(storm(&mut t, 1), 0);
    t.now = start + Duration::from_nanos(333_333_334);
    assert_eq!(storm(&mut t, 1), 1);
    // After exactly a second from the empty bucket three tokens came in all: two left.
    t.now = start + Duration::from_nanos(999_999_999);
    assert_eq!(storm(&mut t, 3), 1);
    t.now = start + Duration::from_secs(1);
    assert_eq!(storm(&mut t, 3), 1);
    // Many small steps add up to the same as one long one.
    let from = t.now;
    let mut got = 0;
    for i in 1..=3000u64 {
        t.now = from + Duration::from_millis(i);
        got += storm(&mut t, 1);
    }
    assert_eq!(got, 9, "three seconds at three a second");
}

#[test]
fn a_refused_request_is_told_to_come_back_in_two_to_six_seconds() {
    let mut t = rated(1);
    assert_eq!(storm(&mut t, 1), 1);
    let mut secs = Vec::new();
    for _ in 0..30 {
        let id = send(&mut t, PLAIN);
        let text = t.text(id);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(
            text.ends_with(": too many new streams, try again\n"),
            "{text}"
        );
        let retry_after = text
            .lines()
            .find_map(|l| l.strip_prefix("Retry-After: "))
            .and_then(|s| s.parse::<u64>().ok());
        let Some(s) = retry_after else {
            panic!("no Retry-After: {text}")
        };
        assert!((2..=6).contains(&s), "{s}");
        secs.push(s);
        assert!(t.closed(id));
        assert!(!t.core.is_streaming(id));
    }
    secs.sort_unstable();
    secs.dedup();
    assert!(secs.len() >= 3, "30 refusals, distinct delays: {secs:?}");
}

/// An EventSource never retries after a non-200 answer: it gets the stream head, a jittered
/// `retry:` in [2 s, 7 s) and a close, the same bytes as over `--max-clients`, and nothing
/// published afterwards.
#[test]
fn a_refused_eventsource_gets_200_and_a_jittered_retry_then_a_close() {
    let mut t = rated(1);
    assert_eq!(storm(&mut t, 1), 1);
    let mut delays = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..20 {
        let id = send(&mut t, GET);
        let text = t.text(id);
        let Some(body) = text.strip_prefix(crate::http::response::STREAM_HEAD) else {
            panic!("not the stream head: {text}")
        };
        let ms = body
            .strip_prefix("retry: ")
            .and_then(|r| r.strip_suffix("\n\n"))
            .and_then(|ms| ms.parse::<u64>().ok());
        let Some(ms) = ms else {
            panic!("not one retry: frame: {body:?}")
        };
        assert!((2_000..7_000).contains(&ms), "{ms}");
        delays.push(ms);
        assert!(t.closed(id));
        refused.push(id);
    }
    t.core.publish("", None, None, "later", t.now).unwrap();
    t.drain(None);
    assert!(refused.iter().all(|&id| t.events(id).is_empty()));
    delays.sort_unstable();
    delays.dedup();
    assert!(
        delays.len() >= 10,
        "20 refusals, distinct delays: {delays:?}"
    );
    assert_eq!(t.core.metrics().closed(CloseReason::Limit), 20);
}

/// Publishing, `/health`, `/metrics` and `HEAD /events` are not limited, and take nothing
/// from the bucket.
#[test]
fn publish_health_metrics_and_head_are_not_limited() {
    let mut t = rated(1);
    for _ in 0..5 {
        let p = send(
            &mut t,
            b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        );
        assert!(t.text(p).starts_with("HTTP/1.1 200 "), "{}", t.text(p));
        for path in ["/health", "/metrics"] {
            let (_, text) = t.get_once(path);
            assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        }
        let h = send(&mut t, b"HEAD /events HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(t.text(h).starts_with("HTTP/1.1 200 "), "{}", t.text(h));
    }
    assert_eq!(t.core.metrics().stream_requests, 0);
    assert_eq!(storm(&mut t, 2), 1, "the bucket is still full");
}

/// A malformed stream request still gets its 400 past the bound, and takes no token.
#[test]
fn a_malformed_stream_request_gets_its_400_and_takes_nothing() {
    let mut t = rated(1);
    for _ in 0..3 {
        let id = send(
            &mut t,
            b"GET /events?topic=a%00b HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert!(t.text(id).starts_with("HTTP/1.1 400 "), "{}", t.text(id));
    }
    assert_eq!(storm(&mut t, 1), 1);
    let id = send(
        &mut t,
        b"GET /events?topic=a%00b HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(t.text(id).starts_with("HTTP/1.1 400 "), "{}", t.text(id));
    assert_eq!(t.core.metrics().stream_requests, 1);
}

/// A refused request's token is never looked at (no cache lookup, no signature: a bad
/// token gets the rate's 503, not a 401), and a request admitted before its check is not
/// counted again when the check comes back.
#[test]
fn a_refused_request_does_no_token_work() {
    let mut c = cfg();
    c.auth = jwt_auth();
    c.max_stream_rate = 1;
    let mut t = T::new(c);
    let good = token(wall0().timestamp() + 60, &["a"]);
    let first = send(&mut t, &request("topic=a", &good, None));
    assert!(t.core.is_streaming(first), "{}", t.text(first));
    let looked_up = |t: &T| {
        let s = t.core.token_cache().stats();
        s.hits + s.misses
    };
    let before = looked_up(&t);
    assert_eq!(before, 1);
    for tok in [good.as_str(), "not.a.token"] {
        let id = send(&mut t, &request("topic=a", tok, None));
        let text = t.text(id);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("\r\nRetry-After: "), "{text}");
    }
    assert_eq!(looked_up(&t), before);
    assert_eq!(refused_rate(&t), 2);
}

/// A stream held for its token check off the reactor took its token on the way in; coming
/// back from the check it is not counted or refused again.
#[test]
fn a_stream_back_from_its_check_is_not_admitted_twice() {
    let auth = crate::auth::AuthConfig::new(crate::auth::AuthOptions {
        jwt_secret: Some("a test secret of at least 32 bytes!".into()),
        hs256_off_reactor: true,
        ..Default::default()
    })
    .expect("valid");
    let mut c = cfg();
    c.auth = std::sync::Arc::new(auth);
    c.max_stream_rate = 1;
    let mut t = T::new(c);
    t.hold_checks = true;
    let good = token(wall0().timestamp() + 60, &["a"]);
    let id = send(&mut t, &request("topic=a", &good, None));
    assert_eq!(t.checks.len(), 1);
    let waiting = t.checks.pop_front().expect("a check");
    drain::check_now(&mut t.core, &waiting, t.now);
    t.drain(None);
    assert!(t.core.is_streaming(id), "{}", t.text(id));
    assert_eq!(t.core.metrics().stream_requests, 1);
    assert_eq!(refused_rate(&t), 0);
    // The bucket is empty now: the next one is refused before any check is handed out.
    let next = send(&mut t, &request("topic=a", &good, None));
    assert!(
        t.text(next).starts_with("HTTP/1.1 503 "),
        "{}",
        t.text(next)
    );
    assert!(t.checks.is_empty());
}

/// `/metrics` counts stream requests and refusals by reason: `rate` and `clients` apart.
#[test]
fn refusals_are_counted_by_reason() {
    let mut c = cfg();
    c.max_stream_rate = 3;
    c.max_clients = 1;
    let mut t = T::new(c);
    assert_eq!(storm(&mut t, 5), 1);
    let (_, metrics) = t.get_once("/metrics");
    for line in [
        "\nsse_stream_requests_total 5\n",
        "\nsse_streams_refused_total{reason=\"rate\"} 2\n",
        "\nsse_streams_refused_total{reason=\"clients\"} 2\n",
        "\nsse_streams_refused_total{reason=\"topics\"} 0\n",
        "\nsse_streams_refused_total{reason=\"log-not-ready\"} 0\n",
        "\nsse_streams_refused_total{reason=\"verify-queue\"} 0\n",
    ] {
        assert!(metrics.contains(line), "{line:?} in {metrics}");
    }
}

/// The bucket reads the core's clock only: a time earlier than the last request (a clock
/// the driver got wrong) refills nothing and takes nothing twice.
#[test]
fn an_earlier_time_refills_nothing() {
    let mut t = rated(2);
    let start = t.now;
    t.now = start + Duration::from_secs(5);
    assert_eq!(storm(&mut t, 3), 2);
    t.now = start;
    assert_eq!(storm(&mut t, 1), 0);
    t.now = start + Duration::from_millis(5_500);
    assert_eq!(storm(&mut t, 2), 1);
}

/// Refusals for the other reasons are counted under their own: `topics` (a full topic table)
/// and `verify-queue` (the verifier's queue full, EventSource and not).
#[test]
fn topic_and_verify_queue_refusals_are_counted_apart() {
    let mut c = cfg();
    c.max_topics = 1;
    let mut t = T::new(c);
    let a = send(&mut t, b"GET /events?topic=a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(t.core.is_streaming(a));
    let b = send(&mut t, b"GET /events?topic=b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(t.text(b).starts_with("HTTP/1.1 503 "), "{}", t.text(b));
    let m = t.core.metrics();
    assert_eq!(m.streams_refused(StreamRefusal::Topics), 1);
    assert_eq!(m.streams_refused(StreamRefusal::Rate), 0);

    let auth = crate::auth::AuthConfig::new(crate::auth::AuthOptions {
        jwt_secret: Some("a test secret of at least 32 bytes!".into()),
        hs256_off_reactor: true,
        ..Default::default()
    })
    .expect("valid");
    let mut c = cfg();
    c.auth = std::sync::Arc::new(auth);
    let mut t = T::new(c);
    t.hold_checks = true;
    let good = token(wall0().timestamp() + 60, &["a"]);
    let plain = send(&mut t, &request("topic=a", &good, None));
    let mut es_request = request("topic=a", &good, None);
    es_request.truncate(es_request.len() - 2);
    es_request.extend_from_slice(b"Accept: text/event-stream\r\n\r\n");
    let es = send(&mut t, &es_request);
    for waiting in std::mem::take(&mut t.checks) {
        t.core
            .handle_verified(waiting.reply(VerifyOutcome::Busy), t.now);
    }
    t.drain(None);
    assert!(
        t.text(plain).starts_with("HTTP/1.1 503 "),
        "{}",
        t.text(plain)
    );
    assert!(t.text(es).contains("\nretry: "), "{}", t.text(es));
    let m = t.core.metrics();
    assert_eq!(m.streams_refused(StreamRefusal::VerifyQueue), 2);
    assert_eq!(m.stream_requests, 2);
}
