//! The decisions end to end: request parts in, grant or 401/403 out, with real signed tokens.

use super::*;
use crate::auth::verify::tests::{EC_PRIVATE, EC_PUBLIC, RSA_PUBLIC, SECRET};
use crate::auth::{AuthOptions, LEEWAY_SECS};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use proptest::prelude::*;
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn config(options: AuthOptions) -> AuthConfig {
    AuthConfig::new(options).expect("valid test config")
}

fn secret_config() -> AuthConfig {
    config(AuthOptions {
        jwt_secret: Some(String::from_utf8(SECRET.to_vec()).expect("ascii")),
        publish_token: Some("shared-publish-token".into()),
        ..AuthOptions::default()
    })
}

fn hs(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET).expect("test key"),
    )
    .expect("signing works")
}

fn user42() -> String {
    hs(json!({
        "sub": "user-42",
        "exp": NOW + 60,
        "sse": {"subscribe": ["user/42", "shop/7/*"], "publish": ["shop/7/*"]}
    }))
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

fn subscribe(
    c: &AuthConfig,
    headers: &[(&str, &[u8])],
    topics: &[&str],
) -> Result<Grant, AuthError> {
    subscribe_at(
        c,
        &RequestParts {
            headers,
            query: &[],
        },
        topics,
        NOW,
    )
}

/// The subscribe decision without a cache, and through a cache twice (a miss, then a hit):
/// every test of the decisions runs all three, and they must agree.
fn subscribe_at(
    c: &AuthConfig,
    req: &RequestParts<'_>,
    topics: &[&str],
    now: u64,
) -> Result<Grant, AuthError> {
    let plain = c.authorize_subscribe(req, topics, now);
    let mut cache = c.token_cache();
    for round in ["miss", "hit"] {
        let cached = c.authorize_subscribe_cached(req, topics, now, &mut cache);
        assert_eq!(cached, plain, "subscribe through the cache ({round})");
    }
    plain
}

/// The publish decision without a cache and through a cache twice, as [`subscribe_at`].
fn publish_at(
    c: &AuthConfig,
    req: &RequestParts<'_>,
    topic: &str,
    now: u64,
) -> Result<Publisher, AuthError> {
    let plain = c.authorize_publish(req, topic, now);
    let mut cache = c.token_cache();
    for round in ["miss", "hit"] {
        let cached = c.authorize_publish_cached(req, topic, now, &mut cache);
        assert_eq!(cached, plain, "publish through the cache ({round})");
    }
    plain
}

#[test]
fn public_default_stream_needs_no_token() {
    let c = secret_config();
    let g = subscribe(&c, &[], &[""]).expect("public");
    assert!(g.may_see(""));
    assert!(!g.may_see("user/42"));
    assert_eq!(g.expires_at(), None);
    assert_eq!(g.source(), None);
    // A broken token does not lock anyone out of public topics.
    let g = subscribe(&c, &[("cookie", b"sse_token=garbage")], &[""]).expect("public");
    assert!(g.may_see(""));
}

#[test]
fn without_keys_everything_is_public() {
    let c = AuthConfig::default();
    let g = subscribe(&c, &[], &["user/42", ""]).expect("open");
    assert!(g.may_see("anything/else"));
    assert_eq!(
        publish_at(&c, &RequestParts::default(), "x", NOW),
        Ok(Publisher::Anonymous)
    );
}

#[test]
fn private_topic_without_token_is_401_missing() {
    let e = subscribe(&secret_config(), &[], &["user/42"]).expect_err("private");
    assert_eq!(e, AuthError::Missing);
    assert_eq!(e.status(), 401);
    assert_eq!(e.headers(), ["WWW-Authenticate: Bearer"]);
}

#[test]
fn allowed_topics_get_a_grant_from_each_source() {
    let c = secret_config();
    let token = user42();
    let header = bearer(&token);
    let cookie = format!("theme=dark; sse_token={token}").into_bytes();
    let query = [("topic", "user/42"), ("access_token", token.as_str())];
    for (headers, query, source) in [
        (
            vec![("Authorization", header.as_slice())],
            &[][..],
            TokenSource::Header,
        ),
        (
            vec![("Cookie", cookie.as_slice())],
            &[][..],
            TokenSource::Cookie,
        ),
        (vec![], &query[..], TokenSource::Query),
    ] {
        let g = subscribe_at(
            &c,
            &RequestParts {
                headers: &headers,
                query,
            },
            &["user/42", "shop/7/orders", ""],
            NOW,
        )
        .expect("allowed");
        assert_eq!(g.source(), Some(source));
        assert_eq!(g.subject(), Some("user-42"));
        assert_eq!(g.expires_at(), Some(NOW + 60 + LEEWAY_SECS));
        assert_eq!(g.secs_until_expiry(NOW), Some(60 + LEEWAY_SECS));
        assert_eq!(g.secs_until_expiry(NOW + 1000), Some(0));
        assert!(g.may_see("user/42") && g.may_see("shop/7/x") && g.may_see(""));
        assert!(!g.may_see("user/43"));
    }
}

#[test]
fn a_topic_the_token_does_not_cover_is_403_naming_it() {
    let c = secret_config();
    let h = bearer(&user42());
    for topics in [
        &["user/43"][..],
        &["user/42", "user/43"],
        &["", "user/43", "shop/8"],
    ] {
        let e = subscribe(&c, &[("authorization", &h)], topics).expect_err("forbidden");
        assert_eq!(
            e,
            AuthError::Forbidden {
                topic: "user/43".into()
            }
        );
        assert_eq!(e.status(), 403);
        assert!(e.body().contains("\"user/43\""), "{}", e.body());
        assert!(
            e.headers().iter().all(|h| !h.contains("user/43")),
            "the topic stays out of headers"
        );
    }
}

#[test]
fn private_default_stream_is_403_with_a_clear_body() {
    let c = config(AuthOptions {
        jwt_secret: Some(String::from_utf8(SECRET.to_vec()).expect("ascii")),
        public_topics: Some(vec![]),
        ..AuthOptions::default()
    });
    assert_eq!(subscribe(&c, &[], &[""]), Err(AuthError::Missing));
    let h = bearer(&user42());
    let e = subscribe(&c, &[("authorization", &h)], &[""]).expect_err("private");
    assert_eq!(e.body(), "the token does not allow the default stream");
}

#[test]
fn invalid_tokens_are_401_invalid_token() {
    let c = secret_config();
    let expired = hs(json!({"exp": NOW - 100, "sse": {"subscribe": ["*"]}}));
    let future = hs(json!({"nbf": NOW + 100, "sse": {"subscribe": ["*"]}}));
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(br#"{"sse":{"subscribe":["*"]}}"#)
    );
    let other_key = encode(
        &Header::new(Algorithm::ES256),
        &json!({"sse": {"subscribe": ["*"]}}),
        &EncodingKey::from_ec_pem(EC_PRIVATE).expect("test key"),
    )
    .expect("signing works");
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sse": {"subscribe": ["*"]}}),
        &EncodingKey::from_secret(RSA_PUBLIC).expect("test key"),
    )
    .expect("signing works");
    for (token, why) in [
        (expired, InvalidToken::Expired),
        (future, InvalidToken::NotYetValid),
        (none, InvalidToken::AlgorithmNotAccepted),
        (other_key, InvalidToken::AlgorithmNotAccepted),
        (confused, InvalidToken::BadSignature),
        ("garbage".into(), InvalidToken::Malformed),
    ] {
        let h = bearer(&token);
        let e = subscribe(&c, &[("authorization", &h)], &["user/42"]).expect_err("invalid");
        assert_eq!(e, AuthError::Invalid(why));
        assert_eq!(e.status(), 401);
        let www = &e.headers()[0];
        assert!(
            www.starts_with("WWW-Authenticate: Bearer error=\"invalid_token\""),
            "{www}"
        );
        assert!(
            !www.contains(&token) || token.is_empty(),
            "no token in headers"
        );
    }
    // A malformed cookie value is a 401 too.
    let e = subscribe(&c, &[("cookie", b"sse_token=a b")], &["user/42"]).expect_err("bad");
    assert_eq!(e, AuthError::Invalid(InvalidToken::Malformed));
}

#[test]
fn header_wins_over_a_valid_cookie() {
    let c = secret_config();
    let cookie = format!("sse_token={}", user42()).into_bytes();
    let headers: [(&str, &[u8]); 2] = [("cookie", &cookie), ("authorization", b"Bearer garbage")];
    assert_eq!(
        subscribe(&c, &headers, &["user/42"]),
        Err(AuthError::Invalid(InvalidToken::Malformed))
    );
}

#[test]
fn public_topics_mix_with_token_topics() {
    let c = config(AuthOptions {
        jwt_public_key_pem: Some(EC_PUBLIC.to_vec()),
        public_topics: Some(vec!["news/*".into(), "".into()]),
        ..AuthOptions::default()
    });
    assert!(subscribe(&c, &[], &["news/today", ""]).is_ok());
    let token = encode(
        &Header::new(Algorithm::ES256),
        &json!({"sse": {"subscribe": ["user/42"]}}),
        &EncodingKey::from_ec_pem(EC_PRIVATE).expect("test key"),
    )
    .expect("signing works");
    let h = bearer(&token);
    let g = subscribe(&c, &[("authorization", &h)], &["news/today", "user/42"]).expect("ok");
    assert!(g.may_see("news/x") && g.may_see("user/42") && g.may_see(""));
    assert!(!g.may_see("user/43"));
    assert_eq!(g.expires_at(), None, "no exp: never expires");
}

fn publish(
    c: &AuthConfig,
    headers: &[(&str, &[u8])],
    query: &[(&str, &str)],
    topic: &str,
) -> Result<Publisher, AuthError> {
    publish_at(c, &RequestParts { headers, query }, topic, NOW)
}

#[test]
fn publish_per_claim() {
    let c = secret_config();
    let h = bearer(&user42());
    assert_eq!(
        publish(&c, &[("authorization", &h)], &[], "shop/7/orders"),
        Ok(Publisher::Token {
            subject: Some("user-42".into())
        })
    );
    let token = user42();
    assert!(publish(&c, &[], &[("access_token", &token)], "shop/7/orders").is_ok());
    assert_eq!(
        publish(&c, &[("authorization", &h)], &[], "user/42"),
        Err(AuthError::Forbidden {
            topic: "user/42".into()
        }),
        "subscribe does not imply publish"
    );
    assert_eq!(
        publish(&c, &[], &[], "shop/7/orders"),
        Err(AuthError::Missing)
    );
    // Never from the cookie.
    let cookie = format!("sse_token={token}").into_bytes();
    assert_eq!(
        publish(&c, &[("cookie", &cookie)], &[], "shop/7/orders"),
        Err(AuthError::Missing)
    );
    let expired = bearer(&hs(json!({"exp": NOW - 10, "sse": {"publish": ["*"]}})));
    assert_eq!(
        publish(&c, &[("authorization", &expired)], &[], "x"),
        Err(AuthError::Invalid(InvalidToken::Expired))
    );
}

#[test]
fn shared_publish_token_still_works() {
    let c = secret_config();
    let shared = bearer("shared-publish-token");
    assert_eq!(
        publish(&c, &[("authorization", &shared)], &[], "any/topic"),
        Ok(Publisher::SharedToken)
    );
    assert!(c.has_shared_token(&RequestParts {
        headers: &[("authorization", &shared)],
        query: &[]
    }));
    assert!(!c.has_shared_token(&RequestParts {
        headers: &[("authorization", b"Bearer shared-publish-tokeN")],
        query: &[]
    }));
    // With keys, a wrong shared token is just an invalid token.
    assert_eq!(
        publish(&c, &[("authorization", b"Bearer wrong")], &[], "x"),
        Err(AuthError::Invalid(InvalidToken::Malformed))
    );
}

#[test]
fn shared_token_only_keeps_the_old_answers() {
    let c = config(AuthOptions {
        publish_token: Some("tok".into()),
        ..AuthOptions::default()
    });
    assert_eq!(publish(&c, &[], &[], "x"), Err(AuthError::Missing));
    assert_eq!(
        publish(&c, &[("authorization", b"Basic eDp5")], &[], "x"),
        Err(AuthError::Missing)
    );
    for wrong in [&b"Bearer nope"[..], b"Bearer a b", b"Bearer"] {
        let e = publish(&c, &[("authorization", wrong)], &[], "x").expect_err("wrong");
        assert_eq!(e, AuthError::WrongSharedToken, "{wrong:?}");
        assert_eq!(e.status(), 403);
        assert!(e.headers().is_empty());
    }
    assert_eq!(
        publish(&c, &[("authorization", b"bearer tok")], &[], "x"),
        Ok(Publisher::SharedToken)
    );
    // A non-ASCII shared token (allowed by `--publish-token`) still works.
    let c8 = config(AuthOptions {
        publish_token: Some("pässwörd".into()),
        ..AuthOptions::default()
    });
    let h = "Bearer pässwörd".as_bytes();
    assert_eq!(
        publish(&c8, &[("authorization", h)], &[], "x"),
        Ok(Publisher::SharedToken)
    );
    // Subscribing stays open.
    assert!(subscribe(&c, &[], &["user/42"]).is_ok());
}

#[test]
fn constant_time_compare() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
    assert!(!constant_time_eq(b"ab\xff", b"ab"));
    assert!(!constant_time_eq(b"", b"a"));
    assert!(constant_time_eq(b"", b""));
}

/// A reference reading of one pattern, independent of `TopicPattern`.
fn reference_covers(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.get(..prefix.len()) == Some(prefix),
        None => pattern == topic,
    }
}

fn topic_name() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ab/*]{0,5}").expect("valid regex")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A grant never allows a topic that neither its token's subscribe patterns nor the public
    /// patterns match; a granted request covers every topic it asked for; a 403 names a topic
    /// that is truly not covered.
    #[test]
    fn a_grant_never_allows_an_uncovered_topic(
        subscribe_patterns in proptest::collection::vec(topic_name(), 0..4),
        public_patterns in proptest::collection::vec(topic_name(), 0..3),
        requested in proptest::collection::vec(topic_name(), 1..4),
        probes in proptest::collection::vec(topic_name(), 0..8),
    ) {
        let c = config(AuthOptions {
            jwt_secret: Some(String::from_utf8(SECRET.to_vec()).expect("ascii")),
            public_topics: Some(public_patterns.clone()),
            ..AuthOptions::default()
        });
        let token = hs(json!({"sse": {"subscribe": subscribe_patterns}}));
        let h = bearer(&token);
        let headers: [(&str, &[u8]); 1] = [("authorization", &h)];
        let requested: Vec<&str> = requested.iter().map(String::as_str).collect();
        let public = |t: &str| public_patterns.iter().any(|p| reference_covers(p, t));
        // When every requested topic is public the token is not looked at (an expired cookie
        // must not lock a browser out of public streams), so the grant is the public set only.
        let token_used = !requested.iter().all(|t| public(t));
        let covered = |t: &str| {
            public(t)
                || (token_used && subscribe_patterns.iter().any(|p| reference_covers(p, t)))
        };
        match subscribe(&c, &headers, &requested) {
            Ok(grant) => {
                for t in requested.iter().copied().chain(probes.iter().map(String::as_str)) {
                    prop_assert_eq!(grant.may_see(t), covered(t), "topic {:?}", t);
                }
                prop_assert!(requested.iter().all(|t| covered(t)));
            }
            Err(AuthError::Forbidden { topic }) => {
                prop_assert!(requested.contains(&topic.as_str()));
                prop_assert!(!covered(&topic));
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

/// The `auth` fuzz target's seeds (made by `fuzz/make-auth-seeds.sh` with openssl) are real
/// tokens for the test keys, so the fuzzer starts from the grant path, not only from refusals.
#[test]
fn fuzz_seeds_hold_valid_tokens() {
    let authorization = |seed: &[u8]| {
        seed[1..]
            .split(|&b| b == 0)
            .next()
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    };
    let hs_seed = authorization(include_bytes!("../../fuzz/corpus/auth/hs-header"));
    let g = subscribe(
        &secret_config(),
        &[("authorization", &hs_seed)],
        &["user/42"],
    );
    assert!(g.is_ok(), "{g:?}");
    let rsa = config(AuthOptions {
        jwt_public_key_pem: Some(RSA_PUBLIC.to_vec()),
        ..AuthOptions::default()
    });
    let rs_seed = authorization(include_bytes!("../../fuzz/corpus/auth/rs-header"));
    let g = subscribe(&rsa, &[("authorization", &rs_seed)], &["shop/7/x"]);
    assert!(g.is_ok(), "{g:?}");
}
