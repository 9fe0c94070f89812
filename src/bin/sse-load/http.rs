//! The little HTTP/1.1 a load generator needs: a response head, a chunked body decoder (many
//! SSE servers stream with `Transfer-Encoding: chunked`), and one complete response at a time
//! from a keep-alive publish connection.

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

/// Where a chunked-body decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size (`digits` so far).
    Size { size: u64, digits: u8, ext: bool },
    /// After the size line's CR, expecting LF.
    SizeLf { size: u64 },
    /// Inside chunk data, `left` bytes to go.
    Data { left: u64 },
    /// After a chunk's data: its CRLF.
    DataEnd { seen_cr: bool },
    /// The last chunk (size 0) arrived: the stream is over.
    Done,
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: ChunkState,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: ChunkState::Size {
                size: 0,
                digits: 0,
                ext: false,
            },
        }
    }
}

impl Chunked {
    /// True once the terminating zero-size chunk arrived.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, handing each run of body bytes to `out`. Errors on malformed framing.
    pub fn feed(&mut self, mut input: &[u8], mut out: impl FnMut(&[u8])) -> Result<(), String> {
        while !input.is_empty() {
            match &mut self.state {
                ChunkState::Size { size, digits, ext } => {
                    let b = input[0];
                    input = &input[1..];
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf { size: *size };
                    } else if b == b'\n' {
                        self.state = end_of_size(*size);
                    } else if *ext {
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        *ext = true;
                    } else {
                        let d = (b as char)
                            .to_digit(16)
                            .ok_or_else(|| format!("bad chunk size byte {b:#04x}"))?;
                        *digits += 1;
                        if *digits > 15 {
                            return Err("chunk size too large".into());
                        }
                        *size = *size * 16 + u64::from(d);
                    }
                }
                ChunkState::SizeLf { size } => {
                    if input[0] != b'\n' {
                        return Err("chunk size line not ended by CRLF".into());
                    }
                    input = &input[1..];
                    self.state = end_of_size(*size);
                }
                ChunkState::Data { left } => {
                    let n = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    out(&input[..n]);
                    input = &input[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = ChunkState::DataEnd { seen_cr: false };
                    }
                }
                ChunkState::DataEnd { seen_cr } => {
                    let b = input[0];
                    input = &input[1..];
                    if b == b'\r' && !*seen_cr {
                        *seen_cr = true;
                    } else if b == b'\n' {
                        self.state = ChunkState::default_size();
                    } else {
                        return Err("chunk data not followed by CRLF".into());
                    }
                }
                // Trailers and anything after the end are ignored.
                ChunkState::Done => return Ok(()),
            }
        }
        Ok(())
    }
}

impl ChunkState {
    fn default_size() -> ChunkState {
        ChunkState::Size {
            size: 0,
            digits: 0,
            ext: false,
        }
    }
}

fn end_of_size(size: u64) -> ChunkState {
    if size == 0 {
        ChunkState::Done
    } else {
        ChunkState::Data { left: size }
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
    fn chunked_any_split() {
        let wire = b"5\r\nhello\r\n7;x=1\r\n, world\r\n0\r\n\r\n";
        for cut in 0..wire.len() {
            let mut c = Chunked::default();
            let mut got = Vec::new();
            c.feed(&wire[..cut], |b| got.extend_from_slice(b)).unwrap();
            c.feed(&wire[cut..], |b| got.extend_from_slice(b)).unwrap();
            assert_eq!(got, b"hello, world");
            assert!(c.is_done());
        }
        assert!(Chunked::default().feed(b"zz\r\n", |_| {}).is_err());
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
