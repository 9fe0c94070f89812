//! Pipelining, half-close and backpressure against the real binary: every request the server
//! acts on is answered, in order.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use util::*;

const SEC: Duration = Duration::from_secs(1);

/// Writes `raw` from a thread (the server may stop reading until answers are taken) and
/// reads everything until the server closes; returns what was read.
fn pipeline(addr: std::net::SocketAddr, raw: Vec<u8>, half_close: bool) -> Vec<u8> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(10 * SEC)).expect("timeout");
    let mut writer = s.try_clone().expect("clone");
    let t = std::thread::spawn(move || {
        writer.write_all(&raw).expect("write");
        if half_close {
            writer.shutdown(Shutdown::Write).expect("half-close");
        }
    });
    let mut out = Vec::new();
    let _ = (&s).read_to_end(&mut out);
    t.join().expect("writer");
    out
}

fn count_ok(out: &[u8]) -> usize {
    out.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count()
}

/// 1,000 small publishes in one write (about 90 KB) are all answered: the server stops
/// reading while answers are pending instead of closing the connection with some events
/// published and no answer sent.
#[test]
fn a_thousand_pipelined_publishes_are_all_answered() {
    let server = Server::start(&["--interval", "off"]);
    let one = "POST /publish?topic=p HTTP/1.1\r\nHost: x\r\nX-Pad: 0123456789\r\nContent-Length: 8\r\n\r\n12345678";
    let mut raw = one.repeat(999);
    raw.push_str(
        "POST /publish?topic=p HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nConnection: close\r\n\r\n12345678",
    );
    assert!(raw.len() > 72 * 1024);
    let out = pipeline(server.addr, raw.into_bytes(), false);
    assert_eq!(
        count_ok(&out),
        1000,
        "{}",
        String::from_utf8_lossy(&out[..200.min(out.len())])
    );
    assert_eq!(server.metric("sse_events_published_total"), 1000.0);
}

/// The same with large bodies: three 64 KiB publishes pipelined.
#[test]
fn three_pipelined_max_size_publishes_are_all_answered() {
    let server = Server::start(&["--interval", "off"]);
    let body = "b".repeat(65536);
    let mut raw = String::new();
    for i in 0..3 {
        let close = if i == 2 { "Connection: close\r\n" } else { "" };
        raw.push_str(&format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\n{close}Content-Length: 65536\r\n\r\n{body}"
        ));
    }
    let out = pipeline(server.addr, raw.into_bytes(), false);
    assert_eq!(count_ok(&out), 3);
    assert_eq!(server.metric("sse_events_published_total"), 3.0);
}

/// A publisher that half-closes right after its request (`nc -N`) still gets its answers:
/// a read of 0 ends the requests, not the answers.
#[test]
fn a_half_closed_publisher_gets_its_answers() {
    let server = Server::start(&["--interval", "off"]);
    let one = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
    let out = pipeline(server.addr, one.as_bytes().to_vec(), true);
    assert_eq!(count_ok(&out), 1, "{}", String::from_utf8_lossy(&out));
    // Several pipelined requests, then the half-close: all answered, in order.
    let raw = format!("{one}GET /health HTTP/1.1\r\nHost: x\r\n\r\n{one}");
    let out = pipeline(server.addr, raw.into_bytes(), true);
    assert_eq!(count_ok(&out), 3, "{}", String::from_utf8_lossy(&out));
    assert!(String::from_utf8_lossy(&out).contains("ok\n"));
    assert_eq!(server.metric("sse_events_published_total"), 3.0);
    // Nothing is left behind.
    assert!(eventually(3 * SEC, || server.metric("sse_connections") <= 1.0));
}

/// A stream subscriber that half-closes is treated as gone (a read of 0 cannot tell a
/// half-close from a hang-up): its connection is closed.
#[test]
fn a_half_closed_stream_is_closed() {
    let server = Server::start(&["--interval", "off"]);
    let mut s = Stream::open(server.addr, "/events", &[]);
    assert!(eventually(3 * SEC, || server.metric("sse_clients") == 1.0));
    s.sock.shutdown(Shutdown::Write).expect("half-close");
    assert!(s.wait_closed(3 * SEC));
    assert_eq!(server.metric("sse_clients"), 0.0);
}
