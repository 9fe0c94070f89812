//! One contract suite for the log seam, run against every engine: the in-memory log the
//! simulator uses (`bus::memory`), the durable local log (SQLite, `bus::local`) and Redis
//! Streams, the last two through `BusHandle` as the driver uses them (`engines.rs`). Each
//! contract states, in its doc comment, a promise the core relies on (from the module docs
//! of `bus` and `bus::types`), and is one function over `&mut dyn Engine`; each (contract,
//! engine) pair is one test, named `<contract>::<engine>`. A pair the engine fails is kept,
//! ignored, with the reason.
//!
//! The Redis engine starts a private `redis-server` (`appendonly yes`) and skips, with a
//! message, when it is not installed (a failure instead under `SSE_REQUIRE_ECOSYSTEM=1`).
//! The local engine works in a fresh temp directory, removed at the end.
//!
//! Where the engines differ, and what is not run on all of them:
//! - Redis trims with `MAXLEN ~` in whole macro nodes, so it keeps at least `max_len`
//!   events where the others keep exactly that many.
//! - The memory tail cannot be started from an id (`MemoryTail` has no such constructor):
//!   its adapter places a start inside the log it follows as the equivalent warm-up, and
//!   cannot express a start of another epoch or beyond the head, so the contract about a log
//!   behind the node's position does not run on it (nor does the simulator model that log).
//! - The local log notices a new log under a running node by the identity of its three files
//!   (the database, `-wal`, `-shm`). `local` deletes `-wal` and `-shm` first and the database
//!   last; `local_removed_apart` deletes them in the order `rm log.sqlite*` does, a few
//!   milliseconds apart (a node reopening in between must notice the rest go too).
//! - The local log cannot reach a rewritten tail (one file, no replicas: no copy of it can
//!   miss its newest events), so that contract runs on memory and Redis only.

mod util;

#[path = "log_contract/engines.rs"]
mod engines;
#[path = "log_contract/peer.rs"]
mod peer;
#[path = "log_contract/ranges.rs"]
mod ranges;

use engines::{Engine, Settings, Start};
use peer::{Peer, plain, range_after};
use ranges::{range_reads_walk_the_log, retention_keeps_the_newest};
use sse_server::bus::types::is_valid_epoch;
use sse_server::bus::{BusEvent, BusReply, BusRequest, ClusterId, FetchRange, Publish};
use std::collections::HashSet;
use std::time::Duration;

/// How long a node must stay quiet for "nothing more arrives".
const QUIET: Duration = Duration::from_millis(400);

/// One test per engine for `$contract`, run with `$settings`; an engine may carry
/// attributes (`local [ignore = "why"]`).
macro_rules! contract {
    ($contract:ident, $settings:expr, $($engine:ident $([$($meta:meta),*])?),+ $(,)?) => {
        mod $contract {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                $($(#[$meta])*)?
                fn $engine() {
                    crate::run(
                        crate::engines::$engine,
                        $settings,
                        concat!(stringify!($contract), "::", stringify!($engine)),
                        crate::$contract,
                    );
                }
            )+
        }
    };
}

// The table: one line per contract, its settings, the engines it runs on.
contract! { fresh_log_greets_at_zero, Settings::DEFAULT, memory, local, redis }
contract! { one_order_without_holes, Settings::DEFAULT, memory, local, redis }
contract! { publishes_answered_once_and_readable, Settings::DEFAULT, memory, local, redis }
contract! { range_reads_walk_the_log, Settings::DEFAULT, memory, local, redis }
contract! { retention_keeps_the_newest, RETAINED, memory, local, redis }
contract! { nodes_start_where_told, WARM, memory, local, redis }
contract! { a_restart_keeps_the_log, Settings::DEFAULT, memory, local, redis }
contract! {
    a_new_log_is_a_new_epoch, Settings::DEFAULT, memory, local, redis, local_removed_apart,
}
contract! {
    a_log_behind_the_node_is_a_new_epoch, Settings::DEFAULT, redis, local,
}
contract! { head_probes_read_the_head, Settings::DEFAULT, memory, local, redis }
contract! { a_rewritten_tail_is_a_new_epoch, Settings::DEFAULT, memory, redis }

/// The retention contract's bound: a small `max_len`.
const RETAINED: Settings = Settings {
    max_len: 10,
    ..Settings::DEFAULT
};

/// The start contract's warm-up: a few events.
const WARM: Settings = Settings {
    warm_events: 5,
    ..Settings::DEFAULT
};

/// Runs `contract` on the engine `start` makes for `test`; nothing when it is skipped.
fn run(start: Start, settings: Settings, test: &str, contract: fn(&mut dyn Engine)) {
    if let Some(mut engine) = start(settings, test) {
        contract(engine.as_mut());
    }
}

/// A fresh log greets every node with `Connected { head_offset: 0, first_retained_offset:
/// None, after_offset: 0 }` and a valid epoch (1 to 32 of `[0-9a-z]`), as its first reply;
/// every node of one log is greeted with the same epoch, and an idle log sends nothing more.
fn fresh_log_greets_at_zero(engine: &mut dyn Engine) {
    let mut a = Peer::new(engine.node(None));
    let greeting = a.greeted();
    assert!(
        matches!(a.replies[0], BusReply::Connected { .. }),
        "first reply: {:?}",
        a.replies[0]
    );
    assert!(is_valid_epoch(&greeting.epoch), "{greeting:?}");
    assert_eq!(
        (
            greeting.head_offset,
            greeting.first_retained_offset,
            greeting.after_offset
        ),
        (0, None, 0),
        "{greeting:?}"
    );
    let mut b = Peer::new(engine.node(None));
    assert_eq!(b.greeted(), greeting, "a second node sees the same log");
    a.settle(QUIET);
    assert_eq!(
        a.replies.len(),
        1,
        "an idle log says nothing more: {:?}",
        a.replies
    );
}

/// The publishes the order contract makes: every kind of field, in turn.
fn sample(token: u64, i: usize, node: &str) -> Publish {
    let (topic, event, custom_id, data): (&str, Option<&str>, Option<&str>, String) = match i % 6 {
        0 => ("", None, None, format!("{node} plain {i}")),
        1 => (
            "orders",
            Some("created"),
            Some("order-17"),
            format!("line 1\nline 2\r\nline 3\rend {i}"),
        ),
        2 => ("größe", Some("ünïcödé"), None, format!("日本語 ✓ 🚀 {i}")),
        3 => ("orders", None, Some("k3x9-42"), String::new()),
        4 => ("", Some("x"), None, format!("  spaced {i}  \n\n")),
        _ => ("big", None, None, format!("{i}{}", "x".repeat(20_000))),
    };
    Publish {
        token,
        topic: topic.into(),
        event: event.map(Into::into),
        custom_id: custom_id.map(Into::into),
        data,
        accepted_ms: 1_700_000_000_000 + i as u64,
    }
}

/// Publishes from two nodes get ids `<epoch>-1, -2, …` without holes, all of one epoch; the
/// tail of every node (both publishers and a third that only listens) delivers every event
/// once, in offset order, with the id it was answered with and its topic, event name,
/// publisher-given id and data exactly as published (empty topic, empty data, line breaks
/// of every kind, non-ASCII text, 20 kB of data); each node's publishes keep the order in
/// which it submitted them.
fn one_order_without_holes(engine: &mut dyn Engine) {
    const EACH: usize = 60;
    let total = 2 * EACH as u64;
    let mut a = Peer::new(engine.node(None));
    let mut b = Peer::new(engine.node(None));
    let mut c = Peer::new(engine.node(None));
    let epoch = a.greeted().epoch;
    b.greeted();
    c.greeted();
    let mut sent = Vec::new();
    for i in 0..EACH {
        for (peer, name) in [(&mut a, "a"), (&mut b, "b")] {
            let publish = sample(peer.token(), i, name);
            sent.push((name, publish.clone()));
            peer.publish(publish);
        }
    }
    for (peer, name) in [(&mut a, "a"), (&mut b, "b")] {
        peer.wait(&format!("{name}'s answers and events"), |p| {
            p.published.len() == EACH && p.events.len() as u64 >= total
        });
    }
    c.wait("the listener's events", |p| p.events.len() as u64 >= total);
    let mut by_offset: Vec<Option<Publish>> = vec![None; total as usize + 1];
    for (name, publish) in &sent {
        let peer = if *name == "a" { &a } else { &b };
        let id = peer.id_of(publish.token);
        assert_eq!(id.epoch, epoch, "one epoch");
        assert!(
            (1..=total).contains(&id.offset),
            "id {id} out of 1..={total}"
        );
        let slot = &mut by_offset[id.offset as usize];
        assert!(slot.is_none(), "id {id} handed out twice");
        *slot = Some(publish.clone());
    }
    for (peer, name) in [(&mut a, "a"), (&mut b, "b"), (&mut c, "c")] {
        peer.settle(QUIET);
        let expected: Vec<u64> = (1..=total).collect();
        assert_eq!(
            peer.offsets(),
            expected,
            "{name}'s tail: each once, in order"
        );
        for event in &peer.events {
            let publish = by_offset[event.offset as usize]
                .as_ref()
                .expect("published");
            let want = BusEvent {
                offset: event.offset,
                id: ClusterId {
                    epoch: epoch.clone(),
                    offset: event.offset,
                },
                topic: publish.topic.clone(),
                event: publish.event.clone(),
                custom_id: publish.custom_id.clone(),
                data: publish.data.clone(),
                accepted_ms: Some(publish.accepted_ms),
            };
            assert_eq!(event, &want, "{name}'s event {}", event.offset);
        }
    }
    for (peer, name) in [(&a, "a"), (&b, "b")] {
        let mine: Vec<u64> = sent
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, p)| peer.id_of(p.token).offset)
            .collect();
        assert!(
            mine.is_sorted(),
            "{name}'s publishes out of order: {mine:?}"
        );
    }
}

/// Every publish is answered exactly once, with `Published` naming its token (any `u64`,
/// echoed as given) on a healthy log; and a publish is in the log when it is answered: a
/// range read sent right after the answer finds it. Every range read is answered once.
fn publishes_answered_once_and_readable(engine: &mut dyn Engine) {
    let mut a = Peer::new(engine.node(None));
    a.greeted();
    let mut tokens: Vec<u64> = vec![0, u64::MAX, 1 << 40, 7, 3];
    tokens.extend((0..95).map(|i| 1_000_003 * (i + 11)));
    for &token in &tokens {
        a.publish(plain(token, "t", &format!("event {token}")));
    }
    let mut checked = HashSet::new();
    while checked.len() < tokens.len() {
        a.wait("another publish's answer", |p| {
            p.published.keys().any(|t| !checked.contains(t))
        });
        let answered: Vec<u64> = a
            .published
            .keys()
            .copied()
            .filter(|t| !checked.contains(t))
            .collect();
        for token in answered {
            assert!(
                tokens.contains(&token),
                "an answer for an unknown token {token}"
            );
            let id = a.id_of(token);
            let range = a.fetch(FetchRange {
                after_offset: id.offset - 1,
                through_offset: Some(id.offset),
                limit: 1,
                ..range_after(0)
            });
            let data: Vec<&str> = range.events.iter().map(|e| e.data.as_str()).collect();
            assert_eq!(data, [format!("event {token}")], "read right after {id}");
            assert_eq!(range.events[0].id, id);
            checked.insert(token);
        }
    }
    a.wait("every event on the tail", |p| {
        p.events.len() >= tokens.len()
    });
    a.settle(QUIET);
    for token in &tokens {
        assert_eq!(
            a.published[token].len(),
            1,
            "publish {token} answered more than once"
        );
    }
    assert_eq!(a.published.len(), tokens.len());
    assert!(a.ranges.values().all(|answers| answers.len() == 1));
    assert_eq!(a.events.len(), tokens.len(), "each event once on the tail");
}

/// A head probe (`ProbeHead`, answered by the command side, not the tail) is answered once,
/// naming its token, with the log's epoch (the one the greeting named) and the last offset
/// handed out: 0 on a fresh log, then the offset of the newest publish, whichever node made
/// it. `/health` relies on it to see a log that moved while a node's tail was quiet.
fn head_probes_read_the_head(engine: &mut dyn Engine) {
    let mut a = Peer::new(engine.node(None));
    let greeting = a.greeted();
    assert_eq!(a.probe_head(), (greeting.epoch.clone(), 0), "a fresh log");
    let mut b = Peer::new(engine.node(None));
    b.greeted();
    let mut last = 0;
    for i in 0..3 {
        last = b.publish_surely("t", &format!("e{i}")).offset;
    }
    assert_eq!(last, 3);
    assert_eq!(
        a.probe_head(),
        (greeting.epoch, 3),
        "another node's publishes"
    );
    a.settle(QUIET);
    assert!(a.heads.values().all(|answers| answers.len() == 1));
}

/// Where a node starts: one started with `start = Some(id)` of the log it follows (a node
/// that knows where it was) is greeted with `after_offset = id.offset` and then delivers
/// exactly the events after it, whatever `warm_events` says; one started with `None` on a
/// log with history starts at `head - warm_events` (the newest `warm_events` follow); both
/// go on with new events.
fn nodes_start_where_told(engine: &mut dyn Engine) {
    let mut a = Peer::new(engine.node(None));
    let epoch = a.greeted().epoch;
    for i in 0..20 {
        a.publish_data("t", &format!("e{i}"));
    }
    a.wait("every answer", |p| p.published.len() == 20);
    let at = |offset| ClusterId {
        epoch: epoch.clone(),
        offset,
    };
    let mut peers = Vec::new();
    for (start, after) in [
        (Some(at(12)), 12),
        (None, 15),
        (Some(at(20)), 20),
        (Some(at(0)), 0),
    ] {
        let mut peer = Peer::new(engine.node(start.clone()));
        let greeting = peer.greeted();
        let what = format!("started at {start:?}: {greeting:?}");
        assert_eq!(greeting.after_offset, after, "{what}");
        assert_eq!(
            (greeting.head_offset, &greeting.epoch),
            (20, &epoch),
            "{what}"
        );
        let count = 20 - after as usize;
        peer.wait(&what, |p| p.events.len() >= count);
        peer.settle(QUIET);
        assert_eq!(
            peer.offsets(),
            (after + 1..=20).collect::<Vec<_>>(),
            "{what}"
        );
        peers.push((peer, what));
    }
    let next = a.publish_surely("t", "after");
    assert_eq!(next, at(21));
    for (peer, what) in &mut peers {
        peer.wait(what, |p| p.events.last().is_some_and(|e| e.offset == 21));
        assert_eq!(peer.events.last().map(|e| &e.data[..]), Some("after"));
    }
}

/// A restart keeps the log: once every node is gone and the store restarted (the Redis
/// server with `appendonly yes`; the local log's files stay; the memory log stays), a new
/// node is greeted with the same epoch, head and first retained offset, delivers the same
/// events with the same ids, and the next publish continues the offsets; a node started
/// from one of the old ids resumes right after it.
fn a_restart_keeps_the_log(engine: &mut dyn Engine) {
    let mut a = Peer::new(engine.node(None));
    let epoch = a.greeted().epoch;
    for i in 0..7 {
        let token = a.token();
        a.publish(sample(token, i, "before"));
    }
    a.wait("the events", |p| {
        p.published.len() == 7 && p.events.len() >= 7
    });
    let before = a.events.clone();
    drop(a);
    engine.restart_store();
    let mut b = Peer::new(engine.node(None));
    let greeting = b.greeted();
    assert_eq!(greeting.epoch, epoch, "same epoch after a restart");
    assert_eq!(
        (greeting.head_offset, greeting.first_retained_offset),
        (7, Some(1)),
        "{greeting:?}"
    );
    b.wait("the old events", |p| p.events.len() >= 7);
    assert_eq!(b.events, before, "the same events, ids and fields");
    let next = b.publish_surely("t", "after the restart");
    assert_eq!(next, ClusterId { epoch, offset: 8 });
    let mut c = Peer::new(engine.node(Some(before[4].id.clone())));
    assert_eq!(c.greeted().after_offset, 5);
    c.wait("the events after 5", |p| p.events.len() >= 3);
    c.settle(QUIET);
    assert_eq!(c.offsets(), [6, 7, 8]);
}

/// A new log under a running node (Redis flushed, the local files deleted, the memory log
/// lost) is a new epoch: the node that followed the old one reports `EpochChanged {
/// previous, epoch }`, right followed by `Connected { epoch, after_offset: 0, .. }`, then
/// the new log's events from offset 1 with the ids their publishes were answered with.
fn a_new_log_is_a_new_epoch(engine: &mut dyn Engine) {
    let mut tail = Peer::new(engine.node(None));
    let mut publisher = Peer::new(engine.node(None));
    let old = tail.greeted().epoch;
    publisher.greeted();
    for i in 0..5 {
        publisher.publish_surely("", &format!("old-{i}"));
    }
    tail.wait("the old events", |p| p.events.len() >= 5);
    if let Err(why) = engine.replace_log() {
        panic!("cannot replace the log: {why}");
    }
    let fresh = [
        publisher.publish_surely("", "new-0"),
        publisher.publish_surely("", "new-1"),
    ];
    let new = fresh[0].epoch.clone();
    assert_ne!(new, old, "a new log has a new epoch");
    assert_eq!(fresh.each_ref().map(|id| id.offset), [1, 2], "{fresh:?}");
    assert!(fresh.iter().all(|id| id.epoch == new), "{fresh:?}");
    tail.wait("the epoch change and the new events", |p| {
        !p.epoch_changes.is_empty() && p.events.len() >= 7
    });
    tail.settle(QUIET);
    assert_eq!(tail.epoch_changes, [(old.clone(), new.clone())]);
    let at = tail
        .replies
        .iter()
        .position(|r| matches!(r, BusReply::EpochChanged { .. }))
        .expect("reported");
    match tail.replies.get(at + 1) {
        Some(BusReply::Connected {
            epoch,
            after_offset: 0,
            ..
        }) if *epoch == new => {}
        other => panic!("after EpochChanged: {other:?}"),
    }
    let ids: Vec<&ClusterId> = tail.events[5..].iter().map(|e| &e.id).collect();
    assert_eq!(
        ids,
        fresh.iter().collect::<Vec<_>>(),
        "the new log's events"
    );
    assert_eq!(tail.events[5].data, "new-0");
}

/// A log behind the node's position is a new epoch: a node whose position in the log's
/// epoch lies beyond the head (the log came back as an older copy of itself: a restored
/// backup, a lost tail of writes; a `start` past the head stands for it here) is told
/// `EpochChanged { previous, epoch }` right followed by `Connected { after_offset: 0 }`, and
/// publishes get ids of the new epoch: no id is handed out for two different events.
fn a_log_behind_the_node_is_a_new_epoch(engine: &mut dyn Engine) {
    let mut a = Peer::new(engine.node(None));
    let old = a.greeted().epoch;
    for i in 0..5 {
        a.publish_surely("", &format!("e{i}"));
    }
    let beyond = ClusterId {
        epoch: old.clone(),
        offset: 10,
    };
    let mut b = Peer::new(engine.node(Some(beyond)));
    b.greeted();
    b.settle(QUIET);
    let next = b.publish_surely("", "next");
    assert_ne!(
        next.epoch, old,
        "id {next} may name an event already delivered"
    );
    b.wait("the epoch change", |p| !p.epoch_changes.is_empty());
    assert_eq!(b.epoch_changes, [(old, next.epoch.clone())]);
    match &b.replies[..2] {
        [
            BusReply::EpochChanged { .. },
            BusReply::Connected {
                epoch,
                after_offset: 0,
                ..
            },
        ] if *epoch == next.epoch => {}
        other => panic!("the greeting: {other:?}"),
    }
}

/// A log that fails over to a copy missing its newest events, whose offsets another writer
/// reused with other events (a replica promoted without them, on which a node that never
/// saw them published first), is a new epoch for a node that delivered the lost events: a
/// range read (asked before its tail saw the copy) is of the new epoch or holds only what
/// was delivered, never the events written over the lost offsets under their old ids; its
/// tail reports `EpochChanged { previous, epoch }` right followed by `Connected {
/// after_offset: 0 }` and delivers nothing of the copy under an old id; its publishes get
/// ids of the new epoch. (The local log cannot reach this state: see the module docs.)
fn a_rewritten_tail_is_a_new_epoch(engine: &mut dyn Engine) {
    let mut a = Peer::new(engine.node(None));
    let old = a.greeted().epoch;
    for i in 1..=6 {
        a.publish_surely("t", &format!("old-{i}"));
    }
    a.wait("the events", |p| p.events.len() >= 6);
    let others: Vec<String> = (4..=8).map(|i| format!("other-{i}")).collect();
    if let Err(why) = engine.fail_over(3, &others) {
        panic!("cannot fail over: {why}");
    }
    let range = fetch_surely(&mut a, range_after(3));
    assert!(
        range.epoch != old || range.events.iter().all(|e| e.data.starts_with("old-")),
        "a range of the rewritten log under the old epoch: {range:?}"
    );
    a.wait("the epoch change and the greeting after it", |p| {
        p.replies
            .iter()
            .skip_while(|r| !matches!(r, BusReply::EpochChanged { .. }))
            .nth(1)
            .is_some()
    });
    let new = a.epoch_changes[0].1.clone();
    assert_eq!(a.epoch_changes, [(old.clone(), new.clone())]);
    let at = a
        .replies
        .iter()
        .position(|r| matches!(r, BusReply::EpochChanged { .. }))
        .expect("reported");
    match a.replies.get(at + 1) {
        Some(BusReply::Connected {
            epoch,
            after_offset: 0,
            ..
        }) if *epoch == new => {}
        other => panic!("after EpochChanged: {other:?}"),
    }
    let next = a.publish_surely("t", "after");
    assert_eq!(next.epoch, new, "{next}");
    a.settle(QUIET);
    for e in &a.events {
        assert!(
            e.id.epoch != old || e.data.starts_with("old-"),
            "the copy's {} under an old id {}",
            e.data,
            e.id
        );
    }
}

/// A range read, asked again while the command side answers that it cannot reach the log
/// (right after a failover its connection may have dropped).
fn fetch_surely(peer: &mut Peer, fetch: FetchRange) -> sse_server::bus::RangeReply {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let token = peer.token();
        peer.submit(BusRequest::FetchRange(FetchRange {
            token,
            ..fetch.clone()
        }));
        peer.wait("a range's answer", |p| p.ranges.contains_key(&token));
        match &peer.ranges[&token][0] {
            Ok(range) => return range.clone(),
            Err(why) if std::time::Instant::now() < deadline => {
                eprintln!("range failed ({why}); again");
                std::thread::sleep(Duration::from_millis(30));
            }
            Err(why) => panic!("range {token}: {why}"),
        }
    }
}
