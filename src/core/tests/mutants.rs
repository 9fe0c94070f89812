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
