//! Counters the core keeps, and their Prometheus text rendering.

use std::fmt::Write as _;
use std::time::Duration;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// We finished answering (an error, a publish, metrics) or the client hung up cleanly.
    Normal,
    /// The peer reset the connection or a write failed.
    Reset,
    /// An I/O error other than a reset.
    Error,
    /// The client fell behind past the backlog bound (policy `drop`).
    Slow,
    /// Over a limit: too many connections, too many bytes after its request.
    Limit,
    /// Its head or body did not arrive in time, or it did not take its answer in time.
    Timeout,
    /// The server is shutting down.
    Shutdown,
    /// The client's token expired (after a final `token-expired` reset).
    TokenExpired,
}

impl CloseReason {
    pub const ALL: [CloseReason; 8] = [
        CloseReason::Normal,
        CloseReason::Reset,
        CloseReason::Error,
        CloseReason::Slow,
        CloseReason::Limit,
        CloseReason::Timeout,
        CloseReason::Shutdown,
        CloseReason::TokenExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::Reset => "reset",
            CloseReason::Error => "error",
            CloseReason::Slow => "slow",
            CloseReason::Limit => "limit",
            CloseReason::Timeout => "timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::TokenExpired => "token-expired",
        }
    }

    fn index(self) -> usize {
        CloseReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0)
    }
}

/// Why a stream request that was valid in form got no stream (`sse_streams_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamRefusal {
    /// Past `--max-stream-rate`: too many new streams this second.
    Rate,
    /// Past `--max-clients`.
    Clients,
    /// Every topic slot holds a topic with subscribers (`--max-topics`).
    Topics,
    /// Cluster mode: a resume before the shared log's epoch is known.
    LogNotReady,
    /// The verifier thread's queue of token checks was full (`--jwt-verify-queue`).
    VerifyQueue,
}

impl StreamRefusal {
    pub const ALL: [StreamRefusal; 5] = [
        StreamRefusal::Rate,
        StreamRefusal::Clients,
        StreamRefusal::Topics,
        StreamRefusal::LogNotReady,
        StreamRefusal::VerifyQueue,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamRefusal::Rate => "rate",
            StreamRefusal::Clients => "clients",
            StreamRefusal::Topics => "topics",
            StreamRefusal::LogNotReady => "log-not-ready",
            StreamRefusal::VerifyQueue => "verify-queue",
        }
    }

    fn index(self) -> usize {
        StreamRefusal::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0)
    }
}

/// Monotonic counters and last-value gauges. Gauges derived from state (clients, history)
/// are computed when rendering.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub accepted: u64,
    /// Connections refused at accept (over the connection limit, or shutting down).
    pub refused: u64,
    closed: [u64; CloseReason::ALL.len()],
    /// Stream requests (valid in form, not `HEAD`) that reached the connect-rate bound,
    /// admitted or not; counted whether the bound is on or not.
    pub stream_requests: u64,
    /// Stream requests refused, by reason.
    streams_refused: [u64; StreamRefusal::ALL.len()],
    pub events_published: u64,
    pub ticks: u64,
    /// Log frames fully written to a client (deliveries).
    pub frames_written: u64,
    pub bytes_written: u64,
    /// Write calls reported by the driver (one per `writev`).
    pub write_calls: u64,
    pub would_blocks: u64,
    pub keepalives: u64,
    /// Streaming clients skipped forward by the `latest` policy.
    pub skipped_forward: u64,
    /// Responses by status (index by status code, sparse).
    responses: Vec<(u16, u64)>,
    /// From a broadcast's start to the last byte of it written (or the last client blocked).
    pub last_fanout: Option<Duration>,
    pub last_fanout_clients: usize,
    /// The fan-out, delivery and bus-apply histograms.
    pub latency: super::latency::Latency,
}

impl Metrics {
    pub fn count_close(&mut self, reason: CloseReason) {
        self.closed[reason.index()] += 1;
    }

    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }

    pub fn count_stream_refusal(&mut self, reason: StreamRefusal) {
        self.streams_refused[reason.index()] += 1;
    }

    pub fn streams_refused(&self, reason: StreamRefusal) -> u64 {
        self.streams_refused[reason.index()]
    }

    pub fn count_response(&mut self, status: u16) {
        match self.responses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => {
                self.responses.push((status, 1));
                self.responses.sort_unstable();
            }
        }
    }

    pub fn responses(&self, status: u16) -> u64 {
        self.responses
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }
}

/// State-derived values rendered beside the counters.
pub struct Gauges<'a> {
    /// `--workers`: this process's worker index (`sse_worker_info{worker="K"} 1`).
    pub worker: Option<u16>,
    pub clients: usize,
    pub connections: usize,
    pub max_clients: usize,
    /// (topic name, subscribers, retained events, retained bytes) of the listed topics: at
    /// most [`MAX_TOPIC_SERIES`].
    pub topics: Vec<(&'a str, usize, usize, usize)>,
    /// Topics in the table (listed or not).
    pub topics_total: usize,
    /// The cache of verified tokens: its counts and entries; `None` when it is off.
    pub token_cache: Option<(crate::auth::CacheStats, usize)>,
    /// Token checks off the reactor: their counts and those in flight; `None` without a
    /// verifier thread (`--jwt-verify-queue 0`, or no key).
    pub token_checks: Option<(super::CheckStats, usize)>,
}

/// Most topics with per-topic series in `/metrics` (those with the most subscribers, then
/// the most retained bytes). Bounds the answer's size whatever the topic table holds, so
/// that many requesters that never read cannot pin much memory.
pub const MAX_TOPIC_SERIES: usize = 32;

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

/// Escapes a label value for the exposition format.
fn label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Renders everything in the Prometheus text exposition format (version 0.0.4).
pub fn render(m: &Metrics, g: &Gauges<'_>) -> String {
    let mut o = String::with_capacity(4096);
    if let Some(k) = g.worker {
        help(
            &mut o,
            "sse_worker_info",
            "gauge",
            "This process is worker K of a --workers supervisor (always 1).",
        );
        let _ = writeln!(o, "sse_worker_info{{worker=\"{k}\"}} 1");
    }
    help(
        &mut o,
        "sse_clients",
        "gauge",
        "Streaming clients connected.",
    );
    let _ = writeln!(o, "sse_clients {}", g.clients);
    help(
        &mut o,
        "sse_connections",
        "gauge",
        "Open connections of any kind.",
    );
    let _ = writeln!(o, "sse_connections {}", g.connections);
    help(
        &mut o,
        "sse_max_clients",
        "gauge",
        "The streaming client limit.",
    );
    let _ = writeln!(o, "sse_max_clients {}", g.max_clients);
    help(
        &mut o,
        "sse_topics",
        "gauge",
        "Topics in the topic table (per-topic series list at most 32 of them: the most subscribed).",
    );
    let _ = writeln!(o, "sse_topics {}", g.topics_total);
    help(
        &mut o,
        "sse_topic_clients",
        "gauge",
        "Streaming clients per topic (\"\" is the default stream).",
    );
    for (name, subs, _, _) in &g.topics {
        let _ = writeln!(o, "sse_topic_clients{{topic=\"{}\"}} {subs}", label(name));
    }
    help(
        &mut o,
        "sse_history_events",
        "gauge",
        "Events retained for resume, per topic.",
    );
    for (name, _, events, _) in &g.topics {
        let _ = writeln!(
            o,
            "sse_history_events{{topic=\"{}\"}} {events}",
            label(name)
        );
    }
    help(
        &mut o,
        "sse_history_bytes",
        "gauge",
        "Encoded bytes retained for resume, per topic.",
    );
    for (name, _, _, bytes) in &g.topics {
        let _ = writeln!(o, "sse_history_bytes{{topic=\"{}\"}} {bytes}", label(name));
    }
    help(
        &mut o,
        "sse_connections_accepted_total",
        "counter",
        "Connections accepted.",
    );
    let _ = writeln!(o, "sse_connections_accepted_total {}", m.accepted);
    help(
        &mut o,
        "sse_connections_refused_total",
        "counter",
        "Connections closed at accept (connection limit or shutdown).",
    );
    let _ = writeln!(o, "sse_connections_refused_total {}", m.refused);
    help(
        &mut o,
        "sse_connections_closed_total",
        "counter",
        "Connections closed, by reason.",
    );
    for r in CloseReason::ALL {
        let _ = writeln!(
            o,
            "sse_connections_closed_total{{reason=\"{}\"}} {}",
            r.as_str(),
            m.closed(r)
        );
    }
    help(
        &mut o,
        "sse_stream_requests_total",
        "counter",
        "Stream requests valid in form that reached the connect-rate bound (admitted or not).",
    );
    let _ = writeln!(o, "sse_stream_requests_total {}", m.stream_requests);
    help(
        &mut o,
        "sse_streams_refused_total",
        "counter",
        "Stream requests told to come back later (EventSource: 200 + retry:, others: 503), by reason.",
    );
    for r in StreamRefusal::ALL {
        let _ = writeln!(
            o,
            "sse_streams_refused_total{{reason=\"{}\"}} {}",
            r.as_str(),
            m.streams_refused(r)
        );
    }
    help(
        &mut o,
        "sse_events_published_total",
        "counter",
        "Events published (POST /publish, stdin).",
    );
    let _ = writeln!(o, "sse_events_published_total {}", m.events_published);
    help(
        &mut o,
        "sse_ticks_total",
        "counter",
        "Time ticks broadcast.",
    );
    let _ = writeln!(o, "sse_ticks_total {}", m.ticks);
    help(
        &mut o,
        "sse_frames_written_total",
        "counter",
        "Event frames fully written to clients (deliveries).",
    );
    let _ = writeln!(o, "sse_frames_written_total {}", m.frames_written);
    help(
        &mut o,
        "sse_bytes_written_total",
        "counter",
        "Bytes written to clients.",
    );
    let _ = writeln!(o, "sse_bytes_written_total {}", m.bytes_written);
    help(
        &mut o,
        "sse_write_syscalls_total",
        "counter",
        "Write system calls (writev) that wrote bytes.",
    );
    let _ = writeln!(o, "sse_write_syscalls_total {}", m.write_calls);
    help(
        &mut o,
        "sse_write_would_block_total",
        "counter",
        "Writes that found the socket full.",
    );
    let _ = writeln!(o, "sse_write_would_block_total {}", m.would_blocks);
    help(
        &mut o,
        "sse_keepalives_total",
        "counter",
        "Keep-alive comments sent.",
    );
    let _ = writeln!(o, "sse_keepalives_total {}", m.keepalives);
    help(
        &mut o,
        "sse_slow_skipped_total",
        "counter",
        "Lagging clients skipped to the newest event (policy latest).",
    );
    let _ = writeln!(o, "sse_slow_skipped_total {}", m.skipped_forward);
    help(
        &mut o,
        "sse_responses_total",
        "counter",
        "Complete (non-stream) responses, by status.",
    );
    for (status, n) in &m.responses {
        let _ = writeln!(o, "sse_responses_total{{status=\"{status}\"}} {n}");
    }
    help(
        &mut o,
        "sse_last_fanout_seconds",
        "gauge",
        "Last broadcast: time from the event to the last byte written to its clients.",
    );
    let _ = writeln!(
        o,
        "sse_last_fanout_seconds {:.9}",
        m.last_fanout.map_or(0.0, |d| d.as_secs_f64())
    );
    help(
        &mut o,
        "sse_last_fanout_clients",
        "gauge",
        "Clients the last broadcast was written to.",
    );
    let _ = writeln!(o, "sse_last_fanout_clients {}", m.last_fanout_clients);
    if let Some((stats, entries)) = &g.token_cache {
        render_token_cache(&mut o, stats, *entries);
    }
    if let Some((stats, in_flight)) = &g.token_checks {
        render_token_checks(&mut o, stats, *in_flight);
    }
    o
}

/// The verifier thread's series (`--jwt-verify-queue`).
fn render_token_checks(o: &mut String, stats: &super::CheckStats, in_flight: usize) {
    help(
        o,
        "sse_jwt_verify_queue",
        "gauge",
        "Token signature checks handed to the verifier thread and not answered yet.",
    );
    let _ = writeln!(o, "sse_jwt_verify_queue {in_flight}");
    for (name, text, n) in [
        (
            "sse_jwt_verify_checks_total",
            "Token signature checks handed to the verifier thread (RS256/ES256, not cached).",
            stats.handed_out,
        ),
        (
            "sse_jwt_verify_refused_total",
            "Token checks refused because the verifier's queue was full (answered 503).",
            stats.refused,
        ),
    ] {
        help(o, name, "counter", text);
        let _ = writeln!(o, "{name} {n}");
    }
}

/// The `--jwt-cache` series.
fn render_token_cache(o: &mut String, stats: &crate::auth::CacheStats, entries: usize) {
    help(
        o,
        "sse_jwt_cache_entries",
        "gauge",
        "Verified tokens held by the token cache (--jwt-cache).",
    );
    let _ = writeln!(o, "sse_jwt_cache_entries {entries}");
    for (name, text, n) in [
        (
            "sse_jwt_cache_hits_total",
            "Token checks answered by the token cache (no signature verified).",
            stats.hits,
        ),
        (
            "sse_jwt_cache_misses_total",
            "Token checks that verified a signature (not in the token cache).",
            stats.misses,
        ),
        (
            "sse_jwt_cache_evictions_total",
            "Verified tokens pushed out of the full token cache.",
            stats.evictions,
        ),
    ] {
        help(o, name, "counter", text);
        let _ = writeln!(o, "{name} {n}");
    }
}
