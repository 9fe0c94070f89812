//! Incremental request-head parsing on top of `httparse`, with limits.
//!
//! `httparse` keeps no state and re-parses the whole buffer on every call, so a head that
//! arrives a byte at a time would cost quadratic time. [`find_head_end`] scans only the bytes
//! that are new since the last call (the hyper approach); `httparse` runs once, on a complete
//! head. Everything kept from the head is copied into owned fields: no borrow outlives a read.

//!
//! What the parser decides and what it leaves to routing: it refuses what makes the byte
//! stream ambiguous (bad framing, broken syntax, oversized heads), and reports everything
//! else (the body's [`BodyFraming`] whatever the method, `Host` problems, keep-alive) in the
//! [`RequestHead`] for routing to act on.

pub use super::response::Connection;
pub use super::target::percent_decode;
use super::target::{parse_target, valid_authority};

/// Most headers a request may carry (more is 431).
pub const MAX_HEADERS: usize = 64;

/// Why a request head was refused; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, or broken syntax, or a target in none of the accepted forms: 400.
    Malformed,
    /// The head (or one of its parts) exceeds the size limit or header count: 431.
    TooLarge,
    /// The body's framing cannot be known for sure (RFC 9112 §6.3), so neither the body nor
    /// the next request can be found: conflicting or unparsable `Content-Length`,
    /// `Content-Length` with `Transfer-Encoding`, `Transfer-Encoding` whose last coding is not
    /// `chunked` or that applies `chunked` twice, `Transfer-Encoding` on HTTP/1.0: 400.
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

    /// The one-line reason sent in the error response's body.
    pub fn message(self) -> &'static str {
        match self {
            HeadError::Malformed => "malformed request",
            HeadError::TooLarge => "request head too large",
            HeadError::BadFraming => "conflicting or invalid Content-Length / Transfer-Encoding",
        }
    }
}

/// The request method, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    /// A CORS preflight, or `OPTIONS *`.
    Options,
    /// Any other token (405 on known paths).
    Other,
}

/// How the request's body is delimited (RFC 9112 §6.3), whatever the method: a `GET` with a
/// `Content-Length` has a body too, and the next request starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body (a `POST` without a length
    /// is 411).
    None,
    /// `Content-Length: n` (n may be 0).
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
}

/// The parts of a request head the server uses, copied out of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The path, without the query string, percent-decoding not applied. Taken from the
    /// target in any form: `/p?q`, `http://host/p?q` (absolute-form), `*` (`OPTIONS` only).
    pub path: String,
    /// Query parameters in order, percent-decoded (`+` is a space).
    pub query: Vec<(String, String)>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The authority of an absolute-form target, else the first `Host` header's value.
    pub host: Option<String>,
    /// Why the request must be refused with 400 for its `Host` (RFC 9112 §3.2): missing on
    /// HTTP/1.1, sent more than once, or not a valid authority. Routing checks it with
    /// [`RequestHead::host_problem`]; the parser only reports it.
    host_problem: Option<&'static str>,
    pub accept: Option<String>,
    pub last_event_id: Option<String>,
    pub authorization: Option<String>,
    /// Every `Cookie` header's raw value, joined with `; ` (private topics read their token
    /// cookie from it; other cookies are never looked at).
    pub cookie: Option<Vec<u8>>,
    /// `Origin` (CORS), for routing's origin policy.
    pub origin: Option<String>,
    /// `Access-Control-Request-Method`: with `OPTIONS`, this is a CORS preflight.
    pub cors_request_method: Option<String>,
    pub content_length: Option<u64>,
    /// A `Transfer-Encoding` header was present.
    pub transfer_encoding: bool,
    /// `Transfer-Encoding` is exactly `chunked` (the only coding we decode).
    pub chunked: bool,
    /// How the body is delimited: what must be read (kept or discarded) before the next
    /// request on the connection.
    pub framing: BodyFraming,
    /// `Transfer-Encoding` names a coding before the final `chunked` (e.g. `gzip, chunked`):
    /// the framing is known (the body can be discarded) but its content cannot be used; a
    /// consumer of the body answers 501.
    pub unsupported_coding: bool,
    /// `Expect: 100-continue` was sent on HTTP/1.1 (an HTTP/1.0 client does not know the
    /// interim response, RFC 9110 §10.1.1: ignored there).
    pub expect_continue: bool,
    /// The connection must close after the response (`Connection: close`, or HTTP/1.0 without
    /// `keep-alive`).
    pub close: bool,
    /// An HTTP/1.0 request asked for `Connection: keep-alive` and the connection is kept: the
    /// answer must say `Connection: keep-alive` (an HTTP/1.0 client assumes close otherwise).
    pub keep_alive_announced: bool,
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

    /// `Err(message)` when the request must be answered 400 for its `Host` header.
    pub fn host_problem(&self) -> Result<(), &'static str> {
        self.host_problem.map_or(Ok(()), Err)
    }

    /// True when body bytes follow the head (to read, kept or discarded, before the next
    /// request).
    pub fn has_body(&self) -> bool {
        !matches!(self.framing, BodyFraming::None | BodyFraming::Length(0))
    }

    /// True for a CORS preflight: `OPTIONS` with `Access-Control-Request-Method`.
    pub fn is_preflight(&self) -> bool {
        self.method == Method::Options && self.cors_request_method.is_some()
    }

    /// What a complete answer to this request says about the connection.
    pub fn connection(&self) -> Connection {
        if self.close {
            Connection::Close
        } else if self.keep_alive_announced {
            Connection::KeepAliveAnnounced
        } else {
            Connection::KeepAlive
        }
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

/// What the framing headers said, gathered over all header lines.
#[derive(Default)]
struct FramingHeaders {
    content_length: Option<u64>,
    /// Every coding of every `Transfer-Encoding` line, in order, lowercased.
    codings: Vec<String>,
    transfer_encoding: bool,
}

impl FramingHeaders {
    /// One `Content-Length` line: digits, or a list of identical digit strings (RFC 9110
    /// §8.6); every line must agree.
    fn add_content_length(&mut self, value: &[u8]) -> Result<(), HeadError> {
        let text = std::str::from_utf8(value).map_err(|_| HeadError::BadFraming)?;
        for item in text.split(',') {
            let item = item.trim_matches([' ', '\t']);
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::BadFraming);
            }
            let n: u64 = item.parse().map_err(|_| HeadError::BadFraming)?;
            if self.content_length.is_some_and(|prev| prev != n) {
                return Err(HeadError::BadFraming);
            }
            self.content_length = Some(n);
        }
        Ok(())
    }

    /// One `Transfer-Encoding` line: its codings join the list (several lines form one list).
    fn add_transfer_encoding(&mut self, value: &[u8]) {
        self.transfer_encoding = true;
        let text = String::from_utf8_lossy(value);
        self.codings.extend(
            text.split(',')
                .map(|c| c.trim_matches([' ', '\t']).to_ascii_lowercase())
                .filter(|c| !c.is_empty()),
        );
    }

    /// The body's framing (RFC 9112 §6.1, §6.3), and whether a coding other than `chunked`
    /// was applied.
    fn resolve(&self, minor_version: u8) -> Result<(BodyFraming, bool), HeadError> {
        if !self.transfer_encoding {
            let framing = self
                .content_length
                .map_or(BodyFraming::None, BodyFraming::Length);
            return Ok((framing, false));
        }
        let chunked_last = self.codings.last().is_some_and(|c| c == "chunked");
        let chunked_once = self.codings.iter().filter(|c| *c == "chunked").count() == 1;
        if minor_version == 0 || self.content_length.is_some() || !chunked_last || !chunked_once {
            return Err(HeadError::BadFraming);
        }
        Ok((BodyFraming::Chunked, self.codings.len() > 1))
    }
}

/// What `Host` and `Connection` said, gathered over all header lines.
#[derive(Default)]
struct ConnectionHeaders {
    hosts: usize,
    host_invalid: bool,
    says_close: bool,
    says_keep_alive: bool,
}

impl ConnectionHeaders {
    fn host_problem(&self, minor_version: u8) -> Option<&'static str> {
        if self.hosts > 1 {
            Some("more than one Host header")
        } else if self.hosts == 0 && minor_version == 1 {
            Some("HTTP/1.1 requires a Host header")
        } else if self.host_invalid {
            Some("invalid Host header")
        } else {
            None
        }
    }
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
        Some("OPTIONS") => Method::Options,
        Some(_) => Method::Other,
        None => return Err(HeadError::Malformed),
    };
    let target = req.path.ok_or(HeadError::Malformed)?;
    let target = parse_target(target, method == Method::Options).ok_or(HeadError::Malformed)?;
    let minor_version = req.version.ok_or(HeadError::Malformed)?;
    let mut out = RequestHead {
        method,
        path: target.path,
        query: target.query,
        minor_version,
        host: None,
        host_problem: None,
        accept: None,
        last_event_id: None,
        authorization: None,
        cookie: None,
        origin: None,
        cors_request_method: None,
        content_length: None,
        transfer_encoding: false,
        chunked: false,
        framing: BodyFraming::None,
        unsupported_coding: false,
        expect_continue: false,
        close: false,
        keep_alive_announced: false,
    };
    let mut framing = FramingHeaders::default();
    let mut conn = ConnectionHeaders::default();
    for h in req.headers.iter() {
        let name = h.name;
        let text = || String::from_utf8_lossy(h.value).trim().to_owned();
        if name.eq_ignore_ascii_case("content-length") {
            framing.add_content_length(h.value)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            framing.add_transfer_encoding(h.value);
        } else if name.eq_ignore_ascii_case("host") {
            conn.hosts += 1;
            let value = text();
            conn.host_invalid |= !valid_authority(&value);
            out.host.get_or_insert(value);
        } else if name.eq_ignore_ascii_case("accept") {
            out.accept = Some(String::from_utf8_lossy(h.value).into_owned());
        } else if name.eq_ignore_ascii_case("last-event-id") {
            out.last_event_id = Some(text());
        } else if name.eq_ignore_ascii_case("authorization") {
            out.authorization = Some(text());
        } else if name.eq_ignore_ascii_case("cookie") {
            let all = out.cookie.get_or_insert_with(Vec::new);
            if !all.is_empty() {
                all.extend_from_slice(b"; ");
            }
            all.extend_from_slice(h.value);
        } else if name.eq_ignore_ascii_case("origin") {
            out.origin = Some(text());
        } else if name.eq_ignore_ascii_case("access-control-request-method") {
            out.cors_request_method = Some(text());
        } else if name.eq_ignore_ascii_case("expect") {
            out.expect_continue =
                minor_version == 1 && h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(h.value).split(',') {
                let token = token.trim();
                conn.says_close |= token.eq_ignore_ascii_case("close");
                conn.says_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    (out.framing, out.unsupported_coding) = framing.resolve(minor_version)?;
    out.content_length = framing.content_length;
    out.transfer_encoding = framing.transfer_encoding;
    out.chunked = out.framing == BodyFraming::Chunked && !out.unsupported_coding;
    out.close = conn.says_close || (minor_version == 0 && !conn.says_keep_alive);
    out.keep_alive_announced = minor_version == 0 && !out.close;
    out.host_problem = conn.host_problem(minor_version);
    if target.authority.is_some() {
        // An absolute-form target's authority replaces `Host` (RFC 9112 §3.2.2).
        out.host = target.authority;
    }
    Ok(out)
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
// Made once per request and moved straight out: boxing the head would cost an allocation
// per request to save stack space in a value that never sits in a collection.
#[allow(clippy::large_enum_variant)]
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
#[path = "request_tests.rs"]
mod tests;
