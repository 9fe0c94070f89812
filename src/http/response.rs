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
        200 => "OK",
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

/// A complete response with a body of known length.
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
    let mut head = String::with_capacity(160 + body.len().min(64));
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason(status));
    let _ = write!(
        head,
        "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    head.push_str("Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\n");
    for h in extra_headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

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
