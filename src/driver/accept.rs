//! Accepting connections, with the `EMFILE` backoff: out of descriptors, the listener stays
//! readable, so without care the loop would spin at 100% CPU on it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use mio::Registry;
use mio::net::{TcpListener, TcpStream};

use crate::core::Listener;

/// How long accepting pauses after `EMFILE` (or another accept error).
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What one accept gave.
pub(super) enum Accepted {
    /// A new connection.
    Connection(TcpStream, SocketAddr),
    /// Nothing this time, try again (interrupted, or the peer gave up meanwhile).
    Again,
    /// Stop accepting this turn; `refused` when a connection was taken and closed at once
    /// (out of descriptors).
    Done { refused: bool },
}

/// A listener and when it may be accepted from.
pub(super) struct Acceptor {
    /// Which listener this is: the core routes its connections by it.
    pub(super) kind: Listener,
    /// `None` once shutting down.
    listener: Option<TcpListener>,
    /// Held open so that on `EMFILE` one descriptor can be freed to accept-and-close.
    reserve_fd: Option<OwnedFd>,
    /// The listener may have connections waiting (edge-triggered: until `WouldBlock`).
    ready: bool,
    /// While backed off: when to try again.
    retry_at: Option<Instant>,
}

fn open_reserve() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

impl Acceptor {
    pub(super) fn new(listener: TcpListener, kind: Listener) -> Acceptor {
        Acceptor {
            kind,
            listener: Some(listener),
            reserve_fd: open_reserve(),
            ready: true,
            retry_at: None,
        }
    }

    /// The listener reported readiness.
    pub(super) fn set_ready(&mut self) {
        self.ready = true;
    }

    /// Connections may be waiting and nothing holds accepting back: poll without waiting.
    pub(super) fn has_work(&self) -> bool {
        self.ready && self.listener.is_some() && self.retry_at.is_none()
    }

    /// When a backoff ends, if backed off.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Ends a backoff that is over; true when accepting is due this turn.
    pub(super) fn due(&mut self, now: Instant) -> bool {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            self.ready = true;
        }
        self.ready && self.retry_at.is_none()
    }

    /// A batch ended before `WouldBlock`: more may be waiting, revisit next turn.
    pub(super) fn batch_exhausted(&mut self) {
        self.ready = true;
    }

    /// Stops accepting for good (shutdown).
    pub(super) fn stop(&mut self, registry: &Registry) {
        if let Some(mut l) = self.listener.take() {
            let _ = registry.deregister(&mut l);
        }
    }

    /// Accepts once.
    pub(super) fn accept(&mut self, now: Instant) -> Accepted {
        let Some(listener) = &self.listener else {
            return Accepted::Done { refused: false };
        };
        match listener.accept() {
            Ok((stream, peer)) => Accepted::Connection(stream, peer),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.ready = false;
                Accepted::Done { refused: false }
            }
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::ConnectionAborted =>
            {
                Accepted::Again
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                // Out of descriptors: free the reserve, take the waiting connection and
                // close it (the client sees a close, not a hang), then back off briefly
                // so the loop does not spin on a listener that stays readable.
                log::warn!("accept: {e}; refusing connections for {ACCEPT_BACKOFF:?}");
                self.reserve_fd = None;
                let mut refused = false;
                if let Some(Ok((stream, _))) = self.listener.as_ref().map(|l| l.accept()) {
                    drop(stream);
                    refused = true;
                }
                self.reserve_fd = open_reserve();
                self.back_off(now);
                Accepted::Done { refused }
            }
            Err(e) => {
                log::warn!("accept: {e}");
                self.back_off(now);
                Accepted::Done { refused: false }
            }
        }
    }

    fn back_off(&mut self, now: Instant) {
        self.retry_at = Some(now + ACCEPT_BACKOFF);
        self.ready = false;
    }
}
