//! Private topics under simulation: scenarios of stream requests carrying tokens (valid for
//! some topics, expired, for the wrong topic, garbage, none; in the header, the cookie or the
//! query), publishes on every topic, partial writes and time passing (tokens expire while
//! streaming), run against the core with simulated sockets and a simulated wall clock.
//!
//! Checked after every step, against an oracle written independently of `src/auth`:
//! - **no client ever receives an event of a topic its token does not allow** (nor of a topic
//!   it did not ask for);
//! - each request gets the documented status: 200, 401 (no, garbage or expired token), 403 (a
//!   valid token that does not cover a requested private topic);
//! - a stream whose token expired is closed by `exp + leeway`, and the last thing it received
//!   is the `token-expired` reset.
//!
//! Run with the cache of verified tokens off and on ([`run_with_cache`]), a scenario must give
//! every client the same bytes and the same close: the cache changes no decision.
//!
//! Kept apart from the main simulator's operation alphabet (`ops.rs`) so the two evolve
//! independently; [`run`] is usable by a fuzz target as it is by the proptest below.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

use crate::auth::{AuthConfig, AuthOptions, LEEWAY_SECS};
use crate::bus::types::BusRequest;
use crate::config::Config;
use crate::core::drain::{OutputSink, WriteOutcome, offer};
use crate::core::{ClientId, CloseReason, Core};
use crate::sse::parse::{Event, Parser};

/// The topics of a scenario; `""` (the default stream) is the only public one.
pub const AUTH_TOPICS: [&str; 4] = ["", "user/1", "user/2", "shop/1/a"];
/// The claim patterns a valid token may carry (bitmask over these).
pub const AUTH_PATTERNS: [&str; 4] = ["user/1", "user/2", "shop/1/*", "*"];
const SECRET: &str = "the simulator's secret, 32+ bytes long";

/// A token as the scenario sends it.
#[cfg_attr(feature = "sim", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimToken {
    /// No token.
    None,
    /// Signed with the server's secret, with the subscribe patterns of the bitmask over
    /// [`AUTH_PATTERNS`], expiring `ttl_secs % 40` seconds from now.
    Valid { patterns: u8, ttl_secs: u8 },
    /// Signed correctly, expired a minute ago.
    Expired { patterns: u8 },
    /// Signed with another secret.
    WrongKey { patterns: u8 },
    /// Not a JWT at all.
    Garbage(u8),
    /// The token of an earlier request again (the `n % sent`-th of those sent; none yet: no
    /// token), as a browser reconnects with the token it holds: cached, perhaps expired since.
    Again(u8),
}

/// Where the token travels.
#[cfg_attr(feature = "sim", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Header,
    Cookie,
    Query,
}

/// One step of a private-topics scenario.
#[cfg_attr(feature = "sim", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOp {
    /// A client asks for the topics of the bitmask over [`AUTH_TOPICS`] (0: the default
    /// stream) with a token; with `resume`, from the start of this run's history
    /// (`Last-Event-ID: <boot>-0`: every retained event of its topics is replayed).
    Subscribe {
        topics: u8,
        token: SimToken,
        via: Via,
        resume: bool,
    },
    /// An event on topic `topic % 4`.
    Publish { topic: u8 },
    /// Time passes by `secs % 20` seconds.
    Advance { secs: u8 },
    /// Client `conn` can take only `window` more bytes until the next [`AuthOp::Drain`].
    Squeeze { conn: u8, window: u8 },
    /// Every client's socket has room again.
    Drain,
}

/// A simulated connection and what the oracle expects of it.
struct Conn {
    id: ClientId,
    bytes: Vec<u8>,
    closed: Option<CloseReason>,
    /// Bytes it can still take (`None`: unlimited).
    window: Option<usize>,
    /// The topics asked for.
    topics: Vec<&'static str>,
    /// What the oracle says its token allows (patterns), if it streams.
    allowed: Vec<&'static str>,
    /// The expected status.
    status: u16,
    /// When its stream must have ended (unix seconds), if its token expires.
    ends_at: Option<u64>,
}

struct World {
    core: Core,
    now: Instant,
    start: Instant,
    wall0: DateTime<Utc>,
    conns: Vec<Conn>,
    published: u64,
    /// Every token sent so far, with what the oracle knows of it: its patterns and `exp` when
    /// it is signed with the server's secret and was valid when minted.
    sent: Vec<Minted>,
}

/// What one client got in a run: its bytes and how it was closed.
pub type Received = Vec<(Vec<u8>, Option<CloseReason>)>;

/// A token and the oracle's view of it: `Some((patterns, exp))` when it is signed with the
/// server's secret and not past `exp + leeway` at the time it is sent.
type Minted = (String, Option<(Vec<&'static str>, u64)>);

impl OutputSink for World {
    type Error = String;

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn write(&mut self, id: ClientId) -> Result<WriteOutcome, String> {
        let Some(c) = self.conns.iter_mut().find(|c| c.id == id) else {
            return Err(format!("write to unknown client {id:?}"));
        };
        let room = c.window.unwrap_or(usize::MAX);
        let bytes: Vec<u8> = offer(&self.core, id, |iov| {
            iov.iter()
                .flat_map(|s| s.iter().copied())
                .take(room)
                .collect()
        });
        if bytes.is_empty() {
            return Ok(WriteOutcome::WouldBlock);
        }
        if let Some(w) = &mut c.window {
            *w -= bytes.len();
        }
        c.bytes.extend_from_slice(&bytes);
        Ok(WriteOutcome::Wrote(bytes.len()))
    }

    fn close(&mut self, id: ClientId, reason: CloseReason) -> Result<(), String> {
        match self
            .conns
            .iter_mut()
            .find(|c| c.id == id && c.closed.is_none())
        {
            Some(c) => {
                c.closed = Some(reason);
                Ok(())
            }
            None => Err(format!("close of unknown client {id:?}")),
        }
    }

    /// The embedded mode's log answers inside the core: a request leaving it is a bug.
    fn log_request(&mut self, request: BusRequest) -> Result<(), String> {
        Err(format!(
            "the embedded core asked for a shared log: {request:?}"
        ))
    }
}

fn mint(secret: &str, patterns: u8, exp: u64) -> String {
    let subscribe: Vec<&str> = pick(&AUTH_PATTERNS, patterns);
    let claims = serde_json::json!({"exp": exp, "sse": {"subscribe": subscribe}});
    match EncodingKey::from_secret(secret.as_bytes()) {
        Ok(key) => encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn pick<T: Copy>(items: &[T], mask: u8) -> Vec<T> {
    items
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, t)| *t)
        .collect()
}

/// The oracle's pattern match: exact, `prefix*`, or `*`.
fn covers(patterns: &[&str], topic: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => *p == topic,
    })
}

impl World {
    fn new(cache_entries: usize) -> Result<World, String> {
        let auth = AuthConfig::new(AuthOptions {
            jwt_secret: Some(SECRET.into()),
            jwt_cache: Some(cache_entries),
            ..AuthOptions::default()
        })
        .map_err(|e| e.0)?;
        let cfg = Config {
            interval: None,
            keepalive: None,
            auth: Arc::new(auth),
            ..Config::default()
        };
        let now = Instant::now();
        let wall0 = Utc
            .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
            .single()
            .ok_or("bad date")?;
        Ok(World {
            core: Core::new(cfg, now, wall0, 1),
            now,
            start: now,
            wall0,
            conns: Vec::new(),
            published: 0,
            sent: Vec::new(),
        })
    }

    fn unix_now(&self) -> u64 {
        let since = self.now.saturating_duration_since(self.start).as_secs();
        self.wall0.timestamp() as u64 + since
    }

    fn apply(&mut self, op: &AuthOp) -> Result<(), String> {
        match op {
            AuthOp::Subscribe {
                topics,
                token,
                via,
                resume,
            } => self.subscribe(*topics, token, *via, *resume)?,
            AuthOp::Publish { topic } => {
                let topic = AUTH_TOPICS[usize::from(topic % 4)];
                self.published += 1;
                let data = format!("{topic}#{}", self.published);
                self.core
                    .publish(topic, None, None, &data, self.now)
                    .map_err(|e| format!("publish refused: {e:?}"))?;
            }
            AuthOp::Advance { secs } => {
                self.now += Duration::from_secs(u64::from(secs % 20));
                let wall = self.wall0
                    + chrono::Duration::from_std(self.now - self.start)
                        .map_err(|e| e.to_string())?;
                self.core.handle_timeout(wall, self.now);
            }
            AuthOp::Squeeze { conn, window } => {
                let n = self.conns.len();
                if n > 0 {
                    self.conns[usize::from(*conn) % n].window = Some(usize::from(*window));
                }
            }
            AuthOp::Drain => {
                for i in 0..self.conns.len() {
                    self.conns[i].window = None;
                    if self.conns[i].closed.is_none() {
                        let id = self.conns[i].id;
                        self.core.handle_writable(id);
                    }
                }
            }
        }
        self.drain(usize::MAX)?;
        self.check()
    }

    fn subscribe(
        &mut self,
        topics: u8,
        token: &SimToken,
        via: Via,
        resume: bool,
    ) -> Result<(), String> {
        let mut names: Vec<&'static str> = pick(&AUTH_TOPICS, topics);
        if names.is_empty() {
            names.push("");
        }
        let now = self.unix_now();
        let (text, valid): Minted = match token {
            SimToken::None => (String::new(), None),
            SimToken::Valid { patterns, ttl_secs } => {
                let exp = now + u64::from(ttl_secs % 40);
                let p = pick(&AUTH_PATTERNS, *patterns);
                (mint(SECRET, *patterns, exp), Some((p, exp)))
            }
            SimToken::Expired { patterns } => (mint(SECRET, *patterns, now - 60), None),
            SimToken::WrongKey { patterns } => (
                mint("another secret, also 32+ bytes long!", *patterns, now + 600),
                None,
            ),
            SimToken::Garbage(n) => (format!("garbage{n}.x.y"), None),
            SimToken::Again(_) if self.sent.is_empty() => (String::new(), None),
            SimToken::Again(n) => {
                let (text, valid) = &self.sent[usize::from(*n) % self.sent.len()];
                let still = valid
                    .clone()
                    .filter(|(_, exp)| now < exp.saturating_add(LEEWAY_SECS));
                (text.clone(), still)
            }
        };
        if !text.is_empty() && !matches!(token, SimToken::Again(_)) {
            self.sent.push((text.clone(), valid.clone()));
        }
        // The oracle: public topics need nothing; otherwise a valid token covering each one.
        let private: Vec<&str> = names.iter().copied().filter(|t| !t.is_empty()).collect();
        let (status, allowed, ends_at) = if private.is_empty() {
            (200, Vec::new(), None)
        } else {
            match &valid {
                None => (401, Vec::new(), None),
                Some((patterns, exp)) if private.iter().all(|t| covers(patterns, t)) => {
                    (200, patterns.clone(), Some(exp + LEEWAY_SECS))
                }
                Some(_) => (403, Vec::new(), None),
            }
        };
        let mut query: Vec<String> = names.iter().map(|t| format!("topic={t}")).collect();
        let mut headers = String::new();
        if !text.is_empty() {
            match via {
                Via::Header => headers = format!("Authorization: Bearer {text}\r\n"),
                Via::Cookie => headers = format!("Cookie: a=b; sse_token={text}\r\n"),
                Via::Query => query.push(format!("access_token={text}")),
            }
        }
        if resume {
            headers.push_str(&format!("Last-Event-ID: {}-0\r\n", self.core.boot_id()));
        }
        let request = format!(
            "GET /events?{} HTTP/1.1\r\nHost: sim\r\n{headers}\r\n",
            query.join("&")
        );
        let peer = SocketAddr::from(([127, 0, 0, 1], 4000));
        let Some(id) = self.core.handle_accept(peer, self.now) else {
            return Ok(());
        };
        self.conns.push(Conn {
            id,
            bytes: Vec::new(),
            closed: None,
            window: None,
            topics: names,
            allowed,
            status,
            ends_at,
        });
        self.core.handle_read(id, request.as_bytes(), self.now);
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        let now = self.unix_now();
        for (i, c) in self.conns.iter().enumerate() {
            let text = String::from_utf8_lossy(&c.bytes);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status != c.status {
                return Err(format!(
                    "connection {i} for {:?}: status {status}, expected {}\n{head}",
                    c.topics, c.status
                ));
            }
            if status != 200 {
                continue;
            }
            let mut events: Vec<Event> = Vec::new();
            Parser::new().feed(body.as_bytes(), |e| events.push(e));
            for (k, e) in events.iter().enumerate() {
                if e.event_type == "reset" {
                    if !e.data.contains("token-expired") {
                        continue;
                    }
                    if k + 1 != events.len() {
                        return Err(format!(
                            "connection {i}: events after the token-expired reset"
                        ));
                    }
                    if c.ends_at.is_none() {
                        return Err(format!("connection {i}: token-expired without a token"));
                    }
                    continue;
                }
                let topic = e.data.split_once('#').map_or("?", |(t, _)| t);
                if !c.topics.contains(&topic) {
                    return Err(format!(
                        "connection {i} asked for {:?} and received an event of {topic:?}",
                        c.topics
                    ));
                }
                if !topic.is_empty() && !covers(&c.allowed, topic) {
                    return Err(format!(
                        "connection {i} received an event of {topic:?}, which its token ({:?}) does not allow",
                        c.allowed
                    ));
                }
            }
            if let Some(end) = c.ends_at
                && now >= end
            {
                // Expired: closed once it took its last bytes (its window may hold them
                // back), or by the linger timeout if it does not take them in time.
                let squeezed = c.window.is_some();
                let closed_ok = matches!(
                    c.closed,
                    Some(CloseReason::TokenExpired | CloseReason::Timeout)
                );
                let still_held = squeezed && c.closed.is_none();
                if !(closed_ok || still_held) {
                    return Err(format!(
                        "connection {i}: token expired at {end}, now {now}, closed: {:?}",
                        c.closed
                    ));
                }
                if c.closed == Some(CloseReason::TokenExpired)
                    && events.last().is_none_or(|e| e.event_type != "reset")
                {
                    return Err(format!(
                        "connection {i}: closed for expiry without the reset"
                    ));
                }
            }
        }
        self.core.check_invariants()
    }
}

/// Runs one scenario with the default cache of verified tokens; `Err` describes the first
/// violated expectation.
pub fn run(ops: &[AuthOp]) -> Result<(), String> {
    run_with_cache(ops, crate::auth::cache::DEFAULT_CACHE_ENTRIES).map(|_| ())
}

/// Runs one scenario with a cache of `cache_entries` verified tokens (0: none) and returns
/// what each client received.
pub fn run_with_cache(ops: &[AuthOp], cache_entries: usize) -> Result<Received, String> {
    let mut world = World::new(cache_entries)?;
    for (step, op) in ops.iter().enumerate() {
        world
            .apply(op)
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
    }
    Ok(world
        .conns
        .into_iter()
        .map(|c| (c.bytes, c.closed))
        .collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn token() -> impl Strategy<Value = SimToken> {
        prop_oneof![
            1 => Just(SimToken::None),
            2 => (any::<u8>(), any::<u8>())
                .prop_map(|(patterns, ttl_secs)| SimToken::Valid { patterns, ttl_secs }),
            1 => any::<u8>().prop_map(|patterns| SimToken::Expired { patterns }),
            1 => any::<u8>().prop_map(|patterns| SimToken::WrongKey { patterns }),
            1 => any::<u8>().prop_map(SimToken::Garbage),
            3 => any::<u8>().prop_map(SimToken::Again),
        ]
    }

    fn via() -> impl Strategy<Value = Via> {
        prop_oneof![Just(Via::Header), Just(Via::Cookie), Just(Via::Query)]
    }

    fn op() -> impl Strategy<Value = AuthOp> {
        prop_oneof![
            3 => (0u8..16, token(), via(), any::<bool>())
                .prop_map(|(topics, token, via, resume)| AuthOp::Subscribe { topics, token, via, resume }),
            4 => (0u8..4).prop_map(|topic| AuthOp::Publish { topic }),
            2 => any::<u8>().prop_map(|secs| AuthOp::Advance { secs }),
            1 => (any::<u8>(), any::<u8>())
                .prop_map(|(conn, window)| AuthOp::Squeeze { conn, window }),
            1 => Just(AuthOp::Drain),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn no_client_sees_a_topic_its_token_does_not_allow(ops in prop::collection::vec(op(), 1..40)) {
            if let Err(e) = run(&ops) {
                prop_assert!(false, "{}", e);
            }
        }

        /// The cache of verified tokens changes no decision: off, tiny (evicting all the
        /// time) or large, every client gets the same bytes and the same close.
        #[test]
        fn the_token_cache_changes_nothing_a_client_sees(ops in prop::collection::vec(op(), 1..40)) {
            let off = run_with_cache(&ops, 0);
            prop_assert!(off.is_ok(), "{:?}", off);
            for entries in [1, 3, 10_000] {
                let on = run_with_cache(&ops, entries);
                prop_assert!(on.is_ok(), "{:?}", on);
                prop_assert_eq!(&on, &off, "with {} entries", entries);
            }
        }
    }

    #[test]
    fn a_scenario_with_every_kind_of_token() {
        let mut ops = Vec::new();
        for (i, token) in [
            SimToken::None,
            SimToken::Valid {
                patterns: 0b0001,
                ttl_secs: 3,
            },
            SimToken::Valid {
                patterns: 0b0100,
                ttl_secs: 30,
            },
            SimToken::Expired { patterns: 0b1111 },
            SimToken::WrongKey { patterns: 0b1111 },
            SimToken::Garbage(1),
            SimToken::Again(1),
            SimToken::Again(4),
        ]
        .into_iter()
        .enumerate()
        {
            for (topics, via) in [
                (0b0010, Via::Header),
                (0b1001, Via::Cookie),
                (0b0110, Via::Query),
            ] {
                ops.push(AuthOp::Subscribe {
                    topics,
                    token: token.clone(),
                    via,
                    resume: i % 2 == 1,
                });
            }
            ops.push(AuthOp::Publish { topic: i as u8 });
        }
        ops.push(AuthOp::Squeeze {
            conn: 4,
            window: 10,
        });
        for t in 0..4 {
            ops.push(AuthOp::Publish { topic: t });
        }
        ops.push(AuthOp::Advance { secs: 9 });
        // Reconnects with the tokens held: the 3 s ones expired (refused although cached),
        // the 30 s ones still valid.
        for n in 0..6 {
            ops.push(AuthOp::Subscribe {
                topics: 0b0110,
                token: SimToken::Again(n),
                via: Via::Header,
                resume: false,
            });
        }
        ops.push(AuthOp::Drain);
        ops.push(AuthOp::Advance { secs: 19 });
        ops.push(AuthOp::Advance { secs: 19 });
        // Every token again, now past its exp: refused although cached.
        for n in 0..6 {
            ops.push(AuthOp::Subscribe {
                topics: 0b0110,
                token: SimToken::Again(n),
                via: Via::Header,
                resume: false,
            });
        }
        let off = run_with_cache(&ops, 0).expect("the scenario holds without the cache");
        let on = run_with_cache(&ops, 10_000).expect("the scenario holds with the cache");
        assert_eq!(on, off);
    }

    /// The oracle can fail: a client whose token allows `user/1` must not be expected to
    /// see `user/2`.
    #[test]
    fn the_oracle_matches_patterns_independently() {
        assert!(covers(&["shop/1/*"], "shop/1/a"));
        assert!(!covers(&["user/1"], "user/2"));
        assert!(covers(&["*"], "user/2"));
    }
}
