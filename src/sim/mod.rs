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

use crate::bus::types::BusRequest;
use crate::config::{Config, SlowClientPolicy};
use crate::core::drain::{OutputSink, WriteOutcome, offer};
use crate::core::{ClientId, CloseReason, Core, IoFailure};
use crate::http::response::STREAM_HEAD;
use crate::sse::frame;
use crate::sse::parse::{Event, Parser};

/// Topic names a scenario can use (index 0 is the default stream); more than the largest
/// `max_topics` a scenario draws, so topics are recycled.
pub const TOPICS: [&str; 8] = ["", "a", "b", "news", "x", "y", "z", "w"];
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

/// The most one read takes, as the driver's scratch buffer.
const DRIVER_SCRATCH: usize = 64 * 1024;
/// Largest send window a socket can have (a kernel send buffer).
const MAX_WINDOW: usize = 1 << 20;
/// FNV-1a, 64 bits: a hash that is the same on every run and platform.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
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
    /// This run's id prefix, from the start time the core was given (see `model.rs`).
    boot: String,
    /// Topic incarnations (index: `MEvent::topic`, `StreamState::topics`).
    topics: Vec<MTopic>,
    /// The live incarnation of each name in [`TOPICS`] (and [`TICK`]).
    name_topic: Vec<Option<usize>>,
    /// Slots of the topic table in use (named ones from 2).
    slots_used: usize,
    /// The newest event any recycled topic dropped (see `model_topic_for`).
    recycled_lost: Option<u64>,
    /// Appends to the table so far (the recycling clock).
    appends: u64,
    /// What a run reached (the coverage oracle).
    pub coverage: Coverage,
    /// [`Sim::resume_reads`] is running (a drain inside it does not start another).
    resuming: bool,
    /// Each publisher-given id the model published with, to the newest event that carries it
    /// (index into `events`; retained or not).
    by_custom_id: HashMap<String, usize>,
    /// Every event the server appended, in order: `events[i]` is numbered `i + 1`.
    events: Vec<MEvent>,
    seen_published: u64,
    seen_ticks: u64,
    /// 503 answers seen so far (a topic table full, or shutdown).
    seen_503: u64,
    /// Clients skipped forward by `latest` so far.
    seen_skipped: u64,
    /// The per-turn output budget (0: unlimited).
    outputs_per_turn: usize,
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
    /// The model of `--max-stream-rate` (`None`: no bound), and the core's admission
    /// counters at the last look (`admission.rs`).
    rate_model: Option<admission::RateModel>,
    seen_stream_requests: u64,
    seen_rate_refused: u64,
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

mod admission;
pub mod auth;
pub mod bus;
mod cache;
mod check;
mod coverage;
mod invariants;
mod model;
mod network;
mod ops;
mod outputs;
mod render;
mod runner;
mod state;
mod topics;

pub use coverage::{Coverage, Reach};
pub use ops::*;
use state::*;

impl Sim {
    /// A simulated server with no clients. `seed` seeds the core's jitter.
    pub fn new(sc: &SimConfig, seed: u64) -> Sim {
        let cfg = sc.config();
        let rate_model = admission::RateModel::new(cfg.max_stream_rate);
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
            boot: model::boot_prefix(wall0),
            topics: (0..=TOPICS.len())
                .map(|name| MTopic {
                    name,
                    slot: if name == TICK { 1 } else { 0 },
                    live: name == 0 || name == TICK,
                    ..MTopic::default()
                })
                .collect(),
            name_topic: (0..=TOPICS.len())
                .map(|n| (n == 0 || n == TICK).then_some(n))
                .collect(),
            slots_used: 2,
            recycled_lost: None,
            appends: 0,
            coverage: Coverage::default(),
            resuming: false,
            by_custom_id: HashMap::new(),
            events: Vec::new(),
            seen_published: 0,
            seen_ticks: 0,
            seen_503: 0,
            seen_skipped: 0,
            outputs_per_turn: usize::from(sc.outputs_per_turn),
            shutting_down: false,
            trace: 0xcbf2_9ce4_8422_2325,
            steps: 0,
            max_frame: 0,
            appended: Vec::new(),
            strict_slow: true,
            rate_model,
            seen_stream_requests: 0,
            seen_rate_refused: 0,
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
                    self.conns[ci].eof_unread = true;
                    self.read_socket(ci)?;
                }
            }
            Op::Reset { conn } => {
                if let Some(ci) = self.pick(*conn) {
                    self.conns[ci].client_ended = true;
                    self.conns[ci].unread.clear();
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
            Op::ReadError { conn, reset } => {
                if let Some(ci) = self.pick(*conn) {
                    self.conns[ci].client_ended = true;
                    self.conns[ci].unread.clear();
                    let id = self.conns[ci].id;
                    let failure = if *reset {
                        IoFailure::Reset
                    } else {
                        IoFailure::Other
                    };
                    self.trace("read_error", u64::from(id.key), u64::from(*reset));
                    self.core.handle_io_error(id, failure);
                    self.after_call(Some(id))?;
                    self.drain()?;
                }
            }
            Op::WriteError { conn, reset } => {
                if let Some(ci) = self.pick(*conn) {
                    self.conns[ci].write_error = Some(if *reset {
                        IoFailure::Reset
                    } else {
                        IoFailure::Other
                    });
                }
            }
            Op::PublishBurst { topic, count } => {
                for i in 0..*count {
                    self.publish(*topic, None, None, &[Piece::Word(i)])?;
                }
            }
            Op::Pipelined { conn, kinds, cuts } => {
                if let Some(ci) = self.pick(*conn) {
                    self.pipelined(ci, kinds, cuts)?;
                }
            }
            Op::Flood { conn, kind, count } => {
                if let Some(ci) = self.pick(*conn) {
                    let kinds = vec![kind.clone(); 1 + usize::from(*count) % 4000];
                    self.pipelined(ci, &kinds, &[])?;
                }
            }
        }
        self.check()
    }
}

/// True when `publish` must accept this event (outside shutdown). Empty data is an event
/// too.
fn publish_valid(event: Option<&str>, id: Option<&str>, _data: &str) -> bool {
    event.is_none_or(model::valid_field) && id.is_none_or(model::valid_field)
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
