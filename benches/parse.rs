//! Request-head parsing ([`HeadReader`]): a typical browser `GET /events` in one read, the
//! same head arriving in 16-byte pieces (the incremental path), and a small publish.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sse_server::http::request::{HeadProgress, HeadReader};
use std::hint::black_box;

/// What Chrome sends for `new EventSource("/events?topic=news")`.
const BROWSER_GET: &[u8] = b"GET /events?topic=news HTTP/1.1\r\n\
Host: 127.0.0.1:3000\r\n\
Connection: keep-alive\r\n\
Accept: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36\r\n\
Origin: http://127.0.0.1:3000\r\n\
Referer: http://127.0.0.1:3000/\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Last-Event-ID: m2abc-41\r\n\r\n";

const PUBLISH: &[u8] =
    b"POST /publish?topic=news HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nContent-Length: 5\r\n\r\nhello";

fn parse_whole(head: &[u8]) -> bool {
    let mut r = HeadReader::default();
    matches!(r.feed(head, 8192), Ok(HeadProgress::Complete { .. }))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("head_reader");
    g.throughput(Throughput::Bytes(BROWSER_GET.len() as u64));
    g.bench_function("browser_get_one_read", |b| {
        b.iter(|| assert!(parse_whole(black_box(BROWSER_GET))))
    });
    g.bench_function("browser_get_16_byte_reads", |b| {
        b.iter(|| {
            let mut r = HeadReader::default();
            let mut done = false;
            for piece in black_box(BROWSER_GET).chunks(16) {
                if let Ok(HeadProgress::Complete { .. }) = r.feed(piece, 8192) {
                    done = true;
                }
            }
            assert!(done);
        })
    });
    g.throughput(Throughput::Bytes(PUBLISH.len() as u64));
    g.bench_function("publish_one_read", |b| {
        b.iter(|| assert!(parse_whole(black_box(PUBLISH))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
