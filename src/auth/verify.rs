//! Verifying a token: its signature with `jsonwebtoken` against the configured keys, then its
//! time window and its `sse` claim.
//!
//! Only the algorithms that have a key are accepted: HS256 with `--jwt-secret`, RS256 or ES256
//! with `--jwt-public-key` (RSA or EC P-256). The algorithm named in the token's header picks
//! the key, and the crate checks again that key and algorithm belong together, so `alg: none`
//! and the HS256-signed-with-the-RSA-public-key confusion are refused.
//!
//! Time is a parameter (unix seconds) and the crate's own clock checks are off: `exp` and `nbf`
//! are checked here with [`LEEWAY_SECS`] of tolerance for clock skew, so results depend only on
//! the arguments.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::extract::BearerToken;
use super::topics::TopicPatterns;

/// Clock-skew tolerance for `exp` and `nbf`, in seconds: a token is accepted from `nbf − 5 s`
/// until `exp + 5 s` (exclusive), and a stream it opened closes at `exp + 5 s`.
pub const LEEWAY_SECS: u64 = 5;

/// Shortest HS256 secret accepted: RFC 7518 §3.2 requires a key at least as long as the hash.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a token was refused. Every variant is a 401 with `error="invalid_token"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidToken {
    /// Not three base64url parts with a JSON header and payload.
    Malformed,
    /// The header's `alg` has no configured key (`none`, HS256 without a secret, …).
    AlgorithmNotAccepted,
    /// The signature does not verify with the configured key.
    BadSignature,
    /// Now is at or past `exp` + leeway.
    Expired,
    /// Now is before `nbf` − leeway.
    NotYetValid,
    /// `aud` is missing while `--jwt-audience` is set, or names another audience, or is
    /// present while no audience is configured (RFC 7519 §4.1.3).
    WrongAudience,
    /// `iss` is missing or not `--jwt-issuer`.
    WrongIssuer,
    /// `exp`, `nbf` or `sse` have the wrong type.
    BadClaims,
}

impl InvalidToken {
    /// A short English description, safe for a response body and a log line (it never contains
    /// anything from the token).
    pub fn description(self) -> &'static str {
        match self {
            InvalidToken::Malformed => "malformed token",
            InvalidToken::AlgorithmNotAccepted => "token algorithm not accepted",
            InvalidToken::BadSignature => "bad token signature",
            InvalidToken::Expired => "token expired",
            InvalidToken::NotYetValid => "token not yet valid",
            InvalidToken::WrongAudience => "token audience not accepted",
            InvalidToken::WrongIssuer => "token issuer not accepted",
            InvalidToken::BadClaims => "token claims malformed",
        }
    }
}

/// The configured keys could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims {
    /// `sse.subscribe`.
    pub subscribe: TopicPatterns,
    /// `sse.publish`.
    pub publish: TopicPatterns,
    /// The unix second from which the token is refused (`exp` + leeway); `None` without `exp`.
    pub expires_at: Option<u64>,
    /// The first unix second at which the token is accepted (`nbf` − leeway); `None` without
    /// `nbf`.
    pub valid_from: Option<u64>,
    /// `sub`, when it is a string (for diagnostics; it is not a secret).
    pub subject: Option<String>,
}

/// One configured key with the validation rules that go with it.
struct KeyFor {
    key: DecodingKey,
    validation: Validation,
}

/// The configured keys and claim rules; verifies tokens.
pub struct Verifier {
    hs256: Option<KeyFor>,
    rs256: Option<KeyFor>,
    es256: Option<KeyFor>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithms())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds the verifier from an HS256 secret and/or a PEM public key (RSA → RS256, EC P-256
    /// → ES256), with an optional required audience and issuer. With neither key, verifies
    /// nothing ([`Verifier::is_configured`] is false).
    pub fn new(
        secret: Option<&[u8]>,
        public_key_pem: Option<&[u8]>,
        audience: Option<&str>,
        issuer: Option<&str>,
    ) -> Result<Verifier, KeyError> {
        let validation = |alg| validation_for(alg, audience, issuer);
        let hs256 = match secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                return Err(KeyError(format!(
                    "the JWT secret must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 §3.2), got {}",
                    s.len()
                )));
            }
            Some(s) => Some(KeyFor {
                key: DecodingKey::from_secret(s)
                    .map_err(|e| KeyError(format!("unusable JWT secret: {e}")))?,
                validation: validation(Algorithm::HS256),
            }),
            None => None,
        };
        let (mut rs256, mut es256) = (None, None);
        if let Some(pem) = public_key_pem {
            match public_key(pem)? {
                (Algorithm::RS256, key) => {
                    rs256 = Some(KeyFor {
                        key,
                        validation: validation(Algorithm::RS256),
                    })
                }
                (_, key) => {
                    es256 = Some(KeyFor {
                        key,
                        validation: validation(Algorithm::ES256),
                    })
                }
            }
        }
        Ok(Verifier {
            hs256,
            rs256,
            es256,
        })
    }

    /// A verifier with no key: every token is refused, and [`Verifier::is_configured`] is false.
    pub fn none() -> Verifier {
        Verifier {
            hs256: None,
            rs256: None,
            es256: None,
        }
    }

    /// Whether any key is configured (else every topic is public and tokens are ignored).
    pub fn is_configured(&self) -> bool {
        !self.algorithms().is_empty()
    }

    /// The accepted algorithms, e.g. `["HS256", "ES256"]`.
    pub fn algorithms(&self) -> Vec<&'static str> {
        let mut algs = Vec::new();
        for (present, name) in [
            (self.hs256.is_some(), "HS256"),
            (self.rs256.is_some(), "RS256"),
            (self.es256.is_some(), "ES256"),
        ] {
            if present {
                algs.push(name);
            }
        }
        algs
    }

    /// Whether verifying `token` means an asymmetric signature check (its header names RS256
    /// or ES256 and that key is configured; HS256 too when `hs256` says so): the checks worth
    /// moving off the reactor. Anything else is refused or verified in a few microseconds.
    pub fn is_costly(&self, token: &BearerToken, hs256: bool) -> bool {
        match header_alg(token.expose()).as_deref() {
            Ok("RS256") => self.rs256.is_some(),
            Ok("ES256") => self.es256.is_some(),
            Ok("HS256") => hs256 && self.hs256.is_some(),
            _ => false,
        }
    }

    /// Verifies `token` at `now` (unix seconds): signature, `aud`/`iss` if configured, `exp`
    /// and `nbf` with [`LEEWAY_SECS`], and the shape of the `sse` claim.
    pub fn verify(&self, token: &BearerToken, now: u64) -> Result<VerifiedClaims, InvalidToken> {
        let token = token.expose();
        let key = match header_alg(token)?.as_str() {
            "HS256" => self.hs256.as_ref(),
            "RS256" => self.rs256.as_ref(),
            "ES256" => self.es256.as_ref(),
            _ => None,
        }
        .ok_or(InvalidToken::AlgorithmNotAccepted)?;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &key.validation)
            .map_err(|e| classify(e.kind()))?;
        let claims = Claims::deserialize(data.claims).map_err(|_| InvalidToken::BadClaims)?;
        let expires_at = claims
            .exp
            .map(|n| numeric_date(&n).saturating_add(LEEWAY_SECS));
        let valid_from = claims
            .nbf
            .map(|n| numeric_date(&n).saturating_sub(LEEWAY_SECS));
        check_window(expires_at, valid_from, now)?;
        // `sse` must be an object (serde would also take a struct from an array).
        let sse = match claims.sse {
            Some(map) => SseClaim::deserialize(serde_json::Value::Object(map))
                .map_err(|_| InvalidToken::BadClaims)?,
            None => SseClaim::default(),
        };
        Ok(VerifiedClaims {
            subscribe: TopicPatterns::parse(&sse.subscribe),
            publish: TopicPatterns::parse(&sse.publish),
            expires_at,
            valid_from,
            subject: match claims.sub {
                Some(serde_json::Value::String(s)) => Some(s),
                _ => None,
            },
        })
    }
}

/// The time window of a token at `now` (unix seconds): refused at or past `expires_at`
/// (`exp` + leeway) first, then before `valid_from` (`nbf` − leeway). The one check of time,
/// shared by verification, cache hits and checks answered later.
pub fn check_window(
    expires_at: Option<u64>,
    valid_from: Option<u64>,
    now: u64,
) -> Result<(), InvalidToken> {
    if expires_at.is_some_and(|at| now >= at) {
        return Err(InvalidToken::Expired);
    }
    if valid_from.is_some_and(|from| now < from) {
        return Err(InvalidToken::NotYetValid);
    }
    Ok(())
}

impl VerifiedClaims {
    /// [`check_window`] for these claims.
    pub fn check_window(&self, now: u64) -> Result<(), InvalidToken> {
        check_window(self.expires_at, self.valid_from, now)
    }
}

/// The crate's checks we keep (signature, algorithm, `aud`, `iss`); the time checks are ours.
fn validation_for(alg: Algorithm, audience: Option<&str>, issuer: Option<&str>) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v.required_spec_claims.clear();
    if let Some(aud) = audience {
        v.set_audience(&[aud]);
        v.required_spec_claims.insert("aud".to_owned());
    }
    if let Some(iss) = issuer {
        v.set_issuer(&[iss]);
        v.required_spec_claims.insert("iss".to_owned());
    }
    v
}

/// Reads a PEM public key: RSA (RS256) or EC on P-256 (ES256). Private keys, other curves and
/// other key types are refused with a message saying which.
fn public_key(pem: &[u8]) -> Result<(Algorithm, DecodingKey), KeyError> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| KeyError("the JWT public key file is not PEM text".into()))?;
    if !text.contains("-----BEGIN ") {
        return Err(KeyError(
            "the JWT public key file has no PEM block (-----BEGIN PUBLIC KEY-----)".into(),
        ));
    }
    if text.contains("PRIVATE KEY-----") {
        return Err(KeyError(
            "the JWT public key file holds a private key: give the public key (openssl pkey -in KEY -pubout)".into(),
        ));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((Algorithm::RS256, key));
    }
    let key = DecodingKey::from_ec_pem(pem).map_err(|_| {
        KeyError("the JWT public key is neither an RSA nor an EC (P-256) public key in PEM".into())
    })?;
    // An EC key of another curve parses, but cannot verify ES256: find out now, not at the
    // first request. A well-formed ES256 token with a zero signature fails with a key error
    // only if the key itself is unusable.
    let probe = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#),
        URL_SAFE_NO_PAD.encode(b"{}"),
        URL_SAFE_NO_PAD.encode([0u8; 64])
    );
    let validation = validation_for(Algorithm::ES256, None, None);
    match jsonwebtoken::decode::<serde_json::Value>(&probe, &key, &validation) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidKeyFormat
            ) =>
        {
            Err(KeyError(
                "the JWT public key is an EC key but not on P-256: ES256 needs a P-256 key".into(),
            ))
        }
        _ => Ok((Algorithm::ES256, key)),
    }
}

/// The `alg` of a compact JWS (three base64url parts); anything else is malformed.
fn header_alg(token: &str) -> Result<String, InvalidToken> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(InvalidToken::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| InvalidToken::Malformed)?;
    let header: Header = serde_json::from_slice(&json).map_err(|_| InvalidToken::Malformed)?;
    Ok(header.alg)
}

/// Maps the crate's error to ours.
fn classify(kind: &ErrorKind) -> InvalidToken {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
            InvalidToken::BadSignature
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => InvalidToken::AlgorithmNotAccepted,
        ErrorKind::InvalidAudience => InvalidToken::WrongAudience,
        ErrorKind::InvalidIssuer => InvalidToken::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => InvalidToken::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => InvalidToken::WrongIssuer,
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::MissingRequiredClaim(_) => {
            InvalidToken::BadClaims
        }
        ErrorKind::ExpiredSignature => InvalidToken::Expired,
        ErrorKind::ImmatureSignature => InvalidToken::NotYetValid,
        _ => InvalidToken::Malformed,
    }
}

/// The claims we read; others are ignored.
#[derive(Deserialize)]
struct Claims {
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    sub: Option<serde_json::Value>,
    sse: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `"sse": {"subscribe": [...], "publish": [...]}`; either list may be left out.
#[derive(Deserialize, Default)]
struct SseClaim {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// A JWT NumericDate (seconds, possibly fractional) as whole unix seconds; negative is 0.
fn numeric_date(n: &serde_json::Number) -> u64 {
    if let Some(u) = n.as_u64() {
        u
    } else if let Some(f) = n.as_f64().filter(|f| f.is_finite() && *f > 0.0) {
        // `as` saturates at u64::MAX.
        f.floor() as u64
    } else {
        0
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
pub(crate) mod tests;
