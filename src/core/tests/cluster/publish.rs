//! Publishing in cluster mode through the core's interface: a publish waits for the shared
//! log and is answered with its id; pipelined publishes in flight (up to 64), answered in
//! request order, with what follows them held and bounded; failures, half-closes, CORS and
//! the bus counters, and `/health` when the log refuses every publish.

use super::*;

fn post(t: &mut T, body: &str) -> ClientId {
    let id = t.connect();
    let req = format!(
        "POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    t.core.handle_read(id, req.as_bytes(), t.now);
    t.drain(None);
    id
}

#[test]
fn a_publish_waits_for_the_shared_log_and_answers_its_id() {
    let mut t = up();
    let s = t.stream("t", None);
    let p = post(&mut t, "hello");
    assert_eq!(t.text(p), "", "no answer before the bus replies");
    let requests = t.bus_requests();
    let [
        BusRequest::Publish(Publish {
            token, topic, data, ..
        }),
    ] = &requests[..]
    else {
        panic!("{requests:?}")
    };
    assert_eq!((topic.as_str(), data.as_str()), ("t", "hello"));
    t.bus(BusReply::Published {
        token: *token,
        id: ClusterId {
            epoch: EPOCH.into(),
            offset: 1,
        },
    });
    assert!(t.text(p).starts_with("HTTP/1.1 200"), "{}", t.text(p));
    assert!(t.text(p).ends_with("\r\n\r\nep-1\n"), "{}", t.text(p));
    assert!(
        t.events(s).is_empty(),
        "nothing appended locally on Published"
    );
    t.events_in(&[(1, "t", "hello")]);
    assert_eq!(t.datas(s), ["hello"]);
    assert_eq!(t.events(s)[0].last_event_id, "ep-1");
}

#[test]
fn a_publish_the_bus_refuses_gets_503_with_retry_after_and_no_id() {
    let mut t = up();
    let p = post(&mut t, "x");
    let Some(BusRequest::Publish(Publish { token, .. })) = t.next_log_request() else {
        panic!()
    };
    t.bus(BusReply::PublishFailed {
        token,
        reason: PublishFailure::Unavailable("down".into()),
    });
    assert!(t.text(p).starts_with("HTTP/1.1 503"), "{}", t.text(p));
    assert!(t.text(p).contains("Retry-After: 1"));
    // While the bus is down, a publish is refused at once and nothing goes to the bus.
    t.bus(BusReply::Disconnected {
        reason: "gone".into(),
    });
    let p = post(&mut t, "y");
    assert!(t.text(p).starts_with("HTTP/1.1 503"));
    assert!(t.bus_requests().is_empty());
    assert!(t.core.bus_down());
    // Stdin publishes follow the same path.
    assert!(t.core.publish("", None, None, "z", t.now).is_err());
}

fn publish_request(body: &str) -> String {
    format!(
        "POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The bus tokens of the publishes submitted since the last call.
fn publish_tokens(t: &mut T) -> Vec<u64> {
    t.bus_requests()
        .into_iter()
        .filter_map(|r| match r {
            BusRequest::Publish(p) => Some(p.token),
            _ => None,
        })
        .collect()
}

fn published(t: &mut T, token: u64, offset: u64) {
    t.bus(BusReply::Published {
        token,
        id: ClusterId {
            epoch: EPOCH.into(),
            offset,
        },
    });
}

/// The status lines of the answers written so far, with each 200's body.
fn answers(t: &T, id: ClientId) -> Vec<String> {
    t.text(id)
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|a| {
            let status = &a[..3];
            let body = a.split("\r\n\r\n").nth(1).unwrap_or("").trim_end();
            format!("{status} {body}")
        })
        .collect()
}

#[test]
fn pipelined_publishes_are_all_submitted_and_answered_in_request_order() {
    let mut t = up();
    let p = t.connect();
    let burst: String = ["a", "b", "c"].map(publish_request).concat();
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.drain(None);
    let tokens = publish_tokens(&mut t);
    assert_eq!(tokens.len(), 3, "all three go to the bus at once");
    // The bus answers the last first, then the first, then the middle one.
    published(&mut t, tokens[2], 3);
    assert_eq!(answers(&t, p), Vec::<String>::new(), "the third waits");
    published(&mut t, tokens[0], 1);
    assert_eq!(answers(&t, p), ["200 ep-1"]);
    published(&mut t, tokens[1], 2);
    assert_eq!(answers(&t, p), ["200 ep-1", "200 ep-2", "200 ep-3"]);
    assert!(!t.closed(p));
    // The connection reads on.
    t.core
        .handle_read(p, publish_request("d").as_bytes(), t.now);
    t.drain(None);
    assert_eq!(publish_tokens(&mut t).len(), 1);
}

#[test]
fn a_failed_pipelined_publish_answers_503_in_its_place_and_the_connection_stays() {
    let mut t = up();
    let p = t.connect();
    let burst: String = ["a", "b", "c"].map(publish_request).concat();
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.drain(None);
    let tokens = publish_tokens(&mut t);
    t.bus(BusReply::PublishFailed {
        token: tokens[1],
        reason: PublishFailure::Unavailable("down".into()),
    });
    published(&mut t, tokens[2], 2);
    published(&mut t, tokens[0], 1);
    let got = answers(&t, p);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!((got[0].as_str(), got[2].as_str()), ("200 ep-1", "200 ep-2"));
    assert!(answers(&t, p)[1].starts_with("503"));
    assert!(t.text(p).contains("Retry-After: 1"));
    assert!(!t.closed(p), "a failed publish keeps the connection");
}

#[test]
fn a_request_after_pipelined_publishes_waits_for_their_answers() {
    let mut t = up();
    let p = t.connect();
    let burst = publish_request("a") + "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.drain(None);
    let tokens = publish_tokens(&mut t);
    assert_eq!(
        answers(&t, p),
        Vec::<String>::new(),
        "health waits its turn"
    );
    published(&mut t, tokens[0], 1);
    let got = answers(&t, p);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], "200 ep-1");
    assert!(got[1].starts_with("200"), "{got:?}");
}

#[test]
fn at_most_64_publishes_wait_per_connection_then_input_waits() {
    let mut t = up();
    let p = t.connect();
    let burst: String = (0..70).map(|i| publish_request(&i.to_string())).collect();
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.drain(None);
    let tokens = publish_tokens(&mut t);
    assert_eq!(tokens.len(), 64, "the cap");
    // Reading is bounded now: what the core buffers meanwhile stays within one request.
    let bound = t.core.config().max_head + t.core.config().max_body;
    let room = t.core.input_room(p);
    assert!(room <= bound, "room {room} over {bound}");
    let six_left: usize = (64..70)
        .map(|i| publish_request(&i.to_string()).len())
        .sum();
    assert_eq!(
        room,
        bound - six_left,
        "the six requests not yet taken are held"
    );
    published(&mut t, tokens[0], 1);
    assert_eq!(
        publish_tokens(&mut t).len(),
        1,
        "one answered: one more goes"
    );
}

#[test]
fn a_client_that_ends_its_side_still_gets_its_pipelined_answers() {
    let mut t = up();
    let p = t.connect();
    let burst: String = ["a", "b"].map(publish_request).concat();
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.core.handle_read_closed(p);
    t.drain(None);
    let tokens = publish_tokens(&mut t);
    assert_eq!(tokens.len(), 2);
    assert!(!t.closed(p));
    published(&mut t, tokens[1], 2);
    published(&mut t, tokens[0], 1);
    assert_eq!(answers(&t, p), ["200 ep-1", "200 ep-2"]);
    assert!(t.closed(p));
}

/// A client that ends its side in the middle of a pipelined body still gets the answer of
/// the publish before it; the half-sent body can never complete, so the body timeout closes
/// the connection (not the answer's end: the body phase is not a finished exchange).
#[test]
fn a_half_sent_body_after_an_answered_publish_waits_for_the_body_timeout() {
    let mut t = up();
    let p = t.connect();
    let wire = format!(
        "{}POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc",
        publish_request("a")
    );
    t.core.handle_read(p, wire.as_bytes(), t.now);
    t.core.handle_read_closed(p);
    t.drain(None);
    let tokens = publish_tokens(&mut t);
    assert_eq!(tokens.len(), 1);
    published(&mut t, tokens[0], 1);
    assert_eq!(answers(&t, p), ["200 ep-1"]);
    assert!(!t.closed(p), "the body may not be over yet");
    t.advance(t.core.config().head_timeout + Duration::from_secs(1));
    t.drain(None);
    assert!(t.closed(p));
    assert!(t.text(p).contains("408 "), "{}", t.text(p));
}

/// Under `--allow-origin`, each pipelined publish is answered with the CORS lines of its own
/// request, even when a later request on the connection came from another origin.
#[test]
fn a_delayed_publish_answer_carries_its_own_requests_cors() {
    let auth = crate::auth::AuthConfig::new(crate::auth::AuthOptions {
        allow_origins: vec!["https://a.example".into(), "https://b.example".into()],
        ..crate::auth::AuthOptions::default()
    })
    .expect("valid origins");
    let mut t = T::new(Config {
        auth: std::sync::Arc::new(auth),
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    let p = t.connect();
    let from = |origin: &str| {
        format!(
            "POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nContent-Length: 1\r\n\r\nx"
        )
    };
    let burst = from("https://a.example") + &from("https://b.example");
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.drain(None);
    let tokens = publish_tokens(&mut t);
    published(&mut t, tokens[0], 1);
    let first = t.text(p);
    assert!(
        first.contains("Access-Control-Allow-Origin: https://a.example\r\n"),
        "{first}"
    );
    assert!(!first.contains("b.example"), "{first}");
    published(&mut t, tokens[1], 2);
    let both = t.text(p);
    assert!(
        both[first.len()..].contains("Access-Control-Allow-Origin: https://b.example\r\n"),
        "{both}"
    );
}

/// A publish that says `Connection: close` is the last request read on its connection, even
/// with publishes in flight: what was pipelined after it is never acted on (kills
/// `PublishQueue::iter` → empty, which made `reads_on` ignore the close).
#[test]
fn nothing_after_a_closing_publish_is_acted_on() {
    let mut t = up();
    let p = t.connect();
    let closing = "POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\na";
    let burst = publish_request("first") + closing + &publish_request("after");
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.drain(None);
    let tokens = publish_tokens(&mut t);
    assert_eq!(
        tokens.len(),
        2,
        "the publish after the closing one is not submitted"
    );
    published(&mut t, tokens[0], 1);
    published(&mut t, tokens[1], 2);
    assert_eq!(answers(&t, p), ["200 ep-1", "200 ep-2"]);
    assert!(t.closed(p));
}

/// The bus counters of `/metrics` follow what happened: publishes taken and failed (and the
/// time they waited), drops of the connection (once per drop, not per report), events
/// counted once the log took them.
#[test]
fn the_bus_counters_follow_what_happened() {
    let mut t = up();
    let a = post(&mut t, "a");
    let b = post(&mut t, "b");
    let tokens = publish_tokens(&mut t);
    t.now += Duration::from_millis(1500);
    published(&mut t, tokens[0], 1);
    t.bus(BusReply::PublishFailed {
        token: tokens[1],
        reason: PublishFailure::Unavailable("down".into()),
    });
    assert!(answers(&t, a)[0].starts_with("200"));
    assert!(answers(&t, b)[0].starts_with("503"));
    let stats = t.core.cluster_stats().unwrap();
    assert_eq!((stats.publishes_accepted, stats.publishes_failed), (1, 1));
    assert!(
        (stats.publish_seconds_sum - 1.5).abs() < 1e-9,
        "{}",
        stats.publish_seconds_sum
    );
    assert_eq!(t.core.metrics().events_published, 1);
    for _ in 0..2 {
        t.bus(BusReply::Disconnected {
            reason: "gone".into(),
        });
    }
    let c = post(&mut t, "c");
    assert!(answers(&t, c)[0].starts_with("503"), "refused while down");
    let stats = t.core.cluster_stats().unwrap();
    assert_eq!(stats.reconnects, 1, "one drop, reported twice");
    assert_eq!(stats.publishes_failed, 2);
    assert_eq!(stats.publishes_accepted, 1);
}

/// A malformed request pipelined after publishes in flight is answered in its place, after
/// their answers, and the connection closes after it (kills `answer_after_publishes` →
/// `false`, which answered it first).
#[test]
fn an_error_after_publishes_in_flight_waits_its_turn() {
    let mut t = up();
    let p = t.connect();
    let burst = publish_request("a") + "GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: z\r\n\r\n";
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.drain(None);
    assert_eq!(answers(&t, p), Vec::<String>::new(), "the 400 waits");
    let tokens = publish_tokens(&mut t);
    published(&mut t, tokens[0], 1);
    let got = answers(&t, p);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], "200 ep-1");
    assert!(got[1].starts_with("400"), "{got:?}");
    assert!(t.closed(p));
}

/// The answer to a publish that said close lingers for a slow reader: the connection is not
/// cut before `--linger` (kills `now + linger` → `now - linger` in `flush_publishes`).
#[test]
fn a_closing_publish_answer_lingers_for_a_slow_reader() {
    let mut t = up();
    let p = t.connect();
    let closing = "POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\na";
    t.core.handle_read(p, closing.as_bytes(), t.now);
    t.drain(None);
    let tokens = publish_tokens(&mut t);
    t.core.handle_bus(
        BusReply::Published {
            token: tokens[0],
            id: ClusterId {
                epoch: EPOCH.into(),
                offset: 1,
            },
        },
        t.now,
    );
    // The socket is full: nothing of the answer goes out yet.
    t.drain(Some(0));
    let linger = t.core.config().linger;
    t.advance(linger - Duration::from_secs(1));
    assert!(t.core.is_live(p), "within --linger");
    t.advance(Duration::from_secs(2));
    assert!(!t.core.is_live(p), "gone after --linger");
}

/// While publishes wait for the shared log (the 64 in flight), what the client pipelines
/// next is kept up to `--max-head` + `--max-body` bytes exactly, and the connection closes
/// past it (kills `delete !` and the bound's arithmetic for the `Pipelined` phase).
#[test]
fn bytes_held_behind_publishes_in_flight_are_bounded() {
    let mut t = up();
    let p = t.connect();
    let burst: String = (0..64).map(|i| publish_request(&i.to_string())).collect();
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.drain(None);
    assert_eq!(publish_tokens(&mut t).len(), 64);
    let bound = t.core.config().max_head + t.core.config().max_body;
    let room = t.core.input_room(p);
    assert_eq!(room, bound);
    t.core.handle_read(p, &vec![b'x'; room], t.now);
    assert!(t.core.is_live(p), "exactly the bound");
    t.core.handle_read(p, b"x", t.now);
    assert!(!t.core.is_live(p), "one byte over");
}

/// A client that sends publishes and then ends its side still gets every answer once the
/// shared log took them, then the close (kills the `&&` → `||` mutants of the half-close
/// check in `read_next`).
#[test]
fn publishes_then_a_half_close_still_get_their_answers() {
    let mut t = up();
    let p = t.connect();
    let burst =
        publish_request("a") + &publish_request("b") + "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.core.handle_read_closed(p);
    t.drain(None);
    assert!(t.core.is_live(p), "answers are owed");
    let tokens = publish_tokens(&mut t);
    published(&mut t, tokens[0], 1);
    assert!(t.core.is_live(p), "two answers are still owed");
    published(&mut t, tokens[1], 2);
    let got = answers(&t, p);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[..2], ["200 ep-1", "200 ep-2"]);
    assert!(
        got[2].starts_with("200"),
        "the held GET is answered too: {got:?}"
    );
    assert!(t.closed(p));
}

/// Publishes waiting for the shared log longer than the head timeout do not make their
/// connection idle: it is not timed out (kills the `!c.publishes.is_empty()` guard in
/// `on_timer` replaced by `false`).
#[test]
fn publishes_waiting_past_the_head_timeout_keep_their_connection() {
    let mut t = up();
    let p = t.connect();
    t.core
        .handle_read(p, publish_request("a").as_bytes(), t.now);
    t.drain(None);
    let tokens = publish_tokens(&mut t);
    let head_timeout = t.core.config().head_timeout;
    t.advance(head_timeout + Duration::from_secs(1));
    assert!(t.core.is_live(p));
    assert_eq!(answers(&t, p), Vec::<String>::new(), "no 408");
    published(&mut t, tokens[0], 1);
    assert_eq!(answers(&t, p), ["200 ep-1"]);
}

/// Past the 64 publishes in flight, a client that ends its side still gets an answer to
/// every publish it sent, those read after the first answers freed room included (kills
/// `&&` → `||` before the phase test of the half-close check in `read_next`).
#[test]
fn a_half_closed_burst_past_the_cap_gets_every_answer() {
    let mut t = up();
    let p = t.connect();
    let burst: String = (0..66).map(|i| publish_request(&i.to_string())).collect();
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.core.handle_read_closed(p);
    t.drain(None);
    let mut offset = 0;
    for _ in 0..10 {
        let tokens = publish_tokens(&mut t);
        if tokens.is_empty() {
            break;
        }
        for token in tokens {
            offset += 1;
            published(&mut t, token, offset);
        }
    }
    assert_eq!(offset, 66, "every publish reached the bus");
    assert_eq!(answers(&t, p).len(), 66);
    assert!(t.closed(p));
}

/// A request held behind two publishes waits for both answers: the first answer written
/// does not release it (kills `&&` → `||` in `handle_written`'s `finished_answer`).
#[test]
fn a_request_after_two_publishes_waits_for_the_second_answer_too() {
    let mut t = up();
    let p = t.connect();
    let burst =
        publish_request("a") + &publish_request("b") + "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    t.core.handle_read(p, burst.as_bytes(), t.now);
    t.drain(None);
    let tokens = publish_tokens(&mut t);
    assert_eq!(tokens.len(), 2);
    published(&mut t, tokens[0], 1);
    assert_eq!(answers(&t, p), ["200 ep-1"], "health waits for the second");
    published(&mut t, tokens[1], 2);
    let got = answers(&t, p);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[..2], ["200 ep-1", "200 ep-2"]);
    assert!(got[2].starts_with("200"), "{got:?}");
}

/// Three publishes refused outright in a row (a log out of memory, read-only…) turn
/// `/health` to `503 publish refused`; an outage or a full queue does not count (those pass
/// by themselves, and an outage has its own answer); the next publish taken heals it.
#[test]
fn health_reports_a_log_that_refuses_every_publish() {
    let mut t = up();
    let health = |t: &mut T| t.get_once("/health").1;
    let outcome = |t: &mut T, reason: Option<PublishFailure>| {
        let _ = t.core.publish("t", None, None, "x", t.now);
        let token = match t.next_log_request() {
            Some(BusRequest::Publish(p)) => p.token,
            other => panic!("a publish: {other:?}"),
        };
        t.bus(match reason {
            Some(reason) => BusReply::PublishFailed { token, reason },
            None => BusReply::Published {
                token,
                id: ClusterId {
                    epoch: EPOCH.into(),
                    offset: 1,
                },
            },
        });
    };
    let rejected = || Some(PublishFailure::Rejected("OOM".into()));
    outcome(&mut t, rejected());
    outcome(&mut t, rejected());
    outcome(&mut t, Some(PublishFailure::Overloaded));
    assert!(
        health(&mut t).ends_with("ok\n"),
        "two refusals are not yet broken"
    );
    outcome(&mut t, rejected());
    let answer = health(&mut t);
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.ends_with("publish refused\n"),
        "{answer}"
    );
    outcome(&mut t, None);
    assert!(health(&mut t).ends_with("ok\n"));
}

/// A publish answered in the epoch this node follows raises the head it knows (the lag
/// gauge shows an answered event the tail has not applied yet); one answered in another
/// epoch (the command side met a new log before the tail did) says nothing of this log.
#[test]
fn an_answered_id_raises_the_known_head_only_in_the_followed_epoch() {
    let mut t = up();
    let lag = |t: &mut T| {
        let (_, metrics) = t.get_once("/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("sse_bus_lag_events "))
            .map(str::to_owned)
    };
    let answer = |t: &mut T, epoch: &str, offset: u64| {
        let _ = t.core.publish("t", None, None, "x", t.now);
        let token = match t.next_log_request() {
            Some(BusRequest::Publish(p)) => p.token,
            other => panic!("a publish: {other:?}"),
        };
        t.bus(BusReply::Published {
            token,
            id: ClusterId {
                epoch: epoch.into(),
                offset,
            },
        });
    };
    answer(&mut t, "another", 9);
    assert_eq!(lag(&mut t).as_deref(), Some("0"), "another epoch's offset");
    answer(&mut t, EPOCH, 2);
    assert_eq!(
        lag(&mut t).as_deref(),
        Some("2"),
        "answered, not yet applied"
    );
}

/// Entries no node wrote, as the bus reports them, add up in their counter.
#[test]
fn foreign_entries_are_counted() {
    let mut t = up();
    t.bus(BusReply::Foreign { entries: 2 });
    t.bus(BusReply::Foreign { entries: 3 });
    assert_eq!(t.core.cluster_stats().unwrap().foreign_entries, 5);
    let (_, metrics) = t.get_once("/metrics");
    assert!(
        metrics.contains("sse_bus_foreign_entries_total 5"),
        "{metrics}"
    );
}
