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

/// A minimal SSE server: accepts `clients` connections (plus the one sse-load opens first to
/// check the server), answers each request, then sends `events` `ts=` events to all of them
/// (chunked when asked), 100 ms apart, and closes.
fn stand_in(clients: usize, events: usize, chunked: bool) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let mut streams = Vec::new();
        for _ in 0..=clients {
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
