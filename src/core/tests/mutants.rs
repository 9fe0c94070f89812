//! Core tests written to kill mutants that the other tests let survive (issue 12).

use super::*;

/// A caller offering no slots gets nothing back, even with a partly written response pending
/// (kills `n < iov.len()` → `<=` for the pending slot in `write_slices`).
#[test]
fn write_slices_with_no_room_offers_nothing() {
    let mut t = T::new(cfg());
    let id = t.connect();
    t.core.handle_read(id, GET, t.now);
    // A short write leaves the response head pending.
    t.drain(Some(5));
    assert_eq!(t.core.write_slices(id, &mut []), 0);
}

fn keepalive_every_15s() -> T {
    let mut c = cfg();
    c.interval = None;
    c.keepalive = Some(Duration::from_secs(15));
    T::new(c)
}

/// Writing an event restarts the keep-alive's idle clock (kills the `>` → `==`/`<` mutants of
/// `written > 0` in `handle_written`).
#[test]
fn a_written_event_postpones_the_keepalive() {
    let mut t = keepalive_every_15s();
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    t.advance(Duration::from_secs(10));
    t.core.publish("", None, None, "x", t.now).unwrap();
    t.drain(None);
    t.advance(Duration::from_secs(7));
    t.drain(None);
    assert!(
        !t.text(a).contains(": keep-alive"),
        "idle only 7 s: {}",
        t.text(a)
    );
    assert_eq!(t.events(a).len(), 1);
}

/// A write of no bytes is not activity (kills `written > 0` → `>=` in `handle_written`).
#[test]
fn an_empty_write_does_not_postpone_the_keepalive() {
    let mut t = keepalive_every_15s();
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    t.advance(Duration::from_secs(10));
    t.core.handle_written(a, 0, t.now);
    t.advance(Duration::from_secs(7));
    t.drain(None);
    assert!(t.text(a).ends_with(": keep-alive\n\n"), "{}", t.text(a));
}

/// The driver reads its settings (`shutdown_grace`, `max_send_buffer`) from the core's config:
/// it is the one the core was made with (kills `config` returning a default one).
#[test]
fn the_config_is_the_one_given() {
    let mut c = cfg();
    c.max_send_buffer = 12_345;
    c.shutdown_grace = Duration::from_millis(4_321);
    let t = T::new(c);
    assert_eq!(t.core.config().max_send_buffer, 12_345);
    assert_eq!(t.core.config().shutdown_grace, Duration::from_millis(4_321));
}

/// A connection the driver closed at once (out of descriptors) counts as refused, each one
/// (kills `refuse` as a no-op, `-=` and `*=`).
#[test]
fn the_driver_refusals_are_counted() {
    let mut t = T::new(cfg());
    t.core.refuse();
    t.core.refuse();
    assert_eq!(t.core.metrics().refused, 2);
}

/// Shutting down is visible to the driver (it stops accepting) from the moment it is asked.
#[test]
fn shutting_down_is_reported_at_once() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    // A short write: the stream head is still pending, so shutdown waits for it.
    t.drain(Some(5));
    assert!(!t.core.is_shutting_down());
    t.core.shutdown(t.now);
    assert!(t.core.is_shutting_down());
    assert!(!t.core.is_finished(), "the stream has bytes pending");
}

/// A tick handled late keeps the cadence: the next one is due one interval after the one
/// that was due, not after the late wake-up (kills `due + interval` → `due - interval`).
#[test]
fn a_late_tick_keeps_the_cadence() {
    let mut c = cfg();
    c.interval = Some(Duration::from_secs(2));
    c.keepalive = None;
    let mut t = T::new(c);
    let start = t.now;
    assert_eq!(t.core.next_deadline(), Some(start + Duration::from_secs(2)));
    t.advance(Duration::from_millis(2_500));
    assert_eq!(t.core.next_deadline(), Some(start + Duration::from_secs(4)));
    // More than a whole interval late: missed ticks are skipped, not burst.
    t.advance(Duration::from_millis(4_000));
    assert_eq!(
        t.core.next_deadline(),
        Some(start + Duration::from_millis(8_500))
    );
}
