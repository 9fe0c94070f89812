//! Incremental request-head parsing on top of `httparse`, with limits.
//!
//! `httparse` keeps no state and re-parses the whole buffer on every call, so a head that
//! arrives a byte at a time would cost quadratic time. [`find_head_end`] scans only the bytes
//! that are new since the last call (the hyper approach); `httparse` runs once, on a complete
//! head. Everything kept from the head is copied into owned fields: no borrow outlives a read.

/// Most headers a request may carry (more is 431).
pub const MAX_HEADERS: usize = 64;

/// Why a request head was refused; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, or broken syntax: 400.
    Malformed,
    /// The head (or one of its parts) exceeds the size limit or header count: 431.
    TooLarge,
    /// Conflicting or unparsable `Content-Length`, or `Content-Length` with
    /// `Transfer-Encoding` (a request-smuggling shape): 400.
    BadFraming,
}

impl HeadError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed | HeadError::BadFraming => 400,
            HeadError::TooLarge => 431,
        }
    }
}

/// The request method, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    /// Any other token (405 on known paths).
    Other,
}

/// The parts of a request head the server uses, copied out of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The path, without the query string, percent-decoding not applied.
    pub path: String,
    /// Query parameters in order, percent-decoded (`+` is a space).
    pub query: Vec<(String, String)>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub accept: Option<String>,
    pub last_event_id: Option<String>,
    pub authorization: Option<String>,
    pub content_length: Option<u64>,
    /// A `Transfer-Encoding` header was present.
    pub transfer_encoding: bool,
    /// `Transfer-Encoding` is exactly `chunked` (the only coding we decode).
    pub chunked: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The connection must close after the response (`Connection: close`, or HTTP/1.0 without
    /// `keep-alive`).
    pub close: bool,
}

impl RequestHead {
    /// All values of query parameter `name`, in order.
    pub fn params<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of query parameter `name`.
    pub fn param<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.params(name).next()
    }

    /// True when the client asked for an event stream (`Accept` names `text/event-stream`).
    pub fn accepts_event_stream(&self) -> bool {
        self.accept
            .as_deref()
            .is_some_and(|a| a.contains("text/event-stream"))
    }
}

/// Finds the end of a request head (`\r\n\r\n` or a bare `\n\n`) in `buf`, looking only at
/// bytes from `scanned_before` on (minus the 3 bytes a terminator could straddle).
/// Returns the length of the head including its terminator.
pub fn find_head_end(buf: &[u8], scanned_before: usize) -> Option<usize> {
    let from = scanned_before.saturating_sub(3);
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if i >= 1 && buf[i - 1] == b'\n' {
                return Some(i + 1);
            }
            if i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n' {
                return Some(i + 1);
            }
        }
        i += 1;
    }
    None
}

/// Parses a complete head (as delimited by [`find_head_end`]).
pub fn parse_head(head: &[u8]) -> Result<RequestHead, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some(_) => Method::Other,
        None => return Err(HeadError::Malformed),
    };
    let target = req.path.ok_or(HeadError::Malformed)?;
    if !target.starts_with('/') {
        return Err(HeadError::Malformed);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, parse_query(q)),
        None => (target, Vec::new()),
    };
    let minor_version = req.version.ok_or(HeadError::Malformed)?;
    let mut out = RequestHead {
        method,
        path: path.to_owned(),
        query,
        minor_version,
        accept: None,
        last_event_id: None,
        authorization: None,
        content_length: None,
        transfer_encoding: false,
        chunked: false,
        expect_continue: false,
        close: minor_version == 0,
    };
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value)
                .map_err(|_| HeadError::BadFraming)?
                .trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::BadFraming);
            }
            let n: u64 = text.parse().map_err(|_| HeadError::BadFraming)?;
            if out.content_length.is_some_and(|prev| prev != n) {
                return Err(HeadError::BadFraming);
            }
            out.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Several headers combine into one list of codings: only a lone `chunked` is ours.
            out.chunked =
                !out.transfer_encoding && h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            out.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("accept") {
            out.accept = Some(String::from_utf8_lossy(h.value).into_owned());
        } else if name.eq_ignore_ascii_case("last-event-id") {
            out.last_event_id = Some(String::from_utf8_lossy(h.value).trim().to_owned());
        } else if name.eq_ignore_ascii_case("authorization") {
            out.authorization = Some(String::from_utf8_lossy(h.value).trim().to_owned());
        } else if name.eq_ignore_ascii_case("expect") {
            out.expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(h.value).split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    out.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && minor_version == 0 {
                    out.close = false;
                }
            }
        }
    }
    if out.transfer_encoding && out.content_length.is_some() {
        return Err(HeadError::BadFraming);
    }
    Ok(out)
}

/// Splits a query string into decoded `(name, value)` pairs.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), String::new()),
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept as written; invalid UTF-8 is
/// replaced (U+FFFD), so the result is always a valid string.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len()
                && hex(bytes[i + 1]).is_some()
                && hex(bytes[i + 2]).is_some() =>
            {
                let hi = hex(bytes[i + 1]).unwrap_or(0);
                let lo = hex(bytes[i + 2]).unwrap_or(0);
                out.push(hi << 4 | lo);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Accumulates a request head that arrives over several reads, within a size limit.
///
/// Guarantees: memory held is at most `max_head` bytes; each byte is scanned for the head
/// terminator a bounded number of times (linear total work, however the head is split).
#[derive(Debug, Default)]
pub struct HeadReader {
    buf: Vec<u8>,
}

/// What feeding bytes into a [`HeadReader`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadProgress {
    /// More bytes are needed.
    Partial,
    /// The head is complete; `rest` holds the bytes that followed it (a body, or more).
    Complete { head: RequestHead, rest: Vec<u8> },
}

impl HeadReader {
    /// Bytes buffered so far.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds newly read bytes. Copies into the reader's buffer only when the head is not
    /// complete within `bytes` alone.
    pub fn feed(&mut self, bytes: &[u8], max_head: usize) -> Result<HeadProgress, HeadError> {
        if self.buf.is_empty() {
            if let Some(end) = find_head_end(bytes, 0) {
                if end > max_head {
                    return Err(HeadError::TooLarge);
                }
                let head = parse_head(&bytes[..end])?;
                return Ok(HeadProgress::Complete {
                    head,
                    rest: bytes[end..].to_vec(),
                });
            }
            if bytes.len() > max_head {
                return Err(HeadError::TooLarge);
            }
            self.buf.extend_from_slice(bytes);
            return Ok(HeadProgress::Partial);
        }
        let before = self.buf.len();
        // Take no more than one byte past the limit: enough to know it was exceeded.
        let take = bytes.len().min(max_head + 1 - before.min(max_head));
        self.buf.extend_from_slice(&bytes[..take]);
        match find_head_end(&self.buf, before) {
            Some(end) if end <= max_head => {
                let head = parse_head(&self.buf[..end])?;
                let mut rest = self.buf.split_off(end);
                rest.extend_from_slice(&bytes[take..]);
                self.buf = Vec::new();
                Ok(HeadProgress::Complete { head, rest })
            }
            Some(_) => Err(HeadError::TooLarge),
            None if self.buf.len() > max_head => Err(HeadError::TooLarge),
            None => Ok(HeadProgress::Partial),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GET: &[u8] = b"GET /events?topic=a&topic=b%20c&lastEventId=x-1 HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\nLast-Event-ID:  42 \r\n\r\n";

    fn feed_all(parts: &[&[u8]], max: usize) -> Result<HeadProgress, HeadError> {
        let mut r = HeadReader::default();
        let mut last = Ok(HeadProgress::Partial);
        for p in parts {
            last = r.feed(p, max);
            if !matches!(last, Ok(HeadProgress::Partial)) {
                return last;
            }
        }
        last
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
        assert!(head.accepts_event_stream());
        assert!(!head.close);
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
        let Ok(HeadProgress::Complete { rest, .. }) = feed_all(&[&req[..10], &req[10..]], 8192)
        else {
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
        assert_eq!(
            feed_all(
                &[b"POST /publish HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
                8192
            ),
            Err(HeadError::BadFraming)
        );
        assert_eq!(
            feed_all(&[b"POST /publish HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"], 8192),
            Err(HeadError::BadFraming)
        );
        assert_eq!(
            feed_all(&[b"POST /p HTTP/1.1\r\nContent-Length: -1\r\n\r\n"], 8192),
            Err(HeadError::BadFraming)
        );
    }

    #[test]
    fn versions_and_connection() {
        let Ok(HeadProgress::Complete { head, .. }) = feed_all(&[b"GET / HTTP/1.0\r\n\r\n"], 8192)
        else {
            panic!()
        };
        assert!(head.close);
        let Ok(HeadProgress::Complete { head, .. }) = feed_all(
            &[b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n"],
            8192,
        ) else {
            panic!()
        };
        assert!(head.close);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
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
}
