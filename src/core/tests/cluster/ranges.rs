//! Range reads shared by held streams (`core/cluster/ranges.rs`): a crowd resuming from one
//! id makes one request per page, overlapping resumes share pages, a waiter that leaves is
//! taken off its read, and a held stream the cache moves past reads on from the log.

use super::*;

impl T {
    /// The range reads asked for since the last call.
    fn fetches(&mut self) -> Vec<FetchRange> {
        self.bus_requests()
            .into_iter()
            .filter_map(|r| match r {
                BusRequest::FetchRange(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    /// The data of events `from..=to` on topic `t`, as a client gets them.
    fn page_of(&mut self, token: u64, from: u64, to: u64, scanned: u64, done: bool) {
        let events = (from..=to)
            .map(|o| event(o, "t", &format!("e{o}")))
            .collect();
        self.range(token, Some(1), events, scanned, done);
    }
}

fn datas(from: u64, to: u64) -> Vec<String> {
    (from..=to).map(|o| format!("e{o}")).collect()
}

/// A node with `history` events per topic whose tail applied `t`'s events 1..=`n`.
fn node_with(history: usize, n: u64) -> T {
    let mut t = T::new(Config {
        history,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    let names: Vec<String> = (1..=n).map(|o| format!("e{o}")).collect();
    let events: Vec<(u64, &str, &str)> = (1..=n)
        .map(|o| (o, "t", names[o as usize - 1].as_str()))
        .collect();
    t.events_in(&events);
    t
}

/// 400 clients resuming from one id older than the cache, while its range is read in
/// two pages: one request per page for all of them, and each gets exactly the events after
/// the id, then the live ones.
#[test]
fn a_crowd_of_resumes_from_one_id_make_one_request_per_page() {
    let mut t = node_with(2, 10);
    let clients: Vec<ClientId> = (0..400).map(|_| t.stream("t", Some("ep-3"))).collect();
    let first = t.fetches();
    assert_eq!(first.len(), 1, "one read for the crowd");
    assert_eq!(
        (first[0].after_offset, first[0].through_offset),
        (3, Some(10))
    );
    t.page_of(first[0].token, 4, 7, 7, false);
    let second = t.fetches();
    assert_eq!(second.len(), 1, "one request for the next page");
    assert_eq!(
        (second[0].after_offset, second[0].through_offset),
        (7, Some(10))
    );
    t.page_of(second[0].token, 8, 10, 10, true);
    assert!(t.fetches().is_empty());
    t.events_in(&[(11, "t", "e11")]);
    for id in clients {
        assert_eq!(t.datas(id), datas(4, 11));
    }
    let s = t.core.cluster_stats().unwrap();
    assert_eq!(
        (s.range_fetches, s.range_pages, s.range_pages_shared),
        (1, 2, 2 * 399)
    );
    t.core.check_invariants().unwrap();
}

/// A resume that comes right after a page was read is served from it, without asking
/// the log again; the pages kept are bounded.
#[test]
fn a_page_just_read_serves_a_resume_that_comes_after_it() {
    let mut t = node_with(2, 10);
    let a = t.stream("t", Some("ep-3"));
    let f = t.the_fetch_of_ranges();
    t.page_of(f.token, 4, 10, 10, true);
    let b = t.stream("t", Some("ep-5"));
    assert!(t.fetches().is_empty(), "served from the page kept");
    assert_eq!(t.datas(a), datas(4, 10));
    assert_eq!(t.datas(b), datas(6, 10));
    let s = t.core.cluster_stats().unwrap();
    assert_eq!(
        (s.range_fetches, s.range_pages, s.range_pages_shared),
        (1, 1, 1)
    );
}

impl T {
    fn the_fetch_of_ranges(&mut self) -> FetchRange {
        let mut f = self.fetches();
        assert_eq!(f.len(), 1, "{f:?}");
        f.remove(0)
    }
}

/// Two resumes from different ids: the later id waits on the read of the earlier one that
/// covers it, and each gets its own window of the page.
#[test]
fn overlapping_resumes_share_a_read_and_each_gets_its_window() {
    let mut t = node_with(2, 10);
    let early = t.stream("t", Some("ep-2"));
    let late = t.stream("t", Some("ep-5"));
    let f = t.the_fetch_of_ranges();
    assert_eq!(f.after_offset, 2);
    t.page_of(f.token, 3, 10, 10, true);
    assert!(t.fetches().is_empty());
    assert_eq!(t.datas(early), datas(3, 10));
    assert_eq!(t.datas(late), datas(6, 10));
    // An id before the read in flight cannot wait on it.
    let mut t = node_with(2, 10);
    let _a = t.stream("t", Some("ep-4"));
    let _b = t.stream("t", Some("ep-1"));
    let afters: Vec<u64> = t.fetches().iter().map(|f| f.after_offset).collect();
    assert_eq!(afters, [4, 1]);
}

/// A page read from further back that ends before a waiter's position: that waiter asks
/// for its own page from where it stands at once (it does not wait for the other reader to
/// write its page), and both get exactly their windows.
#[test]
fn a_shared_page_that_ends_short_of_a_waiter_makes_it_ask_from_its_position() {
    let mut t = node_with(2, 10);
    let early = t.stream("t", Some("ep-2"));
    let late = t.stream("t", Some("ep-6"));
    let f = t.the_fetch_of_ranges();
    t.page_of(f.token, 3, 5, 5, false);
    let mut next = t.fetches();
    next.sort_by_key(|f| f.after_offset);
    let afters: Vec<u64> = next.iter().map(|f| f.after_offset).collect();
    assert_eq!(afters, [5, 6], "{next:?}");
    t.page_of(next[1].token, 7, 10, 10, true);
    t.page_of(next[0].token, 6, 10, 10, true);
    assert_eq!(t.datas(early), datas(3, 10));
    assert_eq!(t.datas(late), datas(7, 10));
    t.core.check_invariants().unwrap();
}

/// A waiter that leaves while its read is in flight is taken off it: the reply reaches
/// only the others, nothing is written to the connection that takes its slot, and the
/// invariants hold throughout.
#[test]
fn a_waiter_that_leaves_mid_read_is_detached() {
    let mut t = node_with(2, 10);
    let stay = t.stream("t", Some("ep-3"));
    let leave = t.stream("t", Some("ep-3"));
    let f = t.the_fetch_of_ranges();
    t.core.handle_io_error(leave, IoFailure::Reset);
    t.drain(None);
    t.core.check_invariants().unwrap();
    // The slot is taken by a new connection, which reads a request.
    let reuse = t.connect();
    assert_eq!(reuse.key, leave.key, "the slot is reused");
    t.page_of(f.token, 4, 10, 10, true);
    t.core.check_invariants().unwrap();
    assert_eq!(t.datas(stay), datas(4, 10));
    assert!(t.text(reuse).is_empty(), "{}", t.text(reuse));
    // Every waiter gone: the reply is dropped (and kept for later resumes).
    let gone = t.stream("t", Some("ep-1"));
    let f = t.the_fetch_of_ranges();
    t.core.handle_io_error(gone, IoFailure::Reset);
    t.drain(None);
    t.page_of(f.token, 2, 10, 10, true);
    t.core.check_invariants().unwrap();
}

/// More events of the topic arrive during the read than the cache keeps: the held stream
/// is not dropped as slow; it reads on from the log through the newest offset applied,
/// page after page, then goes live: every event once, in order.
#[test]
fn a_held_stream_the_cache_moves_past_reads_on_from_the_log() {
    let mut t = node_with(2, 10);
    let s = t.stream("t", Some("ep-3"));
    let f = t.the_fetch_of_ranges();
    assert_eq!(f.through_offset, Some(10));
    let names: Vec<String> = (11..=20).map(|o| format!("e{o}")).collect();
    for (i, o) in (11..=20).enumerate() {
        t.events_in(&[(o, "t", names[i].as_str())]);
    }
    assert!(t.core.is_live(s), "not dropped");
    t.page_of(f.token, 4, 10, 10, true);
    let more = t.the_fetch_of_ranges();
    assert_eq!(more.after_offset, 10);
    assert!(more.through_offset >= Some(18), "{more:?}");
    let through = more.through_offset.unwrap_or(0);
    t.page_of(more.token, 11, through, through, true);
    assert!(t.fetches().is_empty());
    t.events_in(&[(21, "t", "e21")]);
    assert_eq!(t.datas(s), datas(4, 21));
    let stats = t.core.cluster_stats().unwrap();
    assert!(stats.range_extensions >= 1);
    assert_eq!(t.core.metrics().closed(CloseReason::Slow), 0);
}

/// A held stream that does not read its socket: the cache moving past it once reads on;
/// a second time with its page still unwritten, it is dropped as slow.
#[test]
fn a_held_stream_that_does_not_read_is_dropped_as_slow() {
    let mut t = node_with(2, 10);
    let s = t.stream("t", Some("ep-3"));
    t.core.handle_would_block(s, t.now);
    let f = t.the_fetch_of_ranges();
    t.page_of(f.token, 4, 10, 10, true);
    t.events_in(&[(11, "t", "e11"), (12, "t", "e12"), (13, "t", "e13")]);
    assert!(t.core.is_live(s), "moved once: reads on");
    t.events_in(&[(14, "t", "e14"), (15, "t", "e15"), (16, "t", "e16")]);
    assert!(
        !t.core.is_live(s),
        "its page unwritten through two moves: slow"
    );
    t.core.check_invariants().unwrap();
}

/// A restart read (an id of another epoch) during which the cache evicts the events only
/// it still has: they were taken when the read began, and come first.
#[test]
fn a_restart_keeps_the_cached_frames_the_cache_evicts_during_its_read() {
    let mut t = T::new(Config {
        history: 2,
        ..cluster_cfg()
    });
    t.connected(EPOCH, 0, 0);
    t.events_in(&[(1, "q", "q1"), (2, "q", "q2"), (3, "q", "q3")]);
    let s = t.stream("q", Some("zz-1"));
    let f = t.the_fetch_of_ranges();
    assert_eq!((f.after_offset, f.through_offset), (0, Some(3)));
    // A live event arrives before the reply and evicts q2 from the cache.
    t.events_in(&[(4, "q", "live")]);
    // The log trimmed everything of q up to 3.
    t.range(f.token, Some(4), Vec::new(), 3, true);
    assert_eq!(
        t.datas(s),
        ["reset:{\"reason\":\"restart\"}:ep-0", "q2", "q3", "live"]
    );
}

/// One tail batch brings more events of a topic than the cache keeps, with no write in
/// between: a live client whose socket takes everything is not dropped as slow; it reads
/// what the cache no longer has from the log, then goes on live. A client whose socket is
/// full is still dropped.
#[test]
fn a_batch_longer_than_the_cache_makes_a_live_client_read_from_the_log() {
    let mut t = node_with(2, 2);
    let live = t.stream("t", None);
    let full = t.stream("t", None);
    t.core.handle_would_block(full, t.now);
    let names: Vec<String> = (3..=8).map(|o| format!("e{o}")).collect();
    let batch: Vec<(u64, &str, &str)> = (3..=8)
        .map(|o| (o, "t", names[o as usize - 3].as_str()))
        .collect();
    t.events_in(&batch);
    assert!(t.core.is_live(live));
    assert!(!t.core.is_live(full), "a full socket is slow");
    // Read from where it stood, through what was applied when its cursor fell behind,
    // then on through what the rest of the batch pushed out too.
    let f = t.the_fetch_of_ranges();
    assert_eq!((f.after_offset, f.through_offset), (2, Some(5)));
    t.page_of(f.token, 3, 5, 5, true);
    let f = t.the_fetch_of_ranges();
    assert_eq!((f.after_offset, f.through_offset), (5, Some(8)));
    t.page_of(f.token, 6, 8, 8, true);
    t.events_in(&[(9, "t", "e9")]);
    assert_eq!(t.datas(live), datas(3, 9));
    t.core.check_invariants().unwrap();
}

/// A tail batch that starts with a gap (a `reset` `too-old` put in front of it, not written
/// until the batch is applied) and brings more events of the topic than the cache keeps,
/// several times over: a live client whose socket takes everything reads them from the log
/// and is not dropped as slow, though its `reset` is still unwritten each time the cache
/// moves past it. A client whose socket is full is.
#[test]
fn a_gap_then_a_long_batch_drops_no_client_whose_socket_takes_everything() {
    let mut t = node_with(1, 1);
    let live = t.stream("t", None);
    let full = t.stream("t", None);
    t.core.handle_would_block(full, t.now);
    let names: Vec<String> = (3..=8).map(|o| format!("e{o}")).collect();
    let batch: Vec<(u64, &str, &str)> = (3..=8)
        .map(|o| (o, "t", names[o as usize - 3].as_str()))
        .collect();
    t.events_in(&batch);
    assert!(
        t.core.is_live(live),
        "dropped while its socket took everything"
    );
    assert!(!t.core.is_live(full), "a full socket is slow");
    assert_eq!(t.core.metrics().closed(CloseReason::Slow), 1);
    // What the cache no longer has is read from the log, page after page.
    for _ in 0..4 {
        let Some(f) = t.fetches().pop() else { break };
        let through = f.through_offset.unwrap_or(8);
        t.page_of(f.token, f.after_offset + 1, through, through, true);
    }
    assert!(t.fetches().is_empty());
    t.events_in(&[(9, "t", "e9")]);
    let mut want = vec!["reset:{\"reason\":\"too-old\"}:ep-2".to_owned()];
    want.extend(datas(3, 9));
    assert_eq!(t.datas(live), want);
    t.core.check_invariants().unwrap();
}
