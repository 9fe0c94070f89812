//! The coordinator: checks the machine's limits, starts the worker processes (the first one
//! alone until it has checked each server with one stream),
//! keeps them in step (one window for all), shows live progress, and merges their results.
//!
//! Workers are this same binary with the hidden `--worker` flag; each gets a contiguous share
//! of the clients and of `--rate`. A worker that exits without a result is reported as failed.
//! SIGINT or SIGTERM stops every worker, which answer with what they measured so far.

use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::Failure;
use crate::args::{Plan, WorkerSpec};
use crate::cpu;
use crate::limits::Limits;
use crate::net;
use crate::report::{Report, RunInfo};
use crate::stats::Histogram;
use crate::timeline::{Sample, Timeline};
use crate::wire::{FromWorker, Partial, Reader, ToWorker};

/// After `END` (or `STOP`), how long past `--drain` a worker may take to send its result.
const RESULT_GRACE: Duration = Duration::from_secs(10);
/// How often the timeline gets a point.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// One worker process as the coordinator sees it.
struct WorkerProc {
    spec: WorkerSpec,
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Reader,
    first: bool,
    ready: bool,
    result: Option<Partial>,
    failed: Option<String>,
    streaming: u64,
    received: u64,
    errors: u64,
}

impl WorkerProc {
    fn tell(&mut self, m: &ToWorker) {
        if let Some(s) = &mut self.stdin
            && s.write_all(m.line().as_bytes())
                .and_then(|()| s.flush())
                .is_err()
        {
            self.stdin = None;
        }
    }

    fn done(&self) -> bool {
        self.result.is_some() || self.failed.is_some()
    }
}

/// What a reader thread saw.
enum Line {
    Text(usize, String),
    Eof(usize),
}

/// Where the run is.
#[derive(Clone, Copy, PartialEq)]
enum Stage {
    Connecting,
    Measuring { since: Instant },
    Ending { deadline: Instant },
}

/// Runs the whole load test from the command line's plan.
pub fn run(plan: Plan) -> Result<ExitCode, Failure> {
    let args = &plan.args;
    let clients = u64::from(args.clients);
    let limits = Limits::read();
    let workers = limits
        .workers(clients, args.workers)
        .map_err(Failure::Usage)?;
    limits.check_system(clients).map_err(Failure::Usage)?;
    let per_target = clients.div_ceil(plan.urls.len() as u64);
    let loopback = plan.urls.iter().all(|u| net::is_v4_loopback(u.addr.ip()));
    let source_ips = limits
        .source_ips(per_target, args.source_ips, loopback)
        .map_err(Failure::Usage)?;
    eprintln!(
        "sse-load: open-file limit {}: room for {} clients per worker; {clients} clients over {workers} worker(s), {source_ips} source address(es) ({} ephemeral ports each)",
        limits.nofile,
        limits.per_worker(),
        limits.ephemeral_ports
    );
    let server_pids: Vec<u32> = if args.server_pids.is_empty() {
        let mut ports: Vec<u16> = plan
            .urls
            .iter()
            .filter(|u| u.addr.ip().is_loopback())
            .map(|u| u.addr.port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let mut pids: Vec<u32> = ports.into_iter().filter_map(cpu::listener_pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    } else {
        args.server_pids.clone()
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| Failure::Runtime(format!("signals: {e}")))?;
    }
    let (tx, rx) = mpsc::channel();
    let mut specs = Vec::new();
    let mut first = 0usize;
    for index in 0..workers {
        let count = ((clients * (index + 1)) / workers) as usize - first;
        specs.push(WorkerSpec {
            index: index as u32,
            first,
            count,
            source_ips,
            rate: args.rate / workers as f64,
        });
        first += count;
    }
    let mut c = Coordinator {
        plan: &plan,
        procs: vec![spawn(specs[0], 0, &tx)?],
        rx,
        stop,
        started: Instant::now(),
        timeline: Timeline::default(),
        recent: Histogram::default(),
        last_sample: (Instant::now(), 0),
        tty: io::stdout().is_terminal() && !args.json,
        printed_progress: false,
        last_print: None,
        so_far: Histogram::default(),
        server_pids: server_pids.clone(),
    };
    // The first worker checks each server with one stream before the others start.
    if !c.first_streams() {
        return Ok(ExitCode::from(1));
    }
    for (i, spec) in specs.into_iter().enumerate().skip(1) {
        c.procs.push(spawn(spec, i, &tx)?);
    }
    drop(tx);
    let outcome = c.run_loop();
    let report = c.report(outcome, &server_pids, source_ips, workers);
    if c.printed_progress {
        print!("\r\x1b[K");
    }
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.report {
        crate::html::write(path, &plan, &report, &c.timeline)
            .map_err(|e| Failure::Runtime(format!("--report {}: {e}", path.display())))?;
        eprintln!("sse-load: report written to {}", path.display());
    }
    Ok(exit_code(&report))
}

fn exit_code(report: &Report) -> ExitCode {
    if report.info.interrupted {
        ExitCode::from(130)
    } else if report.connected == 0 {
        eprintln!(
            "sse-load: no stream could be opened: {}",
            report.first_error.as_deref().unwrap_or("no reason known")
        );
        ExitCode::from(1)
    } else if report.all_delivered() {
        ExitCode::SUCCESS
    } else if !report.info.workers_failed.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::from(3)
    }
}

fn spawn(spec: WorkerSpec, index: usize, tx: &Sender<Line>) -> Result<WorkerProc, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::Runtime(format!("own path: {e}")))?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--worker")
        .arg(spec.to_flag())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Failure::Runtime(format!("start worker {index}: {e}")))?;
    let stdout = child.stdout.take();
    let tx = tx.clone();
    std::thread::spawn(move || {
        if let Some(out) = stdout {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(Line::Text(index, line)).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Line::Eof(index));
    });
    Ok(WorkerProc {
        spec,
        stdin: child.stdin.take(),
        child,
        reader: Reader::default(),
        first: false,
        ready: false,
        result: None,
        failed: None,
        streaming: 0,
        received: 0,
        errors: 0,
    })
}

/// How the loop ended.
struct Outcome {
    /// From the start until every worker was ready (every client streaming, failed or refused).
    connected_after: Option<Duration>,
    interrupted: bool,
    window: Option<(Instant, Instant)>,
    cpu_self: u64,
    cpu_servers: Option<u64>,
}

struct Coordinator<'a> {
    plan: &'a Plan,
    procs: Vec<WorkerProc>,
    rx: Receiver<Line>,
    stop: Arc<AtomicBool>,
    started: Instant,
    timeline: Timeline,
    /// Latency of the events received since the last sample (merged from progress reports).
    recent: Histogram,
    last_sample: (Instant, u64),
    tty: bool,
    printed_progress: bool,
    /// When the progress line was last printed, and the events received then.
    last_print: Option<(Instant, u64)>,
    /// Window latency so far (for the progress line).
    so_far: Histogram,
    server_pids: Vec<u32>,
}

impl Coordinator<'_> {
    /// Waits until the first worker's first streams are open; false if it failed (it said why)
    /// or the run was interrupted.
    fn first_streams(&mut self) -> bool {
        loop {
            if self.procs[0].first {
                return true;
            }
            if self.procs[0].done() || self.stop.load(Ordering::Relaxed) {
                let _ = self.procs[0].child.kill();
                let _ = self.procs[0].child.wait();
                return false;
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Line::Text(w, text)) => {
                    self.on_line(w, &text);
                }
                Ok(Line::Eof(_)) | Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.procs[0].child.wait();
                    return false;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn run_loop(&mut self) -> Outcome {
        let mut stage = Stage::Connecting;
        let mut interrupted = false;
        let mut window: Option<(Instant, Instant)> = None;
        let mut cpu_start = (0u64, None::<u64>);
        let mut connected_after = None;
        let server_pids = self.server_pids.clone();
        let drain = self.plan.args.drain;
        loop {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Line::Text(w, text)) => {
                    if let Some(msg) = self.on_line(w, &text)
                        && let (FromWorker::Closed { end_ns, counts }, Stage::Measuring { since }) =
                            (msg, stage)
                    {
                        self.broadcast(&ToWorker::End { end_ns, counts });
                        window = Some((since, Instant::now()));
                        stage = Stage::Ending {
                            deadline: Instant::now() + drain + RESULT_GRACE,
                        };
                    }
                }
                Ok(Line::Eof(w)) => self.on_eof(w),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            self.sample(now);
            if self.stop.load(Ordering::Relaxed) && !interrupted {
                interrupted = true;
                self.broadcast(&ToWorker::Stop);
                if let Stage::Measuring { since } = stage {
                    window = Some((since, now));
                }
                stage = Stage::Ending {
                    deadline: now + RESULT_GRACE,
                };
            }
            match stage {
                Stage::Connecting => {
                    if self.procs.iter().all(|p| p.ready || p.done()) {
                        if self.procs.iter().all(WorkerProc::done) {
                            break;
                        }
                        cpu_start = (cpu::self_ticks(), server_ticks(&server_pids));
                        connected_after = Some(now.duration_since(self.started));
                        self.broadcast(&ToWorker::Start {
                            start_ns: crate::now_ns(),
                        });
                        stage = Stage::Measuring { since: now };
                    }
                }
                Stage::Measuring { since } => {
                    if now.duration_since(since) >= self.plan.args.duration {
                        self.broadcast(&ToWorker::End {
                            end_ns: crate::now_ns(),
                            counts: Vec::new(),
                        });
                        window = Some((since, now));
                        stage = Stage::Ending {
                            deadline: now + drain + RESULT_GRACE,
                        };
                    }
                }
                Stage::Ending { deadline } => {
                    if self.procs.iter().all(WorkerProc::done) {
                        break;
                    }
                    if now >= deadline {
                        for p in self.procs.iter_mut().filter(|p| !p.done()) {
                            let _ = p.child.kill();
                            p.failed = Some(format!(
                                "worker {} gave no result in time (killed)",
                                p.spec.index
                            ));
                        }
                        break;
                    }
                }
            }
        }
        if let Stage::Measuring { since } = stage {
            window.get_or_insert((since, Instant::now()));
        }
        let cpu_self = cpu::self_ticks().saturating_sub(cpu_start.0);
        let cpu_servers = match (cpu_start.1, server_ticks(&server_pids)) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        for p in &mut self.procs {
            p.stdin = None;
            let _ = p.child.wait();
        }
        Outcome {
            connected_after,
            interrupted,
            window,
            cpu_self,
            cpu_servers,
        }
    }

    fn broadcast(&mut self, m: &ToWorker) {
        for p in &mut self.procs {
            p.tell(m);
        }
    }

    fn on_line(&mut self, w: usize, text: &str) -> Option<FromWorker> {
        let p = &mut self.procs[w];
        match p.reader.line(text) {
            Ok(Some(FromWorker::Ready)) => p.ready = true,
            Ok(Some(FromWorker::First)) => p.first = true,
            Ok(Some(FromWorker::Progress(pr))) => {
                p.streaming = pr.streaming;
                p.received = pr.received;
                p.errors = pr.errors;
                self.recent.merge(&pr.recent);
                self.so_far.merge(&pr.recent);
            }
            Ok(Some(FromWorker::Result(r))) => p.result = Some(*r),
            Ok(Some(m @ FromWorker::Closed { .. })) => return Some(m),
            Ok(None) => {}
            Err(e) => {
                p.failed = Some(format!("worker {}: {e}", p.spec.index));
                let _ = p.child.kill();
            }
        }
        None
    }

    fn on_eof(&mut self, w: usize) {
        let p = &mut self.procs[w];
        if p.result.is_some() || p.failed.is_some() {
            return;
        }
        let status = p
            .child
            .wait()
            .map_or("unknown status".into(), |s| s.to_string());
        p.failed = Some(format!(
            "worker {} (pid {}, clients {}–{}) ended without a result: {status}",
            p.spec.index,
            p.child.id(),
            p.spec.first,
            p.spec.first + p.spec.count
        ));
        eprintln!("sse-load: {}", p.failed.as_deref().unwrap_or(""));
    }

    /// Twice a second: a point of the timeline; once a second the progress line on a terminal.
    fn sample(&mut self, now: Instant) {
        let (at, received_before) = self.last_sample;
        let dt = now.duration_since(at);
        if dt < SAMPLE_EVERY {
            return;
        }
        let streaming: u64 = self.procs.iter().map(|p| p.streaming).sum();
        let received: u64 = self.procs.iter().map(|p| p.received).sum();
        let errors: u64 = self.procs.iter().map(|p| p.errors).sum();
        let s = Sample {
            t: now.duration_since(self.started).as_secs_f64(),
            streaming,
            per_second: received.saturating_sub(received_before) as f64 / dt.as_secs_f64(),
            p50_ms: self.recent.quantile(0.5) as f64 / 1e6,
            p99_ms: self.recent.quantile(0.99) as f64 / 1e6,
            max_ms: self.recent.max() as f64 / 1e6,
        };
        self.recent.clear();
        self.last_sample = (now, received);
        let (printed_at, printed_received) = self.last_print.unwrap_or((self.started, 0));
        let since = now.duration_since(printed_at);
        if self.tty && (self.last_print.is_none() || since >= Duration::from_secs(1)) {
            self.last_print = Some((now, received));
            let rate = received.saturating_sub(printed_received) as f64 / since.as_secs_f64();
            print!(
                "\r[{:6.1} s] connected {streaming}/{}  events received {received}  deliveries/s {rate:.0}  p99 so far {:.2} ms  errors {errors}\x1b[K",
                s.t,
                self.plan.args.clients,
                self.so_far.quantile(0.99) as f64 / 1e6
            );
            let _ = io::stdout().flush();
            self.printed_progress = true;
        }
        self.timeline.samples.push(s);
    }

    fn report(&self, o: Outcome, server_pids: &[u32], source_ips: u8, workers: u64) -> Report {
        let parts: Vec<Partial> = self.procs.iter().filter_map(|p| p.result.clone()).collect();
        let info = RunInfo {
            urls: self.plan.args.urls.clone(),
            clients: u64::from(self.plan.args.clients),
            workers,
            workers_failed: self.procs.iter().filter_map(|p| p.failed.clone()).collect(),
            source_ips,
            interrupted: o.interrupted,
            window_seconds: o
                .window
                .map_or(0.0, |(a, b)| b.duration_since(a).as_secs_f64()),
            publish_rate_asked: self.plan.args.publish_rate,
            load_cpu_ticks: o.cpu_self,
            server_cpu_ticks: if server_pids.is_empty() {
                None
            } else {
                o.cpu_servers
            },
            ticks_per_second: cpu::ticks_per_second(),
            tick_interval_ns: self
                .plan
                .args
                .tick_interval
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        };
        let mut report = Report::merge(info, &parts);
        if let Some(d) = o.connected_after {
            report.connect_seconds = d.as_secs_f64();
        }
        report
    }
}

/// CPU ticks of the servers together (`None` when there are none or one is unreadable).
fn server_ticks(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu::ticks(&p.to_string())).sum()
}
