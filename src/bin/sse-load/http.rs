//! The little HTTP/1.1 a load generator needs: a response head, and one complete response at a
//! time from a keep-alive publish connection. (Chunked stream bodies are decoded with the
//! server crate's [`sse_server::http::chunked::ChunkedDecoder`].)

/// Largest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// What a response head said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// The whole status line, for error messages.
    pub status_line: String,
    pub chunked: bool,
    pub content_length: Option<usize>,
    /// The `Content-Type` value, if any.
    pub content_type: Option<String>,
    /// The bytes of the head (the body starts after them).
    pub len: usize,
}

/// Parses a response head at the start of `buf`: `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(format!("response head larger than {MAX_HEAD} bytes"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            let shown = String::from_utf8_lossy(&buf[..buf.len().min(60)]).into_owned();
            return Err(format!("not an HTTP response ({e}): {shown:?}"));
        }
    };
    let status = resp.code.unwrap_or(0);
    let status_line = format!(
        "HTTP/1.{} {status} {}",
        resp.version.unwrap_or(1),
        resp.reason.unwrap_or("")
    );
    let mut chunked = false;
    let mut content_length = None;
    let mut content_type = None;
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            content_length = value.trim().parse().ok();
        } else if h.name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_owned());
        }
    }
    Ok(Some(Head {
        status,
        status_line,
        chunked,
        content_length,
        content_type,
        len,
    }))
}

impl Head {
    /// Why this head does not start an event stream, if it does not: a status other than
    /// 200, or another content type. The reason is one word-like token (for counting).
    pub fn refusal(&self) -> Option<String> {
        if self.status != 200 {
            return Some(self.status.to_string());
        }
        let ct = self.content_type.as_deref().unwrap_or("none");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("text/event-stream") {
            None
        } else {
            Some(format!(
                "200-content-type-{}",
                essence.replace(char::is_whitespace, "")
            ))
        }
    }
}

/// Splits complete responses off the front of a keep-alive connection's buffer.
/// Returns `(status, bytes consumed)` for the first complete response, if there is one.
pub fn take_response(buf: &[u8]) -> Result<Option<(u16, usize)>, String> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    if head.chunked {
        return Err("chunked publish responses are not supported".into());
    }
    let body = head.content_length.unwrap_or(0);
    if buf.len() < head.len + body {
        return Ok(None);
    }
    Ok(Some((head.status, head.len + body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\nxx")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 200);
        assert!(h.chunked);
        assert_eq!(h.len, 80);
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn refusals() {
        let h = |raw: &[u8]| parse_head(raw).unwrap().unwrap().refusal();
        assert_eq!(
            h(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n"),
            None
        );
        assert_eq!(h(b"HTTP/1.1 503 Busy\r\n\r\n").as_deref(), Some("503"));
        assert_eq!(
            h(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n").as_deref(),
            Some("200-content-type-text/html")
        );
        assert_eq!(
            h(b"HTTP/1.1 200 OK\r\n\r\n").as_deref(),
            Some("200-content-type-none")
        );
    }

    #[test]
    fn responses() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab\nHTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n";
        let (s, n) = take_response(two).unwrap().unwrap();
        assert_eq!((s, n), (200, 41));
        let (s, _) = take_response(&two[n..]).unwrap().unwrap();
        assert_eq!(s, 503);
        assert_eq!(take_response(&two[..40]).unwrap(), None);
    }
}
