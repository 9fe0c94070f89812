//! The sans-IO core: every protocol decision, no sockets, no clock, no syscalls.
//!
//! # Life of a request, from accept to close
//!
//! 1. accept: [`Core::handle_accept`] takes a slot in the registry (evicting, at the
//!    limit, the connection reading a head or body the longest) and arms the head timer.
//! 2. bytes: [`Core::handle_read`] → `connection::on_bytes`: the read step parses one
//!    [`crate::http::pipeline::RequestStream`] step at a time (a head, or the body of the
//!    head routed last) while the connection reads requests; other phases keep input as
//!    they do (bounded by [`Core::input_room`]: the driver stops reading there).
//! 3. routing: `endpoints::decide` maps a parsed head to an action from the request and what
//!    it may read of the core; `endpoints::route` applies it (`answers.rs`: answer, fail,
//!    refuse, read a body).
//! 4. a stream: `stream::start_stream` checks the request's form, then the connect-rate
//!    bound (`admission.rs`: a refused storm costs no token or resume work), then the token
//!    (`access.rs`; an RS256/ES256 signature the cache cannot answer holds the request until
//!    [`Core::handle_verified`], `checks.rs`), asks the log where it starts (`log_engine.rs`),
//!    places one cursor per topic and queues the prelude (or a `reset`).
//! 5. a publish: `publish::begin_publish` → its body → `publish::finish_publish` →
//!    `Core::append_event` (`log_engine.rs`; also [`Core::publish`] for stdin): the memory log
//!    appends now (`fanout.rs`: wake the subscribers, or the slow-client policy), a shared
//!    log answers later through [`Core::handle_bus`].
//! 6. answers: `answers::answer` queues a complete response; once it is written,
//!    `connection::answer_sent` closes or goes back to reading, and the read step picks up
//!    what the client sent meanwhile.
//! 7. writing: the driver drains [`Core::poll_output`] (closes, requests for the log,
//!    answers, then streams) with the harness in [`drain`]: [`Core::write_slices`], one
//!    `writev`, then [`Core::handle_written`] / [`Core::handle_would_block`] /
//!    [`Core::handle_writable`] (`write.rs`).
//! 8. time: [`Core::handle_timeout`] runs ticks, then due timers (`connection.rs`
//!    `on_timer`: head and linger timeouts, keep-alives, token expiry).
//! 9. close: [`Core::handle_read_closed`] (after the answers in flight), [`Core::handle_io_error`],
//!    a timeout, a limit or [`Core::shutdown`] → `Core::remove` (`Core::leave_stream`, the one
//!    way a stream ends; the slot is freed) → [`Output::Close`].
//!
//! # Contract
//!
//! The driver (or the simulator) tells the core what happened through `handle_*` methods,
//! each taking the current time last where time matters, and gives commands
//! ([`Core::publish`], [`Core::shutdown`], [`Core::refuse`]); then it drains the one output
//! channel, [`Core::poll_output`], until it returns `None` ([`drain::OutputSink::drain`]);
//! [`Core::next_deadline`] says when to call [`Core::handle_timeout`] next.
//!
//! Guarantees: a [`ClientId`] of a departed client is ignored by every method; a client
//! never gets bytes after its `Close`; a partial write resumes at the exact byte; every
//! frame is written whole (the slow-client policy skips whole frames only).
//!
//! Invariants (checked after every input in debug builds and by the simulator,
//! [`Core::check_invariants`]): the streaming count matches the clients; every topic
//! subscriber has exactly one matching cursor and every cursor is listed by its topic (the
//! subscriber counts equal the live cursors; a client has one cursor per topic);
//! cursors lie within their topic's retained log; a fully written pending buffer is never
//! kept; a writable client with bytes pending is queued; ticks are scheduled while
//! configured; each retained event counts exactly the streams that have it pending
//! ([`latency`]); and the event log's own ([`event_log`]).

mod access;
mod admission;
mod answers;
mod checks;
mod client;
mod cluster;
mod connection;
pub mod drain;
mod endpoints;
pub mod error;
pub mod event_log;
mod exchange;
mod fanout;
pub mod histogram;
pub mod latency;
mod log_engine;
pub mod metrics;
mod publish;
mod queues;
mod registry;
mod stream;
mod timers;
pub mod topic;
mod write;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

pub use checks::{CheckStats, VerifyOutcome, VerifyReply, VerifyRequest};
use client::Client;
pub use client::{ClientId, Listener};
pub use error::{Allow, RequestError};
use event_log::EventLog;
use exchange::Phase;
pub use metrics::{CloseReason, Metrics, StreamRefusal};
use queues::OutputQueues;
use registry::Registry;
use timers::{TimerKind, Timers};

use crate::config::Config;
use crate::sse::frame;

pub use event_log::DEFAULT_TOPIC;

/// Most slices offered for one write: several frames per `writev` for a client that is behind.
pub const MAX_IOVECS: usize = 64;

/// What the core asks the driver to do: the one channel everything leaves through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The client has bytes to send and its socket is believed writable: get
    /// [`Core::write_slices`], write them once, report the result.
    Write(ClientId),
    /// Close the connection. The core has already forgotten the client.
    Close(ClientId, CloseReason),
    /// Hand this request to the event log's engine (a shared log; boxed: the common outputs
    /// stay two words). Its answer comes back through [`Core::handle_bus`].
    Log(Box<crate::bus::types::BusRequest>),
    /// Check this token's signature off the reactor (boxed, as `Log`). Its answer comes back
    /// through [`Core::handle_verified`].
    Verify(Box<VerifyRequest>),
}

/// Why a read or write failed, as far as the close reason cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoFailure {
    /// The peer reset the connection (`ECONNRESET`, `EPIPE`).
    Reset,
    /// Any other error.
    Other,
}

/// The protocol state machine. See the module documentation for the contract.
pub struct Core {
    cfg: Config,
    /// Every connection, its id's generation, the streaming count, the eviction order.
    connections: Registry,
    /// The topics, their bounded histories, and event numbering.
    log: EventLog,
    /// Head and `retry:` every stream starts with, shared by all clients.
    prelude: Rc<[u8]>,
    /// Closes, then answers, then streams waiting for a write.
    outputs: OutputQueues,
    timers: Timers,
    next_tick: Option<Instant>,
    rng: u64,
    /// When shutting down: the time by which every client is closed.
    shutdown_deadline: Option<Instant>,
    /// The broadcast being written: (started, clients woken).
    fanout: Option<(Instant, usize)>,
    metrics: Metrics,
    /// The shared log engine's state (`--redis`); `None` with the memory log (embedded).
    cluster: Option<Box<cluster::Cluster>>,
    /// The wall clock (token expiry): refreshed by every `handle_timeout`.
    wall: access::WallAnchor,
    /// Verified tokens (`--jwt-cache`), so a reconnect skips the signature check.
    tokens: crate::auth::TokenCache,
    /// Token checks waiting to be handed out and in flight (`checks.rs`).
    checks: checks::Checks,
    /// New streams a second (`--max-stream-rate`, `admission.rs`).
    admission: admission::StreamBucket,
}

impl Core {
    /// A core with no clients. `now` starts the tick schedule; `wall` names this run (event
    /// ids); `seed` drives the jitter of keep-alives and retry delays (deterministic per seed).
    pub fn new(cfg: Config, now: Instant, wall: DateTime<Utc>, seed: u64) -> Core {
        let mut prelude = crate::http::response::STREAM_HEAD.as_bytes().to_vec();
        if let Some(retry) = cfg.retry {
            frame::encode_retry(&mut prelude, retry.as_millis() as u64);
        }
        let millis = u64::try_from(wall.timestamp_millis()).unwrap_or(0);
        let log = EventLog::new(millis, cfg.history, cfg.history_bytes, cfg.max_topics);
        let cfg_cluster = cfg.cluster.is_some();
        let cfg_tokens = cfg.auth.token_cache();
        let cfg_rate = cfg.max_stream_rate;
        Core {
            next_tick: cfg.interval.map(|i| now + i),
            connections: Registry::with_capacity(cfg.max_connections.min(1 << 20)),
            cfg,
            log,
            prelude: Rc::from(prelude),
            outputs: OutputQueues::default(),
            timers: Timers::default(),
            rng: seed | 1,
            shutdown_deadline: None,
            fanout: None,
            metrics: Metrics::default(),
            cluster: cfg_cluster.then(Box::default),
            wall: access::WallAnchor::new(now, wall),
            tokens: cfg_tokens,
            checks: checks::Checks::default(),
            admission: admission::StreamBucket::new(cfg_rate),
        }
    }

    // ---- getters -------------------------------------------------------------------------

    /// The configuration the core runs with (the driver reads its own settings from it).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Streaming clients.
    pub fn streaming_clients(&self) -> usize {
        self.connections.streaming()
    }

    /// Connections of any kind the core holds.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// This run's event-id prefix.
    pub fn boot_id(&self) -> &str {
        self.log.boot()
    }

    /// The id the client with slab key `key` currently has, if any.
    pub fn id_for_key(&self, key: u32) -> Option<ClientId> {
        self.connections.id_for_key(key)
    }

    /// True while `id` names a connection the core holds.
    pub fn is_live(&self, id: ClientId) -> bool {
        self.client(id).is_some()
    }

    /// True when `id` is a streaming client.
    pub fn is_streaming(&self, id: ClientId) -> bool {
        self.client(id).is_some_and(Client::is_streaming)
    }

    /// Bytes the client has queued and not yet written (its backlog).
    pub fn backlog_bytes(&self, id: ClientId) -> Option<u64> {
        self.client(id).map(|c| self.backlog_of(c).0)
    }

    /// True once shutdown was asked for and every connection is gone.
    pub fn is_finished(&self) -> bool {
        self.shutdown_deadline.is_some() && self.connections.is_empty()
    }

    /// True once shutdown was asked for (accepting has stopped).
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown_deadline.is_some()
    }

    /// The earliest time [`Core::handle_timeout`] has work to do, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.next_at();
        // Once every connection is gone the shutdown deadline has nothing left to do (and
        // after it passed it would stay in the past, a busy loop for the caller).
        let shutdown = self
            .shutdown_deadline
            .filter(|_| !self.connections.is_empty());
        [self.next_tick, timer, shutdown, self.next_probe_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The ids of every connection (a snapshot, for closing many at once).
    fn all_ids(&self) -> Vec<ClientId> {
        self.connections.ids()
    }

    fn client(&self, id: ClientId) -> Option<&Client> {
        self.connections.get(id)
    }

    fn client_mut(&mut self, id: ClientId) -> Option<&mut Client> {
        self.connections.get_mut(id)
    }
}

/// Inputs: what happened, and the driver's commands.
impl Core {
    /// A connection was accepted. Returns its id, or `None` when the core refuses it (over
    /// the connection limit, or shutting down): the driver then closes the socket at once.
    ///
    /// At the connection limit, the connection that has been reading a request head or body
    /// the longest (its first request, an idle kept-alive connection between requests, or
    /// a trickling body) is closed (reason `limit`) to make room: idle, slowloris or R.U.D.Y.
    /// connections cannot lock out new clients, nor `/metrics`. The evicted client's `Close` may name the same slab key
    /// as the returned id (the driver must close the old socket first).
    pub fn handle_accept(&mut self, peer: SocketAddr, now: Instant) -> Option<ClientId> {
        self.handle_accept_on(peer, Listener::Main, now)
    }

    /// [`Core::handle_accept`] for a connection from the given listener (what routing
    /// serves it depends on it, [`Listener`]).
    pub fn handle_accept_on(
        &mut self,
        peer: SocketAddr,
        listener: Listener,
        now: Instant,
    ) -> Option<ClientId> {
        if self.shutdown_deadline.is_some() {
            self.metrics.refused += 1;
            return None;
        }
        if self.connections.len() >= self.cfg.max_connections && !self.evict_oldest_head_reader() {
            self.metrics.refused += 1;
            return None;
        }
        let limits = (self.cfg.max_head, self.cfg.max_body);
        let id = self
            .connections
            .insert(|generation| Client::new(generation, (peer, listener), now, limits));
        self.metrics.accepted += 1;
        self.timers
            .arm(id, TimerKind::Head, now + self.cfg.head_timeout);
        self.connections.note_head_reader(id, now);
        Some(id)
    }

    /// Counts a connection the driver took and closed at once without giving it to the
    /// core (out of file descriptors).
    pub fn refuse(&mut self) {
        self.metrics.refused += 1;
    }

    /// Bytes were read from the client.
    pub fn handle_read(&mut self, id: ClientId, bytes: &[u8], now: Instant) {
        if bytes.is_empty() || self.client(id).is_none() {
            return;
        }
        connection::on_bytes(self, id, bytes, now);
        self.debug_check();
    }

    /// The client closed its sending side (a read returned 0; a half-close and a hang-up
    /// look the same). It ends the request stream, not the answers: a connection with an
    /// answer in flight gets it, and those of the pipelined requests already received, then
    /// closes. Anything else closes now (reason `normal`): an idle or
    /// half-sent request can never complete, and a stream is treated as gone (its client
    /// has nothing more to send, and keeping it would hold the slot of every departed
    /// subscriber until its next write).
    pub fn handle_read_closed(&mut self, id: ClientId) {
        let Some(c) = self.client_mut(id) else { return };
        match c.http.phase() {
            Phase::Answering { .. } | Phase::Pipelined(_) | Phase::Closing(_) => c.http.end_input(),
            Phase::Checking(held) => {
                let purpose = held.purpose;
                self.checking_read_closed(id, purpose);
            }
            // Pipelined publishes still wait for the log: answer them, then close.
            _ if !c.http.publishes().is_empty() => c.http.end_input(),
            _ => self.remove(id, CloseReason::Normal),
        }
        self.debug_check();
    }

    /// How many more bytes the driver may read from the client now. 0 while an answer is
    /// pending and the pipelined bytes received meanwhile fill `--max-head` + `--max-body`:
    /// the driver stops reading (backpressure) and reads again once
    /// this is above 0 (after the answer is written). Bytes fed past it close the connection
    /// (reason `limit`), so memory stays bounded whatever the driver does.
    pub fn input_room(&self, id: ClientId) -> usize {
        let Some(c) = self.client(id) else { return 0 };
        match c.http.phase() {
            Phase::Answering { early, .. } => {
                (self.cfg.max_head + self.cfg.max_body).saturating_sub(early.len())
            }
            Phase::Pipelined(held) => {
                (self.cfg.max_head + self.cfg.max_body).saturating_sub(held.early.len())
            }
            Phase::Checking(held) => {
                (self.cfg.max_head + self.cfg.max_body).saturating_sub(held.early.len())
            }
            _ => usize::MAX,
        }
    }

    /// A read or write failed.
    pub fn handle_io_error(&mut self, id: ClientId, failure: IoFailure) {
        if self.client(id).is_some() {
            let reason = match failure {
                IoFailure::Reset => CloseReason::Reset,
                IoFailure::Other => CloseReason::Error,
            };
            self.remove(id, reason);
        }
    }

    /// The socket became writable (a writable readiness event).
    pub fn handle_writable(&mut self, id: ClientId) {
        let Some(c) = self.client_mut(id) else { return };
        c.set_writable(true);
        self.schedule(id);
    }

    /// A write found the socket full. The client waits for its next writable event.
    pub fn handle_would_block(&mut self, id: ClientId, now: Instant) {
        let Some(c) = self.client_mut(id) else { return };
        c.set_writable(false);
        self.metrics.would_blocks += 1;
        self.check_fanout_done(now);
    }

    /// Time passed: ticks, timeouts, keep-alives, the shutdown deadline. `wall` is the
    /// wall-clock time for the tick's text. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, wall: DateTime<Utc>, now: Instant) {
        self.wall = access::WallAnchor::new(now, wall);
        if let Some(due) = self.next_tick.filter(|t| *t <= now) {
            let interval = self.cfg.interval.unwrap_or(Duration::from_secs(2));
            let mut next = due + interval;
            if next <= now {
                // We fell behind (a stalled process): skip missed ticks rather than burst.
                next = now + interval;
            }
            self.next_tick = Some(next);
            self.tick(now, wall);
        }
        while let Some(timer) = self.timers.next(now) {
            self.on_timer(timer.client, timer.kind, now);
        }
        self.probe_head_if_due(now);
        if self.shutdown_deadline.is_some_and(|d| d <= now) {
            for id in self.all_ids() {
                self.remove(id, CloseReason::Shutdown);
            }
        }
        self.debug_check();
    }

    /// Publishes an event (from the driver's stdin reader, or any embedder): validates it,
    /// encodes it once, appends it to its topic's log and wakes the subscribers. Returns
    /// its id.
    pub fn publish(
        &mut self,
        topic: &str,
        event: Option<&str>,
        id: Option<&str>,
        data: &str,
        now: Instant,
    ) -> Result<String, RequestError> {
        let r = self.publish_event(topic, event, id, data, now);
        self.debug_check();
        r
    }

    /// Stop accepting; give streaming clients until `now + grace` to receive what is
    /// queued; close everything else now.
    pub fn shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(now + self.cfg.shutdown_grace);
        self.next_tick = None;
        for id in self.all_ids() {
            let Some(c) = self.client(id) else { continue };
            let keep = match c.http.phase() {
                Phase::Streaming => self.has_pending(id, c),
                Phase::Answering { .. } | Phase::Pipelined(_) | Phase::Closing(_) => true,
                // A request waiting for its token check was not acted on: closed (its
                // answer, when it comes, is dropped), unless publishes before it wait.
                Phase::Reading(_) | Phase::Checking(_) => !c.http.publishes().is_empty(),
            };
            if !keep {
                self.remove(id, CloseReason::Shutdown);
            }
        }
        self.debug_check();
    }
}

/// Outputs and internals.
impl Core {
    /// The next thing to do, or `None` when nothing is left (then wait for
    /// [`Core::next_deadline`] or I/O). Closes come first, so a slab key is released to the
    /// driver before any new connection could reuse it; then requests for the log (a
    /// publish reaches the shared log before any write is made); then token checks; then
    /// responses (a
    /// publisher's answer overtakes the fan-out it caused, so its pipelined next request is
    /// parsed before the fan-out is written, and subscribers get several frames per write);
    /// then streams.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some((id, reason)) = self.outputs.pop_close() {
            return Some(Output::Close(id, reason));
        }
        if let Some(request) = self.next_log_request() {
            return Some(Output::Log(Box::new(request)));
        }
        if let Some(request) = self.next_check_request() {
            return Some(Output::Verify(Box::new(request)));
        }
        while let Some(id) = self.outputs.pop_write() {
            let due = self.client_mut(id).is_some_and(|c| c.take_queued());
            // A stream held after it was queued (its resume now read from the log) may
            // have nothing to write until its page comes.
            if due && self.client(id).is_some_and(|c| self.has_pending(id, c)) {
                return Some(Output::Write(id));
            }
        }
        None
    }

    // ---- internals -----------------------------------------------------------------------

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic per seed, good enough for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A duration in `[base, base + spread)`.
    fn jitter(&mut self, base: Duration, spread: Duration) -> Duration {
        let spread_ns = spread.as_nanos() as u64;
        if spread_ns == 0 {
            return base;
        }
        base + Duration::from_nanos(self.next_random() % spread_ns)
    }

    /// Forgets a client: ends its stream if it has one ([`Core::leave_stream`]), frees its
    /// slot, counts the close and queues its `Close`.
    fn remove(&mut self, id: ClientId, reason: CloseReason) {
        if self.client(id).is_none() {
            return;
        }
        self.leave_stream(id);
        self.connections.remove(id);
        self.metrics.count_close(reason);
        self.outputs.push_close(id, reason);
    }

    /// Checks the core's invariants (debug builds and the simulator).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.connections.check()?;
        for (tid, t) in self.log.topics() {
            for (i, &key) in t.subscribers.iter().enumerate() {
                let Some(c) = self.connections.by_key(key) else {
                    return Err(format!("topic {tid} lists freed slot {key}"));
                };
                if !c
                    .cursors()
                    .iter()
                    .any(|cur| cur.topic == tid && cur.sub_index as usize == i)
                {
                    return Err(format!(
                        "topic {tid} subscriber {key} has no matching cursor"
                    ));
                }
            }
        }
        // Subscriber counts equal live cursors: with the two checks
        // around this one, every subscriber entry and every cursor pair up one to one.
        let subscribers: usize = self.log.topics().map(|(_, t)| t.subscribers.len()).sum();
        let cursors: usize = self
            .connections
            .iter()
            .map(|(_, c)| c.cursors().len())
            .sum();
        if subscribers != cursors {
            return Err(format!(
                "{subscribers} topic subscribers but {cursors} cursors"
            ));
        }
        for (id, c) in self.connections.iter() {
            let key = id.key;
            for (i, cur) in c.cursors().iter().enumerate() {
                if c.cursors()[..i]
                    .iter()
                    .any(|other| other.topic == cur.topic)
                {
                    return Err(format!(
                        "client {key} has two cursors on topic {}",
                        cur.topic
                    ));
                }
                let t = self.log.topic(cur.topic);
                if t.subscribers.get(cur.sub_index as usize) != Some(&key) {
                    return Err(format!(
                        "client {key} cursor not in topic {} subscribers",
                        cur.topic
                    ));
                }
                if cur.next < t.first_seq() || cur.next > t.end_seq() {
                    return Err(format!(
                        "client {key} cursor {} outside [{}, {}]",
                        cur.next,
                        t.first_seq(),
                        t.end_seq()
                    ));
                }
            }
            if c.pending().is_some_and(|p| p.rest().is_empty()) {
                return Err(format!("client {key} holds a fully written pending buffer"));
            }
            if c.may_queue() && self.has_pending(id, c) && !c.http.is_reading() {
                return Err(format!(
                    "client {key} is writable with bytes pending but not queued"
                ));
            }
        }
        self.check_readers()?;
        self.check_fanout_counts()?;
        if let Some(cl) = self.cluster.as_ref() {
            cl.check_apply_watch()?;
        }
        self.log.check_invariants()?;
        if self.next_tick.is_none()
            && self.cfg.interval.is_some()
            && self.shutdown_deadline.is_none()
        {
            return Err("ticks are configured but no tick is scheduled".into());
        }
        Ok(())
    }

    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        if let Err(e) = self.check_invariants() {
            panic!("core invariant violated: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
