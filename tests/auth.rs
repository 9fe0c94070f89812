//! Private topics against the real binary: who may subscribe and publish, with signed tokens
//! from a header, a cookie or the query; the token-expiry close; resume within the claims;
//! CORS with `--allow-origin`; bad flags.

mod util;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use util::{Server, Stream, http, status_of};

const SEC: Duration = Duration::from_secs(1);
const SECRET: &str = "a test secret of at least 32 bytes!";
const RSA_PRIVATE: &[u8] = include_bytes!("../src/auth/testdata/rsa-private.pem");
const RSA_PUBLIC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/auth/testdata/rsa-public.pem"
);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn hs(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("test key");
    encode(&Header::new(Algorithm::HS256), claims, &key).expect("signs")
}

fn rs(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("test key");
    encode(&Header::new(Algorithm::RS256), claims, &key).expect("signs")
}

/// Claims for `sub`, valid for an hour.
fn claims(subscribe: &[&str], publish: &[&str]) -> Value {
    json!({"sub": "tester", "exp": unix_now() + 3600,
           "sse": {"subscribe": subscribe, "publish": publish}})
}

fn user42() -> String {
    hs(&claims(&["user/42"], &["user/42"]))
}

fn with_secret(extra: &[&str]) -> Server {
    let mut args = vec!["--interval", "off", "--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `GET path` with extra header lines; (status, head, body) of a complete answer.
fn get(server: &Server, path: &str, headers: &[&str]) -> (u16, String, String) {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("Connection: close\r\n\r\n");
    let (h, b) = http(server.addr, &raw);
    (status_of(&h), h, b)
}

/// Publishes with extra header lines; (status, body).
fn post(server: &Server, query: &str, headers: &[&str], data: &str) -> (u16, String) {
    let mut raw = format!("POST /publish{query} HTTP/1.1\r\nHost: x\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{data}",
        data.len()
    ));
    let (h, b) = http(server.addr, &raw);
    (status_of(&h), b)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

#[test]
fn no_token_is_401_with_www_authenticate() {
    let server = with_secret(&[]);
    let (status, head, _) = get(&server, "/events?topic=user/42", &[]);
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("\r\nWWW-Authenticate: Bearer"), "{head}");
    // The default stream stays public.
    let s = Stream::open(server.addr, "/events", &[]);
    assert!(s.head.starts_with("HTTP/1.1 200"), "{}", s.head);
}

#[test]
fn invalid_tokens_are_401() {
    let server = with_secret(&[]);
    let now = unix_now();
    let sub = json!({"subscribe": ["user/42"]});
    let good = user42();
    let (head_b64, payload_b64, _) = {
        let mut parts = good.split('.');
        (
            parts.next().expect("header").to_owned(),
            parts.next().expect("payload").to_owned(),
            parts.next().expect("signature").to_owned(),
        )
    };
    let wrong_signature = format!(
        "{head_b64}.{payload_b64}.{}",
        URL_SAFE_NO_PAD.encode([7u8; 32])
    );
    let other_secret = {
        let key = EncodingKey::from_secret(b"another secret of at least 32 bytes").expect("key");
        encode(
            &Header::new(Algorithm::HS256),
            &claims(&["user/42"], &[]),
            &key,
        )
        .expect("signs")
    };
    let expired = hs(&json!({"exp": now - 60, "sse": sub}));
    let not_yet = hs(&json!({"exp": now + 3600, "nbf": now + 600, "sse": sub}));
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        payload_b64
    );
    for (what, token) in [
        ("wrong signature", wrong_signature.as_str()),
        ("another secret", &other_secret),
        ("expired", &expired),
        ("nbf in the future", &not_yet),
        ("alg none", &alg_none),
        ("garbage", "not.a.token"),
    ] {
        let (status, head, body) = get(&server, "/events?topic=user/42", &[&bearer(token)]);
        assert_eq!(status, 401, "{what}: {head}\n{body}");
        assert!(
            head.contains("WWW-Authenticate: Bearer error=\"invalid_token\""),
            "{what}: {head}"
        );
    }
    // An HS256 token (even one signed with the public key's bytes) against an RS256 key.
    let rsa = Server::start(&["--interval", "off", "--jwt-public-key", RSA_PUBLIC]);
    let pem = std::fs::read(RSA_PUBLIC).expect("pem");
    let confused = {
        let key = EncodingKey::from_secret(&pem).expect("key");
        encode(
            &Header::new(Algorithm::HS256),
            &claims(&["user/42"], &[]),
            &key,
        )
        .expect("signs")
    };
    for token in [user42(), confused] {
        let (status, head, _) = get(&rsa, "/events?topic=user/42", &[&bearer(&token)]);
        assert_eq!(status, 401, "{head}");
    }
    // The RS256 token itself is accepted.
    let ok = rs(&claims(&["user/42"], &[]));
    let s = Stream::open(rsa.addr, "/events?topic=user/42", &[&bearer(&ok)]);
    assert!(s.head.starts_with("HTTP/1.1 200"), "{}", s.head);
}

#[test]
fn a_topic_outside_the_claims_is_403_naming_it_in_the_body() {
    let server = with_secret(&[]);
    let token = user42();
    for path in [
        "/events?topic=user/43",
        "/events?topic=user/42&topic=user/43",
    ] {
        let (status, head, body) = get(&server, path, &[&bearer(&token)]);
        assert_eq!(status, 403, "{path}: {head}");
        assert!(body.contains("\"user/43\""), "{path}: {body}");
        assert!(
            !head.contains("user/43"),
            "the topic is not in a header: {head}"
        );
    }
}

#[test]
fn allowed_topics_stream_from_header_cookie_or_query() {
    let server = with_secret(&[]);
    let token = user42();
    let cookie = format!("Cookie: theme=dark; sse_token={token}");
    let query = format!("/events?topic=user/42&access_token={token}");
    let mut streams = vec![
        Stream::open(server.addr, "/events?topic=user/42", &[&bearer(&token)]),
        Stream::open(server.addr, "/events?topic=user/42", &[&cookie]),
        Stream::open(server.addr, &query, &[]),
    ];
    for s in &streams {
        assert!(s.head.starts_with("HTTP/1.1 200"), "{}", s.head);
    }
    let (status, id) = post(&server, "?topic=user/42", &[&bearer(&token)], "hello 42");
    assert_eq!(status, 200, "{id}");
    for s in &mut streams {
        let got = s.wait_events(1, 3 * SEC);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, "hello 42");
    }
    // The token appears neither in /clients nor anywhere it lists.
    let (status, _, body) = get(&server, "/clients", &[]);
    assert_eq!(status, 200);
    assert!(body.contains("user/42"), "{body}");
    assert!(!body.contains(&token), "{body}");
}

#[test]
fn publish_needs_a_publish_claim_or_the_shared_token() {
    let server = with_secret(&["--publish-token", "shared-s3cret"]);
    let token = hs(&claims(&[], &["shop/7/*"]));
    let mut s = Stream::open(
        server.addr,
        "/events?topic=shop/7/orders",
        &[&bearer(&hs(&claims(&["shop/*"], &[])))],
    );
    assert_eq!(
        post(&server, "?topic=shop/7/orders", &[&bearer(&token)], "a").0,
        200
    );
    let (status, body) = post(&server, "?topic=shop/8/orders", &[&bearer(&token)], "b");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("shop/8/orders"), "{body}");
    assert_eq!(post(&server, "?topic=shop/7/orders", &[], "c").0, 401);
    assert_eq!(
        post(&server, "?topic=shop/7/orders", &[&bearer("garbage")], "d").0,
        401
    );
    // A cookie never publishes (a cross-site form would carry it).
    let cookie = format!("Cookie: sse_token={token}");
    assert_eq!(
        post(&server, "?topic=shop/7/orders", &[&cookie], "e").0,
        401
    );
    assert_eq!(
        post(&server, "?topic=shop/8/x", &[&bearer("shared-s3cret")], "f").0,
        200
    );
    assert_eq!(
        post(
            &server,
            "?topic=shop/7/orders",
            &[&bearer("shared-s3cret")],
            "g"
        )
        .0,
        200
    );
    let got: Vec<String> = s
        .wait_events(2, 3 * SEC)
        .iter()
        .map(|e| e.data.clone())
        .collect();
    assert_eq!(got, ["a", "g"]);
}

#[test]
fn an_expiring_token_ends_the_stream_with_a_reset_and_nothing_is_lost() {
    let server = with_secret(&[]);
    // exp one second from now: the stream closes at exp + 5 s of leeway.
    let short = hs(&json!({"exp": unix_now() + 1, "sse": {"subscribe": ["user/42"]}}));
    let publisher = bearer(&hs(&claims(&[], &["user/42"])));
    let mut s = Stream::open(server.addr, "/events?topic=user/42", &[&bearer(&short)]);
    assert!(s.head.starts_with("HTTP/1.1 200"), "{}", s.head);
    assert_eq!(
        post(&server, "?topic=user/42", &[&publisher], "before").0,
        200
    );
    s.wait_events(1, 3 * SEC);
    assert!(
        s.wait_closed(10 * SEC),
        "the stream must close at the token's expiry"
    );
    let last = s.events.last().expect("events");
    assert_eq!(last.event_type, "reset");
    assert_eq!(last.data, r#"{"reason":"token-expired"}"#);
    assert_eq!(s.events[0].data, "before");
    assert_eq!(s.events.len(), 2);
    let resume_id = last.last_event_id.clone();
    assert!(!resume_id.is_empty());
    assert_eq!(
        post(&server, "?topic=user/42", &[&publisher], "while away").0,
        200
    );
    // A fresh token and the reset's id: exactly what was missed.
    let last_id = format!("Last-Event-ID: {resume_id}");
    let mut again = Stream::open(
        server.addr,
        "/events?topic=user/42",
        &[&bearer(&user42()), &last_id],
    );
    let got: Vec<String> = again
        .wait_events(1, 3 * SEC)
        .iter()
        .map(|e| e.data.clone())
        .collect();
    assert_eq!(got, ["while away"]);
    assert_eq!(
        server.metric("sse_connections_closed_total{reason=\"token-expired\"}"),
        1.0
    );
}

#[test]
fn resume_replays_only_topics_the_token_allows() {
    let server = with_secret(&["--publish-token", "pub"]);
    let (_, first) = post(&server, "?topic=user/42", &[&bearer("pub")], "42-a");
    post(&server, "?topic=user/43", &[&bearer("pub")], "43-a");
    post(&server, "?topic=user/42", &[&bearer("pub")], "42-b");
    post(&server, "?topic=user/43", &[&bearer("pub")], "43-b");
    let token = user42();
    let last_id = format!("Last-Event-ID: {}", first.trim());
    // Asking for the forbidden topic too is refused outright.
    let (status, _, _) = get(
        &server,
        "/events?topic=user/42&topic=user/43",
        &[&bearer(&token), &last_id],
    );
    assert_eq!(status, 403);
    let mut s = Stream::open(
        server.addr,
        "/events?topic=user/42",
        &[&bearer(&token), &last_id],
    );
    post(&server, "?topic=user/43", &[&bearer("pub")], "43-c");
    post(&server, "?topic=user/42", &[&bearer("pub")], "42-c");
    s.wait_events(2, 3 * SEC);
    std::thread::sleep(Duration::from_millis(200));
    s.fill_nonblocking();
    let got: Vec<&str> = s.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(got, ["42-b", "42-c"]);
}

#[test]
fn allow_origin_answers_the_listed_origin_with_credentials() {
    let server = with_secret(&["--allow-origin", "http://app.example:8080"]);
    let token = user42();
    let cookie = format!("Cookie: sse_token={token}");
    let s = Stream::open(
        server.addr,
        "/events?topic=user/42",
        &[&cookie, "Origin: http://app.example:8080"],
    );
    assert!(s.head.starts_with("HTTP/1.1 200"), "{}", s.head);
    assert!(
        s.head
            .contains("\r\nAccess-Control-Allow-Origin: http://app.example:8080\r\n"),
        "{}",
        s.head
    );
    assert!(
        s.head
            .contains("\r\nAccess-Control-Allow-Credentials: true\r\n"),
        "{}",
        s.head
    );
    assert!(s.head.contains("\r\nVary: Origin"), "{}", s.head);
    let other = Stream::open(
        server.addr,
        "/events?topic=user/42",
        &[&cookie, "Origin: http://evil.example"],
    );
    assert!(
        !other.head.contains("Access-Control-Allow-Origin"),
        "{}",
        other.head
    );
    // A refusal carries the CORS lines too, so the page can read why.
    let (status, head, _) = get(
        &server,
        "/events?topic=user/42",
        &["Origin: http://app.example:8080"],
    );
    assert_eq!(status, 401);
    assert!(
        head.contains("Access-Control-Allow-Credentials: true"),
        "{head}"
    );
}

#[test]
fn bad_auth_flags_exit_with_2() {
    for (args, says) in [
        (
            vec!["--jwt-public-key", "/nonexistent/key.pem"],
            "--jwt-public-key",
        ),
        (vec!["--jwt-secret", "short"], "32 bytes"),
        (vec!["--jwt-public-key", file!()], "PEM"),
        (vec!["--allow-origin", "example.com"], "--allow-origin"),
        (vec!["--jwt-audience", "a"], "needs --jwt-secret"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sse-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn preflights_and_complete_answers_follow_the_origin_policy() {
    let preflight = |server: &Server, path: &str, origin: &str| {
        let raw = format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        );
        http(server.addr, &raw).0
    };
    let open = Server::start(&["--interval", "off"]);
    let h = preflight(&open, "/publish", "http://any.example");
    assert_eq!(status_of(&h), 204, "{h}");
    assert!(h.contains("\r\nAccess-Control-Allow-Origin: *\r\n"), "{h}");
    assert!(
        h.contains("\r\nAccess-Control-Allow-Methods: POST\r\n"),
        "{h}"
    );
    assert!(!h.contains("Credentials"), "never credentials with *: {h}");
    let h = preflight(&open, "/events", "http://any.example");
    assert!(
        h.contains("\r\nAccess-Control-Allow-Methods: GET, HEAD\r\n"),
        "{h}"
    );

    let listed = with_secret(&[
        "--allow-origin",
        "http://app.example",
        "--publish-token",
        "p",
    ]);
    let h = preflight(&listed, "/publish", "http://app.example");
    assert_eq!(status_of(&h), 204, "{h}");
    assert!(
        h.contains("\r\nAccess-Control-Allow-Origin: http://app.example\r\n"),
        "{h}"
    );
    assert!(
        h.contains("\r\nAccess-Control-Allow-Headers: Authorization"),
        "{h}"
    );
    let h = preflight(&listed, "/publish", "http://evil.example");
    assert!(!h.contains("Access-Control-Allow-"), "{h}");
    let (h, _) = http(
        listed.addr,
        "POST /publish HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\n\
         Authorization: Bearer p\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    );
    assert_eq!(status_of(&h), 200, "{h}");
    assert!(
        h.contains("\r\nAccess-Control-Allow-Origin: http://app.example\r\n"),
        "{h}"
    );
    assert!(!h.contains(": *"), "{h}");
}

#[test]
fn head_of_a_private_stream_needs_the_token_too() {
    let server = with_secret(&[]);
    let head = |extra: &str| {
        let raw = format!(
            "HEAD /events?topic=user/42 HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
        );
        status_of(&http(server.addr, &raw).0)
    };
    assert_eq!(head(""), 401);
    assert_eq!(head(&format!("{}\r\n", bearer(&user42()))), 200);
}

/// The cache of verified tokens (`--jwt-cache`, on by default): a reconnect with the same
/// token is answered from it, and once the token is past `exp` + leeway the cached entry
/// refuses it (401, expired) instead of granting it; with `--jwt-cache 0` nothing is cached.
#[test]
fn a_cached_token_is_refused_after_its_exp() {
    let server = with_secret(&[]);
    let exp = unix_now() + 1;
    let token = hs(&json!({"exp": exp, "sse": {"subscribe": ["user/42"]}}));
    let head = |server: &Server| {
        let raw = format!(
            "HEAD /events?topic=user/42 HTTP/1.1\r\nHost: x\r\n{}\r\nConnection: close\r\n\r\n",
            bearer(&token)
        );
        status_of(&http(server.addr, &raw).0)
    };
    for _ in 0..3 {
        assert_eq!(head(&server), 200);
    }
    assert_eq!(server.metric("sse_jwt_cache_misses_total"), 1.0);
    assert_eq!(server.metric("sse_jwt_cache_hits_total"), 2.0);
    assert_eq!(server.metric("sse_jwt_cache_entries"), 1.0);
    // Past exp + 5 s of leeway (by the server's clock, which the test shares).
    while unix_now() < exp + 5 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, head_text, body) = get(&server, "/events?topic=user/42", &[&bearer(&token)]);
    assert_eq!(status, 401, "{head_text}");
    assert!(body.contains("token expired"), "{body}");
    assert_eq!(
        server.metric("sse_jwt_cache_hits_total"),
        3.0,
        "the expiry was found in the cache"
    );
    assert_eq!(server.metric("sse_jwt_cache_entries"), 0.0, "and dropped");
    // Refused from then on, and never cached as a failure either.
    assert_eq!(
        get(&server, "/events?topic=user/42", &[&bearer(&token)]).0,
        401
    );
    assert_eq!(server.metric("sse_jwt_cache_misses_total"), 2.0);
    assert_eq!(server.metric("sse_jwt_cache_entries"), 0.0);

    let uncached = with_secret(&["--jwt-cache", "0"]);
    let fresh = hs(&claims(&["user/42"], &[]));
    let raw = format!(
        "HEAD /events?topic=user/42 HTTP/1.1\r\nHost: x\r\n{}\r\nConnection: close\r\n\r\n",
        bearer(&fresh)
    );
    assert_eq!(status_of(&http(uncached.addr, &raw).0), 200);
    assert!(
        !http(
            uncached.addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .1
        .contains("sse_jwt_cache"),
        "no cache series when the cache is off"
    );
}
