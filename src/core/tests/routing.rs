//! Core tests, routing on the strict HTTP layer: bodies on non-publish requests, OPTIONS,
//! HEAD, HTTP/1.0 keep-alive, empty events.

use super::*;

/// A publish that must never happen when it hides in another request's body.
const SMUGGLED: &str = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nsmuggled";

#[test]
fn a_body_on_get_is_read_past_in_any_split() {
    let raw = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{SMUGGLED}\
         GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{SMUGGLED}\r\n0\r\n\r\n\
         GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        SMUGGLED.len(),
        SMUGGLED.len()
    );
    for step in [1, 7, raw.len()] {
        let mut t = T::new(cfg());
        let a = t.connect();
        for part in raw.as_bytes().chunks(step) {
            t.core.handle_read(a, part, t.now);
            t.drain(None);
        }
        let text = t.text(a);
        assert_eq!(
            text.matches("HTTP/1.1 200 OK").count(),
            3,
            "split {step}: {text}"
        );
        assert!(!text.contains("HTTP/1.1 4"), "split {step}: {text}");
        assert_eq!(t.core.metrics().events_published, 0, "split {step}");
        assert!(t.closed(a));
    }
}

#[test]
fn options_preflight_and_plain() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(
        a,
        b"OPTIONS /publish HTTP/1.1\r\nHost: x\r\nOrigin: http://o\r\nAccess-Control-Request-Method: POST\r\n\r\n\
          OPTIONS /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        t.now,
    );
    t.drain(None);
    let text = t.text(a);
    let (first, second) = text.split_once("\r\n\r\n").unwrap();
    assert!(first.starts_with("HTTP/1.1 204 "), "{text}");
    // The preflight names what a page may do on that path (the origin policy, `crate::auth`).
    assert!(
        first.contains("Access-Control-Allow-Methods: POST\r\n"),
        "{text}"
    );
    assert!(second.starts_with("HTTP/1.1 204 "), "{text}");
    assert!(second.contains("Allow: GET, HEAD, OPTIONS\r\n"), "{text}");
    assert!(!second.contains("Content-Length"), "{text}");
    assert!(t.closed(a));
    assert_eq!(t.core.metrics().events_published, 0);
}

#[test]
fn http10_keep_alive_is_announced() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(
        a,
        b"HEAD /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /health HTTP/1.0\r\n\r\n",
        t.now,
    );
    t.drain(None);
    let text = t.text(a);
    let (first, second) = text.split_once("\r\n\r\n").unwrap();
    assert!(first.contains("Connection: keep-alive"), "{text}");
    assert!(second.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(second.contains("Connection: close"), "{text}");
    assert!(second.ends_with("ok\n"), "{text}");
    assert!(t.closed(a));
}

#[test]
fn an_empty_publish_is_an_event_with_empty_data() {
    let mut t = T::new(cfg());
    let s = t.connect();
    t.core.handle_read(s, GET, t.now);
    let p = t.connect();
    t.core.handle_read(
        p,
        b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        t.now,
    );
    t.drain(None);
    assert!(t.text(p).starts_with("HTTP/1.1 200 "), "{}", t.text(p));
    assert!(
        t.text(s).ends_with("data: \n\n") || t.text(s).ends_with("data\n\n"),
        "{}",
        t.text(s)
    );
    assert_eq!(t.core.metrics().events_published, 1);
}

#[test]
fn expect_continue_then_answer_in_order() {
    let mut t = T::new(cfg());
    let p = t.connect();
    t.core.handle_read(
        p,
        b"POST /publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        t.now,
    );
    t.core.handle_read(p, b"hi", t.now);
    t.drain(None);
    let text = t.text(p);
    assert!(
        text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{text}"
    );
}

/// A client that sent its body along with `Expect: 100-continue` is not told to continue:
/// the answer comes alone (kills `more` → always false in the read step).
#[test]
fn a_body_sent_with_its_head_gets_no_interim_answer() {
    let mut t = T::new(cfg());
    let p = t.connect();
    t.core.handle_read(
        p,
        b"POST /publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nh",
        t.now,
    );
    t.core.handle_read(p, b"i", t.now);
    t.drain(None);
    let text = t.text(p);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
}

/// With one idle topic left, `topic=x&topic=y` must not recycle it for both
/// names (two cursors on one topic, every event twice, a subscriber counted forever).
#[test]
fn one_request_never_recycles_the_same_topic_twice() {
    let mut t = T::new(Config {
        interval: None,
        max_topics: 2,
        ..cfg()
    });
    for topic in ["a", "b"] {
        t.core.publish(topic, None, None, "old", t.now).unwrap();
    }
    let keeper = t.connect();
    t.core.handle_read(
        keeper,
        b"GET /events?topic=b HTTP/1.1\r\nHost: x\r\n\r\n",
        t.now,
    );
    let c = t.connect();
    t.core.handle_read(
        c,
        b"GET /events?topic=x&topic=y HTTP/1.1\r\nHost: x\r\n\r\n",
        t.now,
    );
    t.drain(None);
    // Only one idle topic ("a") could be recycled: the request is refused, not doubled.
    assert!(t.text(c).starts_with("HTTP/1.1 503 "), "{}", t.text(c));
    t.core.check_invariants().unwrap();
    // Once the keeper leaves, two topics are free and the request works.
    t.core.handle_read_closed(keeper);
    let c = t.connect();
    t.core.handle_read(
        c,
        b"GET /events?topic=x&topic=y HTTP/1.1\r\nHost: x\r\n\r\n",
        t.now,
    );
    t.drain(None);
    t.core.publish("y", None, None, "once", t.now).unwrap();
    t.drain(None);
    let data: Vec<String> = t.events(c).into_iter().map(|e| e.data).collect();
    assert_eq!(data, ["once"]);
    t.core.handle_read_closed(c);
    t.core.check_invariants().unwrap();
}

/// `%FF` and `%FE` must not both become U+FFFD (one topic).
#[test]
fn topic_names_that_are_not_utf8_are_refused() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(
        a,
        b"GET /events?topic=%FF HTTP/1.1\r\nHost: x\r\n\r\n",
        t.now,
    );
    t.drain(None);
    assert!(t.text(a).starts_with("HTTP/1.1 400 "), "{}", t.text(a));
}

/// A resume of every retained event on two topics is twice one topic's `--history-bytes`;
/// it must not be dropped as slow on the next publish.
#[test]
fn a_multi_topic_resume_of_whole_histories_is_not_slow() {
    let mut t = T::new(Config {
        interval: None,
        history_bytes: 2000,
        max_backlog: 2000,
        ..cfg()
    });
    let data = "x".repeat(100);
    for _ in 0..12 {
        for topic in ["a", "b"] {
            t.core.publish(topic, None, None, &data, t.now).unwrap();
        }
    }
    let c = t.connect();
    let boot = t.core.boot_id().to_owned();
    let req = format!(
        "GET /events?topic=a&topic=b HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {boot}-0\r\n\r\n"
    );
    t.core.handle_read(c, req.as_bytes(), t.now);
    t.drain(Some(0));
    assert!(t.core.backlog_bytes(c).unwrap() > 2000);
    t.core.publish("a", None, None, "live", t.now).unwrap();
    t.drain(None);
    assert!(!t.closed(c));
    t.core.handle_writable(c);
    t.drain(None);
    assert_eq!(t.events(c).len(), 25);
}

/// Only a `POST /publish` keeps its body for a publish: a body sent with `GET /publish` or
/// `POST /health` is read past (and limited by `--max-body`) before the request is routed,
/// so the 405 waits for the whole body and an oversized one is a 413 (kills `&&` → `||` in
/// `route`'s `publishes`).
#[test]
fn a_body_on_a_refused_method_is_read_past_first() {
    for req in ["GET /publish", "POST /health"] {
        let mut t = T::new(cfg());
        let a = t.connect();
        let raw = format!("{req} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel");
        t.core.handle_read(a, raw.as_bytes(), t.now);
        t.drain(None);
        assert_eq!(t.text(a), "", "{req}: answered before its body");
        t.core.handle_read(a, b"lo", t.now);
        t.drain(None);
        assert!(
            t.text(a).starts_with("HTTP/1.1 405 "),
            "{req}: {}",
            t.text(a)
        );

        let mut t = T::new(cfg());
        let a = t.connect();
        let too_long = t.core.config().max_body + 1;
        let raw = format!("{req} HTTP/1.1\r\nHost: x\r\nContent-Length: {too_long}\r\n\r\n");
        t.core.handle_read(a, raw.as_bytes(), t.now);
        t.drain(None);
        assert!(
            t.text(a).starts_with("HTTP/1.1 413 "),
            "{req}: {}",
            t.text(a)
        );
    }
}

/// What a fresh connection gets for one request (`head_line` then `Host`, then `more`).
fn answer_to(head_line: &str, more: &str) -> String {
    let mut t = T::new(cfg());
    let a = t.connect();
    let raw = format!("{head_line} HTTP/1.1\r\nHost: x\r\n{more}\r\n");
    t.core.handle_read(a, raw.as_bytes(), t.now);
    t.drain(None);
    t.text(a)
}

/// A method a path does not take is 405 naming the path's own methods; a plain `OPTIONS`
/// names them with a 204 (`OPTIONS *` the server's); a CORS preflight for `*` is not a path a
/// page may use, so it is 404 (kills the mutants of the `/publish` and `*` arms in
/// `options`, and of the `/clients` guard).
#[test]
fn methods_and_options_name_each_paths_methods() {
    for (req, status, allow) in [
        ("DELETE /metrics", 405, "Allow: GET, HEAD, OPTIONS\r\n"),
        ("POST /clients", 405, "Allow: GET, HEAD, OPTIONS\r\n"),
        ("PUT /publish", 405, "Allow: POST, OPTIONS\r\n"),
        ("OPTIONS /publish", 204, "Allow: POST, OPTIONS\r\n"),
        ("OPTIONS *", 204, "Allow: GET, HEAD, POST, OPTIONS\r\n"),
        ("OPTIONS /health", 204, "Allow: GET, HEAD, OPTIONS\r\n"),
    ] {
        let text = answer_to(req, "");
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req}: {text}"
        );
        assert!(text.contains(allow), "{req}: {text}");
    }
    let preflight = "Origin: http://o\r\nAccess-Control-Request-Method: GET\r\n";
    let text = answer_to("OPTIONS *", preflight);
    assert!(text.starts_with("HTTP/1.1 404 "), "{text}");
}

/// A connection from the internal listener (`--metrics-listen`) is served `/metrics` and
/// `/health` only: every other path is 404, a publish too (its body read past, the
/// connection kept until the 404 closes it), and nothing is published; `/metrics` names
/// the worker.
#[test]
fn the_internal_listener_serves_metrics_and_health_only() {
    let mut t = T::new(Config {
        worker_index: Some(3),
        ..cfg()
    });
    let internal = |t: &mut T, raw: &str| {
        let id = t
            .core
            .handle_accept_on(peer(), Listener::Internal, t.now)
            .unwrap();
        t.got.push((id, Vec::new(), false));
        t.core.handle_read(id, raw.as_bytes(), t.now);
        t.drain(None);
        t.text(id)
    };
    let close = "Host: x\r\nConnection: close\r\n\r\n";
    let metrics = internal(&mut t, &format!("GET /metrics HTTP/1.1\r\n{close}"));
    assert!(metrics.starts_with("HTTP/1.1 200 "), "{metrics}");
    assert!(
        metrics.contains("\nsse_worker_info{worker=\"3\"} 1\n"),
        "{metrics}"
    );
    let health = internal(&mut t, &format!("HEAD /health HTTP/1.1\r\n{close}"));
    assert!(health.starts_with("HTTP/1.1 200 "), "{health}");
    for path in ["/", "/events", "/clients", "/publish", "/nothing"] {
        let text = internal(&mut t, &format!("GET {path} HTTP/1.1\r\n{close}"));
        assert!(text.starts_with("HTTP/1.1 404 "), "{path}: {text}");
    }
    let publish = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
    let text = internal(&mut t, publish);
    assert!(text.starts_with("HTTP/1.1 404 "), "{text}");
    assert_eq!(t.core.metrics().events_published, 0);
    // The main listener still serves everything, /metrics included.
    let (_, main) = t.get_once("/metrics");
    assert!(main.contains("sse_worker_info{worker=\"3\"} 1"), "{main}");
    let (_, main) = t.get_once("/events");
    assert!(main.starts_with("HTTP/1.1 200 "), "{main}");
}

/// Under `--protect-stats`, `/metrics` and `/clients` answer only the publish token, from
/// loopback too (behind a same-host proxy every peer is loopback): 401 with
/// `WWW-Authenticate: Bearer` without it or with another; `/health` and streams stay open.
/// Without the flag, loopback reads them freely.
#[test]
fn protected_stats_need_the_publish_token_even_from_loopback() {
    // As the command line builds it: the token in the config and in the auth policy.
    let with_token = |protect_stats: bool| Config {
        publish_token: Some("s3cret".into()),
        protect_stats,
        auth: std::sync::Arc::new(
            crate::auth::AuthConfig::new(crate::auth::AuthOptions {
                publish_token: Some("s3cret".into()),
                ..crate::auth::AuthOptions::default()
            })
            .unwrap(),
        ),
        ..cfg()
    };
    let mut t = T::new(with_token(true));
    let read = |t: &mut T, path: &str, auth: &str| {
        let id = t.connect();
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        t.core.handle_read(id, raw.as_bytes(), t.now);
        t.drain(None);
        t.text(id)
    };
    for path in ["/metrics", "/clients"] {
        for auth in ["", "Authorization: Bearer wrong\r\n"] {
            let text = read(&mut t, path, auth);
            assert!(text.starts_with("HTTP/1.1 401 "), "{path} {auth:?}: {text}");
            assert!(text.contains("WWW-Authenticate: Bearer\r\n"), "{text}");
            assert!(
                !text.contains("sse_"),
                "nothing of the answer leaks: {text}"
            );
        }
        let text = read(&mut t, path, "Authorization: Bearer s3cret\r\n");
        assert!(text.starts_with("HTTP/1.1 200 "), "{path}: {text}");
    }
    assert!(read(&mut t, "/health", "").starts_with("HTTP/1.1 200 "));
    assert!(read(&mut t, "/events", "").starts_with("HTTP/1.1 200 "));
    // The token alone does not protect them from loopback.
    let mut t = T::new(with_token(false));
    assert!(read(&mut t, "/metrics", "").starts_with("HTTP/1.1 200 "));
    assert!(read(&mut t, "/clients", "").starts_with("HTTP/1.1 200 "));
}
