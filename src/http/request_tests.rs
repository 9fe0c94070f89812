//! Unit tests of the request-head reader (`request.rs`).

use super::*;
use proptest::prelude::*;

const GET: &[u8] = b"GET /events?topic=a&topic=b%20c&lastEventId=x-1 HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\nLast-Event-ID:  42 \r\n\r\n";

/// Feeds the parts until the head is complete or refused; the parts after the one that
/// completed the head join its `rest` (as later reads would).
fn feed_all(parts: &[&[u8]], max: usize) -> Result<HeadProgress, HeadError> {
    let mut r = HeadReader::default();
    let mut last = Ok(HeadProgress::Partial);
    for (i, p) in parts.iter().enumerate() {
        last = r.feed(p, max);
        match &mut last {
            Ok(HeadProgress::Partial) => {}
            Ok(HeadProgress::Complete { rest, .. }) => {
                parts[i + 1..]
                    .iter()
                    .for_each(|p| rest.extend_from_slice(p));
                return last;
            }
            Err(_) => return last,
        }
    }
    last
}

fn parse(req: &str) -> Result<RequestHead, HeadError> {
    parse_head(req.as_bytes())
}

#[test]
fn parses_a_get() {
    let Ok(HeadProgress::Complete { head, rest }) = feed_all(&[GET], 8192) else {
        panic!()
    };
    assert_eq!(head.method, Method::Get);
    assert_eq!(head.path, "/events");
    assert_eq!(head.params("topic").collect::<Vec<_>>(), vec!["a", "b c"]);
    assert_eq!(head.param("lastEventId"), Some("x-1"));
    assert_eq!(head.last_event_id.as_deref(), Some("42"));
    assert_eq!(head.host.as_deref(), Some("h"));
    assert_eq!(head.host_problem(), Ok(()));
    assert_eq!(head.framing, BodyFraming::None);
    assert!(!head.has_body());
    assert!(head.accepts_event_stream());
    assert!(!head.close);
    assert_eq!(head.connection(), Connection::KeepAlive);
    assert!(rest.is_empty());
}

#[test]
fn byte_by_byte_equals_whole() {
    let whole = feed_all(&[GET], 8192);
    let parts: Vec<&[u8]> = GET.chunks(1).collect();
    assert_eq!(feed_all(&parts, 8192), whole);
}

#[test]
fn rest_is_returned() {
    let mut req = b"POST /publish HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel".to_vec();
    let Ok(HeadProgress::Complete { head, rest }) = feed_all(&[&req], 8192) else {
        panic!()
    };
    assert_eq!(head.content_length, Some(5));
    assert_eq!(rest, b"hel");
    req.extend_from_slice(b"lo");
    // The head completes in the second feed: everything after it in that feed is `rest`.
    let Ok(HeadProgress::Complete { rest, .. }) = feed_all(&[&req[..10], &req[10..]], 8192) else {
        panic!()
    };
    assert_eq!(rest, b"hello");
}

#[test]
fn limits_and_errors() {
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(feed_all(&[big.as_bytes()], 8192), Err(HeadError::TooLarge));
    let parts: Vec<&[u8]> = big.as_bytes().chunks(100).collect();
    assert_eq!(feed_all(&parts, 8192), Err(HeadError::TooLarge));
    assert_eq!(
        feed_all(&[b"\x00\x01garbage\r\n\r\n"], 8192),
        Err(HeadError::Malformed)
    );
    assert_eq!(
        feed_all(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"], 8192),
        Err(HeadError::Malformed)
    );
    let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
    let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(feed_all(&[req.as_bytes()], 8192), Err(HeadError::TooLarge));
}

/// A head of exactly `max_head` bytes is taken, one byte more is not, whether it comes
/// in one read or completes in a later one after a long first part; and a reader never
/// holds more than one byte past the limit.
#[test]
fn the_head_limit_is_exact_in_one_read_or_many() {
    let head_of = |len: usize| {
        let fixed = "GET / HTTP/1.1\r\nX: \r\n\r\n".len();
        format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(len - fixed))
    };
    let max = 8192;
    for (len, ok) in [(max, true), (max + 1, false)] {
        let head = head_of(len);
        let bytes = head.as_bytes();
        let whole = feed_all(&[bytes], max);
        let split = feed_all(&[&bytes[..6000], &bytes[6000..]], max);
        assert_eq!(whole.is_ok(), ok, "{len} bytes in one read");
        assert_eq!(split.is_ok(), ok, "{len} bytes in two reads");
    }
    let mut r = HeadReader::default();
    assert_eq!(
        r.feed(b"GET / HTTP/1.1\r\n", max),
        Ok(HeadProgress::Partial)
    );
    assert_eq!(r.buffered(), 16);
    let flood = vec![b'a'; 3 * max];
    assert_eq!(r.feed(&flood, max), Err(HeadError::TooLarge));
    assert!(r.buffered() <= max + 1, "{} bytes held", r.buffered());
}

/// A bare-LF head (`\n\n`) ends where its blank line does: what follows is the rest.
#[test]
fn a_bare_lf_head_ends_at_its_blank_line() {
    let Ok(HeadProgress::Complete { head, rest }) =
        feed_all(&[b"GET /x HTTP/1.1\nHost: h\n\nNEXT"], 8192)
    else {
        panic!()
    };
    assert_eq!((head.path.as_str(), rest.as_slice()), ("/x", &b"NEXT"[..]));
    assert_eq!(find_head_end(b"\nGET", 0), None);
    assert_eq!(find_head_end(b"a\n\nb", 0), Some(3));
}

/// Several `Cookie` header lines are one cookie list, joined by `; `.
#[test]
fn cookie_lines_are_joined() {
    let head = parse("GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n").unwrap();
    assert_eq!(head.cookie.as_deref(), Some(&b"a=1; b=2"[..]));
}

#[test]
fn framing_is_refused_when_ambiguous() {
    for req in [
        "POST /publish HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "POST /publish HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
        "POST /publish HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /p HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST /p HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
        "POST /p HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST /p HTTP/1.1\r\nContent-Length: \r\n\r\n",
        // chunked must be the final coding, applied once (RFC 9112 §6.1, §6.3).
        "POST /p HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "POST /p HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n",
        "POST /p HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
        // HTTP/1.0 has no chunked coding: the framing is faulty (RFC 9112 §6.1).
        "POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert_eq!(parse(req), Err(HeadError::BadFraming), "{req:?}");
    }
    // No space before the colon (a classic smuggling shape): httparse refuses it.
    assert_eq!(
        parse("POST /p HTTP/1.1\r\nContent-Length : 5\r\n\r\n"),
        Err(HeadError::Malformed)
    );
}

#[test]
fn framing_follows_the_headers_whatever_the_method() {
    let h = parse("GET /health HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n").unwrap();
    assert_eq!(h.framing, BodyFraming::Length(5));
    assert!(h.has_body());
    let h =
        parse("HEAD /metrics HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    assert_eq!(h.framing, BodyFraming::Chunked);
    assert!(h.chunked && !h.unsupported_coding);
    let h = parse("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!(h.framing, BodyFraming::Length(0));
    assert!(!h.has_body());
    let h = parse("POST /p HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n").unwrap();
    assert_eq!(h.framing, BodyFraming::Length(7));
    let h = parse(
        "POST /p HTTP/1.1\r\nTransfer-Encoding: gzip,\r\n Transfer-Encoding: Chunked\r\n\r\n",
    );
    assert!(h.is_err(), "obs-fold is refused");
    let h =
        parse("POST /p HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap();
    assert_eq!(h.framing, BodyFraming::Chunked);
    assert!(h.unsupported_coding && !h.chunked && h.transfer_encoding);
    let h = parse("POST /p HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(h.framing, BodyFraming::None);
}

#[test]
fn host_is_checked() {
    let problem = |req: &str| parse(req).unwrap().host_problem();
    assert_eq!(
        problem("GET / HTTP/1.1\r\n\r\n"),
        Err("HTTP/1.1 requires a Host header")
    );
    assert_eq!(
        problem("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
        Err("more than one Host header")
    );
    assert_eq!(
        problem("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
        Err("more than one Host header")
    );
    assert_eq!(
        problem("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        Err("invalid Host header")
    );
    assert_eq!(problem("GET / HTTP/1.0\r\n\r\n"), Ok(()));
    assert_eq!(problem("GET / HTTP/1.1\r\nHost:\r\n\r\n"), Ok(()));
    assert_eq!(
        problem("GET / HTTP/1.1\r\nhost: [::1]:3000\r\n\r\n"),
        Ok(())
    );
}

#[test]
fn absolute_and_asterisk_form() {
    let h = parse("GET http://example.com:3000/events?topic=x HTTP/1.1\r\nHost: other\r\n\r\n")
        .unwrap();
    assert_eq!(h.path, "/events");
    assert_eq!(h.param("topic"), Some("x"));
    assert_eq!(h.host.as_deref(), Some("example.com:3000"));
    let h = parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!((h.method, h.path.as_str()), (Method::Options, "*"));
    assert_eq!(
        parse("GET * HTTP/1.1\r\nHost: h\r\n\r\n"),
        Err(HeadError::Malformed)
    );
    assert_eq!(
        parse("CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n"),
        Err(HeadError::Malformed)
    );
}

#[test]
fn versions_connection_and_expect() {
    let h = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(h.close);
    assert_eq!(h.connection(), Connection::Close);
    let h = parse("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").unwrap();
    assert!(h.close);
    let h = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
    assert!(!h.close && h.keep_alive_announced);
    assert_eq!(h.connection(), Connection::KeepAliveAnnounced);
    let h = parse("GET / HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n").unwrap();
    assert!(h.close && !h.keep_alive_announced);
    let h = parse("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert_eq!(h.connection(), Connection::KeepAlive);
    let h = parse("POST /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").unwrap();
    assert!(!h.expect_continue, "HTTP/1.0 has no interim responses");
    let h =
        parse("POST /p HTTP/1.1\r\nExpect: 100-Continue \r\nContent-Length: 1\r\n\r\n").unwrap();
    assert!(h.expect_continue);
}

#[test]
fn preflight_headers() {
    let h = parse(
        "OPTIONS /publish HTTP/1.1\r\nHost: h\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    )
    .unwrap();
    assert!(h.is_preflight());
    assert_eq!(h.origin.as_deref(), Some("https://a.example"));
    assert!(
        !parse("OPTIONS /publish HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .is_preflight()
    );
}

proptest! {
    #[test]
    fn any_split_same_outcome(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                              cuts in proptest::collection::vec(0usize..300, 0..8),
                              valid in any::<bool>()) {
        let input: Vec<u8> = if valid {
            let mut v = b"GET /events?topic=x HTTP/1.1\r\nHost: a\r\n".to_vec();
            v.extend(bytes.iter().map(|b| if *b == b'\r' || *b == b'\n' { b'x' } else { *b }).take(50));
            v.extend_from_slice(b"\r\n\r\nrest");
            v
        } else {
            bytes.clone()
        };
        let whole = feed_all(&[&input], 200);
        let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        points.sort_unstable();
        let mut parts = Vec::new();
        let mut prev = 0;
        for p in points { parts.push(&input[prev..p]); prev = p; }
        parts.push(&input[prev..]);
        prop_assert_eq!(feed_all(&parts, 200), whole);
    }
}
