//! The cache of verified tokens against the real verifier (TEST-ONLY keys in `testdata/`): hits,
//! misses, the time window at its edges, failures, the bound and its eviction order.

use std::cell::Cell;

use super::*;
use crate::auth::LEEWAY_SECS;
use crate::auth::verify::Verifier;
use crate::auth::verify::tests::{EC_PRIVATE, EC_PUBLIC, SECRET};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn secret_verifier() -> Verifier {
    Verifier::new(Some(SECRET), None, None, None).expect("valid secret")
}

fn hs(claims: serde_json::Value) -> BearerToken {
    let key = EncodingKey::from_secret(SECRET).expect("test key");
    BearerToken::new(encode(&Header::new(Algorithm::HS256), &claims, &key).expect("signs"))
}

fn user(n: u32, exp: u64) -> BearerToken {
    hs(json!({"sub": format!("u{n}"), "exp": exp, "sse": {"subscribe": [format!("user/{n}")]}}))
}

/// A verifier wrapped to count how often it really verifies.
struct Counting {
    verifier: Verifier,
    calls: Cell<usize>,
}

impl Counting {
    fn new(verifier: Verifier) -> Counting {
        Counting {
            verifier,
            calls: Cell::new(0),
        }
    }

    fn check(
        &self,
        cache: &mut TokenCache,
        token: &BearerToken,
        now: u64,
    ) -> Result<VerifiedClaims, InvalidToken> {
        let cached = cache.verify(token, now, |t| {
            self.calls.set(self.calls.get() + 1);
            self.verifier.verify(t, now)
        });
        assert_eq!(
            cached,
            self.verifier.verify(token, now),
            "the cache answered differently from verifying at {now}"
        );
        cached
    }

    fn calls(&self) -> usize {
        self.calls.get()
    }
}

#[test]
fn a_second_check_is_a_hit_with_the_same_claims() {
    let v = Counting::new(secret_verifier());
    let mut cache = TokenCache::new(4);
    let token = user(1, NOW + 60);
    let first = v.check(&mut cache, &token, NOW).expect("valid");
    let second = v.check(&mut cache, &token, NOW + 1).expect("valid");
    assert_eq!(first, second);
    assert_eq!(v.calls(), 1, "the second check did not verify");
    assert_eq!(
        cache.stats(),
        CacheStats {
            hits: 1,
            misses: 1,
            evictions: 0
        }
    );
    assert_eq!(cache.len(), 1);
}

#[test]
fn es256_tokens_are_cached_too() {
    let v = Counting::new(Verifier::new(None, Some(EC_PUBLIC), None, None).expect("EC key"));
    let key = EncodingKey::from_ec_pem(EC_PRIVATE).expect("test key");
    let token = BearerToken::new(
        encode(
            &Header::new(Algorithm::ES256),
            &json!({"exp": NOW + 60, "sse": {"subscribe": ["a"]}}),
            &key,
        )
        .expect("signs"),
    );
    let mut cache = TokenCache::new(4);
    for _ in 0..3 {
        v.check(&mut cache, &token, NOW).expect("valid");
    }
    assert_eq!(v.calls(), 1);
}

#[test]
fn an_entry_is_refused_from_exp_plus_leeway_and_dropped() {
    let v = Counting::new(secret_verifier());
    let mut cache = TokenCache::new(4);
    let token = user(1, NOW + 10);
    v.check(&mut cache, &token, NOW).expect("valid");
    // The last second inside the leeway is still a hit.
    v.check(&mut cache, &token, NOW + 10 + LEEWAY_SECS - 1)
        .expect("inside the leeway");
    assert_eq!(v.calls(), 1);
    assert_eq!(
        v.check(&mut cache, &token, NOW + 10 + LEEWAY_SECS),
        Err(InvalidToken::Expired)
    );
    assert_eq!(v.calls(), 1, "the expiry was answered from the entry");
    assert!(cache.is_empty(), "an expired entry is dropped");
    // Afterwards it is verified (and refused) every time, never cached.
    for _ in 0..2 {
        assert_eq!(
            v.check(&mut cache, &token, NOW + 100),
            Err(InvalidToken::Expired)
        );
    }
    assert_eq!(v.calls(), 3);
    assert!(cache.is_empty());
}

#[test]
fn nbf_is_checked_on_every_hit() {
    let v = Counting::new(secret_verifier());
    let mut cache = TokenCache::new(4);
    let token = hs(json!({"nbf": NOW, "exp": NOW + 60}));
    // Refused before nbf − leeway: nothing is kept.
    assert_eq!(
        v.check(&mut cache, &token, NOW - LEEWAY_SECS - 1),
        Err(InvalidToken::NotYetValid)
    );
    assert!(cache.is_empty());
    v.check(&mut cache, &token, NOW - LEEWAY_SECS)
        .expect("valid from nbf - leeway");
    assert_eq!(cache.len(), 1);
    // The wall clock stepped back: the entry answers "not yet", as verification would, and
    // stays for when the clock catches up.
    assert_eq!(
        v.check(&mut cache, &token, NOW - LEEWAY_SECS - 1),
        Err(InvalidToken::NotYetValid)
    );
    v.check(&mut cache, &token, NOW).expect("valid again");
    assert_eq!(
        v.calls(),
        2,
        "only the first refusal and the first success verified"
    );
}

#[test]
fn failures_are_never_cached() {
    let v = Counting::new(secret_verifier());
    let mut cache = TokenCache::new(4);
    let other_key = EncodingKey::from_secret(b"another secret of at least 32 bytes").expect("key");
    let wrong =
        BearerToken::new(encode(&Header::default(), &json!({}), &other_key).expect("signs"));
    let bad_claims = hs(json!({"sse": ["not", "an", "object"]}));
    let garbage = BearerToken::new("not-a-jwt");
    for (token, why) in [
        (&wrong, InvalidToken::BadSignature),
        (&bad_claims, InvalidToken::BadClaims),
        (&garbage, InvalidToken::Malformed),
    ] {
        for _ in 0..3 {
            assert_eq!(v.check(&mut cache, token, NOW), Err(why));
        }
    }
    assert_eq!(v.calls(), 9, "every failing check verified again");
    assert!(cache.is_empty());
    assert_eq!(cache.stats().hits, 0);
}

#[test]
fn a_token_differing_in_one_byte_is_a_miss() {
    let v = Counting::new(secret_verifier());
    let mut cache = TokenCache::new(4);
    let token = user(1, NOW + 60);
    v.check(&mut cache, &token, NOW).expect("valid");
    let text = token.expose();
    // Flip one character of the signature (the last is a partial base64 digit: take one before).
    let at = text.len() - 2;
    let flipped = if &text[at..=at] == "A" { "B" } else { "A" };
    let tampered = BearerToken::new(format!("{}{flipped}{}", &text[..at], &text[at + 1..]));
    assert_eq!(
        v.check(&mut cache, &tampered, NOW),
        Err(InvalidToken::BadSignature)
    );
    assert_eq!(v.calls(), 2, "the tampered token was verified, not found");
    assert_eq!(cache.len(), 1);
}

#[test]
fn capacity_zero_disables_the_cache() {
    let v = Counting::new(secret_verifier());
    let mut cache = TokenCache::disabled();
    let token = user(1, NOW + 60);
    for _ in 0..3 {
        v.check(&mut cache, &token, NOW).expect("valid");
    }
    assert_eq!(v.calls(), 3);
    assert!(cache.is_empty());
    assert_eq!(cache.stats(), CacheStats::default());
}

#[test]
fn the_bound_holds_and_hot_tokens_survive_a_scan() {
    let v = Counting::new(secret_verifier());
    let mut cache = TokenCache::new(8);
    let hot = user(0, NOW + 600);
    v.check(&mut cache, &hot, NOW).expect("valid");
    for n in 1..100 {
        v.check(&mut cache, &user(n, NOW + 600), NOW)
            .expect("valid");
        assert!(cache.len() <= 8);
        // The hot token is asked for between every two new ones: always a hit.
        let before = v.calls();
        v.check(&mut cache, &hot, NOW).expect("valid");
        assert_eq!(v.calls(), before, "the hot token was evicted at {n}");
    }
    assert_eq!(cache.len(), 8);
    assert_eq!(cache.stats().evictions, 99 - 7);
}

#[test]
fn long_tokens_are_verified_every_time() {
    let v = Counting::new(secret_verifier());
    let mut cache = TokenCache::new(4);
    let long = hs(json!({"pad": "x".repeat(MAX_CACHED_TOKEN_BYTES), "exp": NOW + 60}));
    assert!(long.expose().len() > MAX_CACHED_TOKEN_BYTES);
    v.check(&mut cache, &long, NOW).expect("valid");
    v.check(&mut cache, &long, NOW).expect("valid");
    assert_eq!(v.calls(), 2);
    assert!(cache.is_empty());
}

#[test]
fn clear_forgets_everything() {
    let v = Counting::new(secret_verifier());
    let mut cache = TokenCache::new(4);
    let token = user(1, NOW + 60);
    v.check(&mut cache, &token, NOW).expect("valid");
    cache.clear();
    assert!(cache.is_empty());
    v.check(&mut cache, &token, NOW).expect("valid");
    assert_eq!(v.calls(), 2);
}

#[test]
fn expired_entries_leave_room_without_evicting() {
    let v = Counting::new(secret_verifier());
    let mut cache = TokenCache::new(3);
    let tokens: Vec<_> = (0..3)
        .map(|n| user(n, NOW + 10 * u64::from(n + 1)))
        .collect();
    for t in &tokens {
        v.check(&mut cache, t, NOW).expect("valid");
    }
    // The first expires; finding it so drops it, and the others keep their places.
    let later = NOW + 10 + LEEWAY_SECS;
    assert_eq!(
        v.check(&mut cache, &tokens[0], later),
        Err(InvalidToken::Expired)
    );
    assert_eq!(cache.len(), 2);
    for t in &tokens[1..] {
        let before = v.calls();
        v.check(&mut cache, t, later).expect("valid");
        assert_eq!(v.calls(), before, "moved entries are still found");
    }
    v.check(&mut cache, &user(9, NOW + 600), later)
        .expect("valid");
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.stats().evictions, 0);
}

mod sequences {
    use super::*;
    use crate::auth::{AuthConfig, AuthOptions, RequestParts};
    use proptest::prelude::*;

    /// A small set of tokens: short and long lived, not yet valid, expired, no `exp`, another
    /// key's, garbage; each allows some of `a`, `b/*` and publishing on `b/*`.
    fn tokens() -> Vec<String> {
        let other = EncodingKey::from_secret(b"another secret of at least 32 bytes").expect("key");
        let sse = json!({"subscribe": ["a", "b/*"], "publish": ["b/*"]});
        vec![
            hs(json!({"exp": NOW + 3, "sse": sse})).expose().to_owned(),
            hs(json!({"exp": NOW + 40, "sse": {"subscribe": ["a"]}}))
                .expose()
                .to_owned(),
            hs(json!({"nbf": NOW + 20, "exp": NOW + 60, "sse": sse}))
                .expose()
                .to_owned(),
            hs(json!({"exp": NOW - 10, "sse": sse})).expose().to_owned(),
            hs(json!({"sse": {"publish": ["*"]}})).expose().to_owned(),
            encode(&Header::default(), &json!({"sse": sse}), &other).expect("signs"),
            "garbage.x.y".to_owned(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// For any sequence of requests (a token of the set, a topic, subscribe or publish,
        /// the clock moving on — or back by a little, as a wall clock may), the decisions
        /// through a cache of 2 entries (evicting often) equal those without a cache.
        #[test]
        fn cached_decisions_equal_uncached_ones(
            steps in proptest::collection::vec((0usize..7, 0usize..3, any::<bool>(), -3i64..15), 1..60)
        ) {
            let c = AuthConfig::new(AuthOptions {
                jwt_secret: Some(String::from_utf8(SECRET.to_vec()).expect("ascii")),
                ..AuthOptions::default()
            })
            .expect("valid");
            let tokens = tokens();
            let mut cache = TokenCache::new(2);
            let mut now = NOW;
            for (token, topic, publish, dt) in steps {
                now = now.saturating_add_signed(dt);
                let h = format!("Bearer {}", tokens[token]).into_bytes();
                let headers: [(&str, &[u8]); 1] = [("authorization", &h)];
                let req = RequestParts { headers: &headers, query: &[] };
                let topic = ["a", "b/1", "c"][topic];
                if publish {
                    prop_assert_eq!(
                        c.authorize_publish_cached(&req, topic, now, &mut cache),
                        c.authorize_publish(&req, topic, now)
                    );
                } else {
                    prop_assert_eq!(
                        c.authorize_subscribe_cached(&req, &[topic], now, &mut cache),
                        c.authorize_subscribe(&req, &[topic], now)
                    );
                }
                prop_assert!(cache.len() <= 2);
            }
        }
    }
}
