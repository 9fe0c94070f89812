//! `/health`'s `503 not applying the log` end to end: a real `sse-server` whose tail is
//! moved (through a TCP proxy) to a stale copy of the log on a second `redis-server`,
//! while its command connection stays on the real one. Its tail's connection is fine and
//! shows nothing new, which is the failure a node must not hide behind a green `/health`;
//! only the head probe, through the command connection, sees the log move.
//!
//! Skips (and passes) without `redis-server`, unless `SSE_REQUIRE_ECOSYSTEM=1`.

mod util;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use util::redis::{Persistence, Proxy, RedisServer};
use util::{Server, Stream, eventually, health, publish};

const LIMIT: Duration = Duration::from_secs(15);
/// The bound the stalled node runs with (`--health-apply-bound`).
const BOUND: Duration = Duration::from_secs(1);

fn ok() -> (u16, String) {
    (200, "ok\n".to_owned())
}

fn not_applying() -> (u16, String) {
    (503, "not applying the log\n".to_owned())
}

fn publish_ok(addr: SocketAddr, data: &str) -> String {
    let (status, body) = publish(addr, "?topic=t", data);
    assert_eq!(status, 200, "publish {data:?}: {body}");
    body.trim().to_owned()
}

/// Copies the log's keys from `from` to `to` (`DUMP`/`RESTORE`): a copy as it stands now,
/// which no publish reaches afterwards (a replica that stopped replicating).
fn copy_log(from: &RedisServer, to: &RedisServer) {
    let connect = |server: &RedisServer| {
        ::redis::Client::open(server.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to test redis")
    };
    let (mut src, mut dst) = (connect(from), connect(to));
    for key in ["{sse}:log", "{sse}:meta"] {
        let dump: Vec<u8> = ::redis::cmd("DUMP").arg(key).query(&mut src).expect("DUMP");
        let _: () = ::redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dump)
            .arg("REPLACE")
            .query(&mut dst)
            .expect("RESTORE");
    }
}

#[test]
fn a_node_whose_tail_reads_a_stale_log_says_so_and_recovers() {
    let test = "stale_tail";
    let Some(primary) = RedisServer::start(test, Persistence::None) else {
        return;
    };
    let Some(stale) = RedisServer::start(test, Persistence::None) else {
        return;
    };
    let proxy = Proxy::start(primary.socket());
    let bound = format!("{}ms", BOUND.as_millis());
    let a = Server::start(&[
        "--redis",
        &proxy.url(),
        "--interval",
        "off",
        "--health-apply-bound",
        &bound,
    ]);
    let b = Server::start(&["--redis", &primary.url(), "--interval", "off"]);
    for node in [&a, &b] {
        assert!(
            eventually(LIMIT, || health(node.addr) == ok()),
            "node never reached Redis"
        );
    }
    let mut s = Stream::open(a.addr, "/events?topic=t", &[]);
    // Node A's first publish opens its command connection to the real log.
    let first = publish_ok(a.addr, "first");
    s.wait_events(1, LIMIT);

    // A's tail moves to a copy of the log: it reconnects, greets, and looks healthy.
    copy_log(&primary, &stale);
    proxy.redirect(stale.socket());
    proxy.drop_tails();
    assert!(
        eventually(LIMIT, || a.metric("sse_bus_reconnects_total") >= 1.0
            && health(a.addr) == ok()),
        "the tail reconnected to the copy: {:?}",
        health(a.addr)
    );
    // Quiet for more than twice the bound: the probes find the head where A applied it.
    std::thread::sleep(BOUND * 5 / 2);
    assert_eq!(health(a.addr), ok(), "an idle log is no stall");
    assert!(a.metric("sse_bus_head_probes_total") >= 2.0);

    // The log moves on the real server only; A's tail sees nothing of it.
    let second = publish_ok(b.addr, "second");
    let moved = Instant::now();
    assert!(
        eventually(LIMIT, || health(a.addr) == not_applying()),
        "never reported: {:?}",
        health(a.addr)
    );
    let detected = moved.elapsed();
    eprintln!("not applying the log reported {detected:?} after the head moved");
    assert!(detected >= BOUND, "reported before the bound: {detected:?}");
    assert_eq!(a.metric("sse_bus_apply_stalled"), 1.0);
    assert_eq!(
        a.metric("sse_bus_connected"),
        1.0,
        "its tail looks connected"
    );
    assert!(a.metric("sse_bus_unapplied_seconds") >= BOUND.as_secs_f64());
    s.fill_nonblocking();
    assert_eq!(
        s.events.len(),
        1,
        "nothing of the second event reached A's clients"
    );

    // The tail back on the real log: it catches up, and /health turns green.
    proxy.redirect(primary.socket());
    proxy.drop_tails();
    assert!(
        eventually(LIMIT, || health(a.addr) == ok()),
        "never recovered: {:?}",
        health(a.addr)
    );
    s.wait_events(2, LIMIT);
    let ids: Vec<&str> = s.events.iter().map(|e| e.last_event_id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    assert_eq!(a.metric("sse_bus_apply_stalled"), 0.0);
    assert_eq!(b.metric("sse_bus_apply_stalled"), 0.0);
}
