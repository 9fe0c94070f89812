//! The durable local log (`--data-dir`) end to end: the real binary, real sockets, real
//! files in a temp dir. History across SIGTERM and SIGKILL, two servers on one directory,
//! files that are not ours, and a disk that fills up.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{Server, Stream, eventually, publish, status_of};

const LIMIT: Duration = Duration::from_secs(15);

/// A temp directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sse-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node(dir: &Path, extra: &[&str]) -> Server {
    let dir = dir.to_str().expect("utf-8 path");
    let mut args = vec!["--data-dir", dir, "--interval", "off"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `GET /health`'s status.
fn health(addr: SocketAddr) -> u16 {
    util::health(addr).0
}

fn publish_ok(addr: SocketAddr, query: &str, data: &str) -> String {
    let (status, body) = publish(addr, query, data);
    assert_eq!(status, 200, "publish {data:?}: {body}");
    body.trim().to_owned()
}

/// (id, type, data) of every event a stream got.
fn received(s: &Stream) -> Vec<(String, String, String)> {
    s.events
        .iter()
        .map(|e| {
            (
                e.last_event_id.clone(),
                e.event_type.clone(),
                e.data.clone(),
            )
        })
        .collect()
}

fn epoch_of(id: &str) -> &str {
    id.rsplit_once('-').map_or("", |(e, _)| e)
}

#[test]
fn a_restart_resumes_exactly_the_missed_events() {
    let dir = TempDir::new("restart");
    let mut a = node(&dir.0, &[]);
    let mut s = Stream::open(a.addr, "/events?topic=t", &[]);
    let first: Vec<String> = (1..=3)
        .map(|i| publish_ok(a.addr, "?topic=t", &format!("before {i}")))
        .collect();
    s.wait_events(3, LIMIT);
    let last_seen = s.events.last().expect("events").last_event_id.clone();
    assert_eq!(last_seen, first[2]);
    drop(s);
    let missed: Vec<String> = (1..=2)
        .map(|i| publish_ok(a.addr, "?topic=t", &format!("missed {i}")))
        .collect();
    assert_eq!(a.terminate().map(|s| s.code()), Some(Some(0)));

    let b = node(&dir.0, &[]);
    let after = publish_ok(b.addr, "?topic=t", "after restart");
    assert_eq!(
        epoch_of(&after),
        epoch_of(&first[0]),
        "the log kept its epoch"
    );
    let mut s = Stream::open(
        b.addr,
        "/events?topic=t",
        &[&format!("Last-Event-ID: {last_seen}")],
    );
    s.wait_events(3, LIMIT);
    std::thread::sleep(Duration::from_millis(200));
    s.fill_nonblocking();
    let expected = vec![
        (missed[0].clone(), "message".into(), "missed 1".into()),
        (missed[1].clone(), "message".into(), "missed 2".into()),
        (after.clone(), "message".into(), "after restart".into()),
    ];
    assert_eq!(
        received(&s),
        expected,
        "exactly the missed events, no reset"
    );
}

/// Reads pipelined HTTP responses from `sock` until it closes or `limit` passes; returns
/// the ids of those answered 200, in order.
fn read_publish_answers(mut sock: TcpStream, limit: Duration) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut ids = Vec::new();
    let mut chunk = [0u8; 65536];
    while Instant::now() < deadline {
        match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() < end + 4 + length {
                break;
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
            if status_of(&head) == 200 {
                ids.push(body.trim().to_owned());
            }
            buf.drain(..end + 4 + length);
        }
    }
    ids
}

#[test]
fn a_sigkill_during_a_pipelined_burst_loses_no_acknowledged_event() {
    let dir = TempDir::new("sigkill");
    let a = node(&dir.0, &[]);
    let total = 3000;
    let mut sock = TcpStream::connect(a.addr).expect("connect");
    let reader = sock.try_clone().expect("clone");
    let answers = std::thread::spawn(move || read_publish_answers(reader, LIMIT));
    let pid = a.pid();
    let writer = std::thread::spawn(move || {
        for i in 0..total {
            let body = format!("burst {i}");
            let request = format!(
                "POST /publish?topic=b HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if sock.write_all(request.as_bytes()).is_err() {
                break;
            }
        }
    });
    // Kill it once some publishes were answered and others are surely still in flight.
    assert!(
        eventually(LIMIT, || {
            a.metric("sse_events_published_total") >= 200.0
        }),
        "publishes never got going"
    );
    util::signal(pid, 9);
    let _ = writer.join();
    let acknowledged = answers.join().expect("reader");
    drop(a);
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < total,
        "the kill came mid-burst: {} of {total} answered",
        acknowledged.len()
    );

    let b = node(&dir.0, &["--history", "16"]);
    let epoch = epoch_of(&acknowledged[0]).to_owned();
    let mut s = Stream::open(
        b.addr,
        "/events?topic=b",
        &[&format!("Last-Event-ID: {epoch}-0")],
    );
    assert!(
        eventually(LIMIT, || {
            s.fill_nonblocking();
            s.events.len() >= acknowledged.len()
        }),
        "only {} of {} acknowledged events came back",
        s.events.len(),
        acknowledged.len()
    );
    std::thread::sleep(Duration::from_millis(300));
    s.fill_nonblocking();
    let got: Vec<(String, String)> = s
        .events
        .iter()
        .map(|e| (e.last_event_id.clone(), e.data.clone()))
        .collect();
    assert!(
        got.iter().all(|(_, data)| data.starts_with("burst ")),
        "no reset, only burst events: {:?}",
        &got[..got.len().min(5)]
    );
    // Every acknowledged id is there once, in order, with its data; events the kill cut off
    // after their commit (answered never) may follow, also in order.
    for (i, (id, data)) in got.iter().enumerate() {
        assert_eq!(id, &format!("{epoch}-{}", i + 1), "offsets without holes");
        assert_eq!(data, &format!("burst {i}"), "in publish order");
    }
    assert_eq!(
        &acknowledged[..],
        &got[..acknowledged.len()]
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>()[..]
    );
}

#[test]
fn two_servers_on_one_directory_share_one_log() {
    let dir = TempDir::new("shared");
    let (a, b) = (node(&dir.0, &[]), node(&dir.0, &[]));
    let mut sa = Stream::open(a.addr, "/events?topic=s", &[]);
    let mut sb = Stream::open(b.addr, "/events?topic=s", &[]);
    let mut ids = Vec::new();
    for i in 0..200 {
        let via = if i % 2 == 0 { a.addr } else { b.addr };
        ids.push(publish_ok(via, "?topic=s", &format!("e{i}")));
    }
    let offsets: Vec<&str> = ids
        .iter()
        .map(|id| id.rsplit('-').next().unwrap_or(""))
        .collect();
    assert_eq!(
        offsets,
        (1..=200).map(|o| o.to_string()).collect::<Vec<_>>(),
        "one counter"
    );
    for s in [&mut sa, &mut sb] {
        s.wait_events(200, LIMIT);
        let got: Vec<(String, String)> = s
            .events
            .iter()
            .map(|e| (e.last_event_id.clone(), e.data.clone()))
            .collect();
        let expected: Vec<(String, String)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), format!("e{i}")))
            .collect();
        assert_eq!(
            got, expected,
            "both servers deliver one order with one set of ids"
        );
    }
    // A resume taken on one server continues on the other.
    let mid = ids[99].clone();
    let mut r = Stream::open(
        b.addr,
        "/events?topic=s",
        &[&format!("Last-Event-ID: {mid}")],
    );
    r.wait_events(100, LIMIT);
    assert_eq!(
        r.events.first().map(|e| e.last_event_id.as_str()),
        Some(ids[100].as_str())
    );
    assert_eq!(r.events.len(), 100);
}

/// Runs the server expecting it to refuse to start: (exit code, stderr). A server still
/// running after [`LIMIT`] is stopped and answers `None`.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sse-server"))
        .args(["--listen", "127.0.0.1:0", "--interval", "off"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sse-server");
    let exited = eventually(LIMIT, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait for sse-server");
    let code = if exited { out.status.code() } else { None };
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_log_that_is_not_ours_is_refused_at_start_untouched() {
    let dir = TempDir::new("foreign");
    // Not a database at all.
    let garbage = dir.join("garbage");
    std::fs::create_dir_all(&garbage).expect("dir");
    let bytes =
        b"this is not an SQLite database, but it is long enough to look like a file".repeat(20);
    std::fs::write(garbage.join("log.sqlite"), &bytes).expect("write");
    let (code, err) = refused(&["--data-dir", garbage.to_str().expect("path")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("log.sqlite") && err.contains("not a usable sse-server log"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(garbage.join("log.sqlite")).expect("read"),
        bytes,
        "untouched"
    );

    // A path that is a file, not a directory.
    let file = dir.join("plain-file");
    std::fs::write(&file, b"x").expect("write");
    let (code, err) = refused(&["--data-dir", file.to_str().expect("path")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("plain-file"), "{err}");

    // One of our logs, corrupted: its pages overwritten in the middle.
    let corrupt = dir.join("corrupt");
    {
        let mut s = node(&corrupt, &[]);
        for i in 0..300 {
            publish_ok(s.addr, "", &format!("{i} {}", "x".repeat(500)));
        }
        assert_eq!(s.terminate().map(|s| s.code()), Some(Some(0)));
    }
    // Fold the write-ahead log into the file first (a clean start and stop does that).
    let mut checkpoint = node(&corrupt, &[]);
    assert_eq!(checkpoint.terminate().map(|s| s.code()), Some(Some(0)));
    let path = corrupt.join("log.sqlite");
    let mut data = std::fs::read(&path).expect("read");
    assert!(data.len() > 16 * 4096, "a log of some size: {}", data.len());
    for b in &mut data[8 * 4096..12 * 4096] {
        *b = 0x5a;
    }
    std::fs::write(&path, &data).expect("write");
    let _ = std::fs::remove_file(corrupt.join("log.sqlite-wal"));
    let _ = std::fs::remove_file(corrupt.join("log.sqlite-shm"));
    let (code, err) = refused(&["--data-dir", corrupt.to_str().expect("path")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a usable sse-server log"), "{err}");

    // Two logs at once.
    let (code, err) = refused(&["--data-dir", "/tmp/x", "--redis", "redis://127.0.0.1:1"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn a_full_disk_answers_503_and_the_server_goes_on() {
    let dir = TempDir::new("full");
    let data_dir = dir.join("log");
    // The file-size limit stands in for a full disk: the log's writes past it fail.
    let mut child = Command::new("prlimit")
        .arg("--fsize=300000")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_sse-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "off",
            "--durability",
            "os",
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let Ok(child) = child.as_mut() else {
        util::ecosystem_skip("a_full_disk_answers_503_and_the_server_goes_on", "prlimit");
        return;
    };
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("line");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("listening line")
        .parse()
        .expect("address");
    let mut s = Stream::open(addr, "/events", &[]);
    let mut statuses = Vec::new();
    for i in 0..400 {
        let (status, body) = publish(addr, "", &format!("{i} {}", "y".repeat(2000)));
        if status != 200 {
            assert_eq!(status, 503, "{body}");
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&200), "some publishes fit");
    assert!(statuses.contains(&503), "the full disk refused the rest");
    assert_eq!(health(addr), 200, "the node still serves");
    let delivered = statuses.iter().filter(|&&s| s == 200).count();
    s.wait_events(delivered, LIMIT);
    assert_eq!(
        s.events.len(),
        delivered,
        "each acknowledged event once, no refused one"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `rm log.sqlite*` under a running server: the database, `-shm`, then `-wal`, a few
/// milliseconds apart. The server goes on with a new log (a new epoch); a connection opened
/// between the removals must not keep the removed `-wal` or `-shm`, which would refuse
/// every later publish as `disk I/O error`.
#[test]
fn a_log_removed_file_by_file_under_a_running_server_becomes_a_new_log() {
    let dir = TempDir::new("removed-apart");
    let s = node(&dir.0, &[]);
    let old: Vec<String> = (0..3)
        .map(|i| publish_ok(s.addr, "?topic=t", &format!("old {i}")))
        .collect();
    for name in ["log.sqlite", "log.sqlite-shm", "log.sqlite-wal"] {
        std::fs::remove_file(dir.join(name)).expect("remove");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut last = (0, String::new());
    let answered = eventually(LIMIT, || {
        last = publish(s.addr, "?topic=t", "new");
        last.0 == 200
    });
    assert!(answered, "publishes refused since the removal: {last:?}");
    let new = last.1.trim();
    assert_ne!(epoch_of(new), epoch_of(&old[0]), "a new log: {new}");
    let next = publish_ok(s.addr, "?topic=t", "next");
    assert_eq!(epoch_of(&next), epoch_of(new), "{next}");
    assert!(
        dir.join("log.sqlite-wal").exists() && dir.join("log.sqlite-shm").exists(),
        "the new log has its own companions"
    );
}

/// A `-wal` or `-shm` left without its database (a log deleted by halves) belongs to
/// another log: the server does not make a new database next to it.
#[test]
fn a_write_ahead_log_without_its_database_is_refused_at_start() {
    let dir = TempDir::new("leftover");
    for name in ["log.sqlite-wal", "log.sqlite-shm"] {
        let only = dir.join(name);
        std::fs::create_dir_all(&only).expect("dir");
        std::fs::write(only.join(name), b"left over").expect("write");
        let (code, err) = refused(&["--data-dir", only.to_str().expect("path")]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("remains"), "{err}");
        assert!(!only.join("log.sqlite").exists(), "no database made");
    }
}
