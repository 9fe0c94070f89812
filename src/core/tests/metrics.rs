//! Core tests of what the server reports about itself: `/metrics`, `/clients` and the
//! fan-out timing (written to kill mutants the other tests let survive).

use super::*;

/// `GET /clients` lists the streaming connections only, the most behind first, each with
/// its topics (not the ticks), queued bytes and ages, separated as JSON wants (kills the
/// mutants of `render_clients`).
#[test]
fn the_clients_list_shows_streams_worst_first() {
    let mut t = T::new(cfg());
    let behind = t.connect();
    let idle = t.connect();
    let asker = t.connect();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    t.core
        .handle_read(idle, get("/events?topic=z").as_bytes(), t.now);
    t.core
        .handle_read(behind, get("/events?topic=x&topic=y").as_bytes(), t.now);
    t.drain(None);
    t.now += Duration::from_millis(300);
    t.core.publish("x", None, None, "zero", t.now).unwrap();
    t.drain(None);
    t.core.publish("x", None, None, "one", t.now).unwrap();
    t.core.publish("y", None, None, "two", t.now).unwrap();
    t.drain(Some(0));
    t.now += Duration::from_millis(1200);
    t.core.handle_read(asker, get("/clients").as_bytes(), t.now);
    t.drain(None);
    let text = t.text(asker);
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    let queued = t.core.backlog_bytes(behind).unwrap();
    assert!(queued > 0);
    assert_eq!(
        body,
        format!(
            "{{\"clients\":[\
             {{\"address\":\"127.0.0.1:5000\",\"topics\":[\"x\",\"y\"],\"queued_bytes\":{queued},\
             \"since_last_write_ms\":1200,\"connected_ms\":1500}},\
             {{\"address\":\"127.0.0.1:5000\",\"topics\":[\"z\"],\"queued_bytes\":0,\
             \"since_last_write_ms\":1500,\"connected_ms\":1500}}\
             ],\"total\":2}}\n"
        )
    );
}

/// `/metrics` lists per-topic series for at most [`MAX_TOPIC_SERIES`] topics, the busiest
/// (most subscribed, then most retained bytes), never the ticks' internal topic, and counts
/// every topic in `sse_topics` (kills the mutants of the filter and the truncation in
/// `render_metrics`).
#[test]
fn metrics_list_the_busiest_topics_and_never_the_ticks() {
    use crate::core::metrics::MAX_TOPIC_SERIES;
    let mut t = T::new(cfg());
    let topics = MAX_TOPIC_SERIES + 8;
    for i in 0..topics {
        // Topic i retains i + 1 bytes of data: the 8 smallest are left out.
        let data = "d".repeat(i + 1);
        t.core
            .publish(&format!("t{i:02}"), None, None, &data, t.now)
            .unwrap();
    }
    let (_, text) = t.get_once("/metrics");
    let listed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("sse_history_events{topic=\""))
        .map(|l| &l[..l.find('"').unwrap()])
        .collect();
    let mut expected: Vec<String> = (8..topics).map(|i| format!("t{i:02}")).collect();
    let mut listed_sorted: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    listed_sorted.sort();
    expected.sort();
    assert_eq!(listed_sorted, expected, "{text}");
    // And the default stream's topic "" (the ticks' is not counted).
    let counted = topics + 1;
    assert!(
        text.contains(&format!("\nsse_topics {counted}\n")),
        "{text}"
    );
}

/// The fan-out metrics: how many clients one event woke and how long until the last of them
/// was written; an event that wakes nobody leaves them as they were (kills the mutants of
/// `woken` and the `fanout` condition in `append`, and `check_fanout_done` → `()`).
#[test]
fn the_fanout_metrics_follow_the_clients_woken() {
    let mut t = T::new(cfg());
    let (a, b) = (t.connect(), t.connect());
    for c in [a, b] {
        t.core.handle_read(c, GET, t.now);
    }
    t.drain(None);
    assert_eq!(t.core.metrics().last_fanout, None);
    t.core.publish("", None, None, "to both", t.now).unwrap();
    t.now += Duration::from_millis(3);
    t.drain(None);
    assert_eq!(t.core.metrics().last_fanout_clients, 2);
    assert_eq!(t.core.metrics().last_fanout, Some(Duration::from_millis(3)));
    t.core.publish("nobody", None, None, "x", t.now).unwrap();
    t.now += Duration::from_millis(5);
    t.drain(None);
    assert_eq!(t.core.metrics().last_fanout_clients, 2);
    assert_eq!(t.core.metrics().last_fanout, Some(Duration::from_millis(3)));
    // The next fan-out is timed from its own event, not from the one that woke nobody.
    t.core.publish("", None, None, "again", t.now).unwrap();
    t.now += Duration::from_millis(2);
    t.drain(None);
    assert_eq!(t.core.metrics().last_fanout, Some(Duration::from_millis(2)));
    // A fan-out in progress is timed from its first event, even when a later one wakes
    // more clients before the last is written.
    let c = t.connect();
    t.core
        .handle_read(c, b"GET /events?topic=y HTTP/1.1\r\nHost: x\r\n\r\n", t.now);
    t.drain(None);
    t.core.publish("", None, None, "first", t.now).unwrap();
    t.now += Duration::from_millis(2);
    t.core.publish("y", None, None, "second", t.now).unwrap();
    t.now += Duration::from_millis(3);
    t.drain(None);
    assert_eq!(t.core.metrics().last_fanout_clients, 2);
    assert_eq!(t.core.metrics().last_fanout, Some(Duration::from_millis(5)));
}

/// A fan-out is done only once the last woken stream is written, not at the first write
/// (kills `OutputQueues::streams_done` → `true`).
#[test]
fn a_fanout_ends_with_its_last_write() {
    let mut t = T::new(cfg());
    let (a, b) = (t.connect(), t.connect());
    for c in [a, b] {
        t.core.handle_read(c, GET, t.now);
    }
    t.drain(None);
    let start = t.now;
    t.core.publish("", None, None, "to both", t.now).unwrap();
    let Some(Output::Write(first)) = t.core.poll_output() else {
        panic!("a write is due");
    };
    let n = offer(&t.core, first, |iov| {
        iov.iter().map(|s| s.len()).sum::<usize>()
    });
    t.now += Duration::from_millis(1);
    t.core.handle_written(first, n, t.now);
    assert_eq!(t.core.metrics().last_fanout, None, "one of two written");
    t.now += Duration::from_millis(3);
    t.drain(None);
    assert_eq!(t.core.metrics().last_fanout, Some(t.now - start));
    assert_eq!(t.core.metrics().last_fanout_clients, 2);
}
