//! Frame encoding ([`encode_event`]): the tick, a published event with an id, and a
//! multi-line payload (split on every line break).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sse_server::sse::frame::encode_event;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let tick = "the time is 2024-10-13 14:35:22.123456789 +0000 UTC";
    let multi: String = (0..32)
        .map(|i| format!("line {i} of a longer payload\r\n"))
        .collect();
    let mut g = c.benchmark_group("encode_event");
    let mut buf = Vec::with_capacity(4096);
    g.throughput(Throughput::Bytes(tick.len() as u64));
    g.bench_function("tick", |b| {
        b.iter(|| {
            buf.clear();
            encode_event(&mut buf, None, None, black_box(tick));
            black_box(buf.len())
        })
    });
    g.bench_function("publish_with_id_and_event", |b| {
        b.iter(|| {
            buf.clear();
            encode_event(
                &mut buf,
                Some(black_box("m2abc-12345")),
                Some("price"),
                black_box("ts=1728830122123456789"),
            );
            black_box(buf.len())
        })
    });
    g.throughput(Throughput::Bytes(multi.len() as u64));
    g.bench_function("32_lines_crlf", |b| {
        b.iter(|| {
            buf.clear();
            encode_event(&mut buf, None, None, black_box(&multi));
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
