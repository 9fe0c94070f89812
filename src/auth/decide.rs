//! The decisions: may this request subscribe to these topics, may it publish on this topic.
//! Pure functions of (request parts, configuration, topics, now in unix seconds).

use std::sync::Arc;

use super::AuthConfig;
use super::cache::TokenCache;
use super::extract::{self, BearerToken, MalformedToken, Sources, TokenSource};
use super::topics::TopicPatterns;
use super::verify::{InvalidToken, VerifiedClaims};

/// What the decisions read from a request: its headers (name, raw value; names compare
/// case-insensitively) and its percent-decoded query pairs. Only `Authorization`, `Cookie` and
/// `access_token` are looked at.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestParts<'a> {
    pub headers: &'a [(&'a str, &'a [u8])],
    pub query: &'a [(&'a str, &'a str)],
}

/// Why a request is refused: a 401 (no usable token) or a 403 (a valid token that does not
/// cover a topic, or a wrong shared publish token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token in any source, while one is needed.
    Missing,
    /// A token was sent and is not valid (see the reason).
    Invalid(InvalidToken),
    /// The token is valid but does not cover `topic` (the first such topic of the request).
    Forbidden { topic: String },
    /// Without JWT keys: a bearer token that is not `--publish-token`.
    WrongSharedToken,
}

impl AuthError {
    /// The response status: 401 or 403.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Invalid(_) => 401,
            AuthError::Forbidden { .. } | AuthError::WrongSharedToken => 403,
        }
    }

    /// Extra header lines for the error response (RFC 6750 §3): `WWW-Authenticate: Bearer` on
    /// a 401, with `error="invalid_token"` when a token was sent, and
    /// `error="insufficient_scope"` on a 403 for a topic. The topic is never in a header.
    pub fn headers(&self) -> Vec<String> {
        match self {
            AuthError::Missing => vec!["WWW-Authenticate: Bearer".to_owned()],
            AuthError::Invalid(why) => vec![format!(
                "WWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"{}\"",
                why.description()
            )],
            AuthError::Forbidden { .. } => {
                vec!["WWW-Authenticate: Bearer error=\"insufficient_scope\"".to_owned()]
            }
            AuthError::WrongSharedToken => Vec::new(),
        }
    }

    /// The response body (plain text). A 403 names the topic, quoted and escaped.
    pub fn body(&self) -> String {
        match self {
            AuthError::Missing => "a token is required".to_owned(),
            AuthError::Invalid(why) => why.description().to_owned(),
            AuthError::Forbidden { topic } if topic.is_empty() => {
                "the token does not allow the default stream".to_owned()
            }
            AuthError::Forbidden { topic } => {
                format!("the token does not allow topic {:?}", topic)
            }
            AuthError::WrongSharedToken => "wrong token".to_owned(),
        }
    }
}

/// What a subscriber may see, kept by the client for as long as its stream is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// No keys configured: every topic.
    everything: bool,
    /// `--public-topics`, shared by every grant.
    public: Arc<TopicPatterns>,
    /// The token's `sse.subscribe`; empty without a token.
    token_topics: TopicPatterns,
    expires_at: Option<u64>,
    source: Option<TokenSource>,
    subject: Option<String>,
}

impl Grant {
    /// May this client see events of `topic`? Exactly when a public pattern or one of its
    /// token's subscribe patterns covers it (always, while no key is configured).
    pub fn may_see(&self, topic: &str) -> bool {
        self.everything || self.public.matches(topic) || self.token_topics.matches(topic)
    }

    /// The unix second at which the stream must end (`exp` + leeway); `None`: never.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    /// Seconds from `now` (unix) until [`Grant::expires_at`], 0 if already past; `None`: never.
    pub fn secs_until_expiry(&self, now: u64) -> Option<u64> {
        self.expires_at.map(|at| at.saturating_sub(now))
    }

    /// Where the token came from; `None` when none was needed.
    pub fn source(&self) -> Option<TokenSource> {
        self.source
    }

    /// The token's `sub`, for diagnostics (not a secret).
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }
}

/// Who may publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publisher {
    /// Neither keys nor `--publish-token` are configured: anyone.
    Anonymous,
    /// The bearer of `--publish-token` (every topic).
    SharedToken,
    /// A token whose `sse.publish` covers the topic.
    Token { subject: Option<String> },
}

impl AuthConfig {
    /// May this request subscribe to `topics` (the default stream is `""`)?
    ///
    /// Without keys, or when every topic is public, the token is not even looked at (an
    /// expired cookie does not lock a browser out of public streams) and the grant never
    /// expires. Otherwise the token (header, cookie, query) must be valid and cover each
    /// requested non-public topic: 401 without a valid token, 403 naming the first topic it
    /// does not cover.
    pub fn authorize_subscribe(
        &self,
        req: &RequestParts<'_>,
        topics: &[&str],
        now: u64,
    ) -> Result<Grant, AuthError> {
        self.authorize_subscribe_cached(req, topics, now, &mut TokenCache::disabled())
    }

    /// [`AuthConfig::authorize_subscribe`] with the token's verification looked up in (and a
    /// success kept in) `cache`; the answer is the same, the topics are checked every time.
    pub fn authorize_subscribe_cached(
        &self,
        req: &RequestParts<'_>,
        topics: &[&str],
        now: u64,
        cache: &mut TokenCache,
    ) -> Result<Grant, AuthError> {
        self.subscribe_with(req, topics, |t| self.verify(t, now, cache))
    }

    /// [`AuthConfig::authorize_subscribe`] with the token's verification left to `check`
    /// (called at most once, only when a token is needed): the decision's other steps are
    /// the same whatever `check` does, and an `E` it returns ends the decision unchanged (the
    /// core stops there to have the signature checked off the reactor).
    pub fn subscribe_with<E: From<AuthError>>(
        &self,
        req: &RequestParts<'_>,
        topics: &[&str],
        check: impl FnOnce(&BearerToken) -> Result<VerifiedClaims, E>,
    ) -> Result<Grant, E> {
        let mut grant = Grant {
            everything: !self.tokens_enabled(),
            public: Arc::clone(&self.public_topics),
            token_topics: TopicPatterns::none(),
            expires_at: None,
            source: None,
            subject: None,
        };
        if topics.iter().all(|t| grant.may_see(t)) {
            return Ok(grant);
        }
        let (token, source) = self
            .find_token(req, Sources::All)?
            .ok_or(AuthError::Missing)?;
        let claims = check(&token)?;
        if let Some(topic) = topics
            .iter()
            .find(|t| !self.public_topics.matches(t) && !claims.subscribe.matches(t))
        {
            return Err(AuthError::Forbidden {
                topic: (*topic).to_owned(),
            }
            .into());
        }
        grant.token_topics = claims.subscribe;
        grant.expires_at = claims.expires_at;
        grant.source = Some(source);
        grant.subject = claims.subject;
        Ok(grant)
    }

    /// May this request publish on `topic`?
    ///
    /// The token comes from the `Authorization` header or `access_token`, never from the
    /// cookie (a cross-site form would carry it). `--publish-token` (compared in constant time)
    /// allows every topic; otherwise, with keys, a valid token whose `sse.publish` covers the
    /// topic. With neither configured, anyone may publish. Without keys, the shared token keeps
    /// its old answers: 401 when missing, 403 when wrong.
    pub fn authorize_publish(
        &self,
        req: &RequestParts<'_>,
        topic: &str,
        now: u64,
    ) -> Result<Publisher, AuthError> {
        self.authorize_publish_cached(req, topic, now, &mut TokenCache::disabled())
    }

    /// [`AuthConfig::authorize_publish`] with the token's verification looked up in (and a
    /// success kept in) `cache`; the answer is the same, the topic is checked every time.
    pub fn authorize_publish_cached(
        &self,
        req: &RequestParts<'_>,
        topic: &str,
        now: u64,
        cache: &mut TokenCache,
    ) -> Result<Publisher, AuthError> {
        self.publish_with(req, topic, |t| self.verify(t, now, cache))
    }

    /// [`AuthConfig::authorize_publish`] with the token's verification left to `check`, as
    /// [`AuthConfig::subscribe_with`] does (the shared publish token is compared first and
    /// never needs `check`).
    pub fn publish_with<E: From<AuthError>>(
        &self,
        req: &RequestParts<'_>,
        topic: &str,
        check: impl FnOnce(&BearerToken) -> Result<VerifiedClaims, E>,
    ) -> Result<Publisher, E> {
        if !self.tokens_enabled() && self.publish_token.is_none() {
            return Ok(Publisher::Anonymous);
        }
        let found = match self.find_token(req, Sources::NoCookie) {
            Err(_) if !self.tokens_enabled() => return Err(AuthError::WrongSharedToken.into()),
            other => other?,
        };
        let (token, _) = found.ok_or(AuthError::Missing)?;
        if let Some(shared) = &self.publish_token
            && constant_time_eq(token.expose().as_bytes(), shared.as_bytes())
        {
            return Ok(Publisher::SharedToken);
        }
        if !self.tokens_enabled() {
            return Err(AuthError::WrongSharedToken.into());
        }
        let claims = check(&token)?;
        if !claims.publish.matches(topic) {
            return Err(AuthError::Forbidden {
                topic: topic.to_owned(),
            }
            .into());
        }
        Ok(Publisher::Token {
            subject: claims.subject,
        })
    }

    /// Whether the request's `Authorization: Bearer` is `--publish-token` (for `/clients` from
    /// a non-loopback peer).
    pub fn has_shared_token(&self, req: &RequestParts<'_>) -> bool {
        let Some(shared) = &self.publish_token else {
            return false;
        };
        matches!(
            extract::bearer_from_headers(req.headers),
            Ok(Some(t)) if constant_time_eq(t.expose().as_bytes(), shared.as_bytes())
        )
    }

    fn find_token(
        &self,
        req: &RequestParts<'_>,
        sources: Sources,
    ) -> Result<Option<(BearerToken, TokenSource)>, AuthError> {
        extract::find_token(req.headers, req.query, &self.cookie_name, sources)
            .map_err(|MalformedToken| AuthError::Invalid(InvalidToken::Malformed))
    }

    /// Verifies one token against the configured keys at `now` (unix seconds).
    pub fn verify_token(
        &self,
        token: &BearerToken,
        now: u64,
    ) -> Result<VerifiedClaims, InvalidToken> {
        self.verifier.verify(token, now)
    }

    fn verify(
        &self,
        token: &BearerToken,
        now: u64,
        cache: &mut TokenCache,
    ) -> Result<VerifiedClaims, AuthError> {
        cache
            .verify(token, now, |t| self.verifier.verify(t, now))
            .map_err(AuthError::Invalid)
    }
}

/// Compares in time that depends only on the lengths, not on where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
