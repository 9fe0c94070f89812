//! The mio reactor: owns the listener, the sockets, the signal pipe, stdin and the clock,
//! and shuttles between the kernel and the [`Core`]. No protocol decision is made here.
//!
//! Readiness is edge-triggered: reads go on until `WouldBlock` (or a per-turn bound, after
//! which the connection is revisited next turn), writes are one `writev` per `Write` output,
//! and the core re-queues a client until it blocks or has nothing left.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

mod accept;
mod sockets;
mod sources;
mod verifier;

use accept::{Accepted, Acceptor};
mod stdin;

use sockets::Sockets;
use stdin::{Stdin, StdinSource};
use verifier::Verifier;

use crate::bus::config::LogStore;
use crate::bus::types::BusRequest;
use crate::bus::{BusHandle, Notify};
use crate::config::Config;
use crate::core::drain::{OutputSink, WriteOutcome, offer};
use crate::core::{ClientId, CloseReason, Core, IoFailure, Listener, VerifyOutcome, VerifyRequest};

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const STDIN: Token = Token(usize::MAX - 3);
/// The helper threads (the bus's in cluster mode, the verifier) wake the reactor through one
/// `mio::Waker` on this token (mio allows one per `Poll`).
const HELPERS: Token = Token(usize::MAX - 4);
/// `--metrics-listen`: the listener for `/metrics` and `/health` only.
const METRICS_LISTENER: Token = Token(usize::MAX - 5);
/// How long start-up waits for the local log's greeting (it opens a local file).
const LOCAL_GREETING: Duration = Duration::from_secs(2);
/// Bus replies fed into the core per wake-up (an `Events` reply is one `XREAD` batch).
const BUS_REPLIES_PER_TURN: usize = 64;
/// Token-check answers fed into the core per wake-up.
const CHECKS_PER_TURN: usize = 256;

/// Connections accepted per wake-up before existing clients get their turn.
const ACCEPTS_PER_TURN: usize = 256;
/// Reads from one connection per wake-up before others get their turn.
const READS_PER_TURN: usize = 16;
/// Outputs performed per wake-up before polling again.
const OUTPUTS_PER_TURN: usize = 1 << 16;
/// Listen backlog: a reconnect storm of thousands must not overflow the SYN queue.
const LISTEN_BACKLOG: i32 = 4096;
/// At most one periodic summary line per this period.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The reactor and everything it owns.
pub struct Driver {
    poll: Poll,
    /// The main listener first, then the metrics listener if any (`--metrics-listen`).
    acceptors: Vec<Acceptor>,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    core: Core,
    sockets: Sockets,
    signals: Signals,
    signals_seen: u32,
    stdin: Option<Stdin>,
    read_again: Vec<u32>,
    scratch: Box<[u8]>,
    summary: Summary,
    /// Cluster mode's bus (`--redis`); `None` in the embedded mode (no thread at all).
    bus: Option<BusHandle>,
    /// Replies may be left in the bus channel after a bounded turn: poll again at once.
    bus_more: bool,
    /// The verifier thread (token keys and `--jwt-verify-queue` above 0); `None`: none.
    verifier: Option<Verifier>,
    /// Answers may be left in the verifier's channel: poll again at once.
    checks_more: bool,
    /// Connections not read for backpressure (the core has no room for their input).
    paused: Vec<ClientId>,
    /// Outputs performed per turn ([`OUTPUTS_PER_TURN`]; smaller in tests).
    outputs_per_turn: usize,
    /// The last turn stopped at its output budget with outputs still queued in the core:
    /// the next poll must not wait (else a broadcast to more clients than the budget would
    /// stall until the next deadline, or forever without ticks).
    outputs_left: bool,
}

#[derive(Default)]
struct Summary {
    at: Option<Instant>,
    clients: usize,
    events: u64,
    bytes: u64,
}

/// Opens the listener on `addr` with a deep accept backlog; with `reuse_port`, with
/// `SO_REUSEPORT` so several processes share the port (the kernel spreads connections).
fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let std_listener: std::net::TcpListener = if reuse_port {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        socket.into()
    } else {
        let listener = std::net::TcpListener::bind(addr)?;
        // SAFETY: listen(2) on a socket we own; raising the backlog of a listening socket is allowed.
        unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
        listener
    };
    std_listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std_listener))
}

/// Caps the kernel send buffer of `fd` at `bytes` (`SO_SNDBUF`; Linux doubles the value and
/// turns off autotuning for the socket). Errors are logged, not fatal: the connection still
/// works with the kernel's default.
fn cap_send_buffer(fd: std::os::fd::RawFd, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt(2) on a socket we own, with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        log::debug!("SO_SNDBUF: {}", io::Error::last_os_error());
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// A reset by the peer, or any other failure.
fn io_failure(e: &io::Error) -> IoFailure {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => IoFailure::Reset,
        _ => IoFailure::Other,
    }
}

impl Driver {
    /// Binds the listener and sets up the reactor. `wall` and `seed` go to the core.
    pub fn new(cfg: Config) -> io::Result<Driver> {
        let poll = Poll::new()?;
        let mut listener = bind(cfg.listen, cfg.reuse_port)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut acceptors = vec![Acceptor::new(listener, Listener::Main)];
        let mut metrics_addr = None;
        if let Some(addr) = cfg.metrics_listen {
            let mut internal = bind(addr, cfg.reuse_port)
                .map_err(|e| io::Error::new(e.kind(), format!("--metrics-listen {addr}: {e}")))?;
            metrics_addr = Some(internal.local_addr()?);
            poll.registry()
                .register(&mut internal, METRICS_LISTENER, Interest::READABLE)?;
            acceptors.push(Acceptor::new(internal, Listener::Internal));
        }
        // SIGHUP is caught so it cannot kill the server silently.
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let stdin = if cfg.stdin {
            Some(Stdin::setup(&poll, STDIN, cfg.max_body)?)
        } else {
            None
        };
        let verify_queue = cfg.auth.verify_queue();
        let notify: Option<Notify> = if cfg.cluster.is_some() || verify_queue > 0 {
            let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), HELPERS)?);
            Some(std::sync::Arc::new(move || {
                let _ = waker.wake();
            }))
        } else {
            None
        };
        let bus = match (&cfg.cluster, &notify) {
            (Some(bus_cfg), Some(notify)) => {
                let handle = BusHandle::start(bus_cfg.clone(), None, notify.clone())
                    .map_err(|e| io::Error::other(e.to_string()))?;
                Some(handle)
            }
            _ => None,
        };
        let verifier = match &notify {
            Some(notify) if verify_queue > 0 => Some(Verifier::start(
                cfg.auth.clone(),
                verify_queue,
                notify.clone(),
            )?),
            _ => None,
        };
        let now = Instant::now();
        let wall = chrono::Utc::now();
        let seed = wall.timestamp_nanos_opt().unwrap_or(0) as u64 ^ u64::from(std::process::id());
        let local_log = matches!(
            cfg.cluster.as_ref().map(|bus| &bus.store),
            Some(LogStore::Local(_))
        );
        let mut core = Core::new(cfg, now, wall, seed);
        // The local log answers its greeting within milliseconds: take it before listening
        // is announced, so a publish right after start is not refused as "log unavailable".
        if local_log && let Some(first) = bus.as_ref().and_then(|b| b.recv_timeout(LOCAL_GREETING))
        {
            core.handle_bus(first, Instant::now());
        }
        Ok(Driver {
            poll,
            acceptors,
            local_addr,
            metrics_addr,
            core,
            sockets: Sockets::default(),
            signals,
            signals_seen: 0,
            stdin,
            read_again: Vec::new(),
            scratch: vec![0u8; 64 * 1024].into_boxed_slice(),
            summary: Summary::default(),
            // Replies may already wait (the greeting's events): look at once.
            bus_more: bus.is_some(),
            bus,
            verifier,
            checks_more: false,
            paused: Vec::new(),
            outputs_per_turn: OUTPUTS_PER_TURN,
            outputs_left: false,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics listener's address, if any (port 0 resolved).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The core, for inspection.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Runs until shutdown completes (or a second signal).
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            // (While accepting is backed off, the retry time is the deadline, not "now".)
            let busy = self.acceptors.iter().any(Acceptor::has_work)
                || self.bus_more
                || self.checks_more
                || self.outputs_left
                || !self.read_again.is_empty()
                || matches!(
                    self.stdin,
                    Some(Stdin {
                        source: StdinSource::File,
                        ..
                    })
                );
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                std::iter::once(self.core.next_deadline())
                    .chain(self.acceptors.iter().map(Acceptor::retry_at))
                    .flatten()
                    .min()
                    .map(|d| d.saturating_duration_since(now))
            };
            // Round up to whole milliseconds so a sub-millisecond remainder does not spin.
            let timeout = timeout.map(|t| {
                if t.is_zero() {
                    t
                } else {
                    t.max(Duration::from_millis(1))
                }
            });
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if interrupted(&e) {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.acceptors[0].set_ready(),
                    METRICS_LISTENER => {
                        if let Some(a) = self.acceptors.get_mut(1) {
                            a.set_ready();
                        }
                    }
                    SIGNALS => {
                        if self.on_signals(now) {
                            log::info!("second signal: exiting now");
                            return Ok(());
                        }
                    }
                    STDIN => self.read_stdin(now),
                    HELPERS => {
                        self.bus_more = self.bus.is_some();
                        self.checks_more = self.verifier.is_some();
                    }
                    Token(key) => self.on_client_event(key as u32, event, now),
                }
            }
            let again = std::mem::take(&mut self.read_again);
            for key in again {
                if let Some(id) = self.core.id_for_key(key) {
                    self.read_client(id, now);
                }
            }
            if matches!(
                self.stdin,
                Some(Stdin {
                    source: StdinSource::File,
                    ..
                })
            ) {
                self.read_stdin(now);
            }
            for i in 0..self.acceptors.len() {
                if self.acceptors[i].due(now) {
                    self.accept(i, now);
                }
            }
            if self.core.next_deadline().is_some_and(|d| d <= now) {
                self.core.handle_timeout(chrono::Utc::now(), now);
            }
            self.receive_from_bus(now);
            self.receive_checks(now);
            self.drain_outputs();
            self.maybe_summary(now);
            if self.core.is_finished() {
                log::info!("shutdown complete");
                return Ok(());
            }
        }
    }

    /// Accepts up to [`ACCEPTS_PER_TURN`] connections from acceptor `i` and hands them to
    /// the core.
    fn accept(&mut self, i: usize, now: Instant) {
        let kind = self.acceptors[i].kind;
        for _ in 0..ACCEPTS_PER_TURN {
            match self.acceptors[i].accept(now) {
                Accepted::Connection(stream, peer) => {
                    let Some(id) = self.core.handle_accept_on(peer, kind, now) else {
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let cap = self.core.config().max_send_buffer;
                    if cap > 0 {
                        cap_send_buffer(stream.as_raw_fd(), cap);
                    }
                    self.insert(id, stream);
                }
                Accepted::Again => {}
                Accepted::Done { refused } => {
                    if refused {
                        self.core.refuse();
                    }
                    return;
                }
            }
        }
        // Batch exhausted: the listener may have more; revisit next turn (poll timeout 0).
        self.acceptors[i].batch_exhausted();
    }

    fn insert(&mut self, id: ClientId, stream: TcpStream) {
        if let Err(e) = self.sockets.insert(self.poll.registry(), id, stream) {
            log::warn!("register: {e}");
            self.core.handle_io_error(id, IoFailure::Other);
        }
    }

    fn on_client_event(&mut self, key: u32, event: &mio::event::Event, now: Instant) {
        let Some(id) = self.core.id_for_key(key) else {
            return;
        };
        if !self.sockets.holds(id) {
            return;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_client(id, now);
        }
        if event.is_writable() && self.core.is_live(id) {
            self.core.handle_writable(id);
        }
    }

    fn read_client(&mut self, id: ClientId, now: Instant) {
        for _ in 0..READS_PER_TURN {
            let room = self.core.input_room(id).min(self.scratch.len());
            if room == 0 {
                // Backpressure: answers are pending and enough is buffered; read again
                // once the core has room ([`Driver::resume_paused`]).
                self.paused.push(id);
                return;
            }
            let Some(result) = self.sockets.read(id, &mut self.scratch[..room]) else {
                return;
            };
            match result {
                Ok(0) => {
                    self.core.handle_read_closed(id);
                    return;
                }
                Ok(n) => {
                    self.core.handle_read(id, &self.scratch[..n], now);
                    if !self.core.is_live(id) {
                        return;
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    self.core.handle_io_error(id, io_failure(&e));
                    return;
                }
            }
        }
        self.read_again.push(id.key);
    }

    /// Performs the core's outputs (at most `outputs_per_turn` per turn); remembers whether
    /// some are left for the next turn.
    fn drain_outputs(&mut self) {
        let Ok(done) = OutputSink::drain(self, self.outputs_per_turn);
        self.outputs_left = !done;
        self.resume_paused();
    }

    /// Connections whose reading was paused for backpressure and that have room again are
    /// read next turn (edge-triggered: no new readiness event would come for bytes already
    /// waiting in the socket).
    fn resume_paused(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let mut paused = std::mem::take(&mut self.paused);
        paused.sort_unstable();
        paused.dedup();
        for id in paused {
            if !self.core.is_live(id) {
                continue;
            }
            if self.core.input_room(id) > 0 {
                self.read_again.push(id.key);
            } else {
                self.paused.push(id);
            }
        }
    }

    /// A write would block: the core waits for a writable event, so make sure one comes.
    fn watch_writable(&mut self, id: ClientId) {
        if let Err(e) = self.sockets.watch_writable(self.poll.registry(), id) {
            log::warn!("reregister: {e}");
            self.core.handle_io_error(id, IoFailure::Other);
        }
    }
}

impl Summary {
    /// Called every turn with (clients, events, bytes written so far). At most once per
    /// [`SUMMARY_EVERY`] it takes a new sample, and returns a line when something changed
    /// since the last one.
    fn advance(
        &mut self,
        now: Instant,
        (clients, events, bytes): (usize, u64, u64),
    ) -> Option<String> {
        if self
            .at
            .is_some_and(|t| now.saturating_duration_since(t) < SUMMARY_EVERY)
        {
            return None;
        }
        let changed = clients != self.clients || events != self.events || bytes != self.bytes;
        let line = match self.at {
            Some(at) if changed => {
                let secs = now.saturating_duration_since(at).as_secs_f64().max(1e-9);
                Some(format!(
                    "{clients} clients, {:.1} events/s, {:.0} bytes/s",
                    events.saturating_sub(self.events) as f64 / secs,
                    bytes.saturating_sub(self.bytes) as f64 / secs
                ))
            }
            _ => None,
        };
        *self = Summary {
            at: Some(now),
            clients,
            events,
            bytes,
        };
        line
    }
}

/// The driver performs the core's outputs on real sockets through the shared drain harness.
impl OutputSink for Driver {
    type Error = Infallible;

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    /// One `writev` of the offered slices.
    fn write(&mut self, id: ClientId) -> Result<WriteOutcome, Infallible> {
        let sockets = &self.sockets;
        let result = offer(&self.core, id, |iov| {
            if iov.is_empty() {
                None
            } else {
                sockets.write(id, iov)
            }
        });
        Ok(match result {
            None => WriteOutcome::Skipped,
            Some(Ok(0)) => WriteOutcome::WouldBlock,
            Some(Ok(written)) => WriteOutcome::Wrote(written),
            Some(Err(e)) if would_block(&e) => WriteOutcome::WouldBlock,
            Some(Err(e)) if interrupted(&e) => WriteOutcome::Interrupted,
            Some(Err(e)) => WriteOutcome::Failed(io_failure(&e)),
        })
    }

    fn after_write(&mut self, id: ClientId, outcome: WriteOutcome) -> Result<(), Infallible> {
        if outcome == WriteOutcome::WouldBlock {
            self.watch_writable(id);
        }
        Ok(())
    }

    fn close(&mut self, id: ClientId, _reason: CloseReason) -> Result<(), Infallible> {
        self.sockets.close(self.poll.registry(), id);
        Ok(())
    }

    /// Hands the request to the bus's helper threads; a refusal goes straight back.
    fn log_request(&mut self, request: BusRequest) -> Result<(), Infallible> {
        let Some(bus) = &self.bus else {
            log::error!("the core asked for a shared log this process does not have");
            drop(request);
            return Ok(());
        };
        if let Err(refusal) = bus.submit(request) {
            self.core.handle_bus(refusal, Instant::now());
        }
        Ok(())
    }

    /// Hands the check to the verifier thread; a full queue is answered at once (503).
    fn verify(&mut self, request: VerifyRequest) -> Result<(), Infallible> {
        let refused = match &self.verifier {
            Some(v) => v.submit(request).err(),
            None => {
                log::error!("the core asked for a token check with no verifier thread");
                Some(request.reply(VerifyOutcome::Busy))
            }
        };
        if let Some(reply) = refused {
            self.core.handle_verified(reply, Instant::now());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A broadcast to more clients than one turn's output budget must
    /// reach all of them at once, not at the next deadline (never, with ticks and
    /// keep-alives off). The budget is cut to 1 so eight clients exceed it.
    #[test]
    fn a_broadcast_past_the_output_budget_does_not_wait_for_a_deadline() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let cfg = Config {
                listen: "127.0.0.1:0".parse().expect("address"),
                interval: None,
                keepalive: None,
                ..Config::default()
            };
            let mut driver = Driver::new(cfg).expect("driver");
            driver.outputs_per_turn = 1;
            tx.send(driver.local_addr()).expect("send");
            // Runs until the test process exits.
            let _ = driver.run();
        });
        let addr = rx.recv().expect("address");
        let get = b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
        let mut clients: Vec<std::net::TcpStream> = (0..8)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).expect("connect");
                s.write_all(get).expect("request");
                s.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                let mut head = [0u8; 512];
                let n = s.read(&mut head).expect("stream head");
                assert!(head[..n].starts_with(b"HTTP/1.1 200"));
                s
            })
            .collect();
        let mut p = std::net::TcpStream::connect(addr).expect("connect");
        p.write_all(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .expect("publish");
        // The publisher keeps its connection open: no event of its own wakes the reactor.
        for (i, c) in clients.iter_mut().enumerate() {
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while !got.windows(11).any(|w| w == b"data: hello") {
                let n = c.read(&mut buf).unwrap_or(0);
                assert!(
                    n > 0,
                    "client {i} got nothing: {:?}",
                    String::from_utf8_lossy(&got)
                );
                got.extend_from_slice(&buf[..n]);
            }
        }
        drop(p);
    }

    #[test]
    fn summary_at_most_every_period_and_only_on_change() {
        let t0 = Instant::now();
        let mut s = Summary::default();
        assert_eq!(
            s.advance(t0, (0, 0, 0)),
            None,
            "the first call only samples"
        );
        assert_eq!(
            s.advance(t0 + Duration::from_secs(5), (3, 10, 1000)),
            None,
            "too soon"
        );
        assert_eq!(
            s.advance(t0 + Duration::from_secs(10), (3, 10, 1000))
                .as_deref(),
            Some("3 clients, 1.0 events/s, 100 bytes/s")
        );
        assert_eq!(
            s.advance(t0 + Duration::from_secs(20), (3, 10, 1000)),
            None,
            "nothing changed"
        );
        assert!(
            s.advance(t0 + Duration::from_secs(31), (2, 10, 1000))
                .is_some()
        );
    }
}
