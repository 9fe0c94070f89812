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
