//! Decoding a `Transfer-Encoding: chunked` body (RFC 9112 §7.1), incrementally, strictly and
//! within a size limit.
//!
//! Strict as hyper's decoder is, so that no proxy in front can disagree about where the body
//! ends: every line ends in CRLF (a bare LF or a bare CR is an error), the size is hex digits
//! with nothing before them, whitespace after the size only before a `;` extension (the `BWS`
//! of the grammar), extensions may not hold CR, LF or other control bytes, a size that
//! overflows 64 bits is an error, and trailer fields are `name: value` lines, bounded in bytes
//! and count.
//!
//! Guarantees: any split of the same bytes gives the same outcome; the decoded body never
//! exceeds the limit (past it: [`ChunkError::TooLarge`] as soon as a chunk size says so,
//! without buffering more); the decoder holds a few words of state and no buffer; after an
//! error, every later call returns the same error.

use super::request::MAX_HEADERS;

/// Longest chunk-size line (digits, whitespace and extensions, and its CR) accepted.
pub const MAX_SIZE_LINE: usize = 4096;
/// Most extension bytes accepted over a whole body (as hyper: many tiny chunks with long
/// extensions would otherwise cost far more wire bytes than the body's limit).
pub const MAX_EXTENSION_BYTES: usize = 16 * 1024;
/// Most trailer bytes accepted (all trailer lines together).
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Broken or over-long chunk syntax or trailers: 400.
    Malformed,
    /// The decoded body exceeds the limit: 413.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the chunk size's hex digits (`digits` so far).
    Size {
        size: u64,
        digits: usize,
    },
    /// Whitespace after the size: only more whitespace or `;` may follow.
    SizeWhitespace {
        size: u64,
    },
    /// Inside chunk extensions, until CR.
    Extension {
        size: u64,
    },
    /// The CR of the size line arrived; LF must follow.
    SizeLf {
        size: u64,
    },
    /// Copying chunk data; this many bytes remain.
    Data(u64),
    /// Chunk data ended: CR must follow, then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// In a trailer field's name, after its first byte (`TrailerStart` takes that one).
    TrailerName,
    /// In a trailer field's value, until CR.
    TrailerValue,
    /// The CR of a trailer line arrived; LF must follow.
    TrailerLf,
    /// The CR of the final empty line arrived; LF must follow.
    EndLf,
    Done,
    Failed(ChunkError),
}

/// Incremental chunked-body decoder.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Body bytes announced by chunk sizes so far (checked against the limit).
    decoded: u64,
    /// Bytes of the current size line.
    line: usize,
    /// Extension bytes over the whole body.
    extension_bytes: usize,
    trailer_bytes: usize,
    trailer_fields: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            decoded: 0,
            line: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
            trailer_fields: 0,
        }
    }
}

/// A byte allowed in a field name (`tchar`, RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte allowed inside an extension or a field value: visible ASCII, space, tab, or
/// obs-text; never CR, LF, NUL or another control byte.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

impl ChunkedDecoder {
    /// Feeds bytes; appends decoded data to `body`. Returns how many bytes of `bytes` belong to
    /// the body (the rest, after the end, is the next request) and whether the body is complete.
    /// `limit` bounds the decoded body (`usize::MAX` for none).
    pub fn feed(
        &mut self,
        bytes: &[u8],
        body: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(usize, bool), ChunkError> {
        self.decode(bytes, Some(body), limit)
    }

    /// As [`ChunkedDecoder::feed`], but the decoded data is dropped: for a body that must be
    /// read past (to find the next request) and is not used. Holds no memory for it.
    pub fn discard(&mut self, bytes: &[u8], limit: usize) -> Result<(usize, bool), ChunkError> {
        self.decode(bytes, None, limit)
    }

    /// True once the last chunk and the trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn decode(
        &mut self,
        bytes: &[u8],
        mut body: Option<&mut Vec<u8>>,
        limit: usize,
    ) -> Result<(usize, bool), ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Done => break,
                State::Failed(e) => return Err(e),
                State::Data(remaining) => {
                    let take =
                        (bytes.len() - i).min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    if let Some(body) = body.as_deref_mut() {
                        body.extend_from_slice(&bytes[i..i + take]);
                    }
                    i += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                }
                _ => {
                    let b = bytes[i];
                    i += 1;
                    match self.step(b, limit) {
                        Ok(next) => self.state = next,
                        Err(e) => {
                            self.state = State::Failed(e);
                            return Err(e);
                        }
                    }
                }
            }
        }
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        Ok((i, self.state == State::Done))
    }

    /// One byte of framing (anything but chunk data): the next state, or why it is refused.
    fn step(&mut self, b: u8, limit: usize) -> Result<State, ChunkError> {
        use ChunkError::Malformed;
        if matches!(
            self.state,
            State::Size { .. } | State::SizeWhitespace { .. } | State::Extension { .. }
        ) {
            self.line += 1;
            if self.line > MAX_SIZE_LINE {
                return Err(Malformed);
            }
        }
        Ok(match self.state {
            State::Size { size, digits } => match (b, char::from(b).to_digit(16)) {
                (_, Some(d)) => {
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                        .ok_or(Malformed)?;
                    State::Size {
                        size,
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => return Err(Malformed),
                (b' ' | b'\t', _) => State::SizeWhitespace { size },
                (b';', _) => State::Extension { size },
                (b'\r', _) => State::SizeLf { size },
                _ => return Err(Malformed),
            },
            State::SizeWhitespace { size } => match b {
                b' ' | b'\t' => State::SizeWhitespace { size },
                b';' => State::Extension { size },
                _ => return Err(Malformed),
            },
            State::Extension { size } => match b {
                b'\r' => State::SizeLf { size },
                b if is_field_byte(b) => {
                    self.extension_bytes += 1;
                    if self.extension_bytes > MAX_EXTENSION_BYTES {
                        return Err(Malformed);
                    }
                    State::Extension { size }
                }
                _ => return Err(Malformed),
            },
            State::SizeLf { size } => {
                if b != b'\n' {
                    return Err(Malformed);
                }
                self.line = 0;
                self.decoded = self.decoded.checked_add(size).ok_or(ChunkError::TooLarge)?;
                if self.decoded > limit as u64 {
                    return Err(ChunkError::TooLarge);
                }
                if size == 0 {
                    State::TrailerStart
                } else {
                    State::Data(size)
                }
            }
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size { size: 0, digits: 0 },
            State::DataCr | State::DataLf => return Err(Malformed),
            State::TrailerStart if b == b'\r' => State::EndLf,
            State::TrailerStart => {
                self.trailer_fields += 1;
                if self.trailer_fields > MAX_HEADERS {
                    return Err(Malformed);
                }
                self.trailer_byte()?;
                if !is_tchar(b) {
                    return Err(Malformed);
                }
                State::TrailerName
            }
            State::TrailerName => {
                self.trailer_byte()?;
                match b {
                    b':' => State::TrailerValue,
                    b if is_tchar(b) => State::TrailerName,
                    _ => return Err(Malformed),
                }
            }
            State::TrailerValue => {
                self.trailer_byte()?;
                match b {
                    b'\r' => State::TrailerLf,
                    b if is_field_byte(b) => State::TrailerValue,
                    _ => return Err(Malformed),
                }
            }
            State::TrailerLf if b == b'\n' => State::TrailerStart,
            State::EndLf if b == b'\n' => State::Done,
            State::TrailerLf | State::EndLf => return Err(Malformed),
            State::Data(_) | State::Done | State::Failed(_) => self.state,
        })
    }

    /// Counts one trailer byte against [`MAX_TRAILER_BYTES`].
    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkError::Malformed);
        }
        Ok(())
    }
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

    fn err(wire: &[u8]) -> Option<ChunkError> {
        decode(&[wire], 100).err()
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let wire = b"5\r\nhello\r\n7;name=x\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next";
        let (body, used, done) = decode(&[wire], 100).unwrap();
        assert_eq!(body, b"hello, world");
        assert!(done);
        assert_eq!(&wire[used..], b"GET /next");
        // Whitespace before an extension is the grammar's BWS; leading zeros are digits.
        let (body, _, done) = decode(&[b"003 ;a=\"b c\"\r\nabc\r\n0\r\n\r\n"], 100).unwrap();
        assert_eq!((body.as_slice(), done), (&b"abc"[..], true));
        assert_eq!(decode(&[b"0\r\n\r\n"], 10).unwrap(), (vec![], 5, true));
        assert_eq!(
            decode(&[b"A\r\n0123456789\r\n0\r\n\r\n"], 10)
                .unwrap()
                .0
                .len(),
            10
        );
    }

    #[test]
    fn line_ends_are_crlf_only() {
        for wire in [
            &b"3\nabc\r\n0\r\n\r\n"[..],
            b"3\r\nabc\n0\r\n\r\n",
            b"3\r\nabc\r\n0\n\r\n",
            b"3\r\nabc\r\n0\r\n\n",
            b"0\r\nX: 1\n\r\n",
            b"3\rabc\r\n0\r\n\r\n",
            b"3\r\nabc\rX0\r\n\r\n",
            b"0\r\n\rX",
            // Any other byte where a line's CR or LF belongs.
            b"3\r\nabcX\n0\r\n\r\n",
            b"0\r\nX: 1\rY\r\n",
        ] {
            assert_eq!(err(wire), Some(ChunkError::Malformed), "{wire:?}");
        }
    }

    #[test]
    fn size_is_strict() {
        for wire in [
            &b" 3\r\nabc\r\n0\r\n\r\n"[..],
            b"\t3\r\nabc\r\n0\r\n\r\n",
            b"3 \r\nabc\r\n0\r\n\r\n",
            b"3\t\r\nabc\r\n0\r\n\r\n",
            b"3 4\r\n",
            b"+3\r\n",
            b"-3\r\n",
            b"0x3\r\n",
            b"\r\n",
            b";ext\r\n",
            b"zz\r\n",
            // 2^64 + 3: overflow is refused, never wrapped.
            b"10000000000000003\r\n",
            b"f0000000000000003\r\n",
        ] {
            assert_eq!(err(wire), Some(ChunkError::Malformed), "{wire:?}");
        }
        // The longest size line, leading zeros included, is bounded.
        let mut long = vec![b'0'; MAX_SIZE_LINE + 1];
        long.extend_from_slice(b"\r\n");
        assert_eq!(err(&long), Some(ChunkError::Malformed));
        // Exactly: `MAX_SIZE_LINE` bytes with the CR.
        for (digits, ok) in [(MAX_SIZE_LINE - 1, true), (MAX_SIZE_LINE, false)] {
            let mut line = vec![b'0'; digits];
            line.extend_from_slice(b"\r\n\r\n");
            assert_eq!(err(&line).is_none(), ok, "{digits} digits");
        }
    }

    #[test]
    fn extensions_are_strict_and_bounded() {
        for wire in [
            &b"3;a\rb\r\nabc\r\n0\r\n\r\n"[..],
            b"3;a\nb\r\nabc\r\n0\r\n\r\n",
            b"3;a\x00\r\nabc\r\n0\r\n\r\n",
            b"3;a\x7f\r\nabc\r\n0\r\n\r\n",
        ] {
            assert_eq!(err(wire), Some(ChunkError::Malformed), "{wire:?}");
        }
        // Many 1-byte chunks each under the line limit, over the whole-body extension budget.
        let ext = "e".repeat(1000);
        let wire: String = (0..20).map(|_| format!("1;{ext}\r\nx\r\n")).collect();
        assert_eq!(err(wire.as_bytes()), Some(ChunkError::Malformed));
        // Exactly the budget (lines of at most `MAX_SIZE_LINE`): fine; one byte more is not.
        for (last, ok) in [(384, true), (385, false)] {
            let wire: String = [4000, 4000, 4000, 4000, last]
                .iter()
                .map(|&n| format!("1;{}\r\nx\r\n", "e".repeat(n)))
                .collect();
            let wire = wire + "0\r\n\r\n";
            assert_eq!(err(wire.as_bytes()).is_none(), ok, "last extension {last}");
        }
        // Whitespace before the `;` may repeat.
        assert!(err(b"3 \t ;e\r\nabc\r\n0\r\n\r\n").is_none());
        // Under the budget (16 of them) they are fine.
        let wire: String = (0..16).map(|_| format!("1;{ext}\r\nx\r\n")).collect();
        let wire = wire + "0\r\n\r\n";
        assert_eq!(decode(&[wire.as_bytes()], 100).unwrap().0, b"x".repeat(16));
    }

    #[test]
    fn trailers_are_fields_and_bounded() {
        for wire in [
            &b"0\r\nno colon\r\n\r\n"[..],
            b"0\r\n: no name\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
            b"0\r\nX : 1\r\n\r\n",
            b"0\r\nX: a\x00b\r\n\r\n",
        ] {
            assert_eq!(err(wire), Some(ChunkError::Malformed), "{wire:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let wire = format!("0\r\n{many}\r\n");
        assert_eq!(err(wire.as_bytes()), Some(ChunkError::Malformed));
        let big = format!("0\r\nX: {}\r\n\r\n", "v".repeat(MAX_TRAILER_BYTES));
        assert_eq!(err(big.as_bytes()), Some(ChunkError::Malformed));
        // Exactly `MAX_HEADERS` fields, and exactly `MAX_TRAILER_BYTES` bytes (every byte of
        // a line but its LF: 4 for `X: ` and the CR).
        let fields: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert!(
            decode(&[format!("0\r\n{fields}\r\n").as_bytes()], 10)
                .unwrap()
                .2
        );
        for (value, ok) in [
            (MAX_TRAILER_BYTES - 4, true),
            (MAX_TRAILER_BYTES - 3, false),
        ] {
            let wire = format!("0\r\nX: {}\r\n\r\n", "v".repeat(value));
            assert_eq!(err(wire.as_bytes()).is_none(), ok, "a value of {value}");
        }
        let ok = format!("0\r\nX: {}\r\nY:\r\n\r\n", "v".repeat(100));
        assert!(decode(&[ok.as_bytes()], 10).unwrap().2);
        // 8,000 bytes: within the 8 KiB budget.
        let long = format!("0\r\nX: {}\r\n\r\n", "v".repeat(8_000));
        assert!(decode(&[long.as_bytes()], 10).unwrap().2);
    }

    /// A refused body stays refused, whatever comes after.
    #[test]
    fn a_failure_is_final() {
        let mut d = ChunkedDecoder::default();
        let mut body = Vec::new();
        assert_eq!(d.feed(b"zz\r\n", &mut body, 10), Err(ChunkError::Malformed));
        assert_eq!(
            d.feed(b"0\r\n\r\n", &mut body, 10),
            Err(ChunkError::Malformed)
        );
    }

    #[test]
    fn limit_is_enforced_before_the_data() {
        assert_eq!(decode(&[b"b\r\n"], 10), Err(ChunkError::TooLarge));
        assert_eq!(
            decode(&[b"6\r\nabcdef\r\n6\r\n"], 10),
            Err(ChunkError::TooLarge)
        );
        assert_eq!(
            decode(&[b"ffffffffffffffff\r\n"], usize::MAX),
            Ok((vec![], 18, false))
        );
    }

    #[test]
    fn an_error_sticks() {
        let mut d = ChunkedDecoder::default();
        let mut body = Vec::new();
        assert_eq!(d.feed(b"3\nabc", &mut body, 10), Err(ChunkError::Malformed));
        assert_eq!(
            d.feed(b"0\r\n\r\n", &mut body, 10),
            Err(ChunkError::Malformed)
        );
    }

    #[test]
    fn discard_reads_the_same_framing_without_keeping_data() {
        let wire = b"5\r\nhello\r\n0\r\n\r\nNEXT";
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.discard(wire, 10), Ok((wire.len() - 4, true)));
        assert!(d.is_done());
    }

    proptest! {
        #[test]
        fn any_split_same_outcome(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..6),
                                  cuts in proptest::collection::vec(0usize..200, 0..6),
                                  garbage in any::<bool>(),
                                  garbage_byte in prop::sample::select(vec![b'!', b'\n', b'\r', b' ', b';', b'0'])) {
            let mut wire = Vec::new();
            for c in chunks.iter().filter(|c| !c.is_empty()) {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            if garbage {
                let at = cuts.first().copied().unwrap_or(0) % wire.len();
                wire[at] = garbage_byte;
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
            let mut d = ChunkedDecoder::default();
            let discarded = d.discard(&wire, 64);
            prop_assert_eq!(discarded, whole.clone().map(|(_, used, done)| (used, done)));
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
