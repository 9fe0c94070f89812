//! The foundation, end to end: the real binary on port 0, real sockets, real `curl`.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use util::{Server, Stream, eventually, http, status_of};

fn curl_available() -> bool {
    Command::new("curl").arg("--version").output().is_ok()
}

/// `data: the time is 2024-10-13 14:35:22.123456789 +0000 UTC`
fn is_tick_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("data: the time is ") else {
        return false;
    };
    let b = rest.as_bytes();
    rest.len() == "2024-10-13 14:35:22.123456789 +0000 UTC".len()
        && rest.ends_with(" +0000 UTC")
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && rest[20..29].bytes().all(|c| c.is_ascii_digit())
        && chrono::NaiveDateTime::parse_from_str(&rest[..29], "%Y-%m-%d %H:%M:%S%.9f").is_ok()
}

#[test]
fn curl_gets_ticks_in_the_exact_format_an_interval_apart() {
    if !curl_available() {
        eprintln!("SKIP: curl not installed");
        return;
    }
    let server = Server::start(&["--interval", "200ms"]);
    let out = Command::new("curl")
        .args(["-sN", "--max-time", "1.1", &server.url("/")])
        .output()
        .expect("curl");
    let text = String::from_utf8(out.stdout).expect("utf8");
    let ticks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert!(ticks.len() >= 3, "expected several ticks, got {text:?}");
    for t in &ticks {
        assert!(is_tick_line(t), "bad tick frame {t:?}");
    }
    // Consecutive ticks are about one interval apart (by their own timestamps).
    let times: Vec<chrono::NaiveDateTime> = ticks
        .iter()
        .map(|t| {
            chrono::NaiveDateTime::parse_from_str(
                &t["data: the time is ".len()..][..29],
                "%Y-%m-%d %H:%M:%S%.9f",
            )
            .unwrap()
        })
        .collect();
    // (The schedule is fixed-rate: a tick delayed by a busy machine makes the next gap
    // shorter, so check the mean gap, and that no gap is wildly off.)
    let span = (times[times.len() - 1] - times[0]).num_milliseconds();
    let mean = span / (times.len() as i64 - 1);
    assert!(
        (170..=260).contains(&mean),
        "ticks {mean} ms apart on average (interval 200 ms)"
    );
    for w in times.windows(2) {
        let gap = (w[1] - w[0]).num_milliseconds();
        assert!((1..=700).contains(&gap), "ticks {gap} ms apart");
    }
}

#[test]
fn curl_sees_the_stream_headers() {
    if !curl_available() {
        eprintln!("SKIP: curl not installed");
        return;
    }
    let server = Server::start(&["--interval", "200ms"]);
    let out = Command::new("curl")
        .args([
            "-sN",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--max-time",
            "0.5",
            &server.url("/events"),
        ])
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    for h in [
        "http/1.1 200 ok",
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "access-control-allow-origin: *",
        "x-accel-buffering: no",
        "content-encoding: identity",
    ] {
        assert!(head.contains(h), "missing {h:?} in {head}");
    }
}

#[test]
fn two_hundred_clients_receive_the_same_tick() {
    let server = Server::start(&["--interval", "300ms"]);
    let mut clients: Vec<Stream> = (0..200)
        .map(|_| Stream::open(server.addr, "/", &[]))
        .collect();
    assert!(eventually(Duration::from_secs(5), || server
        .metric("sse_clients")
        == 200.0));
    // Every tick broadcast after all 200 subscribed reaches all 200, byte for byte the same.
    let seen: Vec<usize> = clients
        .iter_mut()
        .map(|c| {
            c.fill_nonblocking();
            c.events.len()
        })
        .collect();
    for (c, n) in clients.iter_mut().zip(&seen) {
        c.wait_events(n + 3, Duration::from_secs(5));
        assert!(c.events.len() >= n + 3, "a client stopped receiving ticks");
        assert!(c.events.iter().all(|e| e.data.starts_with("the time is ")));
    }
    let common: Vec<String> = clients[0].events.iter().map(|e| e.data.clone()).collect();
    let shared: Vec<&String> = common
        .iter()
        .filter(|t| {
            clients
                .iter()
                .all(|c| c.events.iter().any(|e| &e.data == *t))
        })
        .collect();
    assert!(
        shared.len() >= 2,
        "fewer than two ticks reached all 200 clients: {shared:?}"
    );
}

#[test]
fn a_client_that_disconnects_is_removed_and_others_go_on() {
    let server = Server::start(&["--interval", "200ms"]);
    let mut keep = Stream::open(server.addr, "/", &[]);
    let gone = Stream::open(server.addr, "/", &[]);
    assert!(eventually(Duration::from_secs(3), || server
        .metric("sse_clients")
        == 2.0));
    drop(gone);
    assert!(
        eventually(Duration::from_secs(3), || server.metric("sse_clients")
            == 1.0),
        "the closed client was not removed"
    );
    let n = keep.events.len();
    keep.wait_events(n + 2, Duration::from_secs(3));
    assert!(
        keep.events.len() >= n + 2,
        "the remaining client stopped receiving"
    );
}

fn expect_status(server: &Server, raw: &[u8], status: u16) -> String {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out); // returns at the server's close
    let text = String::from_utf8_lossy(&out).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    assert_eq!(
        status_of(head),
        status,
        "for {:?}: {text}",
        String::from_utf8_lossy(&raw[..raw.len().min(60)])
    );
    assert!(head.contains("Connection: close"), "{head}");
    let (h, body) = text.split_once("\r\n\r\n").unwrap();
    let len: usize = h
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), len, "incomplete response");
    text
}

#[test]
fn error_statuses_are_complete_responses_then_close() {
    let server = Server::start(&["--interval", "off", "--head-timeout", "700ms"]);
    expect_status(&server, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404);
    let t = expect_status(&server, b"PUT /events HTTP/1.1\r\nHost: x\r\n\r\n", 405);
    assert!(t.contains("Allow: GET, HEAD"));
    let t = expect_status(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        405,
    );
    assert!(t.contains("Allow: "));
    expect_status(&server, b"this is not http\r\n\r\n", 400);
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    expect_status(&server, big.as_bytes(), 431);
    let started = Instant::now();
    expect_status(&server, b"GET / HTTP/1.1\r\nHost: x\r\n", 408);
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[test]
fn sigterm_exits_zero_and_closes_clients() {
    let mut server = Server::start(&["--interval", "200ms"]);
    let mut c = Stream::open(server.addr, "/", &[]);
    c.wait_events(1, Duration::from_secs(3));
    let status = server.terminate().expect("exited");
    assert_eq!(status.code(), Some(0));
    assert!(
        c.wait_closed(Duration::from_secs(3)),
        "client not closed at shutdown"
    );
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for args in [
        &["--interval", "soon"][..],
        &["--listen", "nowhere"],
        &["--max-clients", "0"],
        &["--max-clients", "999999"],
        &["--nope"],
        // Protecting /metrics and /clients needs a token to protect them with.
        &["--protect-stats"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sse-server"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn help_lists_flags_and_env_vars() {
    let out = Command::new(env!("CARGO_BIN_EXE_sse-server"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for f in [
        "--listen",
        "--interval",
        "--max-clients",
        "SSE_LISTEN",
        "SSE_INTERVAL",
    ] {
        assert!(text.contains(f), "--help lacks {f}");
    }
}

#[test]
fn over_the_client_limit_eventsource_gets_retry_and_curl_gets_503() {
    let server = Server::start(&["--interval", "200ms", "--max-clients", "1"]);
    let mut first = Stream::open(server.addr, "/", &[]);
    let (head, body) = http(
        server.addr,
        "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
    );
    assert_eq!(status_of(&head), 200);
    assert!(body.starts_with("retry: "), "{body}");
    let (head, _) = http(
        server.addr,
        "GET /events HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(status_of(&head), 503);
    assert!(head.contains("Retry-After: "));
    first.wait_events(1, Duration::from_secs(2));
    assert!(!first.events.is_empty());
}

#[test]
fn port_zero_prints_the_real_address() {
    let server = Server::start(&[]);
    assert_ne!(server.addr.port(), 0);
    let (head, body) = http(
        server.addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&head), 200);
    assert_eq!(body, "ok\n");
}

#[test]
fn listens_on_ipv6_loopback() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("SKIP: no IPv6 loopback on this machine");
        return;
    };
    drop(probe);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sse-server"))
        .args(["--listen", "[::1]:0", "--interval", "100ms"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap()
        .parse()
        .unwrap();
    assert!(addr.is_ipv6());
    let mut s = Stream::open(addr, "/", &[]);
    s.wait_events(1, Duration::from_secs(3));
    let _ = child.kill();
    let _ = child.wait();
    assert!(s.events[0].data.starts_with("the time is "));
}

/// `--protect-stats`: `/metrics` and `/clients` answer only the publish token, even to a
/// loopback peer (a proxy on the same host makes every peer loopback); `/health` stays open.
#[test]
fn protected_stats_refuse_loopback_without_the_token() {
    let server = Server::start(&["--publish-token", "s3cret", "--protect-stats"]);
    for path in ["/metrics", "/clients"] {
        let (head, body) = http(
            server.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status_of(&head), 401, "{path}: {head}");
        assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
        assert!(!body.contains("sse_"), "{body}");
        let (head, _) = http(
            server.addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n"
            ),
        );
        assert_eq!(status_of(&head), 200, "{path}: {head}");
    }
    let (head, _) = http(
        server.addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&head), 200, "{head}");
}
