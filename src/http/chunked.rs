//! Decoding a `Transfer-Encoding: chunked` request body (RFC 9112 §7.1), incrementally and
//! within a size limit.
//!
//! Guarantees: any split of the same bytes gives the same outcome; the decoded body never
//! exceeds the limit (past it: [`ChunkError::TooLarge`] at once, without buffering more); the
//! decoder holds only a few bytes of state of its own (a size line or trailer line in progress,
//! each bounded).

/// Longest chunk-size line (size plus extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Broken chunk syntax: 400.
    Malformed,
    /// The decoded body exceeds the limit: 413.
    TooLarge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line; `line` holds it so far.
    Size,
    /// Copying chunk data; this many bytes remain.
    Data(u64),
    /// Expecting the CRLF after chunk data (`seen_cr`: the CR arrived).
    DataEnd {
        seen_cr: bool,
    },
    /// Reading trailer lines after the last chunk, until an empty line.
    Trailer,
    Done,
}

/// Incremental chunked-body decoder.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    line: Vec<u8>,
    decoded: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size,
            line: Vec::new(),
            decoded: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Feeds bytes; appends decoded data to `body`. Returns how many bytes of `bytes` belong to
    /// the body (the rest, after the end, is the next request) and whether the body is complete.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        body: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(usize, bool), ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Done => break,
                State::Data(remaining) => {
                    let take =
                        (bytes.len() - i).min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    body.extend_from_slice(&bytes[i..i + take]);
                    i += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd { seen_cr: false }
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd { seen_cr } => {
                    match (seen_cr, bytes[i]) {
                        (false, b'\r') => self.state = State::DataEnd { seen_cr: true },
                        (_, b'\n') => self.state = State::Size,
                        _ => return Err(ChunkError::Malformed),
                    }
                    i += 1;
                }
                State::Size | State::Trailer => {
                    let b = bytes[i];
                    i += 1;
                    if b != b'\n' {
                        if self.line.len() >= MAX_LINE {
                            return Err(ChunkError::Malformed);
                        }
                        self.line.push(b);
                        continue;
                    }
                    if self.line.last() == Some(&b'\r') {
                        self.line.pop();
                    }
                    let line = std::mem::take(&mut self.line);
                    if self.state == State::Trailer {
                        if line.is_empty() {
                            self.state = State::Done;
                        }
                        continue;
                    }
                    let size = parse_size(&line)?;
                    self.decoded = self.decoded.checked_add(size).ok_or(ChunkError::TooLarge)?;
                    if self.decoded > limit as u64 {
                        return Err(ChunkError::TooLarge);
                    }
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size)
                    };
                }
            }
        }
        Ok((i, self.state == State::Done))
    }
}

/// Parses `1a;ext=1` → 26. Hex digits, then optional extensions after `;` (ignored).
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let digits = line[..end].trim_ascii();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(ChunkError::Malformed);
    }
    let text = std::str::from_utf8(digits).map_err(|_| ChunkError::Malformed)?;
    u64::from_str_radix(text, 16).map_err(|_| ChunkError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(parts: &[&[u8]], limit: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut used = 0;
        for p in parts {
            let (n, done) = d.feed(p, &mut body, limit)?;
            used += n;
            if done {
                return Ok((body, used, true));
            }
        }
        Ok((body, used, false))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let wire = b"5\r\nhello\r\n7;name=x\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next";
        let (body, used, done) = decode(&[wire], 100).unwrap();
        assert_eq!(body, b"hello, world");
        assert!(done);
        assert_eq!(&wire[used..], b"GET /next");
    }

    #[test]
    fn empty_body_and_bare_lf() {
        assert_eq!(decode(&[b"0\r\n\r\n"], 10).unwrap(), (vec![], 5, true));
        assert_eq!(
            decode(&[b"3\nabc\n0\n\n"], 10).unwrap(),
            (b"abc".to_vec(), 9, true)
        );
    }

    #[test]
    fn errors() {
        assert_eq!(decode(&[b"zz\r\n"], 10), Err(ChunkError::Malformed));
        assert_eq!(decode(&[b"\r\n"], 10), Err(ChunkError::Malformed));
        assert_eq!(decode(&[b"3\r\nabcX\r\n"], 10), Err(ChunkError::Malformed));
        assert_eq!(decode(&[b"b\r\n"], 10), Err(ChunkError::TooLarge));
        assert_eq!(
            decode(&[b"6\r\nabcdef\r\n6\r\n"], 10),
            Err(ChunkError::TooLarge)
        );
        assert_eq!(
            decode(&[b"ffffffffffffffffff\r\n"], 10),
            Err(ChunkError::Malformed)
        );
        assert_eq!(decode(&[&[b'1'; 5000]], 10), Err(ChunkError::Malformed));
    }

    proptest! {
        #[test]
        fn any_split_same_outcome(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..6),
                                  cuts in proptest::collection::vec(0usize..200, 0..6),
                                  garbage in any::<bool>()) {
            let mut wire = Vec::new();
            for c in chunks.iter().filter(|c| !c.is_empty()) {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            if garbage {
                let at = cuts.first().copied().unwrap_or(0) % wire.len();
                wire[at] = b'!';
            }
            wire.extend_from_slice(b"NEXT");
            let whole = decode(&[&wire], 64);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            points.sort_unstable();
            let mut parts = Vec::new();
            let mut prev = 0;
            for p in points { parts.push(&wire[prev..p]); prev = p; }
            parts.push(&wire[prev..]);
            prop_assert_eq!(decode(&parts, 64), whole.clone());
            if !garbage {
                let expect: Vec<u8> = chunks.concat();
                if expect.len() <= 64 {
                    let (body, used, done) = whole.unwrap();
                    prop_assert!(done);
                    prop_assert_eq!(body, expect);
                    prop_assert_eq!(&wire[used..], b"NEXT");
                }
            }
        }
    }
}
