//! The reactor's event sources besides the sockets: the Redis bus (cluster mode), the
//! verifier thread's answers, signals,
//! standard input, and the periodic summary line. Each feeds the core and nothing else.

use std::io::Read;
use std::os::fd::FromRawFd;
use std::time::Instant;

use mio::unix::SourceFd;
use signal_hook::consts::{SIGHUP, SIGINT};

use super::stdin::{Stdin, StdinSource};
use super::{
    BUS_REPLIES_PER_TURN, CHECKS_PER_TURN, Driver, READS_PER_TURN, interrupted, would_block,
};

impl Driver {
    /// Cluster mode: feeds up to [`BUS_REPLIES_PER_TURN`] bus replies into the core. Its
    /// requests for the bus leave with its other outputs (`Driver::log_request`).
    pub(super) fn receive_from_bus(&mut self, now: Instant) {
        let Some(bus) = &self.bus else { return };
        if self.bus_more {
            self.bus_more = false;
            for i in 0..=BUS_REPLIES_PER_TURN {
                if i == BUS_REPLIES_PER_TURN {
                    self.bus_more = true;
                    break;
                }
                let Some(reply) = bus.try_recv() else { break };
                self.core.handle_bus(reply, now);
            }
        }
    }

    /// Feeds up to [`CHECKS_PER_TURN`] answers of the verifier thread into the core.
    pub(super) fn receive_checks(&mut self, now: Instant) {
        let Some(verifier) = &self.verifier else {
            return;
        };
        if !self.checks_more {
            return;
        }
        self.checks_more = false;
        for i in 0..=CHECKS_PER_TURN {
            if i == CHECKS_PER_TURN {
                self.checks_more = true;
                break;
            }
            let Some(reply) = verifier.try_recv() else {
                break;
            };
            self.core.handle_verified(reply, now);
        }
    }

    /// Returns true when the process should exit at once (a second signal).
    pub(super) fn on_signals(&mut self, now: Instant) -> bool {
        for sig in self.signals.pending() {
            if sig == SIGHUP {
                // Logs go to stderr: there is nothing to reopen or reload.
                log::warn!("SIGHUP ignored (no configuration or log file to reload)");
                continue;
            }
            if sig == SIGINT && self.core.config().worker_index.is_some() {
                // A terminal's Ctrl-C reaches the whole process group: the supervisor
                // stops the workers with SIGTERM (one signal, so the grace applies).
                log::debug!("SIGINT ignored by a worker: its supervisor stops it");
                continue;
            }
            self.signals_seen += 1;
            if self.signals_seen > 1 {
                return true;
            }
            log::info!(
                "signal {sig}: shutting down (grace {:?})",
                self.core.config().shutdown_grace
            );
            for acceptor in &mut self.acceptors {
                acceptor.stop(self.poll.registry());
            }
            self.core.shutdown(now);
        }
        false
    }

    pub(super) fn read_stdin(&mut self, now: Instant) {
        let Some(stdin) = &mut self.stdin else { return };
        let mut eof = false;
        // SAFETY: fd 0 stays open; ManuallyDrop keeps this File from closing it.
        let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
        let mut lines: Vec<String> = Vec::new();
        for _ in 0..READS_PER_TURN {
            match file.read(&mut self.scratch) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    stdin.lines.feed(&self.scratch[..n], &mut lines);
                    if matches!(stdin.source, StdinSource::File) {
                        break;
                    }
                }
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    log::warn!("stdin: {e}");
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            stdin.lines.finish(&mut lines);
        }
        for line in lines.iter().filter(|l| !l.is_empty()) {
            if let Err(e) = self
                .core
                .publish(crate::core::DEFAULT_TOPIC, None, None, line, now)
            {
                log::warn!("stdin line not published: {}", e.message());
            }
        }
        if eof {
            log::info!("stdin closed (EOF); still serving");
            if matches!(
                self.stdin,
                Some(Stdin {
                    source: StdinSource::Polled,
                    ..
                })
            ) {
                let _ = self.poll.registry().deregister(&mut SourceFd(&0));
            }
            self.stdin = None;
        }
    }

    pub(super) fn maybe_summary(&mut self, now: Instant) {
        let m = self.core.metrics();
        let counts = (
            self.core.streaming_clients(),
            m.events_published + m.ticks,
            m.bytes_written,
        );
        if let Some(line) = self.summary.advance(now, counts) {
            log::info!("{line}");
        }
    }
}
