//! The one drain loop: the contract "take [`Core::poll_output`] until it is empty, perform
//! each output, report the result" written once, for the driver, the simulator, the core
//! tests and the benchmarks.
//!
//! The caller implements [`OutputSink`] (how a write, a close and a request for the event
//! log's engine are performed: a real socket and the engine's helper threads, a simulated
//! one, a buffer) and calls [`OutputSink::drain`]; the harness asks the core for the
//! slices, hands them to the sink once, and reports the outcome back to the core
//! (`handle_written`, `handle_would_block`, `handle_writable`, `handle_io_error`). Requests
//! for the log and token checks leave through the same loop, so no caller can drain writes
//! and forget them.

use std::io::IoSlice;
use std::time::Instant;

use super::{ClientId, CloseReason, Core, IoFailure, MAX_IOVECS, Output, VerifyRequest};
use crate::bus::types::BusRequest;

/// What one write of a client's slices did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The kernel took this many bytes (more than zero).
    Wrote(usize),
    /// The socket is full: the core waits for a writable event.
    WouldBlock,
    /// Interrupted before anything was written: try again.
    Interrupted,
    /// The write failed: the client is gone.
    Failed(IoFailure),
    /// Nothing was attempted (the sink no longer holds that socket, or nothing was
    /// offered): nothing to report.
    Skipped,
}

/// The driver side of the core's output contract. Implement the four required methods and
/// call [`OutputSink::drain`].
pub trait OutputSink {
    /// What stops a drain early (a failed check in the simulator; nothing in the driver).
    type Error;

    /// The core whose outputs are drained.
    fn core(&mut self) -> &mut Core;

    /// The time to report a write at (read after the write).
    fn now(&self) -> Instant;

    /// Writes the client's pending bytes once: get them with [`offer`] from the core (the
    /// implementor borrows its core and its sockets separately), write, and say what
    /// happened. The harness reports the outcome to the core.
    fn write(&mut self, id: ClientId) -> Result<WriteOutcome, Self::Error>;

    /// Closes the connection: the core has already forgotten it.
    fn close(&mut self, id: ClientId, reason: CloseReason) -> Result<(), Self::Error>;

    /// Hands a request to the event log's engine (a shared log: `--redis`). Its answer comes
    /// back later through [`Core::handle_bus`]; a refusal may be fed back at once. The
    /// embedded in-memory log answers inside the core and never asks.
    fn log_request(&mut self, request: BusRequest) -> Result<(), Self::Error>;

    /// Has a token's signature checked (the driver: on its verifier thread). Its answer comes
    /// back later through [`Core::handle_verified`]; a refusal (a full queue) may be fed back
    /// at once, and [`check_now`] answers on the spot. Only a core with token keys asks.
    fn verify(&mut self, request: VerifyRequest) -> Result<(), Self::Error>;

    /// After a write was reported to the core (e.g. watch writability after `WouldBlock`).
    fn after_write(&mut self, _id: ClientId, _outcome: WriteOutcome) -> Result<(), Self::Error> {
        Ok(())
    }

    /// After any output was performed and reported (the simulator checks invariants);
    /// `client` is the client it concerned (`None` for a request for the log).
    fn after_output(&mut self, _client: Option<ClientId>) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Performs the core's outputs until there are none left (`Ok(true)`) or `budget`
    /// outputs were performed (`Ok(false)`: more may be waiting).
    fn drain(&mut self, budget: usize) -> Result<bool, Self::Error> {
        for _ in 0..budget {
            let Some(output) = self.core().poll_output() else {
                return Ok(true);
            };
            let client = match output {
                Output::Close(id, reason) => {
                    self.close(id, reason)?;
                    Some(id)
                }
                Output::Log(request) => {
                    self.log_request(*request)?;
                    None
                }
                Output::Verify(request) => {
                    let client = request.client;
                    self.verify(*request)?;
                    Some(client)
                }
                Output::Write(id) => {
                    let outcome = self.write(id)?;
                    let now = self.now();
                    let core = self.core();
                    match outcome {
                        WriteOutcome::Wrote(n) => core.handle_written(id, n, now),
                        WriteOutcome::WouldBlock => core.handle_would_block(id, now),
                        WriteOutcome::Interrupted => core.handle_writable(id),
                        WriteOutcome::Failed(f) => core.handle_io_error(id, f),
                        WriteOutcome::Skipped => {}
                    }
                    self.after_write(id, outcome)?;
                    Some(id)
                }
            };
            self.after_output(client)?;
        }
        Ok(false)
    }
}

/// Calls `write` with the slices the core offers `id` next (at most [`MAX_IOVECS`]; empty
/// when nothing is pending or `id` is stale).
pub fn offer<R>(core: &Core, id: ClientId, write: impl FnOnce(&[IoSlice<'_>]) -> R) -> R {
    let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
    let n = core.write_slices(id, &mut iov);
    write(&iov[..n])
}

/// Checks `request` on the caller's thread and feeds the answer back at once: a sink that
/// has no verifier thread (tests, tools) answers this way.
pub fn check_now(core: &mut Core, request: &VerifyRequest, now: Instant) {
    let reply = request.check_with(&core.config().auth);
    core.handle_verified(reply, now);
}
