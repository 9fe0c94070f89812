//! `--workers N` end to end: the real binary as a supervisor of real worker processes on one
//! shared port, each with its metrics listener, sharing one real `redis-server` (each test
//! starts its own on a unix socket in a temp dir). Every process a test starts is stopped by
//! its pid; every wait is bounded and waits for a condition.
//!
//! The Redis tests skip (and pass) without `redis-server`, unless `SSE_REQUIRE_ECOSYSTEM=1`.

mod util;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use util::redis::{Persistence, RedisServer};
use util::{Stream, eventually, http, signal, status_of};

/// Bound of every wait (generous: two loaded cores, several debug-build processes).
const LIMIT: Duration = Duration::from_secs(30);
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// The shared log of a test's workers.
enum Log {
    /// `--redis` on a private `redis-server`.
    Redis(RedisServer),
    /// Neither `--redis` nor `--data-dir`: the supervisor's own temporary directory.
    Own,
}

impl Log {
    /// A private Redis, or `None` (skipped) without `redis-server`.
    fn redis(test: &str) -> Option<Log> {
        RedisServer::start(test, Persistence::None).map(Log::Redis)
    }

    fn args(&self) -> Vec<String> {
        match self {
            Log::Redis(r) => vec!["--redis".into(), r.url()],
            Log::Own => Vec::new(),
        }
    }
}

/// `n` consecutive ports on 127.0.0.1, held by bound sockets that never listen
/// (`SO_REUSEADDR` and `SO_REUSEPORT`: the server's listeners can still bind them, nobody
/// else): no other test can take them while this one runs.
fn reserve_ports(n: usize) -> (SocketAddr, Vec<Socket>) {
    let bind = |port: u16| -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
        Ok(s)
    };
    for _ in 0..64 {
        let first = bind(0).expect("bind a free port");
        let base = first.local_addr().unwrap().as_socket().unwrap();
        let mut held = vec![first];
        for k in 1..n {
            match u16::try_from(usize::from(base.port()) + k).map(bind) {
                Ok(Ok(s)) => held.push(s),
                _ => break,
            }
        }
        if held.len() == n {
            return (base, held);
        }
    }
    panic!("no {n} consecutive free ports");
}

/// A supervisor started by the test, with its workers' metrics addresses. Dropping it
/// SIGKILLs the supervisor and every worker still running, by pid.
struct Supervisor {
    child: Child,
    addr: SocketAddr,
    metrics: Vec<SocketAddr>,
    _ports: Vec<Socket>,
}

impl Supervisor {
    /// `sse-server --listen 127.0.0.1:0 --workers n --metrics-listen <free> --interval off
    /// <args>`, waiting (bounded) for its one `listening on` line.
    fn start(n: usize, args: &[String], stdin: Stdio) -> Supervisor {
        let (base, ports) = reserve_ports(n);
        let mut child = Command::new(env!("CARGO_BIN_EXE_sse-server"))
            .args(["--listen", "127.0.0.1:0", "--interval", "off"])
            .args(["--workers", &n.to_string()])
            .args(["--metrics-listen", &base.to_string()])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sse-server --workers");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(LIMIT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no listening line within {LIMIT:?}");
            }
        };
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        let metrics = (0..n)
            .map(|k| SocketAddr::from(([127, 0, 0, 1], base.port() + k as u16)))
            .collect();
        Supervisor {
            child,
            addr,
            metrics,
            _ports: ports,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (worker index, pid) of every live worker.
    fn workers(&self) -> Vec<(u16, u32)> {
        children(self.pid())
            .into_iter()
            .filter_map(|pid| worker_index(pid).map(|k| (k, pid)))
            .collect()
    }

    /// The pid of worker `k`, once there is one.
    fn worker_pid(&self, k: u16) -> u32 {
        let mut pid = None;
        assert!(
            eventually(LIMIT, || {
                pid = self.workers().into_iter().find(|w| w.0 == k).map(|w| w.1);
                pid.is_some()
            }),
            "no worker {k}"
        );
        pid.unwrap()
    }

    /// Waits until every worker's metrics listener says `/health` 200 (Redis reached).
    fn wait_healthy(&self) {
        for &m in &self.metrics {
            assert!(
                eventually(LIMIT, || health(m) == 200),
                "worker on {m} never healthy"
            );
        }
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Supervisor {
    /// SIGTERM, so the supervisor stops its workers and removes its log directory; SIGKILL
    /// (the supervisor, then every worker, by pid) if it has not exited within 10 s, and the
    /// directory removed here then.
    fn drop(&mut self) {
        let workers = children(self.pid());
        let own_dirs: Vec<PathBuf> = workers
            .iter()
            .filter_map(|&pid| data_dir_of(pid))
            .filter(|d| {
                let own = format!("sse-server-{}-", self.pid());
                d.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&own))
            })
            .collect();
        if let Ok(None) = self.child.try_wait() {
            signal(self.pid(), SIGTERM);
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        for pid in workers {
            if alive(pid) {
                signal(pid, SIGKILL);
            }
        }
        for dir in own_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Live (not zombie) processes whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(state, ppid)| ppid == parent && state != 'Z'))
        .collect()
}

/// (state, parent pid) from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// SIGKILLs worker `pid` and waits until its supervisor reaped it. Only then are all its
/// sockets closed: its main thread shows as a zombie while its other threads still exit,
/// and its listener may be closed after its streams, so a connection made earlier can
/// land in the dying listener's queue and be reset.
fn kill_worker(pid: u32) {
    signal(pid, SIGKILL);
    assert!(
        eventually(LIMIT, || !std::path::Path::new(&format!("/proc/{pid}"))
            .exists()),
        "worker {pid} not reaped"
    );
}

/// The `--worker-index` of a worker process, from its command line.
fn worker_index(pid: u32) -> Option<u16> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let at = args.iter().position(|a| *a == b"--worker-index")?;
    std::str::from_utf8(args.get(at + 1)?).ok()?.parse().ok()
}

/// `GET /health`'s status.
fn health(addr: SocketAddr) -> u16 {
    util::health(addr).0
}

/// A sample from a worker's `/metrics` (the line whose series is exactly `series`).
fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (_, body) = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    body.lines()
        .find_map(|l| l.rsplit_once(' ').filter(|(n, _)| *n == series))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing on {addr}:\n{body}"))
}

/// Publishes on a new connection (the kernel picks the worker), retrying a `503` (a worker
/// just started, not yet connected to Redis, refuses publishes); returns the id.
fn publish_ok(addr: SocketAddr, query: &str, data: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let (status, body) = util::publish(addr, query, data);
        if status == 200 {
            return body.trim().to_owned();
        }
        assert!(
            status == 503 && Instant::now() < deadline,
            "publish {data:?}: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (id, data) of every event a stream got.
fn received(s: &Stream) -> Vec<(String, String)> {
    s.events
        .iter()
        .map(|e| (e.last_event_id.clone(), e.data.clone()))
        .collect()
}

/// Opens streams on the shared port until every worker has one; returns them with the
/// index of the worker each landed on (told by which worker's `sse_clients` went up).
fn streams_on_every_worker(sup: &Supervisor, path: &str) -> Vec<(usize, Stream)> {
    let mut streams: Vec<(usize, Stream)> = Vec::new();
    let counts = |sup: &Supervisor| -> Vec<usize> {
        sup.metrics
            .iter()
            .map(|&m| metric(m, "sse_clients") as usize)
            .collect()
    };
    let mut before = counts(sup);
    for _ in 0..200 {
        let s = Stream::open(sup.addr, path, &[]);
        let mut after = before.clone();
        assert!(
            eventually(LIMIT, || {
                after = counts(sup);
                after.iter().sum::<usize>() == before.iter().sum::<usize>() + 1
            }),
            "a new stream is counted by one worker: {before:?} → {after:?}"
        );
        let k = (0..after.len())
            .find(|&k| after[k] > before[k])
            .expect("one worker counted it");
        streams.push((k, s));
        before = after;
        if before.iter().all(|&c| c > 0) {
            return streams;
        }
    }
    panic!("the kernel never gave every worker a stream: {before:?}");
}

fn offset(id: &str) -> u64 {
    id.rsplit_once('-')
        .and_then(|(_, o)| o.parse().ok())
        .unwrap_or_else(|| panic!("not a cluster id: {id:?}"))
}

/// 1,000 publishes, each on a new connection (the kernel spreads them over the workers),
/// reach the subscribers of both workers with the same ids in the same order.
fn one_order(log: Log) {
    let sup = Supervisor::start(2, &log.args(), Stdio::null());
    sup.wait_healthy();
    for (k, &m) in sup.metrics.iter().enumerate() {
        assert_eq!(
            metric(m, &format!("sse_worker_info{{worker=\"{k}\"}}")),
            1.0
        );
    }
    let mut streams = streams_on_every_worker(&sup, "/events?topic=t");
    let answered: Vec<String> = (0..1000)
        .map(|i| publish_ok(sup.addr, "?topic=t", &format!("e{i}")))
        .collect();
    for (k, &m) in sup.metrics.iter().enumerate() {
        let n = metric(m, "sse_events_published_total");
        assert!(n > 0.0, "worker {k} took no publish");
    }
    for (_, s) in &mut streams {
        s.wait_events(1000, LIMIT);
    }
    let first = received(&streams[0].1);
    assert_eq!(first.len(), 1000);
    for (k, s) in &streams {
        assert_eq!(
            received(s),
            first,
            "a subscriber of worker {k} got another sequence"
        );
    }
    let ids: Vec<&str> = first.iter().map(|(id, _)| id.as_str()).collect();
    assert!(ids.windows(2).all(|w| offset(w[0]) < offset(w[1])));
    let answered: HashSet<&str> = answered.iter().map(String::as_str).collect();
    assert_eq!(answered, ids.iter().copied().collect::<HashSet<_>>());
}

#[test]
fn publishes_on_any_worker_reach_every_worker_in_one_order_with_redis() {
    if let Some(log) = Log::redis("workers_one_order") {
        one_order(log);
    }
}

#[test]
fn publishes_on_any_worker_reach_every_worker_in_one_order_with_the_local_log() {
    one_order(Log::Own);
}

/// A worker killed with SIGKILL is started again (a new pid, its metrics port answers), and
/// its clients, resuming with their ids wherever the kernel puts them, miss nothing.
fn restart(log: Log) {
    let sup = Supervisor::start(2, &log.args(), Stdio::null());
    sup.wait_healthy();
    let mut streams = streams_on_every_worker(&sup, "/events?topic=t");
    for i in 0..5 {
        publish_ok(sup.addr, "?topic=t", &format!("before{i}"));
    }
    for (_, s) in &mut streams {
        assert_eq!(s.wait_events(5, LIMIT).len(), 5);
    }
    let old = sup.worker_pid(0);
    kill_worker(old);
    let (on_killed, others): (Vec<_>, Vec<_>) = streams.into_iter().partition(|(k, _)| *k == 0);
    let mut last_ids = Vec::new();
    for (_, mut s) in on_killed {
        assert!(s.wait_closed(LIMIT), "the killed worker's stream ends");
        last_ids.push(s.events.last().expect("events").last_event_id.clone());
    }
    // Published while the killed worker's clients are away (on the other worker, or the
    // new one once it is up).
    let missed: Vec<String> = (0..5)
        .map(|i| publish_ok(sup.addr, "?topic=t", &format!("missed{i}")))
        .collect();
    assert!(
        eventually(LIMIT, || sup
            .workers()
            .iter()
            .any(|&(k, pid)| k == 0 && pid != old)),
        "worker 0 was not restarted: {:?}",
        sup.workers()
    );
    assert!(!alive(old));
    assert!(
        eventually(LIMIT, || health(sup.metrics[0]) == 200),
        "the new worker 0's metrics listener answers"
    );
    for last in &last_ids {
        let header = format!("Last-Event-ID: {last}");
        let mut s = Stream::open(sup.addr, "/events?topic=t", &[&header]);
        s.wait_events(5, LIMIT);
        let got: Vec<&str> = s.events.iter().map(|e| e.last_event_id.as_str()).collect();
        assert_eq!(
            got, missed,
            "the resumed client gets exactly what it missed"
        );
    }
    for (k, mut s) in others {
        s.wait_events(10, LIMIT);
        let datas: Vec<&str> = s.events.iter().map(|e| e.data.as_str()).collect();
        let want: Vec<String> = (0..5)
            .map(|i| format!("before{i}"))
            .chain((0..5).map(|i| format!("missed{i}")))
            .collect();
        assert_eq!(datas, want, "worker {k}'s subscriber lost nothing");
    }
}

#[test]
fn a_killed_worker_is_restarted_and_its_clients_resume_on_any_worker_with_redis() {
    if let Some(log) = Log::redis("workers_restart") {
        restart(log);
    }
}

#[test]
fn a_killed_worker_is_restarted_and_its_clients_resume_on_any_worker_with_the_local_log() {
    restart(Log::Own);
}

#[test]
fn only_worker_0_reads_stdin_and_its_successor_reads_on() {
    let mut sup = Supervisor::start(2, &["--stdin".into()], Stdio::piped());
    sup.wait_healthy();
    let mut stdin = sup.child.stdin.take().expect("stdin");
    let mut streams = streams_on_every_worker(&sup, "/events");
    stdin.write_all(b"first line\n").unwrap();
    for (_, s) in &mut streams {
        s.wait_events(1, LIMIT);
        assert_eq!(s.types_and_datas(), [("message", "first line")]);
    }
    // Counted when the log answers the publish, which may come after the tail's delivery.
    let published = |m| metric(m, "sse_events_published_total");
    assert!(eventually(LIMIT, || published(sup.metrics[0]) == 1.0));
    assert_eq!(published(sup.metrics[1]), 0.0, "worker 1 reads no stdin");
    let old = sup.worker_pid(0);
    kill_worker(old);
    assert!(
        eventually(LIMIT, || sup
            .workers()
            .iter()
            .any(|&(k, pid)| k == 0 && pid != old)),
        "worker 0 was not restarted"
    );
    assert!(eventually(LIMIT, || health(sup.metrics[0]) == 200));
    stdin.write_all(b"second line\n").unwrap();
    let (_, mut s) = streams
        .into_iter()
        .find(|(k, _)| *k == 1)
        .expect("a stream on worker 1");
    s.wait_events(2, LIMIT);
    assert_eq!(
        s.types_and_datas(),
        [("message", "first line"), ("message", "second line")]
    );
    assert!(eventually(LIMIT, || published(sup.metrics[0]) == 1.0));
    assert_eq!(published(sup.metrics[1]), 0.0);
}

/// The `--data-dir` a worker was given (the supervisor's own directory, or the user's).
fn data_dir_of(pid: u32) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let at = args.iter().position(|a| *a == b"--data-dir")?;
    Some(PathBuf::from(
        String::from_utf8_lossy(args.get(at + 1)?).into_owned(),
    ))
}

#[test]
fn sigterm_stops_every_worker_removes_the_log_directory_and_exits_0() {
    let mut sup = Supervisor::start(2, &[], Stdio::null());
    sup.wait_healthy();
    let workers = sup.workers();
    assert_eq!(workers.len(), 2, "{workers:?}");
    let dir = data_dir_of(workers[0].1).expect("--data-dir");
    assert_eq!(
        Some(&dir),
        data_dir_of(workers[1].1).as_ref(),
        "one log for both"
    );
    assert!(dir.is_dir());
    let _stream = Stream::open(sup.addr, "/events", &[]);
    signal(sup.pid(), SIGTERM);
    let status = sup.wait_exit(LIMIT).expect("the supervisor exits");
    assert_eq!(status.code(), Some(0), "{status}");
    for (k, pid) in workers {
        assert!(!alive(pid), "worker {k} (pid {pid}) still runs");
    }
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

#[test]
fn a_killed_supervisor_takes_its_workers_with_it() {
    let mut sup = Supervisor::start(2, &[], Stdio::null());
    sup.wait_healthy();
    let workers = sup.workers();
    assert_eq!(workers.len(), 2, "{workers:?}");
    let dir = data_dir_of(workers[0].1).expect("--data-dir");
    signal(sup.pid(), SIGKILL);
    sup.wait_exit(LIMIT).expect("the supervisor is gone");
    assert!(
        eventually(LIMIT, || workers.iter().all(|&(_, pid)| !alive(pid))),
        "workers outlived their supervisor: {workers:?}"
    );
    // A supervisor killed by SIGKILL cannot remove its directory.
    let _ = std::fs::remove_dir_all(dir);
}

/// With the user's `--data-dir`, history outlives the supervisor: a client resumes after a
/// restart of the whole server with exactly what it missed.
#[test]
fn a_given_data_dir_keeps_history_across_supervisor_restarts() {
    let dir = std::env::temp_dir().join(format!("sse-workers-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = ["--data-dir".to_string(), dir.display().to_string()];
    let mut sup = Supervisor::start(2, &args, Stdio::null());
    sup.wait_healthy();
    let ids: Vec<String> = (0..6)
        .map(|i| publish_ok(sup.addr, "?topic=t", &format!("e{i}")))
        .collect();
    assert_eq!(data_dir_of(sup.worker_pid(1)), Some(dir.clone()));
    signal(sup.pid(), SIGTERM);
    assert_eq!(sup.wait_exit(LIMIT).and_then(|s| s.code()), Some(0));
    drop(sup);
    assert!(dir.is_dir(), "the user's directory stays");
    let sup = Supervisor::start(2, &args, Stdio::null());
    sup.wait_healthy();
    let header = format!("Last-Event-ID: {}", ids[2]);
    let mut s = Stream::open(sup.addr, "/events?topic=t", &[&header]);
    s.wait_events(3, LIMIT);
    let got: Vec<&str> = s.events.iter().map(|e| e.last_event_id.as_str()).collect();
    assert_eq!(got, &ids[3..]);
    drop(sup);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the binary prints and returns for a command line that must not start.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sse-server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sse-server");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_worker_counts_are_refused_with_status_2() {
    for (args, says) in [
        (&["--workers", "0"][..], "--workers"),
        (&["--workers", "x"], "--workers"),
        (&["--workers", "2", "--durability", "os"], "--data-dir"),
        (
            &[
                "--workers",
                "2",
                "--redis",
                "redis://127.0.0.1:1",
                "--metrics-listen",
                "127.0.0.1:65535",
            ],
            "past 65535",
        ),
    ] {
        let (code, stderr) = refused(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn a_taken_metrics_port_stops_the_start_with_status_1() {
    let (base, held) = reserve_ports(2);
    drop(held);
    // A listener without SO_REUSEPORT on worker 1's metrics port.
    let taken = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], base.port() + 1)))
        .expect("take the port");
    let started = Instant::now();
    let (code, stderr) = refused(&[
        "--workers",
        "2",
        "--redis",
        "redis://127.0.0.1:1",
        "--metrics-listen",
        &base.to_string(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot start"), "{stderr}");
    assert!(started.elapsed() < LIMIT);
    drop(taken);
}

#[test]
fn the_metrics_listener_serves_metrics_and_health_only() {
    // A single process: the port is held by a socket that never listens (SO_REUSEADDR, as
    // the server's own listener sets), so no other test takes it meanwhile.
    let hold = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    hold.set_reuse_address(true).unwrap();
    hold.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let m = hold.local_addr().unwrap().as_socket().unwrap();
    let server = util::Server::start(&["--metrics-listen", &m.to_string()]);
    let get = |addr, path: &str| {
        let (h, b) = http(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        (status_of(&h), b)
    };
    let (status, body) = get(m, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("\nsse_clients 0\n"), "{body}");
    assert!(!body.contains("sse_worker_info"), "not a worker: {body}");
    assert_eq!(get(m, "/health"), (200, "ok\n".into()));
    for path in ["/events", "/", "/clients", "/publish"] {
        assert_eq!(get(m, path).0, 404, "{path}");
    }
    assert_eq!(util::publish(m, "", "x").0, 404);
    let s = Stream::open(server.addr, "/events", &[]);
    assert!(s.head.starts_with("HTTP/1.1 200"), "{}", s.head);
    assert_eq!(metric(m, "sse_clients"), 1.0);
    assert_eq!(
        get(server.addr, "/metrics").0,
        200,
        "the main listener serves it too"
    );
}
