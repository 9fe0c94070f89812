//! Verification with real keys (the TEST-ONLY pairs in `testdata/`).

use super::*;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

pub(crate) const SECRET: &[u8] = b"a test secret of at least 32 bytes!";
pub(crate) const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa-private.pem");
pub(crate) const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa-public.pem");
pub(crate) const EC_PRIVATE: &[u8] = include_bytes!("testdata/ec-private.pem");
pub(crate) const EC_PUBLIC: &[u8] = include_bytes!("testdata/ec-public.pem");
const EC_P384_PUBLIC: &[u8] = include_bytes!("testdata/ec-p384-public.pem");
const ED25519_PUBLIC: &[u8] = include_bytes!("testdata/ed25519-public.pem");

const NOW: u64 = 1_800_000_000;

fn hs(claims: &serde_json::Value) -> BearerToken {
    sign(
        Algorithm::HS256,
        claims,
        &EncodingKey::from_secret(SECRET).expect("test key"),
    )
}

fn rs(claims: &serde_json::Value) -> BearerToken {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("test key");
    sign(Algorithm::RS256, claims, &key)
}

fn es(claims: &serde_json::Value) -> BearerToken {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE).expect("test key");
    sign(Algorithm::ES256, claims, &key)
}

fn sign(alg: Algorithm, claims: &serde_json::Value, key: &EncodingKey) -> BearerToken {
    BearerToken::new(encode(&Header::new(alg), claims, key).expect("signing works"))
}

/// A token built by hand: header and claims as given, any signature bytes.
fn raw(header: &serde_json::Value, claims: &serde_json::Value, signature: &[u8]) -> BearerToken {
    BearerToken::new(format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

fn secret_only() -> Verifier {
    Verifier::new(Some(SECRET), None, None, None).expect("valid secret")
}

fn rsa_only() -> Verifier {
    Verifier::new(None, Some(RSA_PUBLIC), None, None).expect("valid RSA key")
}

fn ec_only() -> Verifier {
    Verifier::new(None, Some(EC_PUBLIC), None, None).expect("valid EC key")
}

fn user42() -> serde_json::Value {
    json!({"exp": NOW + 60, "sse": {"subscribe": ["user/42"], "publish": ["shop/7/*"]}})
}

#[test]
fn each_key_type_verifies_its_own_tokens() {
    let claims = user42();
    for (verifier, token) in [
        (secret_only(), hs(&claims)),
        (rsa_only(), rs(&claims)),
        (ec_only(), es(&claims)),
    ] {
        let v = verifier.verify(&token, NOW).expect("valid token");
        assert!(v.subscribe.matches("user/42"));
        assert!(!v.subscribe.matches("user/43"));
        assert!(v.publish.matches("shop/7/orders"));
        assert_eq!(v.expires_at, Some(NOW + 60 + LEEWAY_SECS));
    }
}

#[test]
fn algorithms_follow_the_configured_keys() {
    assert_eq!(secret_only().algorithms(), ["HS256"]);
    assert_eq!(rsa_only().algorithms(), ["RS256"]);
    assert_eq!(ec_only().algorithms(), ["ES256"]);
    let both = Verifier::new(Some(SECRET), Some(EC_PUBLIC), None, None).expect("valid");
    assert_eq!(both.algorithms(), ["HS256", "ES256"]);
    assert!(both.verify(&hs(&user42()), NOW).is_ok());
    assert!(both.verify(&es(&user42()), NOW).is_ok());
    let none = Verifier::new(None, None, None, None).expect("empty is fine");
    assert!(!none.is_configured());
    assert_eq!(
        none.verify(&hs(&user42()), NOW),
        Err(InvalidToken::AlgorithmNotAccepted)
    );
}

#[test]
fn alg_none_is_refused() {
    let token = raw(&json!({"alg": "none", "typ": "JWT"}), &user42(), b"");
    for v in [secret_only(), rsa_only(), ec_only()] {
        assert_eq!(
            v.verify(&token, NOW),
            Err(InvalidToken::AlgorithmNotAccepted)
        );
    }
    // Also with the signature part left out entirely, and with spellings of "none".
    let two_parts = BearerToken::new(token.expose().trim_end_matches('.').to_owned());
    assert_eq!(
        secret_only().verify(&two_parts, NOW),
        Err(InvalidToken::Malformed)
    );
    for alg in ["None", "NONE", "nOnE"] {
        let t = raw(&json!({"alg": alg}), &user42(), b"");
        assert_eq!(
            secret_only().verify(&t, NOW),
            Err(InvalidToken::AlgorithmNotAccepted)
        );
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic key confusion: HMAC keyed with the public key's PEM text.
    let forged = sign(
        Algorithm::HS256,
        &user42(),
        &EncodingKey::from_secret(RSA_PUBLIC).expect("test key"),
    );
    assert_eq!(
        rsa_only().verify(&forged, NOW),
        Err(InvalidToken::AlgorithmNotAccepted)
    );
    // With a secret configured too, HS256 is accepted, but only with that secret.
    let both = Verifier::new(Some(SECRET), Some(RSA_PUBLIC), None, None).expect("valid");
    assert_eq!(both.verify(&forged, NOW), Err(InvalidToken::BadSignature));
    // An RS256 token against an HS256-only or ES256-only verifier.
    assert_eq!(
        secret_only().verify(&rs(&user42()), NOW),
        Err(InvalidToken::AlgorithmNotAccepted)
    );
    assert_eq!(
        ec_only().verify(&rs(&user42()), NOW),
        Err(InvalidToken::AlgorithmNotAccepted)
    );
    // Algorithms of the right family but not configured.
    let rs512 = sign(
        Algorithm::RS512,
        &user42(),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("test key"),
    );
    assert_eq!(
        rsa_only().verify(&rs512, NOW),
        Err(InvalidToken::AlgorithmNotAccepted)
    );
}

#[test]
fn tampered_or_foreign_signatures_are_refused() {
    let token = hs(&user42());
    let (head_payload, _) = token.expose().rsplit_once('.').expect("three parts");
    // Claims swapped for wider ones under the old signature.
    let parts: Vec<&str> = token.expose().split('.').collect();
    let wider =
        URL_SAFE_NO_PAD.encode(json!({"exp": NOW + 60, "sse": {"subscribe": ["*"]}}).to_string());
    let swapped = BearerToken::new(format!("{}.{}.{}", parts[0], wider, parts[2]));
    assert_eq!(
        secret_only().verify(&swapped, NOW),
        Err(InvalidToken::BadSignature)
    );
    let zero_sig = BearerToken::new(format!(
        "{head_payload}.{}",
        URL_SAFE_NO_PAD.encode([0u8; 32])
    ));
    assert_eq!(
        secret_only().verify(&zero_sig, NOW),
        Err(InvalidToken::BadSignature)
    );
    let other_secret = sign(
        Algorithm::HS256,
        &user42(),
        &EncodingKey::from_secret(b"another secret of at least 32 bytes").expect("test key"),
    );
    assert_eq!(
        secret_only().verify(&other_secret, NOW),
        Err(InvalidToken::BadSignature)
    );
    // An ES256 token with a signature of the wrong length.
    let es_token = es(&user42());
    let (hp, _) = es_token.expose().rsplit_once('.').expect("three parts");
    let short = BearerToken::new(format!("{hp}.{}", URL_SAFE_NO_PAD.encode([1u8; 10])));
    assert_eq!(
        ec_only().verify(&short, NOW),
        Err(InvalidToken::BadSignature)
    );
}

#[test]
fn expiry_with_leeway() {
    let v = secret_only();
    let token = hs(&json!({"exp": NOW}));
    assert!(v.verify(&token, NOW).is_ok());
    assert!(v.verify(&token, NOW + LEEWAY_SECS - 1).is_ok());
    assert_eq!(
        v.verify(&token, NOW + LEEWAY_SECS),
        Err(InvalidToken::Expired)
    );
    assert_eq!(v.verify(&token, NOW + 3600), Err(InvalidToken::Expired));
    // Fractional and negative NumericDates.
    assert_eq!(
        v.verify(&hs(&json!({"exp": -5})), NOW),
        Err(InvalidToken::Expired)
    );
    let frac = v
        .verify(&hs(&json!({"exp": (NOW as f64) + 10.9})), NOW)
        .expect("valid");
    assert_eq!(frac.expires_at, Some(NOW + 10 + LEEWAY_SECS));
    // No exp: valid, with no expiry.
    let forever = v.verify(&hs(&json!({"sse": {}})), NOW).expect("valid");
    assert_eq!(forever.expires_at, None);
    // Huge values saturate instead of overflowing.
    let far = v
        .verify(&hs(&json!({"exp": u64::MAX})), u64::MAX - 1)
        .expect("valid");
    assert_eq!(far.expires_at, Some(u64::MAX));
}

#[test]
fn not_before_with_leeway() {
    let v = secret_only();
    let token = hs(&json!({"nbf": NOW + 100}));
    assert_eq!(v.verify(&token, NOW), Err(InvalidToken::NotYetValid));
    assert_eq!(
        v.verify(&token, NOW + 100 - LEEWAY_SECS - 1),
        Err(InvalidToken::NotYetValid)
    );
    assert!(v.verify(&token, NOW + 100 - LEEWAY_SECS).is_ok());
    assert!(v.verify(&token, NOW + 100).is_ok());
}

#[test]
fn audience_and_issuer() {
    let v = Verifier::new(
        Some(SECRET),
        None,
        Some("sse"),
        Some("https://auth.example"),
    )
    .expect("valid");
    let good = json!({"aud": "sse", "iss": "https://auth.example"});
    assert!(v.verify(&hs(&good), NOW).is_ok());
    let list_aud = json!({"aud": ["other", "sse"], "iss": "https://auth.example"});
    assert!(v.verify(&hs(&list_aud), NOW).is_ok());
    for (claims, expected) in [
        (
            json!({"aud": "other", "iss": "https://auth.example"}),
            InvalidToken::WrongAudience,
        ),
        (
            json!({"iss": "https://auth.example"}),
            InvalidToken::WrongAudience,
        ),
        (
            json!({"aud": "sse", "iss": "https://evil.example"}),
            InvalidToken::WrongIssuer,
        ),
        (json!({"aud": "sse"}), InvalidToken::WrongIssuer),
    ] {
        assert_eq!(v.verify(&hs(&claims), NOW), Err(expected), "{claims}");
    }
    // Without a configured audience, a token meant for some audience is refused (RFC 7519).
    assert_eq!(
        secret_only().verify(&hs(&json!({"aud": "sse"})), NOW),
        Err(InvalidToken::WrongAudience)
    );
}

#[test]
fn claim_shapes() {
    let v = secret_only();
    for bad in [
        json!({"exp": "tomorrow"}),
        json!({"nbf": true}),
        json!({"sse": {"subscribe": "user/42"}}),
        json!({"sse": {"subscribe": [1, 2]}}),
        json!({"sse": []}),
        json!({"sse": [["user/42"], []]}),
        json!({"sse": "user/42"}),
    ] {
        assert_eq!(
            v.verify(&hs(&bad), NOW),
            Err(InvalidToken::BadClaims),
            "{bad}"
        );
    }
    // No `sse` claim: valid, covers nothing.
    let empty = v.verify(&hs(&json!({"sub": "u1"})), NOW).expect("valid");
    assert!(empty.subscribe.is_empty() && empty.publish.is_empty());
    assert_eq!(empty.subject.as_deref(), Some("u1"));
    // Unknown claims are ignored.
    assert!(
        v.verify(&hs(&json!({"role": "admin", "sse": {"x": 1}})), NOW)
            .is_ok()
    );
}

#[test]
fn garbage_is_malformed() {
    let v = secret_only();
    for garbage in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "...",
        "eyJhbGciOiJIUzI1NiJ9.!!!.x",
        "e30.e30.e30",
        "W10.e30.",
    ] {
        let r = v.verify(&BearerToken::new(garbage), NOW);
        assert_eq!(r, Err(InvalidToken::Malformed), "{garbage:?}");
    }
    // A valid header with no signature: the signature check fails first.
    assert_eq!(
        v.verify(&BearerToken::new("eyJhbGciOiJIUzI1NiJ9.."), NOW),
        Err(InvalidToken::BadSignature)
    );
    // A payload that is not JSON under a valid header and signature.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
    let payload = URL_SAFE_NO_PAD.encode(b"not json");
    let t = BearerToken::new(format!(
        "{header}.{payload}.{}",
        URL_SAFE_NO_PAD.encode([0u8; 32])
    ));
    assert!(v.verify(&t, NOW).is_err());
}

#[test]
fn key_errors_are_clear() {
    let err = |secret: Option<&[u8]>, pem: Option<&[u8]>| {
        Verifier::new(secret, pem, None, None)
            .expect_err("must be refused")
            .to_string()
    };
    assert!(err(Some(b"short"), None).contains("at least 32 bytes"));
    assert!(err(None, Some(b"")).contains("no PEM block"));
    assert!(err(None, Some(b"\xff\xfe")).contains("not PEM text"));
    assert!(err(None, Some(RSA_PRIVATE)).contains("private key"));
    assert!(err(None, Some(EC_PRIVATE)).contains("private key"));
    assert!(err(None, Some(EC_P384_PUBLIC)).contains("P-256"));
    assert!(err(None, Some(ED25519_PUBLIC)).contains("neither an RSA nor an EC"));
    let broken = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert!(err(None, Some(broken)).contains("neither an RSA nor an EC"));
}

#[test]
fn debug_shows_algorithms_not_keys() {
    let shown = format!("{:?}", secret_only());
    assert!(shown.contains("HS256"), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
}

/// The example token of README.md, "Private topics" (minted with openssl, also accepted as minted by
/// PyJWT and npm `jsonwebtoken` when this was written) verifies with the documented secret.
#[test]
fn readme_example_token_verifies() {
    let v = Verifier::new(
        Some(b"change-me-to-at-least-32-random-bytes"),
        None,
        None,
        None,
    )
    .expect("valid");
    let readme = include_str!("../../README.md");
    let token = readme
        .split_whitespace()
        .find(|w| w.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."))
        .expect("the README shows a token");
    let claims = v
        .verify(&BearerToken::new(token), NOW)
        .expect("valid until 2100");
    assert!(claims.subscribe.matches("user/42") && claims.subscribe.matches("shop/7/a"));
    assert!(claims.publish.matches("shop/7/a") && !claims.publish.matches("user/42"));
    assert_eq!(claims.subject.as_deref(), Some("user-42"));
}
