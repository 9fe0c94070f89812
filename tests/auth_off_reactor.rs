//! Token signatures checked off the reactor, against the real binary: many concurrent ES256
//! streams with distinct tokens (each a first sight, so each checked on the verifier thread)
//! while an open stream keeps receiving; every valid token streams, every invalid one gets
//! the 401/403 it gets inline; a tiny `--jwt-verify-queue` answers what does not fit 503 and
//! counts it. Correctness only, not timing (`benches/token_storm.sh` measures).

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use util::{Server, Stream, eventually, http, status_of};

const EC_PRIVATE: &[u8] = include_bytes!("../src/auth/testdata/ec-private.pem");
const EC_PUBLIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/auth/testdata/ec-public.pem"
);
const PUBLISH: &str = "the-publish-token";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn es(subscribe: &[String], exp: u64) -> String {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE).expect("test key");
    let claims = json!({"exp": exp, "sse": {"subscribe": subscribe}});
    encode(&Header::new(Algorithm::ES256), &claims, &key).expect("signs")
}

/// What the request with token number `n` must get, and the token.
fn case(n: usize) -> (u16, &'static str, String) {
    let topic = format!("user/{n}");
    let later = unix_now() + 3600;
    match n % 10 {
        // The claims name another topic.
        7 => (
            403,
            "insufficient_scope",
            es(&[format!("user/x{n}")], later),
        ),
        // A signature that does not verify (one character inside it changed).
        8 => {
            let t = es(std::slice::from_ref(&topic), later);
            let at = t.len() - 10;
            let swap = if &t[at..=at] == "A" { "B" } else { "A" };
            (
                401,
                "bad token signature",
                format!("{}{swap}{}", &t[..at], &t[at + 1..]),
            )
        }
        9 => (401, "token expired", es(&[topic], unix_now() - 60)),
        _ => (200, "", es(&[topic], later)),
    }
}

fn server(extra: &[&str]) -> Server {
    let mut args = vec![
        "--interval",
        "off",
        "--keepalive",
        "off",
        "--jwt-public-key",
        EC_PUBLIC,
        "--publish-token",
        PUBLISH,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn publish(addr: SocketAddr, topic: &str, data: &str) -> u16 {
    let raw = format!(
        "POST /publish?topic={topic} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PUBLISH}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{data}",
        data.len()
    );
    status_of(&http(addr, &raw).0)
}

#[test]
fn concurrent_distinct_es256_tokens_all_get_their_answer_while_a_stream_keeps_receiving() {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 20;
    let server = server(&[]);
    let addr = server.addr;
    // The open stream, and a publisher feeding it all along.
    let mut open = Stream::open(addr, "/events", &[]);
    assert!(open.head.starts_with("HTTP/1.1 200"), "{}", open.head);
    let storming = Arc::new(AtomicBool::new(true));
    let feeder = {
        let storming = storming.clone();
        std::thread::spawn(move || {
            let mut sent = 0u32;
            while storming.load(Ordering::Relaxed) || sent < 20 {
                assert_eq!(publish(addr, "", &format!("tick {sent}")), 200);
                sent += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            sent
        })
    };
    let cases: Vec<_> = (0..THREADS * PER_THREAD).map(case).collect();
    let workers: Vec<_> = cases
        .chunks(PER_THREAD)
        .enumerate()
        .map(|(w, chunk)| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                for (i, (want, says, token)) in chunk.into_iter().enumerate() {
                    let n = w * PER_THREAD + i;
                    let auth = format!("Authorization: Bearer {token}");
                    let path = format!("/events?topic=user/{n}");
                    let mut s = Stream::open(addr, &path, &[&auth]);
                    let status = status_of(&s.head);
                    assert_eq!(status, want, "token {n}: {}", s.head);
                    if want == 200 {
                        // It streams: an event of its topic reaches it.
                        assert_eq!(
                            publish(addr, &format!("user/{n}"), &format!("for {n}")),
                            200
                        );
                        let events = s.wait_events(1, Duration::from_secs(10));
                        assert_eq!(
                            events.first().map(|e| e.data.clone()),
                            Some(format!("for {n}")),
                            "token {n}"
                        );
                    } else {
                        assert!(s.head.contains(says), "token {n}: {}", s.head);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("every request got its documented answer");
    }
    storming.store(false, Ordering::Relaxed);
    let sent = feeder.join().expect("the feeder's publishes were taken") as usize;
    // The open stream got every event, in order, during the storm and after.
    open.wait_events(sent, Duration::from_secs(10));
    let got: Vec<String> = open.events.iter().map(|e| e.data.clone()).collect();
    let want: Vec<String> = (0..sent).map(|i| format!("tick {i}")).collect();
    assert_eq!(got, want);
    // Every token was a first sight with a signature to check: all went to the thread.
    let checks = (THREADS * PER_THREAD) as f64;
    assert_eq!(server.metric("sse_jwt_verify_checks_total"), checks);
    assert_eq!(server.metric("sse_jwt_verify_refused_total"), 0.0);
    assert_eq!(server.metric("sse_jwt_verify_queue"), 0.0);
    assert_eq!(server.metric("sse_jwt_cache_misses_total"), checks);
    // A valid token seen again is answered from the cache, with no check.
    let token = &cases[0].2;
    let again = Stream::open(
        addr,
        "/events?topic=user/0",
        &[&format!("Authorization: Bearer {token}")],
    );
    assert!(again.head.starts_with("HTTP/1.1 200"), "{}", again.head);
    assert_eq!(server.metric("sse_jwt_verify_checks_total"), checks);
}

#[test]
fn a_full_verify_queue_answers_503_with_retry_after_and_counts_it() {
    const CLIENTS: usize = 48;
    let server = server(&["--jwt-verify-queue", "1"]);
    // Every request written before any answer is read: they reach the reactor together.
    let mut socks: Vec<TcpStream> = (0..CLIENTS)
        .map(|n| {
            let token = es(&[format!("user/{n}")], unix_now() + 3600);
            let mut s = TcpStream::connect(server.addr).expect("connect");
            let req = format!(
                "GET /events?topic=user/{n} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            );
            s.write_all(req.as_bytes()).expect("write");
            s
        })
        .collect();
    let mut busy = 0;
    for (n, s) in socks.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let k = s.read(&mut buf).unwrap_or(0);
            assert!(
                k > 0,
                "request {n}: no answer: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..k]);
        }
        let text = String::from_utf8_lossy(&got);
        match status_of(&text) {
            200 => {}
            503 => {
                assert!(text.contains("\r\nRetry-After: 1\r\n"), "{text}");
                busy += 1;
            }
            other => panic!("request {n}: {other}: {text}"),
        }
    }
    assert!(eventually(Duration::from_secs(5), || server
        .metric("sse_jwt_verify_queue")
        == 0.0));
    assert_eq!(server.metric("sse_jwt_verify_refused_total"), busy as f64);
    assert_eq!(
        server.metric("sse_jwt_verify_checks_total"),
        CLIENTS as f64,
        "refused checks were handed out too"
    );
}

#[test]
fn with_no_verify_queue_signatures_are_checked_inline_and_no_series_is_shown() {
    let server = server(&["--jwt-verify-queue", "0"]);
    let (want, _, token) = case(1);
    let s = Stream::open(
        server.addr,
        "/events?topic=user/1",
        &[&format!("Authorization: Bearer {token}")],
    );
    assert_eq!(status_of(&s.head), want);
    let metrics = http(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .1;
    assert!(!metrics.contains("sse_jwt_verify"), "{metrics}");
    assert!(
        metrics.contains("sse_jwt_cache_misses_total 1\n"),
        "{metrics}"
    );
}
