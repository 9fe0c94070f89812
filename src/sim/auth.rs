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
//! every client the same bytes and the same close: the cache changes no decision. Run with
//! the token checks handed out of the core ([`run_with`], [`Checks`]) and answered at once,
//! it must give the same bytes as with checks made inline; answered late, out of order or
//! after the client hung up ([`AuthOp::Answer`], [`AuthOp::Hangup`]), the oracle still holds,
//! with each expectation taken at the time the check is answered.
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
use crate::core::{ClientId, CloseReason, Core, VerifyRequest};
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
    /// The `n % waiting`-th token check still waiting is answered (checks held: late and in
    /// any order; nothing when none waits).
    Answer { n: u8 },
    /// Client `conn` hangs up (its check, if one waits, is answered after it left).
    Hangup { conn: u8 },
}

/// Where the simulated core's token checks are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// On the core's thread, as the server does for HS256 (no check leaves the core).
    Inline,
    /// Handed out (as RS256/ES256 checks are) and answered at once.
    AtOnce,
    /// Handed out and held until an [`AuthOp::Answer`] (or the end of the run) answers them.
    Held,
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
    /// When its token stops being valid (`exp` + leeway), if it was valid when sent: a check
    /// answered from then on refuses it (401).
    token_ends: Option<u64>,
    /// The client hung up ([`AuthOp::Hangup`]).
    hung_up: bool,
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
    checks: Checks,
    /// Checks handed out and not answered yet ([`Checks::Held`]).
    waiting: Vec<VerifyRequest>,
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

    /// Answered at once or held, as the run's [`Checks`] say; none may leave an inline core.
    fn verify(&mut self, request: VerifyRequest) -> Result<(), String> {
        match self.checks {
            Checks::Inline => Err(format!("an inline core handed out a check: {request:?}")),
            Checks::AtOnce => {
                self.answer(&request);
                Ok(())
            }
            Checks::Held => {
                self.waiting.push(request);
                Ok(())
            }
        }
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
    fn new(cache_entries: usize, checks: Checks) -> Result<World, String> {
        let auth = AuthConfig::new(AuthOptions {
            jwt_secret: Some(SECRET.into()),
            jwt_cache: Some(cache_entries),
            hs256_off_reactor: checks != Checks::Inline,
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
            checks,
            waiting: Vec::new(),
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
            AuthOp::Answer { n } => {
                if !self.waiting.is_empty() {
                    let request = self.waiting.remove(usize::from(*n) % self.waiting.len());
                    self.answer(&request);
                }
            }
            AuthOp::Hangup { conn } => {
                let n = self.conns.len();
                if n > 0 {
                    let c = &mut self.conns[usize::from(*conn) % n];
                    if c.closed.is_none() && !c.hung_up {
                        c.hung_up = true;
                        let id = c.id;
                        self.core.handle_read_closed(id);
                    }
                }
            }
        }
        self.drain(usize::MAX)?;
        self.check()
    }

    /// Answers a check handed out, at the current time: the oracle's expectation of the
    /// connection that waits for it follows the answer's time (a token that expired since it
    /// was sent is refused).
    fn answer(&mut self, request: &VerifyRequest) {
        let now = self.unix_now();
        if let Some(c) = self
            .conns
            .iter_mut()
            .find(|c| c.id == request.client && c.closed.is_none())
            && c.token_ends.is_some_and(|end| now >= end)
            && c.status != 401
        {
            (c.status, c.allowed, c.ends_at) = (401, Vec::new(), None);
        }
        let reply = request.check_with(&self.core.config().auth);
        self.core.handle_verified(reply, self.now);
    }

    /// Answers every check still waiting, in order (the end of a run).
    fn answer_all(&mut self) -> Result<(), String> {
        for request in std::mem::take(&mut self.waiting) {
            self.answer(&request);
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
        let token_ends = valid.as_ref().map(|(_, exp)| exp + LEEWAY_SECS);
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
            token_ends,
            hung_up: false,
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
                && !c.hung_up
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
/// what each client received; token checks are made on the core's thread.
pub fn run_with_cache(ops: &[AuthOp], cache_entries: usize) -> Result<Received, String> {
    run_with(ops, cache_entries, Checks::Inline)
}

/// [`run_with_cache`] with the token checks made as `checks` says; checks still waiting at
/// the end are answered then (and checked).
pub fn run_with(ops: &[AuthOp], cache_entries: usize, checks: Checks) -> Result<Received, String> {
    let mut world = World::new(cache_entries, checks)?;
    for (step, op) in ops.iter().enumerate() {
        world
            .apply(op)
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
    }
    world
        .answer_all()
        .map_err(|e| format!("answering the checks left: {e}"))?;
    Ok(world
        .conns
        .into_iter()
        .map(|c| (c.bytes, c.closed))
        .collect())
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
