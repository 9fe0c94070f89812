//! Private topics: who may subscribe to and publish on which topic, decided from a signed token
//! (JWT) the request carries. Everything here is pure: time comes in as unix seconds, requests
//! as header and query pairs, so the decisions are unit-tested, fuzzed (`fuzz_targets/auth.rs`)
//! and usable by the simulator exactly as by the server.
//!
//! - [`extract`]: finding the token (`Authorization: Bearer`, then the cookie, then
//!   `access_token`); [`BearerToken`] never shows itself in `Debug`.
//! - [`verify`]: signature (HS256/RS256/ES256 via `jsonwebtoken`), `exp`/`nbf` with
//!   [`LEEWAY_SECS`], `aud`/`iss`, the `sse` claim.
//! - [`topics`]: the topic patterns of the claims and of `--public-topics`.
//! - [`decide`]: the decisions, [`AuthConfig::authorize_subscribe`] and
//!   [`AuthConfig::authorize_publish`], giving a [`Grant`] or an [`AuthError`] (401/403).
//! - [`cache`]: [`TokenCache`], verified tokens by SHA-256 of the token, bounded, checked
//!   against `exp`/`nbf` on every hit; the `*_cached` decisions go through it.
//! - [`cors`]: `--allow-origin`, the CORS headers of answers and of `OPTIONS` preflights.
//!
//! # How the server uses it
//!
//! - **Configuration** ([`args`]): the `--jwt-*`, `--public-topics`, `--allow-origin` flags are
//!   flattened into the command line; [`args::AuthArgs::build`] reads the key file and builds
//!   the one [`AuthConfig`] (with `--publish-token`), kept in the core's `Config` behind an
//!   `Arc`. Any [`ConfigError`] exits with status 2 and its message.
//! - **Request head**: `http/request.rs` keeps `Authorization`, every `Cookie` header (joined
//!   with `"; "`), `Origin` and `Access-Control-Request-Method`; `core/access.rs` builds
//!   [`RequestParts`] from them and the query.
//! - **Time**: the core keeps a wall-clock anchor (given at `Core::new`, refreshed by every
//!   `handle_timeout`) and derives unix time as `anchor + (now − anchor instant)`; the
//!   simulator controls both, so expiry is deterministic under simulation.
//! - **The cache**: each core holds one [`TokenCache`] ([`AuthConfig::token_cache`],
//!   `--jwt-cache`) and decides with it; a miss whose signature is costly
//!   ([`AuthConfig::checks_off_reactor`]: RS256/ES256 with `--jwt-verify-queue` above 0) stops
//!   the decision ([`AuthConfig::subscribe_with`] takes the check as a closure) and is checked
//!   on the driver's verifier thread, then decided again with the answer (`core/checks.rs`).
//! - **Streams**: after the topics are checked (400s first) and before anything is written or
//!   counted, [`AuthConfig::authorize_subscribe`]; a refusal is answered with its status, body
//!   and headers. A [`Grant`] is kept by the client only when a token was used (a public-only
//!   stream keeps nothing); with an expiry, a `TokenExpiry` timer closes the stream at
//!   `exp + leeway` after a final `event: reset` / `{"reason":"token-expired"}` whose id is
//!   that of the last event sent (the frame in flight is finished first), close reason
//!   `token-expired`.
//! - **Resume** places cursors only in the requested topics, each of which passed the decision;
//!   the write path `debug_assert!`s [`Grant::may_see`] for every frame offered, and
//!   `sim/auth.rs` checks "no client ever receives an event of a topic its token does not
//!   allow" against an independent oracle.
//! - **Publish**: [`AuthConfig::authorize_publish`] after the topic is read; `/clients` from
//!   afar needs [`AuthConfig::has_shared_token`] once a publish token or a key is configured.
//! - **CORS**: under `--allow-origin`, each request's answers (stream head, complete answers,
//!   errors) carry [`CorsPolicy::response_headers`] for its `Origin` in place of
//!   `Access-Control-Allow-Origin: *`; `OPTIONS /`, `/events`, `/publish` answer `204` with
//!   [`CorsPolicy::preflight_headers`].
//! - **Logs and `/clients`** never show a request's headers or query.

pub mod args;
pub mod cache;
pub mod cors;
pub mod decide;
pub mod extract;
pub mod topics;
pub mod verify;

use std::fmt;
use std::sync::Arc;

pub use cache::{CacheStats, TokenCache};
pub use cors::{CorsPolicy, Endpoint};
pub use decide::{AuthError, Grant, Publisher, RequestParts};
pub use extract::{BearerToken, TokenSource};
pub use topics::{TopicPattern, TopicPatterns};
pub use verify::{InvalidToken, LEEWAY_SECS, VerifiedClaims, Verifier};

/// The authorization settings as given on the command line, before validation. Its `Debug`
/// redacts the secret and the publish token.
#[derive(Clone, Default)]
pub struct AuthOptions {
    /// `--jwt-secret`: the HS256 key (at least 32 bytes).
    pub jwt_secret: Option<String>,
    /// The contents of `--jwt-public-key FILE`: an RSA (RS256) or EC P-256 (ES256) public key.
    pub jwt_public_key_pem: Option<Vec<u8>>,
    /// `--jwt-audience`: tokens must carry it in `aud`.
    pub jwt_audience: Option<String>,
    /// `--jwt-issuer`: tokens must carry it as `iss`.
    pub jwt_issuer: Option<String>,
    /// `--public-topics`: `None` when the flag is absent (only the default stream is public),
    /// `Some(vec![])` when given without patterns (nothing is public).
    pub public_topics: Option<Vec<String>>,
    /// `--jwt-cookie` (default `sse_token`).
    pub jwt_cookie: Option<String>,
    /// `--allow-origin` (default: `*`).
    pub allow_origins: Vec<String>,
    /// `--publish-token`: the shared token that may publish on every topic.
    pub publish_token: Option<String>,
    /// `--jwt-cache`: most verified tokens kept; `None`: [`cache::DEFAULT_CACHE_ENTRIES`],
    /// 0: none.
    pub jwt_cache: Option<usize>,
    /// `--jwt-verify-queue`: most RS256/ES256 checks waiting for the verifier thread; `None`:
    /// [`DEFAULT_VERIFY_QUEUE`], 0: every signature is checked on the reactor.
    pub jwt_verify_queue: Option<usize>,
    /// HS256 checks go to the verifier thread too (tests and measurements: an HS256 check
    /// costs less than the trip, so the server keeps it on the reactor).
    pub hs256_off_reactor: bool,
}

impl fmt::Debug for AuthOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthOptions")
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field(
                "jwt_public_key_pem",
                &self.jwt_public_key_pem.as_ref().map(Vec::len),
            )
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("public_topics", &self.public_topics)
            .field("jwt_cookie", &self.jwt_cookie)
            .field("allow_origins", &self.allow_origins)
            .field("publish_token", &redacted(&self.publish_token))
            .field("jwt_cache", &self.jwt_cache)
            .field("jwt_verify_queue", &self.jwt_verify_queue)
            .field("hs256_off_reactor", &self.hs256_off_reactor)
            .finish()
    }
}

/// Default of `--jwt-verify-queue`: room for a storm of a thousand first-sight reconnects at
/// once (an ES256 check takes about half a millisecond: a full queue is half a second of work).
pub const DEFAULT_VERIFY_QUEUE: usize = 1024;

/// Largest `--jwt-verify-queue`.
pub const MAX_VERIFY_QUEUE: usize = 65_536;

/// A setting that cannot work; the message names the flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The validated authorization settings: keys, public topics, cookie name, CORS policy and the
/// shared publish token. Its `Debug` shows no secret.
pub struct AuthConfig {
    verifier: Verifier,
    public_topics: Arc<TopicPatterns>,
    cookie_name: String,
    cors: CorsPolicy,
    publish_token: Option<String>,
    /// `--jwt-cache`: the capacity of each core's [`TokenCache`].
    cache_entries: usize,
    /// `--jwt-verify-queue` (0: no verifier thread).
    verify_queue: usize,
    /// HS256 checks go to the verifier thread too.
    hs256_off_reactor: bool,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("verifier", &self.verifier)
            .field("public_topics", &self.public_topics)
            .field("cookie_name", &self.cookie_name)
            .field("cors", &self.cors)
            .field(
                "publish_token",
                &self.publish_token.as_ref().map(|_| "<redacted>"),
            )
            .field("cache_entries", &self.cache_entries)
            .field("verify_queue", &self.verify_queue)
            .field("hs256_off_reactor", &self.hs256_off_reactor)
            .finish()
    }
}

impl Default for AuthConfig {
    /// No keys, `*` CORS, no publish token: every topic public, anyone may publish.
    fn default() -> AuthConfig {
        AuthConfig {
            verifier: Verifier::none(),
            public_topics: Arc::new(TopicPatterns::parse(&[""])),
            cookie_name: extract::DEFAULT_COOKIE.to_owned(),
            cors: CorsPolicy::AnyOrigin,
            publish_token: None,
            cache_entries: cache::DEFAULT_CACHE_ENTRIES,
            verify_queue: DEFAULT_VERIFY_QUEUE,
            hs256_off_reactor: false,
        }
    }
}

impl AuthConfig {
    /// Validates the options: the secret's length, the PEM key (type, curve, not a private
    /// key), the cookie name (an RFC 6265 token), the origins; `--public-topics`,
    /// `--jwt-audience` and `--jwt-issuer` need a key.
    pub fn new(options: AuthOptions) -> Result<AuthConfig, ConfigError> {
        let verifier = Verifier::new(
            options.jwt_secret.as_deref().map(str::as_bytes),
            options.jwt_public_key_pem.as_deref(),
            options.jwt_audience.as_deref(),
            options.jwt_issuer.as_deref(),
        )
        .map_err(|e| ConfigError(e.to_string()))?;
        if !verifier.is_configured() {
            for (given, flag) in [
                (options.public_topics.is_some(), "--public-topics"),
                (options.jwt_audience.is_some(), "--jwt-audience"),
                (options.jwt_issuer.is_some(), "--jwt-issuer"),
                (options.jwt_cookie.is_some(), "--jwt-cookie"),
            ] {
                if given {
                    return Err(ConfigError(format!(
                        "{flag} needs --jwt-secret or --jwt-public-key"
                    )));
                }
            }
        }
        for (value, flag) in [
            (&options.jwt_audience, "--jwt-audience"),
            (&options.jwt_issuer, "--jwt-issuer"),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(ConfigError(format!("{flag} must not be empty")));
            }
        }
        let cookie_name = options
            .jwt_cookie
            .unwrap_or_else(|| extract::DEFAULT_COOKIE.to_owned());
        if !is_cookie_name(&cookie_name) {
            return Err(ConfigError(format!(
                "--jwt-cookie {cookie_name:?} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)"
            )));
        }
        let public_topics = match options.public_topics {
            None => TopicPatterns::parse(&[""]),
            Some(patterns) => TopicPatterns::parse(&patterns),
        };
        let cors = CorsPolicy::new(&options.allow_origins).map_err(|e| ConfigError(e.0))?;
        let cache_entries = options.jwt_cache.unwrap_or(cache::DEFAULT_CACHE_ENTRIES);
        if cache_entries > cache::MAX_CACHE_ENTRIES {
            return Err(ConfigError(format!(
                "--jwt-cache {cache_entries} is more than {} entries",
                cache::MAX_CACHE_ENTRIES
            )));
        }
        let verify_queue = options.jwt_verify_queue.unwrap_or(DEFAULT_VERIFY_QUEUE);
        if verify_queue > MAX_VERIFY_QUEUE {
            return Err(ConfigError(format!(
                "--jwt-verify-queue {verify_queue} is more than {MAX_VERIFY_QUEUE}"
            )));
        }
        Ok(AuthConfig {
            verifier,
            public_topics: Arc::new(public_topics),
            cookie_name,
            cors,
            publish_token: options.publish_token,
            cache_entries,
            verify_queue,
            hs256_off_reactor: options.hs256_off_reactor,
        })
    }

    /// Whether a JWT key is configured: only then are topics private.
    pub fn tokens_enabled(&self) -> bool {
        self.verifier.is_configured()
    }

    /// An empty cache of verified tokens for these keys, of `--jwt-cache` entries (none while
    /// no key is configured: no token is ever verified then). One per core.
    pub fn token_cache(&self) -> TokenCache {
        TokenCache::new(if self.tokens_enabled() {
            self.cache_entries
        } else {
            0
        })
    }

    /// `--jwt-verify-queue`: most checks waiting for the verifier thread (0: no thread, every
    /// signature is checked where the decision is made).
    pub fn verify_queue(&self) -> usize {
        if self.tokens_enabled() {
            self.verify_queue
        } else {
            0
        }
    }

    /// Whether `token`'s signature is checked on the verifier thread rather than where the
    /// decision is made: RS256 and ES256 (hundreds of microseconds each) while
    /// [`AuthConfig::verify_queue`] is above 0. HS256 stays where it is (a check costs less
    /// than the trip to the thread and back; `docs/design.md`), as do tokens refused without
    /// a signature check (malformed, an algorithm without a key).
    pub fn checks_off_reactor(&self, token: &BearerToken) -> bool {
        self.verify_queue() > 0 && self.verifier.is_costly(token, self.hs256_off_reactor)
    }

    /// The CORS policy (`--allow-origin`).
    pub fn cors(&self) -> &CorsPolicy {
        &self.cors
    }

    /// Whether `topic` is public (true for every topic while no key is configured).
    pub fn is_public(&self, topic: &str) -> bool {
        !self.tokens_enabled() || self.public_topics.matches(topic)
    }
}

/// An RFC 6265 cookie name: a non-empty RFC 7230 token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::verify::tests::{EC_PRIVATE, EC_PUBLIC, SECRET};

    fn with_secret() -> AuthOptions {
        AuthOptions {
            jwt_secret: Some(String::from_utf8(SECRET.to_vec()).expect("ascii")),
            ..AuthOptions::default()
        }
    }

    fn err(options: AuthOptions) -> String {
        AuthConfig::new(options).expect_err("must be refused").0
    }

    #[test]
    fn default_is_open() {
        let c = AuthConfig::default();
        assert!(!c.tokens_enabled());
        assert!(c.is_public("anything"));
        assert_eq!(c.cors(), &CorsPolicy::AnyOrigin);
    }

    #[test]
    fn only_the_default_stream_is_public_unless_configured() {
        let c = AuthConfig::new(with_secret()).expect("valid");
        assert!(c.tokens_enabled());
        assert!(c.is_public(""));
        assert!(!c.is_public("user/42"));
        let none = AuthConfig::new(AuthOptions {
            public_topics: Some(vec![]),
            ..with_secret()
        })
        .expect("valid");
        assert!(!none.is_public(""));
        let news = AuthConfig::new(AuthOptions {
            public_topics: Some(vec!["news/*".into()]),
            ..with_secret()
        })
        .expect("valid");
        assert!(news.is_public("news/today"));
        assert!(!news.is_public(""), "a list replaces the default");
    }

    #[test]
    fn flags_that_need_a_key_say_so() {
        for options in [
            AuthOptions {
                public_topics: Some(vec!["a".into()]),
                ..AuthOptions::default()
            },
            AuthOptions {
                jwt_audience: Some("a".into()),
                ..AuthOptions::default()
            },
            AuthOptions {
                jwt_issuer: Some("a".into()),
                ..AuthOptions::default()
            },
            AuthOptions {
                jwt_cookie: Some("a".into()),
                ..AuthOptions::default()
            },
        ] {
            assert!(err(options).contains("needs --jwt-secret or --jwt-public-key"));
        }
    }

    #[test]
    fn bad_settings_are_refused_clearly() {
        assert!(
            err(AuthOptions {
                jwt_secret: Some("short".into()),
                ..AuthOptions::default()
            })
            .contains("at least 32 bytes")
        );
        assert!(
            err(AuthOptions {
                jwt_public_key_pem: Some(EC_PRIVATE.to_vec()),
                ..AuthOptions::default()
            })
            .contains("private key")
        );
        for cookie in ["", "a b", "a;b", "a=b", "é"] {
            assert!(
                err(AuthOptions {
                    jwt_cookie: Some(cookie.into()),
                    ..with_secret()
                })
                .contains("--jwt-cookie"),
                "{cookie:?}"
            );
        }
        assert!(
            err(AuthOptions {
                jwt_audience: Some(String::new()),
                ..with_secret()
            })
            .contains("--jwt-audience must not be empty")
        );
        assert!(
            err(AuthOptions {
                allow_origins: vec!["example.com".into()],
                ..AuthOptions::default()
            })
            .contains("--allow-origin")
        );
        let ok = AuthConfig::new(AuthOptions {
            jwt_public_key_pem: Some(EC_PUBLIC.to_vec()),
            jwt_cookie: Some("__Host-sse".into()),
            allow_origins: vec!["https://app.example.com".into()],
            ..AuthOptions::default()
        })
        .expect("valid");
        assert!(ok.cors().allows_credentials());
    }

    #[test]
    fn debug_redacts_secrets() {
        let options = AuthOptions {
            publish_token: Some("pub-secret-value".into()),
            ..with_secret()
        };
        let shown = format!("{options:?}");
        let config = format!("{:?}", AuthConfig::new(options).expect("valid"));
        for s in [shown, config] {
            assert!(!s.contains("pub-secret-value"), "{s}");
            assert!(!s.contains("a test secret"), "{s}");
            assert!(s.contains("<redacted>"), "{s}");
        }
    }
}
