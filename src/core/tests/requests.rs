//! Core tests, part 1 of 2 (split by size, in their original order): heads, writes, errors,
//! publishing, topics, resume, dropping slow clients.

use super::*;

#[test]
fn stream_head_then_ticks() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    assert!(
        t.text(a)
            .starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
    );
    assert_eq!(t.core.next_deadline(), Some(t.now + Duration::from_secs(2)));
    t.advance(Duration::from_secs(2));
    t.drain(None);
    let ev = t.events(a);
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0]
            .data
            .starts_with("the time is 2024-10-13 14:35:24.000000000 +0000 UTC"),
        "{:?}",
        ev[0]
    );
    assert!(
        t.text(a)
            .ends_with("data: the time is 2024-10-13 14:35:24.000000000 +0000 UTC\n\n")
    );
}

#[test]
fn request_split_byte_by_byte() {
    let mut t = T::new(cfg());
    let a = t.connect();
    for b in GET.chunks(1) {
        t.core.handle_read(a, b, t.now);
    }
    t.drain(None);
    assert!(t.core.is_streaming(a));
}

#[test]
fn partial_writes_resume_at_the_exact_byte() {
    let mut t = T::new(cfg());
    let a = t.connect();
    let b = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.core.handle_read(b, GET, t.now);
    t.drain(None);
    for i in 0..5 {
        t.core
            .publish(
                "",
                None,
                None,
                &format!("event number {i}\nsecond line"),
                t.now,
            )
            .unwrap();
    }
    // `a` takes 7 bytes per writable event; `b` takes everything.
    for _ in 0..200 {
        t.drain(Some(7));
        t.core.handle_writable(a);
        t.core.handle_writable(b);
    }
    t.drain(None);
    assert_eq!(t.text(a), t.text(b));
    let ev = t.events(a);
    assert_eq!(ev.len(), 5);
    assert_eq!(ev[4].data, "event number 4\nsecond line");
    assert!(t.core.metrics().write_calls > 20);
    // Frames finished after a partial write count as deliveries too.
    assert_eq!(t.core.metrics().frames_written, 10);
}

#[test]
fn one_blocked_client_does_not_delay_others() {
    let mut t = T::new(cfg());
    let slow = t.connect();
    let fast = t.connect();
    t.core.handle_read(slow, GET, t.now);
    t.core.handle_read(fast, GET, t.now);
    t.drain(None);
    let blocked_before = t.core.metrics().would_blocks;
    t.core.handle_would_block(slow, t.now);
    t.core.publish("", None, None, "x", t.now).unwrap();
    t.drain(None);
    assert_eq!(t.events(fast).len(), 1);
    assert_eq!(t.events(slow).len(), 0);
    // Each full socket is counted once (`sse_write_would_block_total`).
    t.core.handle_would_block(slow, t.now);
    assert_eq!(t.core.metrics().would_blocks, blocked_before + 2);
    t.core.handle_writable(slow);
    t.drain(None);
    assert_eq!(t.events(slow).len(), 1);
}

#[test]
fn disconnect_frees_the_slot_and_stale_ids_are_ignored() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    assert_eq!(t.core.streaming_clients(), 1);
    t.core.handle_read_closed(a);
    t.drain(None);
    assert!(t.closed(a));
    assert_eq!(t.core.streaming_clients(), 0);
    assert_eq!(t.core.connections(), 0);
    // The slot is reused with a new generation; the old id reaches nothing.
    let b = t.connect();
    assert_eq!(a.key, b.key);
    assert_ne!(a.generation, b.generation);
    t.core.handle_read(a, b"garbage", t.now);
    t.core.handle_io_error(a, IoFailure::Reset);
    assert!(t.core.is_live(b));
    t.core.handle_read(b, GET, t.now);
    t.drain(None);
    assert!(t.core.is_streaming(b));
}

#[test]
fn error_statuses() {
    let cases: &[(&[u8], u16)] = &[
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET /publish HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET /health HTTP/1.1\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
            413,
        ),
        (b"OPTIONS /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"\x16\x03\x01garbage\r\n\r\n", 400),
        (
            b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
            413,
        ),
        (b"POST /publish HTTP/1.1\r\nHost: x\r\n\r\n", 411),
        (
            b"POST /publish?event=a%0Ab HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
            400,
        ),
    ];
    for (req, status) in cases {
        let mut t = T::new(cfg());
        let a = t.connect();
        t.core.handle_read(a, req, t.now);
        t.drain(None);
        let text = t.text(a);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req:?}: {text}"
        );
        assert!(text.contains("Connection: close"));
        assert!(t.closed(a), "{req:?} not closed");
    }
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, &vec![b'a'; 9000], t.now);
    t.drain(None);
    assert!(t.text(a).starts_with("HTTP/1.1 431 "));
}

#[test]
fn head_timeout_is_408() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, b"GET / HT", t.now);
    t.advance(Duration::from_secs(9));
    t.drain(None);
    assert!(t.text(a).is_empty());
    t.advance(Duration::from_secs(1));
    t.drain(None);
    assert!(t.text(a).starts_with("HTTP/1.1 408 "));
    assert!(t.closed(a));
}

/// A body that stops arriving is answered as a late body, not as a late head, and the
/// connection closes; a kept-alive connection idle between requests just closes.
#[test]
fn a_trickled_body_times_out_with_its_own_answer() {
    let mut t = T::new(cfg());
    let a = t.connect();
    let head = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc";
    t.core.handle_read(a, head, t.now);
    t.advance(Duration::from_secs(10));
    t.drain(None);
    let text = t.text(a);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(
        text.ends_with("the request body did not arrive in time\n"),
        "{text}"
    );
    assert!(t.closed(a));
}

#[test]
fn publish_response_and_keep_alive() {
    let mut t = T::new(cfg());
    let a = t.connect();
    let req = b"POST /publish?event=greet HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
    t.core.handle_read(a, req, t.now);
    t.drain(None);
    let text = t.text(a);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.contains(&format!("{}-1\n", t.core.boot_id())));
    assert!(text.contains(&format!("{}-2\n", t.core.boot_id())));
    assert!(!t.closed(a));
    assert_eq!(t.core.metrics().events_published, 2);
}

#[test]
fn topics_are_isolated() {
    let mut t = T::new(cfg());
    let a = t.connect();
    let b = t.connect();
    let d = t.connect();
    t.core
        .handle_read(a, b"GET /events?topic=A HTTP/1.1\r\nHost: x\r\n\r\n", t.now);
    t.core.handle_read(
        b,
        b"GET /events?topic=B&topic=A HTTP/1.1\r\nHost: x\r\n\r\n",
        t.now,
    );
    t.core.handle_read(d, GET, t.now);
    t.drain(None);
    t.core.publish("B", None, None, "to b", t.now).unwrap();
    t.core.publish("A", None, None, "to a", t.now).unwrap();
    t.core.publish("", None, None, "to default", t.now).unwrap();
    t.advance(Duration::from_secs(2));
    t.drain(None);
    let data = |id| t.events(id).into_iter().map(|e| e.data).collect::<Vec<_>>();
    assert_eq!(data(a), vec!["to a"]);
    assert_eq!(data(b), vec!["to b", "to a"]);
    assert_eq!(data(d).len(), 2);
    assert_eq!(data(d)[0], "to default");
    assert!(data(d)[1].starts_with("the time is"));
}

#[test]
fn resume_replays_exactly_what_was_missed() {
    let mut t = T::new(cfg());
    let ids: Vec<String> = (0..5)
        .map(|i| {
            t.core
                .publish("A", None, None, &format!("e{i}"), t.now)
                .unwrap()
        })
        .collect();
    let a = t.connect();
    t.core.handle_read(a, &resume_request("A", &ids[1]), t.now);
    t.drain(None);
    let ev = t.events(a);
    assert_eq!(
        ev.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        vec!["e2", "e3", "e4"]
    );
    assert_eq!(ev[2].last_event_id, ids[4]);
    // Resume from the newest: nothing replayed, no gap.
    let b = t.connect();
    t.core.handle_read(b, &resume_request("A", &ids[4]), t.now);
    t.drain(None);
    assert!(t.events(b).is_empty());
}

#[test]
fn custom_ids_resume_too() {
    let mut t = T::new(cfg());
    t.core
        .publish("A", None, Some("first"), "1", t.now)
        .unwrap();
    t.core
        .publish("A", None, Some("second"), "2", t.now)
        .unwrap();
    let a = t.connect();
    t.core.handle_read(a, &resume_request("A", "first"), t.now);
    t.drain(None);
    let ev = t.events(a);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].data, "2");
    assert_eq!(ev[0].last_event_id, "second");
}

#[test]
fn too_old_unknown_and_earlier_run_ids_get_a_reset() {
    let mut c = cfg();
    c.history = 3;
    let mut t = T::new(c);
    let ids: Vec<String> = (0..6)
        .map(|i| {
            t.core
                .publish("A", None, None, &format!("e{i}"), t.now)
                .unwrap()
        })
        .collect();
    // Too old: reset, then the live edge.
    let a = t.connect();
    t.core.handle_read(a, &resume_request("A", &ids[0]), t.now);
    // Unknown.
    let b = t.connect();
    t.core
        .handle_read(b, &resume_request("A", "no-such-id-at-all"), t.now);
    // Earlier run: reset then all retained history.
    let r = t.connect();
    t.core
        .handle_read(r, &resume_request("A", "abc123-77"), t.now);
    t.drain(None);
    let ea = t.events(a);
    assert_eq!(ea.len(), 1);
    assert_eq!(ea[0].event_type, "reset");
    assert!(ea[0].data.contains("too-old"));
    let eb = t.events(b);
    assert_eq!(eb.len(), 1);
    assert!(eb[0].data.contains("unknown-id"));
    let er: Vec<String> = t.events(r).into_iter().map(|e| e.data).collect();
    assert_eq!(er, vec!["{\"reason\":\"restart\"}", "e3", "e4", "e5"]);
    // The reset event's id resumes at the live edge: reconnecting with it loses nothing new.
    t.core.publish("A", None, None, "e6", t.now).unwrap();
    let a2 = t.connect();
    t.core
        .handle_read(a2, &resume_request("A", &ea[0].last_event_id), t.now);
    t.drain(None);
    assert_eq!(
        t.events(a2).into_iter().map(|e| e.data).collect::<Vec<_>>(),
        vec!["e6"]
    );
}

#[test]
fn ticks_are_not_replayed() {
    let mut t = T::new(cfg());
    let id0 = t.core.publish("", None, None, "p0", t.now).unwrap();
    t.advance(Duration::from_secs(2));
    t.core.publish("", None, None, "p1", t.now).unwrap();
    let a = t.connect();
    t.core.handle_read(
        a,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {id0}\r\n\r\n").into_bytes(),
        t.now,
    );
    t.drain(None);
    assert_eq!(
        t.events(a).into_iter().map(|e| e.data).collect::<Vec<_>>(),
        vec!["p1"]
    );
}

#[test]
fn slow_client_dropped_past_backlog() {
    let mut c = cfg();
    c.max_backlog = 2000;
    c.history_bytes = 2000;
    let mut t = T::new(c);
    let slow = t.connect();
    let fast = t.connect();
    t.core.handle_read(slow, GET, t.now);
    t.core.handle_read(fast, GET, t.now);
    t.drain(None);
    t.core.handle_would_block(slow, t.now);
    for i in 0..100 {
        t.core
            .publish("", None, None, &format!("{i:040}"), t.now)
            .unwrap();
        t.drain(None);
    }
    assert!(t.closed(slow));
    assert_eq!(t.core.metrics().closed(CloseReason::Slow), 1);
    assert_eq!(t.events(fast).len(), 100);
}
