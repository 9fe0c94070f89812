//! Reading a request's body as its head frames it, for any method: kept (a publish) or
//! discarded (a body on `GET /health`, which must still be read past to find the next
//! request), within a limit.
//!
//! Guarantees: the same bytes in any split give the same outcome; a kept body's buffer grows
//! only as bytes arrive (never reserved from a `Content-Length` up front: a head alone pins no
//! body memory) and never past the limit; a discarded body holds no memory at all.

use super::chunked::{ChunkError, ChunkedDecoder};
use super::request::{BodyFraming, RequestHead};

/// Why a body was refused; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Broken chunked framing: 400.
    Malformed,
    /// Longer than the limit (`Content-Length` over it, or chunks adding up past it): 413.
    TooLarge,
    /// A body to use comes with neither `Content-Length` nor chunked coding: 411.
    LengthRequired,
    /// A body to use has a transfer coding before `chunked` that we cannot decode: 501.
    UnsupportedCoding,
}

impl BodyError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            BodyError::Malformed => 400,
            BodyError::TooLarge => 413,
            BodyError::LengthRequired => 411,
            BodyError::UnsupportedCoding => 501,
        }
    }

    /// The one-line reason sent in the error response's body.
    pub fn message(self) -> &'static str {
        match self {
            BodyError::Malformed => "malformed chunked body",
            BodyError::TooLarge => "body larger than --max-body",
            BodyError::LengthRequired => "a Content-Length (or a chunked body) is required",
            BodyError::UnsupportedCoding => "the only Transfer-Encoding supported is chunked",
        }
    }
}

impl From<ChunkError> for BodyError {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::Malformed => BodyError::Malformed,
            ChunkError::TooLarge => BodyError::TooLarge,
        }
    }
}

#[derive(Debug, Clone)]
enum Framing {
    /// This many bytes remain (`Content-Length`).
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// Reads one request body, keeping it or not.
#[derive(Debug, Clone)]
pub struct BodyReader {
    framing: Framing,
    /// The body so far; `None` when it is discarded.
    body: Option<Vec<u8>>,
    limit: usize,
}

/// What feeding bytes into a [`BodyReader`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyProgress {
    /// Bytes of the input that belonged to the body; the rest is the next request.
    pub used: usize,
    /// The body is complete.
    pub done: bool,
}

impl BodyReader {
    /// The reader for a request whose body is used (a publish): 411 when the head frames no
    /// body at all, 501 for a coding we cannot decode, 413 for a `Content-Length` over
    /// `limit`; else a reader that keeps the body.
    pub fn for_use(head: &RequestHead, limit: usize) -> Result<BodyReader, BodyError> {
        if head.framing == BodyFraming::None {
            return Err(BodyError::LengthRequired);
        }
        if head.unsupported_coding {
            return Err(BodyError::UnsupportedCoding);
        }
        Self::keep(head.framing, limit)
    }

    /// The reader for any other request: reads past its body (none, `Content-Length` or
    /// chunked, whatever the method) so the next request is found where the head says; 413
    /// for a body over `limit`.
    pub fn for_discard(head: &RequestHead, limit: usize) -> Result<BodyReader, BodyError> {
        Self::discard(head.framing, limit)
    }

    /// A reader that keeps the body (at most `limit` bytes). Refuses at once a
    /// `Content-Length` over the limit, before any body byte is read.
    pub fn keep(framing: BodyFraming, limit: usize) -> Result<BodyReader, BodyError> {
        Self::new(framing, limit, Some(Vec::new()))
    }

    /// A reader that reads past the body and drops it (at most `limit` bytes are read: a
    /// longer body is refused, as a kept one would be).
    pub fn discard(framing: BodyFraming, limit: usize) -> Result<BodyReader, BodyError> {
        Self::new(framing, limit, None)
    }

    fn new(
        framing: BodyFraming,
        limit: usize,
        body: Option<Vec<u8>>,
    ) -> Result<BodyReader, BodyError> {
        let framing = match framing {
            BodyFraming::None => Framing::Length(0),
            BodyFraming::Length(n) if n > limit as u64 => return Err(BodyError::TooLarge),
            BodyFraming::Length(n) => Framing::Length(n),
            BodyFraming::Chunked => Framing::Chunked(ChunkedDecoder::default()),
        };
        Ok(BodyReader {
            framing,
            body,
            limit,
        })
    }

    /// True when the body is complete (a `Content-Length: 0` or absent body is complete
    /// before any byte).
    pub fn is_done(&self) -> bool {
        match &self.framing {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(d) => d.is_done(),
        }
    }

    /// Bytes of body kept so far (0 when discarding).
    pub fn kept(&self) -> usize {
        self.body.as_ref().map_or(0, Vec::len)
    }

    /// Feeds bytes read from the connection; takes the body's bytes and says where the body
    /// ended. Bytes after the end are not looked at.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<BodyProgress, BodyError> {
        match &mut self.framing {
            Framing::Length(left) => {
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                if let Some(body) = &mut self.body {
                    grow_for(body, take, *left);
                    body.extend_from_slice(&bytes[..take]);
                }
                *left -= take as u64;
                Ok(BodyProgress {
                    used: take,
                    done: *left == 0,
                })
            }
            Framing::Chunked(decoder) => {
                let (used, done) = match &mut self.body {
                    Some(body) => decoder.feed(bytes, body, self.limit)?,
                    None => decoder.discard(bytes, self.limit)?,
                };
                Ok(BodyProgress { used, done })
            }
        }
    }

    /// The kept body (empty for a discarded one).
    pub fn into_body(self) -> Vec<u8> {
        self.body.unwrap_or_default()
    }
}

/// Makes room for `take` more bytes of a body that has `left` bytes to come: doubling as it
/// grows (linear total copying), but never reserving more than what is still announced.
fn grow_for(body: &mut Vec<u8>, take: usize, left: u64) {
    if body.capacity() - body.len() >= take {
        return;
    }
    let left = usize::try_from(left).unwrap_or(usize::MAX);
    let want = take.max(body.len()).min(left);
    body.reserve_exact(want);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds the parts; returns (body, bytes used, done) or the error.
    fn read(mut r: BodyReader, parts: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut used = 0;
        for p in parts {
            let progress = r.feed(p)?;
            used += progress.used;
            if progress.done {
                return Ok((r.into_body(), used, true));
            }
        }
        let done = r.is_done();
        Ok((r.into_body(), used, done))
    }

    #[test]
    fn content_length_body_kept_and_discarded() {
        let wire = b"helloGET /next";
        let kept = read(
            BodyReader::keep(BodyFraming::Length(5), 10).unwrap(),
            &[wire],
        );
        assert_eq!(kept, Ok((b"hello".to_vec(), 5, true)));
        let dropped = read(
            BodyReader::discard(BodyFraming::Length(5), 10).unwrap(),
            &[wire],
        );
        assert_eq!(dropped, Ok((Vec::new(), 5, true)));
    }

    #[test]
    fn no_body_is_complete_at_once() {
        for framing in [BodyFraming::None, BodyFraming::Length(0)] {
            let r = BodyReader::keep(framing, 10).unwrap();
            assert!(r.is_done());
            assert_eq!(read(r, &[b"GET /"]), Ok((Vec::new(), 0, true)));
        }
        let r = BodyReader::keep(BodyFraming::Chunked, 10).unwrap();
        assert!(!r.is_done());
    }

    #[test]
    fn over_the_limit_is_refused_before_reading() {
        assert_eq!(
            BodyReader::keep(BodyFraming::Length(11), 10).err(),
            Some(BodyError::TooLarge)
        );
        assert_eq!(
            BodyReader::discard(BodyFraming::Length(u64::MAX), 10).err(),
            Some(BodyError::TooLarge)
        );
        let r = BodyReader::keep(BodyFraming::Chunked, 10).unwrap();
        assert_eq!(read(r, &[b"b\r\n"]), Err(BodyError::TooLarge));
        assert_eq!(BodyError::TooLarge.status(), 413);
        assert_eq!(BodyError::Malformed.status(), 400);
    }

    #[test]
    fn readers_for_a_request() {
        let head = |raw: &str| crate::http::request::parse_head(raw.as_bytes()).unwrap();
        let no_length = head("POST /publish HTTP/1.1\r\n\r\n");
        assert_eq!(
            BodyReader::for_use(&no_length, 10).err(),
            Some(BodyError::LengthRequired)
        );
        assert!(BodyReader::for_discard(&no_length, 10).unwrap().is_done());
        let gzip = head("POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(
            BodyReader::for_use(&gzip, 10).err().map(BodyError::status),
            Some(501)
        );
        let mut r = BodyReader::for_discard(&gzip, 10).unwrap();
        assert_eq!(
            r.feed(b"1\r\nz\r\n0\r\n\r\nGET"),
            Ok(BodyProgress {
                used: 11,
                done: true
            })
        );
        let empty = head("POST /p HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        let r = BodyReader::for_use(&empty, 10).unwrap();
        assert!(
            r.is_done(),
            "an empty publish body is complete, not refused"
        );
        assert_eq!(r.into_body(), b"");
        let get = head("GET /health HTTP/1.1\r\nContent-Length: 11\r\n\r\n");
        assert_eq!(
            BodyReader::for_discard(&get, 10).err(),
            Some(BodyError::TooLarge)
        );
    }

    /// A head announcing a large body reserves nothing until bytes arrive, and
    /// what is reserved follows what arrived.
    #[test]
    fn memory_follows_the_bytes_that_arrived() {
        let mut r = BodyReader::keep(BodyFraming::Length(65_536), 65_536).unwrap();
        assert_eq!(r.body.as_ref().map(Vec::capacity), Some(0));
        r.feed(&[b'x'; 10]).unwrap();
        let cap = r.body.as_ref().map_or(0, Vec::capacity);
        assert!(cap < 100, "reserved {cap} bytes for 10 received");
        for _ in 0..1000 {
            r.feed(&[b'x'; 10]).unwrap();
        }
        let cap = r.body.as_ref().map_or(0, Vec::capacity);
        assert!(
            cap <= 2 * 10_010,
            "reserved {cap} bytes for 10,010 received"
        );
        let rest = vec![b'y'; 65_536 - 10_010];
        assert!(r.feed(&rest).unwrap().done);
        assert!(r.body.as_ref().map_or(0, Vec::capacity) <= 65_536);
        assert_eq!(r.kept(), 65_536);
    }

    proptest! {
        /// Any split of a pipelined input gives the same body, the same end and the same error.
        #[test]
        fn any_split_same_outcome(body in proptest::collection::vec(any::<u8>(), 0..80),
                                  chunked in any::<bool>(),
                                  keep in any::<bool>(),
                                  limit in 0usize..100,
                                  cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let (framing, mut wire) = if chunked {
                let mut w = Vec::new();
                for c in body.chunks(7) {
                    w.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    w.extend_from_slice(c);
                    w.extend_from_slice(b"\r\n");
                }
                w.extend_from_slice(b"0\r\n\r\n");
                (BodyFraming::Chunked, w)
            } else {
                (BodyFraming::Length(body.len() as u64), body.clone())
            };
            let body_wire_len = wire.len();
            wire.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let new = || if keep { BodyReader::keep(framing, limit) } else { BodyReader::discard(framing, limit) };
            let Ok(reader) = new() else {
                prop_assert!(body.len() > limit);
                return Ok(());
            };
            let whole = read(reader, &[&wire]);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            points.sort_unstable();
            let mut parts = Vec::new();
            let mut prev = 0;
            for p in points { parts.push(&wire[prev..p]); prev = p; }
            parts.push(&wire[prev..]);
            let reader = new().map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(read(reader, &parts), whole.clone());
            if body.len() <= limit {
                let expect = if keep { body.clone() } else { Vec::new() };
                prop_assert_eq!(whole, Ok((expect, body_wire_len, true)));
            } else {
                prop_assert_eq!(whole, Err(BodyError::TooLarge));
            }
        }
    }
}
