//! Core tests with no sockets: everything through the core's own interface.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};

use super::drain::{OutputSink, WriteOutcome, offer};
use super::*;
use crate::config::SlowClientPolicy;
use crate::sse::parse::{Event, Parser};

const GET: &[u8] = b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";

struct T {
    core: Core,
    now: Instant,
    /// Bytes each client received (by id), and whether it was closed.
    got: Vec<(ClientId, Vec<u8>, bool)>,
}

/// The test's driver side: records what each client received.
struct Sink<'a> {
    t: &'a mut T,
    window: Option<usize>,
}

impl OutputSink for Sink<'_> {
    type Error = std::convert::Infallible;

    fn core(&mut self) -> &mut Core {
        &mut self.t.core
    }

    fn now(&self) -> Instant {
        self.t.now
    }

    fn write(&mut self, id: ClientId) -> Result<WriteOutcome, Self::Error> {
        let mut bytes: Vec<u8> = offer(&self.t.core, id, |iov| {
            iov.iter().flat_map(|s| s.iter().copied()).collect()
        });
        assert!(!bytes.is_empty(), "Write output with nothing to write");
        if let Some(w) = self.window {
            bytes.truncate(w);
        }
        let len = bytes.len();
        self.t.entry(id).1.extend_from_slice(&bytes);
        Ok(if len == 0 {
            WriteOutcome::WouldBlock
        } else {
            WriteOutcome::Wrote(len)
        })
    }

    fn after_write(&mut self, id: ClientId, outcome: WriteOutcome) -> Result<(), Self::Error> {
        if matches!(outcome, WriteOutcome::Wrote(_)) && self.window.is_some() {
            // A short write: the socket is now full.
            self.t.core.handle_would_block(id, self.t.now);
        }
        Ok(())
    }

    fn close(&mut self, id: ClientId, _: CloseReason) -> Result<(), Self::Error> {
        self.t.entry(id).2 = true;
        Ok(())
    }
}

fn peer() -> SocketAddr {
    "127.0.0.1:5000".parse().unwrap()
}

fn cfg() -> Config {
    Config {
        interval: Some(Duration::from_secs(2)),
        keepalive: None,
        ..Config::default()
    }
}

impl T {
    fn new(cfg: Config) -> T {
        let now = Instant::now();
        let wall = Utc.with_ymd_and_hms(2024, 10, 13, 14, 35, 22).unwrap();
        T {
            core: Core::new(cfg, now, wall, 7),
            now,
            got: Vec::new(),
        }
    }

    fn connect(&mut self) -> ClientId {
        let id = self.core.handle_accept(peer(), self.now).unwrap();
        self.got.push((id, Vec::new(), false));
        id
    }

    fn entry(&mut self, id: ClientId) -> &mut (ClientId, Vec<u8>, bool) {
        self.got.iter_mut().find(|(i, ..)| *i == id).unwrap()
    }

    /// Drains outputs; each write takes at most `window` bytes (None: everything).
    /// Performs every output with the shared harness; each write takes at most `window`
    /// bytes (then the socket is full), or everything.
    fn drain(&mut self, window: Option<usize>) {
        let Ok(done) = (Sink { t: self, window }).drain(usize::MAX);
        assert!(done);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        let wall = Utc.with_ymd_and_hms(2024, 10, 13, 14, 35, 22).unwrap()
            + chrono::Duration::from_std(d).unwrap();
        self.core.handle_timeout(wall, self.now);
    }

    fn text(&self, id: ClientId) -> String {
        String::from_utf8_lossy(&self.got.iter().find(|(i, ..)| *i == id).unwrap().1).into_owned()
    }

    fn events(&self, id: ClientId) -> Vec<Event> {
        let text = self.text(id);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(body.as_bytes(), |e| out.push(e));
        out
    }

    fn closed(&self, id: ClientId) -> bool {
        self.got.iter().find(|(i, ..)| *i == id).unwrap().2
    }
}

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
    t.core.handle_would_block(slow, t.now);
    t.core.publish("", None, None, "x", t.now).unwrap();
    t.drain(None);
    assert_eq!(t.events(fast).len(), 1);
    assert_eq!(t.events(slow).len(), 0);
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
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"DELETE / HTTP/1.1\r\n\r\n", 405),
        (b"GET /publish HTTP/1.1\r\n\r\n", 405),
        (b"\x16\x03\x01garbage\r\n\r\n", 400),
        (
            b"POST /publish HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            413,
        ),
        (b"POST /publish HTTP/1.1\r\n\r\n", 411),
        (
            b"POST /publish?event=a%0Ab HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
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

#[test]
fn publish_response_and_keep_alive() {
    let mut t = T::new(cfg());
    let a = t.connect();
    let req = b"POST /publish?event=greet HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPOST /publish HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
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
        .handle_read(a, b"GET /events?topic=A HTTP/1.1\r\n\r\n", t.now);
    t.core
        .handle_read(b, b"GET /events?topic=B&topic=A HTTP/1.1\r\n\r\n", t.now);
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

fn resume_request(topic: &str, last: &str) -> Vec<u8> {
    format!("GET /events?topic={topic} HTTP/1.1\r\nLast-Event-ID: {last}\r\n\r\n").into_bytes()
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
        &format!("GET / HTTP/1.1\r\nLast-Event-ID: {id0}\r\n\r\n").into_bytes(),
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

#[test]
fn slow_client_latest_policy_skips_whole_frames() {
    let mut c = cfg();
    c.max_backlog = 2000;
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
    t.core.handle_read(d, b"GET / HTTP/1.1\r\n\r\n", t.now);
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
    let a = t.connect();
    t.core.handle_read(
        a,
        b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
        t.now,
    );
    t.drain(None);
    let text = t.text(a);
    assert!(text.contains("# TYPE sse_clients gauge"));
    assert!(text.contains("sse_connections_closed_total{reason=\"slow\"} 0"));
    assert!(t.closed(a));
    let h = t.connect();
    t.core
        .handle_read(h, b"GET /health HTTP/1.1\r\n\r\n", t.now);
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
        b"HEAD / HTTP/1.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
        t.now,
    );
    let h = t.connect();
    t.core.handle_read(
        h,
        b"HEAD /health HTTP/1.1\r\nConnection: close\r\n\r\n",
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
    let one = "POST /publish HTTP/1.1\r\nContent-Length: 1\r\n\r\nx";
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
    let one = b"POST /publish HTTP/1.1\r\nContent-Length: 1\r\n\r\nx";
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
    let req: &[u8] = b"POST /publish?event=c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5;x=y\r\nworld\r\n0\r\n\r\nPOST /publish HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
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
            b"POST /publish HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
        (
            b"POST /publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            b"POST /publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffff\r\n",
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
        .handle_read(s, b"GET /events?topic=d HTTP/1.1\r\n\r\n", t.now);
    t.drain(None);
    assert!(t.core.is_streaming(s));
    assert_eq!(
        t.core.publish("e", None, None, "x", t.now),
        Err(RequestError::TooManyTopics)
    );
    let u = t.connect();
    t.core
        .handle_read(u, b"GET /events?topic=f HTTP/1.1\r\n\r\n", t.now);
    t.drain(None);
    assert!(t.text(u).starts_with("HTTP/1.1 503 "), "{}", t.text(u));
    // Publishing to a busy topic still works and reaches its subscriber.
    t.core.publish("d", None, None, "d1", t.now).unwrap();
    t.drain(None);
    assert_eq!(t.events(s).last().map(|e| e.data.as_str()), Some("d1"));
}
