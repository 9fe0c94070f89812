//! The range-read contracts: paging through the log with every bound `FetchRange` has,
//! and what retention leaves for a reader.

use super::engines::{Engine, Settings};
use super::peer::{PLAIN_ACCEPTED_MS, Peer, range_after};
use super::{QUIET, RETAINED};
use sse_server::bus::{BusEvent, FetchRange};

/// Reads `template`'s range page by page from its `after_offset`, continuing from
/// `scanned_through` until `complete`, and checks every page's promises against the
/// untrimmed log of `epoch` (offsets without holes): events after the page's start, through
/// `scanned_through` and `through_offset`, of the asked topics, in order; an incomplete page
/// scanned at least one and at most `min(limit, batch)` entries; only the last event of a
/// page takes its data to `max_bytes`; `first_retained_offset` is 1. Returns the events.
fn walk(peer: &mut Peer, template: &FetchRange, epoch: &str, batch: usize) -> Vec<BusEvent> {
    let mut after = template.after_offset;
    let mut got: Vec<BusEvent> = Vec::new();
    for _ in 0..10_000 {
        let page = peer.fetch(FetchRange {
            after_offset: after,
            ..template.clone()
        });
        let at = format!("page after {after} of {template:?}: {page:?}");
        assert_eq!(page.epoch, epoch, "{at}");
        assert_eq!(page.first_retained_offset, Some(1), "{at}");
        assert!(page.scanned_through >= after, "{at}");
        let offsets: Vec<u64> = page.events.iter().map(|e| e.offset).collect();
        assert!(
            offsets.is_sorted() && offsets.windows(2).all(|w| w[0] < w[1]),
            "{at}"
        );
        for event in &page.events {
            assert!(
                event.offset > after && event.offset <= page.scanned_through,
                "{at}"
            );
            assert!(
                template.through_offset.is_none_or(|t| event.offset <= t),
                "{at}"
            );
            let topics = template.topics.as_ref();
            assert!(topics.is_none_or(|t| t.contains(&event.topic)), "{at}");
        }
        if let Some((_, before_last)) = page.events.split_last() {
            let bytes: usize = before_last.iter().map(|e| e.data.len()).sum();
            assert!(
                bytes < template.max_bytes,
                "{at}: the page went past max_bytes"
            );
        }
        got.extend(page.events);
        if page.complete {
            return got;
        }
        let scanned = page.scanned_through - after;
        let most = template.limit.min(batch) as u64;
        assert!(
            (1..=most).contains(&scanned),
            "{at}: scanned {scanned} entries"
        );
        after = page.scanned_through;
    }
    panic!("the walk of {template:?} never completed");
}

/// Range reads: `FetchRange` returns the events after `after_offset` through
/// `through_offset` (inclusive), of the `topics` asked for, scanning at most `limit` entries
/// (and never more than the batch), ending a page with the event whose data reaches
/// `max_bytes`; `scanned_through` and `complete` let a reader walk the whole log page by
/// page and get exactly the matching events, once each; `first_retained_offset` is the
/// oldest offset kept. At the head a read is complete and empty.
pub fn range_reads_walk_the_log(engine: &mut dyn Engine) {
    const N: u64 = 60;
    let batch = Settings::DEFAULT.batch;
    let mut a = Peer::new(engine.node(None));
    let epoch = a.greeted().epoch;
    let mut all = Vec::new();
    for i in 0..N {
        let topic = ["a", "b", ""][i as usize % 3];
        let data = format!("{i}:{}", "d".repeat(i as usize % 5 * 3));
        let token = a.publish_data(topic, &data);
        all.push((token, topic, data));
    }
    a.wait("every answer", |p| p.published.len() as u64 == N);
    let all: Vec<BusEvent> = all
        .into_iter()
        .map(|(token, topic, data)| {
            let id = a.id_of(token);
            BusEvent {
                offset: id.offset,
                id,
                topic: topic.into(),
                event: None,
                custom_id: None,
                data,
                accepted_ms: Some(PLAIN_ACCEPTED_MS),
            }
        })
        .collect();
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.offset == i as u64 + 1)
    );
    let of = |events: &[BusEvent]| events.iter().map(|e| e.offset).collect::<Vec<_>>();
    let topics = |names: &[&str]| Some(names.iter().map(|t| t.to_string()).collect());
    let only = |f: &dyn Fn(&BusEvent) -> bool| all.iter().filter(|e| f(e)).cloned().collect();

    let whole = FetchRange {
        limit: 7,
        ..range_after(0)
    };
    assert_eq!(walk(&mut a, &whole, &epoch, batch), all, "the whole log");
    let wanted = FetchRange {
        topics: topics(&["a", ""]),
        limit: 5,
        max_bytes: 10,
        ..range_after(0)
    };
    let expected: Vec<BusEvent> = only(&|e| e.topic != "b");
    assert_eq!(walk(&mut a, &wanted, &epoch, batch), expected, "two topics");
    let bounded = FetchRange {
        through_offset: Some(40),
        topics: topics(&["b"]),
        limit: 4,
        max_bytes: 1,
        ..range_after(5)
    };
    let expected: Vec<BusEvent> = only(&|e| e.topic == "b" && (6..=40).contains(&e.offset));
    assert_eq!(
        walk(&mut a, &bounded, &epoch, batch),
        expected,
        "one topic, bounded"
    );
    let none = FetchRange {
        topics: topics(&[]),
        limit: 9,
        ..range_after(0)
    };
    assert!(walk(&mut a, &none, &epoch, batch).is_empty(), "no topic");

    // Single pages, exactly.
    let page = a.fetch(FetchRange {
        through_offset: Some(20),
        ..range_after(10)
    });
    assert_eq!(
        of(&page.events),
        (11..=20).collect::<Vec<_>>(),
        "through is inclusive"
    );
    assert!(page.complete && page.scanned_through == 20, "{page:?}");
    let page = a.fetch(FetchRange {
        limit: 5,
        ..range_after(0)
    });
    assert_eq!(of(&page.events), [1, 2, 3, 4, 5], "limit");
    assert!(!page.complete && page.scanned_through == 5, "{page:?}");
    let page = a.fetch(range_after(0));
    assert!(!page.complete, "a page never scans more than the batch");
    assert!(
        (1..=batch).contains(&page.events.len()),
        "{}",
        page.events.len()
    );
    let page = a.fetch(FetchRange {
        max_bytes: all[0].data.len() + 1,
        ..range_after(0)
    });
    assert_eq!(
        of(&page.events),
        [1, 2],
        "the event reaching max_bytes ends the page"
    );
    assert!(!page.complete && page.scanned_through == 2, "{page:?}");
    let page = a.fetch(FetchRange {
        max_bytes: 1,
        ..range_after(0)
    });
    assert_eq!(of(&page.events), [1], "at least one entry, however large");
    let page = a.fetch(range_after(N));
    assert!(page.events.is_empty() && page.complete, "{page:?}");
    assert_eq!(page.scanned_through, N);
    let page = a.fetch(FetchRange {
        through_offset: Some(N + 100),
        ..range_after(N - 10)
    });
    assert_eq!(of(&page.events), (N - 9..=N).collect::<Vec<_>>());
    assert!(
        page.complete,
        "a read through a later offset ends at the head: {page:?}"
    );
}

/// Retention: with `max_len = N` the log keeps the newest events: exactly N (memory,
/// local) or at least N and not all of them once far more were published (Redis's
/// `MAXLEN ~`); `first_retained_offset` names the oldest kept, in range replies and in a new
/// node's greeting; a range read from before it reports `lost_events_after`, one from right
/// before it does not, and both return the retained events from the oldest on; a new node's
/// tail delivers exactly the retained ones.
pub fn retention_keeps_the_newest(engine: &mut dyn Engine) {
    const PUBLISHED: u64 = 1000;
    let max_len = RETAINED.max_len;
    let mut a = Peer::new(engine.node(None));
    a.greeted();
    for burst in 0..10 {
        for i in 0..100 {
            a.publish_data("t", &format!("{burst}-{i}"));
        }
        let answered = (burst + 1) * 100;
        a.wait("a burst's answers", |p| p.published.len() == answered);
    }
    let head = (1..=PUBLISHED)
        .map(|t| a.id_of(t).offset)
        .max()
        .expect("published");
    assert_eq!(head, PUBLISHED);
    let from_start = a.fetch(range_after(0));
    let first = from_start.first_retained_offset.expect("events retained");
    let kept = head - first + 1;
    if engine.exact_retention() {
        assert_eq!(
            kept, max_len,
            "exactly max_len kept (first retained {first})"
        );
    } else {
        assert!(
            kept >= max_len,
            "at least max_len kept (first retained {first})"
        );
        assert!(
            first > 1,
            "{PUBLISHED} events with max_len {max_len}: nothing trimmed"
        );
    }
    assert!(from_start.lost_events_after(0), "{from_start:?}");
    assert_eq!(from_start.events.first().map(|e| e.offset), Some(first));
    let before = a.fetch(range_after(first - 2));
    assert!(before.lost_events_after(first - 2), "{before:?}");
    let mut after = first - 1;
    let mut retained = Vec::new();
    loop {
        let page = a.fetch(range_after(after));
        assert!(!page.lost_events_after(first - 1), "{page:?}");
        assert_eq!(page.first_retained_offset, Some(first));
        retained.extend(page.events.iter().map(|e| e.offset));
        if page.complete {
            break;
        }
        after = page.scanned_through;
    }
    assert_eq!(retained, (first..=head).collect::<Vec<_>>());

    let mut b = Peer::new(engine.node(None));
    let greeting = b.greeted();
    assert_eq!(greeting.first_retained_offset, Some(first), "{greeting:?}");
    assert_eq!(greeting.head_offset, head);
    b.wait("the retained events", |p| p.events.len() as u64 >= kept);
    b.settle(QUIET);
    assert_eq!(b.offsets(), (first..=head).collect::<Vec<_>>());
}
