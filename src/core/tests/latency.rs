//! The latency histograms through the core, with a controlled clock: which deliveries and
//! fan-outs are observed, when, and in which bucket.

use super::*;
use crate::bus::types::{BusEvent, BusReply, ClusterId};
use crate::core::histogram::{BOUNDS, Histogram};

/// The index of the bucket bound `le` (seconds, as the label writes it).
fn le(bound: &str) -> usize {
    BOUNDS.iter().position(|(_, l)| *l == bound).unwrap()
}

/// Observations in exactly the bucket whose upper bound is `bound`.
fn in_bucket(h: &Histogram, bound: &str) -> u64 {
    let i = le(bound);
    h.cumulative(i) - if i == 0 { 0 } else { h.cumulative(i - 1) }
}

fn quiet() -> Config {
    Config {
        interval: None,
        ..cfg()
    }
}

fn subscribe(t: &mut T, topic: &str) -> ClientId {
    let id = t.connect();
    let req = format!("GET /events?topic={topic} HTTP/1.1\r\nHost: x\r\n\r\n");
    t.core.handle_read(id, req.as_bytes(), t.now);
    t.drain(None);
    id
}

/// Every subscriber written 3 ms after the publish: one delivery each in the 5 ms bucket,
/// one fan-out for the event, sums exact.
#[test]
fn each_delivery_and_the_fanout_are_observed_once() {
    let mut t = T::new(quiet());
    subscribe(&mut t, "a");
    subscribe(&mut t, "a");
    t.core.publish("a", None, None, "x", t.now).unwrap();
    t.now += Duration::from_millis(3);
    t.drain(None);
    let l = &t.core.metrics().latency;
    assert_eq!(l.delivery().count(), 2);
    assert_eq!(in_bucket(&l.delivery(), "0.005"), 2);
    assert_eq!(l.delivery().sum(), Duration::from_millis(6));
    assert_eq!(l.fanout.count(), 1);
    assert_eq!(in_bucket(&l.fanout, "0.005"), 1);
    assert_eq!(l.fanout.sum(), Duration::from_millis(3));
    // Nothing more happens to a finished event.
    t.now += Duration::from_secs(1);
    t.drain(None);
    assert_eq!(t.core.metrics().latency.fanout.count(), 1);
}

/// The fan-out lasts until the last subscriber takes the event; a frame written in pieces
/// counts when its last byte is taken.
#[test]
fn the_fanout_ends_with_the_slowest_subscriber_and_partial_frames_count_when_complete() {
    let mut t = T::new(quiet());
    let fast = subscribe(&mut t, "a");
    let slow = subscribe(&mut t, "a");
    t.core.publish("a", None, None, "some data", t.now).unwrap();
    t.drain(Some(0)); // both sockets full
    t.now += Duration::from_millis(1);
    t.core.handle_writable(fast);
    t.drain(None);
    assert_eq!(t.core.metrics().latency.delivery().count(), 1);
    assert_eq!(
        t.core.metrics().latency.fanout.count(),
        0,
        "slow still has it"
    );
    // 4 bytes of the frame at 30 ms, the rest at 200 ms.
    t.now += Duration::from_millis(29);
    t.core.handle_writable(slow);
    t.drain(Some(4));
    assert_eq!(t.core.metrics().latency.delivery().count(), 1);
    t.now += Duration::from_millis(170);
    t.core.handle_writable(slow);
    t.drain(None);
    assert_eq!(t.events(slow).len(), 1);
    let l = &t.core.metrics().latency;
    assert_eq!(l.delivery().count(), 2);
    assert_eq!(in_bucket(&l.delivery(), "0.001"), 1);
    assert_eq!(in_bucket(&l.delivery(), "0.25"), 1);
    assert_eq!(l.fanout.count(), 1);
    assert_eq!(in_bucket(&l.fanout, "0.25"), 1);
}

/// A subscriber that leaves before taking the event does not hold its fan-out open: it is
/// observed when the last one leaves, with the latest delivery's latency. One that leaves
/// with a frame half written does the same.
#[test]
fn subscribers_that_leave_release_the_event() {
    let mut t = T::new(quiet());
    let fast = subscribe(&mut t, "a");
    let gone = subscribe(&mut t, "a");
    let half = subscribe(&mut t, "a");
    t.core.publish("a", None, None, "x", t.now).unwrap();
    t.drain(Some(0));
    t.now += Duration::from_micros(50);
    t.core.handle_writable(fast);
    t.drain(None);
    t.core.handle_writable(half);
    t.drain(Some(2));
    t.now += Duration::from_secs(3);
    t.core.handle_read_closed(gone);
    t.drain(None);
    assert_eq!(
        t.core.metrics().latency.fanout.count(),
        0,
        "half still has it"
    );
    t.core.handle_io_error(half, IoFailure::Reset);
    t.drain(None);
    let l = &t.core.metrics().latency;
    assert_eq!(l.delivery().count(), 1);
    assert_eq!(l.fanout.count(), 1);
    assert_eq!(in_bucket(&l.fanout, "0.0001"), 1, "the fast one's 50 µs");
}

/// An event nobody is subscribed to has no fan-out; replaying it to a resume later is not a
/// live delivery. Every subscriber leaving before any took it: nothing observed either.
#[test]
fn events_nobody_took_and_replays_are_not_observed() {
    let mut t = T::new(quiet());
    let id = t.core.publish("a", None, None, "x", t.now).unwrap();
    t.now += Duration::from_secs(5);
    let r = t.connect();
    t.core.handle_read(
        r,
        &resume_request("a", &format!("{}-0", t.core.boot_id())),
        t.now,
    );
    t.drain(None);
    assert_eq!(t.events(r).len(), 1, "replayed {id}");
    let l = &t.core.metrics().latency;
    assert_eq!((l.delivery().count(), l.fanout.count()), (0, 0));
    let s = subscribe(&mut t, "b");
    t.core.publish("b", None, None, "y", t.now).unwrap();
    t.drain(Some(0));
    t.core.handle_read_closed(s);
    t.drain(None);
    let l = &t.core.metrics().latency;
    assert_eq!((l.delivery().count(), l.fanout.count()), (0, 0));
}

/// A resume that joins while the event is still being written to a slow subscriber waits
/// for it too; ticks are events like the others.
#[test]
fn a_resume_joining_an_open_fanout_and_ticks_count() {
    let mut t = T::new(Config {
        interval: Some(Duration::from_secs(2)),
        ..cfg()
    });
    let slow = subscribe(&mut t, "a");
    t.core.publish("a", None, None, "x", t.now).unwrap();
    t.drain(Some(0));
    t.now += Duration::from_millis(7);
    let r = t.connect();
    t.core.handle_read(
        r,
        &resume_request("a", &format!("{}-0", t.core.boot_id())),
        t.now,
    );
    t.drain(None);
    assert_eq!(t.core.metrics().latency.delivery().count(), 1);
    assert_eq!(t.core.metrics().latency.fanout.count(), 0);
    t.now += Duration::from_millis(400);
    t.core.handle_writable(slow);
    t.drain(None);
    let l = &t.core.metrics().latency;
    assert_eq!(in_bucket(&l.delivery(), "0.01"), 1);
    assert_eq!(in_bucket(&l.delivery(), "0.5"), 1);
    assert_eq!(in_bucket(&l.fanout, "0.5"), 1);
    // A tick to the default stream's subscriber.
    let d = subscribe(&mut t, "");
    t.advance(Duration::from_secs(2));
    t.drain(None);
    assert!(t.text(d).contains("data: "));
    assert_eq!(t.core.metrics().latency.fanout.count(), 2);
}

/// An event that falls out of the history while a subscriber still lags behind it is
/// observed then, with the latest delivery made; the `latest` policy skipping a client past
/// events releases them.
#[test]
fn eviction_and_skipping_close_open_fanouts() {
    let mut t = T::new(Config {
        history: 1,
        max_backlog_events: 1,
        slow_client: SlowClientPolicy::Latest,
        ..quiet()
    });
    let fast = subscribe(&mut t, "a");
    let lagging = subscribe(&mut t, "a");
    t.core.publish("a", None, None, "1", t.now).unwrap();
    t.drain(Some(0));
    t.now += Duration::from_millis(2);
    t.core.handle_writable(fast);
    t.drain(None);
    assert_eq!(t.core.metrics().latency.fanout.count(), 0);
    // Event 2 evicts event 1 (lagging never took it) and skips `lagging` forward.
    t.core.publish("a", None, None, "2", t.now).unwrap();
    let l = &t.core.metrics().latency;
    assert_eq!(l.fanout.count(), 1);
    assert_eq!(in_bucket(&l.fanout, "0.0025"), 1);
    t.now += Duration::from_millis(20);
    t.core.handle_writable(lagging);
    t.drain(None);
    assert_eq!(t.events(lagging).last().unwrap().data, "2");
    let l = &t.core.metrics().latency;
    assert_eq!(l.fanout.count(), 2);
    assert_eq!(in_bucket(&l.fanout, "0.025"), 1);
}

/// `/metrics` renders the two histograms (not the bus's outside cluster mode), cumulative
/// and ending in `+Inf` = `_count`.
#[test]
fn metrics_render_the_histograms() {
    let mut t = T::new(quiet());
    subscribe(&mut t, "a");
    t.core.publish("a", None, None, "x", t.now).unwrap();
    t.now += Duration::from_millis(30);
    t.drain(None);
    let (_, text) = t.get_once("/metrics");
    assert!(
        text.contains("# TYPE sse_fanout_seconds histogram\n"),
        "{text}"
    );
    assert!(text.contains("sse_fanout_seconds_bucket{le=\"0.025\"} 0\n"));
    assert!(text.contains("sse_fanout_seconds_bucket{le=\"0.05\"} 1\n"));
    assert!(text.contains("sse_fanout_seconds_bucket{le=\"+Inf\"} 1\n"));
    assert!(text.contains("sse_fanout_seconds_sum 0.030000000\n"));
    assert!(text.contains("sse_fanout_seconds_count 1\n"));
    assert!(text.contains("sse_delivery_seconds_count 1\n"));
    assert!(!text.contains("sse_bus_apply_seconds"));
}

fn bus_event(offset: u64, accepted_ms: Option<u64>) -> BusEvent {
    BusEvent {
        offset,
        id: ClusterId {
            epoch: "ep".into(),
            offset,
        },
        topic: "a".into(),
        event: None,
        custom_id: None,
        data: "x".into(),
        accepted_ms,
    }
}

/// Cluster mode: each event applied from the tail is observed against the node's wall
/// clock: a publish stamped 40 ms ago lands in the 50 ms bucket, one from a host whose
/// clock is ahead counts as 0, one without a stamp (older entries) is not observed, and a
/// duplicate is not applied.
#[test]
fn bus_apply_is_measured_from_the_publish_stamp() {
    let mut t = T::new(Config {
        interval: None,
        keepalive: None,
        cluster: Some(crate::bus::BusConfig::redis("redis://127.0.0.1:1/0")),
        ..Config::default()
    });
    t.core.handle_bus(
        BusReply::Connected {
            epoch: "ep".into(),
            head_offset: 0,
            first_retained_offset: None,
            after_offset: 0,
        },
        t.now,
    );
    t.drain(None);
    let s = subscribe(&mut t, "a");
    // The harness's wall clock at `t.now`.
    let wall_ms = Utc
        .with_ymd_and_hms(2024, 10, 13, 14, 35, 22)
        .unwrap()
        .timestamp_millis() as u64;
    let events = vec![
        bus_event(1, Some(wall_ms - 40)),
        bus_event(2, Some(wall_ms + 5_000)),
        bus_event(3, None),
        bus_event(3, Some(wall_ms - 40)),
    ];
    t.core.handle_bus(
        BusReply::Events {
            events,
            head_offset: 3,
        },
        t.now,
    );
    t.drain(None);
    assert_eq!(t.events(s).len(), 3);
    let l = &t.core.metrics().latency;
    assert_eq!(l.bus_apply.count(), 2);
    assert_eq!(in_bucket(&l.bus_apply, "0.05"), 1);
    assert_eq!(in_bucket(&l.bus_apply, "0.0001"), 1);
    assert_eq!(l.fanout.count(), 3, "fan-out counts from the local append");
    let (_, text) = t.get_once("/metrics");
    assert!(text.contains("sse_bus_apply_seconds_count 2\n"), "{text}");
}

/// The fan-out state is per retained event, never per client: keep it small.
#[test]
fn the_per_event_state_stays_small() {
    let size = std::mem::size_of::<crate::core::latency::Fanout>();
    assert!(size <= 40, "Fanout grew to {size} bytes");
}
