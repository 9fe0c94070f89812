//! Hostile and unlucky clients against the real binary: bad input, churn with resets, slow
//! readers, connection floods, and the observability endpoints that show them.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use util::{Server, Stream, eventually, http, publish, reset, runs, server_send_queues, status_of};

const SEC: Duration = Duration::from_secs(1);

/// Sends `raw`, then reads until close (bounded): the server's answer, or "" for a bare close.
fn send_raw(addr: SocketAddr, raw: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn bad_inputs_get_their_status_and_never_hurt_a_streaming_client() {
    let server = Server::start(&[
        "--interval",
        "off",
        "--head-timeout",
        "600ms",
        "--max-body",
        "100",
    ]);
    let mut watcher = Stream::open(server.addr, "/events", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(10_000));
    // (request bytes, expected status; 0 = just a close)
    let table: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage", b"\x8f\x12\xfe\xff garbage \x00\r\n\r\n".to_vec(), 400),
        ("NUL bytes", b"GET /\x00 HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("oversize head", big_head.into_bytes(), 431),
        ("never-ending head", b"GET / HTTP/1.1\r\nX-Slow: ".to_vec(), 408),
        ("invalid method", b"BREW /events HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 405),
        ("method with bad chars", b"G(T / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), 400),
        ("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), 408),
        ("duplicate Content-Length", b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\nx".to_vec(), 400),
        ("TE with CL", b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("TE gzip", b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".to_vec(), 501),
        ("bad chunk size", b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n".to_vec(), 400),
        ("chunked over max", b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n".to_vec(), 413),
        ("no length", b"POST /publish HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 411),
        ("body over max", b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n".to_vec(), 413),
        ("negative length", b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n".to_vec(), 400),
        ("authority-form target", b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n".to_vec(), 400),
        ("TE not ending in chunked", b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(), 400),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec(), 400),
        ("too many topics", format!("GET /events?{} HTTP/1.1\r\nHost: x\r\n\r\n", (0..20).map(|i| format!("topic=t{i}")).collect::<Vec<_>>().join("&")).into_bytes(), 400),
    ];
    for (name, raw, status) in &table {
        let text = send_raw(server.addr, raw, 5 * SEC);
        assert_eq!(status_of(&text), *status, "{name}: {text:?}");
        assert!(text.contains("Connection: close"), "{name}: {text:?}");
        // The streaming client still gets the next event.
        let n = watcher.events.len();
        publish(server.addr, "", &format!("after {name}"));
        watcher.wait_events(n + 1, 3 * SEC);
        assert_eq!(
            watcher.events.last().map(|e| e.data.as_str()),
            Some(format!("after {name}").as_str()),
            "after {name}"
        );
    }
    // A body longer than announced: the event is the announced bytes; the rest is a bad next request.
    let text = send_raw(
        server.addr,
        b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcdefghij\r\n\r\n",
        3 * SEC,
    );
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert_eq!(
        status_of(
            text.split("\r\n\r\n")
                .nth(1)
                .map(|_| &text[text.rfind("HTTP/1.1").unwrap()..])
                .unwrap_or("")
        ),
        400
    );
    let n = watcher.events.len();
    watcher.wait_events(n + 1, 3 * SEC);
    assert_eq!(watcher.events.last().unwrap().data, "abc");
    // Pipelined requests after a GET are read and discarded (bounded): the stream goes on.
    let mut piped = Stream::open(server.addr, "/events", &[]);
    piped
        .sock
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    publish(server.addr, "", "after pipelining");
    piped.wait_events(1, 3 * SEC);
    assert_eq!(piped.events[0].data, "after pipelining");
    assert!(
        !piped.buf.windows(8).any(|w| w == b"HTTP/1.1"),
        "no response may be written into a stream"
    );
    // ...but a client that keeps sending is cut off.
    let mut chatty = Stream::open(server.addr, "/events", &[]);
    let _ = chatty.sock.write_all(&[b'z'; 10_000]);
    assert!(
        chatty.wait_closed(3 * SEC),
        "a client sending past the bound must be closed"
    );
    assert!(server.metric("sse_connections_closed_total{reason=\"limit\"}") >= 1.0);
}

#[test]
fn churn_with_resets_leaves_no_fds_or_clients_behind() {
    let server = Server::start(&["--interval", "50ms"]);
    let baseline_fds = server.fd_count();
    let mut keeper = Stream::open(server.addr, "/", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    for round in 0..6 {
        let mut socks = Vec::new();
        for i in 0..250 {
            let mut s = TcpStream::connect(server.addr).unwrap();
            // Some complete their request, some stop mid-head.
            let req: &[u8] = if i % 3 == 0 {
                b"GET /events HT"
            } else {
                b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n"
            };
            s.write_all(req).unwrap();
            socks.push(s);
        }
        std::thread::sleep(Duration::from_millis(80 + round * 10));
        for (i, s) in socks.into_iter().enumerate() {
            if i % 2 == 0 { reset(s) } else { drop(s) }
        }
    }
    assert!(
        eventually(5 * SEC, || server.metric("sse_clients") == 1.0
            && server.metric("sse_connections") <= 2.0),
        "clients gauge not back to baseline: {} clients, {} connections",
        server.metric("sse_clients"),
        server.metric("sse_connections")
    );
    assert!(
        eventually(5 * SEC, || server.fd_count() <= baseline_fds + 1),
        "fds: {} > baseline {}",
        server.fd_count(),
        baseline_fds + 1
    );
    let n = keeper.events.len();
    keeper.wait_events(n + 3, 3 * SEC);
    assert!(
        keeper.events.len() >= n + 3,
        "the steady client stalled during churn"
    );
    assert!(
        server.metric("sse_connections_closed_total{reason=\"reset\"}")
            + server.metric("sse_connections_closed_total{reason=\"normal\"}")
            >= 1000.0
    );
}

#[test]
fn slow_readers_are_dropped_and_others_get_every_event_on_time() {
    let server = Server::start(&[
        "--interval",
        "off",
        "--max-backlog",
        "262144",
        "--history-bytes",
        "262144",
    ]);
    let base_rss = server.rss_kib();
    // Slow clients: tiny receive buffers, never read.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        slow.push(s);
    }
    let mut fast: Vec<Stream> = (0..4)
        .map(|_| Stream::open(server.addr, "/events", &[]))
        .collect();
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 12.0));
    let payload = "p".repeat(8000);
    let started = Instant::now();
    let total = 600;
    // Publish over one keep-alive connection, reading the fast clients as we go.
    let mut publisher = TcpStream::connect(server.addr).unwrap();
    publisher.set_read_timeout(Some(3 * SEC)).unwrap();
    let mut resp = [0u8; 4096];
    for i in 0..total {
        let body = format!("{i} {payload}");
        let req = format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        publisher.write_all(req.as_bytes()).unwrap();
        let _ = publisher.read(&mut resp).unwrap();
        for f in &mut fast {
            f.fill_nonblocking();
        }
    }
    for f in &mut fast {
        f.wait_events(total, 10 * SEC);
        assert_eq!(f.events.len(), total, "a fast client missed events");
        for (i, e) in f.events.iter().enumerate() {
            assert!(e.data.starts_with(&format!("{i} ")), "out of order at {i}");
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < 20 * SEC,
        "delivery to fast clients took {elapsed:?}"
    );
    // ~4.8 MB was published; each slow client could hold at most the kernel buffers plus
    // 256 KiB of backlog before being dropped.
    assert!(
        eventually(5 * SEC, || server
            .metric("sse_connections_closed_total{reason=\"slow\"}")
            == 8.0),
        "slow clients not dropped"
    );
    let rss = server.rss_kib();
    assert!(
        rss < base_rss + 16 * 1024,
        "RSS grew from {base_rss} KiB to {rss} KiB"
    );
    // Kernel memory, reported (bounded per connection by --max-send-buffer; asserted in
    // tests/lockouts.rs): what the server's sockets still hold unsent.
    if runs("ss", &["-V"]) {
        let queued: u64 = server_send_queues(server.addr.port())
            .iter()
            .map(|(_, q)| q)
            .sum();
        let _ = writeln!(
            std::io::stderr(),
            "slow readers: server RSS {base_rss} -> {rss} KiB, kernel send queues {queued} bytes"
        );
    }
}

#[test]
fn clients_endpoint_lists_the_laggards_and_metrics_have_every_family() {
    let server = Server::start(&["--interval", "off"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /events?topic=lag HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut f = Stream::open(server.addr, "/events?topic=lag", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 2.0));
    // 720 KB: the non-reading client lags (its kernel send buffer is capped by
    // --max-send-buffer) but stays under the 1 MiB backlog bound.
    let payload = "q".repeat(60_000);
    for _ in 0..12 {
        publish(server.addr, "?topic=lag", &payload);
        f.fill_nonblocking();
    }
    let (head, body) = http(
        server.addr,
        "GET /clients HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&head), 200);
    assert!(
        body.starts_with("{\"clients\":[{\"address\":\"127.0.0.1:"),
        "{body}"
    );
    assert!(body.contains("\"topics\":[\"lag\"]"));
    assert!(body.contains("\"queued_bytes\":"));
    assert!(body.contains("\"since_last_write_ms\":"));
    assert!(body.contains("\"total\":2"));
    let (_, metrics) = http(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    for family in [
        "sse_clients ",
        "sse_topic_clients{topic=\"lag\"} 2",
        "sse_connections_accepted_total",
        "sse_connections_closed_total{reason=\"normal\"}",
        "sse_connections_closed_total{reason=\"reset\"}",
        "sse_connections_closed_total{reason=\"slow\"}",
        "sse_connections_closed_total{reason=\"error\"}",
        "sse_connections_closed_total{reason=\"limit\"}",
        "sse_events_published_total 12",
        "sse_frames_written_total",
        "sse_bytes_written_total",
        "sse_write_syscalls_total",
        "sse_history_events{topic=\"lag\"}",
        "sse_last_fanout_seconds",
        "sse_responses_total{status=\"200\"}",
    ] {
        assert!(
            metrics.contains(family),
            "metrics lack {family}:\n{metrics}"
        );
    }
    drop(s);
}

#[test]
fn a_connection_flood_past_the_limit_is_refused_without_spinning() {
    let server = Server::start(&["--interval", "200ms", "--max-clients", "20"]);
    let mut keep = Stream::open(server.addr, "/", &[]);
    // 20 streaming + 64 overflow connections are held; each newcomer past that evicts the
    // oldest connection that has not sent a request.
    let mut flood = Vec::new();
    for _ in 0..300 {
        match TcpStream::connect(server.addr) {
            Ok(s) => flood.push(s),
            Err(_) => break,
        }
    }
    let cpu_before = cpu_ticks(server.pid());
    std::thread::sleep(SEC);
    let cpu_used = cpu_ticks(server.pid()) - cpu_before;
    assert!(
        cpu_used < 30,
        "the server used {cpu_used} ticks of CPU in 1 s while flooded (spinning?)"
    );
    assert!(server.metric("sse_connections_closed_total{reason=\"limit\"}") >= 200.0);
    let n = keep.events.len();
    keep.wait_events(n + 2, 3 * SEC);
    assert!(keep.events.len() >= n + 2);
    drop(flood);
}

#[test]
fn shutdown_gives_queued_bytes_a_grace_period_and_a_second_signal_exits_at_once() {
    let mut server = Server::start(&[
        "--interval",
        "off",
        "--shutdown-grace",
        "5s",
        "--max-backlog",
        "16777216",
        "--history-bytes",
        "16777216",
    ]);
    let mut stuck = TcpStream::connect(server.addr).unwrap();
    stuck
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    let big = "z".repeat(60_000);
    for _ in 0..100 {
        publish(server.addr, "", &big);
    }
    util::signal(server.pid(), 15);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited before the grace period with bytes queued"
    );
    let started = Instant::now();
    util::signal(server.pid(), 2);
    let status = server
        .wait_exit(3 * SEC)
        .expect("second signal must exit at once");
    assert!(started.elapsed() < 2 * SEC);
    assert_eq!(status.code(), Some(0));
    let _ = stuck.read(&mut [0u8; 16]);
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

#[test]
fn out_of_file_descriptors_on_accept_neither_spins_nor_crashes() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: prlimit (util-linux) not installed");
        return;
    }
    let server = Server::start(&["--interval", "200ms"]);
    let mut keep = Stream::open(server.addr, "/", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    // Lower the running server's open-file limit to just above what it uses: accept then
    // fails with EMFILE, far below the server's own connection limit.
    let used = server.fd_count() as u64;
    // Only the soft limit: lowering the hard limit too could not be undone below (raising a
    // hard limit needs CAP_SYS_RESOURCE, which a sandbox may not grant).
    let lim = format!("--nofile={}:", used + 3);
    let ok = std::process::Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), &lim])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut flood = Vec::new();
    for _ in 0..50 {
        if let Ok(s) = TcpStream::connect(server.addr) {
            flood.push(s);
        }
    }
    let cpu_before = cpu_ticks(server.pid());
    std::thread::sleep(SEC);
    let cpu_used = cpu_ticks(server.pid()) - cpu_before;
    assert!(
        cpu_used < 30,
        "the server used {cpu_used} ticks of CPU in 1 s while out of fds (spinning?)"
    );
    let n = keep.events.len();
    keep.wait_events(n + 2, 3 * SEC);
    assert!(
        keep.events.len() >= n + 2,
        "the streaming client stalled while the server was out of fds"
    );
    assert!(server.child.id() > 0);
    drop(flood);
    // Room again: the limit back up, the server serves new connections.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap()
        .to_string();
    let restored = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &server.pid().to_string(),
            &format!("--nofile={hard}:"),
        ])
        .status()
        .unwrap();
    assert!(
        restored.success(),
        "prlimit could not raise the soft limit back"
    );
    assert!(eventually(5 * SEC, || server
        .metric("sse_connections_refused_total")
        >= 1.0));
}

/// What one connection of a connect storm was told.
#[derive(Debug, PartialEq, Eq)]
enum Told {
    /// A stream began (its head, and it stays open).
    Streaming,
    /// `503` with `Retry-After: N`, then a close.
    ComeBackIn(u64),
    /// EventSource: the stream head, `retry: N` (ms), then a close.
    RetryIn(u64),
}

/// Reads what the server answered a storm request (`event_source`: it asked for
/// `text/event-stream`): bounded, a stream that stays open counts as streaming.
fn told(mut s: TcpStream, event_source: bool) -> Told {
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + 5 * SEC;
    let mut closed = false;
    while Instant::now() < deadline {
        let text = String::from_utf8_lossy(&buf);
        let head_done = text.contains("\r\n\r\n");
        if head_done && text.starts_with("HTTP/1.1 200 ") && !event_source {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // Nothing more within the read timeout: a stream that stays open.
            Err(_) if head_done => break,
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    match status_of(head) {
        200 if !closed => Told::Streaming,
        200 => {
            let ms = body
                .strip_prefix("retry: ")
                .and_then(|r| r.strip_suffix("\n\n"));
            Told::RetryIn(
                ms.and_then(|m| m.parse().ok())
                    .unwrap_or_else(|| panic!("a closed 200 without one retry: frame: {text:?}")),
            )
        }
        503 => {
            assert!(closed, "a 503 left open: {text:?}");
            assert!(
                body.ends_with("too many new streams, try again\n"),
                "{text:?}"
            );
            let after = head
                .lines()
                .find_map(|l| l.strip_prefix("Retry-After: "))
                .and_then(|v| v.parse().ok());
            Told::ComeBackIn(after.unwrap_or_else(|| panic!("no Retry-After: {text:?}")))
        }
        _ => panic!("unexpected answer to a storm request: {text:?}"),
    }
}

/// 200 stream requests at once past `--max-stream-rate 20` (a burst of 20): the first get
/// streams, the rest are told to come back (curl-like: 503 + `Retry-After` of 2 to 6 s; an
/// EventSource: 200 + `retry:` of 2 to 7 s + close), never more admitted than the bucket
/// allowed over the storm's length; a stream opened before keeps receiving; `/metrics`
/// counts every refusal.
#[test]
fn a_connect_storm_over_the_stream_rate_is_told_to_come_back() {
    let server = Server::start(&["--interval", "200ms", "--max-stream-rate", "20"]);
    let started = Instant::now();
    let mut keep = Stream::open(server.addr, "/events", &[]);
    assert!(keep.head.starts_with("HTTP/1.1 200 "), "{}", keep.head);
    let mut storm = Vec::new();
    for i in 0..200 {
        // Every tenth of the second half asks as an EventSource does.
        let event_source = i >= 100 && i % 10 == 0;
        let accept = if event_source {
            "Accept: text/event-stream\r\n"
        } else {
            ""
        };
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.write_all(format!("GET /events HTTP/1.1\r\nHost: x\r\n{accept}\r\n").as_bytes())
            .unwrap();
        storm.push((s, event_source));
    }
    let answers: Vec<(Told, bool)> = storm.into_iter().map(|(s, es)| (told(s, es), es)).collect();
    let elapsed = started.elapsed();
    let streaming = answers
        .iter()
        .filter(|(t, _)| *t == Told::Streaming)
        .count();
    let mut refused = 0;
    let mut es_refused = 0;
    for (t, es) in &answers {
        match t {
            Told::Streaming => {}
            Told::ComeBackIn(secs) => {
                assert!(!es && (2..=6).contains(secs), "{t:?}");
                refused += 1;
            }
            Told::RetryIn(ms) => {
                assert!(*es && (2_000..7_000).contains(ms), "{t:?}");
                refused += 1;
                es_refused += 1;
            }
        }
    }
    // The bucket: 20 at once, then 20 a second (the stream opened first took one).
    let allowed = 20 + (20.0 * elapsed.as_secs_f64()).ceil() as usize;
    assert!(
        streaming < allowed && streaming >= 19,
        "{streaming} streams admitted in {elapsed:?} (at most {allowed} allowed)"
    );
    assert!(
        es_refused > 0,
        "{refused} refused, {es_refused} EventSource"
    );
    assert_eq!(streaming + refused, 200);
    assert_eq!(
        server.metric("sse_streams_refused_total{reason=\"rate\"}"),
        refused as f64
    );
    assert_eq!(server.metric("sse_stream_requests_total"), 201.0);
    // The open stream kept its ticks and gets a publish; publishing is not limited.
    let n = keep.events.len();
    let (status, body) = publish(server.addr, "", "after the storm");
    assert_eq!(status, 200, "{body}");
    keep.wait_events(n + 3, 5 * SEC);
    assert!(
        keep.types_and_datas()
            .iter()
            .any(|(_, d)| *d == "after the storm"),
        "{:?}",
        keep.types_and_datas()
    );
}
