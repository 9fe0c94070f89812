//! A reconnect storm of ES256 tokens against the release server, with the cache of verified
//! tokens off (`--jwt-cache 0`) and on, in one run: what each reconnect costs the server in
//! CPU, and what the storm does to the publish→receive latency of one open stream.
//!
//! For each number of distinct tokens (`STORM_DISTINCT`, default `100,10000`) and each cache
//! setting, a fresh `sse-server --interval off --jwt-public-key <ES256 test key>
//! --publish-token …` is started. A probe opens one stream on the (public) default stream and a
//! publisher posts `ts=<unix ns>` every 10 ms on a keep-alive connection, not waiting for the
//! answers (the shared publish token: no signature to verify). Then `STORM_RECONNECTS` (default 10,000) reconnects are made
//! by `STORM_CONCURRENCY` (default 256) threads, each at a time: connect, `GET /events` with
//! `Authorization: Bearer <token j mod distinct>`, read the `200` head, close. Reported: the
//! server's CPU (utime + stime from `/proc/PID/stat`) over the storm per reconnect, the
//! reconnect rate, and the probe's latency percentiles over the events published during the
//! storm. Tokens are signed with the TEST-ONLY key of `src/auth/testdata/`.
//!
//! With `STORM_RATE` (default `0`; e.g. `0,500`: one run per value) the server also runs with
//! `--max-stream-rate <rate>` (0: no bound); a reconnect refused by it gets the EventSource's
//! `200` + `retry:` + close, so it still counts as `ok`, and `refused` (from `/metrics`) says
//! how many were refused: a refused client here does not come back.
//!
//! Run: `benches/token_storm.sh` (or `cargo bench --bench token_storm`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

const SERVER: &str = env!("CARGO_BIN_EXE_sse-server");
const EC_PRIVATE: &[u8] = include_bytes!("../src/auth/testdata/ec-private.pem");
const EC_PUBLIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/auth/testdata/ec-public.pem"
);
const PUBLISH_TOKEN: &str = "storm-probe-publish-token";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `n` distinct ES256 tokens (distinct `sub`), valid for an hour, allowing `user/*`.
fn mint(n: usize) -> Vec<String> {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE).expect("test key");
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3600;
    (0..n)
        .map(|i| {
            let claims = serde_json::json!({
                "sub": format!("storm-user-{i}"),
                "exp": exp,
                "sse": {"subscribe": ["user/*"]}
            });
            encode(&Header::new(Algorithm::ES256), &claims, &key).expect("signs")
        })
        .collect()
}

/// User plus system clock ticks of `pid` (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf with a constant argument has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(cache: usize, rate: usize) -> Server {
        let mut child = Command::new(SERVER)
            .args(["--listen", "127.0.0.1:0", "--interval", "off"])
            .args(["--jwt-public-key", EC_PUBLIC])
            .args(["--publish-token", PUBLISH_TOKEN])
            .args(["--jwt-cache", &cache.to_string()])
            .args(["--max-stream-rate", &rate.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sse-server");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server { child, addr }
    }

    fn metric(&self, name: &str) -> f64 {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return f64::NAN;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .next()
            .unwrap_or(f64::NAN)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one HTTP response head (and a `Content-Length` body) from `r`; its status.
fn read_answer(r: &mut BufReader<TcpStream>) -> Option<u16> {
    let mut status = None;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if status.is_none() {
            status = l.split(' ').nth(1).and_then(|s| s.parse().ok());
        } else if let Some(v) = l
            .to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(str::trim)
        {
            length = v.parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    status
}

/// The open stream and its publisher: latencies of `(published at, latency)` in ns.
struct Probe {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(u128, u128)>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Probe {
    fn start(addr: &str) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut stream = TcpStream::connect(addr).expect("probe connects");
        write!(
            stream,
            "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .expect("probe request");
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reader = BufReader::new(stream);
        let (stop_r, samples_r) = (Arc::clone(&stop), Arc::clone(&samples));
        let receiver = thread::spawn(move || {
            let mut line = String::new();
            while !stop_r.load(Ordering::Relaxed) {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        if let Some(ts) = line.trim_end().strip_prefix("data: ts=")
                            && let Ok(ts) = ts.parse::<u128>()
                        {
                            let at = unix_nanos();
                            if let Ok(mut s) = samples_r.lock() {
                                s.push((ts, at.saturating_sub(ts)));
                            }
                        }
                    }
                    Err(_) => continue,
                }
            }
        });
        // Open loop: a publish every 10 ms whatever the answers do (a second thread reads
        // them), so a stalled server is sampled as often as a fast one.
        let stop_p = Arc::clone(&stop);
        let s = TcpStream::connect(addr).expect("publisher connects");
        let mut w = s.try_clone().expect("clone");
        let mut r = BufReader::new(s);
        let answers = thread::spawn(move || {
            while let Some(status) = read_answer(&mut r) {
                if status != 200 {
                    eprintln!("token_storm: a probe publish was answered {status}");
                }
            }
        });
        let publisher = thread::spawn(move || {
            let start = Instant::now();
            let mut k = 0u32;
            while !stop_p.load(Ordering::Relaxed) {
                let body = format!("ts={}", unix_nanos());
                let req = format!(
                    "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PUBLISH_TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if w.write_all(req.as_bytes()).is_err() {
                    eprintln!("token_storm: a probe publish failed");
                    break;
                }
                k += 1;
                let next = start + Duration::from_millis(10) * k;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            let _ = w.shutdown(std::net::Shutdown::Both);
        });
        Probe {
            stop,
            samples,
            threads: vec![receiver, publisher, answers],
        }
    }

    fn finish(self) -> Vec<(u128, u128)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// One reconnect: connect, ask for a private stream with the token, read the head, close.
fn reconnect(addr: &str, token: &str, topic: usize) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let req = format!(
        "GET /events?topic=user/{topic} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head.starts_with(b"HTTP/1.1 200")
}

fn percentile(sorted: &[u128], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e6
}

fn run(
    tokens: &Arc<Vec<String>>,
    distinct: usize,
    cache: usize,
    rate: usize,
    reconnects: usize,
    threads: usize,
) {
    let server = Server::start(cache, rate);
    let pid = server.child.id();
    let probe = Probe::start(&server.addr);
    thread::sleep(Duration::from_millis(300));
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    let n0 = unix_nanos();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, ok, tokens) = (Arc::clone(&next), Arc::clone(&ok), Arc::clone(tokens));
            let addr = server.addr.clone();
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    loop {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        if j >= reconnects {
                            break;
                        }
                        if reconnect(&addr, &tokens[j % distinct], j % 100) {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .expect("spawn")
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let storm = t0.elapsed();
    let n1 = unix_nanos();
    // Let the server see the last closes.
    thread::sleep(Duration::from_millis(200));
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / ticks_per_second();
    let samples = probe.finish();
    let mut during: Vec<u128> = samples
        .iter()
        .filter(|(at, _)| (n0..=n1).contains(at))
        .map(|(_, l)| *l)
        .collect();
    during.sort_unstable();
    let ok = ok.load(Ordering::Relaxed);
    println!(
        "{distinct:>8} {cache:>6} {rate:>5} {ok:>6}/{reconnects:<6} {:>7.2} {:>8.0} {:>8.0} {:>8.1} | {:>5} {:>7.1} {:>7.1} {:>7.1} | {:>6} {:>6} {:>7}",
        storm.as_secs_f64(),
        ok as f64 / storm.as_secs_f64(),
        cpu * 1e3,
        cpu * 1e6 / reconnects as f64,
        during.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        percentile(&during, 1.0),
        server.metric("sse_jwt_cache_hits_total"),
        server.metric("sse_jwt_cache_misses_total"),
        server.metric("sse_streams_refused_total{reason=\"rate\"}"),
    );
}

fn main() {
    let reconnects = env_or("STORM_RECONNECTS", 10_000);
    let threads = env_or("STORM_CONCURRENCY", 256);
    let cache = env_or("STORM_CACHE", 10_000);
    let distinct: Vec<usize> = std::env::var("STORM_DISTINCT")
        .unwrap_or_else(|_| "100,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&d| d > 0)
        .collect();
    let rates: Vec<usize> = std::env::var("STORM_RATE")
        .unwrap_or_else(|_| "0".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let most = distinct.iter().copied().max().unwrap_or(1).min(reconnects);
    let t = Instant::now();
    let tokens = Arc::new(mint(most));
    eprintln!(
        "token_storm: {most} ES256 tokens signed in {:.1} s; {reconnects} reconnects by {threads} threads per run",
        t.elapsed().as_secs_f64()
    );
    println!(
        "{:>8} {:>6} {:>5} {:>13} {:>7} {:>8} {:>8} {:>8} | {:>5} {:>7} {:>7} {:>7} | {:>6} {:>6} {:>7}",
        "distinct",
        "cache",
        "rate",
        "ok",
        "storm_s",
        "recon/s",
        "cpu_ms",
        "cpu_us/r",
        "n",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "hits",
        "misses",
        "refused"
    );
    for &d in &distinct {
        for c in [0, cache] {
            for &r in &rates {
                run(&tokens, d.min(most), c, r, reconnects, threads);
            }
        }
    }
}
