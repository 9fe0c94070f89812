//! Cluster mode through the core's interface: bus replies in, bus requests out, no Redis. This
//! file: the tail, the local cache, epochs, gaps and resumes; `publish.rs`: publishing.

use super::*;
use crate::bus::types::{
    BusEvent, BusReply, BusRequest, ClusterId, FetchRange, Publish, PublishFailure, RangeReply,
};

mod bus_down;
mod health;
mod publish;
mod ranges;
mod resume;

const EPOCH: &str = "ep";

fn cluster_cfg() -> Config {
    Config {
        interval: None,
        keepalive: None,
        cluster: Some(crate::bus::BusConfig::redis("redis://127.0.0.1:1/0")),
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
        accepted_ms: None,
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

    /// A `Range` reply in epoch `EPOCH` to the fetch `token`.
    fn range(
        &mut self,
        token: u64,
        first_retained: Option<u64>,
        events: Vec<BusEvent>,
        scanned_through: u64,
        complete: bool,
    ) {
        self.bus(BusReply::Range(RangeReply {
            token,
            epoch: EPOCH.into(),
            first_retained_offset: first_retained,
            events,
            scanned_through,
            complete,
        }));
    }

    /// Every request for the shared log the core made so far, in order: those a drain
    /// handed out, then those still queued (taken without performing any other output, so
    /// a test sees what an input asked for before anything is written).
    fn bus_requests(&mut self) -> Vec<BusRequest> {
        let queued = self.core.take_queued_log_requests();
        self.log_requests.drain(..).chain(queued).collect()
    }

    /// The oldest request for the shared log not yet taken.
    fn next_log_request(&mut self) -> Option<BusRequest> {
        let queued = self.core.take_queued_log_requests();
        self.log_requests.extend(queued);
        self.log_requests.pop_front()
    }
}

fn up() -> T {
    let mut t = T::new(cluster_cfg());
    t.connected(EPOCH, 0, 0);
    t
}

#[test]
fn health_reports_a_node_whose_bus_is_down() {
    let mut t = T::new(cluster_cfg());
    let health = |t: &mut T| t.get_once("/health").1;
    let before = health(&mut t);
    assert!(before.starts_with("HTTP/1.1 503") && before.ends_with("bus down\n"));
    t.connected(EPOCH, 0, 0);
    assert!(health(&mut t).ends_with("\r\n\r\nok\n"));
    // The embedded mode is never "down".
    assert!(!T::new(cfg()).core.bus_down());
}

/// Requests for the shared log leave through `poll_output` with everything else, so the
/// driver cannot sleep while one waits.
#[test]
fn the_core_hands_requests_for_the_log_out_through_poll_output() {
    let mut t = up();
    assert_eq!(t.core.poll_output(), None);
    let _ = t.core.publish("t", None, None, "x", t.now);
    let out = t.core.poll_output();
    assert!(
        matches!(&out, Some(Output::Log(r)) if matches!(**r, BusRequest::Publish(_))),
        "a stdin line to publish: {out:?}"
    );
    assert_eq!(t.core.poll_output(), None);
    let mut embedded = T::new(cfg());
    let _ = embedded.core.publish("t", None, None, "x", embedded.now);
    assert_eq!(
        embedded.core.poll_output(),
        None,
        "never in the embedded mode"
    );
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

/// Entries written into the shared log by anyone but a publish (another deployment sharing
/// the prefix, `redis-cli`, a buggy writer) cannot forge SSE fields: an event name, id or
/// topic no publish request could carry is refused, counted and skipped, live and in ranges.
#[test]
fn log_entries_with_forged_fields_are_refused_counted_and_skipped() {
    let mut t = up();
    let s = t.stream("t", None);
    let forged = |offset, name: Option<&str>, custom_id: Option<&str>| BusEvent {
        event: name.map(Into::into),
        custom_id: custom_id.map(Into::into),
        ..event(offset, "t", "payload")
    };
    t.events_in(&[(1, "t", "a")]);
    t.bus(BusReply::Events {
        events: vec![
            forged(
                2,
                Some("evil\ndata: INJECTED-VIA-EVENT\nid: forged-1"),
                None,
            ),
            forged(3, None, Some("c1\nevent: pwn\ndata: INJECTED-VIA-ID")),
            forged(4, Some("lone\rcr"), None),
            forged(5, None, Some("nul\0id")),
            BusEvent {
                topic: "bad\0topic".into(),
                ..event(6, "t", "x")
            },
            event(7, "t", "b"),
        ],
        head_offset: 7,
    });
    assert_eq!(t.datas(s), ["a", "b"], "no forged frame, no reset");
    let text = t.text(s);
    assert!(
        !text.contains("INJECTED") && !text.contains("pwn"),
        "{text}"
    );
    assert_eq!(t.core.cluster_stats().unwrap().entries_refused, 5);
    assert_eq!(
        t.core.cluster_stats().unwrap().gaps,
        0,
        "a refused entry is no gap"
    );
    // The same entries read in a range for a resume are refused there too: a node whose
    // cache starts after offset 5 reads 1..=5 from the log.
    let mut t = T::new(cluster_cfg());
    t.connected(EPOCH, 5, 5);
    let r = t.stream("t", Some("ep-0"));
    let token = match t.bus_requests().pop() {
        Some(BusRequest::FetchRange(f)) => f.token,
        other => panic!("a range read: {other:?}"),
    };
    let range: Vec<BusEvent> = vec![
        event(1, "t", "a"),
        forged(2, Some("evil\ndata: INJECTED"), None),
        event(3, "t", "b"),
    ];
    t.range(token, Some(1), range, 5, true);
    assert_eq!(t.datas(r), ["a", "b"]);
    assert!(!t.text(r).contains("INJECTED"));
    assert_eq!(t.core.cluster_stats().unwrap().entries_refused, 1);
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
    // While the bus is down, an id beyond the head is held too: the tail has shown
    // nothing meanwhile (the id may be one another node answered). Once back, two replies
    // with a lower head make it unknown.
    t.bus(BusReply::Disconnected { reason: "x".into() });
    let down = t.stream("t", Some("ep-50"));
    assert!(t.datas(down).is_empty(), "held, not unknown at once");
    t.connected(EPOCH, 7, 7);
    t.events_in(&[(8, "t", "h")]);
    t.events_in(&[(9, "t", "i")]);
    assert_eq!(t.datas(down), ["reset:{\"reason\":\"unknown-id\"}:ep-9"]);
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
    t.range(
        *token,
        Some(1),
        vec![event(2, "t", "b"), event(3, "t", "c")],
        3,
        false,
    );
    assert_eq!(t.datas(s), ["b", "c"], "the range first");
    let Some(BusRequest::FetchRange(next)) = t.next_log_request() else {
        panic!("a second fetch continues the range")
    };
    assert_eq!((next.after_offset, next.through_offset), (3, Some(4)));
    t.range(next.token, Some(1), vec![event(4, "t", "d")], 4, true);
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
    let Some(BusRequest::FetchRange(f)) = t.next_log_request() else {
        panic!()
    };
    t.range(f.token, Some(3), vec![event(3, "t", "c")], 3, true);
    t.events_in(&[(4, "t", "d")]);
    assert_eq!(t.datas(s), ["reset:{\"reason\":\"too-old\"}:ep-3", "d"]);

    // After 3, which the page read for `s` does not reach (the cache lost 4 too).
    t.events_in(&[(5, "t", "e")]);
    let r = t.stream("t", Some("ep-3"));
    let Some(BusRequest::FetchRange(f)) = t.next_log_request() else {
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
    assert!(t.next_log_request().is_none(), "served from the cache");
    let _before = t.stream("t", Some("ep-4"));
    assert!(
        matches!(t.next_log_request(), Some(BusRequest::FetchRange(_))),
        "offset 5 was never read here"
    );
    // 8 and 9 were trimmed before this node read them; 7 comes again.
    t.events_in(&[(7, "t", "g"), (10, "t", "j")]);
    let after_gap = t.stream("t", Some("ep-9"));
    assert_eq!(t.datas(after_gap), ["j"]);
    assert!(t.next_log_request().is_none(), "from the cache");
    let _in_gap = t.stream("t", Some("ep-8"));
    assert!(
        matches!(t.next_log_request(), Some(BusRequest::FetchRange(_))),
        "offset 9 is not in the cache"
    );
    let stats = t.core.cluster_stats().unwrap();
    assert_eq!(
        (stats.events_received, stats.duplicates_dropped, stats.gaps),
        (4, 1, 1)
    );
}

/// A resume whose range fetch failed is told to retry, then lingers for a slow reader
/// before the close (kills `now + linger` → `now - linger` in `end_stream_with_retry`).
#[test]
fn a_failed_range_fetch_lingers_for_its_retry() {
    let mut t = T::new(cluster_cfg());
    t.connected(EPOCH, 5, 5);
    let r = t.stream("t", Some("ep-2"));
    let Some(BusRequest::FetchRange(f)) = t.next_log_request() else {
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
        matches!(t.next_log_request(), Some(BusRequest::FetchRange(_))),
        "offset 2 was never cached here"
    );
}

/// A publisher-given id still in the cache resumes after its event on any node (kills
/// `custom_id_gseq` → `None`).
#[test]
fn a_publisher_given_id_resumes_from_the_cache() {
    let mut t = up();
    let mut mine = event(2, "t", "b");
    mine.custom_id = Some("order-17".into());
    let events = vec![event(1, "t", "a"), mine, event(3, "t", "c")];
    t.bus(BusReply::Events {
        events,
        head_offset: 3,
    });
    let s = t.stream("t", Some("order-17"));
    assert_eq!(t.datas(s), ["c"]);
    assert!(t.bus_requests().is_empty(), "served from the cache");
}

/// An id of another epoch on a node whose cache does not reach back to this epoch's start:
/// the stream is reset with reason `restart` (not `too-old`) and the whole epoch is fetched
/// (kills the `restart` guard → `false` in `start_stream`).
#[test]
fn an_id_of_another_epoch_beyond_the_cache_restarts_from_a_fetch() {
    let mut t = T::new(cluster_cfg());
    // Joined late: the shared log already holds offsets 1..=5, this node read none of them.
    t.connected(EPOCH, 5, 5);
    let s = t.stream("t", Some("old-3"));
    let requests = t.bus_requests();
    assert!(
        matches!(
            &requests[..],
            [BusRequest::FetchRange(FetchRange {
                after_offset: 0,
                ..
            })]
        ),
        "{requests:?}"
    );
    let datas = t.datas(s);
    assert_eq!(datas.len(), 1, "{datas:?}");
    assert!(
        datas[0].starts_with("reset:{\"reason\":\"restart\"}"),
        "{datas:?}"
    );
}

/// A publisher-given id whose event is cached, on a stream of two topics where the other
/// topic lost events after it: the cache cannot serve the resume, so it is fetched (kills the
/// guard `covers(g)` → `true` for publisher-given ids).
#[test]
fn a_publisher_given_id_the_cache_cannot_cover_is_fetched() {
    let mut t = T::new(Config {
        history: 1,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    let mut mine = event(1, "t", "mine");
    mine.custom_id = Some("order-17".into());
    t.bus(BusReply::Events {
        events: vec![mine, event(2, "u", "u1"), event(3, "u", "u2")],
        head_offset: 3,
    });
    let id = t.connect();
    let req = "GET /events?topic=t&topic=u HTTP/1.1\r\nHost: x\r\nLast-Event-ID: order-17\r\n\r\n";
    t.core.handle_read(id, req.as_bytes(), t.now);
    t.drain(None);
    let requests = t.bus_requests();
    assert!(
        matches!(
            &requests[..],
            [BusRequest::FetchRange(FetchRange {
                after_offset: 1,
                ..
            })]
        ),
        "{requests:?}"
    );
}

/// An id this node knows Redis has (the greeting's head) but its tail has not applied yet is
/// held until the tail brings it, then continues after it (kills the guard
/// `n > cl.last_offset` → `false`).
#[test]
fn an_id_between_the_applied_offset_and_the_head_waits_for_the_tail() {
    let mut t = T::new(cluster_cfg());
    t.connected(EPOCH, 5, 3);
    let s = t.stream("t", Some("ep-5"));
    assert!(t.bus_requests().is_empty(), "held, not fetched");
    assert!(t.datas(s).is_empty());
    t.events_in(&[(4, "t", "d"), (5, "t", "e"), (6, "t", "f")]);
    assert_eq!(t.datas(s), ["f"]);
}

/// Two resumes read from Redis at once (on different topics) get their own fetch tokens, so each range reply
/// reaches its own client (kills `+=` → `*=` on the token counter in `begin_fetch`); and
/// `/metrics` carries the bus series in cluster mode (kills `render_cluster_metrics` → `()`).
#[test]
fn concurrent_fetches_have_their_own_tokens_and_the_bus_has_metrics() {
    let mut t = T::new(Config {
        history: 1,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    t.events_in(&[(1, "t", "a"), (2, "u", "b"), (3, "t", "c"), (4, "u", "d")]);
    // Two topics: neither read can serve the other.
    t.stream("t", Some("ep-0"));
    t.stream("u", Some("ep-0"));
    let tokens: Vec<u64> = t
        .bus_requests()
        .into_iter()
        .filter_map(|r| match r {
            BusRequest::FetchRange(f) => Some(f.token),
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert_ne!(tokens[0], tokens[1]);
    // The first range comes back in part: its next page gets a fresh token too (kills `+=`
    // → `*=` / `-=` on the counter where a fetch continues in `on_range`).
    t.range(tokens[0], Some(1), vec![event(1, "t", "a")], 2, false);
    let next: Vec<u64> = t
        .bus_requests()
        .into_iter()
        .filter_map(|r| match r {
            BusRequest::FetchRange(f) => Some(f.token),
            _ => None,
        })
        .collect();
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(
        !tokens.contains(&next[0]),
        "{next:?} reuses one of {tokens:?}"
    );
    let (_, metrics) = t.get_once("/metrics");
    assert!(metrics.contains("\nsse_bus_connected 1\n"), "{metrics}");
}
