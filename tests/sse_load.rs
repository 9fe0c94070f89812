//! `sse-load` end to end: against a stand-in SSE server written here (so it is known to work
//! with any server, chunked or not), against the real `sse-server`, and its error exits.

mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use util::Server;

fn sse_load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sse-load"))
        .args(args)
        .output()
        .expect("run sse-load")
}

/// The value of `"key":` in sse-load's one-line JSON report (numbers and booleans only).
fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\":");
    let start = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    &rest[..end]
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A minimal SSE server: accepts `clients` connections, answers each request, then sends
/// `events` `ts=` events to all of them (chunked when asked), 100 ms apart, and closes.
fn stand_in(clients: usize, events: usize, chunked: bool) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let mut streams = Vec::new();
        for _ in 0..clients {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                assert!(n > 0, "client closed before sending its request");
                head.extend_from_slice(&b[..n]);
            }
            assert!(head.starts_with(b"GET /stream HTTP/1.1\r\n"));
            let te = if chunked {
                "Transfer-Encoding: chunked\r\n"
            } else {
                ""
            };
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{te}\r\n"
            )
            .unwrap();
            streams.push(s);
        }
        // sse-load opens its window once every stream is open; give it a moment.
        thread::sleep(Duration::from_millis(200));
        for i in 0..events {
            let frame = format!("id: {i}\ndata: ts={}\n\n", now_ns());
            for s in &mut streams {
                if chunked {
                    // Split each frame over two chunks, to exercise the decoder.
                    let (a, b) = frame.split_at(5);
                    let _ = write!(s, "{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n", a.len(), b.len());
                } else {
                    let _ = s.write_all(frame.as_bytes());
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        thread::sleep(Duration::from_millis(300));
    });
    (url, handle)
}

fn assert_all_delivered(out: &Output, clients: u64, events: u64) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sse-load failed ({:?}): {stdout}\n{stderr}",
        out.status
    );
    let json = stdout.trim();
    assert_eq!(field(json, "all_delivered"), "true", "{json}");
    assert_eq!(field(json, "connected"), clients.to_string(), "{json}");
    assert_eq!(field(json, "events"), events.to_string(), "{json}");
    assert_eq!(
        field(json, "delivered"),
        (clients * events).to_string(),
        "{json}"
    );
    assert_eq!(field(json, "duplicates"), "0");
    json.to_owned()
}

#[test]
fn counts_every_event_from_a_stand_in_server() {
    for chunked in [false, true] {
        let (url, server) = stand_in(20, 4, chunked);
        let out = sse_load(&[
            "--url",
            &url,
            "--clients",
            "20",
            "--events",
            "4",
            "--duration",
            "5s",
            "--json",
        ]);
        let json = assert_all_delivered(&out, 20, 4);
        assert_eq!(field(&json, "latency_samples"), "80");
        server.join().unwrap();
    }
}

#[test]
fn every_tick_reaches_every_client_of_the_real_server() {
    let server = Server::start(&["--interval", "200ms"]);
    let url = server.url("/events");
    let out = sse_load(&[
        "--url",
        &url,
        "--clients",
        "200",
        "--source-ips",
        "4",
        "--events",
        "3",
        "--duration",
        "5s",
        "--json",
    ]);
    let json = assert_all_delivered(&out, 200, 3);
    assert_eq!(field(&json, "ticks"), "3");
    assert_eq!(field(&json, "per_client_min"), "3");
}

#[test]
fn publishes_and_counts_deliveries() {
    let server = Server::start(&["--interval", "off"]);
    let url = server.url("/events");
    let out = sse_load(&[
        "--url",
        &url,
        "--clients",
        "50",
        "--publish-rate",
        "200",
        "--events",
        "40",
        "--duration",
        "5s",
        "--json",
    ]);
    let json = assert_all_delivered(&out, 50, 40);
    assert_eq!(field(&json, "published_acked"), "40");
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        &["--clients", "0"][..],
        &["--clients", "lots"],
        &["--url", "ftp://127.0.0.1/"],
        &["--duration", "-1s"],
        &["--publish-rate", "0"],
        &["--header", "no colon"],
        &["--no-such-flag"],
    ] {
        let out = sse_load(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn unreachable_server_is_a_clear_error() {
    // A port that was just free: bind, note it, close.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/events");
    let out = sse_load(&["--url", &url, "--clients", "5", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(stderr.contains("open-file limit"), "{stderr}");
    let _ = TcpStream::connect(("127.0.0.1", port));
}

/// sse-load's JSON report, asserting it exited with `code`.
fn json_of(out: &Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stdout}\n{stderr}");
    stdout.trim().to_owned()
}

#[test]
fn workers_split_the_clients_and_merge_exactly() {
    let server = Server::start(&["--interval", "200ms"]);
    let url = server.url("/events");
    let out = sse_load(&[
        "--url",
        &url,
        "--clients",
        "300",
        "--workers",
        "3",
        "--events",
        "3",
        "--duration",
        "5s",
        "--json",
    ]);
    let json = assert_all_delivered(&out, 300, 3);
    assert_eq!(field(&json, "workers"), "3");
    assert_eq!(field(&json, "latency_samples"), "900");
    assert_ne!(
        field(&json, "server_cpu_ticks"),
        "null",
        "the server was found by its port"
    );
}

#[test]
fn several_servers_from_one_command() {
    let a = Server::start(&["--interval", "200ms"]);
    let b = Server::start(&["--interval", "200ms"]);
    let (ua, ub) = (a.url("/events"), b.url("/events"));
    let out = sse_load(&[
        "--url",
        &ua,
        "--url",
        &ub,
        "--clients",
        "200",
        "--workers",
        "2",
        "--events",
        "3",
        "--duration",
        "5s",
        "--json",
    ]);
    // Each server ticks on its own: 3 ticks each, every client gets its own server's 3.
    let json = json_of(&out, 0);
    assert_eq!(field(&json, "all_delivered"), "true", "{json}");
    assert_eq!(field(&json, "ticks"), "6", "{json}");
    assert_eq!(field(&json, "delivered"), "600");
    assert_eq!(field(&json, "per_client_min"), "3");
}

#[test]
fn topics_spread_clients_and_publishes() {
    let server = Server::start(&["--interval", "off"]);
    let url = server.url("/events");
    let out = sse_load(&[
        "--url",
        &url,
        "--clients",
        "30",
        "--topics",
        "a,b,c",
        "--publish-rate",
        "100",
        "--events",
        "30",
        "--duration",
        "5s",
        "--json",
    ]);
    let json = json_of(&out, 0);
    assert_eq!(field(&json, "all_delivered"), "true", "{json}");
    // 30 events over 3 topics: each client gets the 10 of its topic.
    assert_eq!(field(&json, "events"), "30");
    assert_eq!(field(&json, "delivered"), "300");
    assert_eq!(field(&json, "per_client_max"), "10");
}

#[test]
fn slow_clients_do_not_hold_back_the_others() {
    let server = Server::start(&["--interval", "off"]);
    let url = server.url("/events");
    let out = sse_load(&[
        "--url",
        &url,
        "--clients",
        "40",
        "--slow",
        "8",
        "--publish-rate",
        "200",
        "--events",
        "60",
        "--duration",
        "5s",
        "--json",
    ]);
    let json = json_of(&out, 0);
    assert_eq!(field(&json, "all_delivered"), "true", "{json}");
    assert_eq!(field(&json, "slow"), "8");
    assert_eq!(field(&json, "connected"), "32");
    assert_eq!(field(&json, "delivered"), (32 * 60).to_string());
    // A worker that holds only slow clients does not end the window for the others.
    let out = sse_load(&[
        "--url",
        &url,
        "--clients",
        "40",
        "--workers",
        "2",
        "--slow",
        "20",
        "--publish-rate",
        "200",
        "--events",
        "60",
        "--duration",
        "5s",
        "--json",
    ]);
    let json = json_of(&out, 0);
    assert_eq!(field(&json, "delivered"), (20 * 60).to_string(), "{json}");
}

#[test]
fn every_event_once_in_order_across_reconnects() {
    let server = Server::start(&["--interval", "off"]);
    let url = server.url("/events");
    let out = sse_load(&[
        "--url",
        &url,
        "--clients",
        "40",
        "--reconnect-every",
        "250ms",
        "--publish-rate",
        "100",
        "--events",
        "150",
        "--duration",
        "10s",
        "--json",
    ]);
    let json = json_of(&out, 0);
    assert_eq!(field(&json, "all_delivered"), "true", "{json}");
    assert_eq!(field(&json, "delivered"), (40 * 150).to_string());
    let reconnects: u64 = field(&json, "reconnects").parse().unwrap();
    assert!(reconnects >= 40 * 3, "{reconnects} reconnects: {json}");
    assert_eq!(field(&json, "reconnect_failed"), "0");
}

/// A server that answers every other connection with `503`, starting with the second (the
/// first is sse-load's check that the server streams at all).
fn half_refusing(clients: usize) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let mut keep = Vec::new();
        for i in 0..clients {
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b);
            if i % 2 == 1 {
                let _ =
                    s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
            } else {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
                keep.push(s);
            }
        }
        thread::sleep(Duration::from_millis(300));
        let frame = format!("data: ts={}\n\n", now_ns());
        for s in &mut keep {
            let _ = s.write_all(frame.as_bytes());
        }
        thread::sleep(Duration::from_millis(500));
    });
    (url, handle)
}

#[test]
fn refusals_are_counted_by_status() {
    let (url, server) = half_refusing(10);
    let out = sse_load(&[
        "--url",
        &url,
        "--clients",
        "10",
        "--events",
        "1",
        "--duration",
        "3s",
        "--json",
    ]);
    let json = json_of(&out, 3);
    assert_eq!(field(&json, "rejected"), "5", "{json}");
    assert!(json.contains("\"rejected_by\":{\"503\":5}"), "{json}");
    assert_eq!(field(&json, "connected"), "5");
    assert_eq!(field(&json, "all_delivered"), "false");
    server.join().unwrap();
}

#[test]
fn a_server_that_does_not_stream_is_a_clear_error() {
    for (head, expect) in [
        (
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
            "401",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n",
            "text/html",
        ),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b);
            let _ = s.write_all(head.as_bytes());
        });
        let out = sse_load(&["--url", &url, "--clients", "5"]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expect) && stderr.contains("not an event stream"),
            "{stderr}"
        );
        server.join().unwrap();
    }
}

#[test]
fn more_clients_than_the_limits_allow_exit_2() {
    let out = sse_load(&["--clients", "100000", "--workers", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("open-file limit") && stderr.contains("at least"),
        "{stderr}"
    );
}

/// The worker processes of the sse-load process `pid`.
fn workers_of(pid: u32) -> Vec<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn spawn_load(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sse-load"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sse-load")
}

#[test]
fn a_failing_worker_is_reported() {
    let server = Server::start(&["--interval", "100ms"]);
    let url = server.url("/events");
    let load = spawn_load(&[
        "--url",
        &url,
        "--clients",
        "60",
        "--workers",
        "3",
        "--duration",
        "4s",
        "--json",
    ]);
    assert!(util::eventually(Duration::from_secs(5), || workers_of(
        load.id()
    )
    .len()
        == 3));
    thread::sleep(Duration::from_millis(800));
    util::signal(workers_of(load.id())[1], 9);
    let out = load.wait_with_output().unwrap();
    let json = json_of(&out, 1);
    assert!(json.contains("\"workers_failed\":[\"worker 1"), "{json}");
    assert_eq!(field(&json, "all_delivered"), "false");
}

#[test]
fn sigterm_stops_every_worker_and_prints_the_partial_result() {
    let server = Server::start(&["--interval", "100ms"]);
    let url = server.url("/events");
    let load = spawn_load(&[
        "--url",
        &url,
        "--clients",
        "60",
        "--workers",
        "2",
        "--duration",
        "30s",
        "--json",
    ]);
    assert!(util::eventually(Duration::from_secs(5), || workers_of(
        load.id()
    )
    .len()
        == 2));
    thread::sleep(Duration::from_millis(1500));
    let workers = workers_of(load.id());
    let started = std::time::Instant::now();
    util::signal(load.id(), 15);
    let out = load.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        started.elapsed()
    );
    let json = json_of(&out, 130);
    assert_eq!(field(&json, "interrupted"), "true");
    assert!(
        field(&json, "delivered").parse::<u64>().unwrap() > 0,
        "{json}"
    );
    for w in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{w}")).exists()
                || std::fs::read_to_string(format!("/proc/{w}/stat"))
                    .unwrap_or_default()
                    .contains(") Z"),
            "worker {w} still runs"
        );
    }
}

#[test]
fn headers_go_with_every_stream() {
    // A server that streams only to requests carrying the token, and refuses others with 401.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let mut streams = Vec::new();
        for _ in 0..10 {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                assert!(n > 0);
                head.extend_from_slice(&b[..n]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            if head.contains("\r\nauthorization: bearer s3cret\r\n")
                && head.contains("\r\nx-tenant: t1\r\n")
            {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
                streams.push(s);
            } else {
                let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
            }
        }
        thread::sleep(Duration::from_millis(300));
        let frame = format!("data: ts={}\n\n", now_ns());
        for s in &mut streams {
            let _ = s.write_all(frame.as_bytes());
        }
        thread::sleep(Duration::from_millis(500));
    });
    let out = sse_load(&[
        "--url",
        &url,
        "--clients",
        "10",
        "--header",
        "Authorization: Bearer s3cret",
        "--header",
        "X-Tenant: t1",
        "--events",
        "1",
        "--duration",
        "3s",
        "--json",
    ]);
    assert_all_delivered(&out, 10, 1);
    server.join().unwrap();
}

/// Two `sse-server --reuse-port --interval EVERY` processes on one port (embedded mode: each
/// process ticks on its own), the second one returned apart so that it can be stopped.
fn two_behind_one_port(every: &str) -> (Server, Server) {
    let args = ["--reuse-port", "--interval", every];
    let a = Server::start(&args);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sse-server"))
        .args(["--listen", &a.addr.to_string()])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the second sse-server");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert!(line.contains(&a.addr.to_string()), "{line:?}");
    let addr = a.addr;
    (a, Server { child, addr })
}

/// `sse-load --url URL --duration D --clients 200 --json EXTRA…` while `during` runs: its
/// exit code and JSON report (it is killed past a minute).
fn load_200(url: &str, duration: &str, extra: &str, during: impl FnOnce()) -> (i32, String) {
    let mut args = vec!["--url", url, "--duration", duration];
    let more = format!("--clients 200 --json {extra}");
    args.extend(more.split_whitespace());
    let mut load = spawn_load(&args);
    during();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while load.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let _ = load.kill();
    let out = load.wait_with_output().unwrap();
    let json = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.code().unwrap_or(-1), json)
}

/// A number in sse-load's JSON report.
fn num(json: &str, key: &str) -> u64 {
    field(json, key)
        .parse()
        .unwrap_or_else(|_| panic!("{key}: {json}"))
}

#[test]
fn ticks_behind_one_port_are_each_servers_own() {
    // 500 ms ticks: a gap counts as missed past two intervals, so a loaded machine that
    // delays one tick by most of a second must not look like a lost one.
    let (a, _b) = two_behind_one_port("500ms");
    let (code, json) = load_200(&a.url("/events"), "4s", "", || ());
    // Each client got its own server's ticks; the old rule owed it both servers' (50%).
    assert_eq!(code, 0, "{json}");
    assert_eq!(field(&json, "all_delivered"), "true", "{json}");
    assert_eq!(num(&json, "tick_sources"), 2, "{json}");
    assert_eq!(num(&json, "ticks_missed"), 0, "{json}");
    let delivered = num(&json, "ticks_delivered");
    assert_eq!(num(&json, "ticks_expected"), delivered);
    assert!(delivered >= 200 * 6, "4 s of 500 ms ticks each: {json}");
    let every: f64 = field(&json, "tick_interval_ms").parse().unwrap();
    assert!((every - 500.0).abs() < 25.0, "inferred: {json}");
}

#[test]
fn a_stalled_server_s_clients_miss_their_ticks() {
    let (a, b) = two_behind_one_port("200ms");
    let (base_a, base_b) = (a.fd_count(), b.fd_count());
    let mut on_b = 0;
    let (code, json) = load_200(&a.url("/events"), "6s", "--tick-interval 200ms", || {
        let streams = || (a.fd_count() + b.fd_count()).saturating_sub(base_a + base_b);
        assert!(util::eventually(Duration::from_secs(30), || streams() >= 200));
        on_b = b.fd_count().saturating_sub(base_b) as u64;
        // The window opens once every stream is open; stop B inside it for 7.5 intervals.
        thread::sleep(Duration::from_secs(1));
        let pid = b.pid().to_string();
        let kill = |sig: &str| Command::new("kill").args([sig, &pid]).status().unwrap();
        kill("-STOP");
        thread::sleep(Duration::from_millis(1500));
        kill("-CONT");
    });
    assert_eq!(code, 3, "INCOMPLETE: {json}");
    assert_eq!(field(&json, "all_delivered"), "false", "{json}");
    assert_eq!(num(&json, "disconnected"), 0, "{json}");
    let missed = num(&json, "ticks_missed");
    assert!(missed >= 3 * on_b && on_b > 0, "B's {on_b} clients: {json}");
    let delivered = num(&json, "ticks_delivered");
    assert_eq!(num(&json, "ticks_expected"), delivered + missed);
}
