//! Response heads and complete responses.
//!
//! The event stream is **close-delimited**: no `Content-Length`, no chunked coding, and
//! `Connection: close`; the body ends when the server closes the connection. Why not chunked:
//! it would add a chunk-size line to every frame (bytes and, worse, a per-length prefix that
//! breaks "one encoded frame shared by all clients"), and nginx's default
//! `proxy_http_version 1.0` upstream cannot take chunked bodies, while a close-delimited body is
//! valid in both HTTP/1.0 and HTTP/1.1 and is what a stream that never ends is anyway: the
//! connection cannot be reused after it.

use std::fmt::Write as _;

/// The head of every event stream.
pub const STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
Access-Control-Allow-Origin: *\r\n\
X-Accel-Buffering: no\r\n\
Content-Encoding: identity\r\n\
Connection: close\r\n\
\r\n";

/// The reason phrase of each status we send.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete response with a body of known length (HTTP/1.1 persistence; [`answer`] takes a
/// [`Connection`] and serves HEAD too).
///
/// `extra_headers` are whole lines without the trailing CRLF. With `close`, the response
/// says `Connection: close` and the server closes after sending it.
pub fn complete(
    status: u16,
    content_type: &str,
    extra_headers: &[&str],
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let connection = if close {
        Connection::Close
    } else {
        Connection::KeepAlive
    };
    answer(status, content_type, extra_headers, body, connection, false)
}

/// What a complete response says about its connection, decided from the request
/// ([`crate::http::request::RequestHead::connection`]) and the server's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// `Connection: close`; the server closes after sending.
    Close,
    /// Kept for the next request; nothing said (the HTTP/1.1 default).
    KeepAlive,
    /// Kept for the next request of an HTTP/1.0 client, which assumes close unless told:
    /// `Connection: keep-alive`.
    KeepAliveAnnounced,
}

impl Connection {
    /// True when the connection is kept for another request.
    pub fn keeps_alive(self) -> bool {
        self != Connection::Close
    }

    /// The header line this answer carries, if any (without CRLF).
    pub fn header(self) -> Option<&'static str> {
        match self {
            Connection::Close => Some("Connection: close"),
            Connection::KeepAlive => None,
            Connection::KeepAliveAnnounced => Some("Connection: keep-alive"),
        }
    }
}

/// The interim answer to `Expect: 100-continue` (HTTP/1.1 only).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A complete response to any request, HEAD included: with `head_only` the head still
/// announces the body's `Content-Length` (as for GET, RFC 9110 §9.3.2) but no body follows.
/// A `204` carries neither body nor `Content-Type`/`Content-Length` (a plain `OPTIONS`:
/// `answer(204, "", &[ALLOW_READ], b"", ..)`).
///
/// `extra_headers` are whole lines without the trailing CRLF.
pub fn answer(
    status: u16,
    content_type: &str,
    extra_headers: &[&str],
    body: &[u8],
    connection: Connection,
    head_only: bool,
) -> Vec<u8> {
    let mut head = String::with_capacity(160);
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason(status));
    // A 204 has no content and must not announce a length (RFC 9110 §8.6, §15.3.5).
    if status != 204 {
        let _ = write!(
            head,
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    head.push_str("Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n");
    for h in extra_headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if let Some(h) = connection.header() {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !head_only && status != 204 {
        out.extend_from_slice(body);
    }
    out
}

/// The `Allow` header of a 405 on a read-only endpoint (`/`, `/events`, `/health`,
/// `/metrics`, `/clients`): HEAD works wherever GET does.
pub const ALLOW_READ: &str = "Allow: GET, HEAD, OPTIONS";
/// The `Allow` header of a 405 on `/publish`.
pub const ALLOW_PUBLISH: &str = "Allow: POST, OPTIONS";

/// A complete error response: a one-line plain-text body naming the problem, then close.
pub fn error(status: u16, message: &str, extra_headers: &[&str]) -> Vec<u8> {
    let body = format!("{status} {}: {message}\n", reason(status));
    complete(
        status,
        "text/plain; charset=utf-8",
        extra_headers,
        body.as_bytes(),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each status the server sends carries its RFC 9110 reason phrase (HTTP/1.1 clients
    /// ignore it, but people read it in `curl -i` and logs).
    #[test]
    fn every_status_sent_has_its_reason_phrase() {
        for (status, phrase) in [
            (100, "Continue"),
            (200, "OK"),
            (204, "No Content"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (411, "Length Required"),
            (413, "Content Too Large"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (503, "Service Unavailable"),
        ] {
            assert_eq!(reason(status), phrase, "{status}");
        }
        assert_eq!(reason(299), "Unknown");
    }

    #[test]
    fn error_is_complete_http() {
        let r = String::from_utf8(error(405, "use GET", &["Allow: GET, HEAD"])).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(r.contains("\r\nAllow: GET, HEAD\r\n"));
        assert!(r.contains("\r\nConnection: close\r\n"));
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn answer_to_head_announces_the_length_without_the_body() {
        let get = answer(
            200,
            "text/plain",
            &[],
            b"ok\n",
            Connection::KeepAlive,
            false,
        );
        let head = answer(200, "text/plain", &[], b"ok\n", Connection::KeepAlive, true);
        assert_eq!(&get[..head.len()], &head[..]);
        assert_eq!(&get[head.len()..], b"ok\n");
        let text = String::from_utf8(head).unwrap();
        assert!(text.contains("\r\nContent-Length: 3\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        assert!(!text.contains("Connection:"));
    }

    #[test]
    fn connection_header_follows_the_request() {
        let close = String::from_utf8(answer(200, "t", &[], b"", Connection::Close, false));
        assert!(close.unwrap().contains("\r\nConnection: close\r\n"));
        let http10 = answer(200, "t", &[], b"", Connection::KeepAliveAnnounced, false);
        let http10 = String::from_utf8(http10).unwrap();
        assert!(http10.contains("\r\nConnection: keep-alive\r\n"));
        assert!(Connection::KeepAliveAnnounced.keeps_alive());
        assert!(!Connection::Close.keeps_alive());
        assert_eq!(
            complete(200, "t", &[], b"x", false),
            answer(200, "t", &[], b"x", Connection::KeepAlive, false)
        );
    }

    #[test]
    fn a_204_announces_no_length() {
        let r = answer(
            204,
            "",
            &[ALLOW_PUBLISH],
            b"ignored",
            Connection::KeepAlive,
            false,
        );
        let r = String::from_utf8(r).unwrap();
        assert!(r.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!r.contains("Content-Length") && !r.contains("Content-Type"));
        assert!(r.ends_with("\r\nAllow: POST, OPTIONS\r\n\r\n"), "{r}");
    }

    #[test]
    fn stream_head_has_required_headers() {
        for h in [
            "Content-Type: text/event-stream",
            "Cache-Control: no-cache",
            "X-Accel-Buffering: no",
            "Content-Encoding: identity",
        ] {
            assert!(STREAM_HEAD.contains(h), "{h}");
        }
    }
}
