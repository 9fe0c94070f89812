//! The edges of cluster resumes (`core/cluster/resume.rs`): where a held resume point lies
//! after an epoch change, how replies count against a point beyond the head, which events of
//! a range reply are written, when a paged fetch stops, and a token that expires while its
//! stream is held.

use super::super::auth::{jwt_auth, request, token, wall0};
use super::*;

/// `event` in epoch `epoch`.
fn event_of(epoch: &str, offset: u64, topic: &str, data: &str) -> BusEvent {
    let mut e = event(offset, topic, data);
    e.id.epoch = epoch.into();
    e
}

impl T {
    /// An `Events` reply of `events` (offset, data on topic `t`, epoch `EPOCH`) that reports
    /// the log's head as `head`, which may lie beyond them (a page of a longer read).
    fn page(&mut self, events: &[(u64, &str)], head: u64) {
        let events = events.iter().map(|&(o, d)| event(o, "t", d)).collect();
        self.bus(BusReply::Events {
            events,
            head_offset: head,
        });
    }

    /// The one `FetchRange` the core asked for since the last call.
    fn the_fetch(&mut self) -> FetchRange {
        let requests = self.bus_requests();
        let [BusRequest::FetchRange(f)] = &requests[..] else {
            panic!("one fetch expected: {requests:?}")
        };
        f.clone()
    }
}

/// After an epoch change, local sequence numbers continue above the old epoch's: a resume
/// point between the applied offset and the head is held at `gseq_base + offset`, released
/// once the tail applies it, and continues right after it (kills `gseq_base + n` → `-` / `*`
/// for an awaited resume in `resolve_cluster`).
#[test]
fn a_held_resume_in_a_later_epoch_continues_right_after_its_event() {
    let mut t = up();
    let old: Vec<(u64, &str)> = (1..=6).map(|o| (o, "old")).collect();
    t.page(&old, 6);
    t.bus(BusReply::EpochChanged {
        previous: EPOCH.into(),
        epoch: "new".into(),
    });
    // The new epoch's log holds 1..=5; this node starts after 3.
    t.connected("new", 5, 3);
    let s = t.stream("t", Some("new-5"));
    assert!(t.bus_requests().is_empty(), "held, not fetched");
    assert!(t.datas(s).is_empty(), "{:?}", t.datas(s));
    let events = [(4, "d"), (5, "e"), (6, "f")]
        .iter()
        .map(|&(o, d)| event_of("new", o, "t", d))
        .collect();
    t.bus(BusReply::Events {
        events,
        head_offset: 6,
    });
    assert_eq!(t.datas(s), ["f"]);
    assert_eq!(t.events(s)[0].last_event_id, "new-6");
}

/// A resume point beyond the head is given up (`reset` `unknown-id`) only after two replies
/// whose head lies below it; a reply whose head reaches it does not count, even when its
/// page stops short of it. Heads can move back when Redis fails over to a replica that
/// lagged (kills `<` → `<=` in both of `release_awaiting`'s comparisons with the head).
#[test]
fn only_replies_whose_head_is_below_a_held_point_count_against_it() {
    let mut t = up();
    t.page(&[(1, "a")], 1);
    let s = t.stream("t", Some("ep-5"));
    assert!(t.datas(s).is_empty(), "held: 5 is beyond the head");
    // The head reaches 5 twice, the pages stop short of it: no round.
    t.page(&[(2, "b")], 5);
    t.page(&[(3, "c")], 5);
    // A failover to a replica that never had 5: the first round below it.
    t.page(&[], 4);
    assert!(t.datas(s).is_empty(), "one round below is not enough");
    // The head reaches 5 again: still not a round.
    t.page(&[(4, "d")], 5);
    assert!(t.datas(s).is_empty(), "a head at the point is no round");
    t.page(&[], 4);
    assert_eq!(t.datas(s), ["reset:{\"reason\":\"unknown-id\"}:ep-4"]);
    t.page(&[(5, "e")], 5);
    assert_eq!(
        t.datas(s),
        ["reset:{\"reason\":\"unknown-id\"}:ep-4", "e"],
        "live events after the reset"
    );
}

/// Only the events of the range asked for are written from a range reply: one at the resume
/// point was already delivered, and one beyond `through` reaches the client from the live
/// log (kills `&&` → `||` and `>` → `>=` in `on_range`'s filter).
#[test]
fn a_range_reply_writes_only_the_range_asked_for() {
    let mut t = T::new(Config {
        history: 2,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    t.events_in(&[(1, "t", "a"), (2, "t", "b"), (3, "t", "c"), (4, "t", "d")]);
    let s = t.stream("t", Some("ep-1"));
    let f = t.the_fetch();
    assert_eq!((f.after_offset, f.through_offset), (1, Some(4)));
    t.events_in(&[(5, "t", "e")]);
    let all = [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")];
    let events = all.iter().map(|&(o, d)| event(o, "t", d)).collect();
    t.range(f.token, Some(1), events, 5, true);
    assert_eq!(t.datas(s), ["b", "c", "d", "e"]);
}

/// A paged range fetch continues only while the reply says more is to be read and it made
/// progress: a page after which events were trimmed (`reset` `too-old`), a page that reached
/// `through` though not flagged complete, and a page that scanned nothing new each end the
/// fetch, and the client joins the live log (kills, in `on_range`, `&&` → `||` after
/// `!lost`, `<` → `<=` against `through`, and `>` → `>=` against `after`).
#[test]
fn a_paged_fetch_stops_when_lost_at_its_end_or_without_progress() {
    // (first retained offset, events, scanned through, what the client gets before the live
    // events)
    let too_old = "reset:{\"reason\":\"too-old\"}:ep-4";
    let cases: [(u64, &[u64], u64, &[&str]); 3] = [
        (4, &[], 2, &[too_old]),
        (1, &[2], 4, &["b"]),
        (1, &[], 1, &[]),
    ];
    for (first_retained, offsets, scanned_through, before_live) in cases {
        let mut t = T::new(Config {
            history: 1,
            ..cluster_cfg()
        });
        t.connected(EPOCH, 0, 0);
        t.events_in(&[(1, "t", "a"), (2, "t", "b"), (3, "t", "c"), (4, "t", "d")]);
        let s = t.stream("t", Some("ep-1"));
        let f = t.the_fetch();
        assert_eq!((f.after_offset, f.through_offset), (1, Some(4)));
        let events = offsets.iter().map(|&o| event(o, "t", "b")).collect();
        t.range(
            f.token,
            Some(first_retained),
            events,
            scanned_through,
            false,
        );
        let case = (first_retained, scanned_through);
        let requests = t.bus_requests();
        assert!(requests.is_empty(), "{case:?}: fetched again: {requests:?}");
        t.events_in(&[(5, "t", "e")]);
        let mut expected: Vec<&str> = before_live.to_vec();
        expected.push("e");
        assert_eq!(t.datas(s), expected, "{case:?}");
    }
}

/// A cluster stream on a private topic whose token expires while its resume is held gets
/// its `token-expired` reset and nothing after it: neither the `unknown-id` reset its held
/// point would have earned, nor the events of its range fetch (kills `&&` → `||` in the
/// held-and-streaming checks of `release_awaiting`'s unknown path and of `on_range`).
#[test]
fn a_token_that_expires_while_the_stream_is_held_ends_it_with_nothing_after() {
    let expired = "reset:{\"reason\":\"token-expired\"}";
    for fetched in [false, true] {
        let mut t = T::new(Config {
            history: 2,
            auth: jwt_auth(),
            ..cluster_cfg()
        });
        t.connected(EPOCH, 0, 0);
        t.events_in(&[(1, "t", "a"), (2, "t", "b"), (3, "t", "c"), (4, "t", "d")]);
        let c = t.connect();
        let tok = token(wall0().timestamp() + 10, &["t"]);
        // Offset 1 is older than the cache (a fetch); 9 is beyond the head (held).
        let last = if fetched { "ep-1" } else { "ep-9" };
        t.core
            .handle_read(c, &request("topic=t", &tok, Some(last)), t.now);
        t.drain(None);
        let fetch = t.bus_requests();
        assert_eq!(fetch.len(), usize::from(fetched), "{fetch:?}");
        assert!(t.datas(c).is_empty(), "held");
        // The socket is full when the token expires (10 s + 5 s of leeway): the reset waits.
        t.core.handle_would_block(c, t.now);
        t.advance(Duration::from_secs(16));
        if let [BusRequest::FetchRange(f)] = &fetch[..] {
            t.range(
                f.token,
                Some(1),
                vec![event(2, "t", "b"), event(3, "t", "c"), event(4, "t", "d")],
                4,
                true,
            );
        } else {
            // Two replies whose head lies below 9.
            t.events_in(&[(5, "t", "e")]);
            t.events_in(&[(6, "t", "f")]);
        }
        t.core.handle_writable(c);
        t.drain(None);
        let datas = t.datas(c);
        assert_eq!(datas.len(), 1, "fetched {fetched}: {datas:?}");
        assert!(
            datas[0].starts_with(expired),
            "fetched {fetched}: {datas:?}"
        );
        t.core.check_invariants().unwrap();
    }
}

/// A resume from the epoch's start (`restart`: here a publisher-given id this node no longer
/// caches, shaped like an id of another epoch) that Redis can serve only in part: first the
/// events of the client's topics this node still caches and Redis has trimmed (a quiet
/// topic's cache reaches back further than a busy shared log), in order, then Redis's range,
/// so the client also gets the topic's newest event.
#[test]
fn a_restart_fetch_first_writes_what_only_this_nodes_cache_still_has() {
    let mut t = T::new(Config {
        history: 2,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    let mut mine = event(1, "b", "p1");
    mine.custom_id = Some("c1-1".into());
    let events = vec![
        mine,
        event(2, "b", "p2"),
        event(3, "b", "p3"),
        event(4, "", "p4"),
        event(5, "b", "p5"),
        event(6, "", "p6"),
    ];
    t.bus(BusReply::Events {
        events,
        head_offset: 6,
    });
    // The cache keeps b's 3 and 5 (two per topic); Redis keeps 4..=6.
    let s = t.stream("b", Some("c1-1"));
    let f = t.the_fetch();
    assert_eq!((f.after_offset, f.through_offset), (0, Some(6)));
    t.range(f.token, Some(4), vec![event(5, "b", "p5")], 6, true);
    t.events_in(&[(7, "b", "p7")]);
    assert_eq!(
        t.datas(s),
        ["reset:{\"reason\":\"restart\"}:ep-0", "p3", "p5", "p7"]
    );
}

/// What the cache holds from before a hole (events trimmed before this node read them) is
/// left out of a restart's fetch: the client would get the events on both sides of the hole
/// with no reset between (a cache whose frames are written from the oldest first).
#[test]
fn a_restart_fetch_writes_nothing_cached_from_before_a_hole() {
    let mut t = T::new(Config {
        history: 4,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    // 2 was trimmed before this node read it: the cache holds 1, then 3 and 4.
    t.events_in(&[(1, "", "p1")]);
    t.events_in(&[(3, "", "p3"), (4, "", "p4")]);
    // `c1-1` reads as an id of epoch `c1`: a restart, fetched (the cache has a hole).
    let s = t.stream("", Some("c1-1"));
    let f = t.the_fetch();
    assert_eq!((f.after_offset, f.through_offset), (0, Some(4)));
    t.range(f.token, Some(4), vec![event(4, "", "p4")], 4, true);
    assert_eq!(
        t.datas(s),
        ["reset:{\"reason\":\"restart\"}:ep-0", "p3", "p4"],
        "what the cache holds after the hole, then Redis's range"
    );
}

/// A restart after an epoch change, when Redis's log is empty (deleted, its epoch kept):
/// everything cached of the new epoch is written, up to and including the newest offset
/// applied (kills, in the restart's use of the cache, `unwrap_or(u64::MAX)` → `0`, `min(through
/// + 1)` → `min(through)`, and `gseq_base + offset` → `offset`).
#[test]
fn a_restart_with_redis_empty_writes_everything_cached_of_the_epoch() {
    let mut t = T::new(Config {
        history: 2,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    t.page(&[(1, "o1"), (2, "o2"), (3, "o3")], 3);
    t.bus(BusReply::EpochChanged {
        previous: EPOCH.into(),
        epoch: "new".into(),
    });
    t.connected("new", 0, 0);
    let events = [(1, "n1"), (2, "n2"), (3, "n3")]
        .iter()
        .map(|&(o, d)| event_of("new", o, "t", d))
        .collect();
    t.bus(BusReply::Events {
        events,
        head_offset: 3,
    });
    // The cache keeps n2 and n3: it cannot replay the epoch from its start.
    let s = t.stream("t", Some("ep-1"));
    let f = t.the_fetch();
    assert_eq!((f.after_offset, f.through_offset), (0, Some(3)));
    t.bus(BusReply::Range(RangeReply {
        token: f.token,
        epoch: "new".into(),
        first_retained_offset: None,
        events: Vec::new(),
        scanned_through: 3,
        complete: true,
    }));
    assert_eq!(
        t.datas(s),
        ["reset:{\"reason\":\"restart\"}:new-0", "n2", "n3"]
    );
}

/// A fetch after an id (not a restart) writes only Redis's range, never the cache's older
/// frames, even when Redis's oldest entry lies above one the client already had (kills
/// `if f.restart` → `true` in `on_range`).
#[test]
fn a_fetch_after_an_id_writes_nothing_from_the_cache() {
    let mut t = T::new(Config {
        history: 1,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    t.events_in(&[
        (1, "u", "u1"),
        (2, "t", "t2"),
        (3, "u", "u3"),
        (4, "u", "u4"),
    ]);
    // u's cache lost 3 (it keeps 4 only): the resume after 2 is read from Redis.
    let id = t.connect();
    let req = "GET /events?topic=t&topic=u HTTP/1.1\r\nHost: x\r\nLast-Event-ID: ep-2\r\n\r\n";
    t.core.handle_read(id, req.as_bytes(), t.now);
    t.drain(None);
    let f = t.the_fetch();
    assert_eq!((f.after_offset, f.through_offset), (2, Some(4)));
    t.range(
        f.token,
        Some(3),
        vec![event(3, "u", "u3"), event(4, "u", "u4")],
        4,
        true,
    );
    assert_eq!(t.datas(id), ["u3", "u4"], "t2 came before the id");
}

/// A range read from Redis in pages asks for the next page only once the client has
/// written the last one: a client that does not read holds one page, not the whole range
/// (its memory stays in proportion). Leaving meanwhile forgets the parked page.
#[test]
fn the_next_page_of_a_range_waits_for_the_client_to_write_the_last() {
    let page = |t: &mut T, token: u64, offsets: &[(u64, &str)], through: u64, done: bool| {
        let events = offsets.iter().map(|&(o, d)| event(o, "t", d)).collect();
        t.range(token, Some(1), events, through, done);
    };
    for leaves in [false, true] {
        let mut t = T::new(Config {
            history: 2,
            ..cluster_cfg()
        });
        t.connected(EPOCH, 0, 0);
        t.events_in(&[(1, "t", "a"), (2, "t", "b"), (3, "t", "c"), (4, "t", "d")]);
        let s = t.stream("t", Some("ep-1"));
        let f = t.the_fetch();
        t.core.handle_would_block(s, t.now);
        page(&mut t, f.token, &[(2, "b")], 2, false);
        assert!(
            t.bus_requests().is_empty(),
            "parked while the page is unwritten"
        );
        if leaves {
            t.core.handle_io_error(s, IoFailure::Reset);
            t.drain(None);
            t.core.check_invariants().unwrap();
            assert!(t.bus_requests().is_empty());
            continue;
        }
        // The invariant check reports a parked page whose client is not held.
        t.core.client_mut(s).unwrap().release();
        let err = t.core.check_invariants().unwrap_err();
        assert!(err.contains("range reader"), "{err}");
        t.core.client_mut(s).unwrap().hold();
        // Part of the page written: still parked.
        t.core.handle_writable(s);
        assert_eq!(t.core.poll_output(), Some(Output::Write(s)));
        let first = offer(&t.core, s, |iov| iov[0][0]);
        t.entry(s).1.push(first);
        t.core.handle_written(s, 1, t.now);
        t.core.handle_would_block(s, t.now);
        assert!(
            t.bus_requests().is_empty(),
            "parked until the whole page is written"
        );
        t.core.handle_writable(s);
        t.drain(None);
        assert_eq!(t.datas(s), ["b"]);
        let next = t.the_fetch();
        assert_eq!((next.after_offset, next.through_offset), (2, Some(4)));
        // A page with nothing for the client (other topics only) asks for the next at once.
        page(&mut t, next.token, &[], 3, false);
        let last = t.the_fetch();
        assert_eq!((last.after_offset, last.through_offset), (3, Some(4)));
        page(&mut t, last.token, &[(4, "d")], 4, true);
        t.events_in(&[(5, "t", "e")]);
        assert_eq!(t.datas(s), ["b", "d", "e"]);
        assert_eq!(t.events(s)[0].last_event_id, "ep-2", "the page whole");
        let stats = t.core.cluster_stats().unwrap();
        assert_eq!((stats.range_fetches, stats.range_pages), (1, 3));
        let (_, metrics) = t.get_once("/metrics");
        assert!(metrics.contains("\nsse_bus_range_pages_total 3\n"));
    }
}

/// A page of a range read from Redis carries at most 256 KiB of event data, and never more
/// than half the slow-client backlog: a page alone never makes its client look slow.
#[test]
fn a_page_is_bounded_in_bytes_by_the_backlog() {
    for (max_backlog, want) in [(1 << 20, 256 * 1024), (100_000, 50_000), (1, 1)] {
        let mut t = T::new(Config {
            history: 1,
            max_backlog,
            ..cluster_cfg()
        });
        t.connected(EPOCH, 0, 0);
        t.events_in(&[(1, "t", "a"), (2, "t", "b"), (3, "t", "c")]);
        let s = t.stream("t", Some("ep-1"));
        let f = t.the_fetch();
        assert_eq!(f.max_bytes, want, "backlog {max_backlog}");
        t.core.handle_would_block(s, t.now);
        t.range(f.token, Some(1), vec![event(2, "t", "b")], 2, false);
        t.core.handle_writable(s);
        t.drain(None);
        assert_eq!(t.the_fetch().max_bytes, want, "the next page too");
    }
}

/// A stream whose next page is parked and that is told to come back (here a gap in the
/// tail: its resume can no longer be completed) drops the parked page with it: nothing is
/// asked of Redis for it any more.
#[test]
fn a_stream_ended_while_its_page_is_parked_drops_the_page() {
    let mut t = T::new(Config {
        history: 2,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    t.events_in(&[(1, "t", "a"), (2, "t", "b"), (3, "t", "c"), (4, "t", "d")]);
    let s = t.stream("t", Some("ep-1"));
    let f = t.the_fetch();
    t.core.handle_would_block(s, t.now);
    t.range(f.token, Some(1), vec![event(2, "t", "b")], 2, false);
    // 5 and 6 were trimmed before this node read them: every held stream is ended.
    t.events_in(&[(7, "t", "g")]);
    t.core.check_invariants().unwrap();
    t.core.handle_writable(s);
    t.drain(None);
    assert!(t.bus_requests().is_empty(), "no page for an ended stream");
    assert!(t.text(s).contains("retry: "), "{}", t.text(s));
}

/// An id this node answered to a publish exists in the shared log, even while the tail has
/// not shown it (its replies held back, or the tail away): a resume from it waits for the
/// tail and then gets exactly what followed, never `unknown-id` and then the events again.
#[test]
fn a_resume_from_an_id_this_node_answered_waits_for_the_tail_and_repeats_nothing() {
    let mut t = up();
    let publisher = t.connect();
    for i in 1..=5u64 {
        let body = format!("e{i}");
        let req = format!(
            "POST /publish?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        t.core.handle_read(publisher, req.as_bytes(), t.now);
        t.drain(None);
        let token = match t.next_log_request() {
            Some(BusRequest::Publish(p)) => p.token,
            other => panic!("a publish: {other:?}"),
        };
        t.bus(BusReply::Published {
            token,
            id: ClusterId {
                epoch: EPOCH.into(),
                offset: i,
            },
        });
    }
    assert!(t.text(publisher).contains("ep-5"), "answered 1..=5");
    // The tail went away before showing any of them.
    t.bus(BusReply::Disconnected {
        reason: "replies held back".into(),
    });
    let s = t.stream("t", Some("ep-2"));
    assert!(t.datas(s).is_empty(), "held, not unknown-id");
    t.connected(EPOCH, 5, 0);
    t.events_in(&[(1, "t", "e1"), (2, "t", "e2"), (3, "t", "e3")]);
    t.events_in(&[(4, "t", "e4"), (5, "t", "e5")]);
    assert_eq!(
        t.datas(s),
        ["e3", "e4", "e5"],
        "exactly what followed, once"
    );
}
