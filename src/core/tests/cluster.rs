//! Cluster mode through the core's interface: bus replies in, bus requests out, no Redis.

use super::*;
use crate::bus::types::{
    BusEvent, BusReply, BusRequest, ClusterId, FetchRange, Publish, PublishFailure, RangeReply,
};

const EPOCH: &str = "ep";

fn cluster_cfg() -> Config {
    Config {
        interval: None,
        keepalive: None,
        cluster: Some(crate::bus::BusConfig::new("redis://127.0.0.1:1/0")),
        ..Config::default()
    }
}

fn event(offset: u64, topic: &str, data: &str) -> BusEvent {
    BusEvent {
        offset,
        id: ClusterId {
            epoch: EPOCH.into(),
            offset,
        },
        topic: topic.into(),
        event: None,
        custom_id: None,
        data: data.into(),
    }
}

impl T {
    fn bus(&mut self, reply: BusReply) {
        self.core.handle_bus(reply, self.now);
        self.drain(None);
    }

    fn connected(&mut self, epoch: &str, head: u64, after: u64) {
        self.bus(BusReply::Connected {
            epoch: epoch.into(),
            head_offset: head,
            first_retained_offset: Some(1),
            after_offset: after,
        });
    }

    fn events_in(&mut self, offsets: &[(u64, &str, &str)]) {
        let events = offsets.iter().map(|&(o, t, d)| event(o, t, d)).collect();
        let head = offsets.iter().map(|e| e.0).max().unwrap_or(0);
        self.bus(BusReply::Events {
            events,
            head_offset: head,
        });
    }

    fn stream(&mut self, topic: &str, last: Option<&str>) -> ClientId {
        let id = self.connect();
        let req = match last {
            Some(l) => resume_request(topic, l),
            None => format!("GET /events?topic={topic} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
        };
        self.core.handle_read(id, &req, self.now);
        self.drain(None);
        id
    }

    fn datas(&self, id: ClientId) -> Vec<String> {
        self.events(id)
            .iter()
            .map(|e| {
                if e.event_type == "reset" {
                    format!("reset:{}:{}", e.data, e.last_event_id)
                } else {
                    e.data.clone()
                }
            })
            .collect()
    }

    fn bus_requests(&mut self) -> Vec<BusRequest> {
        std::iter::from_fn(|| self.core.poll_bus()).collect()
    }
}

fn up() -> T {
    let mut t = T::new(cluster_cfg());
    t.connected(EPOCH, 0, 0);
    t
}

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
    let Some(BusRequest::Publish(Publish { token, .. })) = t.core.poll_bus() else {
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

#[test]
fn health_reports_a_node_whose_bus_is_down() {
    let mut t = T::new(cluster_cfg());
    let health = |t: &mut T| {
        let id = t.connect();
        t.core.handle_read(
            id,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            t.now,
        );
        t.drain(None);
        t.text(id)
    };
    let before = health(&mut t);
    assert!(before.starts_with("HTTP/1.1 503") && before.ends_with("bus down\n"));
    t.connected(EPOCH, 0, 0);
    assert!(health(&mut t).ends_with("\r\n\r\nok\n"));
    // The embedded mode is never "down".
    assert!(!T::new(cfg()).core.bus_down());
}

#[test]
fn redelivered_offsets_are_dropped_and_a_gap_resets_every_stream() {
    let mut t = up();
    let s = t.stream("t", None);
    let other = t.stream("u", None);
    t.events_in(&[(1, "t", "a"), (2, "t", "b")]);
    // A reconnect redelivers 2, then 3 is new.
    t.events_in(&[(2, "t", "b"), (3, "t", "c")]);
    assert_eq!(t.datas(s), ["a", "b", "c"]);
    // 4..6 were trimmed during an outage.
    t.events_in(&[(7, "t", "g")]);
    let reset = "reset:{\"reason\":\"too-old\"}:ep-6";
    assert_eq!(t.datas(s), ["a", "b", "c", reset, "g"]);
    assert_eq!(t.datas(other), [reset]);
    let stats = t.core.cluster_stats().unwrap();
    assert_eq!((stats.duplicates_dropped, stats.gaps), (1, 1));
}

#[test]
fn a_gap_keeps_the_frames_a_slow_client_was_owed_before_its_reset() {
    let mut t = up();
    let s = t.stream("t", None);
    let window = t.text(s).len();
    t.core.handle_would_block(s, t.now);
    t.events_in(&[(1, "t", "a"), (2, "t", "b")]);
    t.events_in(&[(5, "t", "e")]);
    t.core.handle_writable(s);
    t.drain(None);
    assert!(t.text(s).len() > window);
    assert_eq!(
        t.datas(s),
        ["a", "b", "reset:{\"reason\":\"too-old\"}:ep-4", "e"]
    );
}

#[test]
fn an_epoch_change_resets_streams_with_restart_and_empties_the_cache() {
    let mut t = up();
    let s = t.stream("t", None);
    t.events_in(&[(1, "t", "a"), (2, "t", "b")]);
    t.bus(BusReply::EpochChanged {
        previous: EPOCH.into(),
        epoch: "new".into(),
    });
    t.connected("new", 0, 0);
    let mut e = event(1, "t", "n1");
    e.id.epoch = "new".into();
    t.bus(BusReply::Events {
        events: vec![e],
        head_offset: 1,
    });
    assert_eq!(
        t.datas(s),
        ["a", "b", "reset:{\"reason\":\"restart\"}:new-0", "n1"]
    );
    assert_eq!(t.events(s).last().unwrap().last_event_id, "new-1");
    // An id of the lost epoch: restart, then the new epoch's events.
    let late = t.stream("t", Some("ep-1"));
    assert_eq!(
        t.datas(late),
        ["reset:{\"reason\":\"restart\"}:new-0", "n1"]
    );
    assert_eq!(t.core.cluster_stats().unwrap().epoch_changes, 1);
}

#[test]
fn resume_from_the_cache_on_any_node() {
    let mut t = up();
    t.events_in(&[(1, "t", "a"), (2, "u", "x"), (3, "t", "b"), (4, "t", "c")]);
    let s = t.stream("t", Some("ep-1"));
    assert_eq!(t.datas(s), ["b", "c"]);
    assert!(t.bus_requests().is_empty(), "served from the cache");
    // An id beyond the head: held while the tail may still bring it (another node may
    // have delivered it a moment ago), then unknown once two replies show a lower head.
    let unknown = t.stream("t", Some("ep-99"));
    assert!(t.datas(unknown).is_empty());
    t.events_in(&[(5, "t", "e")]);
    assert!(t.datas(unknown).is_empty());
    t.events_in(&[(6, "t", "f")]);
    assert_eq!(t.datas(unknown), ["reset:{\"reason\":\"unknown-id\"}:ep-6"]);
    t.events_in(&[(7, "t", "g")]);
    assert_eq!(
        t.datas(unknown),
        ["reset:{\"reason\":\"unknown-id\"}:ep-6", "g"]
    );
    let garbage = t.stream("t", Some("not-an-id!"));
    assert_eq!(t.datas(garbage), ["reset:{\"reason\":\"unknown-id\"}:ep-7"]);
    // While the bus is down, an id beyond the head is unknown at once.
    t.bus(BusReply::Disconnected { reason: "x".into() });
    let down = t.stream("t", Some("ep-50"));
    assert_eq!(t.datas(down), ["reset:{\"reason\":\"unknown-id\"}:ep-7"]);
}

#[test]
fn a_resume_older_than_the_cache_is_fetched_then_joins_the_live_log_exactly_once() {
    let mut t = T::new(Config {
        history: 2,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    t.events_in(&[(1, "t", "a"), (2, "t", "b"), (3, "t", "c"), (4, "t", "d")]);
    let s = t.stream("t", Some("ep-1"));
    let requests = t.bus_requests();
    let [
        BusRequest::FetchRange(FetchRange {
            token,
            after_offset: 1,
            through_offset: Some(4),
            topics: Some(topics),
            ..
        }),
    ] = &requests[..]
    else {
        panic!("{requests:?}")
    };
    assert_eq!(topics, &["t".to_owned()]);
    // While the range is read, live events wait behind it; keep-alives may still flow.
    t.events_in(&[(5, "t", "e")]);
    assert!(t.datas(s).is_empty());
    t.bus(BusReply::Range(RangeReply {
        token: *token,
        epoch: EPOCH.into(),
        first_retained_offset: Some(1),
        events: vec![event(2, "t", "b"), event(3, "t", "c")],
        scanned_through: 3,
        complete: false,
    }));
    assert_eq!(t.datas(s), ["b", "c"], "the range first");
    let Some(BusRequest::FetchRange(next)) = t.core.poll_bus() else {
        panic!("a second fetch continues the range")
    };
    assert_eq!((next.after_offset, next.through_offset), (3, Some(4)));
    t.bus(BusReply::Range(RangeReply {
        token: next.token,
        epoch: EPOCH.into(),
        first_retained_offset: Some(1),
        events: vec![event(4, "t", "d")],
        scanned_through: 4,
        complete: true,
    }));
    t.events_in(&[(6, "t", "f")]);
    assert_eq!(t.datas(s), ["b", "c", "d", "e", "f"]);
}

#[test]
fn a_range_trimmed_in_redis_is_too_old_and_a_failed_one_asks_to_retry() {
    let mut t = T::new(Config {
        history: 1,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    t.events_in(&[(1, "t", "a"), (2, "t", "b"), (3, "t", "c")]);
    let s = t.stream("t", Some("ep-0"));
    let Some(BusRequest::FetchRange(f)) = t.core.poll_bus() else {
        panic!()
    };
    t.bus(BusReply::Range(RangeReply {
        token: f.token,
        epoch: EPOCH.into(),
        first_retained_offset: Some(3),
        events: vec![event(3, "t", "c")],
        scanned_through: 3,
        complete: true,
    }));
    t.events_in(&[(4, "t", "d")]);
    assert_eq!(t.datas(s), ["reset:{\"reason\":\"too-old\"}:ep-3", "d"]);

    let r = t.stream("t", Some("ep-1"));
    let Some(BusRequest::FetchRange(f)) = t.core.poll_bus() else {
        panic!()
    };
    t.bus(BusReply::RangeFailed {
        token: f.token,
        reason: "down".into(),
    });
    assert!(t.closed(r), "closed before any event");
    assert!(t.datas(r).is_empty());
    assert!(t.text(r).contains("retry: "), "{}", t.text(r));
    t.core.check_invariants().unwrap();
    let stats = t.core.cluster_stats().unwrap();
    assert_eq!((stats.range_fetches, stats.range_failures), (2, 1));
}

#[test]
fn a_resume_ahead_of_this_nodes_tail_waits_for_it() {
    let mut t = up();
    t.events_in(&[(1, "t", "a")]);
    // Another node already delivered offset 3; this node's tail has only applied 1 (and
    // does not know of 3 yet either).
    let s = t.stream("t", Some("ep-3"));
    t.events_in(&[(2, "t", "b")]);
    assert!(t.datas(s).is_empty());
    t.events_in(&[(3, "t", "c"), (4, "t", "d")]);
    assert_eq!(t.datas(s), ["d"]);
}

#[test]
fn ticks_stay_local_and_do_not_disturb_offsets() {
    let mut t = T::new(Config {
        interval: Some(Duration::from_secs(2)),
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    let s = t.stream("", None);
    t.advance(Duration::from_secs(2));
    t.drain(None);
    t.events_in(&[(1, "", "a")]);
    t.advance(Duration::from_secs(2));
    t.drain(None);
    t.events_in(&[(2, "", "b")]);
    let evs = t.events(s);
    assert_eq!(evs.len(), 4);
    assert_eq!(evs[1].data, "a");
    assert_eq!(evs[3].data, "b");
    let resumed = t.stream("", Some("ep-1"));
    assert_eq!(t.datas(resumed), ["b"], "ticks are never replayed");
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

/// A node that joins a log with history keeps in its cache only what it read itself: a
/// resume inside it is served locally, one from before it (or from before a trimmed gap)
/// is fetched from the shared log; the tail's counters follow (kills the offset arithmetic
/// of `on_connected` and of a gap in `on_bus_event`, and `events_received` `+=` → `*=`).
#[test]
fn a_node_joining_late_serves_from_its_cache_only_what_it_read() {
    let mut t = T::new(cluster_cfg());
    t.connected(EPOCH, 5, 5);
    t.events_in(&[(6, "t", "f"), (7, "t", "g")]);
    let inside = t.stream("t", Some("ep-6"));
    assert_eq!(t.datas(inside), ["g"]);
    assert!(t.core.poll_bus().is_none(), "served from the cache");
    let _before = t.stream("t", Some("ep-4"));
    assert!(
        matches!(t.core.poll_bus(), Some(BusRequest::FetchRange(_))),
        "offset 5 was never read here"
    );
    // 8 and 9 were trimmed before this node read them; 7 comes again.
    t.events_in(&[(7, "t", "g"), (10, "t", "j")]);
    let after_gap = t.stream("t", Some("ep-9"));
    assert_eq!(t.datas(after_gap), ["j"]);
    assert!(t.core.poll_bus().is_none(), "from the cache");
    let _in_gap = t.stream("t", Some("ep-8"));
    assert!(
        matches!(t.core.poll_bus(), Some(BusRequest::FetchRange(_))),
        "offset 9 is not in the cache"
    );
    let stats = t.core.cluster_stats().unwrap();
    assert_eq!(
        (stats.events_received, stats.duplicates_dropped, stats.gaps),
        (4, 1, 1)
    );
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

/// A resume whose range fetch failed is told to retry, then lingers for a slow reader
/// before the close (kills `now + linger` → `now - linger` in `end_stream_with_retry`).
#[test]
fn a_failed_range_fetch_lingers_for_its_retry() {
    let mut t = T::new(cluster_cfg());
    t.connected(EPOCH, 5, 5);
    let r = t.stream("t", Some("ep-2"));
    let Some(BusRequest::FetchRange(f)) = t.core.poll_bus() else {
        panic!("a fetch from the shared log")
    };
    t.core.handle_bus(
        BusReply::RangeFailed {
            token: f.token,
            reason: "down".into(),
        },
        t.now,
    );
    t.drain(Some(0));
    let linger = t.core.config().linger;
    t.advance(linger - Duration::from_secs(1));
    assert!(t.core.is_live(r), "within --linger");
    t.advance(Duration::from_secs(2));
    assert!(!t.core.is_live(r), "gone after --linger");
}

/// An event of a topic this node has no slot for (every slot has subscribers) is not
/// cached, so a later resume on that topic is read from the shared log, not from the cache
/// (kills the arithmetic of `complete_from` in that branch of `on_bus_event`).
#[test]
fn an_event_without_a_topic_slot_is_fetched_on_resume() {
    let mut t = T::new(Config {
        max_topics: 1,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    let s = t.stream("t", None);
    t.events_in(&[(1, "t", "a"), (2, "u", "b")]);
    assert_eq!(t.datas(s), ["a"]);
    t.core.handle_io_error(s, IoFailure::Reset);
    t.drain(None);
    let _r = t.stream("u", Some("ep-1"));
    assert!(
        matches!(t.core.poll_bus(), Some(BusRequest::FetchRange(_))),
        "offset 2 was never cached here"
    );
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
