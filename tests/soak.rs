//! The soak: connect/disconnect churn (with resets) plus publishing, for a bounded time,
//! against the real binary; prints RSS and open fds at the start and the end and fails if
//! connections or descriptors leaked.
//!
//! Not part of the normal run (it takes minutes):
//! `SOAK_SECONDS=300 cargo test --release --test soak -- --ignored --nocapture`
//! (`SOAK_SECONDS` defaults to 60; `.ci/run` runs a 20-second soak.)

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use util::{Server, Stream, eventually};

fn soak_seconds() -> u64 {
    std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        .clamp(1, 3600)
}

#[test]
#[ignore = "minutes long; run with --ignored (see the module docs)"]
fn soak_churn_and_publish() {
    let server = Server::start(&["--interval", "100ms", "--keepalive", "1s"]);
    let addr = server.addr;
    let mut watcher = Stream::open(addr, "/events?topic=soak&topic=", &[]);
    std::thread::sleep(Duration::from_millis(200));
    let (rss0, fds0) = (server.rss_kib(), server.fd_count());
    println!(
        "soak start: {} s, RSS {rss0} KiB, {fds0} fds",
        soak_seconds()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let churned = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for worker in 0..2u64 {
        let (stop, churned) = (stop.clone(), churned.clone());
        threads.push(std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut socks = Vec::new();
                for i in 0..200 {
                    let Ok(mut s) = TcpStream::connect(addr) else {
                        continue;
                    };
                    let req: &[u8] = match (i + worker) % 4 {
                        0 => b"GET /events?topic=soak HTTP/1.1\r\nHost: x\r\n\r\n",
                        1 => b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
                        2 => b"GET /even",
                        _ => b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                    };
                    let _ = s.write_all(req);
                    socks.push(s);
                }
                std::thread::sleep(Duration::from_millis(50 + round % 50));
                for (i, s) in socks.into_iter().enumerate() {
                    if i % 2 == 0 {
                        util::reset(s);
                    } else {
                        drop(s);
                    }
                    churned.fetch_add(1, Ordering::Relaxed);
                }
                round += 1;
            }
        }));
    }
    {
        let (stop, published) = (stop.clone(), published.clone());
        threads.push(std::thread::spawn(move || {
            let Ok(mut p) = TcpStream::connect(addr) else {
                return;
            };
            let _ = p.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 1024];
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = format!("soak event {i} {}", "x".repeat((i % 500) as usize));
                let req = format!(
                    "POST /publish?topic=soak HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if p.write_all(req.as_bytes()).is_err() || p.read(&mut buf).unwrap_or(0) == 0 {
                    return;
                }
                published.fetch_add(1, Ordering::Relaxed);
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(soak_seconds());
    while Instant::now() < deadline {
        watcher.fill_nonblocking();
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let settled = eventually(Duration::from_secs(15), || {
        server.metric("sse_connections") <= 2.0 && server.fd_count() <= fds0 + 1
    });
    let (rss1, fds1) = (server.rss_kib(), server.fd_count());
    println!(
        "soak end: RSS {rss1} KiB, {fds1} fds; {} connections churned, {} events published, watcher got {} events",
        churned.load(Ordering::Relaxed),
        published.load(Ordering::Relaxed),
        watcher.events.len()
    );
    assert!(
        settled,
        "connections or fds did not return to baseline: {} connections, {fds1} fds (start {fds0})",
        server.metric("sse_connections")
    );
    // What the server counted (the publisher thread may stop between a request and its answer).
    let published = server.metric("sse_events_published_total") as u64;
    let count = |w: &Stream| {
        w.events
            .iter()
            .filter(|e| e.data.starts_with("soak event"))
            .count() as u64
    };
    let mut open = true;
    eventually(Duration::from_secs(5), || {
        open &= watcher.fill_nonblocking();
        count(&watcher) >= published
    });
    let got = count(&watcher);
    assert_eq!(
        got, published,
        "the steady subscriber missed events (connection open: {open})"
    );
    // In order, none twice.
    let numbers: Vec<u64> = watcher
        .events
        .iter()
        .filter_map(|e| {
            e.data
                .strip_prefix("soak event ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        numbers.iter().enumerate().all(|(i, n)| *n == i as u64),
        "out of order or duplicated"
    );
    assert!(
        rss1 < rss0 + 64 * 1024,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );
}
