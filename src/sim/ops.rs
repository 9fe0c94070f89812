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
