//! Every tunable of the server: its default, its reason, and its validation, in one place.
//! The command line (clap, with an `SSE_*` environment variable for every flag) is parsed
//! into [`Config`], which the core and the driver read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::auth::AuthConfig;
use crate::auth::args::AuthArgs;
use crate::bus::BusConfig;
use crate::bus::config::{Durability, LocalStore, LogStore, RedisStore};

/// What to do with a client that falls behind (its unsent backlog passes the bound, or its
/// cursor falls out of the retained history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowClientPolicy {
    /// Close it with reason `slow`; its EventSource reconnects and resumes from history.
    Drop,
    /// Skip it forward to the newest event (after finishing the frame in flight): for feeds
    /// where only the newest value matters.
    Latest,
}

/// The command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sse-server",
    version,
    about = "A Server-Sent Events broadcast server on one epoll reactor"
)]
pub struct Cli {
    /// Address to listen on (port 0 picks a free port; the first stdout line names it).
    #[arg(long, env = "SSE_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Time between ticks on the default stream (`2s`, `500ms`, `off`).
    #[arg(long, env = "SSE_INTERVAL", default_value = "2s", value_parser = parse_opt_duration)]
    pub interval: OptDuration,
    /// Most streaming clients at once (default: what the open-file limit allows).
    #[arg(long, env = "SSE_MAX_CLIENTS")]
    pub max_clients: Option<usize>,
    /// New event streams a second this process admits (a token bucket, a burst of N); past
    /// it: 503 + jittered Retry-After, an EventSource 200 + jittered retry:. 0: no bound.
    #[arg(
        long,
        env = "SSE_MAX_STREAM_RATE",
        default_value_t = 0,
        value_name = "N"
    )]
    pub max_stream_rate: u32,
    /// Comment sent to a client idle this long, so proxies keep the stream (`off` disables).
    #[arg(long, env = "SSE_KEEPALIVE", default_value = "15s", value_parser = parse_opt_duration)]
    pub keepalive: OptDuration,
    /// Reconnection delay sent once at connect as `retry:` (`off`: none).
    #[arg(long, env = "SSE_RETRY", default_value = "off", value_parser = parse_opt_duration)]
    pub retry: OptDuration,
    /// Largest request head, in bytes (larger: 431).
    #[arg(long, env = "SSE_MAX_HEAD", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(256..=1_048_576))]
    pub max_head: u32,
    /// Time allowed for a request head (and a publish body) to arrive (then: 408).
    #[arg(long, env = "SSE_HEAD_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub head_timeout: Duration,
    /// Largest publish body, in bytes (larger: 413).
    #[arg(long, env = "SSE_MAX_BODY", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_body: u32,
    /// Events kept per topic for Last-Event-ID resume.
    #[arg(long, env = "SSE_HISTORY", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub history: u32,
    /// Bytes of encoded events kept per topic for resume.
    #[arg(long, env = "SSE_HISTORY_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1024..=1 << 30))]
    pub history_bytes: u32,
    /// Most topics; a new topic past this recycles the least recently used topic that has no
    /// subscribers, or is refused with 503.
    #[arg(long, env = "SSE_MAX_TOPICS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_topics: u32,
    /// Most topics one client may subscribe to (more: 400).
    #[arg(long, env = "SSE_MAX_TOPICS_PER_CLIENT", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_topics_per_client: u32,
    /// Most unsent bytes a streaming client may be behind before the slow-client policy
    /// applies (never less than --history-bytes).
    #[arg(long, env = "SSE_MAX_BACKLOG", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1024..=1 << 30))]
    pub max_backlog: u32,
    /// Most unsent events a streaming client may be behind before the slow-client policy
    /// applies (never less than --history).
    #[arg(long, env = "SSE_MAX_BACKLOG_EVENTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_backlog_events: u32,
    /// What happens to a client past the backlog bound.
    #[arg(long, env = "SSE_SLOW_CLIENT", value_enum, default_value_t = SlowClientPolicy::Drop)]
    pub slow_client: SlowClientPolicy,
    /// Bytes a streaming client may send after its request (read and discarded; more: close).
    #[arg(long, env = "SSE_MAX_CLIENT_SEND", default_value_t = 4096)]
    pub max_client_send: u32,
    /// Require `Authorization: Bearer TOKEN` to publish (and to read /clients from afar).
    #[arg(long, env = "SSE_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,
    /// Allow publishing without a token on a non-loopback address.
    #[arg(long, env = "SSE_ALLOW_ANONYMOUS_PUBLISH")]
    pub allow_anonymous_publish: bool,
    /// `/metrics` and `/clients` need `Authorization: Bearer <publish token>` from every
    /// peer, loopback too (behind a proxy on the same host every peer is loopback).
    #[arg(long, env = "SSE_PROTECT_STATS", requires = "publish_token")]
    pub protect_stats: bool,
    /// Publish each line of standard input as an event on the default stream.
    #[arg(long, env = "SSE_STDIN")]
    pub stdin: bool,
    /// On SIGINT/SIGTERM, time given to clients to receive what is queued before closing.
    #[arg(long, env = "SSE_SHUTDOWN_GRACE", default_value = "2s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Cluster mode: share one event log with every node using this Redis
    /// (`redis://host:port/db`, `redis+unix:///path/to/socket`, `unix:///path?db=N`), or
    /// the master Sentinels name (`redis+sentinel://host:port[,host:port…]/<master>[/db]`).
    #[arg(long, env = "SSE_REDIS")]
    pub redis: Option<String>,
    /// With `--redis`: answer a publish 200 only once N replicas have it (Redis `WAIT`);
    /// with N ≥ 1 a failover loses no acknowledged event. 0: acknowledge at once.
    #[arg(long, env = "SSE_REDIS_WAIT", default_value_t = 0, value_name = "N")]
    pub redis_wait: u32,
    /// With `--redis-wait`: how long the replicas may take before the publishes fail (503).
    #[arg(long, env = "SSE_REDIS_WAIT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_wait_timeout: Duration,
    /// Namespace of this deployment's keys in Redis, so several deployments can share one.
    #[arg(long, env = "SSE_REDIS_PREFIX", default_value = "sse")]
    pub redis_prefix: String,
    /// Events the shared log keeps (Redis: `XADD MAXLEN ~`, approximately; the local log:
    /// exactly): resumes older than a node's cache are read from there. Keep it above what
    /// one node's cache holds.
    #[arg(long = "log-max-len", alias = "redis-max-len", env = "SSE_LOG_MAX_LEN", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub redis_max_len: u64,
    /// Keep the event log on local disk in this directory (an SQLite database in WAL mode):
    /// history survives restarts, and every process pointed at the directory shares it.
    #[arg(long, env = "SSE_DATA_DIR", conflicts_with = "redis")]
    pub data_dir: Option<std::path::PathBuf>,
    /// With `--data-dir`: when a published event is on disk. `sync`: before its publish is
    /// answered (nothing acknowledged is lost on a power loss); `batch`: synced within about
    /// a second; `os`: when the kernel writes it back. All three lose nothing on a crash of
    /// the process.
    #[arg(long, env = "SSE_DURABILITY", value_enum, default_value_t = Durability::Sync, requires = "data_dir")]
    pub durability: Durability,
    /// With a shared log: how long a head known to be in the log may stay unapplied by this
    /// node before /health answers `503 not applying the log`.
    #[arg(long, env = "SSE_HEALTH_APPLY_BOUND", default_value = "5s", value_parser = parse_duration)]
    pub health_apply_bound: Duration,
    /// Set SO_REUSEPORT on the listener, so several processes can share one port.
    #[arg(long, env = "SSE_REUSE_PORT")]
    pub reuse_port: bool,
    /// Run N worker processes (one reactor each) sharing the port, under a supervisor that
    /// restarts them; `auto`: one per core. They share one event log: `--redis`,
    /// `--data-dir`, or without either a temporary directory the supervisor removes.
    #[arg(long, env = "SSE_WORKERS", value_name = "N|auto", value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// Set by the supervisor for the processes it starts: this one is worker K.
    #[arg(long, hide = true, conflicts_with = "workers")]
    pub worker_index: Option<u16>,
    /// A second listener that serves only /metrics and /health (with --workers, worker K
    /// listens on the port plus K).
    #[arg(long, env = "SSE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Kernel send buffer asked for each connection (`SO_SNDBUF`; Linux doubles it), which
    /// bounds the kernel memory a client that stops reading can pin; 0 leaves the kernel's
    /// autotuning (up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default, per client).
    #[arg(long, env = "SSE_MAX_SEND_BUFFER", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(0..=1 << 26))]
    pub max_send_buffer: u32,
    /// Private topics: JWT keys, public topics, the token cookie, allowed origins.
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Most worker processes `--workers` starts.
pub const MAX_WORKERS: usize = 1024;

/// Parses `--workers`: a count from 1 to [`MAX_WORKERS`], or `auto` (one per core).
pub fn parse_workers(s: &str) -> Result<usize, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        Ok(_) => Err(format!("must be from 1 to {MAX_WORKERS} (or auto)")),
        Err(_) => Err(format!("`{s}` is not a number of workers (try 4 or auto)")),
    }
}

/// A duration that may be `off`.
pub type OptDuration = Option<Duration>;

/// Parses `250ms`, `2s`, `1.5s`, `3m`, `1h`; a bare number is seconds. Zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 500ms, 2s, 1m)"))?;
    let scale = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 86400.0 {
        return Err(format!("`{s}` must be more than zero and at most a year"));
    }
    let d = Duration::from_secs_f64(secs);
    if d < Duration::from_millis(1) {
        return Err(format!("`{s}` is below the 1ms resolution"));
    }
    Ok(d)
}

/// Like [`parse_duration`], and `off` gives `None`.
pub fn parse_opt_duration(s: &str) -> Result<OptDuration, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        Ok(None)
    } else {
        parse_duration(s).map(Some)
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: no ticks.
    pub interval: Option<Duration>,
    /// Most streaming clients.
    pub max_clients: usize,
    /// New streams a second (a token bucket holding at most this many: a burst of as many
    /// at once), so a reconnect storm after a deploy is told to come back cheaply instead
    /// of checking every token and resume at once. 0: no bound (the default: a server that
    /// starts should let its clients back as fast as it can serve them unless told).
    pub max_stream_rate: u32,
    /// Most connections of any kind (streaming, reading a head, being answered): the
    /// streaming limit plus room to tell over-limit clients to come back later.
    pub max_connections: usize,
    pub keepalive: Option<Duration>,
    pub retry: Option<Duration>,
    pub max_head: usize,
    pub head_timeout: Duration,
    pub max_body: usize,
    pub history: usize,
    pub history_bytes: usize,
    pub max_topics: usize,
    pub max_topics_per_client: usize,
    pub max_backlog: u64,
    pub max_backlog_events: u64,
    pub slow_client: SlowClientPolicy,
    pub max_client_send: usize,
    pub publish_token: Option<String>,
    /// `/metrics` and `/clients` need the publish token from every peer, loopback too.
    pub protect_stats: bool,
    pub stdin: bool,
    pub shutdown_grace: Duration,
    /// How long an answered-and-closing connection may take to accept its last bytes.
    pub linger: Duration,
    /// Cluster mode (`--redis`): the shared log's settings. `None`: the embedded mode.
    pub cluster: Option<BusConfig>,
    /// `SO_REUSEPORT` on the listener (and the metrics listener).
    pub reuse_port: bool,
    /// `--workers N`: this process is the supervisor of N worker processes
    /// (`crate::supervisor`), and serves nothing itself.
    pub workers: Option<usize>,
    /// This process is worker K of a supervisor (`/metrics` says so: `sse_worker_info`).
    pub worker_index: Option<u16>,
    /// The listener for `/metrics` and `/health` only: for worker K, the flag's port plus K
    /// (port 0 stays 0: a free port). For the supervisor, the flag's address (the base).
    pub metrics_listen: Option<SocketAddr>,
    /// `SO_SNDBUF` for every connection, in bytes; 0: the kernel's autotuning.
    pub max_send_buffer: usize,
    /// Who may subscribe and publish where, and the CORS policy (shared: `Config` is cloned).
    pub auth: Arc<AuthConfig>,
}

/// File descriptors kept back from clients: the listener, epoll, the signal pipe, stdin,
/// the EMFILE reserve, log output, and a margin.
pub const RESERVED_FDS: usize = 32;
/// Connections over the streaming limit that can still be accepted to be told "come back".
pub const OVERFLOW_CONNECTIONS: usize = 64;

impl Config {
    /// Validates the command line against the open-file limit `nofile`.
    pub fn from_cli(cli: Cli, nofile: u64) -> Result<Config, String> {
        let fd_room = usize::try_from(nofile)
            .unwrap_or(usize::MAX)
            .saturating_sub(RESERVED_FDS);
        if fd_room < 2 {
            return Err(format!(
                "the open-file limit ({nofile}) leaves no room for clients"
            ));
        }
        let max_clients = match cli.max_clients {
            Some(0) => return Err("--max-clients must be at least 1".into()),
            Some(n) if n > fd_room => {
                return Err(format!(
                    "--max-clients {n} exceeds what the open-file limit allows ({nofile} files, {RESERVED_FDS} reserved: at most {fd_room})"
                ));
            }
            Some(n) => n,
            None => fd_room.saturating_sub(OVERFLOW_CONNECTIONS).max(1),
        };
        let max_connections = (max_clients + OVERFLOW_CONNECTIONS).min(fd_room);
        let auth = cli
            .auth
            .build(cli.publish_token.clone())
            .map_err(|e| e.to_string())?;
        // With a JWT key, publishing needs a token's `publish` claim: never anonymous.
        if !cli.listen.ip().is_loopback()
            && cli.publish_token.is_none()
            && !auth.tokens_enabled()
            && !cli.allow_anonymous_publish
        {
            return Err(format!(
                "refusing to listen on non-loopback {} with anonymous publishing: set --publish-token or --allow-anonymous-publish",
                cli.listen
            ));
        }
        if let Some(t) = &cli.publish_token
            && (t.is_empty()
                || t.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control()))
        {
            return Err(
                "--publish-token must be non-empty, without spaces or control characters".into(),
            );
        }
        if cli.redis.is_none() && cli.redis_wait > 0 {
            return Err("--redis-wait needs --redis".into());
        }
        let store = match (&cli.redis, &cli.data_dir) {
            (Some(url), _) => Some(LogStore::Redis(RedisStore {
                replicas: cli.redis_wait,
                replica_timeout: cli.redis_wait_timeout,
                ..RedisStore::new(url.clone(), cli.redis_prefix.clone())
            })),
            (None, Some(dir)) => Some(LogStore::Local(LocalStore {
                dir: dir.clone(),
                durability: cli.durability,
            })),
            (None, None) => None,
        };
        let cluster = match store {
            None => None,
            Some(store) => {
                let mut bus = BusConfig::new(store);
                bus.max_len = cli.redis_max_len;
                bus.apply_bound = cli.health_apply_bound;
                // Warm the cache with what one topic's history holds (at most the log).
                bus.warm_events = u64::from(cli.history).min(cli.redis_max_len);
                bus.validate().map_err(|e| e.to_string())?;
                Some(bus)
            }
        };
        let metrics_listen = metrics_address(&cli)?;
        Ok(Config {
            cluster,
            reuse_port: cli.reuse_port,
            workers: cli.workers,
            worker_index: cli.worker_index,
            metrics_listen,
            listen: cli.listen,
            interval: cli.interval,
            max_clients,
            max_connections,
            max_stream_rate: cli.max_stream_rate,
            keepalive: cli.keepalive,
            retry: cli.retry,
            max_head: cli.max_head as usize,
            head_timeout: cli.head_timeout,
            max_body: cli.max_body as usize,
            history: cli.history as usize,
            history_bytes: cli.history_bytes as usize,
            max_topics: cli.max_topics as usize,
            max_topics_per_client: cli.max_topics_per_client as usize,
            // A resuming client is behind by up to the whole history: were the backlog bound
            // smaller, it would be dropped as slow at the next event, reconnect, and loop.
            max_backlog: u64::from(cli.max_backlog.max(cli.history_bytes)),
            max_backlog_events: u64::from(cli.max_backlog_events.max(cli.history)),
            slow_client: cli.slow_client,
            max_client_send: cli.max_client_send as usize,
            publish_token: cli.publish_token,
            protect_stats: cli.protect_stats,
            stdin: cli.stdin,
            shutdown_grace: cli.shutdown_grace,
            linger: Duration::from_secs(5),
            max_send_buffer: cli.max_send_buffer as usize,
            auth: Arc::new(auth),
        })
    }
}

/// The metrics listener's address: the flag's for a single process or the supervisor (whose
/// workers need ports up to the base plus N − 1), the base plus K for worker K.
fn metrics_address(cli: &Cli) -> Result<Option<SocketAddr>, String> {
    let Some(mut addr) = cli.metrics_listen else {
        return Ok(None);
    };
    let base = addr.port();
    if base == 0 {
        return Ok(Some(addr));
    }
    let last = cli.workers.map_or(0, |n| n.saturating_sub(1));
    if u16::try_from(usize::from(base) + last).is_err() {
        return Err(format!(
            "--metrics-listen {addr}: {} workers need ports {base} to {}, past 65535",
            last + 1,
            usize::from(base) + last
        ));
    }
    if let Some(k) = cli.worker_index {
        let port = base
            .checked_add(k)
            .ok_or_else(|| format!("--metrics-listen {addr}: worker {k}'s port is past 65535"))?;
        addr.set_port(port);
    }
    Ok(Some(addr))
}

impl Cli {
    /// The command line's defaults, written out: reads neither the process's arguments nor
    /// its `SSE_*` environment (a test `cli_defaults_match_clap` keeps the two in step).
    pub fn defaults() -> Cli {
        Cli {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            interval: Some(Duration::from_secs(2)),
            max_clients: None,
            max_stream_rate: 0,
            keepalive: Some(Duration::from_secs(15)),
            retry: None,
            max_head: 8192,
            head_timeout: Duration::from_secs(10),
            max_body: 65536,
            history: 1024,
            history_bytes: 1 << 20,
            max_topics: 256,
            max_topics_per_client: 16,
            max_backlog: 1 << 20,
            max_backlog_events: 1024,
            slow_client: SlowClientPolicy::Drop,
            max_client_send: 4096,
            publish_token: None,
            allow_anonymous_publish: false,
            protect_stats: false,
            stdin: false,
            shutdown_grace: Duration::from_secs(2),
            redis: None,
            redis_prefix: "sse".into(),
            redis_wait: 0,
            redis_wait_timeout: Duration::from_secs(1),
            redis_max_len: 100_000,
            data_dir: None,
            durability: Durability::Sync,
            health_apply_bound: crate::bus::config::DEFAULT_APPLY_BOUND,
            reuse_port: false,
            workers: None,
            worker_index: None,
            metrics_listen: None,
            max_send_buffer: 65536,
            auth: AuthArgs::default(),
        }
    }
}

impl Default for Config {
    /// The defaults of the command line, with a 20,000-file limit. Reads neither the
    /// command line nor the environment, so `SSE_*` variables never change tests.
    fn default() -> Self {
        // The defaults are valid by construction.
        match Config::from_cli(Cli::defaults(), 20_000) {
            Ok(c) => c,
            Err(e) => unreachable!("default config invalid: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("2x").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_opt_duration("off"), Ok(None));
    }

    /// `Cli::defaults()` is what clap gives with no arguments (checked only when no `SSE_*`
    /// variable is set: clap would read it).
    #[test]
    fn cli_defaults_match_clap() {
        if std::env::vars().any(|(k, _)| k.starts_with("SSE_")) {
            eprintln!("skipped: an SSE_* variable is set, clap's defaults would include it");
            return;
        }
        let clap = format!("{:?}", Cli::parse_from(["x"]));
        assert_eq!(format!("{:?}", Cli::defaults()), clap);
    }

    /// `Config::default()` ignores `SSE_*` variables: the test runs itself again in a child
    /// process with `SSE_HISTORY=3` set, where the default must still be 1024.
    #[test]
    fn default_config_ignores_environment() {
        if std::env::var_os("SSE_HISTORY").is_some() {
            assert_eq!(Config::default().history, 1024);
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "config::tests::default_config_ignores_environment",
            ])
            .env("SSE_HISTORY", "3")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
    }

    #[test]
    fn limits_from_nofile() {
        let c = Config::from_cli(Cli::parse_from(["x"]), 20_000).unwrap();
        assert_eq!(c.max_clients, 20_000 - RESERVED_FDS - OVERFLOW_CONNECTIONS);
        assert!(
            Config::from_cli(Cli::parse_from(["x", "--max-clients", "30000"]), 20_000).is_err()
        );
        assert!(Config::from_cli(Cli::parse_from(["x", "--max-clients", "0"]), 20_000).is_err());
    }

    #[test]
    fn backlog_bounds_cover_the_history() {
        let cli = Cli::parse_from([
            "x",
            "--history",
            "5000",
            "--max-backlog-events",
            "10",
            "--history-bytes",
            "4000000",
            "--max-backlog",
            "2048",
        ]);
        let c = Config::from_cli(cli, 1000).unwrap();
        assert_eq!(c.max_backlog_events, 5000);
        assert_eq!(c.max_backlog, 4_000_000);
    }

    #[test]
    fn cluster_flags() {
        let c = Config::default();
        assert!(c.cluster.is_none() && !c.reuse_port);
        let cli = Cli::parse_from([
            "x",
            "--redis",
            "redis://127.0.0.1:6379/2",
            "--redis-prefix",
            "prod",
            "--redis-max-len",
            "5000",
            "--history",
            "10000",
            "--reuse-port",
        ]);
        let c = Config::from_cli(cli, 1000).unwrap();
        let bus = c.cluster.unwrap();
        assert_eq!(
            bus.store,
            LogStore::Redis(RedisStore::new("redis://127.0.0.1:6379/2", "prod"))
        );
        assert_eq!(bus.max_len, 5000);
        assert_eq!(bus.warm_events, 5000, "never more than the log holds");
        assert!(c.reuse_port);
        for (flag, value, why) in [
            ("--redis", "localhost:6379", "not a URL"),
            ("--redis", "rediss://h", "TLS"),
        ] {
            let err = Config::from_cli(Cli::parse_from(["x", flag, value]), 1000).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let cli = Cli::parse_from(["x", "--redis", "redis://h", "--redis-prefix", "{x}"]);
        assert!(Config::from_cli(cli, 1000).unwrap_err().contains("prefix"));
        assert!(Cli::try_parse_from(["x", "--redis-max-len", "0"]).is_err());
    }

    #[test]
    fn redis_wait_flags() {
        let cli = Cli::parse_from(["x", "--redis", "redis://h", "--redis-wait", "2"]);
        let bus = Config::from_cli(cli, 1000).unwrap().cluster.unwrap();
        let LogStore::Redis(store) = bus.store else {
            panic!("not redis")
        };
        assert_eq!(
            (store.replicas, store.replica_timeout),
            (2, Duration::from_secs(1))
        );
        let err = Config::from_cli(Cli::parse_from(["x", "--redis-wait", "1"]), 1000);
        assert!(err.unwrap_err().contains("needs --redis"));
        let zero = ["x", "--redis", "redis://h", "--redis-wait", "1"];
        let zero = [&zero[..], &["--redis-wait-timeout", "0s"]].concat();
        assert!(Cli::try_parse_from(zero).is_err());
        let sentinel = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/m";
        assert!(Config::from_cli(Cli::parse_from(["x", "--redis", sentinel]), 1000).is_ok());
    }

    #[test]
    fn workers_and_the_metrics_listener() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["x"], args].concat()).map_err(|e| e.to_string())?;
            Config::from_cli(cli, 1000)
        };
        let redis = ["--redis", "redis://h"];
        let c = parse(&[&redis[..], &["--workers", "3"]].concat()).unwrap();
        assert_eq!(c.workers, Some(3));
        let auto = parse(&[&redis[..], &["--workers", "auto"]].concat()).unwrap();
        assert!(auto.workers.is_some_and(|n| n >= 1));
        for bad in ["0", "x", "1025"] {
            let err = parse(&[&redis[..], &["--workers", bad]].concat()).unwrap_err();
            assert!(err.contains("--workers"), "{bad}: {err}");
        }
        let own_log = parse(&["--workers", "2"]).unwrap();
        assert!(
            own_log.cluster.is_none(),
            "the supervisor makes a directory for the log"
        );
        // Worker K listens on the base port plus K; the base must leave room for every worker.
        let m = ["--metrics-listen", "127.0.0.1:65534"];
        assert!(parse(&[&redis[..], &m, &["--workers", "2"]].concat()).is_ok());
        let err = parse(&[&redis[..], &m, &["--workers", "3"]].concat()).unwrap_err();
        assert!(err.contains("past 65535"), "{err}");
        let w = parse(&[&m[..], &["--worker-index", "1"]].concat()).unwrap();
        assert_eq!(w.metrics_listen, Some("127.0.0.1:65535".parse().unwrap()));
        assert_eq!(w.worker_index, Some(1));
        assert!(parse(&[&m[..], &["--worker-index", "2"]].concat()).is_err());
        let single = parse(&["--metrics-listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(single.metrics_listen, Some("127.0.0.1:0".parse().unwrap()));
        assert!(
            parse(&[&redis[..], &["--workers", "2", "--worker-index", "0"]].concat()).is_err(),
            "a worker is never a supervisor"
        );
    }

    #[test]
    fn non_loopback_needs_token() {
        assert!(Config::from_cli(Cli::parse_from(["x", "--listen", "0.0.0.0:1"]), 1000).is_err());
        assert!(
            Config::from_cli(
                Cli::parse_from(["x", "--listen", "0.0.0.0:1", "--publish-token", "t"]),
                1000
            )
            .is_ok()
        );
        assert!(
            Config::from_cli(
                Cli::parse_from(["x", "--listen", "0.0.0.0:1", "--allow-anonymous-publish"]),
                1000
            )
            .is_ok()
        );
    }
}
