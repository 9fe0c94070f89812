//! Fan-out against the floor, over real loopback sockets (`cargo bench --bench fanout`).
//!
//! (a) **Bare loop**: this process accepts `N` streams, answers each with an event-stream
//!     head, then times a plain loop that writes one pre-encoded tick frame to each of the `N`
//!     non-blocking sockets (nothing else: no core, no epoll). Several rounds; the median.
//! (b) **Server**: the release `sse-server --interval 1s` with the same `N` clients; its own
//!     `sse_last_fanout_seconds` (tick to last byte written) read from `/metrics` after
//!     each tick; the median.
//!
//! The ratio (b)/(a) is printed. In both, the `N` client ends live in an `sse-load` child
//! process that keeps reading, checks that every client got every frame, and reports
//! client-side latency: this process holds only the `N` server ends for (a) (the open-file
//! limit is 20,000 per process), so `FANOUT_N=19000` works.
//!
//! With `FANOUT_RATES` (e.g. `250,500,1000,2000`), it then measures deliveries per second
//! at `FANOUT_SWEEP_CLIENTS` (1,000) clients for each publish rate, with the bare loop's
//! writes per second at that client count from this same run, and the write syscalls per
//! delivery from the server's counters.
//!
//! Environment: `FANOUT_N` (2000), `FANOUT_ROUNDS` (7), `FANOUT_SOURCE_IPS` (8),
//! `FANOUT_RATES` (none), `FANOUT_SWEEP_CLIENTS` (1000), `FANOUT_SWEEP_SECONDS` (5).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sse_server::sse::frame::encode_event;
use sse_server::timefmt::tick_text;

const SERVER: &str = env!("CARGO_BIN_EXE_sse-server");
const LOAD: &str = env!("CARGO_BIN_EXE_sse-load");

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn median(v: &mut [f64]) -> f64 {
    assert!(!v.is_empty(), "no samples");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The value of `"key":` in sse-load's JSON line.
fn field(json: &str, key: &str) -> String {
    let pat = format!("\"{key}\":");
    let Some(start) = json.find(&pat) else {
        return String::new();
    };
    let rest = &json[start + pat.len()..];
    rest[..rest.find([',', '}']).unwrap_or(rest.len())].to_owned()
}

/// What sse-load said about one run.
struct LoadResult {
    json: String,
}

impl LoadResult {
    fn all_delivered(&self) -> bool {
        field(&self.json, "all_delivered") == "true"
    }
    fn num(&self, key: &str) -> f64 {
        field(&self.json, key).parse().unwrap_or(f64::NAN)
    }
}

/// Starts sse-load with its JSON on a pipe.
fn start_load(url: &str, args: &[String]) -> Child {
    Command::new(LOAD)
        .args(["--url", url, "--json", "--rate", "5000"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sse-load")
}

fn finish_load(mut child: Child) -> LoadResult {
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    let _ = child.wait();
    LoadResult {
        json: out.trim().to_owned(),
    }
}

/// (a): accept `n` streams from sse-load, time `rounds` bare write loops.
fn bare_loop(n: usize, rounds: usize, source_ips: u8) -> (Vec<f64>, u64, LoadResult) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    // SAFETY: listen(2) again on our own listening socket, only to deepen its backlog.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}/bare", listener.local_addr().expect("addr"));
    let load = start_load(
        &url,
        &[
            format!("--clients={n}"),
            format!("--source-ips={source_ips}"),
            format!("--events={rounds}"),
            "--duration=120s".into(),
            "--drain=5s".into(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut socks: Vec<(TcpStream, Vec<u8>, bool)> = Vec::with_capacity(n);
    let mut answered = 0;
    let mut buf = [0u8; 4096];
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
    while answered < n {
        assert!(
            Instant::now() < deadline,
            "bare loop: clients did not connect"
        );
        let mut progress = false;
        while socks.len() < n {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(true).expect("nonblocking");
                    let _ = s.set_nodelay(true);
                    socks.push((s, Vec::new(), false));
                    progress = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("accept: {e}"),
            }
        }
        for (s, req, done) in socks.iter_mut().filter(|(_, _, d)| !*d) {
            match (&*s).read(&mut buf) {
                Ok(0) => panic!("bare loop: a client closed"),
                Ok(k) => {
                    req.extend_from_slice(&buf[..k]);
                    if req.windows(4).any(|w| w == b"\r\n\r\n") {
                        (&*s).write_all(head).expect("write head");
                        *done = true;
                        answered += 1;
                        req.clear();
                        req.shrink_to_fit();
                        progress = true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("bare loop: read: {e}"),
            }
        }
        if !progress {
            sleep(Duration::from_millis(1));
        }
    }
    // sse-load opens its window once every head arrived.
    sleep(Duration::from_millis(1000));
    let mut times = Vec::new();
    let mut short = 0u64;
    let mut frame = Vec::with_capacity(128);
    for _ in 0..rounds {
        frame.clear();
        encode_event(&mut frame, None, None, &tick_text(chrono::Utc::now()));
        let start = Instant::now();
        for (s, _, _) in &socks {
            match (&*s).write(&frame) {
                Ok(k) if k == frame.len() => {}
                _ => short += 1,
            }
        }
        times.push(start.elapsed().as_secs_f64());
        sleep(Duration::from_millis(400));
    }
    let result = finish_load(load);
    drop(socks);
    (times, short, result)
}

/// The running release server.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(interval: &str) -> Server {
        let mut child = Command::new(SERVER)
            .args(["--listen", "127.0.0.1:0", "--interval", interval])
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

    fn metrics(&self) -> Vec<(String, f64)> {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return Vec::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    fn metric(&self, m: &[(String, f64)], name: &str) -> f64 {
        let _ = self;
        m.iter()
            .find(|(k, _)| k == name)
            .map_or(f64::NAN, |(_, v)| *v)
    }

    fn rss_kib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(f64::NAN)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM by the PID we started; then reap it.
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kernel TCP memory in pages (`mem` of the `TCP:` line of /proc/net/sockstat).
fn tcp_mem_pages() -> f64 {
    let s = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let mut it = l.split_whitespace();
            while let Some(w) = it.next() {
                if w == "mem" {
                    return it.next()?.parse().ok();
                }
            }
            None
        })
        .unwrap_or(f64::NAN)
}

/// Bytes in the kernel's per-socket slabs (`TCP`, `sock_inode_cache`): active objects times
/// object size, from /proc/slabinfo (root only; NaN otherwise).
fn socket_slab_bytes() -> f64 {
    let s = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    let mut total = 0.0;
    let mut found = false;
    for l in s.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 3
            && (f[0] == "TCP" || f[0] == "sock_inode_cache")
            && let (Ok(active), Ok(size)) = (f[1].parse::<f64>(), f[3].parse::<f64>())
        {
            total += active * size;
            found = true;
        }
    }
    if found { total } else { f64::NAN }
}

/// (b): the server's own tick fan-out to `n` clients, plus memory.
struct ServerRun {
    fanouts: Vec<f64>,
    rss_idle_kib: f64,
    rss_loaded_kib: f64,
    tcp_pages_idle: f64,
    tcp_pages_loaded: f64,
    slab_idle: f64,
    slab_loaded: f64,
    load: LoadResult,
}

fn server_ticks(n: usize, ticks: usize, source_ips: u8) -> ServerRun {
    let server = Server::start("1s");
    sleep(Duration::from_millis(1500));
    let rss_idle_kib = server.rss_kib();
    let tcp_pages_idle = tcp_mem_pages();
    let slab_idle = socket_slab_bytes();
    let url = format!("http://{}/events", server.addr);
    let mut load = start_load(
        &url,
        &[
            format!("--clients={n}"),
            format!("--source-ips={source_ips}"),
            format!("--events={ticks}"),
            format!("--duration={}s", ticks + 10),
            "--drain=3s".into(),
        ],
    );
    let mut per_tick: Vec<(f64, f64)> = Vec::new(); // (ticks_total, fanout seconds)
    let (mut rss_loaded_kib, mut tcp_pages_loaded, mut slab_loaded) =
        (f64::NAN, f64::NAN, f64::NAN);
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = load.try_wait() {
            break;
        }
        let m = server.metrics();
        let clients = server.metric(&m, "sse_clients");
        if clients as usize == n {
            rss_loaded_kib = server.rss_kib();
            tcp_pages_loaded = tcp_mem_pages();
            slab_loaded = socket_slab_bytes();
            let (tick, fanout, fanned) = (
                server.metric(&m, "sse_ticks_total"),
                server.metric(&m, "sse_last_fanout_seconds"),
                server.metric(&m, "sse_last_fanout_clients"),
            );
            if fanned as usize == n {
                // Keep the last reading per tick: taken after its fan-out finished.
                match per_tick.last_mut() {
                    Some((t, f)) if *t == tick => *f = fanout,
                    _ => per_tick.push((tick, fanout)),
                }
            }
        }
        sleep(Duration::from_millis(150));
    }
    let load = finish_load(load);
    ServerRun {
        // The first reading may predate every client being connected.
        fanouts: per_tick.iter().skip(1).map(|(_, f)| *f).collect(),
        rss_idle_kib,
        rss_loaded_kib,
        tcp_pages_idle,
        tcp_pages_loaded,
        slab_idle,
        slab_loaded,
        load,
    }
}

fn ms(s: f64) -> String {
    format!("{:.3} ms", s * 1e3)
}

fn main() {
    // `cargo bench` passes `--bench`; this program takes its settings from the environment.
    let n: usize = env_num("FANOUT_N", 2000);
    let rounds: usize = env_num("FANOUT_ROUNDS", 7);
    let source_ips: u8 = env_num("FANOUT_SOURCE_IPS", 8);
    let rates: Vec<f64> = std::env::var("FANOUT_RATES")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("FANOUT_RATES: numbers"))
        .collect();
    let sweep_clients: usize = env_num("FANOUT_SWEEP_CLIENTS", 1000);
    let sweep_secs: u64 = env_num("FANOUT_SWEEP_SECONDS", 5);
    let page = 4096.0;

    println!("fanout bench: N = {n}, {rounds} rounds/ticks, {source_ips} source IPs");
    let (mut bare, short, bare_load) = bare_loop(n, rounds, source_ips);
    let bare_med = median(&mut bare);
    println!(
        "(a) bare write loop, {n} sockets: median {} per round ({:.0} ns/write, {:.0} writes/s); {short} short writes; rounds: {:?}",
        ms(bare_med),
        bare_med * 1e9 / n as f64,
        n as f64 / bare_med,
        bare.iter()
            .map(|s| (s * 1e6).round() / 1e3)
            .collect::<Vec<_>>()
    );
    println!(
        "    sse-load: all delivered {}, p50 {:.3} ms, p99 {:.3} ms",
        bare_load.all_delivered(),
        bare_load.num("p50_ms"),
        bare_load.num("p99_ms")
    );
    let mut run = server_ticks(n, rounds + 1, source_ips);
    let server_med = median(&mut run.fanouts);
    println!(
        "(b) sse-server tick fan-out to {n} clients: median {} ({:.0} ns/client); ticks: {:?}",
        ms(server_med),
        server_med * 1e9 / n as f64,
        run.fanouts
            .iter()
            .map(|s| (s * 1e6).round() / 1e3)
            .collect::<Vec<_>>()
    );
    println!(
        "    sse-load: all delivered {} ({} of {} deliveries, {} disconnected), connect {:.3} s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        run.load.all_delivered(),
        run.load.num("delivered"),
        run.load.num("expected"),
        run.load.num("disconnected"),
        run.load.num("connect_seconds"),
        run.load.num("p50_ms"),
        run.load.num("p99_ms"),
        run.load.num("max_ms")
    );
    println!("ratio (b)/(a) = {:.2}", server_med / bare_med);
    println!(
        "memory: server RSS {:.0} KiB idle, {:.0} KiB with {n} clients: {:.0} B user space per client; kernel TCP memory {:.0} -> {:.0} pages ({:.0} B per socket, both ends of loopback)",
        run.rss_idle_kib,
        run.rss_loaded_kib,
        (run.rss_loaded_kib - run.rss_idle_kib) * 1024.0 / n as f64,
        run.tcp_pages_idle,
        run.tcp_pages_loaded,
        (run.tcp_pages_loaded - run.tcp_pages_idle) * page / (2 * n) as f64
    );
    println!(
        "kernel socket slabs (TCP + sock_inode_cache): {:.0} KiB -> {:.0} KiB: {:.0} B per socket ({} sockets: both loopback ends)",
        run.slab_idle / 1024.0,
        run.slab_loaded / 1024.0,
        (run.slab_loaded - run.slab_idle) / (2 * n) as f64,
        2 * n
    );

    if rates.is_empty() {
        return;
    }
    let m = sweep_clients;
    let (mut bare_m, _, _) = bare_loop(m, rounds, source_ips);
    let bare_m_med = median(&mut bare_m);
    println!(
        "\npublish sweep at {m} clients; bare write loop at {m} sockets: {:.0} writes/s ({} per round)",
        m as f64 / bare_m_med,
        ms(bare_m_med)
    );
    println!(
        "  {:>8} {:>10} {:>14} {:>10} {:>10} {:>12} {:>9}",
        "rate/s", "achieved", "deliveries/s", "p99 ms", "max ms", "all deliv.", "sc/deliv"
    );
    let server = Server::start("off");
    let url = format!("http://{}/events", server.addr);
    for rate in rates {
        let before = server.metrics();
        let load = finish_load(start_load(
            &url,
            &[
                format!("--clients={m}"),
                format!("--source-ips={source_ips}"),
                format!("--publish-rate={rate}"),
                format!("--duration={sweep_secs}s"),
                "--drain=3s".into(),
            ],
        ));
        let after = server.metrics();
        let d = |k: &str| server.metric(&after, k) - server.metric(&before, k);
        println!(
            "  {:>8} {:>10.1} {:>14.0} {:>10.3} {:>10.3} {:>12} {:>9.3}",
            rate,
            load.num("publish_rate_achieved"),
            load.num("deliveries_per_second"),
            load.num("p99_ms"),
            load.num("max_ms"),
            load.all_delivered(),
            d("sse_write_syscalls_total") / d("sse_frames_written_total")
        );
    }
}
