//! HTTP/1.1 framing and conformance against the real binary with raw sockets, so that no
//! proxy in front can disagree about where a request ends: bodies on any method, strict
//! chunked framing, `Host`, absolute-form targets, `Expect` and keep-alive on HTTP/1.0, HEAD on every GET endpoint, CORS preflight,
//! empty publish bodies.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use util::{Server, Stream, eventually, publish};

const SEC: Duration = Duration::from_secs(1);

/// One response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Response {
    status: u16,
    /// The head's lines after the status line, as sent.
    headers: Vec<String>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Splits what the server sent into responses. `head_only[i]` says the i-th final response
/// answers a HEAD (no body whatever its `Content-Length`); 1xx responses are interim and
/// take no slot. Bytes that do not form a complete response are returned as the remainder.
fn split_responses(mut bytes: &[u8], head_only: &[bool]) -> (Vec<Response>, Vec<u8>) {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<String> = lines.map(str::to_owned).collect();
        let mut r = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let interim = (100..200).contains(&status);
        let no_body = interim
            || status == 204
            || status == 304
            || head_only
                .get(out.iter().filter(|r: &&Response| r.status >= 200).count())
                .copied()
                .unwrap_or(false);
        let len: usize = if no_body {
            0
        } else {
            r.header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let start = end + 4;
        if bytes.len() < start + len {
            break;
        }
        r.body = bytes[start..start + len].to_vec();
        bytes = &bytes[start + len..];
        out.push(r);
    }
    (out, bytes.to_vec())
}

/// Sends `raw` (whose last request should say `Connection: close`), reads until the server
/// closes (bounded), and splits the answers.
fn exchange(addr: SocketAddr, raw: &[u8], head_only: &[bool]) -> (Vec<Response>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(3 * SEC)).unwrap();
    s.write_all(raw).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    split_responses(&out, head_only)
}

/// The final (non-1xx) statuses.
fn statuses(responses: &[Response]) -> Vec<u16> {
    responses
        .iter()
        .map(|r| r.status)
        .filter(|s| *s >= 200)
        .collect()
}

fn quiet_server() -> Server {
    Server::start(&["--interval", "off", "--max-body", "1000"])
}

/// A publish that must never happen: if any reaches the server, `sse_events_published_total`
/// says so.
const SMUGGLED: &str = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nsmuggled";

#[test]
fn get_with_content_length_body_gets_one_answer_and_publishes_nothing() {
    let server = quiet_server();
    for path in ["/health", "/metrics", "/clients"] {
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{SMUGGLED}\
             GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            SMUGGLED.len()
        );
        let (responses, rest) = exchange(server.addr, raw.as_bytes(), &[]);
        assert_eq!(statuses(&responses), [200, 200], "{path}: {responses:?}");
        assert_eq!(responses[1].body, b"ok\n");
        assert!(rest.is_empty(), "{path}: {rest:?}");
    }
    assert_eq!(server.metric("sse_events_published_total"), 0.0);
}

#[test]
fn get_with_chunked_body_then_pipelined_request_gets_one_answer_each() {
    let server = quiet_server();
    let raw = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{SMUGGLED}\r\n0\r\n\r\n\
         GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        SMUGGLED.len()
    );
    let (responses, rest) = exchange(server.addr, raw.as_bytes(), &[]);
    assert_eq!(statuses(&responses), [200, 200], "{responses:?}");
    assert!(responses.iter().all(|r| r.body == b"ok\n"));
    assert!(rest.is_empty());
    assert_eq!(server.metric("sse_events_published_total"), 0.0);
}

#[test]
fn a_get_body_over_max_body_is_refused_with_413() {
    let server = quiet_server();
    let raw = b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n";
    let (responses, _) = exchange(server.addr, raw, &[]);
    assert_eq!(statuses(&responses), [413]);
    assert_eq!(responses[0].header("connection"), Some("close"));
}

/// A chunked publish, the body given raw.
fn chunked_publish(body: &str) -> Vec<u8> {
    format!(
        "POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
    )
    .into_bytes()
}

#[test]
fn strict_chunked_framing() {
    let server = quiet_server();
    let refused = [
        ("bare LF after the size", "3\nabc\r\n0\r\n\r\n"),
        ("bare LF after the data", "3\r\nabc\n0\r\n\r\n"),
        ("bare LF at the end", "3\r\nabc\r\n0\r\n\n"),
        ("space before the size", " 3\r\nabc\r\n0\r\n\r\n"),
        ("space after the size", "3 \r\nabc\r\n0\r\n\r\n"),
        ("bare CR in an extension", "3;a\rb\r\nabc\r\n0\r\n\r\n"),
        ("size overflow", "10000000000000003\r\nabc\r\n0\r\n\r\n"),
        (
            "trailer without colon",
            "3\r\nabc\r\n0\r\nnot a field\r\n\r\n",
        ),
    ];
    for (name, body) in refused {
        let (responses, _) = exchange(server.addr, &chunked_publish(body), &[]);
        assert_eq!(statuses(&responses), [400], "{name}: {responses:?}");
    }
    let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let (responses, _) = exchange(
        server.addr,
        &chunked_publish(&format!("3\r\nabc\r\n0\r\n{many}\r\n")),
        &[],
    );
    assert_eq!(statuses(&responses), [400], "too many trailers");
    assert_eq!(server.metric("sse_events_published_total"), 0.0);
    // The strict form with an extension (and BWS before it) and a trailer is accepted.
    let mut watcher = Stream::open(server.addr, "/events", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    let (responses, _) = exchange(
        server.addr,
        &chunked_publish("3 ;a=b\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"),
        &[],
    );
    assert_eq!(statuses(&responses), [200], "{responses:?}");
    watcher.wait_events(1, 3 * SEC);
    assert_eq!(watcher.events[0].data, "abc");
}

#[test]
fn host_is_required_once_on_http11() {
    let server = quiet_server();
    for (name, raw) in [
        ("no Host", "GET /health HTTP/1.1\r\n\r\n"),
        (
            "two Hosts",
            "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        ("invalid Host", "GET /health HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        (
            "two Hosts on HTTP/1.0",
            "GET /health HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        ),
        (
            "absolute-form without Host",
            "GET http://x/health HTTP/1.1\r\n\r\n",
        ),
    ] {
        let (responses, _) = exchange(server.addr, raw.as_bytes(), &[]);
        assert_eq!(statuses(&responses), [400], "{name}: {responses:?}");
        assert_eq!(responses[0].header("connection"), Some("close"), "{name}");
    }
    // HTTP/1.0 without Host is fine.
    let (responses, _) = exchange(server.addr, b"GET /health HTTP/1.0\r\n\r\n", &[]);
    assert_eq!(statuses(&responses), [200]);
}

#[test]
fn absolute_form_targets_are_accepted() {
    let server = quiet_server();
    let raw = b"GET http://x:3000/health HTTP/1.1\r\nHost: x:3000\r\nConnection: close\r\n\r\n";
    let (responses, _) = exchange(server.addr, raw, &[]);
    assert_eq!(statuses(&responses), [200], "{responses:?}");
    assert_eq!(responses[0].body, b"ok\n");
    // Path and query are taken from the absolute-form target.
    let mut watcher = Stream::open(server.addr, "/events?topic=abs", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    let raw = b"POST http://x/publish?topic=abs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    let (responses, _) = exchange(server.addr, raw, &[]);
    assert_eq!(statuses(&responses), [200], "{responses:?}");
    watcher.wait_events(1, 3 * SEC);
    assert_eq!(watcher.events[0].data, "hi");
}

#[test]
fn expect_continue_is_ignored_on_http10() {
    let server = quiet_server();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    s.write_all(b"POST /publish HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    let mut early = [0u8; 64];
    let n = s.read(&mut early).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "an HTTP/1.0 client got {:?}",
        String::from_utf8_lossy(&early[..n])
    );
    s.write_all(b"hello").unwrap();
    s.set_read_timeout(Some(3 * SEC)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let (responses, _) = split_responses(&out, &[]);
    assert_eq!(
        responses.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200]
    );
    // HTTP/1.1 still gets its interim answer.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(3 * SEC)).unwrap();
    s.write_all(b"POST /publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 25];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn http10_keep_alive_is_announced_and_kept() {
    let server = quiet_server();
    let raw = b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /health HTTP/1.0\r\n\r\n";
    let (responses, rest) = exchange(server.addr, raw, &[]);
    assert_eq!(statuses(&responses), [200, 200], "{responses:?}");
    assert_eq!(responses[0].header("connection"), Some("keep-alive"));
    assert_eq!(responses[1].header("connection"), Some("close"));
    assert!(rest.is_empty());
}

#[test]
fn head_on_health_has_no_body() {
    let server = quiet_server();
    let raw = b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (responses, rest) = exchange(server.addr, raw, &[true, false]);
    assert_eq!(statuses(&responses), [200, 200], "{responses:?}");
    assert_eq!(responses[0].header("content-length"), Some("3"));
    assert!(responses[0].body.is_empty());
    assert_eq!(responses[1].body, b"ok\n");
    assert!(rest.is_empty());
}

#[test]
fn head_on_metrics_and_clients_has_no_body() {
    let server = quiet_server();
    for path in ["/metrics", "/clients"] {
        // The HEAD answer is followed directly by the GET's: no body bytes in between.
        let raw = format!(
            "HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let (responses, rest) = exchange(server.addr, raw.as_bytes(), &[true, false]);
        assert_eq!(statuses(&responses), [200, 200], "{path}: {responses:?}");
        assert!(responses[0].header("content-length").is_some(), "{path}");
        assert!(responses[0].body.is_empty());
        assert_eq!(responses[1].body, b"ok\n", "{path}");
        assert!(rest.is_empty(), "{path}");
    }
}

#[test]
fn options_preflight_on_publish_is_204() {
    let server = quiet_server();
    let raw = b"OPTIONS /publish HTTP/1.1\r\nHost: x\r\nOrigin: http://page.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n";
    let (responses, rest) = exchange(server.addr, raw, &[]);
    assert_eq!(statuses(&responses), [204], "{responses:?}");
    let r = &responses[0];
    assert!(r.header("access-control-allow-origin").is_some());
    assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("Authorization, Content-Type, Last-Event-ID")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(r.body.is_empty() && rest.is_empty());
}

#[test]
fn empty_publish_body_is_an_event_with_empty_data() {
    let server = quiet_server();
    let mut watcher = Stream::open(server.addr, "/events", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    let (status, _) = publish(server.addr, "", "");
    assert_eq!(status, 200);
    let (responses, _) = exchange(server.addr, &chunked_publish("0\r\n\r\n"), &[]);
    assert_eq!(statuses(&responses), [200]);
    let deadline = Instant::now() + 3 * SEC;
    while watcher.events.len() < 2 && Instant::now() < deadline {
        watcher.fill();
    }
    let data: Vec<&str> = watcher.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["", ""]);
}

#[cfg(test)]
mod splitter {
    use super::*;

    #[test]
    fn splits_pipelined_responses_and_interim_ones() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 400 Bad";
        let (r, rest) = split_responses(wire, &[false, true]);
        assert_eq!(
            r.iter().map(|r| r.status).collect::<Vec<_>>(),
            [100, 200, 200, 204]
        );
        assert_eq!(r[1].body, b"ok");
        assert!(r[2].body.is_empty());
        assert_eq!(rest, b"HTTP/1.1 400 Bad");
    }
}
