//! Token, cookie and query parsing and token verification with fixed (TEST-ONLY) keys: nothing
//! panics, the decision is deterministic, a grant covers every topic it was asked for, and a
//! token never shows in `Debug` output.
//!
//! Input layout: byte 0 = the time offset (signed, × 4 s around a fixed "now"), then fields
//! separated by NUL: the `Authorization` value, the `Cookie` value, the `access_token` value,
//! the requested topics (separated by `,`). Missing fields are absent.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sse_server::auth::extract::{self, Sources};
use sse_server::auth::{AuthConfig, AuthError, AuthOptions, BearerToken, RequestParts};

/// The time the seed tokens were minted around (their `exp` is NOW + 60).
const NOW: i64 = 1_800_000_000;

/// The test secret (the same as the unit tests' and the seed corpus's).
const SECRET: &str = "a test secret of at least 32 bytes!";

/// Two configurations: HS256 + ES256 with `news/*` public, and RS256 with the defaults, both
/// with a shared publish token.
fn configs() -> &'static [AuthConfig; 2] {
    static CONFIGS: OnceLock<[AuthConfig; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let config = |options| AuthConfig::new(options).expect("the test keys are valid");
        [
            config(AuthOptions {
                jwt_secret: Some(SECRET.into()),
                jwt_public_key_pem: Some(
                    include_bytes!("../../src/auth/testdata/ec-public.pem").to_vec(),
                ),
                public_topics: Some(vec!["news/*".into(), String::new()]),
                publish_token: Some("shared".into()),
                ..AuthOptions::default()
            }),
            config(AuthOptions {
                jwt_public_key_pem: Some(
                    include_bytes!("../../src/auth/testdata/rsa-public.pem").to_vec(),
                ),
                publish_token: Some("shared".into()),
                ..AuthOptions::default()
            }),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&offset, rest)) = data.split_first() else {
        return;
    };
    let now = (NOW + i64::from(offset as i8) * 4) as u64;
    let mut fields = rest.split(|&b| b == 0);
    let authorization = fields.next();
    let cookie = fields.next();
    let access_token = fields.next().map(String::from_utf8_lossy);
    let topics_field = fields.next().map(String::from_utf8_lossy);

    let mut headers: Vec<(&str, &[u8])> = Vec::new();
    if let Some(a) = authorization {
        headers.push(("Authorization", a));
    }
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    let query: Vec<(&str, &str)> = access_token
        .as_deref()
        .map(|t| vec![("topic", "x"), ("access_token", t)])
        .unwrap_or_default();
    let topics: Vec<&str> = match topics_field.as_deref() {
        Some(t) => t.split(',').collect(),
        None => vec!["user/42"],
    };
    let parts = RequestParts {
        headers: &headers,
        query: &query,
    };

    // Extraction alone, with the default and another cookie name.
    for name in [extract::DEFAULT_COOKIE, "other"] {
        if let Ok(Some((token, _))) = extract::find_token(&headers, &query, name, Sources::All) {
            check_redacted(&token);
        }
    }

    for config in configs() {
        let first = config.authorize_subscribe(&parts, &topics, now);
        assert_eq!(first, config.authorize_subscribe(&parts, &topics, now));
        match &first {
            Ok(grant) => {
                for t in &topics {
                    assert!(grant.may_see(t), "granted without covering {t:?}");
                }
                if let Some(secs) = grant.secs_until_expiry(now) {
                    assert!(secs > 0, "a grant that is already expired");
                }
            }
            Err(AuthError::Forbidden { topic }) => {
                assert!(topics.contains(&topic.as_str()));
                assert!(!config.is_public(topic));
            }
            Err(e) => {
                assert_eq!(e.status(), 401);
                assert!(e.headers()[0].starts_with("WWW-Authenticate: Bearer"));
            }
        }
        for topic in &topics {
            let publish = config.authorize_publish(&parts, topic, now);
            if let Err(e) = publish {
                assert!(matches!(e.status(), 401 | 403));
                let _ = e.body();
            }
        }
        let _ = config.has_shared_token(&parts);
        // The raw fields as tokens, straight into verification.
        for raw in [authorization, cookie].into_iter().flatten() {
            if let Ok(text) = std::str::from_utf8(raw) {
                let _ = config.verify_token(&BearerToken::new(text), now);
            }
        }
    }
});

fn check_redacted(token: &BearerToken) {
    let shown = format!("{token:?}");
    let expected = format!("BearerToken(<redacted, {} bytes>)", token.expose().len());
    assert_eq!(shown, expected, "Debug must show the length only");
}
