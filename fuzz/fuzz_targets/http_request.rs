//! Arbitrary bytes, arbitrarily split, into `HeadReader::feed` and into the chunked-body
//! decoder: neither panics, and each gives the same outcome as for the unsplit input.
//!
//! Input layout: byte 0 = number of cuts (mod 8), then 2 bytes per cut (little-endian
//! offsets), then the request bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_server::http::chunked::{ChunkError, ChunkedDecoder};
use sse_server::http::request::{HeadError, HeadProgress, HeadReader};

/// A small limit so that the over-limit paths are reached.
const MAX_HEAD: usize = 512;

/// Feeds the parts in order until the head is complete or refused; the bytes of the parts
/// after the one that completed the head join its `rest` (as later reads would).
fn feed_all(parts: &[&[u8]]) -> Result<HeadProgress, HeadError> {
    let mut r = HeadReader::default();
    let mut last = Ok(HeadProgress::Partial);
    for (i, p) in parts.iter().enumerate() {
        last = r.feed(p, MAX_HEAD);
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

/// Decodes the parts as one chunked body: (body, bytes used, complete) or the error.
fn decode_all(parts: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
    let mut d = ChunkedDecoder::default();
    let mut body = Vec::new();
    let mut used = 0;
    for p in parts {
        let (n, done) = d.feed(p, &mut body, MAX_HEAD)?;
        used += n;
        if done {
            return Ok((body, used, true));
        }
    }
    assert!(body.len() <= MAX_HEAD, "the chunked body passed its limit");
    Ok((body, used, false))
}

fuzz_target!(|input: &[u8]| {
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(n % 8);
    if rest.len() < 2 * n {
        return;
    }
    let (cuts, data) = rest.split_at(2 * n);
    let mut points: Vec<usize> = cuts
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (data.len() + 1))
        .collect();
    points.sort_unstable();
    let mut parts = Vec::new();
    let mut prev = 0;
    for p in points {
        parts.push(&data[prev..p]);
        prev = p;
    }
    parts.push(&data[prev..]);
    let whole = feed_all(&[data]);
    let split = feed_all(&parts);
    assert_eq!(split, whole, "a split changed the outcome: {parts:?}");
    assert_eq!(
        decode_all(&parts),
        decode_all(&[data]),
        "a split changed the chunked outcome: {parts:?}"
    );
});
