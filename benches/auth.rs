//! The cost of authorizing a stream request on the reactor thread: verifying an HS256, RS256
//! and ES256 token (jsonwebtoken, RustCrypto backend) and the whole subscribe decision with the
//! token in a cookie; and the least a check handed to a helper thread costs (a round trip
//! through a bounded channel and a `mio::Waker`). Keys are the TEST-ONLY pairs of
//! `src/auth/testdata/`.

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use sse_server::auth::{AuthConfig, AuthOptions, BearerToken, RequestParts};
use std::hint::black_box;

const SECRET: &str = "a test secret of at least 32 bytes!";
const NOW: u64 = 1_800_000_000;

fn claims() -> serde_json::Value {
    serde_json::json!({
        "sub": "user-42",
        "exp": NOW + 3600,
        "sse": {"subscribe": ["user/42", "shop/7/*"], "publish": ["shop/7/*"]}
    })
}

fn sign(alg: Algorithm, key: &EncodingKey) -> String {
    encode(&Header::new(alg), &claims(), key).expect("signing works")
}

fn config(secret: bool, pem: Option<&[u8]>) -> AuthConfig {
    AuthConfig::new(AuthOptions {
        jwt_secret: secret.then(|| SECRET.to_owned()),
        jwt_public_key_pem: pem.map(<[u8]>::to_vec),
        ..AuthOptions::default()
    })
    .expect("valid test keys")
}

fn bench(c: &mut Criterion) {
    let rsa_private = include_bytes!("../src/auth/testdata/rsa-private.pem");
    let ec_private = include_bytes!("../src/auth/testdata/ec-private.pem");
    let cases = [
        (
            "hs256",
            config(true, None),
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
            ),
        ),
        (
            "rs256_2048",
            config(
                false,
                Some(include_bytes!("../src/auth/testdata/rsa-public.pem")),
            ),
            sign(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(rsa_private).expect("key"),
            ),
        ),
        (
            "es256",
            config(
                false,
                Some(include_bytes!("../src/auth/testdata/ec-public.pem")),
            ),
            sign(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(ec_private).expect("key"),
            ),
        ),
    ];
    let mut g = c.benchmark_group("auth");
    for (name, config, token) in &cases {
        let bearer = BearerToken::new(token.clone());
        g.bench_function(format!("verify_{name}"), |b| {
            b.iter(|| assert!(config.verify_token(black_box(&bearer), NOW).is_ok()))
        });
    }
    let (_, hs_config, hs_token) = &cases[0];
    let cookie = format!("theme=dark; sse_token={hs_token}; lang=en");
    let headers: [(&str, &[u8]); 2] = [
        ("Accept", b"text/event-stream"),
        ("Cookie", cookie.as_bytes()),
    ];
    let parts = RequestParts {
        headers: &headers,
        query: &[("topic", "user/42")],
    };
    g.bench_function("subscribe_hs256_cookie", |b| {
        b.iter(|| {
            assert!(
                hs_config
                    .authorize_subscribe(black_box(&parts), &["user/42"], NOW)
                    .is_ok()
            )
        })
    });
    g.bench_function("subscribe_public_no_token", |b| {
        b.iter(|| {
            assert!(
                hs_config
                    .authorize_subscribe(black_box(&RequestParts::default()), &[""], NOW)
                    .is_ok()
            )
        })
    });
    g.bench_function("thread_round_trip", |b| {
        // What a check handed to a helper thread costs at the least, whatever the check: the
        // verifier's primitives (a bounded channel each way, a `mio::Waker` on the reactor's
        // `Poll`), with a thread that answers at once. HS256 verifies in less than this.
        use std::sync::mpsc::sync_channel;
        let mut poll = mio::Poll::new().expect("poll");
        let waker =
            std::sync::Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        let (requests, inbox) = sync_channel::<u64>(1024);
        let (outbox, replies) = sync_channel::<u64>(1024);
        let thread_waker = waker.clone();
        let helper = std::thread::spawn(move || {
            while let Ok(n) = inbox.recv() {
                if outbox.send(n).is_err() {
                    return;
                }
                let _ = thread_waker.wake();
            }
        });
        let mut events = mio::Events::with_capacity(8);
        b.iter(|| {
            requests.try_send(black_box(7)).expect("room");
            loop {
                if let Ok(n) = replies.try_recv() {
                    break black_box(n);
                }
                poll.poll(&mut events, None).expect("poll");
            }
        });
        drop(requests);
        let _ = helper.join();
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
