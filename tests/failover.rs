//! Redis failover end to end: `--redis-wait` (a publish answered 200 only once replicas have
//! it), Sentinel (`redis+sentinel://`: the nodes follow a promoted master), and a promoted
//! replica that missed the tail (clients get `reset` `restart`, never two payloads under
//! one id). Real `redis-server` masters, replicas and `redis-server --sentinel` processes on
//! loopback, real `sse-server` nodes, raw sockets.
//!
//! Skips (and passes) without `redis-server`, unless `SSE_REQUIRE_ECOSYSTEM=1`.

mod util;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use util::redis::{Proxy, RedisServer, Sentinel};
use util::{Server, Stream, eventually, publish};

const LIMIT: Duration = Duration::from_secs(20);

fn node(redis_url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--redis", redis_url, "--interval", "off"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `GET /health`'s status.
fn health(addr: SocketAddr) -> u16 {
    util::health(addr).0
}

fn wait_healthy(server: &Server) {
    assert!(
        eventually(LIMIT, || health(server.addr) == 200),
        "node never reached Redis"
    );
}

/// A line of `INFO replication`, e.g. `master_link_status`.
fn replication(redis: &RedisServer, field: &str) -> String {
    let info = match redis.cmd(&["INFO", "replication"]) {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => format!("{other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn wait_replicating(replica: &RedisServer) {
    assert!(
        eventually(LIMIT, || replication(replica, "master_link_status") == "up"),
        "replica never linked to its master"
    );
}

/// (id, data) of the events that are not `reset`s.
fn events(s: &Stream) -> Vec<(String, String)> {
    s.events
        .iter()
        .filter(|e| e.event_type != "reset")
        .map(|e| (e.last_event_id.clone(), e.data.clone()))
        .collect()
}

fn resets(s: &Stream) -> Vec<String> {
    s.events
        .iter()
        .filter(|e| e.event_type == "reset")
        .map(|e| e.data.clone())
        .collect()
}

/// No id came with two different payloads, and no id twice.
fn assert_ids_unique(what: &str, got: &[(String, String)]) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (id, data) in got {
        if let Some(before) = seen.insert(id, data) {
            panic!("{what}: id {id} delivered twice ({before:?}, then {data:?})");
        }
    }
}

#[test]
fn redis_wait_answers_200_only_when_a_replica_has_the_event() {
    let Some(master) = RedisServer::start_tcp("redis_wait", None) else {
        return;
    };
    let Some(replica) = RedisServer::start_tcp("redis_wait", Some(master.port())) else {
        return;
    };
    wait_replicating(&replica);
    let a = node(
        &master.url(),
        &["--redis-wait", "1", "--redis-wait-timeout", "500ms"],
    );
    wait_healthy(&a);
    let mut s = Stream::open(a.addr, "/events?topic=t", &[]);
    for i in 0..5 {
        let (status, body) = publish(a.addr, "?topic=t", &format!("ok{i}"));
        assert_eq!(status, 200, "{body}");
    }

    replica.pause();
    let started = Instant::now();
    let (status, body) = publish(a.addr, "?topic=t", "unconfirmed");
    let took = started.elapsed();
    assert_eq!(status, 503, "no replica confirmed: {body}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "answered after the WAIT timeout (500 ms), took {took:?}"
    );

    replica.resume();
    assert!(
        eventually(LIMIT, || publish(a.addr, "?topic=t", "again").0 == 200),
        "publishes recover once the replica is back"
    );
    // The unconfirmed event is in the master's log all the same (at-least-once for a
    // publisher that retries), so subscribers get it.
    s.wait_events(7, LIMIT);
    let datas: Vec<String> = events(&s).into_iter().map(|(_, d)| d).collect();
    assert!(datas.contains(&"unconfirmed".to_owned()), "{datas:?}");
    assert_ids_unique("stream", &events(&s));

    // Without any replica, N = 1 never confirms.
    let Some(alone) = RedisServer::start_tcp("redis_wait", None) else {
        return;
    };
    let b = node(
        &alone.url(),
        &["--redis-wait", "1", "--redis-wait-timeout", "200ms"],
    );
    wait_healthy(&b);
    let (status, body) = publish(b.addr, "?topic=t", "x");
    assert_eq!(status, 503, "{body}");
}

#[test]
fn redis_wait_needs_redis() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sse-server"))
        .args(["--redis-wait", "1"])
        .output()
        .expect("run sse-server");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--redis-wait needs --redis"));
}

/// What one publish got.
struct Attempt {
    at: Instant,
    status: u16,
    id: String,
    data: String,
}

#[test]
fn sentinel_failover_loses_no_acknowledged_event() {
    let Some(mut master) = RedisServer::start_tcp("sentinel_failover", None) else {
        return;
    };
    // Two replicas: after the failover one is left to confirm `--redis-wait 1`.
    let replicas: Vec<RedisServer> = (0..2)
        .filter_map(|_| RedisServer::start_tcp("sentinel_failover", Some(master.port())))
        .collect();
    for replica in &replicas {
        wait_replicating(replica);
    }
    let sentinels: Vec<Sentinel> = (0..3)
        .filter_map(|_| Sentinel::start("sentinel_failover", master.port()))
        .collect();
    assert_eq!(sentinels.len(), 3);
    // Every Sentinel knows the others and both replicas before the master dies.
    let ready = |s: &Sentinel| {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{}/", s.port)) else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return false;
        };
        let info: HashMap<String, String> = redis::cmd("SENTINEL")
            .arg("master")
            .arg("m")
            .query(&mut con)
            .unwrap_or_default();
        info.get("num-other-sentinels").map(String::as_str) == Some("2")
            && info.get("num-slaves").map(String::as_str) == Some("2")
    };
    assert!(
        eventually(Duration::from_secs(30), || sentinels.iter().all(ready)),
        "sentinels never saw each other and the replicas"
    );
    let url = format!(
        "redis+sentinel://{}/m",
        sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    );
    let flags = ["--redis-wait", "1", "--redis-wait-timeout", "500ms"];
    let nodes = [node(&url, &flags), node(&url, &flags)];
    for n in &nodes {
        wait_healthy(n);
    }
    let mut streams: Vec<Stream> = nodes
        .iter()
        .map(|n| Stream::open(n.addr, "/events?topic=t", &[]))
        .collect();

    let mut attempts: Vec<Attempt> = Vec::new();
    let mut killed_at = None;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut i = 0;
    loop {
        let now = Instant::now();
        assert!(
            now < deadline,
            "publishes never recovered after the failover"
        );
        if killed_at.is_none() && now >= started + Duration::from_secs(1) {
            master.kill();
            killed_at = Some(Instant::now());
        }
        let data = format!("e{i}");
        let (status, body) = publish(nodes[i % 2].addr, "?topic=t", &data);
        attempts.push(Attempt {
            at: Instant::now(),
            status,
            id: body.trim().to_owned(),
            data,
        });
        i += 1;
        // The subscribers read as they go: a stream that stops reading is a slow client.
        if i % 16 == 0 {
            for s in &mut streams {
                assert!(
                    s.fill_nonblocking(),
                    "a subscriber's stream closed during the burst"
                );
            }
        }
        // Enough: 20 acknowledged publishes in a row after the master died.
        let recovered = killed_at.is_some_and(|k| {
            attempts.len() >= 20
                && attempts[attempts.len() - 20..]
                    .iter()
                    .all(|a| a.at > k && a.status == 200)
        });
        if recovered {
            break;
        }
    }
    let killed_at = killed_at.unwrap_or(started);
    let acked: Vec<&Attempt> = attempts.iter().filter(|a| a.status == 200).collect();
    for a in &attempts {
        assert!(a.status == 200 || a.status == 503, "{}: {}", a.status, a.id);
    }
    let failed: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.status != 200 && a.at > killed_at)
        .collect();
    let recovered_at = attempts
        .iter()
        .filter(|a| a.at > killed_at && a.status == 200)
        .map(|a| a.at)
        .find(|at| failed.last().is_none_or(|f| *at > f.at));
    let outage = recovered_at.map(|r| r - killed_at);
    eprintln!(
        "failover: {} publishes, {} acknowledged, {} refused (503) after the kill; \
         first acknowledged publish {:?} after SIGKILL of the master",
        attempts.len(),
        acked.len(),
        failed.len(),
        outage
    );
    assert!(
        outage.is_some_and(|o| o < Duration::from_secs(15)),
        "{outage:?}"
    );

    // Every acknowledged event reaches both subscribers exactly once, in one order.
    let mut orders = Vec::new();
    for s in &mut streams {
        let complete = eventually(LIMIT, || {
            s.fill_nonblocking();
            let got: Vec<String> = events(s).into_iter().map(|(id, _)| id).collect();
            acked.iter().all(|a| got.contains(&a.id))
        });
        let got = events(s);
        assert!(
            complete,
            "missing acknowledged events; resets {:?}",
            resets(s)
        );
        assert_ids_unique("stream", &got);
        for a in &acked {
            let data = got.iter().find(|(id, _)| *id == a.id).map(|(_, d)| d);
            assert_eq!(data, Some(&a.data), "id {} carries its own payload", a.id);
        }
        let acked_order: Vec<String> = got
            .iter()
            .filter(|(id, _)| acked.iter().any(|a| a.id == *id))
            .map(|(id, _)| id.clone())
            .collect();
        orders.push(acked_order);
    }
    assert_eq!(orders[0], orders[1], "both nodes deliver in one order");
    assert!(
        sentinels
            .iter()
            .any(|s| s.master_port() != Some(master.port())),
        "a replica was promoted"
    );
}

/// A unix-socket path the node connects through, pointed at one server's socket and then
/// at another's (what a DNS name or a virtual IP does when an operator promotes a replica).
struct Link(std::path::PathBuf);

impl Link {
    fn new(to: &RedisServer) -> Link {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("sse-failover-{}-{n}.sock", std::process::id()));
        let link = Link(path);
        link.point(to);
        link
    }

    fn point(&self, to: &RedisServer) {
        let staged = self.0.with_extension("new");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(to.socket(), &staged).expect("symlink");
        std::fs::rename(&staged, &self.0).expect("rename symlink");
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.0.display())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn int(value: redis::Value) -> i64 {
    match value {
        redis::Value::Int(n) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

fn text(value: redis::Value) -> String {
    match value {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::SimpleString(s) => s,
        other => panic!("not text: {other:?}"),
    }
}

/// `--redis-wait 0`: the replica is promoted (`REPLICAOF NO ONE`) after it got five
/// events and before five more were published on the master, which then dies. With
/// `others_published`, another writer has meanwhile put different events 6 to 12 in the
/// promoted copy under the same epoch (what a node that never saw the lost tail publishes
/// there). Either way the node must not deliver an id it already delivered with other
/// content: its clients get `reset` `restart` and the events of a new epoch.
fn promoted_replica_missed_the_tail(test: &str, others_published: bool) {
    let Some(mut master) = RedisServer::start_tcp(test, None) else {
        return;
    };
    let Some(replica) = RedisServer::start_tcp(test, Some(master.port())) else {
        return;
    };
    wait_replicating(&replica);
    let link = Link::new(&master);
    let a = node(&link.url(), &[]);
    wait_healthy(&a);
    let mut s = Stream::open(a.addr, "/events?topic=t", &[]);
    let mut ids = Vec::new();
    for i in 1..=5 {
        let (status, id) = publish(a.addr, "?topic=t", &format!("m{i}"));
        assert_eq!(status, 200);
        ids.push(id.trim().to_owned());
    }
    assert!(eventually(LIMIT, || int(
        replica.cmd(&["XLEN", "{sse}:log"])
    ) == 5));
    replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    for i in 6..=10 {
        let (status, id) = publish(a.addr, "?topic=t", &format!("m{i}"));
        assert_eq!(status, 200);
        ids.push(id.trim().to_owned());
    }
    s.wait_events(10, LIMIT);
    let epoch = text(replica.cmd(&["HGET", "{sse}:meta", "e"]));
    assert!(ids[9].starts_with(&epoch), "{} in epoch {epoch}", ids[9]);
    if others_published {
        for k in 6..=12 {
            let id = format!("{k}-0");
            let data = format!("other{k}");
            replica.cmd(&["XADD", "{sse}:log", &id, "e", &epoch, "t", "t", "d", &data]);
        }
        replica.cmd(&["HSET", "{sse}:meta", "o", "12"]);
    }
    master.kill();
    link.point(&replica);

    assert!(
        eventually(LIMIT, || {
            s.fill_nonblocking();
            !resets(&s).is_empty()
        }),
        "no reset after the promotion; got {:?}",
        events(&s)
    );
    assert_eq!(resets(&s), ["{\"reason\":\"restart\"}"]);
    let mut after = String::new();
    assert!(
        eventually(LIMIT, || {
            let (status, id) = publish(a.addr, "?topic=t", "after");
            after = id.trim().to_owned();
            status == 200
        }),
        "publishes work on the promoted replica"
    );
    assert!(!after.starts_with(&epoch), "a new epoch: {after}");
    assert!(eventually(LIMIT, || {
        s.fill_nonblocking();
        events(&s).iter().any(|(id, _)| *id == after)
    }));
    let got = events(&s);
    assert_ids_unique("stream", &got);
    assert!(
        got.iter()
            .all(|(id, data)| !(id.starts_with(&epoch) && data.starts_with("other"))),
        "nothing of the reused offsets under the old epoch: {got:?}"
    );
    // A client resuming from an id of the lost tail is told to restart, not handed what the
    // promoted copy holds after it.
    let mut late = Stream::open(
        a.addr,
        "/events?topic=t",
        &[&format!("Last-Event-ID: {}", ids[7])],
    );
    late.wait_events(1, LIMIT);
    assert_eq!(late.events[0].event_type, "reset", "{:?}", late.events);
}

#[test]
fn a_promoted_replica_with_an_older_head_starts_a_new_epoch() {
    promoted_replica_missed_the_tail("promoted_older_head", false);
}

#[test]
fn a_promoted_replica_whose_offsets_were_reused_starts_a_new_epoch() {
    promoted_replica_missed_the_tail("promoted_reused_offsets", true);
}

/// A master and one replica following it (on free TCP ports, stopped when dropped), once
/// the replica has synced; `None` when redis-server is missing (the test skips).
fn master_and_replica(test: &str) -> Option<(RedisServer, RedisServer)> {
    let master = RedisServer::start_tcp(test, None)?;
    let replica = RedisServer::start_tcp(test, Some(master.port()))?;
    wait_replicating(&replica);
    Some((master, replica))
}

/// A node's command connection reaches the promoted replica before its tail does (the
/// proxy moves only the command connection; the tail stays on the old master, noticing
/// nothing), and another writer has already reused the lost offsets there. A client
/// resuming from before them makes the node read the range through that connection: it
/// must never get an id another client got with another payload. The command thread reads
/// back the tail's last delivered offset when it reconnects and starts a new epoch, so the
/// resume is told to come back; once the tail reaches the copy, the first client gets
/// `reset` `restart`.
#[test]
fn a_range_read_on_a_promoted_replica_never_hands_out_a_reused_offset() {
    let test = "range_on_promoted";
    let Some((master, replica)) = master_and_replica(test) else {
        return;
    };
    let proxy = Proxy::start(master.socket());
    // A cache of two events per topic: a resume from the third event reads the log.
    let a = node(&proxy.url(), &["--history", "2"]);
    wait_healthy(&a);
    let mut first = Stream::open(a.addr, "/events?topic=t", &[]);
    let mut ids = Vec::new();
    for i in 1..=8 {
        if i == 4 {
            assert!(eventually(LIMIT, || int(
                replica.cmd(&["XLEN", "{sse}:log"])
            ) == 3));
            replica.cmd(&["REPLICAOF", "NO", "ONE"]);
        }
        let (status, id) = publish(a.addr, "?topic=t", &format!("m{i}"));
        assert_eq!(status, 200);
        ids.push(id.trim().to_owned());
    }
    first.wait_events(8, LIMIT);
    let epoch = text(replica.cmd(&["HGET", "{sse}:meta", "e"]));
    assert!(ids[7].starts_with(&epoch), "{} in epoch {epoch}", ids[7]);
    // Another writer, which never saw offsets 4 to 8, reused them on the promoted copy.
    for k in 4..=10 {
        let id = format!("{k}-0");
        let data = format!("other{k}");
        replica.cmd(&["XADD", "{sse}:log", &id, "e", &epoch, "t", "t", "d", &data]);
    }
    replica.cmd(&["HSET", "{sse}:meta", "o", "10"]);

    // Only the command connection moves to the copy; a publish shows it reconnected.
    proxy.redirect(replica.socket());
    proxy.drop_commands();
    assert!(
        eventually(LIMIT, || publish(a.addr, "?topic=t", "via the copy").0
            == 200),
        "the command connection never reached the copy"
    );
    let mut late = Stream::open(
        a.addr,
        "/events?topic=t",
        &[&format!("Last-Event-ID: {}", ids[2])],
    );
    eventually(Duration::from_secs(3), || {
        !late.fill_nonblocking() || events(&late).len() >= 5
    });
    let mut everything = events(&first);
    everything.extend(events(&late));
    assert_one_payload_per_id(&everything);

    // The tail reaches the copy too: a new epoch for the first client as well.
    proxy.drop_tails();
    assert!(
        eventually(LIMIT, || {
            first.fill_nonblocking();
            !resets(&first).is_empty()
        }),
        "no reset once the tail reached the copy"
    );
    assert_eq!(resets(&first), ["{\"reason\":\"restart\"}"]);
    let mut everything = events(&first);
    everything.extend(events(&late));
    assert_one_payload_per_id(&everything);
}

/// A publish answered while the node's tail was away, then lost: the replica it fails
/// over to never had it. The publish is sent while the tail is connected and its answer
/// held by the proxy until the tail has dropped (its reconnects held too); then every
/// connection moves to the copy, whose head is below the answered offset: nothing is owed,
/// and `/health` must stay `200` past the bound. Before, the answered offset stayed owed
/// until some publish reached it again.
#[test]
fn a_publish_answered_then_lost_in_a_failover_is_not_owed() {
    let test = "answered_then_lost";
    let Some((master, replica)) = master_and_replica(test) else {
        return;
    };
    let proxy = Proxy::start(master.socket());
    let a = node(&proxy.url(), &["--health-apply-bound", "500ms"]);
    wait_healthy(&a);
    assert_eq!(publish(a.addr, "?topic=t", "kept").0, 200);
    let len = |server: &RedisServer| int(server.cmd(&["XLEN", "{sse}:log"]));
    assert!(eventually(LIMIT, || len(&replica) == 1));
    replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    proxy.hold_commands();
    let addr = a.addr;
    let publisher = std::thread::spawn(move || publish(addr, "?topic=t", "lost"));
    assert!(
        eventually(LIMIT, || len(&master) == 2),
        "the publish reached the master"
    );
    // The tail drops; its reconnects wait, and go to the copy.
    proxy.redirect(replica.socket());
    proxy.isolate_tail();
    proxy.drop_tails();
    assert!(
        eventually(LIMIT, || a.metric("sse_bus_connected") == 0.0),
        "the tail never noticed"
    );
    proxy.release_commands();
    let (status, body) = publisher.join().expect("publisher");
    assert_eq!(status, 200, "{body}");
    // The command connection follows to the copy, then everything goes through.
    proxy.drop_commands();
    proxy.heal();
    wait_healthy(&a);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        util::health(a.addr),
        (200, "ok\n".to_owned()),
        "an offset the log lost is owed"
    );
    assert_eq!(a.metric("sse_bus_apply_stalled"), 0.0);
}

/// No id came with two different payloads (across streams: the same id twice is fine).
fn assert_one_payload_per_id(got: &[(String, String)]) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (id, data) in got {
        if let Some(before) = seen.insert(id, data) {
            assert_eq!(before, data, "id {id} came with two payloads");
        }
    }
}

/// A command connection that reached a replica (an old master demoted by a failover, a stale
/// address) is dropped on `READONLY`: the publish gets `503` and the next one reconnects,
/// asking where the master is again.
#[test]
fn a_replica_answering_readonly_is_left_for_the_master() {
    let Some(master) = RedisServer::start_tcp("readonly", None) else {
        return;
    };
    let Some(replica) = RedisServer::start_tcp("readonly", Some(master.port())) else {
        return;
    };
    let a_first = node(&master.url(), &[]);
    wait_healthy(&a_first);
    assert_eq!(publish(a_first.addr, "?topic=t", "seed").0, 200);
    wait_replicating(&replica);
    assert!(eventually(LIMIT, || int(
        replica.cmd(&["XLEN", "{sse}:log"])
    ) == 1));
    let link = Link::new(&replica);
    let a = node(&link.url(), &[]);
    wait_healthy(&a);
    let (status, body) = publish(a.addr, "?topic=t", "on a replica");
    assert_eq!(status, 503, "{body}");
    link.point(&master);
    assert!(
        eventually(LIMIT, || publish(a.addr, "?topic=t", "on the master").0
            == 200),
        "the node never left the replica"
    );
}

/// A node starting on a log holding no event (every entry trimmed, as a failover to a copy
/// that missed them leaves it too; its head stays at 2) applies nothing and owes nothing:
/// its head probes answer head 2 again, and `/health` must stay `200` past the bound.
/// Before, the probe's head stayed owed until some publish reached past it.
#[test]
fn probes_of_a_log_holding_no_event_owe_nothing() {
    let Some(redis) = RedisServer::start_tcp("emptied_log", None) else {
        return;
    };
    let a = node(&redis.url(), &[]);
    wait_healthy(&a);
    assert_eq!(publish(a.addr, "?topic=t", "one").0, 200);
    assert_eq!(publish(a.addr, "?topic=t", "two").0, 200);
    redis.cmd(&["XTRIM", "{sse}:log", "MAXLEN", "0"]);
    assert_eq!(int(redis.cmd(&["XLEN", "{sse}:log"])), 0);
    let b = node(&redis.url(), &["--health-apply-bound", "500ms"]);
    wait_healthy(&b);
    // Probes every quarter second while the tail is quiet: five span more than the bound
    // after the first.
    assert!(
        eventually(LIMIT, || b.metric("sse_bus_head_probes_total") >= 5.0),
        "the quiet tail was never probed"
    );
    assert_eq!(
        util::health(b.addr),
        (200, "ok\n".to_owned()),
        "a head the log holds no event at is owed"
    );
    assert_eq!(b.metric("sse_bus_apply_stalled"), 0.0);
}
