//! One worker process: started from the supervisor's own executable, its readiness read
//! from the first line of its stdout, signalled by its pid while the supervisor holds it.
//!
//! A worker asks the kernel for `SIGTERM` when the supervisor dies
//! (`prctl(PR_SET_PDEATHSIG)`, set between fork and exec), so a supervisor killed with
//! `SIGKILL` leaves no worker behind: each one shuts down gracefully on its own. The
//! signal is tied to the thread that forked, so workers are only ever started from the
//! supervisor's main thread, which lives as long as the supervisor.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::time::Instant;

use super::Event;
use super::args::CLEARED_ENV;

/// A running worker.
pub(super) struct Worker {
    /// Held until reaped: the pid is never signalled after that (it may be reused).
    pub child: Child,
    pub pid: u32,
    pub started: Instant,
    /// Its `listening on` line arrived.
    pub ready: bool,
    /// Which start of this slot it is (readiness lines name it: a line of a previous start
    /// arriving late is not taken for this one's).
    pub start_id: u64,
}

/// Starts worker `index` with `args`. Its first stdout line is read on a short-lived thread
/// and sent as [`Event::Ready`]; stderr is the supervisor's. Only worker 0 with `--stdin`
/// gets the supervisor's stdin, every other one `/dev/null`.
pub(super) fn spawn(
    exe: &Path,
    args: Vec<OsString>,
    index: u16,
    with_stdin: bool,
    start_id: u64,
    events: Sender<Event>,
) -> io::Result<Worker> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(if with_stdin {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    let supervisor = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The supervisor died between fork and prctl: its death signal would never come.
            if libc::getppid() != supervisor {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let Some(stdout) = child.stdout.take() else {
        stop_now(&mut child);
        return Err(io::Error::other("no pipe for the worker's stdout"));
    };
    let reader = std::thread::Builder::new()
        .name(format!("worker-{index}-stdout"))
        .spawn(move || {
            let mut line = String::new();
            let line = match BufReader::new(stdout).read_line(&mut line) {
                Ok(n) if n > 0 => Some(line.trim_end().to_owned()),
                _ => None,
            };
            let _ = events.send(Event::Ready {
                index,
                start_id,
                line,
            });
        });
    if let Err(e) = reader {
        stop_now(&mut child);
        return Err(e);
    }
    Ok(Worker {
        child,
        pid,
        started: Instant::now(),
        ready: false,
        start_id,
    })
}

/// SIGKILL and reap a child that cannot be used.
fn stop_now(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl Worker {
    /// Sends `sig` to the worker (not yet reaped, so the pid is still its own).
    pub(super) fn signal(&self, sig: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
        if unsafe { libc::kill(pid, sig) } != 0 {
            log::debug!("kill {}: {}", self.pid, io::Error::last_os_error());
        }
    }
}

/// How a worker ended, for the log: `exited with status 1`, `was killed by signal 9 (SIGKILL)`.
pub(super) fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGBUS => " (SIGBUS)",
                _ => "",
            };
            format!("was killed by signal {sig}{name}")
        }
        None => format!("ended ({status})"),
    }
}
