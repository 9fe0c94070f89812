//! What a scenario is made of: the operations ([`Op`]) and the configuration
//! ([`SimConfig`]), both `Arbitrary` under the `sim` feature for the fuzz target.

use super::*;

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
    /// `<boot>-<n>` at the head, where an off-by-one in resuming shows (by `k % 4`): one
    /// past the run's newest number (ticks included: not issued yet), the newest number `m`
    /// of an event of the requested topics, or (two in four) `m - 1`.
    Head(u8),
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
    /// `GET /metrics`: 200 (kept alive).
    Metrics,
    /// `GET /clients` from loopback: 200 (kept alive).
    Clients,
    /// A stream request whose topic name decodes to invalid UTF-8 (`%80`..`%FF`, a lone
    /// byte that is never valid UTF-8, between `a` and `b`): 400, never a lossy name.
    InvalidUtf8Topic { byte: u8 },
    /// A `GET` with a body of `len % 5000` bytes (`Content-Length`, or chunked), which the
    /// server reads past and drops before it routes the request: `/events` (a stream of the
    /// default topic) or `/health` (200, kept alive). 413 and a close past `max_body`.
    BodyOnGet {
        stream: bool,
        len: u16,
        chunked: bool,
    },
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
    // Later inputs (new variants go at the end: existing fuzz inputs keep their meaning).
    /// A read on the client's socket fails (`EIO`-like; `reset`: `ECONNRESET`).
    ReadError { conn: u8, reset: bool },
    /// The next write to the client's socket fails (a broken pipe or another error).
    WriteError { conn: u8, reset: bool },
    /// `count` small events published at once to one topic (clients fall far behind: more
    /// than `MAX_IOVECS` frames in one write).
    PublishBurst { topic: u8, count: u8 },
    /// Several requests sent in one write (pipelined), then split after the given offsets.
    Pipelined {
        conn: u8,
        kinds: Vec<RequestKind>,
        cuts: Vec<u16>,
    },
    /// `1 + count % 4000` copies of one request sent in one write: often more than the
    /// server buffers (`max_head + max_body`) while its answers are unread, so the driver's
    /// reading pauses ([`crate::core::Core::input_room`]) until the client takes answers.
    Flood {
        conn: u8,
        kind: RequestKind,
        count: u16,
    },
}

/// The server configuration a scenario runs with (a swarm of small, bound-hitting configs).
#[cfg_attr(feature = "sim", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Slow-client policy `latest` instead of `drop`.
    pub latest: bool,
    /// `max_backlog` 2 KiB / 6 events instead of 1 MiB / 1024 events.
    pub small_backlog: bool,
    /// Events retained per topic: `1 + history % 12`, or `history - 136` from 200 on.
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
    // The swarm over the limits: each case draws them from ranges that include
    // tiny values, so every bound is hit in some runs. Values below 1 count as 1.
    /// Bytes retained per topic (`--history-bytes`).
    pub history_bytes: u16,
    /// Named topics (`--max-topics`): fewer than [`TOPICS`] has names, so topics recycle.
    pub max_topics: u8,
    /// Topics in one subscription (`--max-topics-per-client`).
    pub topics_per_client: u8,
    /// With `small_backlog`: `--max-backlog` in bytes (raised to `history_bytes`, as the
    /// command line does).
    pub backlog_bytes: u16,
    /// With `small_backlog`: `--max-backlog-events` (raised to `history`).
    pub backlog_events: u8,
    /// Connections beyond `max_clients` (`max_connections = max_clients + extra`).
    pub extra_connections: u8,
    /// `--head-timeout` in seconds.
    pub head_timeout_secs: u8,
    /// `--keepalive` in seconds (when `keepalive`).
    pub keepalive_secs: u8,
    /// `--max-body` in bytes.
    pub max_body: u16,
    /// The driver's per-turn output budget (`OUTPUTS_PER_TURN`); 0: unlimited. A drain that
    /// uses it up leaves the rest for the next turn, as the driver does.
    pub outputs_per_turn: u16,
    // Later fields (at the end: the fields before keep their meaning in existing fuzz inputs).
    /// `--max-stream-rate`: off below 128, else `1 + stream_rate % 4` new streams a second.
    pub stream_rate: u8,
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
            history_bytes: 4096,
            max_topics: 8,
            topics_per_client: 4,
            backlog_bytes: 2048,
            backlog_events: 6,
            extra_connections: 2,
            head_timeout_secs: 10,
            keepalive_secs: 3,
            max_body: 4096,
            outputs_per_turn: 0,
            stream_rate: 0,
        }
    }
}

impl SimConfig {
    /// The core's configuration for this scenario.
    pub fn config(&self) -> Config {
        // 200 and above: 64 to 119 events, so a client can be more than `MAX_IOVECS` frames
        // behind on one topic.
        let history = match self.history {
            h @ 200.. => usize::from(h) - 136,
            h => 1 + usize::from(h % 12),
        };
        let history_bytes = usize::from(self.history_bytes.max(1));
        let (max_backlog, max_backlog_events) = if self.small_backlog {
            (
                u64::from(self.backlog_bytes.max(1)),
                u64::from(self.backlog_events.max(1)),
            )
        } else {
            (1 << 20, 1024)
        };
        let max_clients = 1 + usize::from(self.max_clients % 6);
        Config {
            interval: self.ticks.then(|| Duration::from_secs(2)),
            keepalive: self
                .keepalive
                .then(|| Duration::from_secs(u64::from(self.keepalive_secs.max(1)))),
            retry: self.retry.then(|| Duration::from_millis(1500)),
            max_head: 1024,
            head_timeout: Duration::from_secs(u64::from(self.head_timeout_secs.max(1))),
            max_body: usize::from(self.max_body.max(1)),
            history,
            history_bytes,
            max_topics: usize::from(self.max_topics.max(1)),
            max_topics_per_client: usize::from(self.topics_per_client.max(1)),
            // Raised as the command line raises them (`config.rs`): a resuming client may be
            // a whole history behind.
            max_backlog: max_backlog.max(history_bytes as u64),
            max_backlog_events: max_backlog_events.max(history as u64),
            slow_client: if self.latest {
                SlowClientPolicy::Latest
            } else {
                SlowClientPolicy::Drop
            },
            max_clients,
            max_connections: max_clients + usize::from(self.extra_connections),
            max_stream_rate: match self.stream_rate {
                r @ 128.. => 1 + u32::from(r % 4),
                _ => 0,
            },
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
