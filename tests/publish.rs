//! Publishing, topics, resume, stdin, tokens, keep-alives: the real binary, real sockets,
//! real `curl`.

mod util;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use util::{Server, Stream, eventually, http, publish, status_of};

const SEC: Duration = Duration::from_secs(1);

fn curl(args: &[&str]) -> Option<(String, String)> {
    let out = Command::new("curl").args(args).output().ok()?;
    Some((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn wait_subscribed(server: &Server, n: f64) {
    assert!(eventually(Duration::from_secs(3), || server
        .metric("sse_clients")
        == n));
}

#[test]
fn curl_publish_reaches_a_streaming_client() {
    let server = Server::start(&["--interval", "off"]);
    let mut c = Stream::open(server.addr, "/events", &[]);
    wait_subscribed(&server, 1.0);
    let Some((id, _)) = curl(&["-s", "-d", "hello", &server.url("/publish")]) else {
        eprintln!("SKIP: curl not installed");
        return;
    };
    let id = id.trim().to_owned();
    assert!(!id.is_empty() && id.is_ascii() && id.len() < 40, "{id:?}");
    c.wait_events(1, 3 * SEC);
    assert_eq!(c.events[0].data, "hello");
    assert_eq!(c.events[0].event_type, "message");
    assert_eq!(c.events[0].last_event_id, id);
}

#[test]
fn multi_line_bodies_arrive_with_lf_breaks_and_cannot_inject_fields() {
    let server = Server::start(&["--interval", "off"]);
    let mut c = Stream::open(server.addr, "/events", &[]);
    wait_subscribed(&server, 1.0);
    let body = "line one\r\nline two\rline three\nid: injected\n\nevent: evil\ndata: x\r\n";
    let dir = std::env::temp_dir().join(format!("sse-pub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("body.txt");
    std::fs::write(&file, body).unwrap();
    let at = format!("@{}", file.display());
    if curl(&[
        "-s",
        "--data-binary",
        &at,
        &server.url("/publish?event=multi"),
    ])
    .is_none()
    {
        eprintln!("SKIP: curl not installed");
        return;
    }
    c.wait_events(1, 3 * SEC);
    assert_eq!(c.events.len(), 1, "{:?}", c.events);
    assert_eq!(c.events[0].event_type, "multi");
    assert_eq!(
        c.events[0].data,
        "line one\nline two\nline three\nid: injected\n\nevent: evil\ndata: x\n"
    );
    assert!(!c.events[0].last_event_id.contains("injected"));
}

#[test]
fn curl_chunked_publish_works() {
    let server = Server::start(&["--interval", "off"]);
    let mut c = Stream::open(server.addr, "/events", &[]);
    wait_subscribed(&server, 1.0);
    let dir = std::env::temp_dir().join(format!("sse-chunk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("body.txt");
    std::fs::write(&file, "chunked\nbody").unwrap();
    let at = format!("@{}", file.display());
    let Some((id, _)) = curl(&[
        "-s",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &at,
        &server.url("/publish"),
    ]) else {
        eprintln!("SKIP: curl not installed");
        return;
    };
    assert!(!id.trim().is_empty());
    c.wait_events(1, 3 * SEC);
    assert_eq!(c.events[0].data, "chunked\nbody");
}

#[test]
fn publish_validation() {
    let server = Server::start(&["--interval", "off", "--max-body", "1000"]);
    assert_eq!(publish(server.addr, "?event=a%0Db", "x").0, 400);
    assert_eq!(publish(server.addr, "?id=a%0Ab", "x").0, 400);
    assert_eq!(publish(server.addr, "?id=a%00b", "x").0, 400);
    assert_eq!(publish(server.addr, "", &"x".repeat(1001)).0, 413);
    assert_eq!(publish(server.addr, "", &"x".repeat(1000)).0, 200);
    let raw = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n\xff\xfe";
    // Raw bytes (not through a String): the body is not UTF-8.
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.write_all(raw).unwrap();
    s.set_read_timeout(Some(3 * SEC)).unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    assert_eq!(status_of(&out), 400, "{out}");
}

#[test]
fn publisher_ids_are_kept_and_resume_works() {
    let server = Server::start(&["--interval", "off"]);
    let (status, body) = publish(server.addr, "?topic=t&id=order-1", "a");
    assert_eq!((status, body.trim()), (200, "order-1"));
    publish(server.addr, "?topic=t&id=order-2", "b");
    let mut c = Stream::open(server.addr, "/events?topic=t", &["Last-Event-ID: order-1"]);
    c.wait_events(1, 3 * SEC);
    assert_eq!(c.events.len(), 1);
    assert_eq!(
        (
            c.events[0].data.as_str(),
            c.events[0].last_event_id.as_str()
        ),
        ("b", "order-2")
    );
}

#[test]
fn a_topic_a_client_gets_nothing_from_topic_b() {
    let server = Server::start(&["--interval", "200ms"]);
    let mut a = Stream::open(server.addr, "/events?topic=A", &[]);
    let mut both = Stream::open(server.addr, "/events?topic=A&topic=B", &[]);
    let mut default = Stream::open(server.addr, "/", &[]);
    wait_subscribed(&server, 3.0);
    for i in 0..5 {
        publish(server.addr, "?topic=B", &format!("b{i}"));
    }
    publish(server.addr, "?topic=A", "a0");
    publish(server.addr, "", "d0");
    both.wait_events(6, 3 * SEC);
    a.wait_events(2, Duration::from_millis(800));
    default.wait_events(2, 3 * SEC);
    assert_eq!(
        a.events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        vec!["a0"]
    );
    assert_eq!(
        both.events
            .iter()
            .map(|e| e.data.as_str())
            .collect::<Vec<_>>(),
        vec!["b0", "b1", "b2", "b3", "b4", "a0"]
    );
    assert!(default.events.iter().any(|e| e.data == "d0"));
    assert!(
        default
            .events
            .iter()
            .all(|e| e.data == "d0" || e.data.starts_with("the time is"))
    );
}

#[test]
fn reconnect_with_last_event_id_replays_exactly_the_missed_events() {
    let server = Server::start(&["--interval", "200ms"]);
    let mut c = Stream::open(server.addr, "/events", &[]);
    wait_subscribed(&server, 1.0);
    publish(server.addr, "", "one");
    publish(server.addr, "", "two");
    c.wait_events(2, 3 * SEC);
    let seen: Vec<_> = c
        .events
        .iter()
        .filter(|e| !e.data.starts_with("the time"))
        .cloned()
        .collect();
    assert_eq!(seen.len(), 2);
    let last = seen[1].last_event_id.clone();
    drop(c);
    publish(server.addr, "", "three");
    publish(server.addr, "", "four");
    // Header form.
    let mut r = Stream::open(server.addr, "/events", &[&format!("Last-Event-ID: {last}")]);
    r.wait_events(2, 3 * SEC);
    let replay: Vec<&str> = r
        .events
        .iter()
        .map(|e| e.data.as_str())
        .filter(|d| !d.starts_with("the time"))
        .collect();
    assert_eq!(replay, vec!["three", "four"]);
    // Query form, for polyfills.
    let mut q = Stream::open(server.addr, &format!("/events?lastEventId={last}"), &[]);
    q.wait_events(2, 3 * SEC);
    assert_eq!(q.events[0].data, "three");
    assert_eq!(q.events[1].data, "four");
}

#[test]
fn too_old_and_unknown_ids_get_a_reset_event_first() {
    let server = Server::start(&["--interval", "off", "--history", "2"]);
    let first = publish(server.addr, "?topic=x", "e0").1.trim().to_owned();
    for i in 1..5 {
        publish(server.addr, "?topic=x", &format!("e{i}"));
    }
    let mut c = Stream::open(
        server.addr,
        "/events?topic=x",
        &[&format!("Last-Event-ID: {first}")],
    );
    c.wait_events(1, 3 * SEC);
    assert_eq!(c.events[0].event_type, "reset");
    assert!(c.events[0].data.contains("too-old"));
    publish(server.addr, "?topic=x", "live");
    c.wait_events(2, 3 * SEC);
    assert_eq!(c.events[1].data, "live", "continues at the live edge");
    let mut u = Stream::open(
        server.addr,
        "/events?topic=x",
        &["Last-Event-ID: never-issued"],
    );
    u.wait_events(1, 3 * SEC);
    assert_eq!(u.events[0].event_type, "reset");
}

#[test]
fn an_id_from_before_a_restart_gets_reset_then_everything_since() {
    let mut before = Server::start(&["--interval", "off"]);
    let old_id = publish(before.addr, "", "old").1.trim().to_owned();
    before.terminate();
    let after = Server::start(&["--interval", "off"]);
    publish(after.addr, "", "new1");
    publish(after.addr, "", "new2");
    let mut c = Stream::open(
        after.addr,
        "/events",
        &[&format!("Last-Event-ID: {old_id}")],
    );
    c.wait_events(3, 3 * SEC);
    let got = c.types_and_datas();
    assert_eq!(
        got,
        vec![
            ("reset", "{\"reason\":\"restart\"}"),
            ("message", "new1"),
            ("message", "new2")
        ]
    );
}

#[test]
fn stdin_lines_become_events() {
    let mut server = Server::start_with(&["--interval", "off", "--stdin"], Stdio::piped());
    let mut stdin = server.child.stdin.take().unwrap();
    let mut c = Stream::open(server.addr, "/events", &[]);
    wait_subscribed(&server, 1.0);
    stdin
        .write_all(b"first line\nsecond line\r\nthird")
        .unwrap();
    stdin.flush().unwrap();
    c.wait_events(2, 3 * SEC);
    drop(stdin); // EOF: the partial last line is published, the server keeps serving
    c.wait_events(3, 3 * SEC);
    let got: Vec<&str> = c.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(got, vec!["first line", "second line", "third"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(publish(server.addr, "", "still alive").0, 200);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "EOF on stdin must not stop the server"
    );
}

#[test]
fn stdin_from_a_regular_file_works() {
    let dir = std::env::temp_dir().join(format!("sse-stdin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lines.txt");
    std::fs::write(&path, "a\nb\n").unwrap();
    // The lines are published at start, before anyone subscribes: they land in history.
    let server = Server::start_with(
        &["--interval", "off", "--stdin"],
        Stdio::from(std::fs::File::open(&path).unwrap()),
    );
    let mut c = Stream::open(server.addr, "/events", &["Last-Event-ID: 00-0"]);
    c.wait_events(3, 3 * SEC);
    let got: Vec<&str> = c.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(got, vec!["{\"reason\":\"restart\"}", "a", "b"]);
}

#[test]
fn publish_token_is_required_and_checked() {
    let server = Server::start(&["--interval", "off", "--publish-token", "s3cret"]);
    let send = |auth: &str| {
        let raw = format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1\r\nConnection: close\r\n\r\nx"
        );
        let (h, _) = http(server.addr, &raw);
        (status_of(&h), h)
    };
    let (s, h) = send("");
    assert_eq!(s, 401);
    assert!(h.contains("WWW-Authenticate: Bearer"));
    assert_eq!(send("Authorization: Bearer wrong\r\n").0, 403);
    assert_eq!(send("Authorization: Basic czNjcmV0\r\n").0, 401);
    assert_eq!(send("Authorization: Bearer s3cret\r\n").0, 200);
}

#[test]
fn non_loopback_without_token_refuses_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_sse-server"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--publish-token"));
}

#[test]
fn interval_off_keepalive_and_retry() {
    let server = Server::start(&[
        "--interval",
        "off",
        "--keepalive",
        "300ms",
        "--retry",
        "1500ms",
    ]);
    let mut c = Stream::open(server.addr, "/events", &[]);
    assert!(eventually(2 * SEC, || {
        c.fill();
        c.comments() >= 2
    }));
    assert!(
        c.events.is_empty(),
        "keep-alives must be comments, and no ticks with --interval off"
    );
    let mut r = Stream::open(server.addr, "/events", &[]);
    assert!(eventually(2 * SEC, || {
        r.fill();
        r.retry() == Some(1500)
    }));
}
