//! Cluster mode (`--redis`) end to end: real `sse-server` processes sharing one real
//! `redis-server` (each test starts its own on a unix socket in a temp dir, or behind a TCP
//! proxy that can be cut), real sockets.
//!
//! Skips (and passes) without `redis-server`, unless `SSE_REQUIRE_ECOSYSTEM=1`.

mod util;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use util::redis::{Persistence, Proxy, RedisServer};
use util::{Server, Stream, eventually, health, http, publish, status_of};

const LIMIT: Duration = Duration::from_secs(15);

/// A node of the cluster on `redis_url`, ticks off.
fn node(redis_url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--redis", redis_url, "--interval", "off"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn wait_healthy(server: &Server) {
    assert!(
        eventually(LIMIT, || health(server.addr).0 == 200),
        "node never reached Redis: {:?}",
        health(server.addr)
    );
}

/// Publishes and returns the id the cluster answered with.
fn publish_ok(addr: SocketAddr, query: &str, data: &str) -> String {
    let (status, body) = publish(addr, query, data);
    assert_eq!(status, 200, "publish {data:?}: {body}");
    body.trim().to_owned()
}

/// (id, data) of every non-reset event a stream got.
fn received(s: &Stream) -> Vec<(String, String)> {
    s.events
        .iter()
        .map(|e| (e.last_event_id.clone(), e.data.clone()))
        .collect()
}

/// The offset of a cluster id `<epoch>-<offset>`.
fn offset(id: &str) -> u64 {
    id.rsplit_once('-')
        .and_then(|(_, o)| o.parse().ok())
        .unwrap_or_else(|| panic!("not a cluster id: {id:?}"))
}

#[test]
fn two_nodes_deliver_the_same_ids_in_the_same_order() {
    let Some(redis) = RedisServer::start("two_nodes", Persistence::None) else {
        return;
    };
    let (a, b) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    wait_healthy(&a);
    wait_healthy(&b);
    let mut sa = Stream::open(a.addr, "/events?topic=t", &[]);
    let mut sb = Stream::open(b.addr, "/events?topic=t", &[]);
    let first = publish_ok(a.addr, "?topic=t", "first");
    assert!(first.contains('-'), "a cluster id: {first}");
    for s in [&mut sa, &mut sb] {
        s.wait_events(1, LIMIT);
        assert_eq!(received(s), [(first.clone(), "first".to_owned())]);
    }
    // 1,000 publishes split over both nodes.
    let mut answered = Vec::new();
    for i in 0..1000 {
        let target = if i % 2 == 0 { a.addr } else { b.addr };
        answered.push(publish_ok(target, "?topic=t", &format!("e{i}")));
    }
    sa.wait_events(1001, LIMIT);
    sb.wait_events(1001, LIMIT);
    let (ra, rb) = (received(&sa), received(&sb));
    assert_eq!(ra.len(), 1001, "node A got {}", ra.len());
    assert_eq!(ra, rb, "both nodes deliver the same events, ids and order");
    let ids: Vec<&str> = ra.iter().map(|(id, _)| id.as_str()).collect();
    assert!(
        ids.windows(2).all(|w| offset(w[0]) < offset(w[1])),
        "offsets increase"
    );
    let answered: HashSet<&str> = answered.iter().map(String::as_str).collect();
    let delivered: HashSet<&str> = ids[1..].iter().copied().collect();
    assert_eq!(answered, delivered, "every answered id is delivered once");
    let datas: HashSet<&str> = ra.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(datas.len(), 1001);
    // Every event carried its publish time through Redis: each node measured applying all
    // 1,001, half of them accepted by the other node.
    for n in [&a, &b] {
        assert_eq!(n.metric("sse_bus_apply_seconds_count"), 1001.0);
        assert_eq!(n.metric("sse_fanout_seconds_count"), 1001.0);
    }
}

#[test]
fn a_resume_on_another_node_gets_exactly_what_was_missed() {
    let Some(redis) = RedisServer::start("resume_other_node", Persistence::None) else {
        return;
    };
    let (a, b) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    wait_healthy(&a);
    wait_healthy(&b);
    let mut sa = Stream::open(a.addr, "/events?topic=t", &[]);
    for i in 0..5 {
        publish_ok(a.addr, "?topic=t", &format!("x{i}"));
        publish_ok(b.addr, "?topic=other", &format!("o{i}"));
    }
    sa.wait_events(5, LIMIT);
    let last = sa.events[2].last_event_id.clone();
    drop(sa);
    // Missed while away: x5..x7 (and events of another topic, not wanted).
    for i in 5..8 {
        publish_ok(b.addr, "?topic=t", &format!("x{i}"));
        publish_ok(a.addr, "?topic=other", &format!("o{i}"));
    }
    let header = format!("Last-Event-ID: {last}");
    let mut sb = Stream::open(b.addr, "/events?topic=t", &[&header]);
    sb.wait_events(5, LIMIT);
    publish_ok(a.addr, "?topic=t", "live");
    sb.wait_events(6, LIMIT);
    let datas: Vec<&str> = sb.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(datas, ["x3", "x4", "x5", "x6", "x7", "live"]);
}

/// A publisher-given id of the form of a cluster id (`order-17`) resumes after its event
/// on any node, as in embedded mode; it was taken for a position of another epoch and the
/// client got a `restart` reset and every retained event again.
#[test]
fn a_publisher_id_shaped_like_a_cluster_id_resumes_after_its_event() {
    let Some(redis) = RedisServer::start("custom_id_resume", Persistence::None) else {
        return;
    };
    let (a, b) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    wait_healthy(&a);
    wait_healthy(&b);
    let mut sa = Stream::open(a.addr, "/events?topic=t", &[]);
    let mut sb = Stream::open(b.addr, "/events?topic=t", &[]);
    publish_ok(a.addr, "?topic=t", "before");
    publish_ok(a.addr, "?topic=t&id=order-17", "mine");
    publish_ok(a.addr, "?topic=t", "after");
    // A node's cache holds all three once its stream has them (the publishing node's too:
    // its answer comes when Redis took the event, its tail applies it a moment later).
    sa.wait_events(3, LIMIT);
    sb.wait_events(3, LIMIT);
    for addr in [a.addr, b.addr] {
        let mut s = Stream::open(addr, "/events?topic=t", &["Last-Event-ID: order-17"]);
        s.wait_events(1, LIMIT);
        std::thread::sleep(Duration::from_millis(200));
        s.fill_nonblocking();
        let got = s.types_and_datas();
        assert_eq!(got, [("message", "after")], "on {addr}");
    }
}

#[test]
fn a_resume_older_than_the_cache_is_read_from_redis() {
    let Some(redis) = RedisServer::start("resume_from_redis", Persistence::None) else {
        return;
    };
    // Node B keeps 4 events per topic: a resume 30 events back must come from Redis.
    let (a, b) = (
        node(&redis.url(), &[]),
        node(&redis.url(), &["--history", "4"]),
    );
    wait_healthy(&a);
    wait_healthy(&b);
    let first = publish_ok(a.addr, "?topic=t", "x0");
    for i in 1..30 {
        publish_ok(a.addr, "?topic=t", &format!("x{i}"));
        publish_ok(a.addr, "?topic=other", &format!("o{i}"));
    }
    let header = format!("Last-Event-ID: {first}");
    let mut sb = Stream::open(b.addr, "/events?topic=t", &[&header]);
    assert!(eventually(LIMIT, || {
        sb.fill_nonblocking();
        sb.events.len() >= 29
    }));
    publish_ok(a.addr, "?topic=t", "live");
    sb.wait_events(30, LIMIT);
    let datas: Vec<String> = sb.events.iter().map(|e| e.data.clone()).collect();
    let want: Vec<String> = (1..30)
        .map(|i| format!("x{i}"))
        .chain(["live".to_owned()])
        .collect();
    assert_eq!(datas, want);
    assert!(b.metric("sse_bus_range_fetches_total") >= 1.0);
}

/// A resume from the epoch's start (`reset` `restart`: an id of another epoch) on a quiet
/// topic whose events a busy topic pushed out of Redis (`--redis-max-len`) but that the node
/// still caches: the client gets them from the cache before the live events, not only what
/// Redis still has of its topic (nothing). The live event is published as soon as the reset
/// arrives, so it may reach the node before the range reply and evict the oldest cached
/// event: what the cache held when the read began is what is written.
#[test]
fn a_restart_on_a_quiet_topic_gets_what_only_the_cache_still_has() {
    let Some(redis) = RedisServer::start("restart_from_cache", Persistence::None) else {
        return;
    };
    let a = node(&redis.url(), &["--history", "4", "--redis-max-len", "10"]);
    wait_healthy(&a);
    let mut busy = Stream::open(a.addr, "/events?topic=busy", &[]);
    // Six on the quiet topic: the cache keeps the newest four, so it cannot replay the
    // epoch from its start and the resume is read from Redis.
    for i in 1..=6 {
        publish_ok(a.addr, "?topic=q", &format!("q{i}"));
    }
    // `MAXLEN ~ 10` trims whole stream nodes (100 entries): 300 more push q's out. They go
    // in three rounds, each applied by the node's tail before the next: a tail starved by a
    // loaded machine would otherwise find entries trimmed before it read them (a gap, which
    // rightly moves where the cache is complete) and the test would measure the load.
    for round in 0..3 {
        for i in 0..100 {
            publish_ok(a.addr, "?topic=busy", &format!("b{}", round * 100 + i));
        }
        busy.wait_events(100 * (round + 1), LIMIT);
    }
    let mut s = Stream::open(a.addr, "/events?topic=q", &["Last-Event-ID: zz-1"]);
    s.wait_events(1, LIMIT);
    publish_ok(a.addr, "?topic=q", "live");
    assert!(eventually(LIMIT, || {
        s.fill_nonblocking();
        s.events.last().is_some_and(|e| e.data == "live")
    }));
    let got = s.types_and_datas();
    assert_eq!(
        got,
        [
            ("reset", "{\"reason\":\"restart\"}"),
            ("message", "q3"),
            ("message", "q4"),
            ("message", "q5"),
            ("message", "q6"),
            ("message", "live"),
        ]
    );
    assert!(
        a.metric("sse_bus_range_fetches_total") >= 1.0,
        "read from Redis"
    );
}

/// Publishes `n` events of `size` bytes (`<i>` then padding) to `topic`, 100 per connection
/// in one pipelined write; panics unless every one is answered 200.
fn publish_burst(addr: SocketAddr, topic: &str, n: usize, size: usize) {
    use std::io::{Read, Write};
    for start in (0..n).step_by(100) {
        let end = (start + 100).min(n);
        let burst: String = (start..end)
            .map(|i| {
                let close = if i + 1 == end { "Connection: close\r\n" } else { "" };
                let data = format!("{i:<size$}");
                format!(
                    "POST /publish?topic={topic} HTTP/1.1\r\nHost: x\r\n{close}Content-Length: {}\r\n\r\n{data}",
                    data.len()
                )
            })
            .collect();
        let mut conn = std::net::TcpStream::connect(addr).expect("connect");
        conn.set_read_timeout(Some(LIMIT)).expect("timeout");
        conn.write_all(burst.as_bytes()).expect("write");
        let mut text = String::new();
        conn.read_to_string(&mut text).expect("read to the close");
        assert_eq!(text.matches("HTTP/1.1 200 ").count(), end - start, "{text}");
    }
}

/// A resume read from Redis in pages holds one page for a client that does not read: a page
/// carries at most 256 KiB of events, and the next is asked for only once the client has
/// written the last. Before, every page was read at once into the client's queue (the whole
/// retained range, here 6 MB, for one request), and a queue past `--max-backlog` made the
/// client look slow.
#[test]
fn a_resume_read_from_redis_waits_for_the_client_page_by_page() {
    let Some(redis) = RedisServer::start("range_pages", Persistence::None) else {
        return;
    };
    let a = node(&redis.url(), &["--history", "64"]);
    wait_healthy(&a);
    let first = publish_ok(a.addr, "?topic=t", "first");
    publish_burst(a.addr, "t", 3000, 2048);
    assert!(eventually(LIMIT, || {
        a.metric("sse_bus_events_received_total") >= 3001.0
    }));
    let header = format!("Last-Event-ID: {first}");
    let mut s = Stream::open(a.addr, "/events?topic=t", &[&header]);
    // Not reading: the first page (128 events of 2 KiB) fills the socket buffers and waits.
    std::thread::sleep(Duration::from_millis(1500));
    let pages = a.metric("sse_bus_range_pages_total");
    assert!(
        (1.0..=3.0).contains(&pages),
        "{pages} pages read for a client that does not read"
    );
    // Reading: every page comes, in order, then the live events.
    let all = eventually(Duration::from_secs(30), || {
        s.fill_nonblocking();
        s.events.len() >= 3000
    });
    assert!(all, "{} events", s.events.len());
    publish_ok(a.addr, "?topic=t", "live");
    s.wait_events(3001, LIMIT);
    let datas: Vec<String> = s
        .events
        .iter()
        .map(|e| e.data.trim_end().to_owned())
        .collect();
    let want: Vec<String> = (0..3000)
        .map(|i| i.to_string())
        .chain(["live".to_owned()])
        .collect();
    assert!(
        datas == want,
        "{} events, first {:?}",
        datas.len(),
        datas.first()
    );
    let pages = a.metric("sse_bus_range_pages_total");
    assert!(pages >= 20.0, "{pages} pages: 6 MB in pages of 256 KiB");
}

/// A publish pipelined behind a request whose answer is written first is read while that
/// answer is written; its request to Redis goes out at once, not at the reactor's next
/// wake-up (before, on an otherwise idle node, it waited for some other event).
#[test]
fn a_publish_pipelined_behind_an_answer_goes_to_redis_at_once() {
    use std::io::{Read, Write};
    let Some(redis) = RedisServer::start("pipelined_behind_answer", Persistence::None) else {
        return;
    };
    let a = node(&redis.url(), &[]);
    wait_healthy(&a);
    let mut conn = std::net::TcpStream::connect(a.addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let requests = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n\
                    POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx";
    let started = Instant::now();
    conn.write_all(requests.as_bytes()).expect("write");
    let mut text = String::new();
    let read = conn.read_to_string(&mut text);
    assert!(read.is_ok(), "no close within 5 s: {text:?}");
    assert_eq!(text.matches("HTTP/1.1 200 ").count(), 2, "{text}");
    // Before, it waited for the node's next timer, about 5 s here.
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "answered after {elapsed:?}"
    );
}

#[test]
fn redis_unreachable_publish_503_streams_stay_open_health_says_so() {
    let Some(redis) = RedisServer::start("unreachable", Persistence::None) else {
        return;
    };
    let proxy = Proxy::start(redis.socket());
    let a = node(&proxy.url(), &["--keepalive", "300ms"]);
    wait_healthy(&a);
    let mut s = Stream::open(a.addr, "/events?topic=t", &[]);
    publish_ok(a.addr, "?topic=t", "before");
    s.wait_events(1, LIMIT);
    proxy.cut();
    assert!(
        eventually(LIMIT, || health(a.addr) == (503, "bus down\n".to_owned())),
        "health: {:?}",
        health(a.addr)
    );
    let raw = "POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let (head, _) = http(a.addr, raw);
    assert_eq!(status_of(&head), 503, "{head}");
    assert!(head.contains("Retry-After:"), "{head}");
    // A keep-alive publisher retries on the same connection: the 503 does not close it.
    let mut publisher = std::net::TcpStream::connect(a.addr).unwrap();
    publisher.set_read_timeout(Some(LIMIT)).unwrap();
    let keep = "POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    let answered = |publisher: &mut std::net::TcpStream, text: &mut String, n: usize| {
        let mut buf = [0u8; 4096];
        while text.matches("try again\n").count() < n {
            let got = publisher.read(&mut buf).unwrap_or(0);
            assert!(got > 0, "the connection closed after: {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..got]));
        }
    };
    let mut text = String::new();
    publisher.write_all(keep.repeat(2).as_bytes()).unwrap();
    answered(&mut publisher, &mut text, 2);
    publisher.write_all(keep.as_bytes()).unwrap();
    answered(&mut publisher, &mut text, 3);
    assert_eq!(text.matches("HTTP/1.1 503").count(), 3, "{text}");
    assert!(!text.contains("Connection: close"), "{text}");
    let comments = s.comments();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert!(s.fill(), "the stream stays open during the outage");
    }
    assert!(s.comments() > comments, "keep-alives continue");
    assert!(a.metric("sse_bus_connected") == 0.0);
    proxy.heal();
    wait_healthy(&a);
    publish_ok(a.addr, "?topic=t", "after");
    s.wait_events(2, LIMIT);
    let datas: Vec<&str> = s.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(datas, ["before", "after"]);
    assert!(a.metric("sse_bus_reconnects_total") >= 1.0);
}

#[test]
fn a_killed_and_restarted_node_misses_nothing() {
    let Some(redis) = RedisServer::start("node_restart", Persistence::None) else {
        return;
    };
    let mut a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    wait_healthy(&a);
    wait_healthy(&b);
    let mut s = Stream::open(a.addr, "/events?topic=t", &[]);
    for i in 0..3 {
        publish_ok(b.addr, "?topic=t", &format!("x{i}"));
    }
    s.wait_events(3, LIMIT);
    let last = s.events[2].last_event_id.clone();
    util::signal(a.pid(), 9);
    a.wait_exit(LIMIT).expect("node A exits on SIGKILL");
    drop(s);
    // Published on B while A is down.
    for i in 3..10 {
        publish_ok(b.addr, "?topic=t", &format!("x{i}"));
    }
    // A comes back (on another port: the harness picks a free one) and warms its cache.
    let a = node(&redis.url(), &[]);
    wait_healthy(&a);
    let header = format!("Last-Event-ID: {last}");
    let mut s = Stream::open(a.addr, "/events?topic=t", &[&header]);
    s.wait_events(7, LIMIT);
    publish_ok(b.addr, "?topic=t", "live");
    s.wait_events(8, LIMIT);
    let datas: Vec<&str> = s.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(datas, ["x3", "x4", "x5", "x6", "x7", "x8", "x9", "live"]);
}

/// Publishes `n` events on `addr` while `s` reads, retrying each publish answered 503 (the
/// outage) until it is taken; returns the data of the events taken.
fn publish_through_outage(addr: SocketAddr, from: usize, n: usize) -> Vec<String> {
    let mut taken = Vec::new();
    for i in from..from + n {
        let data = format!("y{i}");
        let deadline = Instant::now() + LIMIT;
        loop {
            let (status, body) = publish(addr, "?topic=t", &data);
            if status == 200 {
                break;
            }
            assert_eq!(status, 503, "{body}");
            assert!(Instant::now() < deadline, "publishes never recovered");
            std::thread::sleep(Duration::from_millis(50));
        }
        taken.push(data);
    }
    taken
}

#[test]
fn redis_killed_with_appendonly_loses_and_repeats_nothing() {
    let Some(mut redis) = RedisServer::start("redis_kill_aof", Persistence::AppendOnly) else {
        return;
    };
    let (a, b) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    wait_healthy(&a);
    wait_healthy(&b);
    let mut sa = Stream::open(a.addr, "/events?topic=t", &[]);
    let mut sb = Stream::open(b.addr, "/events?topic=t", &[]);
    let mut want = publish_through_outage(a.addr, 0, 10);
    sa.wait_events(10, LIMIT);
    redis.restart();
    want.extend(publish_through_outage(b.addr, 10, 10));
    for s in [&mut sa, &mut sb] {
        s.wait_events(20, LIMIT);
        let datas: Vec<String> = s.events.iter().map(|e| e.data.clone()).collect();
        assert_eq!(datas, want, "nothing lost, nothing twice, no reset");
    }
}

#[test]
fn redis_killed_without_persistence_gives_reset_restart() {
    let Some(mut redis) = RedisServer::start("redis_kill_none", Persistence::None) else {
        return;
    };
    let a = node(&redis.url(), &[]);
    wait_healthy(&a);
    let mut s = Stream::open(a.addr, "/events?topic=t", &[]);
    publish_ok(a.addr, "?topic=t", "old");
    s.wait_events(1, LIMIT);
    let old_id = s.events[0].last_event_id.clone();
    redis.restart();
    publish_through_outage(a.addr, 0, 1);
    s.wait_events(3, LIMIT);
    let kinds = s.types_and_datas();
    assert_eq!(
        kinds,
        [
            ("message", "old"),
            ("reset", "{\"reason\":\"restart\"}"),
            ("message", "y0")
        ]
    );
    let new_epoch = s.events[1].last_event_id.clone();
    assert!(
        new_epoch.ends_with("-0") && new_epoch != old_id,
        "{new_epoch}"
    );
    // A client resuming with an id of the lost epoch: restart, then the new epoch's events.
    let header = format!("Last-Event-ID: {old_id}");
    let mut late = Stream::open(a.addr, "/events?topic=t", &[&header]);
    late.wait_events(2, LIMIT);
    assert_eq!(late.events[0].event_type, "reset");
    assert_eq!(late.events[0].data, "{\"reason\":\"restart\"}");
    assert_eq!(late.events[1].data, "y0");
}

#[test]
fn client_kill_reconnects_and_catches_up_without_gap_or_duplicate() {
    let Some(redis) = RedisServer::start("client_kill", Persistence::None) else {
        return;
    };
    let (a, b) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    wait_healthy(&a);
    wait_healthy(&b);
    let mut sa = Stream::open(a.addr, "/events?topic=t", &[]);
    let mut want = Vec::new();
    for round in 0..3 {
        want.extend(publish_through_outage(b.addr, round * 10, 10));
        redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
    }
    want.extend(publish_through_outage(b.addr, 30, 5));
    sa.wait_events(35, LIMIT);
    let datas: Vec<String> = sa.events.iter().map(|e| e.data.clone()).collect();
    assert_eq!(datas, want);
    assert_eq!(a.metric("sse_bus_gaps_total"), 0.0);
}

/// Starts `sse-server --listen ADDR <args>`; returns the child and its first stdout line.
fn spawn_on(addr: &str, args: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sse-server"))
        .args(["--listen", addr, "--interval", "off"])
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sse-server");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    (child, line)
}

#[test]
fn reuse_port_lets_two_processes_share_one_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (mut first, line) = spawn_on(&addr, &["--reuse-port"]);
    assert!(line.contains(&addr), "{line:?}");
    let (mut second, line) = spawn_on(&addr, &["--reuse-port"]);
    assert!(
        line.contains(&addr),
        "the second process shares the port: {line:?}"
    );
    // Without the flag the port is taken: the server cannot start (exit status 1).
    let (mut third, line) = spawn_on(&addr, &[]);
    assert_eq!(line, "");
    assert_eq!(third.wait().expect("exit").code(), Some(1));
    let target: SocketAddr = addr.parse().unwrap();
    assert_eq!(health(target).0, 200);
    for child in [&mut first, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn stdin_lines_go_through_the_shared_log() {
    let Some(redis) = RedisServer::start("stdin", Persistence::None) else {
        return;
    };
    let b = node(&redis.url(), &[]);
    let mut a = Server::start_with(
        &["--redis", &redis.url(), "--interval", "off", "--stdin"],
        std::process::Stdio::piped(),
    );
    wait_healthy(&a);
    wait_healthy(&b);
    let mut s = Stream::open(b.addr, "/events", &[]);
    {
        use std::io::Write;
        let stdin = a.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"from stdin\n").expect("write stdin");
        stdin.flush().expect("flush");
    }
    s.wait_events(1, LIMIT);
    assert_eq!(s.events.len(), 1);
    assert_eq!(s.events[0].data, "from stdin");
    assert!(s.events[0].last_event_id.ends_with("-1"));
}

#[test]
fn bad_cluster_flags_exit_2_with_a_message() {
    for args in [
        &["--redis", "localhost:6379"][..],
        &["--redis", "redis://h", "--redis-prefix", "a b"],
        &["--redis-max-len", "0"],
        &["--log-max-len", "0"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sse-server"))
            .args(args)
            .output()
            .expect("run sse-server");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("redis") || err.contains("max-len"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_pipelined_burst_of_publishes_is_answered_in_order_and_delivered_whole() {
    use std::io::{Read, Write};
    let Some(redis) = RedisServer::start("pipelined_burst", Persistence::None) else {
        return;
    };
    let (a, b) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    wait_healthy(&a);
    wait_healthy(&b);
    let mut sa = Stream::open(a.addr, "/events?topic=t", &[]);
    let mut sb = Stream::open(b.addr, "/events?topic=t", &[]);
    // 100 publishes in one write on one connection; the last asks to close.
    let burst: String = (0..100)
        .map(|i| {
            let close = if i == 99 { "Connection: close\r\n" } else { "" };
            let data = format!("p{i}");
            format!(
                "POST /publish?topic=t HTTP/1.1\r\nHost: x\r\n{close}Content-Length: {}\r\n\r\n{data}",
                data.len()
            )
        })
        .collect();
    let mut conn = std::net::TcpStream::connect(a.addr).expect("connect");
    conn.set_read_timeout(Some(LIMIT)).expect("timeout");
    conn.write_all(burst.as_bytes()).expect("write");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read to the close");
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 100, "{text}");
    let ids: Vec<String> = answers
        .iter()
        .map(|a| {
            assert!(a.starts_with("200"), "{a}");
            a.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_owned()
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| offset(&w[0]) < offset(&w[1])),
        "answers in request order: {ids:?}"
    );
    for s in [&mut sa, &mut sb] {
        s.wait_events(100, LIMIT);
        let got = received(s);
        let want: Vec<(String, String)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), format!("p{i}")))
            .collect();
        assert_eq!(got, want, "every subscriber gets all 100, in order");
    }
}

/// Under `--allow-origin`, pipelined publishes from two origins on one connection: each
/// answer, written once the shared log took it, carries its own request's origin (it used to
/// carry the origin of the latest request on the connection).
#[test]
fn pipelined_publishes_are_answered_with_their_own_origin() {
    use std::io::{Read, Write};
    let Some(redis) = RedisServer::start("publish_origin", Persistence::None) else {
        return;
    };
    let a = node(
        &redis.url(),
        &[
            "--allow-origin",
            "https://a.example",
            "--allow-origin",
            "https://b.example",
        ],
    );
    wait_healthy(&a);
    let from = |origin: &str, close: &str| {
        format!(
            "POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n{close}Content-Length: 1\r\n\r\nx"
        )
    };
    let burst = from("https://a.example", "") + &from("https://b.example", "Connection: close\r\n");
    let mut conn = std::net::TcpStream::connect(a.addr).expect("connect");
    conn.set_read_timeout(Some(LIMIT)).expect("timeout");
    conn.write_all(burst.as_bytes()).expect("write");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read to the close");
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 2, "{text}");
    assert!(answers[0].starts_with("200"), "{text}");
    assert!(
        answers[0].contains("Access-Control-Allow-Origin: https://a.example\r\n"),
        "{text}"
    );
    assert!(
        answers[1].contains("Access-Control-Allow-Origin: https://b.example\r\n"),
        "{text}"
    );
}

/// An entry written into the stream by anyone but a node's publish (another deployment on
/// the prefix, `redis-cli`, a buggy writer) with fields that would forge SSE lines (an event
/// name or id with LF, a lone CR) reaches no subscriber: each is refused, counted and
/// logged, and the events around it arrive as usual.
#[test]
fn entries_with_forged_fields_written_into_redis_reach_no_subscriber() {
    let Some(redis) = RedisServer::start("forged_entries", Persistence::None) else {
        return;
    };
    let (a, b) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    wait_healthy(&a);
    wait_healthy(&b);
    let mut sa = Stream::open(a.addr, "/events", &[]);
    let mut sb = Stream::open(b.addr, "/events", &[]);
    let first = publish_ok(a.addr, "", "first");
    let epoch = first
        .rsplit_once('-')
        .map(|(e, _)| e.to_owned())
        .expect("id");
    let forged = [
        ("v", "evil\ndata: INJECTED-VIA-EVENT\nid: forged-1"),
        ("i", "c1\nevent: pwn\ndata: INJECTED-VIA-ID"),
        ("v", "lone\rcr"),
    ];
    for (i, (field, value)) in forged.iter().enumerate() {
        let offset = (i + 2).to_string();
        // Entry and counter together, as a writer running its own copy of the publish
        // script would (apart, a node could see the counter behind the stream).
        redis.cmd(&[
            "EVAL",
            "redis.call('XADD', KEYS[1], ARGV[1] .. '-0', 'e', ARGV[2], 't', '', ARGV[3], \
             ARGV[4], 'd', 'payload') redis.call('HSET', KEYS[2], 'o', ARGV[1])",
            "2",
            "{sse}:log",
            "{sse}:meta",
            &offset,
            &epoch,
            field,
            value,
        ]);
    }
    let last = publish_ok(b.addr, "", "last");
    assert_eq!(offset(&last), 5, "the forged entries took offsets 2..=4");
    for (s, server) in [(&mut sa, &a), (&mut sb, &b)] {
        s.wait_events(2, LIMIT);
        std::thread::sleep(Duration::from_millis(200));
        s.fill_nonblocking();
        assert_eq!(
            received(s),
            [
                (first.clone(), "first".into()),
                (last.clone(), "last".into())
            ]
        );
        assert!(
            s.events.iter().all(|e| e.event_type == "message"),
            "no forged event type"
        );
        assert_eq!(server.metric("sse_bus_entries_refused_total"), 3.0);
    }
    // A resume read from Redis skips them too.
    let mut r = Stream::open(a.addr, "/events", &[&format!("Last-Event-ID: {epoch}-0")]);
    r.wait_events(2, LIMIT);
    std::thread::sleep(Duration::from_millis(200));
    r.fill_nonblocking();
    assert_eq!(
        received(&r),
        [(first.clone(), "first".into()), (last, "last".into())]
    );
}

/// A node whose tail is cut off (its replies held back) while its command connection still
/// reaches Redis: publishes are answered, and a client resuming on that node from an id it
/// answered itself waits for the tail, then gets exactly what followed: no `unknown-id`,
/// and no event it already had.
#[test]
fn a_resume_from_an_acknowledged_id_during_a_tail_outage_repeats_nothing() {
    let Some(redis) = RedisServer::start("tail_outage_resume", Persistence::None) else {
        return;
    };
    let proxy = Proxy::start(redis.socket());
    let a = node(&proxy.url(), &[]);
    wait_healthy(&a);
    // A first publish opens the command connection before the tail is cut off.
    let first = publish_ok(a.addr, "?topic=t", "e0");
    let epoch = first
        .rsplit_once('-')
        .map(|(e, _)| e.to_owned())
        .expect("id");
    proxy.isolate_tail();
    // Answered while the tail's replies are held (before its read times out)…
    let ids: Vec<String> = (1..=50)
        .map(|i| publish_ok(a.addr, "?topic=t", &format!("e{i}")))
        .collect();
    // …then the tail gives up on Redis, and the client resumes.
    assert!(
        eventually(LIMIT, || health(a.addr).0 == 503),
        "the tail's outage shows on /health"
    );
    assert_eq!(offset(&ids[10]), 12);
    let mut s = Stream::open(
        a.addr,
        "/events?topic=t",
        &[&format!("Last-Event-ID: {}", ids[10])],
    );
    std::thread::sleep(Duration::from_millis(300));
    s.fill_nonblocking();
    assert!(
        s.events.is_empty(),
        "held, not unknown-id: {:?}",
        received(&s)
    );
    proxy.heal();
    s.wait_events(39, LIMIT);
    std::thread::sleep(Duration::from_millis(300));
    s.fill_nonblocking();
    let expected: Vec<(String, String)> = ids[11..]
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("e{}", i + 12)))
        .collect();
    assert_eq!(received(&s), expected, "exactly what followed, once");
    assert!(s.events.iter().all(|e| e.event_type == "message"));
    assert!(ids.iter().all(|id| id.starts_with(&epoch)));
}

/// Entries no node wrote, at the top of the stream, neither delete the log nor block it: a
/// stray `XADD … *` (an id far above every offset) and an `XADD <o+1>-1` (just above the
/// counter) are moved to `{prefix}:foreign` and counted; the epoch stays, the retained
/// events stay, publishes go on being answered and no stream gets a reset.
#[test]
fn stray_entries_neither_delete_the_log_nor_block_publishing() {
    let Some(redis) = RedisServer::start("stray_entries", Persistence::None) else {
        return;
    };
    let (a, b) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    wait_healthy(&a);
    wait_healthy(&b);
    let mut sa = Stream::open(a.addr, "/events", &[]);
    let mut sb = Stream::open(b.addr, "/events", &[]);
    let mut ids: Vec<String> = (0..20)
        .map(|i| publish_ok(a.addr, "", &format!("e{i}")))
        .collect();
    let epoch = ids[0]
        .rsplit_once('-')
        .map(|(e, _)| e.to_owned())
        .expect("id");
    for s in [&mut sa, &mut sb] {
        s.wait_events(20, LIMIT);
    }
    redis.cmd(&["XADD", "{sse}:log", "*", "note", "x"]);
    // Give the tails time to meet it before anyone publishes.
    std::thread::sleep(Duration::from_millis(500));
    ids.push(publish_ok(b.addr, "", "after the stray entry"));
    redis.cmd(&["XADD", "{sse}:log", "21-1", "note", "foreign"]);
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..5 {
        ids.push(publish_ok(
            a.addr,
            "",
            &format!("after the foreign entry {i}"),
        ));
    }
    assert!(
        ids.iter().all(|id| id.starts_with(&format!("{epoch}-"))),
        "{ids:?}"
    );
    assert_eq!(
        ids.iter().map(|id| offset(id)).collect::<Vec<_>>(),
        (1..=26).collect::<Vec<_>>(),
        "offsets without holes"
    );
    for (s, server) in [(&mut sa, &a), (&mut sb, &b)] {
        s.wait_events(26, LIMIT);
        std::thread::sleep(Duration::from_millis(200));
        s.fill_nonblocking();
        let got: Vec<String> = s.events.iter().map(|e| e.last_event_id.clone()).collect();
        assert_eq!(got, ids, "no reset, nothing lost");
        assert_eq!(health(server.addr).0, 200);
    }
    let counted =
        a.metric("sse_bus_foreign_entries_total") + b.metric("sse_bus_foreign_entries_total");
    assert_eq!(counted, 2.0, "each counted once, by the node that moved it");
    let ::redis::Value::Int(len) = redis.cmd(&["XLEN", "{sse}:log"]) else {
        panic!("XLEN")
    };
    assert_eq!(
        len, 26,
        "every retained event is still there, the stray ones moved"
    );
    let ::redis::Value::Int(moved) = redis.cmd(&["XLEN", "{sse}:foreign"]) else {
        panic!("XLEN")
    };
    assert_eq!(moved, 2, "both stray entries kept for the operator");
}

/// A log that refuses every publish for a reason that does not pass by itself (here Redis
/// out of memory) turns `/health` to `503 publish refused` after three refusals in a row,
/// and back to `200 ok` with the next publish it takes.
#[test]
fn health_reports_a_log_that_refuses_every_publish() {
    let Some(redis) = RedisServer::start("refusing_log", Persistence::None) else {
        return;
    };
    let a = node(&redis.url(), &[]);
    wait_healthy(&a);
    publish_ok(a.addr, "", "first");
    redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    for _ in 0..3 {
        let (status, body) = publish(a.addr, "", "refused");
        assert_eq!(status, 503, "{body}");
    }
    let (status, body) = health(a.addr);
    assert_eq!((status, body.as_str()), (503, "publish refused\n"));
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    publish_ok(a.addr, "", "taken again");
    assert_eq!(health(a.addr), (200, "ok\n".to_owned()));
}
