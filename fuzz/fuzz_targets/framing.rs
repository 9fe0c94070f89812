//! Pipelined requests (heads and bodies framed by `Content-Length` or chunked coding, on any
//! method) through `RequestStream`, in random splits: the same requests, the same bodies and
//! the same error in any split, one outcome per request, and nothing past the limits.
//!
//! Input layout: byte 0 = number of cuts (mod 16), then 2 bytes per cut (little-endian
//! offsets), then the connection's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_server::http::pipeline::{Request, RequestStream, StreamError};

/// Small limits so that the over-limit paths are reached.
const MAX_HEAD: usize = 512;
const MAX_BODY: usize = 256;

/// Feeds the parts in order; the requests completed and the error that ended the stream.
fn run(parts: &[&[u8]]) -> (Vec<Request>, Option<StreamError>) {
    let mut stream = RequestStream::new(MAX_HEAD, MAX_BODY);
    let mut out = Vec::new();
    for p in parts {
        let before = out.len();
        let result = stream.feed(p, &mut out);
        for r in &out[before..] {
            assert!(r.body.len() <= MAX_BODY, "a body passed its limit");
        }
        if let Err(e) = result {
            // After an error nothing more is read: a later feed completes no request.
            let mut after = Vec::new();
            assert_eq!(stream.feed(b"GET / HTTP/1.1\r\n\r\n", &mut after), Err(e));
            assert!(
                after.is_empty(),
                "a request completed after the stream failed"
            );
            return (out, Some(e));
        }
    }
    (out, None)
}

fuzz_target!(|input: &[u8]| {
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(n % 16);
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
    let whole = run(&[data]);
    assert_eq!(run(&parts), whole, "a split changed the outcome: {parts:?}");
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "byte-by-byte changed the outcome");
});
