//! Resumes read from the shared log (`--redis`) by the real binary against a real
//! `redis-server`: a crowd resuming from one id shares its range read, a held resume reads
//! on from the log while the node's cache moves past it (it was dropped as slow), and so
//! does a live stream when the log was lost and trimmed while the node's tail was away.
//!
//! Skips (and passes) without `redis-server`, unless `SSE_REQUIRE_ECOSYSTEM=1`.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use util::redis::{Persistence, Proxy, RedisServer};
use util::{Server, Stream, eventually, http, publish, status_of};

const LIMIT: Duration = Duration::from_secs(15);

/// A node of the cluster on `redis_url`, ticks off, healthy.
fn node(redis_url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--redis", redis_url, "--interval", "off"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let healthy = || {
        let (h, _) = http(
            server.addr,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        status_of(&h) == 200
    };
    assert!(eventually(LIMIT, healthy), "node never reached Redis");
    server
}

/// Publishes and returns the id the cluster answered with.
fn publish_ok(addr: SocketAddr, query: &str, data: &str) -> String {
    let (status, body) = publish(addr, query, data);
    assert_eq!(status, 200, "publish {data:?}: {body}");
    body.trim().to_owned()
}

/// Publishes `x0`..`x{n-1}` on topic `t` through `addr`; returns the first one's id.
fn publish_xs(addr: SocketAddr, n: usize) -> String {
    let first = publish_ok(addr, "?topic=t", "x0");
    for i in 1..n {
        publish_ok(addr, "?topic=t", &format!("x{i}"));
    }
    first
}

/// Waits until `node`'s tail has applied `n` events.
fn wait_applied(node: &Server, n: f64) {
    assert!(
        eventually(LIMIT, || node.metric("sse_bus_events_received_total") >= n),
        "the tail never applied {n} events"
    );
}

fn datas(s: &Stream) -> Vec<String> {
    s.events.iter().map(|e| e.data.clone()).collect()
}

fn want(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("x{i}")).collect()
}

/// 300 clients resuming from one id older than the node's cache (a crowd coming back
/// after a restart): the range is read from Redis once (the first resume's read, its page
/// kept for those that follow), not 300 times, and every client gets every event in order.
#[test]
fn a_crowd_resuming_from_one_id_shares_one_range_read() {
    let Some(redis) = RedisServer::start("crowd_resume", Persistence::None) else {
        return;
    };
    let a = node(&redis.url(), &["--history", "4"]);
    let first = publish_xs(a.addr, 30);
    wait_applied(&a, 30.0);
    let before = a.metric("sse_bus_range_fetches_total");
    let header = format!("Last-Event-ID: {first}");
    let mut crowd: Vec<Stream> = (0..300)
        .map(|_| Stream::open(a.addr, "/events?topic=t", &[&header]))
        .collect();
    for (i, s) in crowd.iter_mut().enumerate() {
        let all = eventually(LIMIT, || {
            s.fill_nonblocking();
            s.events.len() >= 29
        });
        assert!(all, "client {i}: {} events", s.events.len());
        assert_eq!(datas(s), want(1, 30), "client {i}");
    }
    let fetches = a.metric("sse_bus_range_fetches_total") - before;
    assert!(
        (1.0..=3.0).contains(&fetches),
        "{fetches} range reads for 300 resumes from one id"
    );
    assert!(a.metric("sse_bus_range_pages_shared_total") >= 297.0);
    publish_ok(a.addr, "?topic=t", "live");
    for s in &mut crowd {
        s.wait_events(30, LIMIT);
        assert_eq!(s.events[29].data, "live");
    }
}

/// A resume held while its range is read from Redis (the replies held back by a proxy),
/// during which 20 events of its topic arrive on a node that caches 4 per topic: its
/// cursor falls out of the cache. It is not dropped as slow: it reads on from the log and
/// gets every event once, in order, then the live ones.
#[test]
fn a_held_resume_reads_on_from_the_log_while_the_cache_moves_past_it() {
    let Some(redis) = RedisServer::start("held_reads_on", Persistence::None) else {
        return;
    };
    let proxy = Proxy::start(redis.socket());
    let a = node(&redis.url(), &[]);
    let b = node(&proxy.url(), &["--history", "4"]);
    let first = publish_xs(a.addr, 30);
    wait_applied(&b, 30.0);
    proxy.hold_ranges();
    let header = format!("Last-Event-ID: {first}");
    let mut s = Stream::open(b.addr, "/events?topic=t", &[&header]);
    // Within the bus's 2 s answer timeout: the range read must not fail meanwhile.
    for i in 30..50 {
        publish_ok(a.addr, "?topic=t", &format!("x{i}"));
    }
    let arrived = eventually(Duration::from_millis(1200), || {
        b.metric("sse_bus_events_received_total") >= 50.0
    });
    proxy.heal();
    assert!(arrived, "node B's tail did not apply the 20 events in time");
    let all = eventually(LIMIT, || {
        s.fill_nonblocking();
        s.events.len() >= 49
    });
    assert!(all, "{} events: {:?}", s.events.len(), datas(&s));
    publish_ok(a.addr, "?topic=t", "live");
    s.wait_events(50, LIMIT);
    let mut expected = want(1, 50);
    expected.push("live".into());
    assert_eq!(datas(&s), expected);
    assert!(b.metric("sse_bus_range_extensions_total") >= 1.0);
    assert_eq!(
        b.metric("sse_connections_closed_total{reason=\"slow\"}"),
        0.0
    );
}

/// Redis loses the log (FLUSHALL) while node B's tail is cut off; 20 events of the stream's
/// topic are published into the new log, which is then trimmed to its newest 15. Once the
/// tail is back, its first batch starts with a gap (a `reset` `too-old` goes to the stream
/// first) and brings 15 events of the topic to a node that caches one: the cache moves past
/// the stream again and again before anything is written. The client, which did not read
/// meanwhile and then reads (its socket took everything), is not dropped as slow: it gets
/// the `restart`, the `too-old`, every retained event once, in order, then the live ones.
#[test]
fn a_live_stream_after_a_lost_and_trimmed_log_reads_on_and_is_not_slow() {
    let Some(redis) = RedisServer::start("lost_trimmed_reads_on", Persistence::None) else {
        return;
    };
    let proxy = Proxy::start(redis.socket());
    let a = node(&redis.url(), &[]);
    let b = node(&proxy.url(), &["--history", "1"]);
    let mut s = Stream::open(b.addr, "/events?topic=t", &[]);
    publish_ok(a.addr, "?topic=t", "x0");
    s.wait_events(1, LIMIT);
    assert_eq!(datas(&s), ["x0"]);
    proxy.isolate_tail();
    redis.cmd(&["FLUSHALL"]);
    for i in 1..=20 {
        publish_ok(a.addr, "?topic=t", &format!("x{i}"));
    }
    redis.cmd(&["XTRIM", "{sse}:log", "MAXLEN", "15"]);
    proxy.heal();
    let all = eventually(LIMIT, || {
        s.fill_nonblocking();
        s.events.len() >= 18
    });
    let slow = b.metric("sse_connections_closed_total{reason=\"slow\"}");
    assert!(
        all && slow == 0.0,
        "{slow} dropped as slow; {} events: {:?}",
        s.events.len(),
        s.types_and_datas()
    );
    publish_ok(a.addr, "?topic=t", "live");
    s.wait_events(19, LIMIT);
    let got: Vec<(String, String)> = s
        .types_and_datas()
        .into_iter()
        .map(|(t, d)| (t.to_owned(), d.to_owned()))
        .collect();
    let mut expected = vec![
        ("message".to_owned(), "x0".to_owned()),
        ("reset".to_owned(), "{\"reason\":\"restart\"}".to_owned()),
        ("reset".to_owned(), "{\"reason\":\"too-old\"}".to_owned()),
    ];
    for i in 6..=20 {
        expected.push(("message".to_owned(), format!("x{i}")));
    }
    expected.push(("message".to_owned(), "live".to_owned()));
    assert_eq!(got, expected);
    assert_eq!(
        b.metric("sse_connections_closed_total{reason=\"slow\"}"),
        0.0
    );
}
