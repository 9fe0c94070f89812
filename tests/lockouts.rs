//! Resources and lock-outs against the real binary: nothing a client holds without progress
//! locks others out.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use util::*;

const SEC: Duration = Duration::from_secs(1);

/// `--max-clients 1` allows 65 connections of any kind.
const CONNECTION_LIMIT: usize = 65;

/// Reads one complete small response (head and a `Content-Length` body) from `s`.
fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(3 * SEC)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return String::from_utf8_lossy(&out).into_owned();
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A new client's `/health` works: the server is not locked out.
fn health_answers(server: &Server) -> bool {
    let (head, body) = http(
        server.addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    status_of(&head) == 200 && body == "ok\n"
}

/// Connections idle between kept-alive requests are evictable at the connection limit, so
/// they cannot lock out every new client until the head timeout.
#[test]
fn idle_kept_alive_connections_are_evicted_at_the_limit() {
    let server = Server::start(&["--interval", "off", "--max-clients", "1"]);
    let idle: Vec<TcpStream> = (0..CONNECTION_LIMIT)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
            s
        })
        .collect();
    for _ in 0..3 {
        assert!(health_answers(&server), "locked out by idle connections");
    }
    assert!(server.metric("sse_connections_closed_total{reason=\"limit\"}") >= 1.0);
    drop(idle);
}

/// Connections trickling a publish body (R.U.D.Y.) are evictable too.
#[test]
fn trickling_bodies_are_evicted_at_the_limit() {
    let server = Server::start(&["--interval", "off", "--max-clients", "1"]);
    let slow: Vec<TcpStream> = (0..CONNECTION_LIMIT)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.write_all(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx")
                .expect("write");
            s
        })
        .collect();
    // Let the server read every head, so each connection is in its body phase.
    std::thread::sleep(Duration::from_millis(300));
    assert!(eventually(3 * SEC, || {
        health_answers(&server) && health_answers(&server)
    }));
    assert_eq!(server.metric("sse_events_published_total"), 0.0);
    drop(slow);
}

/// SIGHUP does not kill the server: it is ignored, with a log line.
#[test]
fn sighup_is_ignored_with_a_log_line() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sse-server"))
        .args(["--listen", "127.0.0.1:0", "--interval", "off"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sse-server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("listening")
        .parse()
        .expect("address");
    signal(child.id(), 1);
    std::thread::sleep(Duration::from_millis(200));
    let (head, body) = http(
        addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let alive = status_of(&head) == 200 && body == "ok\n";
    signal(child.id(), 15);
    let _ = child.wait();
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    assert!(alive, "the server died of SIGHUP: {stderr}");
    assert!(stderr.contains("SIGHUP ignored"), "{stderr}");
}

/// Left to itself, the kernel autotunes a non-reading client's send buffer up to `tcp_wmem`'s
/// maximum (4 MiB), so 3,000 such subscribers would hold about 1.5 GB of kernel memory. The
/// default `--max-send-buffer` (64 KiB, doubled by Linux) bounds it; this reports the
/// kernel memory the non-reading clients hold.
#[test]
fn a_non_reading_subscriber_pins_a_bounded_kernel_send_buffer() {
    if !runs("ss", &["-V"]) {
        return ecosystem_skip(
            "a_non_reading_subscriber_pins_a_bounded_kernel_send_buffer",
            "ss (iproute2) missing",
        );
    }
    let server = Server::start(&["--interval", "off"]);
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            s
        })
        .collect();
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 4.0));
    // 800 KB: under the 1 MiB backlog bound, so nobody is dropped as slow.
    let payload = "k".repeat(10_000);
    for _ in 0..80 {
        assert_eq!(publish(server.addr, "", &payload).0, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let ports: Vec<u16> = silent
        .iter()
        .map(|s| s.local_addr().expect("local").port())
        .collect();
    let queues: Vec<u64> = server_send_queues(server.addr.port())
        .into_iter()
        .filter(|(peer, _)| ports.contains(peer))
        .map(|(_, q)| q)
        .collect();
    assert_eq!(queues.len(), 4, "{queues:?}");
    let total: u64 = queues.iter().sum();
    let _ = writeln!(
        std::io::stderr(),
        "kernel send queues of 4 non-reading subscribers after 800 KB: {queues:?} ({total} bytes)"
    );
    for q in &queues {
        // Linux doubles SO_SNDBUF and lets the payload reach about 2.5 times the value
        // (160,256 bytes measured); uncapped, each queue held 674,464 bytes here, growing
        // with what is published up to 4 MiB.
        assert!(*q <= 3 * 65536, "a send queue of {q} bytes: {queues:?}");
    }
    assert_eq!(
        server.metric("sse_connections_closed_total{reason=\"slow\"}"),
        0.0
    );
}

/// Unbounded, `/metrics` with many topics would render to about 400 KB, and 1,000
/// connections that send the 38-byte request and never read would pin about 100 MB of server
/// memory. The per-topic series are bounded (the 32 most subscribed topics), so the answer
/// is small whatever the topic table holds.
#[test]
fn metrics_requesters_that_never_read_pin_little_memory() {
    let server = Server::start(&["--interval", "off"]);
    for i in 0..250 {
        let name = format!("{i:0>250}");
        assert_eq!(publish(server.addr, &format!("?topic={name}"), "x").0, 200);
    }
    let (_, body) = http(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(body.len() < 32 * 1024, "/metrics is {} bytes", body.len());
    // 250 and the default stream.
    assert!(body.contains("\nsse_topics 251\n"), "{body}");
    let base_rss = server.rss_kib();
    let silent: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(health_answers(&server));
    let rss = server.rss_kib();
    let _ = writeln!(
        std::io::stderr(),
        "300 non-reading /metrics requesters: RSS {base_rss} KiB -> {rss} KiB"
    );
    assert!(
        rss < base_rss + 16 * 1024,
        "RSS grew from {base_rss} KiB to {rss} KiB"
    );
    drop(silent);
}
