//! Delivery and topics against the real binary: each test states the failure it guards
//! against.

mod util;

use std::time::Duration;

use util::*;

const SEC: Duration = Duration::from_secs(1);

/// The sum of `sse_topic_clients` over every topic.
fn topic_clients_sum(server: &Server) -> f64 {
    let (_, body) = http(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    body.lines()
        .filter(|l| l.starts_with("sse_topic_clients{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With one idle topic left, `topic=x&topic=y` must not recycle it for both names (the client
/// would get every event twice and leave a subscriber counted forever): the second name finds
/// no idle topic, 503, nothing doubled, nothing leaked.
#[test]
fn one_request_never_recycles_the_same_topic_twice() {
    let server = Server::start(&["--interval", "off", "--max-topics", "2"]);
    for topic in ["a", "b"] {
        assert_eq!(
            publish(server.addr, &format!("?topic={topic}"), "old").0,
            200
        );
    }
    let keeper = Stream::open(server.addr, "/events?topic=b", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    let (head, _) = http(
        server.addr,
        "GET /events?topic=x&topic=y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&head), 503, "{head}");
    assert_eq!(topic_clients_sum(&server), 1.0);
    drop(keeper.sock.shutdown(std::net::Shutdown::Both));
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 0.0));
    // Two idle topics now: both names get one each, and each event arrives once.
    let mut both = Stream::open(server.addr, "/events?topic=x&topic=y", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    assert_eq!(publish(server.addr, "?topic=y", "once").0, 200);
    assert_eq!(publish(server.addr, "?topic=x", "then").0, 200);
    both.wait_events(2, 3 * SEC);
    std::thread::sleep(Duration::from_millis(200));
    both.fill_nonblocking();
    let data: Vec<&str> = both.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["once", "then"]);
    assert_eq!(topic_clients_sum(&server), 2.0);
    drop(both);
    assert!(eventually(3 * SEC, || topic_clients_sum(&server) == 0.0));
}

/// After many clients with many new topics leave, every topic's subscriber count is back to
/// zero.
#[test]
fn topic_subscriber_counts_return_to_zero() {
    let server = Server::start(&["--interval", "off", "--max-topics", "8"]);
    for round in 0..6 {
        let streams: Vec<Stream> = (0..4)
            .map(|i| {
                let q: Vec<String> = (0..3).map(|k| format!("topic=r{round}c{i}t{k}")).collect();
                Stream::open(server.addr, &format!("/events?{}", q.join("&")), &[])
            })
            .collect();
        drop(streams);
        assert!(
            eventually(3 * SEC, || server.metric("sse_clients") == 0.0),
            "round {round}"
        );
    }
    assert_eq!(topic_clients_sum(&server), 0.0);
}

/// `topic=%FF` and `topic=%FE` must not both decode to U+FFFD, one topic, with events
/// crossing between them: a name that is not UTF-8 is refused.
#[test]
fn topic_names_that_are_not_utf8_are_refused() {
    let server = Server::start(&["--interval", "off"]);
    for target in [
        "/events?topic=%FF",
        "/events?topic=%FE",
        "/publish?topic=%FF",
    ] {
        let method = if target.starts_with("/publish") {
            "POST"
        } else {
            "GET"
        };
        let (head, _) = http(
            server.addr,
            &format!(
                "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
            ),
        );
        assert_eq!(status_of(&head), 400, "{target}: {head}");
    }
    assert_eq!(server.metric("sse_events_published_total"), 0.0);
    // Valid UTF-8 escapes still work.
    let mut s = Stream::open(server.addr, "/events?topic=%C3%A9", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    assert_eq!(publish(server.addr, "?topic=%C3%A9", "é").0, 200);
    s.wait_events(1, 3 * SEC);
    assert_eq!(s.events[0].data, "é");
}

/// A client's backlog is the sum over its topics, so its bound covers a whole history on
/// every one of them: a resume of the whole history of three topics (12 MB, more than the
/// kernel buffers of a client that has not read yet) is not dropped as slow on the next
/// publish, as it would be with `--max-backlog` raised to one topic's `--history-bytes` only.
#[test]
fn a_multi_topic_resume_of_whole_histories_is_not_dropped_as_slow() {
    const HISTORY: usize = 4 << 20;
    const BODY: usize = 256 << 10;
    let history = HISTORY.to_string();
    let body_limit = BODY.to_string();
    let server = Server::start(&[
        "--interval",
        "off",
        "--history-bytes",
        &history,
        "--max-backlog",
        &history,
        "--max-body",
        &body_limit,
    ]);
    let chunk = "x".repeat(BODY - 100);
    let mut first_id = String::new();
    for i in 0..(HISTORY / BODY - 1) {
        for topic in ["a", "b", "c"] {
            let (status, id) = publish(server.addr, &format!("?topic={topic}"), &chunk);
            assert_eq!(status, 200);
            if i == 0 && topic == "a" {
                first_id = id.trim().to_owned();
            }
        }
    }
    let per_topic = HISTORY / BODY - 1;
    let header = format!("Last-Event-ID: {first_id}");
    let mut s = Stream::open(server.addr, "/events?topic=a&topic=b&topic=c", &[&header]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    assert_eq!(publish(server.addr, "?topic=a", "live").0, 200);
    let want = 3 * per_topic - 1 + 1;
    s.wait_events(want, 20 * SEC);
    assert_eq!(s.events.len(), want);
    assert_eq!(s.events.last().map(|e| e.data.as_str()), Some("live"));
    assert_eq!(
        server.metric("sse_connections_closed_total{reason=\"slow\"}"),
        0.0
    );
}

/// Subscribers may fill the topic table (`--max-topics`, whose memory
/// is bounded: each topic keeps at most `--history-bytes`). Then a request for a *new* name
/// gets 503 with `Retry-After`, while every topic already in the table stays usable
/// (subscribe and publish), and the table frees as subscribers leave.
#[test]
fn a_full_topic_table_refuses_only_new_names() {
    let server = Server::start(&["--interval", "off", "--max-topics", "4"]);
    let q: Vec<String> = (0..4).map(|i| format!("topic=t{i}")).collect();
    let hog = Stream::open(server.addr, &format!("/events?{}", q.join("&")), &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    let (head, _) = http(
        server.addr,
        "GET /events?topic=new HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&head), 503, "{head}");
    assert!(head.contains("Retry-After: 5"), "{head}");
    assert_eq!(publish(server.addr, "?topic=new", "x").0, 503);
    // Existing topics and the default stream keep working.
    let mut other = Stream::open(server.addr, "/events?topic=t2", &[]);
    let mut default = Stream::open(server.addr, "/events", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 3.0));
    assert_eq!(publish(server.addr, "?topic=t2", "still").0, 200);
    assert_eq!(publish(server.addr, "", "default").0, 200);
    other.wait_events(1, 3 * SEC);
    default.wait_events(1, 3 * SEC);
    assert_eq!(other.events[0].data, "still");
    assert_eq!(default.events[0].data, "default");
    drop(hog);
    drop(other);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    assert_eq!(publish(server.addr, "?topic=new", "x").0, 200);
}

/// The topic table forgets the names it recycles, so a name that comes back cannot tell
/// whether its own events were dropped: a resume on it from before them gets `reset`
/// `too-old`, never a silent hole. (Here "b" lost its second event to recycling and came back
/// in a slot that had lost nothing; it once resumed live without the reset.)
#[test]
fn a_name_back_after_recycling_resumes_with_too_old_not_a_hole() {
    let server = Server::start(&["--interval", "off", "--max-topics", "2"]);
    assert_eq!(publish(server.addr, "?topic=a", "a1").0, 200);
    let (status, b1) = publish(server.addr, "?topic=b", "b1");
    assert_eq!(status, 200);
    // "news" recycles a's slot, and its subscriber keeps it.
    let keeper = Stream::open(server.addr, "/events?topic=news", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    assert_eq!(publish(server.addr, "?topic=b", "b2").0, 200);
    // "x" recycles b's slot: "b2" is dropped.
    assert_eq!(publish(server.addr, "?topic=x", "x1").0, 200);
    drop(keeper.sock.shutdown(std::net::Shutdown::Both));
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 0.0));
    // "b" comes back in news's slot.
    let header = format!("Last-Event-ID: {}", b1.trim());
    let mut s = Stream::open(server.addr, "/events?topic=b", &[&header]);
    s.wait_events(1, 3 * SEC);
    let Some(first) = s.events.first() else {
        panic!("no reset: the resume went live and missed b2 silently");
    };
    assert_eq!(first.event_type, "reset", "{:?}", s.events);
    assert_eq!(first.data, "{\"reason\":\"too-old\"}");
}
