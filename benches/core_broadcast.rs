//! The core's broadcast cost with no syscalls: `N` simulated streaming clients (1,000,
//! 10,000, 100,000), one `publish`, then the driver's work drained by the same harness
//! the driver uses (`core::drain`: `poll_output` → `write_slices` → `handle_written`, with
//! everything taken).
//!
//! Reported per delivery (one frame to one client): criterion's time per iteration divided
//! by `N` (its "thrpt" line is deliveries per second), and a plain median summary printed at
//! the end. The cost must be flat per client as `N` grows.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use sse_server::bus::types::BusRequest;
use sse_server::config::Config;
use sse_server::core::drain::{OutputSink, WriteOutcome, offer};
use sse_server::core::{ClientId, CloseReason, Core};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const GET: &[u8] =
    b"GET /events HTTP/1.1\r\nHost: 127.0.0.1:3000\r\nAccept: text/event-stream\r\n\r\n";

/// A driver whose sockets take everything, counting its writes.
struct TakeAll<'a> {
    core: &'a mut Core,
    now: Instant,
    writes: usize,
}

impl OutputSink for TakeAll<'_> {
    type Error = Infallible;

    fn core(&mut self) -> &mut Core {
        self.core
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn write(&mut self, id: ClientId) -> Result<WriteOutcome, Infallible> {
        let total = offer(self.core, id, |iov| iov.iter().map(|s| s.len()).sum());
        self.writes += 1;
        Ok(WriteOutcome::Wrote(total))
    }

    fn close(&mut self, _: ClientId, _: CloseReason) -> Result<(), Infallible> {
        Ok(())
    }

    /// The embedded core answers from its memory log and asks nothing of an engine.
    fn log_request(&mut self, _: BusRequest) -> Result<(), Infallible> {
        Ok(())
    }

    /// No token keys here: the core asks for no check; were it to, it is answered at once.
    fn verify(&mut self, request: sse_server::core::VerifyRequest) -> Result<(), Infallible> {
        let now = self.now;
        sse_server::core::drain::check_now(self.core, &request, now);
        Ok(())
    }
}

/// Performs every queued output with the shared drain harness; returns the number of writes.
fn drain(core: &mut Core, now: Instant) -> usize {
    let mut sink = TakeAll {
        core,
        now,
        writes: 0,
    };
    let Ok(_) = sink.drain(usize::MAX);
    sink.writes
}

/// A core with `n` streaming clients, each past its response head.
fn core_with(n: usize) -> Core {
    let cfg = Config {
        max_clients: n + 16,
        max_connections: n + 80,
        interval: None,
        keepalive: None,
        ..Config::default()
    };
    let now = Instant::now();
    let mut core = Core::new(cfg, now, chrono::Utc::now(), 7);
    for i in 0..n {
        let peer = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(127, 0, (i >> 16) as u8, 1),
            (i & 0xffff) as u16,
        ));
        let id = core.handle_accept(peer, now).expect("accepted");
        core.handle_writable(id);
        core.handle_read(id, GET, now);
    }
    drain(&mut core, now);
    assert_eq!(core.streaming_clients(), n);
    core
}

/// One broadcast: publish, then every client's write. Returns the time it took.
fn broadcast(core: &mut Core, n: usize) -> Duration {
    let now = Instant::now();
    let start = Instant::now();
    core.publish("", None, None, black_box("ts=1728830122123456789"), now)
        .expect("published");
    let writes = drain(core, now);
    let t = start.elapsed();
    assert_eq!(writes, n);
    t
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("core_broadcast");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for n in SIZES {
        let mut core = core_with(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| (0..iters).map(|_| broadcast(&mut core, n)).sum())
        });
    }
    g.finish();
}

/// Median nanoseconds per delivery over 31 broadcasts at each size, as one table.
fn summary() {
    println!("\ncore broadcast, median of 31 broadcasts (ns per delivery):");
    let mut base = None;
    for n in SIZES {
        let mut core = core_with(n);
        for _ in 0..3 {
            broadcast(&mut core, n);
        }
        let mut per: Vec<f64> = (0..31)
            .map(|_| broadcast(&mut core, n).as_nanos() as f64 / n as f64)
            .collect();
        per.sort_by(f64::total_cmp);
        let median = per[per.len() / 2];
        let b = *base.get_or_insert(median);
        println!(
            "  N = {n:>7}: {median:7.1} ns/delivery  ({:.2}x the 1,000-client cost)",
            median / b
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
