//! `--workers N`: this process becomes a supervisor of N worker processes, each the
//! ordinary server (one mio reactor), sharing one port through `SO_REUSEPORT` and one event
//! log (`--redis`). It serves nothing itself.
//!
//! - **Start.** The listen address (port 0 resolved) and the metrics ports are reserved
//!   first ([`ports`]), then each worker is the supervisor's own executable with the same
//!   arguments minus `--workers`, plus `--listen <resolved> --reuse-port --worker-index K`
//!   ([`args`]). Once every worker printed its `listening on` line, the supervisor prints
//!   its own, once.
//! - **Failing at start.** A worker that exits before every worker was ready stops
//!   everything: the supervisor exits with its status (2 for bad flags, else 1), never a
//!   restart loop of a worker that cannot start.
//! - **Restarts.** Afterwards a worker that exits or dies is logged (index, pid, status or
//!   signal) and started again after a backoff ([`Backoff`]: 100 ms doubling to 10 s, back
//!   to 100 ms once a worker ran 30 s). Its clients reconnect meanwhile (the kernel spreads
//!   them over the other workers) and resume from the shared log.
//! - **Stop.** `SIGTERM` or `SIGINT` sends `SIGTERM` to every worker, waits for them for
//!   `--shutdown-grace` plus [`STOP_MARGIN`], then `SIGKILL`s stragglers (logged) and exits
//!   0. A second signal `SIGKILL`s them at once. Workers die with the supervisor too
//!   ([`worker`]: the parent-death signal).
//! - **stdin.** With `--stdin` only worker 0 inherits stdin (every start of it); the
//!   others get `/dev/null`. A worker 0 that dies loses what it had read of an unfinished
//!   line (and lines read but not yet published); its successor reads on from there.

mod args;
mod log_dir;
mod ports;
mod worker;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGTERM};

use crate::config::Config;
use args::Plan;
use worker::Worker;

/// The supervisor's longest wait for anything: it looks at its workers at least this often.
const TICK: Duration = Duration::from_millis(100);
/// Time given to workers to exit after `SIGTERM`, beyond their own `--shutdown-grace`.
pub const STOP_MARGIN: Duration = Duration::from_secs(3);

/// What wakes the supervisor: a signal, or a worker's first stdout line (or its EOF).
pub(crate) enum Event {
    Signal(i32),
    Ready {
        index: u16,
        start_id: u64,
        line: Option<String>,
    },
}

/// The delay before restarting a worker: 100 ms, doubling on each exit to 10 s, back to
/// 100 ms when the worker that exited had run [`Backoff::STABLE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(10);
    /// A worker that ran this long was fine: its exit starts the backoff afresh.
    pub const STABLE: Duration = Duration::from_secs(30);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// A worker that ran for `ran` exited: how long to wait before starting it again.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran >= Self::STABLE {
            self.next = Self::FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// The supervisor's exit status when a worker ended before every worker was ready: 2 (bad
/// flags) stays 2, anything else is 1 (the server could not start).
pub fn startup_failure_code(status: Option<i32>) -> u8 {
    if status == Some(2) { 2 } else { 1 }
}

/// One worker index: its process, or when it starts again.
struct Slot {
    index: u16,
    state: State,
    backoff: Backoff,
}

enum State {
    Running(Worker),
    Waiting(Instant),
}

struct Supervisor {
    exe: PathBuf,
    plan: Plan,
    slots: Vec<Slot>,
    events: Receiver<Event>,
    sender: Sender<Event>,
    starts: u64,
    /// How long workers get to exit after `SIGTERM`.
    grace: Duration,
    /// Every worker was ready once and the `listening on` line is printed.
    announced: bool,
}

/// Runs the supervisor of `cfg.workers` workers until a signal stops it (exit 0), or a
/// worker fails before all are up (its status). `args`: the process's arguments after the
/// program name. Exit 1 when the ports cannot be reserved or a worker cannot be started.
pub fn run(cfg: &Config, args: &[OsString]) -> ExitCode {
    let n = cfg.workers.unwrap_or(1).max(1);
    let (listen, listen_hold) = match ports::reserve_listen(cfg.listen) {
        Ok(r) => r,
        Err(e) => return cannot_start(format_args!("{}: {e}", cfg.listen)),
    };
    let (metrics, metrics_hold) = match cfg.metrics_listen {
        None => (None, Vec::new()),
        Some(base) => match ports::reserve_metrics(base, n) {
            Ok((addr, held)) => (Some(addr), held),
            Err(e) => return cannot_start(format_args!("--metrics-listen {base}: {e}")),
        },
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return cannot_start(format_args!("cannot find my own executable: {e}")),
    };
    let (sender, events) = mpsc::channel();
    if let Err(e) = watch_signals(sender.clone()) {
        return cannot_start(format_args!("signals: {e}"));
    }
    // Without a shared log given, the workers share a local one in a directory of ours.
    let log_dir = match &cfg.cluster {
        Some(_) => None,
        None => match own_log_dir() {
            Ok(d) => Some(d),
            Err(e) => return cannot_start(format_args!("the workers' log directory: {e}")),
        },
    };
    let plan = Plan {
        args: args::strip(args),
        listen,
        metrics,
        stdin: cfg.stdin,
        data_dir: log_dir.as_ref().map(|d| d.path().to_owned()),
    };
    log::info!(
        "sse-server {} supervisor: {n} workers on http://{listen}, at most {} clients each",
        env!("CARGO_PKG_VERSION"),
        cfg.max_clients
    );
    if let Some(base) = metrics {
        for k in 0..n {
            if let Ok(addr) = ports::with_port_offset(base, k) {
                log::info!("worker {k}: metrics on http://{addr}");
            }
        }
    }
    let mut sup = Supervisor {
        exe,
        plan,
        slots: Vec::with_capacity(n),
        events,
        sender,
        starts: 0,
        grace: cfg.shutdown_grace + STOP_MARGIN,
        announced: false,
    };
    let code = sup.supervise(n);
    // The ports stay reserved, and the log directory kept, until every worker is gone.
    drop((listen_hold, metrics_hold, log_dir));
    code
}

/// Makes the private log directory and creates the log in it once, before the workers
/// open it.
fn own_log_dir() -> std::io::Result<log_dir::LogDir> {
    let dir = log_dir::LogDir::create()?;
    let local = crate::bus::config::LocalStore {
        dir: dir.path().to_owned(),
        durability: crate::bus::config::Durability::Os,
    };
    crate::os::ignore_file_size_signal();
    crate::bus::local::check(&local).map_err(|e| std::io::Error::other(e.to_string()))?;
    log::info!(
        "the workers share a local log in {} (removed on exit)",
        dir.path().display()
    );
    Ok(dir)
}

fn cannot_start(what: std::fmt::Arguments<'_>) -> ExitCode {
    eprintln!("sse-server: cannot start: {what}");
    ExitCode::from(1)
}

/// Forwards the signals the supervisor acts on to its loop, from a thread of their own.
fn watch_signals(sender: Sender<Event>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGCHLD])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sender.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

impl Supervisor {
    fn supervise(&mut self, n: usize) -> ExitCode {
        for k in 0..n {
            let index = u16::try_from(k).unwrap_or(u16::MAX);
            let mut slot = Slot {
                index,
                state: State::Waiting(Instant::now()),
                backoff: Backoff::new(),
            };
            match self.start(index) {
                Ok(w) => slot.state = State::Running(w),
                Err(e) => {
                    eprintln!("sse-server: cannot start worker {k}: {e}");
                    return self.stop(ExitCode::from(1));
                }
            }
            self.slots.push(slot);
        }
        loop {
            match self.events.recv_timeout(TICK) {
                Ok(Event::Signal(SIGINT | SIGTERM)) => {
                    log::info!("signal: stopping {} workers", self.running());
                    return self.stop(ExitCode::SUCCESS);
                }
                Ok(Event::Signal(SIGHUP)) => log::warn!("SIGHUP ignored (nothing to reload)"),
                Ok(Event::Signal(_)) | Err(RecvTimeoutError::Timeout) => {}
                Ok(Event::Ready {
                    index,
                    start_id,
                    line,
                }) => self.on_ready(index, start_id, line),
                Err(RecvTimeoutError::Disconnected) => {}
            }
            let now = Instant::now();
            if let Some(code) = self.reap(now) {
                return self.stop(ExitCode::from(code));
            }
            self.restart_due(now);
        }
    }

    fn start(&mut self, index: u16) -> std::io::Result<Worker> {
        self.starts += 1;
        let w = worker::spawn(
            &self.exe,
            self.plan.args_for(index),
            index,
            self.plan.stdin && index == 0,
            self.starts,
            self.sender.clone(),
        )?;
        log::info!("worker {index} started, pid {}", w.pid);
        Ok(w)
    }

    fn running(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, State::Running(_)))
            .count()
    }

    /// A worker's first stdout line: `listening on …` means it serves. Once every worker
    /// did, the supervisor prints its own line (the only one on its stdout).
    fn on_ready(&mut self, index: u16, start_id: u64, line: Option<String>) {
        let Some(slot) = self.slots.get_mut(usize::from(index)) else {
            return;
        };
        let State::Running(w) = &mut slot.state else {
            return;
        };
        if w.start_id != start_id {
            return;
        }
        match line {
            Some(l) if l.starts_with("listening on ") => {
                w.ready = true;
                log::debug!("worker {index} (pid {}) ready", w.pid);
            }
            // The worker is exiting: `reap` sees it end and says how.
            None => log::debug!("worker {index} (pid {}) closed its stdout", w.pid),
            Some(other) => log::warn!("worker {index} (pid {}) first said {other:?}", w.pid),
        }
        let all_ready = self
            .slots
            .iter()
            .all(|s| matches!(&s.state, State::Running(w) if w.ready));
        if all_ready && !self.announced {
            self.announced = true;
            log::info!("{} workers ready", self.slots.len());
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on http://{}", self.plan.listen);
            let _ = out.flush();
        }
    }

    /// Reaps workers that ended: each is logged, then scheduled to start again, unless the
    /// server was not up yet (the returned status: stop everything).
    fn reap(&mut self, now: Instant) -> Option<u8> {
        for slot in &mut self.slots {
            let State::Running(w) = &mut slot.state else {
                continue;
            };
            let status = match w.child.try_wait() {
                Ok(None) => continue,
                Ok(Some(status)) => status,
                Err(e) => {
                    log::error!("worker {} (pid {}): wait: {e}", slot.index, w.pid);
                    continue;
                }
            };
            let ran = now.saturating_duration_since(w.started);
            log::warn!(
                "worker {} (pid {}) {} after {ran:.1?}",
                slot.index,
                w.pid,
                worker::describe(status)
            );
            if !self.announced {
                eprintln!(
                    "sse-server: worker {} failed to start; stopping the others",
                    slot.index
                );
                slot.state = State::Waiting(now);
                return Some(startup_failure_code(status.code()));
            }
            let delay = slot.backoff.after_exit(ran);
            log::info!("restarting worker {} in {delay:?}", slot.index);
            slot.state = State::Waiting(now + delay);
        }
        None
    }

    /// Starts the workers whose backoff is over.
    fn restart_due(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let State::Waiting(at) = self.slots[i].state else {
                continue;
            };
            if at > now {
                continue;
            }
            let index = self.slots[i].index;
            match self.start(index) {
                Ok(w) => self.slots[i].state = State::Running(w),
                Err(e) => {
                    let delay = self.slots[i].backoff.after_exit(Duration::ZERO);
                    log::error!("cannot start worker {index}: {e}; again in {delay:?}");
                    self.slots[i].state = State::Waiting(now + delay);
                }
            }
        }
    }

    /// Stops every worker: `SIGTERM`, a bounded wait, then `SIGKILL` for the stragglers
    /// (at once on a second signal). Returns `code` once none is left.
    fn stop(&mut self, code: ExitCode) -> ExitCode {
        for slot in &self.slots {
            if let State::Running(w) = &slot.state {
                w.signal(SIGTERM);
            }
        }
        let deadline = Instant::now() + self.grace;
        let mut kill_now = false;
        while self.running() > 0 && !kill_now && Instant::now() < deadline {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            if let Ok(Event::Signal(SIGINT | SIGTERM)) = self.events.recv_timeout(wait) {
                log::warn!("second signal: killing the workers");
                kill_now = true;
            }
            self.reap_stopped();
        }
        for slot in &mut self.slots {
            if let State::Running(w) = &mut slot.state {
                if !kill_now {
                    log::warn!(
                        "worker {} (pid {}) still running after {:?}: SIGKILL",
                        slot.index,
                        w.pid,
                        self.grace
                    );
                }
                w.signal(SIGKILL);
                match w.child.wait() {
                    Ok(status) => log::info!(
                        "worker {} (pid {}) {}",
                        slot.index,
                        w.pid,
                        worker::describe(status)
                    ),
                    Err(e) => log::error!("worker {} (pid {}): wait: {e}", slot.index, w.pid),
                }
                slot.state = State::Waiting(Instant::now());
            }
        }
        log::info!("all workers stopped");
        code
    }

    /// While stopping: reaps the workers that exited (no restart).
    fn reap_stopped(&mut self) {
        for slot in &mut self.slots {
            if let State::Running(w) = &mut slot.state
                && let Ok(Some(status)) = w.child.try_wait()
            {
                log::info!(
                    "worker {} (pid {}) {}",
                    slot.index,
                    w.pid,
                    worker::describe(status)
                );
                slot.state = State::Waiting(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_starts_over_after_a_stable_run() {
        let mut b = Backoff::new();
        let quick = Duration::from_millis(50);
        let delays: Vec<u128> = (0..9).map(|_| b.after_exit(quick).as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(b.after_exit(Backoff::STABLE), Backoff::FIRST);
        assert_eq!(b.after_exit(quick), Duration::from_millis(200));
    }

    #[test]
    fn a_worker_failing_at_start_decides_the_exit_status() {
        assert_eq!(startup_failure_code(Some(2)), 2, "bad flags");
        assert_eq!(startup_failure_code(Some(1)), 1, "cannot bind");
        assert_eq!(startup_failure_code(Some(0)), 1);
        assert_eq!(startup_failure_code(None), 1, "killed by a signal");
    }
}
