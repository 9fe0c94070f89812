//! Core tests, part 2 of 2 (split by size, in their original order): slow clients, limits,
//! keep-alive, shutdown, endpoints, chunked bodies, topic recycling.

use super::*;

#[test]
fn slow_client_latest_policy_skips_whole_frames() {
    let mut c = cfg();
    c.max_backlog = 2000;
    c.history_bytes = 2000;
    c.slow_client = SlowClientPolicy::Latest;
    let mut t = T::new(c);
    let slow = t.connect();
    t.core.handle_read(slow, GET, t.now);
    t.drain(None);
    t.core
        .publish("", None, None, &"a".repeat(100), t.now)
        .unwrap();
    // Half a frame goes out, then the socket fills.
    t.drain(Some(300));
    for i in 0..100 {
        t.core
            .publish("", None, None, &format!("{i:040}"), t.now)
            .unwrap();
        t.drain(None);
    }
    assert!(!t.closed(slow));
    t.core.handle_writable(slow);
    t.drain(None);
    let data: Vec<String> = t.events(slow).into_iter().map(|e| e.data).collect();
    // The frame in flight is finished, whole; then a contiguous run ending at the newest
    // event, far shorter than the 100 published.
    assert_eq!(data[0], "a".repeat(100));
    assert!(data.len() < 40, "{data:?}");
    let first: usize = data[1].parse().unwrap();
    let expect: Vec<String> = (first..100).map(|i| format!("{i:040}")).collect();
    assert_eq!(&data[1..], &expect[..]);
    assert!(t.core.metrics().skipped_forward >= 1);
}

#[test]
fn over_the_limit_eventsource_gets_retry_others_503() {
    let mut c = cfg();
    c.max_clients = 1;
    let mut t = T::new(c);
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    let b = t.connect();
    t.core.handle_read(b, GET, t.now);
    let d = t.connect();
    t.core
        .handle_read(d, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", t.now);
    t.drain(None);
    assert!(t.core.is_streaming(a));
    let tb = t.text(b);
    assert!(tb.starts_with("HTTP/1.1 200 OK"));
    let retry = Parser::new();
    let mut p = retry;
    p.feed(tb.split_once("\r\n\r\n").unwrap().1.as_bytes(), |_| {});
    let ms = p.retry().unwrap();
    assert!((2000..7000).contains(&ms), "{ms}");
    assert!(t.closed(b));
    assert!(t.text(d).starts_with("HTTP/1.1 503 "));
    assert!(t.text(d).contains("Retry-After: "));
    assert_eq!(t.core.metrics().closed(CloseReason::Limit), 1);
}

#[test]
fn keepalive_comment_after_idle() {
    let mut c = cfg();
    c.interval = None;
    c.keepalive = Some(Duration::from_secs(15));
    let mut t = T::new(c);
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    let before = t.text(a).len();
    t.advance(Duration::from_secs(14));
    t.drain(None);
    assert_eq!(t.text(a).len(), before);
    t.advance(Duration::from_secs(3));
    t.drain(None);
    assert!(t.text(a).ends_with(": keep-alive\n\n"));
    assert!(t.events(a).is_empty());
}

#[test]
fn shutdown_lets_queued_bytes_out_then_closes() {
    let mut t = T::new(cfg());
    let a = t.connect();
    let h = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    t.core.handle_would_block(a, t.now);
    t.core.publish("", None, None, "last words", t.now).unwrap();
    t.core.shutdown(t.now);
    t.drain(None);
    assert!(t.closed(h));
    assert!(!t.closed(a));
    assert!(t.core.handle_accept(peer(), t.now).is_none());
    t.core.handle_writable(a);
    t.drain(None);
    assert!(t.closed(a));
    assert_eq!(t.events(a)[0].data, "last words");
    assert!(t.core.is_finished());
}

#[test]
fn shutdown_deadline_closes_stuck_clients() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    t.core.handle_would_block(a, t.now);
    t.core.publish("", None, None, "x", t.now).unwrap();
    t.core.shutdown(t.now);
    t.drain(None);
    assert!(!t.core.is_finished());
    t.advance(Duration::from_secs(2));
    t.drain(None);
    assert!(t.closed(a));
    assert!(t.core.is_finished());
}

#[test]
fn bytes_after_a_stream_request_are_bounded() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.core.handle_read(a, &[b'x'; 4000], t.now);
    t.drain(None);
    assert!(!t.closed(a));
    t.core.handle_read(a, &[b'x'; 200], t.now);
    t.drain(None);
    assert!(t.closed(a));
}

#[test]
fn metrics_and_health() {
    let mut t = T::new(cfg());
    let (a, text) = t.get_once("/metrics");
    assert!(text.contains("# TYPE sse_clients gauge"));
    assert!(text.contains("sse_connections_closed_total{reason=\"slow\"} 0"));
    assert!(t.closed(a));
    let h = t.connect();
    t.core
        .handle_read(h, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", t.now);
    t.drain(None);
    assert!(t.text(h).ends_with("\r\n\r\nok\n"));
}

#[test]
fn at_the_connection_limit_the_oldest_idle_head_reader_makes_room() {
    let mut c = cfg();
    c.max_clients = 3;
    c.max_connections = 3;
    let mut t = T::new(c);
    let streaming = t.connect();
    t.core.handle_read(streaming, GET, t.now);
    let idle1 = t.connect();
    let idle2 = t.connect();
    t.drain(None);
    let newcomer = t.core.handle_accept(peer(), t.now).expect("room is made");
    t.got.push((newcomer, Vec::new(), false));
    t.drain(None);
    assert!(t.closed(idle1));
    assert!(!t.closed(idle2));
    assert!(t.core.is_streaming(streaming));
    assert_eq!(newcomer.key, idle1.key, "the freed slot is reused");
    assert_eq!(t.core.metrics().closed(CloseReason::Limit), 1);
    // With only streaming clients left to evict, a newcomer is refused.
    t.core.handle_read(newcomer, GET, t.now);
    t.core.handle_read(idle2, GET, t.now);
    t.drain(None);
    assert!(t.core.handle_accept(peer(), t.now).is_none());
}

#[test]
fn per_client_state_stays_small() {
    // The slab entry is most of a connected client's user-space memory: keep it in check.
    let size = std::mem::size_of::<Client>();
    assert!(size <= 256, "Client grew to {size} bytes");
}

#[test]
fn head_requests_get_the_get_head_without_a_body() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(
        a,
        b"HEAD / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
        t.now,
    );
    let h = t.connect();
    t.core.handle_read(
        h,
        b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        t.now,
    );
    t.drain(None);
    let page = t.text(a);
    assert!(page.contains("Content-Type: text/html"), "{page}");
    assert!(page.contains(&format!("Content-Length: {}", endpoints::DEMO_PAGE.len())));
    assert!(page.ends_with("\r\n\r\n"));
    assert!(t.text(h).contains("Content-Length: 3\r\n"));
    assert!(t.text(h).ends_with("\r\n\r\n"));
}

#[test]
fn pipelined_publishes_are_answered_before_the_fanout_so_frames_batch() {
    let mut t = T::new(cfg());
    let subs: Vec<ClientId> = (0..50).map(|_| t.connect()).collect();
    for s in &subs {
        t.core.handle_read(*s, GET, t.now);
    }
    t.drain(None);
    let writes_before = t.core.metrics().write_calls;
    let p = t.connect();
    let one = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx";
    t.core.handle_read(p, one.repeat(4).as_bytes(), t.now);
    t.drain(None);
    assert_eq!(t.text(p).matches("200 OK").count(), 4);
    for s in &subs {
        assert_eq!(t.events(*s).len(), 4);
    }
    // 4 responses, and one write per subscriber carrying all four frames.
    assert_eq!(t.core.metrics().write_calls - writes_before, 4 + 50);
}

#[test]
fn a_busy_kept_alive_connection_outlives_stale_linger_timers() {
    let mut t = T::new(cfg());
    let p = t.connect();
    let one = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx";
    // A response that is not taken at once arms a linger timer (5 s)...
    t.core.handle_would_block(p, t.now);
    t.core.handle_read(p, one, t.now);
    t.advance(Duration::from_secs(1));
    t.core.handle_writable(p);
    t.drain(None);
    // ...then the connection keeps publishing; at 5 s it is answering a later request.
    t.advance(Duration::from_secs(3));
    t.core.handle_would_block(p, t.now);
    t.core.handle_read(p, one, t.now);
    t.advance(Duration::from_millis(1500));
    assert!(!t.closed(p), "closed by the first response's linger timer");
    t.core.handle_writable(p);
    t.drain(None);
    assert_eq!(t.text(p).matches("200 OK").count(), 2);
    assert!(!t.closed(p));
}

#[test]
fn chunked_publish_in_any_split() {
    let req: &[u8] = b"POST /publish?event=c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5;x=y\r\nworld\r\n0\r\n\r\nPOST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
    for step in [req.len(), 1, 3, 7] {
        let mut t = T::new(cfg());
        let s = t.connect();
        t.core.handle_read(s, GET, t.now);
        let p = t.connect();
        for part in req.chunks(step) {
            t.core.handle_read(p, part, t.now);
            t.drain(None);
        }
        let data: Vec<String> = t.events(s).into_iter().map(|e| e.data).collect();
        assert_eq!(data, vec!["hello world", "hi"], "split {step}");
        assert_eq!(t.text(p).matches("200 OK").count(), 2);
    }
}

#[test]
fn chunked_errors() {
    let cases: &[(&[u8], u16)] = &[
        (
            // RFC 9112 §6.3: a request whose last coding is not chunked cannot be framed.
            b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
        ),
        (
            // Framed (the body could be read past) but not decodable by us.
            b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (
            b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffff\r\n",
            413,
        ),
    ];
    for (req, status) in cases {
        let mut t = T::new(cfg());
        let a = t.connect();
        t.core.handle_read(a, req, t.now);
        t.drain(None);
        assert!(
            t.text(a).starts_with(&format!("HTTP/1.1 {status} ")),
            "{}",
            t.text(a)
        );
        assert!(t.closed(a));
    }
}

#[test]
fn topics_past_the_limit_recycle_the_least_recently_used_idle_one() {
    let mut c = cfg();
    c.max_topics = 2;
    let mut t = T::new(c);
    let old_id = t.core.publish("a", None, None, "a1", t.now).unwrap();
    t.core.publish("b", None, None, "b1", t.now).unwrap();
    // A third topic recycles "a" (least recently used, no subscribers): its history is gone.
    t.core.publish("c", None, None, "c1", t.now).unwrap();
    let r = t.connect();
    t.core.handle_read(r, &resume_request("a", &old_id), t.now);
    t.drain(None);
    let ev = t.events(r);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].event_type, "reset",
        "a resume into a recycled topic is a gap: {ev:?}"
    );
    // Now "a" (re-created for the subscriber) and "c" exist; "a" has a subscriber, "c" not:
    // a new topic recycles "c"; with both busy, a new topic is refused.
    let s = t.connect();
    t.core
        .handle_read(s, b"GET /events?topic=d HTTP/1.1\r\nHost: x\r\n\r\n", t.now);
    t.drain(None);
    assert!(t.core.is_streaming(s));
    assert_eq!(
        t.core.publish("e", None, None, "x", t.now),
        Err(RequestError::TooManyTopics)
    );
    let u = t.connect();
    t.core
        .handle_read(u, b"GET /events?topic=f HTTP/1.1\r\nHost: x\r\n\r\n", t.now);
    t.drain(None);
    assert!(t.text(u).starts_with("HTTP/1.1 503 "), "{}", t.text(u));
    // Publishing to a busy topic still works and reaches its subscriber.
    t.core.publish("d", None, None, "d1", t.now).unwrap();
    t.drain(None);
    assert_eq!(t.events(s).last().map(|e| e.data.as_str()), Some("d1"));
}
