//! The bus's settings and their validation (the command-line flags map onto [`BusConfig`]).

use std::fmt;
use std::time::Duration;

/// Where the shared log lives: the engine behind the bus's helper threads. The core never
/// sees which one it is: both answer with the same [`super::BusReply`] values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogStore {
    /// A Redis stream (`--redis`): nodes on any host share it.
    Redis(RedisStore),
    /// An SQLite database in a local directory (`--data-dir`): processes on one host share it.
    Local(LocalStore),
}

/// The Redis engine's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisStore {
    /// `redis://host:port/db`, a unix socket: `redis+unix:///path` or `unix:///path`
    /// (`?db=N` selects the database), or the master some Sentinels name:
    /// `redis+sentinel://host:port[,host:port…]/<master>[/db]`. Checked by [`validate_url`].
    pub url: String,
    /// Namespace of this deployment's keys (`--redis-prefix`, default `sse`), so several
    /// deployments can share one Redis: keys `{<prefix>}:log` and `{<prefix>}:meta`.
    pub prefix: String,
    /// `--redis-wait N`: a publish is acknowledged only once this many replicas have it
    /// (one `WAIT` after each pipeline of publishes); 0: no `WAIT`.
    pub replicas: u32,
    /// `--redis-wait-timeout`: how long that `WAIT` may take before the batch fails.
    pub replica_timeout: Duration,
}

impl RedisStore {
    /// A store at `url` with `prefix`, acknowledging without waiting for replicas.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> RedisStore {
        RedisStore {
            url: url.into(),
            prefix: prefix.into(),
            replicas: 0,
            replica_timeout: Duration::from_secs(1),
        }
    }
}

impl RedisStore {
    /// The stream holding the log.
    pub fn stream_key(&self) -> String {
        format!("{{{}}}:log", self.prefix)
    }

    /// The hash holding the epoch (`e`) and the last offset handed out (`o`).
    pub fn meta_key(&self) -> String {
        format!("{{{}}}:meta", self.prefix)
    }

    /// Where entries no node wrote are moved when they block the log (a stream, for the
    /// operator to inspect; the newest thousand or so are kept).
    pub fn foreign_key(&self) -> String {
        format!("{{{}}}:foreign", self.prefix)
    }
}

/// The local engine's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalStore {
    /// The directory holding the database (created when missing).
    pub dir: std::path::PathBuf,
    pub durability: Durability,
}

/// When a committed event reaches the disk (SQLite's `synchronous` setting in WAL mode).
/// Every mode loses nothing when the process crashes: a commit is in the kernel's page cache
/// before the publish is answered. They differ on a power loss or kernel crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// `synchronous=FULL`: the log is fsynced before a publish is answered (one fsync per
    /// batch of publishes). Nothing acknowledged is lost.
    Sync,
    /// `synchronous=NORMAL` plus a checkpoint (which fsyncs) at most a second after a
    /// write: a power loss can lose about the last second of acknowledged events.
    Batch,
    /// `synchronous=OFF`: the kernel writes back when it likes. A power loss can lose the
    /// newest events or leave the database corrupt (the server then refuses to start on it).
    Os,
}

/// Everything the bus needs to know; [`BusConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// The engine and its own settings.
    pub store: LogStore,
    /// Bound on the log's length (Redis: `XADD … MAXLEN ~`, trimmed in whole macro-nodes, so
    /// a little more stays; the local log: exact), from the history settings.
    pub max_len: u64,
    /// How many of the newest events the tail reads first when it starts (to warm the local
    /// cache); after that it follows from its last offset, never from `$`.
    pub warm_events: u64,
    /// Entries per `XREAD` batch, and per range scan at most.
    pub batch: usize,
    /// How long one `XREAD BLOCK` waits for new events. Also how often an idle tail
    /// re-checks the epoch, and at most how long [`super::BusHandle::shutdown`] waits.
    pub block: Duration,
    /// Connect timeout and extra allowance over `block` for every answer: past it the
    /// connection counts as broken (a hung or partitioned Redis is detected, not waited on).
    pub io_timeout: Duration,
    /// Reconnect backoff: first delay, doubling up to `backoff_max`, each jittered.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Requests waiting for the command thread; past it a publish fails at once
    /// ([`super::PublishFailure::Overloaded`]) instead of queueing without bound.
    pub queue: usize,
    /// For the core, not the threads (`--health-apply-bound`): how long a head known to be in
    /// the log may stay unapplied before `/health` says `not applying the log`; the head is
    /// probed through the command side after half of it without word from the tail.
    pub apply_bound: Duration,
}

/// The default of [`BusConfig::apply_bound`]: far above a busy node's normal lag (under
/// 75 ms at saturation, measured in benches/README.md), and short enough that a load
/// balancer checking every few seconds drops a stale node within a few checks.
pub const DEFAULT_APPLY_BOUND: Duration = Duration::from_secs(5);

impl BusConfig {
    /// The defaults for a log kept in `store`.
    pub fn new(store: LogStore) -> BusConfig {
        BusConfig {
            store,
            max_len: 10_000,
            warm_events: 1024,
            batch: 512,
            block: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(3),
            queue: 4096,
            apply_bound: DEFAULT_APPLY_BOUND,
        }
    }

    /// Checks every field; the first problem comes back as a message for the command line.
    pub fn validate(&self) -> Result<(), BusConfigError> {
        match &self.store {
            LogStore::Redis(redis) => {
                validate_url(&redis.url)?;
                validate_prefix(&redis.prefix)?;
                if redis.replicas > 0 && redis.replica_timeout.is_zero() {
                    return Err(BusConfigError(
                        "--redis-wait-timeout must be positive".into(),
                    ));
                }
            }
            LogStore::Local(local) => {
                if local.dir.as_os_str().is_empty() {
                    return Err(BusConfigError("--data-dir must not be empty".into()));
                }
            }
        }
        let positive = [
            ("history bound (MAXLEN)", self.max_len > 0),
            ("batch", self.batch > 0),
            ("block", !self.block.is_zero()),
            ("io timeout", !self.io_timeout.is_zero()),
            ("backoff", !self.backoff_min.is_zero()),
            ("queue", self.queue > 0),
            ("health apply bound", !self.apply_bound.is_zero()),
        ];
        for (what, ok) in positive {
            if !ok {
                return Err(BusConfigError(format!("bus {what} must be positive")));
            }
        }
        if self.backoff_max < self.backoff_min {
            return Err(BusConfigError(
                "bus backoff maximum below its minimum".into(),
            ));
        }
        Ok(())
    }

    /// A Redis log at `url` with the default prefix (`sse`) and settings.
    pub fn redis(url: impl Into<String>) -> BusConfig {
        BusConfig::new(LogStore::Redis(RedisStore::new(url, "sse")))
    }

    /// A local log in `dir` with the given durability and the default settings.
    pub fn local(dir: impl Into<std::path::PathBuf>, durability: Durability) -> BusConfig {
        BusConfig::new(LogStore::Local(LocalStore {
            dir: dir.into(),
            durability,
        }))
    }
}

/// A setting the bus cannot work with; the message names it and what is expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusConfigError(pub String);

impl fmt::Display for BusConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BusConfigError {}

/// Accepts `redis://[user:password@]host[:port][/db]`, `redis+unix:///path[?db=N]`,
/// `unix:///path[?db=N]` and `redis+sentinel://host:port[,host:port…]/<master>[/db]`;
/// refuses anything else (TLS is not built in) with a message that shows the accepted forms.
pub fn validate_url(url: &str) -> Result<(), BusConfigError> {
    const FORMS: &str = "redis://host:port/db, redis+unix:///path/to/socket, unix:///path \
                         or redis+sentinel://host:port[,host:port…]/<master>[/db]";
    let bad = |why: &str| {
        Err(BusConfigError(format!(
            "--redis {url:?}: {why} (use {FORMS})"
        )))
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("not a URL");
    };
    match scheme {
        "redis" => {
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if host.is_empty() || host.starts_with(':') {
                return bad("no host");
            }
            let path = rest[authority.len()..].split('?').next().unwrap_or("");
            let db = path.trim_start_matches('/');
            if !db.is_empty() && db.parse::<u16>().is_err() {
                return bad("the path must be a database number");
            }
        }
        "redis+unix" | "unix" => {
            if !rest.starts_with('/') || rest.len() < 2 {
                return bad("a unix socket needs an absolute path");
            }
        }
        "redis+sentinel" => {
            return super::endpoint::SentinelUrl::parse(url)
                .map(|_| ())
                .or_else(|why| bad(&why));
        }
        "rediss" => return bad("TLS (rediss://) is not supported"),
        _ => return bad("unknown scheme"),
    }
    match redis::Client::open(url) {
        Ok(_) => Ok(()),
        Err(e) => bad(&e.to_string()),
    }
}

/// A prefix is 1 to 64 of `[A-Za-z0-9_.:-]`: no braces (they would change the key's hash
/// tag), no spaces.
pub fn validate_prefix(prefix: &str) -> Result<(), BusConfigError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BusConfigError(format!(
            "--redis-prefix {prefix:?}: use 1 to 64 letters, digits, '_', '.', ':' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_urls() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "redis://localhost",
            "redis://localhost:6380",
            "redis://:secret@10.0.0.1:6379/3",
            "redis://user:secret@host/15",
            "redis://[::1]:6379/1",
            "redis+unix:///run/redis/redis.sock",
            "unix:///tmp/redis.sock",
            "unix:///tmp/redis.sock?db=2",
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster",
            "redis+sentinel://s1:26379/m/3",
        ] {
            assert_eq!(validate_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn refused_urls_say_why() {
        for (url, why) in [
            ("localhost:6379", "not a URL"),
            ("http://localhost", "unknown scheme"),
            ("rediss://localhost", "TLS"),
            ("redis://", "no host"),
            ("redis://:6379/0", "no host"),
            ("redis://localhost/abc", "database number"),
            ("redis://localhost/99999", "database number"),
            ("unix://relative.sock", "absolute path"),
            ("redis+unix://", "absolute path"),
            ("redis+sentinel://s1:26379", "master name"),
            ("redis+sentinel://s1/m", "host:port"),
        ] {
            let err = validate_url(url).unwrap_err().0;
            assert!(err.contains(why), "{url}: {err}");
            assert!(err.contains("redis+unix:///"), "{url}: {err}");
        }
    }

    #[test]
    fn prefixes() {
        for ok in ["sse", "prod.sse", "team:a-b_c", &"p".repeat(64)] {
            assert_eq!(validate_prefix(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a b", "{x}", "a}", &"p".repeat(65), "é"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let store = RedisStore::new("redis://localhost", "prod");
        assert_eq!(store.stream_key(), "{prod}:log");
        assert_eq!(store.meta_key(), "{prod}:meta");
        assert_eq!(BusConfig::new(LogStore::Redis(store)).validate(), Ok(()));
    }

    #[test]
    fn zero_settings_are_refused() {
        let mut config = BusConfig::redis("redis://localhost");
        config.batch = 0;
        assert!(config.validate().unwrap_err().0.contains("batch"));
        let mut config = BusConfig::redis("redis://localhost");
        config.backoff_max = config.backoff_min / 2;
        assert!(config.validate().is_err());
    }
}
