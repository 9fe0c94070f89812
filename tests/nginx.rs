//! Behind nginx: the sample configuration of README.md's `## Behind nginx` section (an
//! ordinary `proxy_pass`, no `proxy_buffering off`) in front of the real server, with Debian's
//! nginx run as a foreground process on a free loopback port. Events must arrive through it
//! without buffering delay (the server sends `X-Accel-Buffering: no`); a control server block
//! that ignores that header shows the delay the test would catch.
//!
//! Skips (and passes) without nginx, unless `SSE_REQUIRE_ECOSYSTEM=1`.

mod util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use util::nginx::{Nginx, NginxDir, first_block, free_port, nginx_binary, readme_section};
use util::{Server, Stream, ecosystem_skip, eventually, http, publish, status_of};

/// Most time from publishing (through nginx) to the event reaching a client (through nginx).
const MAX_LATENCY: Duration = Duration::from_millis(300);

/// The ```nginx block of README.md's `## Behind nginx` section (its first: the plain one).
fn readme_nginx_block() -> String {
    first_block(&readme_section("Behind nginx"), "nginx")
}

/// Publishes through `via`, then reads `stream` until the event arrives; returns the delay.
fn publish_and_time(
    via: SocketAddr,
    stream: &mut Stream,
    data: &str,
    limit: Duration,
) -> Option<Duration> {
    let t0 = Instant::now();
    let (status, id) = publish(via, "", data);
    assert_eq!(status, 200, "publish through nginx: {id}");
    let id = id.trim().to_owned();
    let deadline = t0 + limit;
    while Instant::now() < deadline {
        if stream.events.iter().any(|e| e.last_event_id == id) {
            return Some(t0.elapsed());
        }
        if !stream.fill() {
            panic!("the stream through nginx ended");
        }
    }
    stream
        .events
        .iter()
        .any(|e| e.last_event_id == id)
        .then(|| t0.elapsed())
}

#[test]
fn events_through_nginx_without_buffering() {
    let Some(bin) = nginx_binary() else {
        return ecosystem_skip("nginx test", "no nginx (apt-get install nginx)");
    };
    let block = readme_nginx_block();
    let server = Server::start(&["--interval", "1s"]);
    let (port, control_port) = (free_port(), free_port());
    let site = block
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("127.0.0.1:3000", &server.addr.to_string());
    assert!(
        site.contains(&format!("listen 127.0.0.1:{port};")),
        "the README block has `listen 80;`:\n{block}"
    );
    assert!(
        site.contains(&server.addr.to_string()),
        "the README block proxies to 127.0.0.1:3000:\n{block}"
    );

    let dir = NginxDir::new();
    let conf = dir.0.join("nginx.conf");
    let config = format!(
        "master_process off;\n\
         events {{ worker_connections 128; }}\n\
         http {{\n\
         access_log off;\n\
         # A global setting that must not hold streams back (they say Content-Encoding: identity).\n\
         gzip on; gzip_types text/event-stream; gzip_min_length 1;\n\
         {temp}\
         # --- from README.md, `## Behind nginx` ---\n\
         {site}\n\
         # --- control: the same, but ignoring X-Accel-Buffering (nginx buffers) ---\n\
         server {{ listen 127.0.0.1:{control_port}; location / {{ proxy_pass http://{}; proxy_ignore_headers X-Accel-Buffering; }} }}\n\
         }}\n",
        server.addr,
        temp = NginxDir::temp_paths(),
    );
    std::fs::write(&conf, &config).expect("write nginx.conf");
    let mut nginx = Nginx::start(&bin, &dir.0, &conf);
    let via: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let control: SocketAddr = format!("127.0.0.1:{control_port}").parse().unwrap();
    let ready = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(via).is_ok() && std::net::TcpStream::connect(control).is_ok()
    });
    assert!(ready, "nginx did not start listening; config:\n{config}");

    // The small endpoints and the demo page pass through.
    let (h, b) = http(
        via,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status_of(&h), b.as_str()), (200, "ok\n"), "{h}");
    let (h, b) = http(
        via,
        "GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&h), 200, "{h}");
    assert!(b.contains("EventSource"), "the demo page through nginx");
    // /clients trusts loopback peers, and behind nginx every peer is loopback: refused.
    let (h, _) = http(
        via,
        "GET /clients HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&h), 403, "/clients must be denied at nginx: {h}");

    // A stream through nginx: ticks, and published events within MAX_LATENCY.
    // A client that accepts gzip: nginx must not compress (and so hold back) the stream.
    let mut stream = Stream::open(via, "/events", &["Accept-Encoding: gzip"]);
    assert!(
        !stream
            .head
            .to_ascii_lowercase()
            .contains("content-encoding: gzip"),
        "nginx compressed the stream: {}",
        stream.head
    );
    assert_eq!(status_of(&stream.head), 200, "{}", stream.head);
    assert!(
        stream
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        stream.head
    );
    let ticks = stream.wait_events(1, Duration::from_secs(3));
    assert!(
        ticks.iter().any(|e| e.data.starts_with("the time is")),
        "no tick through nginx: {ticks:?}"
    );
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let d = publish_and_time(
            via,
            &mut stream,
            &format!("through nginx {i}"),
            Duration::from_secs(3),
        )
        .unwrap_or_else(|| panic!("event {i} did not arrive through nginx within 3 s"));
        worst = worst.max(d);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        worst <= MAX_LATENCY,
        "an event took {worst:?} through nginx (at most {MAX_LATENCY:?})"
    );

    // Resume through nginx: Last-Event-ID passes through.
    let last = stream
        .events
        .last()
        .map(|e| e.last_event_id.clone())
        .expect("an event");
    assert!(!last.is_empty(), "an id");
    drop(stream);
    let (_, missed) = publish(via, "", "missed while away");
    let mut again = Stream::open(via, "/events", &[&format!("Last-Event-ID: {last}")]);
    let got = again.wait_events(1, Duration::from_secs(3));
    assert_eq!(
        got.first().map(|e| e.last_event_id.as_str()),
        Some(missed.trim()),
        "resume through nginx: {got:?}"
    );
    assert_eq!(got[0].data, "missed while away");
    drop(again);

    // The control: with the header ignored, nginx holds small events back, which the
    // latency check above would have caught.
    // (nginx holds back even the response head, so read raw bytes.)
    let mut buffered = std::net::TcpStream::connect(control).expect("connect to the control");
    buffered
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    buffered
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (status, _) = publish(via, "", "held back by a buffering proxy");
    assert_eq!(status, 200);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        match buffered.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        !seen.contains("held back by a buffering proxy"),
        "the control proxy did not buffer: the latency check proves nothing here\n{seen}"
    );
    drop(buffered);

    nginx.stop();
    println!("events through nginx: worst latency {worst:?} (limit {MAX_LATENCY:?})");
}
