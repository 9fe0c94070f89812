//! The cluster bus (`sse_server::bus`) against a real `redis-server` started by each test
//! on a unix socket in a temp dir (or through a TCP proxy that can be cut): one order and
//! one set of ids for every node, and the outage cases: Redis killed with and without
//! persistence, connections killed, Redis unreachable, a trim during an outage, a flush.
//!
//! Skips (and passes) without `redis-server`, unless `SSE_REQUIRE_ECOSYSTEM=1`.

mod util;

use sse_server::bus::{
    BusConfig, BusEvent, BusHandle, BusReply, BusRequest, ClusterId, Delivery, FetchRange, Publish,
    PublishFailure, RangeReply, classify,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use util::redis::{Persistence, Proxy, RedisServer};

const LIMIT: Duration = Duration::from_secs(15);

fn config(url: &str) -> BusConfig {
    let mut config = BusConfig::redis(url);
    config.block = Duration::from_millis(200);
    config.io_timeout = Duration::from_secs(1);
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(300);
    config
}

/// One bus handle and everything it reported, checked the way the core will check it.
struct Node {
    bus: BusHandle,
    /// Every event received, in order (duplicates included, so a test sees them).
    events: Vec<BusEvent>,
    last_offset: u64,
    duplicates: usize,
    gaps: Vec<(u64, u64)>,
    published: HashMap<u64, Result<ClusterId, PublishFailure>>,
    ranges: HashMap<u64, RangeReply>,
    connects: usize,
    /// `after_offset` of every `Connected`.
    after_offsets: Vec<u64>,
    disconnects: usize,
    epochs: Vec<(String, String)>,
    epoch: Option<String>,
    next_token: u64,
    /// Entries no node wrote, as the bus reported them.
    foreign: u64,
}

impl Node {
    fn start(url: &str) -> Node {
        Node::start_with(config(url), None)
    }

    fn start_with(config: BusConfig, start: Option<ClusterId>) -> Node {
        let last_offset = start.as_ref().map_or(0, |id| id.offset);
        let bus = BusHandle::start(config, start, Arc::new(|| {})).expect("start bus");
        Node {
            bus,
            events: Vec::new(),
            last_offset,
            duplicates: 0,
            gaps: Vec::new(),
            published: HashMap::new(),
            ranges: HashMap::new(),
            connects: 0,
            after_offsets: Vec::new(),
            disconnects: 0,
            epochs: Vec::new(),
            epoch: None,
            next_token: 1,
            foreign: 0,
        }
    }

    fn apply(&mut self, reply: BusReply) {
        match reply {
            BusReply::Connected {
                epoch,
                after_offset,
                ..
            } => {
                self.connects += 1;
                self.epoch = Some(epoch);
                if self.events.is_empty() {
                    self.last_offset = after_offset;
                }
                self.after_offsets.push(after_offset);
            }
            BusReply::Disconnected { .. } => self.disconnects += 1,
            BusReply::EpochChanged { previous, epoch } => {
                self.epochs.push((previous, epoch.clone()));
                self.epoch = Some(epoch);
                self.last_offset = 0;
            }
            BusReply::Events { events, .. } => {
                for event in events {
                    match classify(self.last_offset, event.offset) {
                        Delivery::Duplicate => self.duplicates += 1,
                        Delivery::Next => {}
                        Delivery::Gap {
                            missing_from,
                            missing_to,
                        } => self.gaps.push((missing_from, missing_to)),
                    }
                    self.last_offset = self.last_offset.max(event.offset);
                    self.events.push(event);
                }
            }
            BusReply::Published { token, id } => {
                self.published.insert(token, Ok(id));
            }
            BusReply::PublishFailed { token, reason } => {
                self.published.insert(token, Err(reason));
            }
            BusReply::Range(range) => {
                self.ranges.insert(range.token, range);
            }
            BusReply::RangeFailed { token, reason } => panic!("range {token} failed: {reason}"),
            // This node sends no head probe (the log contract covers them).
            BusReply::Head { token, .. } | BusReply::HeadFailed { token, .. } => {
                panic!("an answer to a head probe {token} never sent")
            }
            BusReply::Foreign { entries } => self.foreign += entries,
        }
    }

    /// Applies replies until `done` holds; false if `limit` passes first.
    fn until(&mut self, limit: Duration, done: impl Fn(&Node) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Some(reply) = self.bus.recv_timeout(left.min(Duration::from_millis(50))) {
                self.apply(reply);
            }
        }
        true
    }

    fn submit(&mut self, request: BusRequest) {
        if let Err(reply) = self.bus.submit(request) {
            self.apply(reply);
        }
    }

    /// Submits one publish; returns its token.
    fn publish(&mut self, topic: &str, data: &str) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.submit(BusRequest::Publish(Publish {
            token,
            topic: topic.into(),
            event: None,
            custom_id: None,
            data: data.into(),
            accepted_ms: 1_700_000_000_000,
        }));
        token
    }

    /// Publishes and waits for the answer, retrying failures (Redis coming back) within
    /// `LIMIT`. Returns the id.
    fn publish_surely(&mut self, topic: &str, data: &str) -> ClusterId {
        let deadline = Instant::now() + LIMIT;
        while Instant::now() < deadline {
            let token = self.publish(topic, data);
            assert!(self.until(LIMIT, |n| n.published.contains_key(&token)));
            match &self.published[&token] {
                Ok(id) => return id.clone(),
                Err(_) => std::thread::sleep(Duration::from_millis(30)),
            }
        }
        panic!("publish of {data:?} never succeeded");
    }

    fn connected(&mut self) {
        assert!(self.until(LIMIT, |n| n.connects > 0), "bus never connected");
    }

    fn offsets(&self) -> Vec<u64> {
        self.events.iter().map(|e| e.offset).collect()
    }

    fn assert_exact(&self) {
        assert_eq!(self.duplicates, 0, "duplicates delivered");
        assert!(self.gaps.is_empty(), "gaps: {:?}", self.gaps);
    }
}

fn offsets(range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    range.collect()
}

#[test]
fn two_nodes_publishing_concurrently_see_one_order_and_the_same_ids() {
    let Some(redis) = RedisServer::start("bus two nodes", Persistence::None) else {
        return;
    };
    const EACH: u64 = 150;
    let run = |url: String, name: &'static str| {
        std::thread::spawn(move || {
            let mut node = Node::start(&url);
            node.connected();
            let mut tokens = Vec::new();
            for i in 0..EACH {
                let topic = if i % 3 == 0 { "" } else { "orders" };
                tokens.push(node.publish(topic, &format!("{name}-{i}")));
            }
            assert!(
                node.until(LIMIT, |n| n.events.len() as u64 >= 2 * EACH
                    && n.published.len() as u64 == EACH),
                "{name} saw {} events",
                node.events.len()
            );
            let ids: Vec<ClusterId> = tokens
                .iter()
                .map(|t| node.published[t].clone().expect("publish accepted"))
                .collect();
            node.assert_exact();
            (node.events, ids)
        })
    };
    let a = run(redis.url(), "a");
    let b = run(redis.unix_url(), "b");
    let (events_a, ids_a) = a.join().unwrap();
    let (events_b, ids_b) = b.join().unwrap();

    assert_eq!(
        events_a, events_b,
        "both nodes see the same events in the same order"
    );
    let got: Vec<u64> = events_a.iter().map(|e| e.offset).collect();
    assert_eq!(got, offsets(1..=2 * EACH));
    let epoch = &events_a[0].id.epoch;
    assert!(
        events_a
            .iter()
            .all(|e| &e.id.epoch == epoch && e.id.offset == e.offset)
    );
    // Every answered id names exactly the event with that publisher's data.
    for (name, ids) in [("a", ids_a), ("b", ids_b)] {
        for (i, id) in ids.iter().enumerate() {
            let event = &events_a[id.offset as usize - 1];
            assert_eq!(&event.id, id);
            assert_eq!(event.data, format!("{name}-{i}"));
        }
    }
    // Each publisher's own events keep their submission order.
    let mine: Vec<&str> = events_a
        .iter()
        .filter(|e| e.data.starts_with("a-"))
        .map(|e| e.data.as_str())
        .collect();
    let expected: Vec<String> = (0..EACH).map(|i| format!("a-{i}")).collect();
    assert_eq!(mine, expected);
}

#[test]
fn ids_survive_a_node_restart_and_a_node_resumes_after_its_last_id() {
    let Some(redis) = RedisServer::start("bus restart", Persistence::None) else {
        return;
    };
    let mut first = Node::start(&redis.url());
    first.connected();
    let ids: Vec<ClusterId> = (0..5)
        .map(|i| first.publish_surely("t", &format!("e{i}")))
        .collect();
    assert!(first.until(LIMIT, |n| n.events.len() == 5));
    first.bus.shutdown();

    // A new node warms its cache with the retained events: the same ids.
    let mut second = Node::start(&redis.url());
    assert!(second.until(LIMIT, |n| n.events.len() == 5));
    let got: Vec<ClusterId> = second.events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, ids);
    let next = second.publish_surely("t", "e5");
    assert_eq!(next.offset, 6);
    assert_eq!(next.epoch, ids[0].epoch);

    // A node that knows where it was continues right after that id.
    let mut third = Node::start_with(config(&redis.url()), Some(ids[2].clone()));
    assert!(third.until(LIMIT, |n| n.events.len() == 3));
    assert_eq!(third.offsets(), vec![4, 5, 6]);
    assert_eq!(third.after_offsets[0], 3);
    third.assert_exact();

    // A node with a small warm-up reads only the newest events, and says where it starts.
    let mut warm = config(&redis.url());
    warm.warm_events = 2;
    let mut fourth = Node::start_with(warm, None);
    assert!(fourth.until(LIMIT, |n| n.events.len() == 2));
    assert_eq!(fourth.after_offsets[0], 4);
    assert_eq!(fourth.offsets(), vec![5, 6]);
    fourth.assert_exact();
}

#[test]
fn redis_killed_with_appendonly_resumes_without_gap_or_duplicate() {
    let Some(mut redis) = RedisServer::start("bus sigkill aof", Persistence::AppendOnly) else {
        return;
    };
    let mut tail = Node::start(&redis.url());
    let mut publisher = Node::start(&redis.url());
    tail.connected();
    for i in 0..50 {
        publisher.publish_surely("", &format!("before-{i}"));
    }
    assert!(tail.until(LIMIT, |n| n.events.len() == 50));
    let epoch = tail.epoch.clone();

    redis.kill();
    assert!(
        tail.until(LIMIT, |n| n.disconnects > 0),
        "outage not reported"
    );
    // While Redis is down a publish fails, and at once rather than hanging.
    let token = publisher.publish("", "while-down");
    let asked = Instant::now();
    assert!(publisher.until(LIMIT, |n| n.published.contains_key(&token)));
    assert!(
        publisher.published[&token].is_err(),
        "a publish while down must fail"
    );
    eprintln!("publish failure answered in {:?}", asked.elapsed());

    redis.restart();
    for i in 0..50 {
        publisher.publish_surely("", &format!("after-{i}"));
    }
    assert!(tail.until(LIMIT, |n| n.events.len() >= 100));
    assert!(!tail.until(Duration::from_millis(500), |n| n.events.len() > 100));
    assert_eq!(tail.offsets(), offsets(1..=100));
    tail.assert_exact();
    assert!(tail.epochs.is_empty(), "same log after an AOF restart");
    assert_eq!(tail.epoch, epoch);
    assert!(tail.connects >= 2);
    assert_eq!(tail.events[50].data, "after-0");
}

#[test]
fn redis_restarted_without_persistence_is_an_epoch_change() {
    let Some(mut redis) = RedisServer::start("bus sigkill no persistence", Persistence::None)
    else {
        return;
    };
    let mut tail = Node::start(&redis.url());
    tail.connected();
    let old = tail.publish_surely("", "old");
    assert!(tail.until(LIMIT, |n| n.events.len() == 1));

    redis.restart();
    assert!(
        tail.until(LIMIT, |n| !n.epochs.is_empty()),
        "epoch change not reported"
    );
    let (previous, epoch) = tail.epochs[0].clone();
    assert_eq!(previous, old.epoch);
    assert_ne!(epoch, old.epoch);
    let new = tail.publish_surely("", "new");
    assert_eq!(new, ClusterId { epoch, offset: 1 });
    assert!(tail.until(LIMIT, |n| n.events.len() == 2));
    assert_eq!(tail.events[1].id, new);
    assert!(tail.gaps.is_empty() && tail.duplicates == 0);
}

#[test]
fn a_flush_while_connected_is_an_epoch_change() {
    let Some(redis) = RedisServer::start("bus flush", Persistence::None) else {
        return;
    };
    let mut tail = Node::start(&redis.url());
    let mut publisher = Node::start(&redis.url());
    tail.connected();
    for i in 0..5 {
        publisher.publish_surely("", &format!("old-{i}"));
    }
    assert!(tail.until(LIMIT, |n| n.events.len() == 5));
    redis.cmd(&["FLUSHALL"]);
    // Two events of the new log: offsets 1 and 2, below the tail's cursor 5.
    let fresh = [
        publisher.publish_surely("", "new-0"),
        publisher.publish_surely("", "new-1"),
    ];
    assert_eq!(fresh[0].offset, 1);
    assert!(
        tail.until(LIMIT, |n| n.events.len() == 7),
        "got {:?}",
        tail.offsets()
    );
    assert_eq!(tail.epochs.len(), 1);
    assert_eq!(tail.after_offsets.last(), Some(&0));
    assert_eq!(tail.events[5].id, fresh[0]);
    assert_eq!(tail.events[6].id, fresh[1]);
}

/// Replaces the log with what an older copy of it holds: events 1..=head of `epoch`.
fn rewind(redis: &RedisServer, epoch: &str, head: u64) {
    redis.cmd(&["DEL", "{sse}:log"]);
    for offset in 1..=head {
        let id = format!("{offset}-0");
        redis.cmd(&[
            "XADD",
            "{sse}:log",
            &id,
            "e",
            epoch,
            "t",
            "",
            "d",
            "old copy",
        ]);
    }
    redis.cmd(&["HSET", "{sse}:meta", "o", &head.to_string()]);
}

#[test]
fn a_log_that_went_back_in_time_gets_a_new_epoch() {
    let Some(redis) = RedisServer::start("bus log rewound", Persistence::None) else {
        return;
    };
    let mut tail = Node::start(&redis.url());
    tail.connected();
    for i in 0..5 {
        tail.publish_surely("", &format!("e{i}"));
    }
    assert!(tail.until(LIMIT, |n| n.events.len() == 5));
    let old = tail.epoch.clone().unwrap();
    // Redis comes back with an older copy of the same epoch: head 2, entries 3..5 lost.
    rewind(&redis, &old, 2);
    assert!(
        tail.until(LIMIT, |n| !n.epochs.is_empty()),
        "rewind not detected"
    );
    assert_eq!(tail.epochs[0].0, old);
    // New publishes do not reuse the ids old-3, old-4, old-5 already delivered.
    let new = tail.publish_surely("", "after");
    assert_ne!(new.epoch, old);
    assert_eq!(new.offset, 1);
    assert!(tail.until(LIMIT, |n| n.events.len() == 6));
    assert_eq!(tail.events[5].id, new);
}

#[test]
fn a_publish_after_redis_came_back_older_does_not_reuse_ids() {
    let Some(redis) = RedisServer::start("bus rewound publish", Persistence::None) else {
        return;
    };
    let proxy = Proxy::start(redis.socket());
    // A slow reconnecting tail (1 to 2 s), so the command thread reaches Redis first.
    let mut slow = config(&proxy.url());
    slow.backoff_min = Duration::from_secs(2);
    slow.backoff_max = Duration::from_secs(2);
    let mut node = Node::start_with(slow, None);
    node.connected();
    for i in 0..5 {
        node.publish_surely("", &format!("e{i}"));
    }
    assert!(node.until(LIMIT, |n| n.events.len() == 5));
    let old = node.epoch.clone().unwrap();
    proxy.cut();
    assert!(node.until(LIMIT, |n| n.disconnects > 0));
    // Redis now holds an older copy of the log (head 2).
    rewind(&redis, &old, 2);
    proxy.heal();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        node.connects, 1,
        "the tail came back first: the test proves nothing"
    );
    let token = node.publish("", "after");
    assert!(node.until(LIMIT, |n| n.published.contains_key(&token)));
    let new = node.published[&token].clone().expect("publish after heal");
    assert_ne!(new.epoch, old, "a publish reused the id {new}");
    assert_eq!(new.offset, 1);
}

#[test]
fn killed_connections_reconnect_and_catch_up_exactly() {
    let Some(redis) = RedisServer::start("bus client kill", Persistence::None) else {
        return;
    };
    let mut tail = Node::start(&redis.url());
    tail.connected();
    let mut publisher = Node::start(&redis.url());
    for i in 0..300 {
        if i % 50 == 25 {
            // Every connection of both nodes (not this one) dies mid-stream.
            redis.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
        }
        publisher.publish_surely("", &format!("e{i}"));
    }
    let head = match redis.cmd(&["HGET", "{sse}:meta", "o"]) {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap().parse::<u64>().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(head >= 300);
    assert!(tail.until(LIMIT, |n| n.last_offset == head && n.disconnects > 0));
    assert_eq!(tail.offsets(), offsets(1..=head));
    tail.assert_exact();
    assert!(tail.disconnects > 0, "the kills did not reach the tail");
    assert!(tail.connects > 1);
}

#[test]
fn a_command_connection_killed_while_idle_is_replaced_before_use() {
    let Some(redis) = RedisServer::start("bus idle kill", Persistence::None) else {
        return;
    };
    let mut node = Node::start(&redis.url());
    node.connected();
    node.publish_surely("", "warm");
    // Idle longer than `block` (200 ms here), killed meanwhile: the next publish must not
    // be the one that finds out (it would fail with an unknown outcome).
    std::thread::sleep(Duration::from_millis(250));
    redis.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    std::thread::sleep(Duration::from_millis(50));
    let token = node.publish("", "after idle");
    assert!(node.until(LIMIT, |n| n.published.contains_key(&token)));
    assert_eq!(
        node.published[&token].as_ref().map(|id| id.offset),
        Ok(2),
        "{:?}",
        node.published[&token]
    );
}

#[test]
fn unreachable_redis_fails_publishes_fast_and_reports_the_bus_down() {
    // No Redis at all: a TCP port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut node = Node::start(&format!("redis://127.0.0.1:{port}/0"));
    assert!(node.until(LIMIT, |n| n.disconnects == 1));
    let tokens: Vec<u64> = (0..20).map(|i| node.publish("", &format!("{i}"))).collect();
    assert!(node.until(LIMIT, |n| {
        tokens.iter().all(|t| n.published.contains_key(t))
    }));
    for token in tokens {
        assert!(
            matches!(node.published[&token], Err(PublishFailure::Unavailable(_))),
            "{:?}",
            node.published[&token]
        );
    }
    // Retries keep failing quietly: one Disconnected per outage, not per attempt.
    assert!(!node.until(Duration::from_millis(500), |n| n.disconnects > 1));
    assert_eq!(node.connects, 0);
}

#[test]
fn a_partitioned_node_fails_publishes_and_detects_a_trim_as_a_gap() {
    let Some(redis) = RedisServer::start("bus trim during outage", Persistence::None) else {
        return;
    };
    let proxy = Proxy::start(redis.socket());
    let mut cut_off = Node::start(&proxy.url());
    let mut other = Node::start(&redis.url());
    cut_off.connected();
    for i in 0..10 {
        other.publish_surely("", &format!("e{i}"));
    }
    assert!(cut_off.until(LIMIT, |n| n.events.len() == 10));
    // Warm the partitioned node's command connection, then cut.
    cut_off.publish_surely("", "e10");
    assert!(cut_off.until(LIMIT, |n| n.events.len() == 11));

    proxy.cut();
    assert!(cut_off.until(LIMIT, |n| n.disconnects > 0));
    let token = cut_off.publish("", "during cut");
    assert!(cut_off.until(LIMIT, |n| n.published.contains_key(&token)));
    assert!(cut_off.published[&token].is_err());
    for i in 0..300 {
        other.publish("", &format!("x{i}"));
    }
    assert!(other.until(LIMIT, |n| n.published.len() >= 310));
    // Exact trim: keep the newest 50 (offsets 262..=311).
    redis.cmd(&["XTRIM", "{sse}:log", "MAXLEN", "50"]);

    proxy.heal();
    assert!(cut_off.until(LIMIT, |n| n.last_offset == 311));
    assert_eq!(cut_off.gaps, vec![(12, 261)]);
    assert_eq!(cut_off.duplicates, 0);
    let after: Vec<u64> = cut_off.offsets()[11..].to_vec();
    assert_eq!(after, offsets(262..=311));
}

#[test]
fn range_fetch_returns_exactly_the_events_after_an_offset() {
    let Some(redis) = RedisServer::start("bus range", Persistence::None) else {
        return;
    };
    let mut node = Node::start(&redis.url());
    node.connected();
    for i in 1..=30 {
        let topic = if i % 2 == 0 { "even" } else { "odd" };
        node.publish_surely(topic, &format!("{i}"));
    }
    let fetch_bytes =
        |node: &mut Node, after, through, topics: Option<&[&str]>, limit, max_bytes| {
            let token = node.next_token;
            node.next_token += 1;
            node.submit(BusRequest::FetchRange(FetchRange {
                token,
                after_offset: after,
                through_offset: through,
                topics: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
                limit,
                max_bytes,
            }));
            assert!(node.until(LIMIT, |n| n.ranges.contains_key(&token)));
            node.ranges.remove(&token).unwrap()
        };
    let fetch = |node: &mut Node, after, through, topics: Option<&[&str]>, limit| {
        fetch_bytes(node, after, through, topics, limit, usize::MAX)
    };
    let of = |r: &RangeReply| r.events.iter().map(|e| e.offset).collect::<Vec<_>>();

    let all = fetch(&mut node, 10, None, None, 100);
    assert_eq!(of(&all), offsets(11..=30));
    assert!(all.complete && all.scanned_through == 30);
    assert_eq!(all.events[0].data, "11");
    assert_eq!(all.first_retained_offset, Some(1));
    assert!(!all.lost_events_after(10));

    let even = fetch(&mut node, 10, None, Some(&["even"]), 100);
    assert_eq!(of(&even), vec![12, 14, 16, 18, 20, 22, 24, 26, 28, 30]);

    let page = fetch(&mut node, 10, None, None, 5);
    assert_eq!(of(&page), offsets(11..=15));
    assert!(!page.complete && page.scanned_through == 15);

    // A byte budget ends the page with the event that reaches it (data "11".."30", two
    // bytes each), counting only the topics asked for.
    let cut = fetch_bytes(&mut node, 10, None, None, 100, 6);
    assert_eq!(of(&cut), offsets(11..=13));
    assert!(!cut.complete && cut.scanned_through == 13);
    let cut_even = fetch_bytes(&mut node, 10, None, Some(&["even"]), 100, 4);
    assert_eq!(of(&cut_even), vec![12, 14]);
    assert!(!cut_even.complete && cut_even.scanned_through == 14);

    // A full page (the limit reached) is complete only if it reached `through`.
    let short = fetch(&mut node, 10, Some(20), None, 5);
    assert!(!short.complete && short.scanned_through == 15);
    let exact = fetch(&mut node, 10, Some(15), None, 5);
    assert!(exact.complete && exact.scanned_through == 15);

    let bounded = fetch(&mut node, 10, Some(20), None, 100);
    assert_eq!(of(&bounded), offsets(11..=20));
    assert!(bounded.complete && bounded.scanned_through == 20);

    let nothing = fetch(&mut node, 30, None, None, 100);
    assert!(nothing.events.is_empty() && nothing.complete && nothing.scanned_through == 30);

    redis.cmd(&["XTRIM", "{sse}:log", "MAXLEN", "10"]);
    let trimmed = fetch(&mut node, 10, None, None, 100);
    assert_eq!(trimmed.first_retained_offset, Some(21));
    assert!(trimmed.lost_events_after(10));
    assert!(!trimmed.lost_events_after(20));
    assert_eq!(of(&trimmed), offsets(21..=30));
}

#[test]
fn a_flushed_script_cache_is_reloaded() {
    let Some(redis) = RedisServer::start("bus noscript", Persistence::None) else {
        return;
    };
    let mut node = Node::start(&redis.url());
    node.connected();
    assert_eq!(node.publish_surely("", "a").offset, 1);
    redis.cmd(&["SCRIPT", "FLUSH"]);
    let token = node.publish("", "b");
    assert!(node.until(LIMIT, |n| n.published.contains_key(&token)));
    assert_eq!(node.published[&token].as_ref().map(|id| id.offset), Ok(2));
}

#[test]
fn custom_ids_and_event_names_travel_with_the_event() {
    let Some(redis) = RedisServer::start("bus fields", Persistence::None) else {
        return;
    };
    let mut node = Node::start(&redis.url());
    node.connected();
    let token = node.next_token;
    node.submit(BusRequest::Publish(Publish {
        token,
        topic: "orders".into(),
        event: Some("created".into()),
        custom_id: Some("order-17".into()),
        data: "line 1\nline 2\r\nü".into(),
        accepted_ms: 1_700_000_000_042,
    }));
    assert!(node.until(LIMIT, |n| n.events.len() == 1
        && n.published.contains_key(&token)));
    let event = &node.events[0];
    assert_eq!(event.topic, "orders");
    assert_eq!(event.event.as_deref(), Some("created"));
    assert_eq!(event.custom_id.as_deref(), Some("order-17"));
    assert_eq!(event.frame_id(), "order-17");
    assert_eq!(event.data, "line 1\nline 2\r\nü");
    assert_eq!(event.accepted_ms, Some(1_700_000_000_042));
    assert_eq!(node.published[&token].as_ref().unwrap(), &event.id);
}

#[test]
fn a_lost_meta_hash_starts_a_new_epoch_and_a_fresh_stream() {
    let Some(redis) = RedisServer::start("bus lost meta", Persistence::None) else {
        return;
    };
    let mut node = Node::start(&redis.url());
    node.connected();
    let old = node.publish_surely("", "old-1");
    node.publish_surely("", "old-2");
    assert!(node.until(LIMIT, |n| n.events.len() == 2));
    // The counter and epoch are gone (an eviction, a careless DEL), the stream is not.
    redis.cmd(&["DEL", "{sse}:meta"]);
    let new = node.publish_surely("", "new-1");
    assert_ne!(new.epoch, old.epoch);
    assert_eq!(new.offset, 1);
    assert!(node.until(LIMIT, |n| n.events.len() == 3));
    assert_eq!(node.epochs.len(), 1);
    assert_eq!(node.events[2].id, new);
    assert_eq!(node.events[2].data, "new-1");
}

/// Not a check, a measurement (numbers quoted in the report, not asserted):
/// `cargo test --release --test bus -- --ignored --nocapture bus_throughput`.
#[test]
#[ignore]
fn bus_throughput() {
    let Some(redis) = RedisServer::start("bus throughput", Persistence::None) else {
        return;
    };
    let mut publisher = Node::start(&redis.url());
    let mut tail = Node::start(&redis.url());
    publisher.connected();
    tail.connected();
    // Sequential round trips: submit → Published.
    let mut latencies = Vec::new();
    for i in 0..2000 {
        let start = Instant::now();
        publisher.publish_surely("t", &format!("seq-{i}"));
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let pct = |p: usize| latencies[latencies.len() * p / 100];
    eprintln!(
        "sequential publish round trip over 2000: median {:?}, p99 {:?}",
        pct(50),
        pct(99)
    );
    // Many in flight: pipelined by the command thread; time until the other node has all.
    const N: u64 = 50_000;
    let payload = "x".repeat(100);
    let start = Instant::now();
    let mut submitted = 0;
    while submitted < N {
        // Stay within the request queue: drain replies as we go.
        for _ in 0..1000 {
            publisher.publish("t", &payload);
            submitted += 1;
        }
        assert!(publisher.until(LIMIT, |n| n.published.len() as u64 >= 2000 + submitted));
        while let Some(reply) = tail.bus.try_recv() {
            tail.apply(reply);
        }
    }
    let accepted = start.elapsed();
    assert!(tail.until(LIMIT, |n| n.events.len() as u64 >= 2000 + N));
    let delivered = start.elapsed();
    assert!(publisher.published.values().all(Result::is_ok));
    tail.assert_exact();
    eprintln!(
        "{N} publishes of 100 B, 1000 in flight: all accepted in {accepted:?} ({:.0}/s), \
         all on the other node in {delivered:?} ({:.0}/s)",
        N as f64 / accepted.as_secs_f64(),
        N as f64 / delivered.as_secs_f64()
    );
}
