//! A publish refused at once while the shared log is unreachable: 503 + `Retry-After` with
//! the connection kept (a keep-alive publisher retries on it), in request order behind the
//! publishes still in flight, and closed only when the request asked.

use super::*;

fn publish_request(body: &str, connection: &str) -> String {
    format!(
        "POST /publish?topic=t HTTP/1.1\r\nHost: x\r\n{connection}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn down(t: &mut T) {
    t.bus(BusReply::Disconnected {
        reason: "gone".into(),
    });
    assert!(t.core.bus_down());
}

/// The status of each answer written so far, in order.
fn statuses(t: &T, id: ClientId) -> Vec<String> {
    t.text(id)
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|a| a[..3].to_owned())
        .collect()
}

#[test]
fn a_publish_refused_while_the_log_is_down_keeps_its_connection() {
    let mut t = up();
    down(&mut t);
    let p = t.connect();
    t.core
        .handle_read(p, publish_request("a", "").as_bytes(), t.now);
    t.drain(None);
    assert_eq!(statuses(&t, p), ["503"]);
    assert!(t.text(p).contains("Retry-After: 1\r\n"), "{}", t.text(p));
    assert!(!t.text(p).contains("Connection: close"), "{}", t.text(p));
    assert!(
        !t.closed(p),
        "the publisher may retry on the same connection"
    );
    // A retry on the same connection while still down: refused again, still open.
    t.core
        .handle_read(p, publish_request("b", "").as_bytes(), t.now);
    t.drain(None);
    assert_eq!(statuses(&t, p), ["503", "503"]);
    assert!(!t.closed(p));
    assert!(
        t.bus_requests().is_empty(),
        "nothing goes to a log that is down"
    );
    // Once the log is back, the same connection publishes.
    t.connected(EPOCH, 0, 0);
    t.core
        .handle_read(p, publish_request("c", "").as_bytes(), t.now);
    t.drain(None);
    let Some(BusRequest::Publish(Publish { token, data, .. })) = t.next_log_request() else {
        panic!("the publish after the outage goes to the log")
    };
    assert_eq!(data, "c");
    t.bus(BusReply::Published {
        token,
        id: ClusterId {
            epoch: EPOCH.into(),
            offset: 1,
        },
    });
    assert_eq!(statuses(&t, p), ["503", "503", "200"]);
    assert!(t.text(p).ends_with("\r\n\r\nep-1\n"), "{}", t.text(p));
}

#[test]
fn a_refused_publish_that_asked_to_close_closes_after_its_answer() {
    let mut t = up();
    down(&mut t);
    let p = t.connect();
    let req = publish_request("a", "Connection: close\r\n");
    t.core.handle_read(p, req.as_bytes(), t.now);
    t.drain(None);
    assert_eq!(statuses(&t, p), ["503"]);
    assert!(t.closed(p), "{}", t.text(p));
}

#[test]
fn a_publish_refused_behind_one_in_flight_answers_in_its_turn() {
    let mut t = up();
    let p = t.connect();
    t.core
        .handle_read(p, publish_request("a", "").as_bytes(), t.now);
    t.drain(None);
    let Some(BusRequest::Publish(Publish { token, .. })) = t.next_log_request() else {
        panic!("the first publish goes to the log")
    };
    down(&mut t);
    // Pipelined behind it while the log is down: refused at once, but answered second.
    let burst = publish_request("b", "") + &publish_request("c", "");
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.drain(None);
    assert_eq!(
        statuses(&t, p),
        Vec::<String>::new(),
        "a's answer comes first"
    );
    t.bus(BusReply::Published {
        token,
        id: ClusterId {
            epoch: EPOCH.into(),
            offset: 1,
        },
    });
    assert_eq!(statuses(&t, p), ["200", "503", "503"]);
    assert!(!t.closed(p), "{}", t.text(p));
    // And the connection still reads: a health check is answered (bus down).
    t.core
        .handle_read(p, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", t.now);
    t.drain(None);
    assert_eq!(statuses(&t, p), ["200", "503", "503", "503"]);
    assert!(t.text(p).ends_with("bus down\n"));
}
