//! The deterministic simulator: a simulated clock and network around the real [`Core`].
//!
//! [`Sim`] stands in for [`crate::driver`]: it feeds the core the same `handle_*` calls in the
//! same order, drains [`Core::poll_output`] the same way (`Write` → [`Core::write_slices`] and
//! one simulated `writev`, `Close` → the socket goes), and keys its sockets by slab key and
//! generation. What it simulates instead of the kernel:
//!
//! - **Time**: a fixed base [`Instant`] plus an offset, and a fixed base wall time; nothing
//!   reads the real clock, so a run is a pure function of its [`SimConfig`] and its [`Op`]s.
//! - **Send windows**: each socket takes at most `window` bytes; a write beyond it is partial,
//!   a write into a full socket is `WouldBlock`. The scenario opens the window ([`Op::Writable`])
//!   or fills it ([`Op::Full`]).
//! - **Edge-triggered writability** (epoll `EPOLLET`): a writable event is reported only when a
//!   full socket (window 0) gets room, and (as in the driver, which adds `EPOLLOUT` interest at
//!   the first `WouldBlock`) only once a write has blocked on it. A core that stops writing
//!   before `WouldBlock` is never woken again; the simulator reports that as a stall.
//! - **Clients**: each connection keeps every byte it received and, once streaming, decodes
//!   them with the WHATWG [`Parser`]; a model of what was published (per-topic retention,
//!   publisher ids, resume rules) says what each client must have received.
//!
//! [`Sim::apply`] runs one operation and then checks every invariant (see [`Sim::check`]);
//! it returns `Err` with a message naming the broken invariant. Nothing here panics on what a
//! scenario does; the fuzz target panics on `Err`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};

use crate::config::{Config, SlowClientPolicy};
use crate::core::drain::{OutputSink, WriteOutcome, offer};
use crate::core::{ClientId, CloseReason, Core, IoFailure, Output};
use crate::http::response::STREAM_HEAD;
use crate::sse::frame;
use crate::sse::parse::{Event, Parser};

/// Topic names a scenario can use (index 0 is the default stream).
pub const TOPICS: [&str; 4] = ["", "a", "b", "news"];
/// Publisher-given ids: valid ones, one shaped like an id of an earlier run, invalid ones.
pub const IDS: [&str; 5] = ["x1", "x2", "k-3", "bad\nid", "n\0l"];
/// Event types: valid ones and an invalid one.
pub const EVENTS: [&str; 4] = ["update", "reset", "a b", "bad\revent"];
/// Text pieces for event data: leading spaces, colons, non-ASCII, field look-alikes.
pub const WORDS: [&str; 7] = [
    "hello",
    " spaced",
    "colon: x",
    "\u{e9}t\u{e9} \u{1f389}",
    ": not a comment",
    "data: fake",
    "id: 99",
];

/// Model index of the tick topic (after [`TOPICS`]).
const TICK: usize = TOPICS.len();
/// Most outputs drained after one operation before the simulator calls it a livelock.
const MAX_OUTPUTS: usize = 200_000;
/// Largest send window a socket can have (a kernel send buffer).
const MAX_WINDOW: usize = 1 << 20;

/// One piece of event data; data is a list of pieces, so line breaks of every kind appear.
#[cfg_attr(feature = "sim", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A word from [`WORDS`] (index modulo its length).
    Word(u8),
    Lf,
    Cr,
    CrLf,
    /// `n % 3000` bytes of filler: frames larger than a window or a backlog bound.
    Long(u16),
}

/// The `Last-Event-ID` a stream request carries.
#[cfg_attr(feature = "sim", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastId {
    None,
    /// An id the server never issued.
    Unknown,
    /// An id of an earlier run of the server (another boot prefix).
    EarlierRun,
    /// `<boot>-<n>`: an id of this run, possibly evicted or not yet issued.
    Seq(u8),
    /// A publisher-given id from [`IDS`].
    Custom(u8),
}

/// What a request asks for; each kind has one documented outcome.
#[cfg_attr(feature = "sim", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// `GET /events`: a stream of the topics in the bitmask over [`TOPICS`] (0: no `topic`).
    /// `in_query` puts the last id in `?lastEventId=` instead of the header.
    Stream {
        topics: u8,
        last_id: LastId,
        in_query: bool,
    },
    /// `HEAD /events`: the stream head, then close.
    HeadEvents,
    /// `GET /health`: 200, kept alive unless `close`.
    Health { close: bool },
    /// `POST /publish` with the event in the query and the data as the body.
    Publish {
        topic: u8,
        event: Option<u8>,
        id: Option<u8>,
        data: Vec<Piece>,
        close: bool,
    },
    /// 404.
    NotFound,
    /// `POST /events`: 405.
    WrongMethod,
    /// Not HTTP: 400.
    Garbage,
    /// A head over `max_head`: 431.
    Oversized,
    /// Over [`crate::http::request::MAX_HEADERS`] headers: 431.
    TooManyHeaders,
    /// Two different `Content-Length`s: 400.
    BadFraming,
    /// `POST /publish` without `Content-Length`: 411.
    NoLength,
    /// `POST /publish` with a body over `max_body`: 413.
    TooLarge,
    /// A topic name with a NUL: 400.
    BadTopic,
}

/// One step of a scenario. Connection numbers pick among the open connections (modulo
/// their count; nothing happens when there are none), so any sequence is valid.
#[cfg_attr(feature = "sim", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A client connects (the driver accepts it).
    Connect,
    /// The client sends a request, split after the given byte offsets (each piece is one
    /// read); with `hold_back`, the last piece is kept for [`Op::SendRest`] (a slow client).
    Request {
        conn: u8,
        kind: RequestKind,
        cuts: Vec<u16>,
        hold_back: bool,
    },
    /// The client sends what it held back.
    SendRest { conn: u8 },
    /// The client read `window` bytes: its socket has that much more room.
    Writable { conn: u8, window: u16 },
    /// The client's socket fills up (its window drops to 0).
    Full { conn: u8 },
    /// The client shuts down its sending side (the server reads 0).
    HalfClose { conn: u8 },
    /// The client resets the connection (possibly mid-frame).
    Reset { conn: u8 },
    /// Time passes by `millis × 10`; the driver wakes at every deadline on the way.
    Advance { millis: u16 },
    /// The process stalls for `millis × 10` and wakes once (deadlines are late).
    Stall { millis: u16 },
    /// Time jumps to the core's next deadline.
    Tick,
    /// An event is published through [`Core::publish`].
    Publish {
        topic: u8,
        event: Option<u8>,
        id: Option<u8>,
        data: Vec<Piece>,
    },
    /// The client stops reading: its window no longer grows.
    StopReading { conn: u8 },
    /// The client reads again.
    ResumeReading { conn: u8 },
    /// A stream client reconnects with the last event id its parser saw (its old
    /// connection, if still open, is closed first).
    Reconnect { conn: u8 },
    /// SIGTERM.
    Shutdown,
}

/// The server configuration a scenario runs with (a swarm of small, bound-hitting configs).
#[cfg_attr(feature = "sim", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Slow-client policy `latest` instead of `drop`.
    pub latest: bool,
    /// `max_backlog` 2 KiB / 6 events instead of 1 MiB / 1024 events.
    pub small_backlog: bool,
    /// Events retained per topic: `1 + history % 12`.
    pub history: u8,
    /// Keep-alive comments every 3 s.
    pub keepalive: bool,
    /// A `retry:` in every stream's prelude.
    pub retry: bool,
    /// Ticks every 2 s.
    pub ticks: bool,
    /// Most streaming clients: `1 + max_clients % 6` (connections: that plus 2).
    pub max_clients: u8,
    /// A new socket's send window in bytes.
    pub initial_window: u16,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latest: false,
            small_backlog: false,
            history: 7,
            keepalive: true,
            retry: false,
            ticks: true,
            max_clients: 3,
            initial_window: 4096,
        }
    }
}

impl SimConfig {
    /// The core's configuration for this scenario.
    pub fn config(&self) -> Config {
        let (max_backlog, max_backlog_events) = if self.small_backlog {
            (2048, 6)
        } else {
            (1 << 20, 1024)
        };
        let max_clients = 1 + usize::from(self.max_clients % 6);
        Config {
            interval: self.ticks.then(|| Duration::from_secs(2)),
            keepalive: self.keepalive.then(|| Duration::from_secs(3)),
            retry: self.retry.then(|| Duration::from_millis(1500)),
            max_head: 1024,
            head_timeout: Duration::from_secs(10),
            max_body: 4096,
            history: 1 + usize::from(self.history % 12),
            history_bytes: 4096,
            max_topics: 8,
            max_topics_per_client: 4,
            max_backlog,
            max_backlog_events,
            slow_client: if self.latest {
                SlowClientPolicy::Latest
            } else {
                SlowClientPolicy::Drop
            },
            max_clients,
            max_connections: max_clients + 2,
            max_client_send: 4096,
            publish_token: None,
            shutdown_grace: Duration::from_secs(2),
            linger: Duration::from_secs(5),
            ..Config::default()
        }
    }
}

/// Builds event data from pieces.
pub fn build_data(pieces: &[Piece]) -> String {
    let mut s = String::new();
    for p in pieces {
        match p {
            Piece::Word(i) => s.push_str(WORDS[usize::from(*i) % WORDS.len()]),
            Piece::Lf => s.push('\n'),
            Piece::Cr => s.push('\r'),
            Piece::CrLf => s.push_str("\r\n"),
            Piece::Long(n) => s.extend(std::iter::repeat_n('x', usize::from(*n) % 3000)),
        }
    }
    s
}

/// What a parser must make of data: every CRLF and lone CR becomes LF.
pub fn normalise_line_breaks(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// FNV-1a, 64 bits: a hash that is the same on every run and platform.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What a parsed event must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    event_type: String,
    data: String,
    /// The `id:` the frame carries (`None`: the parser's last id is unchanged).
    id: Option<String>,
}

/// One frame a stream client must receive: its exact bytes, and what a parser makes of it
/// (`None` for the `retry:` prelude, which dispatches nothing).
#[derive(Debug, Clone)]
struct ExpFrame {
    bytes: Rc<[u8]>,
    event: Option<Expected>,
    /// The model event it is (`None` for prelude and gap frames).
    model: Option<usize>,
}

/// An event the model knows was appended to a topic's log.
#[derive(Debug, Clone)]
struct MEvent {
    topic: usize,
    local_seq: u64,
    frame: ExpFrame,
}

/// The model of one topic's retained history (an independent re-statement of the log's
/// bounds: the newest `history` entries within `history_bytes`, the newest always kept).
#[derive(Debug, Default)]
struct MTopic {
    /// (gseq, frame length, publisher id) of the retained entries, oldest first.
    log: VecDeque<(u64, usize, Option<String>)>,
    first_seq: u64,
    bytes: usize,
    evicted_gseq: Option<u64>,
}

impl MTopic {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.log.len() as u64
    }

    fn resume_after(&self, gseq: u64) -> Option<u64> {
        if self.evicted_gseq.is_some_and(|e| e > gseq) {
            return None;
        }
        Some(self.first_seq + self.log.iter().filter(|e| e.0 <= gseq).count() as u64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    Fresh,
    After(u64),
    EarlierRun,
    Unknown,
}

/// What a request sent on a connection must get back.
#[derive(Debug, Clone)]
struct Expect {
    /// Acceptable statuses.
    statuses: Vec<u16>,
    /// The connection closes after this response.
    closes: bool,
    /// A `HEAD /events`: the response is the bare stream head.
    head_only: bool,
    /// Begun when the connection's head timeout had already passed (a 408 may answer it).
    late: bool,
    /// When its last byte was sent (`None`: not yet).
    completed_at: Option<Duration>,
}

/// A request whose bytes are fully sent and whose outcome is pending.
#[derive(Debug, Clone)]
struct StreamWant {
    topics: Vec<usize>,
    last_id: Option<String>,
}

/// What a client of a stream must receive and what it got so far.
#[derive(Debug)]
struct StreamState {
    /// Model topics (tick included for the default stream).
    topics: Vec<usize>,
    /// Raw offset where the stream head starts.
    head_at: usize,
    expected: Vec<ExpFrame>,
    /// Frames of `expected` received whole (for `latest`, the index after the last match).
    matched: usize,
    /// Raw offset of the first byte not yet matched to a whole frame.
    pos: usize,
    parser: Parser,
    /// Events the parser dispatched.
    dispatched: Vec<Event>,
    /// Bytes of model frames received whole.
    received_frame_bytes: u64,
    /// The last whole frame received (under `latest`, identical frames make the matched
    /// index ambiguous; the newest frame must be the last one received).
    last_frame: Option<Rc<[u8]>>,
}

/// One simulated client connection.
#[derive(Debug)]
struct Conn {
    id: ClientId,
    /// The simulator still holds its socket.
    open: bool,
    window: usize,
    /// Writable readiness is watched (from the first `WouldBlock` on, as in the driver).
    watching_writable: bool,
    /// Bytes sent since the last answer was received whole (pipelined bytes the server
    /// buffers while its answer is unread: past `max_head + max_body`, a `limit` close).
    sent_since_answer: usize,
    reading: bool,
    raw: Vec<u8>,
    closed: Option<CloseReason>,
    /// The client itself ended the connection (half-close or reset).
    client_ended: bool,
    /// Requests fully sent that get an HTTP response, in order.
    sent: Vec<Expect>,
    /// Pieces of a request held back, and the request's expectation.
    held: Option<(Vec<u8>, Option<StreamWant>, Option<PubReq>)>,
    /// A request was started but not finished (held back or never sent).
    incomplete: bool,
    /// No more requests make sense (a closing request or a stream was sent).
    done: bool,
    /// When the current request head phase began (accept, or the last keep-alive answer).
    head_since: Duration,
    want_stream: Option<StreamWant>,
    stream: Option<StreamState>,
    /// `streaming clients >= max_clients` was seen while its stream request was pending.
    maybe_over_limit: bool,
    /// Publish requests sent whose event the core has not appended yet.
    publishes: VecDeque<PubReq>,
    /// Responses already checked (complete) in `raw`.
    responses_seen: usize,
    /// The last id a client carries across reconnects (as an EventSource does).
    inherited_id: String,
    /// The server answered with 408 (and then closes).
    timed_out: bool,
    /// That 408 answered no request at all (the client never began one).
    extra_408: bool,
    /// It was told "over the client limit" in full (stream head and `retry:`).
    over_limit_complete: bool,
}

/// A publish sent over HTTP, as the model must record it.
#[derive(Debug, Clone)]
struct PubReq {
    topic: usize,
    event: Option<String>,
    id: Option<String>,
    data: String,
}

/// The simulated world: the real core, a clock, sockets and clients, and the model.
pub struct Sim {
    core: Core,
    cfg: Config,
    base: Instant,
    elapsed: Duration,
    wall0: DateTime<Utc>,
    initial_window: usize,
    conns: Vec<Conn>,
    /// Sockets by slab key: (generation, connection index), as in the driver.
    slots: Vec<Option<(u32, usize)>>,
    /// Ids whose socket the simulator closed at accept (slot reused after an eviction).
    evicted: Vec<(ClientId, usize)>,
    // The model.
    next_gseq: u64,
    topics: Vec<MTopic>,
    custom_ids: HashMap<String, u64>,
    events: Vec<MEvent>,
    seen_published: u64,
    seen_ticks: u64,
    shutting_down: bool,
    trace: u64,
    steps: u64,
    /// Largest frame seen (bounds a `latest` client's backlog).
    max_frame: usize,
    /// Fail when a `slow` close does not look justified by the model's lag accounting (on by
    /// default; a switch for experiments with the slow-client policy).
    pub strict_slow: bool,
    /// Topics appended to since the last check: their subscribers must be within the
    /// backlog bound now (the bound is enforced when an event is appended).
    appended: Vec<usize>,
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

impl Sim {
    /// A simulated server with no clients. `seed` seeds the core's jitter.
    pub fn new(sc: &SimConfig, seed: u64) -> Sim {
        let cfg = sc.config();
        let base = Instant::now();
        let wall0 = Utc
            .with_ymd_and_hms(2024, 10, 13, 14, 35, 22)
            .single()
            .unwrap_or_default();
        Sim {
            core: Core::new(cfg.clone(), base, wall0, seed),
            cfg,
            base,
            elapsed: Duration::ZERO,
            wall0,
            initial_window: usize::from(sc.initial_window),
            conns: Vec::new(),
            slots: Vec::new(),
            evicted: Vec::new(),
            next_gseq: 1,
            topics: (0..=TOPICS.len()).map(|_| MTopic::default()).collect(),
            custom_ids: HashMap::new(),
            events: Vec::new(),
            seen_published: 0,
            seen_ticks: 0,
            shutting_down: false,
            trace: 0xcbf2_9ce4_8422_2325,
            steps: 0,
            max_frame: 0,
            appended: Vec::new(),
            strict_slow: true,
        }
    }

    /// The core under test.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// A hash of everything that crossed the core's boundary so far (the determinism check).
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Operations applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Events and ticks the model recorded.
    pub fn events_broadcast(&self) -> usize {
        self.events.len()
    }

    /// Frames clients received whole and verified (a measure of how much a run checked).
    pub fn frames_verified(&self) -> usize {
        self.conns
            .iter()
            .filter_map(|c| c.stream.as_ref())
            .map(|s| s.matched)
            .sum()
    }

    /// One line per connection: its state, bytes received, frames verified, close reason.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.conns.iter().enumerate() {
            let _ = write!(
                out,
                "#{i} key={} gen={} open={} window={} reading={} raw={} requests={} ",
                c.id.key,
                c.id.generation,
                c.open,
                c.window,
                c.reading,
                c.raw.len(),
                c.sent.len()
            );
            if let Some(s) = &c.stream {
                let _ = write!(out, "stream {}/{} frames ", s.matched, s.expected.len());
            }
            let _ = writeln!(out, "closed={:?}", c.closed);
        }
        out
    }

    fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    fn wall(&self) -> DateTime<Utc> {
        self.wall0 + chrono::Duration::from_std(self.elapsed).unwrap_or_default()
    }

    fn trace(&mut self, tag: &str, a: u64, b: u64) {
        self.trace = fnv(self.trace, tag.as_bytes());
        self.trace = fnv(self.trace, &a.to_le_bytes());
        self.trace = fnv(self.trace, &b.to_le_bytes());
    }

    /// Open connections, in connection order.
    fn open_conns(&self) -> Vec<usize> {
        (0..self.conns.len())
            .filter(|&i| self.conns[i].open)
            .collect()
    }

    fn pick(&self, n: u8) -> Option<usize> {
        let open = self.open_conns();
        (!open.is_empty()).then(|| open[usize::from(n) % open.len()])
    }

    /// Runs a whole scenario, stopping at the first broken invariant.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), String> {
        for (i, op) in ops.iter().enumerate() {
            self.apply(op)
                .map_err(|e| format!("after op #{i} {op:?}: {e}"))?;
        }
        Ok(())
    }

    /// Applies one operation like the driver would, drains the outputs, checks invariants.
    pub fn apply(&mut self, op: &Op) -> Result<(), String> {
        self.steps += 1;
        self.trace("op", self.steps, 0);
        match op {
            Op::Connect => self.connect()?,
            Op::Request {
                conn,
                kind,
                cuts,
                hold_back,
            } => {
                if let Some(ci) = self.pick(*conn) {
                    self.request(ci, kind, cuts, *hold_back)?;
                }
            }
            Op::SendRest { conn } => {
                if let Some(ci) = self.pick(*conn) {
                    self.send_rest(ci)?;
                }
            }
            Op::Writable { conn, window } => {
                if let Some(ci) = self.pick(*conn) {
                    self.open_window(ci, usize::from(*window))?;
                }
            }
            Op::Full { conn } => {
                if let Some(ci) = self.pick(*conn) {
                    self.conns[ci].window = 0;
                }
            }
            Op::HalfClose { conn } => {
                if let Some(ci) = self.pick(*conn) {
                    self.conns[ci].client_ended = true;
                    let id = self.conns[ci].id;
                    self.core.handle_read_closed(id);
                    self.after_call(Some(id))?;
                    self.drain()?;
                }
            }
            Op::Reset { conn } => {
                if let Some(ci) = self.pick(*conn) {
                    self.conns[ci].client_ended = true;
                    let id = self.conns[ci].id;
                    self.core.handle_io_error(id, IoFailure::Reset);
                    self.after_call(Some(id))?;
                    self.drain()?;
                }
            }
            Op::Advance { millis } => {
                self.advance(Duration::from_millis(u64::from(*millis) * 10))?
            }
            Op::Stall { millis } => {
                self.elapsed += Duration::from_millis(u64::from(*millis) * 10);
                self.timeout()?;
            }
            Op::Tick => {
                if let Some(d) = self.core.next_deadline() {
                    let at = d.saturating_duration_since(self.base);
                    self.elapsed = self.elapsed.max(at);
                    self.timeout()?;
                }
            }
            Op::Publish {
                topic,
                event,
                id,
                data,
            } => self.publish(*topic, *event, *id, data)?,
            Op::StopReading { conn } => {
                if let Some(ci) = self.pick(*conn) {
                    self.conns[ci].reading = false;
                }
            }
            Op::ResumeReading { conn } => {
                if let Some(ci) = self.pick(*conn) {
                    self.conns[ci].reading = true;
                }
            }
            Op::Reconnect { conn } => self.reconnect(*conn)?,
            Op::Shutdown => {
                self.shutting_down = true;
                let now = self.now();
                self.core.shutdown(now);
                self.after_call(None)?;
                self.drain()?;
            }
        }
        self.check()
    }

    // ---- the driver's side ---------------------------------------------------------------

    fn connect(&mut self) -> Result<(), String> {
        let now = self.now();
        let at_limit = self.core.connections() >= self.cfg.max_connections;
        let peer = SocketAddr::from(([127, 0, 0, 1], 10_000 + self.conns.len() as u16));
        let Some(id) = self.core.handle_accept(peer, now) else {
            ensure!(
                self.shutting_down || at_limit,
                "a connection was refused with {} of {} connections and no shutdown",
                self.core.connections(),
                self.cfg.max_connections
            );
            self.trace("refused", 0, 0);
            return Ok(());
        };
        ensure!(
            !self.shutting_down,
            "a connection was accepted during shutdown"
        );
        self.trace("accept", u64::from(id.key), u64::from(id.generation));
        let key = id.key as usize;
        if self.slots.len() <= key {
            self.slots.resize(key + 1, None);
        }
        if let Some((generation, old)) = self.slots[key].take() {
            // The core evicted this slot's connection to make room: close it now, as the
            // driver does; its `Close` is still queued and names the old generation.
            ensure!(
                at_limit,
                "accept reused slot {key} of a live connection below the connection limit"
            );
            ensure!(
                generation != id.generation,
                "accept reused slot {key} with the same generation {generation}"
            );
            self.conns[old].open = false;
            self.evicted.push((
                ClientId {
                    key: id.key,
                    generation,
                },
                old,
            ));
        }
        let ci = self.conns.len();
        self.conns.push(Conn {
            id,
            open: true,
            window: self.initial_window,
            watching_writable: false,
            sent_since_answer: 0,
            reading: true,
            raw: Vec::new(),
            closed: None,
            client_ended: false,
            sent: Vec::new(),
            held: None,
            incomplete: false,
            done: false,
            head_since: self.elapsed,
            want_stream: None,
            stream: None,
            maybe_over_limit: false,
            publishes: VecDeque::new(),
            responses_seen: 0,
            inherited_id: String::new(),
            timed_out: false,
            extra_408: false,
            over_limit_complete: false,
        });
        self.slots[key] = Some((id.generation, ci));
        // Like the driver, the socket is registered for reads only: writable events are
        // watched from the first write that would block on.
        self.after_call(Some(id))?;
        self.drain()
    }

    /// Sends a request in pieces; each piece is one read, outputs drained after each.
    fn request(
        &mut self,
        ci: usize,
        kind: &RequestKind,
        cuts: &[u16],
        hold_back: bool,
    ) -> Result<(), String> {
        if self.conns[ci].done || self.conns[ci].held.is_some() {
            return Ok(());
        }
        let (bytes, expect, want, publish) = self.render(kind);
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|&c| usize::from(c) % (bytes.len() + 1))
            .filter(|&c| c > 0 && c < bytes.len())
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut pieces = Vec::new();
        let mut prev = 0;
        for p in points {
            pieces.push(bytes[prev..p].to_vec());
            prev = p;
        }
        pieces.push(bytes[prev..].to_vec());
        // The last piece completes the request: it goes through `finish_request`.
        let last = pieces.pop().unwrap_or_default();
        {
            let c = &mut self.conns[ci];
            c.done |= expect.closes || want.is_some();
            c.incomplete = true;
            if want.is_none() {
                // The answer may come before the last byte (an error seen in the head).
                let late = self.elapsed >= c.head_since + self.cfg.head_timeout;
                c.sent.push(Expect { late, ..expect });
            }
        }
        for p in &pieces {
            self.deliver(ci, p)?;
            if !self.conns[ci].open {
                return Ok(());
            }
        }
        if hold_back {
            self.conns[ci].held = Some((last, want, publish));
            Ok(())
        } else {
            self.finish_request(ci, &last, want, publish)
        }
    }

    fn send_rest(&mut self, ci: usize) -> Result<(), String> {
        let Some((rest, want, publish)) = self.conns[ci].held.take() else {
            return Ok(());
        };
        self.finish_request(ci, &rest, want, publish)
    }

    /// Records the request as complete, then delivers its last piece.
    fn finish_request(
        &mut self,
        ci: usize,
        last: &[u8],
        want: Option<StreamWant>,
        publish: Option<PubReq>,
    ) -> Result<(), String> {
        let c = &mut self.conns[ci];
        if want.is_some() {
            c.want_stream = want;
        } else if c.incomplete
            && let Some(e) = c.sent.last_mut()
        {
            e.completed_at = Some(self.elapsed);
        }
        c.incomplete = false;
        if let Some(p) = publish {
            c.publishes.push_back(p);
        }
        self.deliver(ci, last)
    }

    /// One read of `bytes` by the driver.
    fn deliver(&mut self, ci: usize, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() || !self.conns[ci].open {
            return Ok(());
        }
        let id = self.conns[ci].id;
        self.conns[ci].sent_since_answer += bytes.len();
        let now = self.now();
        self.trace("read", u64::from(id.key), fnv(0, bytes));
        self.core.handle_read(id, bytes, now);
        self.after_call(Some(id))?;
        self.drain()
    }

    fn open_window(&mut self, ci: usize, n: usize) -> Result<(), String> {
        let c = &mut self.conns[ci];
        if !c.reading || n == 0 {
            return Ok(());
        }
        let was_full = c.window == 0;
        c.window = (c.window + n).min(MAX_WINDOW);
        if was_full && c.watching_writable {
            // Edge-triggered: only the change from full to room is reported.
            let id = c.id;
            self.trace("writable", u64::from(id.key), n as u64);
            self.core.handle_writable(id);
            self.after_call(Some(id))?;
            self.drain()?;
        }
        Ok(())
    }

    /// Time passes to `elapsed + d`, waking at every deadline on the way.
    fn advance(&mut self, d: Duration) -> Result<(), String> {
        let target = self.elapsed + d;
        for _ in 0..10_000 {
            let next = self
                .core
                .next_deadline()
                .map(|t| t.saturating_duration_since(self.base));
            match next {
                Some(at) if at <= target => {
                    self.elapsed = self.elapsed.max(at);
                    self.timeout()?;
                }
                _ => {
                    self.elapsed = target;
                    return Ok(());
                }
            }
        }
        Err(format!(
            "no progress: 10000 deadlines before {target:?} (a deadline that does not move)"
        ))
    }

    fn timeout(&mut self) -> Result<(), String> {
        let (now, wall) = (self.now(), self.wall());
        self.trace("timeout", self.elapsed.as_nanos() as u64, 0);
        self.core.handle_timeout(wall, now);
        if let Some(d) = self.core.next_deadline() {
            ensure!(
                d > now,
                "next deadline {:?} is not after now {:?} right after handle_timeout",
                d.saturating_duration_since(self.base),
                self.elapsed
            );
        }
        self.after_call(None)?;
        self.drain()
    }

    fn publish(
        &mut self,
        topic: u8,
        event: Option<u8>,
        id: Option<u8>,
        data: &[Piece],
    ) -> Result<(), String> {
        let topic = usize::from(topic) % TOPICS.len();
        let event = event.map(|e| EVENTS[usize::from(e) % EVENTS.len()]);
        let id = id.map(|i| IDS[usize::from(i) % IDS.len()]);
        let data = build_data(data);
        let valid = publish_valid(event, id, &data);
        let now = self.now();
        let before = self.core.metrics().events_published;
        let r = self.core.publish(TOPICS[topic], event, id, &data, now);
        let expect_ok = valid && !self.shutting_down;
        match &r {
            Ok(_) => ensure!(
                expect_ok,
                "publish of an invalid event (or during shutdown) succeeded: {event:?} {id:?} {data:?}"
            ),
            Err(e) => ensure!(
                !expect_ok,
                "publish of a valid event failed with {} {}: {event:?} {id:?} {data:?}",
                e.status(),
                e.message()
            ),
        }
        ensure!(
            self.core.metrics().events_published == before + u64::from(r.is_ok()),
            "events_published moved by other than one publish"
        );
        if let Ok(got) = r {
            let gseq = self.next_gseq;
            let want = id
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{}-{gseq}", self.core.boot_id()));
            ensure!(
                got == want,
                "publish returned id {got:?}, expected {want:?}"
            );
            self.seen_published += 1;
            self.model_append(topic, Some(&want), event, &data, id.map(str::to_owned))?;
        }
        self.after_call(None)?;
        self.drain()
    }

    fn reconnect(&mut self, n: u8) -> Result<(), String> {
        let streams: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].stream.is_some())
            .collect();
        if streams.is_empty() || self.shutting_down {
            return Ok(());
        }
        let old = streams[usize::from(n) % streams.len()];
        if self.conns[old].open {
            self.conns[old].client_ended = true;
            let id = self.conns[old].id;
            self.core.handle_read_closed(id);
            self.after_call(Some(id))?;
            self.drain()?;
        }
        let Some(s) = &self.conns[old].stream else {
            return Ok(());
        };
        let last = match s.parser.last_event_id() {
            "" => self.conns[old].inherited_id.clone(),
            id => id.to_owned(),
        };
        let topics = s.topics.clone();
        let before = self.conns.len();
        self.connect()?;
        if self.conns.len() == before || !self.conns[before].open {
            return Ok(());
        }
        let ci = before;
        self.conns[ci].inherited_id = last.clone();
        let mut target = String::from("/events");
        let named: Vec<usize> = topics.iter().copied().filter(|&t| t != TICK).collect();
        for (i, t) in named.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str("topic=");
            target.push_str(&percent_encode(TOPICS[*t]));
        }
        let mut req =
            format!("GET {target} HTTP/1.1\r\nHost: sim\r\nAccept: text/event-stream\r\n");
        if !last.is_empty() {
            let _ = write!(req, "Last-Event-ID: {last}\r\n");
        }
        req.push_str("\r\n");
        let want = StreamWant {
            topics,
            last_id: (!last.is_empty()).then_some(last),
        };
        self.conns[ci].done = true;
        self.conns[ci].incomplete = true;
        self.finish_request(ci, req.as_bytes(), Some(want), None)
    }

    /// Drains the core's outputs like the driver's `drain_outputs`.
    /// Performs the core's outputs through the shared drain harness until none are left.
    fn drain(&mut self) -> Result<(), String> {
        if OutputSink::drain(self, MAX_OUTPUTS)? {
            Ok(())
        } else {
            Err(format!(
                "livelock: more than {MAX_OUTPUTS} outputs without the core settling"
            ))
        }
    }

    fn slot_conn(&self, id: ClientId) -> Option<usize> {
        match self.slots.get(id.key as usize) {
            Some(Some((generation, ci))) if *generation == id.generation => Some(*ci),
            _ => None,
        }
    }

    /// Takes what fits in the connection's send window of the slices the core offers.
    fn on_write(&mut self, id: ClientId) -> Result<WriteOutcome, String> {
        let Some(ci) = self.slot_conn(id) else {
            return Err(format!(
                "Write for {id:?}, which has no open socket (a stale id reached the driver)"
            ));
        };
        let window = self.conns[ci].window;
        let (n, taken) = offer(&self.core, id, |iov| {
            let mut taken = Vec::new();
            for s in iov {
                let room = window - taken.len();
                if room == 0 {
                    break;
                }
                taken.extend_from_slice(&s[..s.len().min(room)]);
            }
            (iov.len(), taken)
        });
        ensure!(n > 0, "Write output for {id:?} with nothing to write");
        if taken.is_empty() {
            self.trace("would_block", u64::from(id.key), 0);
            return Ok(WriteOutcome::WouldBlock);
        }
        self.trace("write", u64::from(id.key), fnv(0, &taken));
        let c = &mut self.conns[ci];
        c.window -= taken.len();
        c.raw.extend_from_slice(&taken);
        Ok(WriteOutcome::Wrote(taken.len()))
    }

    /// After a write was reported to the core: the driver side's follow-up.
    fn on_written(&mut self, id: ClientId, outcome: WriteOutcome) -> Result<(), String> {
        let Some(ci) = self.slot_conn(id) else {
            return Err(format!("{id:?} lost its socket during a write"));
        };
        match outcome {
            // The driver starts watching writability now; re-registering reports no event
            // because the socket is full (window 0).
            WriteOutcome::WouldBlock => {
                self.conns[ci].watching_writable = true;
                Ok(())
            }
            WriteOutcome::Wrote(_) => self.on_received(ci),
            _ => Ok(()),
        }
    }

    fn on_close(&mut self, id: ClientId, reason: CloseReason) -> Result<(), String> {
        ensure!(
            !self.core.is_live(id),
            "Close({id:?}) but the core still holds the client"
        );
        let mut iov = [IoSlice::new(&[]); 4];
        ensure!(
            self.core.write_slices(id, &mut iov) == 0,
            "a removed client {id:?} still has bytes to write"
        );
        let ci = match self.slot_conn(id) {
            Some(ci) => {
                self.slots[id.key as usize] = None;
                ci
            }
            None => {
                let Some(pos) = self.evicted.iter().position(|(e, _)| *e == id) else {
                    return Err(format!(
                        "Close for {id:?}, which the simulator does not hold (stale or twice)"
                    ));
                };
                self.evicted.swap_remove(pos).1
            }
        };
        let c = &mut self.conns[ci];
        ensure!(c.closed.is_none(), "connection {ci} closed twice");
        c.open = false;
        c.closed = Some(reason);
        self.verify_close(ci, reason)
    }

    /// After every call into the core: notice streams that started and events appended.
    fn after_call(&mut self, by: Option<ClientId>) -> Result<(), String> {
        let m = self.core.metrics();
        let (published, ticks) = (m.events_published, m.ticks);
        if ticks != self.seen_ticks {
            ensure!(
                ticks == self.seen_ticks + 1,
                "{} ticks in one call",
                ticks - self.seen_ticks
            );
            self.seen_ticks = ticks;
            let text = crate::timefmt::tick_text(self.wall());
            self.model_append(TICK, None, None, &text, None)?;
        }
        if published != self.seen_published {
            ensure!(
                published == self.seen_published + 1,
                "{} publishes in one call",
                published - self.seen_published
            );
            let ci = by.and_then(|id| {
                self.slot_conn(id)
                    .or_else(|| self.conns.iter().position(|c| c.id == id))
            });
            let Some(ci) = ci else {
                return Err("an event was published by no known request".into());
            };
            let Some(p) = self.conns[ci].publishes.pop_front() else {
                return Err(format!(
                    "connection {ci} published an event it did not send (or sent invalid)"
                ));
            };
            self.seen_published = published;
            let id =
                p.id.clone()
                    .unwrap_or_else(|| format!("{}-{}", self.core.boot_id(), self.next_gseq));
            self.model_append(
                p.topic,
                Some(&id),
                p.event.as_deref(),
                &p.data,
                p.id.clone(),
            )?;
        }
        let streaming = self.core.streaming_clients();
        for ci in 0..self.conns.len() {
            let c = &self.conns[ci];
            if !c.open || c.want_stream.is_none() {
                continue;
            }
            if self.core.is_streaming(c.id) {
                self.subscribe(ci)?;
            } else if streaming >= self.cfg.max_clients || self.shutting_down {
                self.conns[ci].maybe_over_limit = true;
            }
        }
        Ok(())
    }

    // ---- the model -------------------------------------------------------------------------

    fn resolve(&self, last: Option<&str>) -> Resume {
        let Some(last) = last.filter(|s| !s.is_empty()) else {
            return Resume::Fresh;
        };
        if let Some(&g) = self.custom_ids.get(last) {
            return Resume::After(g);
        }
        let Some((boot, seq)) = last.rsplit_once('-') else {
            return Resume::Unknown;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            return Resume::Unknown;
        };
        let base36 = !boot.is_empty()
            && boot.len() <= 13
            && boot
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if !base36 {
            Resume::Unknown
        } else if boot == self.core.boot_id() {
            if seq < self.next_gseq {
                Resume::After(seq)
            } else {
                Resume::Unknown
            }
        } else {
            Resume::EarlierRun
        }
    }

    /// The core made a connection a stream client: compute what it must receive.
    fn subscribe(&mut self, ci: usize) -> Result<(), String> {
        let Some(want) = self.conns[ci].want_stream.take() else {
            return Ok(());
        };
        let mut topics = want.topics.clone();
        if topics.contains(&0) && !topics.contains(&TICK) {
            topics.push(TICK);
        }
        let resume = self.resolve(want.last_id.as_deref());
        let mut gap = matches!(resume, Resume::Unknown | Resume::EarlierRun);
        let mut replaying = false;
        let mut starts = Vec::new();
        for &t in &topics {
            let mt = &self.topics[t];
            let start = match resume {
                _ if t == TICK => mt.end_seq(),
                Resume::Fresh | Resume::Unknown => mt.end_seq(),
                Resume::EarlierRun => mt.first_seq,
                Resume::After(g) => mt.resume_after(g).unwrap_or_else(|| {
                    gap = true;
                    mt.end_seq()
                }),
            };
            replaying |= start < mt.end_seq();
            starts.push((t, start));
        }
        let mut expected = Vec::new();
        if let Some(retry) = self.cfg.retry {
            let mut b = Vec::new();
            frame::encode_retry(&mut b, retry.as_millis() as u64);
            expected.push(ExpFrame {
                bytes: b.into(),
                event: None,
                model: None,
            });
        }
        if gap {
            let boot = self.core.boot_id().to_owned();
            let last_gseq = self.next_gseq - 1;
            let (reason, gap_id) = match resume {
                Resume::EarlierRun => ("restart", Some(format!("{boot}-0"))),
                Resume::Unknown => ("unknown-id", Some(format!("{boot}-{last_gseq}"))),
                _ => (
                    "too-old",
                    (!replaying).then(|| format!("{boot}-{last_gseq}")),
                ),
            };
            let data = format!("{{\"reason\":\"{reason}\"}}");
            let mut b = Vec::new();
            frame::encode_event(&mut b, gap_id.as_deref(), Some("reset"), &data);
            expected.push(ExpFrame {
                bytes: b.into(),
                event: Some(Expected {
                    event_type: "reset".into(),
                    data,
                    id: gap_id,
                }),
                model: None,
            });
        }
        for e in &self.events {
            if starts
                .iter()
                .any(|&(t, s)| t == e.topic && e.local_seq >= s)
            {
                expected.push(e.frame.clone());
            }
        }
        let c = &mut self.conns[ci];
        c.stream = Some(StreamState {
            topics,
            head_at: c.raw.len(),
            expected,
            matched: 0,
            pos: c.raw.len() + STREAM_HEAD.len(),
            parser: Parser::new(),
            dispatched: Vec::new(),
            received_frame_bytes: 0,
            last_frame: None,
        });
        self.trace("stream", ci as u64, 0);
        Ok(())
    }

    /// Records an appended event: retention, publisher ids, subscribers' expectations.
    fn model_append(
        &mut self,
        topic: usize,
        id: Option<&str>,
        event: Option<&str>,
        data: &str,
        custom: Option<String>,
    ) -> Result<(), String> {
        let gseq = self.next_gseq;
        self.next_gseq += 1;
        let mut bytes = Vec::new();
        frame::encode_event(&mut bytes, id, event, data);
        self.max_frame = self.max_frame.max(bytes.len());
        let len = bytes.len();
        if let Some(c) = &custom {
            self.custom_ids.insert(c.clone(), gseq);
        }
        let (max_events, max_bytes) = (self.cfg.history.max(1), self.cfg.history_bytes);
        let mt = &mut self.topics[topic];
        let local_seq = mt.end_seq();
        mt.log.push_back((gseq, len, custom));
        mt.bytes += len;
        while mt.log.len() > 1 && (mt.log.len() > max_events || mt.bytes > max_bytes) {
            if let Some((g, l, c)) = mt.log.pop_front() {
                mt.bytes -= l;
                mt.first_seq += 1;
                mt.evicted_gseq = Some(g);
                if let Some(c) = c
                    && self.custom_ids.get(&c) == Some(&g)
                {
                    self.custom_ids.remove(&c);
                }
            }
        }
        let ef = ExpFrame {
            bytes: bytes.into(),
            event: Some(Expected {
                event_type: event.unwrap_or("message").to_owned(),
                data: normalise_line_breaks(data),
                id: id.map(str::to_owned),
            }),
            model: Some(self.events.len()),
        };
        self.events.push(MEvent {
            topic,
            local_seq,
            frame: ef.clone(),
        });
        for c in &mut self.conns {
            if let Some(s) = &mut c.stream
                && c.closed.is_none()
                && s.topics.contains(&topic)
            {
                s.expected.push(ef.clone());
            }
        }
        self.appended.push(topic);
        self.trace("append", gseq, topic as u64);
        Ok(())
    }

    /// Builds a request's bytes and what it must get.
    fn render(&self, kind: &RequestKind) -> (Vec<u8>, Expect, Option<StreamWant>, Option<PubReq>) {
        let status = |s: u16| Expect {
            statuses: vec![s],
            closes: true,
            head_only: false,
            late: false,
            completed_at: None,
        };
        let host = "Host: sim\r\n";
        match kind {
            RequestKind::Stream {
                topics,
                last_id,
                in_query,
            } => {
                let mut names: Vec<usize> = (0..TOPICS.len())
                    .filter(|i| topics & (1 << i) != 0)
                    .collect();
                let mut query: Vec<String> = names
                    .iter()
                    .map(|&t| format!("topic={}", percent_encode(TOPICS[t])))
                    .collect();
                if names.is_empty() {
                    names.push(0);
                }
                let last = match last_id {
                    LastId::None => None,
                    LastId::Unknown => Some("nope".to_owned()),
                    LastId::EarlierRun => Some("abc-5".to_owned()),
                    LastId::Seq(n) => Some(format!("{}-{n}", self.core.boot_id())),
                    LastId::Custom(i) => Some(IDS[usize::from(*i) % 3].to_owned()),
                };
                let mut head = String::new();
                if let Some(l) = &last {
                    if *in_query {
                        query.push(format!("lastEventId={}", percent_encode(l)));
                    } else {
                        let _ = write!(head, "Last-Event-ID: {l}\r\n");
                    }
                }
                let q = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", query.join("&"))
                };
                let req = format!(
                    "GET /events{q} HTTP/1.1\r\n{host}Accept: text/event-stream\r\n{head}\r\n"
                );
                let want = StreamWant {
                    topics: names,
                    last_id: last,
                };
                (req.into_bytes(), dummy_expect(), Some(want), None)
            }
            RequestKind::HeadEvents => (
                format!("HEAD /events HTTP/1.1\r\n{host}\r\n").into_bytes(),
                Expect {
                    statuses: vec![200],
                    closes: true,
                    head_only: true,
                    late: false,
                    completed_at: None,
                },
                None,
                None,
            ),
            RequestKind::Health { close } => {
                let conn = if *close { "Connection: close\r\n" } else { "" };
                (
                    format!("GET /health HTTP/1.1\r\n{host}{conn}\r\n").into_bytes(),
                    Expect {
                        statuses: vec![200],
                        closes: *close,
                        head_only: false,
                        late: false,
                        completed_at: None,
                    },
                    None,
                    None,
                )
            }
            RequestKind::Publish {
                topic,
                event,
                id,
                data,
                close,
            } => {
                let topic = usize::from(*topic) % TOPICS.len();
                let event = event.map(|e| EVENTS[usize::from(e) % EVENTS.len()]);
                let id = id.map(|i| IDS[usize::from(i) % IDS.len()]);
                let data = build_data(data);
                let mut q = format!("topic={}", percent_encode(TOPICS[topic]));
                if let Some(e) = event {
                    let _ = write!(q, "&event={}", percent_encode(e));
                }
                if let Some(i) = id {
                    let _ = write!(q, "&id={}", percent_encode(i));
                }
                let conn = if *close { "Connection: close\r\n" } else { "" };
                let mut req = format!(
                    "POST /publish?{q} HTTP/1.1\r\n{host}{conn}Content-Length: {}\r\n\r\n",
                    data.len()
                )
                .into_bytes();
                req.extend_from_slice(data.as_bytes());
                let field_ok =
                    |v: &str| !v.is_empty() && v.len() <= 256 && frame::valid_field_value(v);
                let fields_ok = event.is_none_or(field_ok) && id.is_none_or(field_ok);
                // The body limit is checked after the fields, before the body arrives.
                let too_large = fields_ok && data.len() > self.cfg.max_body;
                let valid = publish_valid(event, id, &data) && !too_large;
                let expect = if too_large {
                    status(413)
                } else if valid {
                    // 503 when the server began shutting down meanwhile.
                    Expect {
                        statuses: vec![200, 503],
                        closes: *close,
                        head_only: false,
                        late: false,
                        completed_at: None,
                    }
                } else {
                    status(400)
                };
                let p = valid.then(|| PubReq {
                    topic,
                    event: event.map(str::to_owned),
                    id: id.map(str::to_owned),
                    data,
                });
                (req, expect, None, p)
            }
            RequestKind::NotFound => (
                format!("GET /nowhere HTTP/1.1\r\n{host}\r\n").into_bytes(),
                status(404),
                None,
                None,
            ),
            RequestKind::WrongMethod => (
                format!("POST /events HTTP/1.1\r\n{host}Content-Length: 0\r\n\r\n").into_bytes(),
                status(405),
                None,
                None,
            ),
            RequestKind::Garbage => (
                b"\x16\x03\x01\x00garbage\r\n\r\n".to_vec(),
                status(400),
                None,
                None,
            ),
            RequestKind::Oversized => {
                let pad = "a".repeat(self.cfg.max_head + 10);
                (
                    format!("GET /events HTTP/1.1\r\n{host}X-Pad: {pad}\r\n\r\n").into_bytes(),
                    status(431),
                    None,
                    None,
                )
            }
            RequestKind::TooManyHeaders => {
                let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
                (
                    format!("GET /events HTTP/1.1\r\n{many}\r\n").into_bytes(),
                    status(431),
                    None,
                    None,
                )
            }
            RequestKind::BadFraming => (
                format!(
                    "POST /publish HTTP/1.1\r\n{host}Content-Length: 1\r\nContent-Length: 2\r\n\r\n"
                )
                .into_bytes(),
                status(400),
                None,
                None,
            ),
            RequestKind::NoLength => (
                format!("POST /publish HTTP/1.1\r\n{host}\r\n").into_bytes(),
                status(411),
                None,
                None,
            ),
            RequestKind::TooLarge => (
                format!(
                    "POST /publish HTTP/1.1\r\n{host}Content-Length: {}\r\n\r\n",
                    self.cfg.max_body + 1
                )
                .into_bytes(),
                status(413),
                None,
                None,
            ),
            RequestKind::BadTopic => (
                format!("GET /events?topic=a%00b HTTP/1.1\r\n{host}\r\n").into_bytes(),
                // The client limit is checked before the topics: 503 when at the limit.
                Expect {
                    statuses: vec![400, 503],
                    ..status(400)
                },
                None,
                None,
            ),
        }
    }

    // ---- checking what clients received ---------------------------------------------------

    /// New bytes arrived at connection `ci`: check them as far as they go.
    fn on_received(&mut self, ci: usize) -> Result<(), String> {
        if self.conns[ci].stream.is_some() {
            return self.check_stream(ci);
        }
        self.check_responses(ci, false)
    }

    /// Checks the responses received so far on a non-stream connection (all of them, and
    /// that the last is complete, when `final_close`).
    fn check_responses(&mut self, ci: usize, final_close: bool) -> Result<(), String> {
        let head_timeout = self.cfg.head_timeout;
        let elapsed = self.elapsed;
        let shutting_down = self.shutting_down;
        let c = &mut self.conns[ci];
        let end = c.stream.as_ref().map_or(c.raw.len(), |s| s.head_at);
        let mut pos = 0;
        let mut index = 0;
        while pos < end {
            let rest = &c.raw[pos..end];
            if index == c.sent.len() && c.want_stream.is_some() && rest.len() < 13 {
                // Too short to tell a 408 from the stream head yet.
                return Ok(());
            }
            if index == c.sent.len()
                && c.want_stream.is_some()
                && !rest.starts_with(b"HTTP/1.1 408 ")
            {
                // A stream request the core did not stream: over the client limit, it gets
                // the stream head and a `retry:`, then a close.
                ensure!(
                    c.maybe_over_limit,
                    "connection {ci}: a stream request below the client limit was answered \
                     {:?}",
                    String::from_utf8_lossy(rest)
                );
                let want = STREAM_HEAD.as_bytes();
                let n = rest.len().min(want.len());
                let tail = &rest[n..];
                ensure!(
                    rest[..n] == want[..n]
                        && b"retry: "[..tail.len().min(7)] == tail[..tail.len().min(7)]
                        && tail
                            .iter()
                            .skip(7)
                            .all(|b| b.is_ascii_digit() || *b == b'\n'),
                    "connection {ci}: over the client limit, answered {:?}",
                    String::from_utf8_lossy(rest)
                );
                c.over_limit_complete = tail.len() > 7 && tail.ends_with(b"\n\n");
                return Ok(());
            }
            let Some(head_len) = find(rest, b"\r\n\r\n").map(|i| i + 4) else {
                ensure!(
                    !final_close || c.closed != Some(CloseReason::Normal) || c.client_ended,
                    "connection {ci} closed normally inside a response head: {:?}",
                    String::from_utf8_lossy(rest)
                );
                return Ok(());
            };
            let head = String::from_utf8_lossy(&rest[..head_len]).into_owned();
            let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let head_only = c.sent.get(index).is_some_and(|e| e.head_only) && status == 200;
            let body_len = if head_only {
                0
            } else {
                match content_length(&head) {
                    Some(n) => n,
                    None => {
                        return Err(format!(
                            "connection {ci}: response without Content-Length: {head:?}"
                        ));
                    }
                }
            };
            if rest.len() < head_len + body_len {
                return Ok(());
            }
            let body = String::from_utf8_lossy(&rest[head_len..head_len + body_len]);
            match c.sent.get(index) {
                Some(exp) => {
                    let due = c.head_since + head_timeout;
                    let timed_out = status == 408
                        && (exp.completed_at.is_none_or(|t| t >= due) || exp.late)
                        && elapsed >= due;
                    c.timed_out |= timed_out;
                    // Once shutting down, a publish is refused with 503 whatever else.
                    let refused = status == 503 && shutting_down;
                    ensure!(
                        exp.statuses.contains(&status) || timed_out || refused,
                        "connection {ci}: response #{index} is {status}, expected one of {:?} \
                         (body {body:?})",
                        exp.statuses
                    );
                    if head_only {
                        ensure!(
                            rest[..head_len] == *STREAM_HEAD.as_bytes(),
                            "HEAD /events answered with {head:?}"
                        );
                    }
                    if status == 200 && !exp.closes && index >= c.responses_seen {
                        c.head_since = elapsed;
                        c.sent_since_answer = 0;
                    }
                }
                None => {
                    // A response to no request (none was begun): only a 408.
                    ensure!(
                        status == 408,
                        "connection {ci}: unexpected response #{index} {status} ({body:?}) to an \
                         incomplete request"
                    );
                    ensure!(
                        elapsed >= c.head_since + head_timeout,
                        "connection {ci}: 408 at {elapsed:?}, before the head timeout (phase \
                         began at {:?})",
                        c.head_since
                    );
                    c.timed_out = true;
                    c.extra_408 = true;
                }
            }
            index += 1;
            c.responses_seen = c.responses_seen.max(index);
            pos += head_len + body_len;
        }
        Ok(())
    }

    /// Checks a stream client's bytes: the head, then whole frames in order (any split).
    fn check_stream(&mut self, ci: usize) -> Result<(), String> {
        self.check_responses(ci, false)?;
        let latest = self.cfg.slow_client == SlowClientPolicy::Latest;
        let c = &mut self.conns[ci];
        let Some(s) = &mut c.stream else {
            return Ok(());
        };
        let head_end = (s.head_at + STREAM_HEAD.len()).min(c.raw.len());
        ensure!(
            c.raw[s.head_at..head_end] == STREAM_HEAD.as_bytes()[..head_end - s.head_at],
            "connection {ci}: the stream does not start with the stream head: {:?}",
            String::from_utf8_lossy(&c.raw[s.head_at..head_end])
        );
        while s.pos < c.raw.len() {
            let rest = &c.raw[s.pos..];
            let Some(end) = find(rest, b"\n\n").map(|i| i + 2) else {
                // A partial frame: a prefix of the next frame (or of a keep-alive).
                let ok = frame::KEEPALIVE.starts_with(rest)
                    || if latest {
                        s.expected[s.matched..]
                            .iter()
                            .any(|f| f.bytes.starts_with(rest))
                    } else {
                        s.expected
                            .get(s.matched)
                            .is_some_and(|f| f.bytes.starts_with(rest))
                    };
                ensure!(
                    ok,
                    "connection {ci}: received bytes that begin no expected frame: {:?} \
                     (next expected: {:?})",
                    String::from_utf8_lossy(rest),
                    s.expected
                        .get(s.matched)
                        .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
                );
                return Ok(());
            };
            let got = &rest[..end];
            let mut events = Vec::new();
            s.parser.feed(got, |e| events.push(e));
            if got == frame::KEEPALIVE {
                ensure!(
                    events.is_empty(),
                    "a keep-alive comment dispatched an event"
                );
                s.pos += end;
                continue;
            }
            let k = if latest {
                s.expected[s.matched..]
                    .iter()
                    .position(|f| *f.bytes == *got)
                    .map(|i| s.matched + i)
            } else {
                (s.expected.get(s.matched).is_some_and(|f| *f.bytes == *got)).then_some(s.matched)
            };
            let Some(k) = k else {
                return Err(format!(
                    "connection {ci}: frame #{} is {:?}, expected {:?} (a frame lost, \
                     duplicated, reordered or cut)",
                    s.matched,
                    String::from_utf8_lossy(got),
                    s.expected
                        .get(s.matched)
                        .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
                ));
            };
            let f = &s.expected[k];
            match (&f.event, events.as_slice()) {
                (None, []) => {}
                (Some(want), [e]) => {
                    ensure!(
                        e.event_type == want.event_type && e.data == want.data,
                        "connection {ci}: the parser decoded {e:?}, expected {want:?}"
                    );
                    if let Some(id) = &want.id {
                        ensure!(
                            e.last_event_id == *id,
                            "connection {ci}: parser id {:?}, expected {id:?}",
                            e.last_event_id
                        );
                    }
                }
                (want, got) => {
                    return Err(format!(
                        "connection {ci}: the parser dispatched {got:?} for a frame that should \
                         give {want:?}"
                    ));
                }
            }
            s.dispatched.extend(events);
            s.received_frame_bytes += f.bytes.len() as u64;
            s.last_frame = Some(f.bytes.clone());
            s.matched = k + 1;
            s.pos += end;
        }
        Ok(())
    }

    /// Checks why a connection was closed.
    fn verify_close(&mut self, ci: usize, reason: CloseReason) -> Result<(), String> {
        let streaming = self.conns[ci].stream.is_some();
        if streaming {
            self.check_stream(ci)?;
        } else {
            self.check_responses(ci, true)?;
        }
        let c = &self.conns[ci];
        match reason {
            CloseReason::Reset | CloseReason::Error => ensure!(
                c.client_ended,
                "connection {ci} closed as {reason:?} but the client did nothing wrong"
            ),
            CloseReason::Normal => {
                if !c.client_ended {
                    ensure!(
                        !streaming,
                        "stream connection {ci} closed normally while the client still reads"
                    );
                    let last = c.sent.last();
                    ensure!(
                        c.timed_out || self.shutting_down || last.is_some_and(|e| e.closes),
                        "connection {ci} closed normally without a request that closes"
                    );
                    ensure!(
                        // (Shutting down, the server closes after the answer in hand.)
                        c.timed_out || self.shutting_down || c.responses_seen == c.sent.len(),
                        "connection {ci} closed normally after {} of {} responses",
                        c.responses_seen,
                        c.sent.len()
                    );
                }
            }
            CloseReason::Slow => {
                ensure!(streaming, "non-stream connection {ci} closed as slow");
                ensure!(
                    self.cfg.slow_client == SlowClientPolicy::Drop,
                    "connection {ci} closed as slow under the `latest` policy"
                );
                let (bytes, unstarted, evicted) = self.lag(ci);
                // The core counts every unsent byte, including a keep-alive comment queued
                // ahead of the frames (at most one: it is queued only when nothing else is),
                // which the model cannot see until it arrives.
                let keepalive_slack = crate::sse::frame::KEEPALIVE.len() as u64;
                ensure!(
                    !self.strict_slow
                        || bytes + keepalive_slack > self.cfg.max_backlog
                        || unstarted > self.cfg.max_backlog_events
                        || evicted,
                    "connection {ci} closed as slow although only {bytes} bytes / {unstarted} \
                     events behind, none evicted"
                );
            }
            CloseReason::Limit => {
                ensure!(!streaming, "stream connection {ci} closed as over a limit");
                // Over the client limit (told so in full), or evicted at the connection
                // limit while reading its first head.
                ensure!(
                    c.over_limit_complete
                        || (c.responses_seen == 0 && !c.done)
                        || c.incomplete
                        || c.sent_since_answer > self.cfg.max_head + self.cfg.max_body,
                    "connection {ci} closed as over a limit without being told or evicted"
                );
            }
            CloseReason::Timeout => {
                ensure!(!streaming, "stream connection {ci} closed by a timeout");
                // Either an answer was not taken within the linger time, or the connection
                // sat in a head phase for the whole head timeout.
                let lingering = c.responses_seen < c.sent.len() + usize::from(c.extra_408)
                    || (c.want_stream.is_some() && !c.over_limit_complete);
                ensure!(
                    lingering || self.elapsed >= c.head_since + self.cfg.head_timeout,
                    "connection {ci} closed by a timeout at {:?}, {:?} after its head phase \
                     began (head timeout {:?})",
                    self.elapsed,
                    self.elapsed - c.head_since,
                    self.cfg.head_timeout
                );
            }
            CloseReason::Shutdown => ensure!(
                self.shutting_down,
                "connection {ci} closed for shutdown without a shutdown"
            ),
        }
        Ok(())
    }

    /// (bytes not yet received, frames not yet started, an unstarted frame left history).
    fn lag(&self, ci: usize) -> (u64, u64, bool) {
        let c = &self.conns[ci];
        let Some(s) = &c.stream else {
            return (0, 0, false);
        };
        let total: u64 =
            STREAM_HEAD.len() as u64 + s.expected.iter().map(|f| f.bytes.len() as u64).sum::<u64>();
        let got = STREAM_HEAD.len().min(c.raw.len() - s.head_at) as u64 + s.received_frame_bytes;
        // A frame in flight (a keep-alive comment in flight is not one: frames never start
        // with `:`).
        let partial = c.raw.get(s.pos).is_some_and(|&b| b != b':');
        let first_unstarted = s.matched + usize::from(partial);
        let unstarted = s.expected.len().saturating_sub(first_unstarted) as u64;
        let evicted = s.expected.iter().skip(first_unstarted).any(|f| {
            f.model.is_some_and(|m| {
                let e = &self.events[m];
                e.local_seq < self.topics[e.topic].first_seq
            })
        });
        (total.saturating_sub(got), unstarted, evicted)
    }

    /// Every invariant, checked after each operation.
    pub fn check(&mut self) -> Result<(), String> {
        let r = self.check_all();
        self.appended.clear();
        r
    }

    fn check_all(&self) -> Result<(), String> {
        self.core
            .check_invariants()
            .map_err(|e| format!("core invariant: {e}"))?;
        let open = self.open_conns();
        ensure!(
            self.core.connections() == open.len(),
            "registry holds {} connections, the simulator has {} open sockets",
            self.core.connections(),
            open.len()
        );
        ensure!(
            self.core.connections() <= self.cfg.max_connections,
            "{} connections over the limit {}",
            self.core.connections(),
            self.cfg.max_connections
        );
        let streams = open
            .iter()
            .filter(|&&ci| self.conns[ci].stream.is_some())
            .count();
        ensure!(
            self.core.streaming_clients() == streams,
            "core counts {} stream clients, the simulator {}",
            self.core.streaming_clients(),
            streams
        );
        ensure!(
            streams <= self.cfg.max_clients,
            "{streams} stream clients over max_clients {}",
            self.cfg.max_clients
        );
        let now = self.now();
        let deadline = self.core.next_deadline();
        let head_phase = open.iter().any(|&ci| {
            let c = &self.conns[ci];
            c.stream.is_none() && c.want_stream.is_none()
        });
        ensure!(
            deadline.is_some()
                || !(head_phase || (self.cfg.interval.is_some() && !self.shutting_down)),
            "no deadline although connections wait for a head or ticks are due"
        );
        let _ = now;
        let latest = self.cfg.slow_client == SlowClientPolicy::Latest;
        for &ci in &open {
            let c = &self.conns[ci];
            let id = c.id;
            ensure!(
                self.core.is_live(id),
                "the simulator holds connection {ci} ({id:?}) that the core forgot"
            );
            let backlog = self.core.backlog_bytes(id).unwrap_or(0);
            ensure!(
                c.window == 0 || backlog == 0,
                "stall: connection {ci} has {backlog} bytes queued and {} bytes of room, but the \
                 core stopped writing (edge-triggered: no writable event will come)",
                c.window
            );
            let Some(s) = &c.stream else { continue };
            let (lag_bytes, unstarted, _) = self.lag(ci);
            let bounded = s.topics.iter().any(|t| self.appended.contains(t));
            if latest {
                let bound = self.cfg.max_backlog.max(2 * self.max_frame as u64)
                    + frame::KEEPALIVE.len() as u64;
                ensure!(
                    !bounded || backlog <= bound,
                    "connection {ci}: backlog {backlog} bytes over the `latest` bound {bound}"
                );
            } else if bounded {
                ensure!(
                    backlog <= self.cfg.max_backlog + frame::KEEPALIVE.len() as u64,
                    "connection {ci}: backlog {backlog} bytes over the bound {} after an \
                     append (policy drop)",
                    self.cfg.max_backlog
                );
                // Prelude and gap frames are pending bytes, not events: allow for them.
                ensure!(
                    unstarted <= self.cfg.max_backlog_events + 2,
                    "connection {ci}: {unstarted} events behind, over the bound {} after an \
                     append (policy drop)",
                    self.cfg.max_backlog_events
                );
            }
            ensure!(
                lag_bytes == backlog || c.window == 0 || latest,
                "connection {ci}: the core has {backlog} bytes queued, the model {lag_bytes}"
            );
            if c.window > 0 {
                // Nothing queued and room left: everything due must have arrived whole.
                ensure!(
                    s.pos == c.raw.len(),
                    "connection {ci} has room and nothing queued but holds a partial frame {:?}",
                    String::from_utf8_lossy(&c.raw[s.pos..])
                );
                let newest_received =
                    latest && s.expected.last().map(|f| &f.bytes) == s.last_frame.as_ref();
                ensure!(
                    s.matched == s.expected.len() || newest_received,
                    "connection {ci} has room and nothing queued, yet received {} of {} frames \
                     (first missing: {:?})",
                    s.matched,
                    s.expected.len(),
                    s.expected
                        .get(s.matched)
                        .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
                );
            }
        }
        Ok(())
    }

    // ---- liveness and the end of a run -----------------------------------------------------

    /// Moves the clock to the core's next deadline, runs the timeout and checks every
    /// invariant. Returns false when the core has no deadline (nothing will happen by itself).
    fn jump_to_next_deadline(&mut self) -> Result<bool, String> {
        let Some(d) = self.core.next_deadline() else {
            return Ok(false);
        };
        self.elapsed = self.elapsed.max(d.saturating_duration_since(self.base));
        self.timeout()?;
        self.check()?;
        Ok(true)
    }

    /// Heals every fault (all clients read, sockets get room, held-back bytes stay held) and
    /// runs the clock until every open connection is a stream client with nothing missing.
    /// Fails with "no liveness" when that takes more than `max_steps` wake-ups.
    pub fn heal_and_settle(&mut self, max_steps: usize) -> Result<(), String> {
        let latest = self.cfg.slow_client == SlowClientPolicy::Latest;
        for _ in 0..max_steps {
            for ci in self.open_conns() {
                self.conns[ci].reading = true;
                self.open_window(ci, MAX_WINDOW)?;
            }
            self.check()?;
            let settled = self.open_conns().iter().all(|&ci| {
                let c = &self.conns[ci];
                c.stream.as_ref().is_some_and(|s| {
                    s.matched == s.expected.len()
                        || (latest && s.expected.last().map(|f| &f.bytes) == s.last_frame.as_ref())
                })
            });
            if settled {
                return Ok(());
            }
            if !self.jump_to_next_deadline()? {
                break;
            }
        }
        let stuck: Vec<String> = self
            .open_conns()
            .iter()
            .map(|&ci| {
                let c = &self.conns[ci];
                format!(
                    "#{ci} stream={} want={} sent={} raw={}",
                    c.stream.is_some(),
                    c.want_stream.is_some(),
                    c.sent.len(),
                    c.raw.len()
                )
            })
            .collect();
        Err(format!(
            "no liveness: after healing, {} connections still open and unsettled after \
             {max_steps} wake-ups: {stuck:?}",
            stuck.len()
        ))
    }

    /// Shuts the server down and runs until it finishes; then no socket may be left open.
    pub fn finish(&mut self, max_steps: usize) -> Result<(), String> {
        self.apply(&Op::Shutdown)?;
        for _ in 0..max_steps {
            if self.core.is_finished() {
                break;
            }
            for ci in self.open_conns() {
                self.open_window(ci, MAX_WINDOW)?;
            }
            if self.core.is_finished() {
                break;
            }
            if !self.jump_to_next_deadline()? {
                break;
            }
        }
        ensure!(
            self.core.is_finished(),
            "no liveness: shutdown did not finish within {max_steps} wake-ups ({} connections)",
            self.core.connections()
        );
        let open = self.open_conns().len();
        ensure!(
            open == 0,
            "{open} sockets still open after shutdown finished"
        );
        Ok(())
    }
}

/// True when `publish` must accept this event (outside shutdown).
fn publish_valid(event: Option<&str>, id: Option<&str>, data: &str) -> bool {
    let field_ok = |v: &str| !v.is_empty() && v.len() <= 256 && frame::valid_field_value(v);
    !data.is_empty() && event.is_none_or(field_ok) && id.is_none_or(field_ok)
}

fn dummy_expect() -> Expect {
    Expect {
        statuses: vec![200],
        closes: true,
        head_only: false,
        late: false,
        completed_at: None,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &str) -> Option<usize> {
    head.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// The simulator performs the core's outputs on simulated sockets through the same drain
/// harness as the driver, checking invariants after each.
impl OutputSink for Sim {
    type Error = String;

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn now(&self) -> Instant {
        Sim::now(self)
    }

    fn write(&mut self, id: ClientId) -> Result<WriteOutcome, String> {
        self.on_write(id)
    }

    fn after_write(&mut self, id: ClientId, outcome: WriteOutcome) -> Result<(), String> {
        self.on_written(id, outcome)
    }

    fn close(&mut self, id: ClientId, reason: CloseReason) -> Result<(), String> {
        self.trace("close", u64::from(id.key), reason as u64);
        self.on_close(id, reason)
    }

    fn after_output(&mut self, output: Output) -> Result<(), String> {
        match output {
            Output::Close(..) => self.after_call(None),
            Output::Write(id) => self.after_call(Some(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(topics: u8) -> Op {
        Op::Request {
            conn: 255,
            kind: RequestKind::Stream {
                topics,
                last_id: LastId::None,
                in_query: false,
            },
            cuts: vec![5, 17],
            hold_back: false,
        }
    }

    #[test]
    fn a_calm_run_delivers_everything() {
        let mut sim = Sim::new(&SimConfig::default(), 1);
        let ops = vec![
            Op::Connect,
            stream(0),
            Op::Connect,
            stream(0b10),
            Op::Publish {
                topic: 1,
                event: Some(0),
                id: None,
                data: vec![Piece::Word(0), Piece::CrLf, Piece::Word(1), Piece::Cr],
            },
            Op::Publish {
                topic: 0,
                event: None,
                id: Some(0),
                data: vec![Piece::Word(3)],
            },
            Op::Advance { millis: 500 },
        ];
        sim.run(&ops).unwrap();
        assert!(sim.frames_verified() >= 4, "{}", sim.frames_verified());
        sim.heal_and_settle(50).unwrap();
        sim.finish(50).unwrap();
    }
}
