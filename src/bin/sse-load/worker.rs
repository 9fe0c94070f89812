//! One worker process (`sse-load` re-executed with the hidden `--worker` flag): its own mio
//! reactor running its share of the clients, driven by the coordinator over stdin, reporting
//! over stdout ([`crate::wire`]).
//!
//! Its life: (the first worker only) open one stream to each server alone and say `FIRST`,
//! or fail with a clear message; open the clients (at its share of `--rate`), say `READY`
//! once each one streams, failed or was refused; on `START` count the streaming ones and
//! (worker 0) start publishing; on `END` (or when it ends the window itself: `--events`
//! reached, publisher done) drain until its clients have every window event and a tick from
//! past the window (so their servers' window ticks are all in), or `--drain` passes; then
//! close each client's tick chain, send its result and exit.
//! `STOP`, SIGINT, SIGTERM or the coordinator going away end the run at once with what was
//! measured so far.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::args::{Plan, WorkerSpec};
use crate::clients::{Client, Clients, Env, Phase};
use crate::cpu;
use crate::publisher::{PUBLISHER, Publisher};
use crate::stats::Histogram;
use crate::tally::{Tally, Window};
use crate::wire::{Partial, Progress, ToWorker, counts_text};

const CONTROL: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// How often progress goes to the coordinator.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// After an `END` that did not say how many events there were, wait at least this long (within
/// `--drain`) for events still in flight before calling a worker's clients complete.
const END_GRACE: Duration = Duration::from_millis(500);

/// Where the worker's run is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Connecting,
    /// `READY` sent, waiting for `START`.
    Ready,
    Measuring,
    /// The window is closed; waiting for the last events.
    Draining {
        until: Instant,
        grace_until: Instant,
    },
    Done,
}

/// One worker's state.
pub struct Worker {
    plan: Plan,
    spec: WorkerSpec,
    poll: Poll,
    clients: Clients,
    tally: Tally,
    publisher: Option<Publisher>,
    started: Instant,
    stage: Stage,
    /// The first worker's first streams, one per server, still being checked (0: done).
    checking: usize,
    resolved_at: Option<Instant>,
    counted_per_group: Vec<u64>,
    /// Events per group the window must have, as announced with `END`.
    announced: Vec<u64>,
    window_started: Option<Instant>,
    cpu_at_start: u64,
    rss_before: u64,
    rss_clients: u64,
    /// The window's latency as of the last progress report.
    latency_reported: Histogram,
    control: Vec<u8>,
    stdin_open: bool,
    interrupted: bool,
}

/// Runs a worker to the end; its exit code.
pub fn run(plan: Plan, spec: WorkerSpec) -> Result<(), String> {
    let nofile = sse_server::os::raise_nofile_limit();
    if spec.count as u64 + crate::limits::RESERVED_FDS > nofile {
        return Err(format!(
            "worker {}: {} clients exceed its open-file limit {nofile}",
            spec.index, spec.count
        ));
    }
    let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let stdin = io::stdin();
    set_nonblocking(stdin.as_raw_fd()).map_err(|e| format!("stdin: {e}"))?;
    poll.registry()
        .register(
            &mut SourceFd(&stdin.as_raw_fd()),
            CONTROL,
            Interest::READABLE,
        )
        .map_err(|e| format!("register stdin: {e}"))?;
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("signals: {e}"))?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(|e| format!("register signals: {e}"))?;
    let rss_before = cpu::rss_bytes();
    let clients = Clients::new(&plan, &spec);
    let groups = plan.groups();
    let publisher = if spec.index == 0 {
        Publisher::new(&plan)
    } else {
        None
    };
    let tally = Tally::new(groups, plan.publish.is_some(), plan.args.events);
    let mut w = Worker {
        spec,
        poll,
        clients,
        tally,
        publisher,
        started: Instant::now(),
        stage: Stage::Connecting,
        checking: if spec.index == 0 {
            plan.urls.len().min(spec.count)
        } else {
            0
        },
        resolved_at: None,
        counted_per_group: vec![0; groups],
        announced: Vec::new(),
        window_started: None,
        cpu_at_start: 0,
        rss_before,
        rss_clients: 0,
        latency_reported: Histogram::default(),
        control: Vec::new(),
        stdin_open: true,
        interrupted: false,
        plan,
    };
    w.run(&mut signals)
}

fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on our own stdin descriptor with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes one message to the coordinator (a broken pipe means it is gone: nothing to do).
fn send(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The reactor loop and the run's stages.
impl Worker {
    fn run(&mut self, signals: &mut Signals) -> Result<(), String> {
        let mut events = Events::with_capacity(4096);
        let mut next_progress = Instant::now() + PROGRESS_EVERY;
        while self.stage != Stage::Done {
            let now = Instant::now();
            let mut timeout = self.step(now)?;
            if now >= next_progress {
                next_progress = now + PROGRESS_EVERY;
                self.progress();
            }
            timeout = timeout.min(next_progress - now);
            if let Some(at) = self.clients.next_reconnect() {
                timeout = timeout.min(at.saturating_duration_since(now));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("epoll: {e}"));
            }
            self.clients.new_turn();
            for ev in events.iter() {
                match ev.token() {
                    PUBLISHER => {
                        if let Some(p) = &mut self.publisher {
                            p.on_event(ev, &mut self.tally);
                        }
                    }
                    CONTROL => self.read_control(),
                    SIGNALS => {
                        if signals.pending().next().is_some() {
                            self.interrupted = true;
                        }
                    }
                    t => {
                        let (clients, env, tally) = self.parts();
                        clients.on_client_event(env, tally, t.0, ev);
                    }
                }
            }
            self.reconnect_due(Instant::now());
            if self.interrupted || !self.stdin_open {
                self.stop();
            }
        }
        for c in &self.clients.list {
            self.tally.finish(&c.seen, c.group);
        }
        send(&self.result().lines());
        Ok(())
    }

    /// Moves the run along; the longest the reactor may sleep. An error ends the worker.
    fn step(&mut self, now: Instant) -> Result<Duration, String> {
        let mut timeout = Duration::from_millis(50);
        match self.stage {
            Stage::Connecting => {
                let timed_out = now.duration_since(self.started) >= self.plan.args.connect_timeout;
                if self.checking > 0 {
                    self.check_first(timed_out)?;
                }
                let (alone, elapsed) = (self.checking, now.duration_since(self.started));
                let (clients, env, _) = self.parts();
                clients.open_more(env, elapsed, alone);
                let resolved = self.resolved();
                if resolved == self.clients.list.len() || timed_out {
                    self.resolved_at = Some(now);
                    self.rss_clients = cpu::rss_bytes().saturating_sub(self.rss_before);
                    self.stage = Stage::Ready;
                    send("READY\n");
                } else if self.clients.opened < self.clients.list.len() && self.spec.rate > 0.0 {
                    timeout = Duration::from_secs_f64(1.0 / self.spec.rate).min(timeout);
                }
            }
            Stage::Ready | Stage::Done => {}
            Stage::Measuring => {
                let elapsed = self.window_started.map_or(Duration::ZERO, |s| now - s);
                if let Some(p) = &mut self.publisher {
                    p.pump(&self.plan, &self.poll, elapsed, &mut self.tally);
                    timeout = p.next_due().saturating_sub(elapsed).min(timeout);
                }
                let published_all = self.publisher.as_ref().is_some_and(Publisher::finished);
                // A worker with no counted clients (all slow, or all refused) waits for `END`.
                let everyone_lost =
                    self.counted() > 0 && self.clients.disconnected >= self.counted();
                if published_all || everyone_lost {
                    self.tally.close(crate::now_ns());
                    self.tally.closed_here = true;
                }
                if self.tally.closed_here
                    && let Window::Closed { end_ns, .. } = self.tally.window
                {
                    let counts = self.tally.events_per_group.clone();
                    send(&format!("CLOSED {end_ns} {}\n", counts_text(&counts)));
                    self.end(end_ns, counts, now);
                }
            }
            Stage::Draining { until, grace_until } => {
                if let Some(p) = &mut self.publisher {
                    p.flush(&mut self.tally);
                }
                let complete = now >= grace_until
                    && self.tally.set_delivered() >= self.tally.expected(&self.counted_per_group)
                    && self.has_announced_events()
                    && self.tally.ticks.all_settled(&self.counted_per_group);
                let nobody = self.clients.disconnected >= self.counted();
                if now >= until || complete || nobody {
                    self.stage = Stage::Done;
                }
                timeout = timeout.min(until.saturating_duration_since(now));
            }
        }
        Ok(timeout)
    }

    /// The first worker opens one stream to each server alone, first: a server that cannot
    /// be reached or does not answer with an event stream ends the run with a clear message
    /// (exit 1) before thousands of connections fail the same way. Once they all stream it
    /// says `FIRST`, and the coordinator starts the other workers.
    fn check_first(&mut self, timed_out: bool) -> Result<(), String> {
        let first = &self.clients.list[..self.checking];
        if first
            .iter()
            .all(|c| matches!(c.phase, Phase::Streaming { .. }))
        {
            self.checking = 0;
            send("FIRST\n");
            return Ok(());
        }
        let Some(i) = first
            .iter()
            .position(|c| matches!(c.phase, Phase::Closed))
            .or_else(|| timed_out.then_some(0))
        else {
            return Ok(());
        };
        let (url, _) = self.plan.group_target(self.clients.list[i].group);
        let shown = format!("http://{}{}", url.host, url.target);
        let why = self
            .clients
            .first_error
            .clone()
            .unwrap_or_else(|| "no answer by --connect-timeout".into());
        let unreachable = self.clients.refused.is_empty() && self.clients.connect_failed > 0;
        Err(if unreachable {
            format!(
                "cannot connect to {} ({shown}): {why}; is the server running?",
                url.addr
            )
        } else {
            format!("{shown}: {why}")
        })
    }

    /// Clients counted in the window.
    fn counted(&self) -> u64 {
        self.counted_per_group.iter().sum()
    }

    /// Clients that stream, failed, were refused, or (slow) sent their request.
    fn resolved(&self) -> usize {
        self.clients
            .list
            .iter()
            .filter(|c| {
                !matches!(
                    c.phase,
                    Phase::Idle | Phase::Connecting | Phase::Sending { .. } | Phase::Head(_)
                )
            })
            .count()
    }

    /// Every group with counted clients has at least the events the `END` announced.
    fn has_announced_events(&self) -> bool {
        self.announced.iter().enumerate().all(|(g, &n)| {
            self.counted_per_group.get(g).is_none_or(|&c| c == 0)
                || self.tally.events_per_group.get(g).is_some_and(|&e| e >= n)
        })
    }

    /// Reconnects are for the measured window only.
    fn reconnect_due(&mut self, now: Instant) {
        if !matches!(self.stage, Stage::Measuring) {
            self.clients.cancel_reconnects();
            return;
        }
        let (clients, env, tally) = self.parts();
        clients.reconnect_due(env, tally, now);
    }

    /// The clients, what they need of the worker, and the tally their events go to.
    fn parts(&mut self) -> (&mut Clients, Env<'_>, &mut Tally) {
        let env = Env {
            plan: &self.plan,
            spec: &self.spec,
            registry: self.poll.registry(),
        };
        (&mut self.clients, env, &mut self.tally)
    }
}

/// What the coordinator tells the worker (over stdin), and the end of the run.
impl Worker {
    fn read_control(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match io::stdin().lock().read(&mut buf) {
                Ok(0) => {
                    self.stdin_open = false;
                    break;
                }
                Ok(n) => self.control.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        while let Some(pos) = self.control.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.control.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            match ToWorker::parse(line.trim()) {
                Ok(ToWorker::Start { start_ns }) => self.start(start_ns),
                Ok(ToWorker::End { end_ns, counts }) => self.end(end_ns, counts, Instant::now()),
                Ok(ToWorker::Stop) => self.interrupted = true,
                Err(e) => eprintln!("sse-load worker {}: {e}", self.spec.index),
            }
        }
    }

    /// Opens the window: the clients streaming now are the ones counted.
    fn start(&mut self, start_ns: u64) {
        if !matches!(self.stage, Stage::Connecting | Stage::Ready) {
            return;
        }
        let now = Instant::now();
        // Borrowed field by field (not with `parts`): the loop writes `counted_per_group` too.
        let env = Env {
            plan: &self.plan,
            spec: &self.spec,
            registry: self.poll.registry(),
        };
        let clients = &mut self.clients;
        for i in 0..clients.list.len() {
            let c = &mut clients.list[i];
            match c.phase {
                Phase::Streaming { .. } => {
                    c.seen.counted = true;
                    self.counted_per_group[usize::from(c.group)] += 1;
                    clients.arm_reconnect(env, i, now);
                }
                Phase::Closed | Phase::Slow => {}
                _ => clients.fail(env, i, "not streaming by --connect-timeout".into()),
            }
        }
        self.resolved_at.get_or_insert(now);
        self.tally.open(start_ns);
        self.window_started = Some(now);
        self.cpu_at_start = cpu::self_ticks();
        if let Some(p) = &mut self.publisher {
            p.connect(&self.poll);
        }
        self.stage = Stage::Measuring;
    }

    /// Closes the window at `end_ns` and starts draining.
    fn end(&mut self, end_ns: u64, counts: Vec<u64>, now: Instant) {
        match self.stage {
            Stage::Measuring => {}
            Stage::Connecting | Stage::Ready => {
                self.stage = Stage::Done;
                return;
            }
            Stage::Draining { .. } | Stage::Done => return,
        }
        self.tally.close(end_ns);
        let drain = self.plan.args.drain;
        let grace = if counts.is_empty() {
            END_GRACE.min(drain)
        } else {
            Duration::ZERO
        };
        self.announced = counts;
        self.stage = Stage::Draining {
            until: now + drain,
            grace_until: now + grace,
        };
    }

    /// Ends the run now (Ctrl-C, `STOP`, or the coordinator is gone).
    fn stop(&mut self) {
        self.tally.close(crate::now_ns());
        self.stage = Stage::Done;
    }
}

/// What the worker tells the coordinator.
impl Worker {
    fn progress(&mut self) {
        let p = Progress {
            streaming: self.clients.streaming as u64,
            received: self.tally.received,
            errors: self.clients.connect_failed
                + self.clients.refused.values().sum::<u64>()
                + self.clients.disconnected,
            recent: self.tally.latency.since(&self.latency_reported),
        };
        self.latency_reported.clone_from(&self.tally.latency);
        send(&p.line());
    }

    fn result(&self) -> Partial {
        let clients = &self.clients;
        let counted = clients.list.iter().filter(|c| c.seen.counted);
        let p = self.publisher.as_ref();
        let cpu_ticks = if self.window_started.is_some() {
            cpu::self_ticks().saturating_sub(self.cpu_at_start)
        } else {
            0
        };
        Partial {
            clients: clients.list.len() as u64,
            connected: self.counted_per_group.iter().sum(),
            counted_per_group: self.counted_per_group.clone(),
            connect_failed: clients.connect_failed,
            refused: clients.refused.clone(),
            disconnected: clients.disconnected,
            slow: clients.slow,
            slow_closed: clients.slow_closed,
            reconnects: clients.reconnects,
            reconnect_failed: clients.reconnect_failed,
            connect_seconds: self
                .resolved_at
                .map_or(0.0, |t| t.duration_since(self.started).as_secs_f64()),
            delivered: self.tally.delivered,
            duplicates: self.tally.duplicates,
            out_of_order: self.tally.out_of_order,
            per_client_min: counted
                .clone()
                .map(|c| u64::from(c.seen.got))
                .min()
                .unwrap_or(0),
            per_client_max: counted.map(|c| u64::from(c.seen.got)).max().unwrap_or(0),
            cpu_ticks,
            rss_clients_bytes: self.rss_clients,
            client_struct_bytes: std::mem::size_of::<Client>() as u64,
            published_sent: p.map_or(0, |p| p.sent),
            published_acked: p.map_or(0, |p| p.acked),
            published_failed: p.map_or(0, |p| p.failed),
            first_error: clients
                .first_error
                .clone()
                .or_else(|| p.and_then(|p| p.first_error.clone())),
            latency: self.tally.latency.clone(),
            events: self.tally.events.iter().collect(),
            window_ns: match self.tally.window {
                Window::NotStarted => (0, 0),
                Window::Open { start_ns } => (start_ns, crate::now_ns()),
                Window::Closed { start_ns, end_ns } => (start_ns, end_ns),
            },
            tick_links: self.tally.ticks.links().collect(),
            tick_stretches: self
                .tally
                .ticks
                .resumed
                .iter()
                .map(|(g, h)| (*g, h.clone()))
                .collect(),
        }
    }
}
