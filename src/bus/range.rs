//! One page of a range read, cut the same way whichever engine scanned the entries: at most
//! the entries scanned, ending early with the event whose data reaches the page's byte
//! budget, and where the next page continues.

use super::types::{BusEvent, FetchRange, RangeReply, page_len};

/// One log position a range read looked at.
pub(super) enum Scanned {
    /// An event of the log's current epoch.
    Event(BusEvent),
    /// A position that holds no readable event of this epoch (not ours, unreadable, or of
    /// another epoch): it is scanned past like an event of another topic.
    Hole(u64),
}

impl Scanned {
    fn offset(&self) -> u64 {
        match self {
            Scanned::Event(e) => e.offset,
            Scanned::Hole(offset) => *offset,
        }
    }
}

/// Builds the reply to `range` from the `scanned` entries (in offset order, at most `limit`
/// of them, the engine's read after `range.after_offset` through `range.through_offset`).
pub(super) fn page(
    range: &FetchRange,
    limit: usize,
    epoch: String,
    first_retained_offset: Option<u64>,
    mut scanned: Vec<Scanned>,
) -> RangeReply {
    let wanted = |topic: &str| {
        range
            .topics
            .as_ref()
            .is_none_or(|topics| topics.iter().any(|t| t == topic))
    };
    let kept = page_len(
        scanned.iter().map(|entry| match entry {
            Scanned::Event(e) if wanted(&e.topic) => e.data.len(),
            _ => 0,
        }),
        range.max_bytes,
    );
    let cut = kept < scanned.len();
    scanned.truncate(kept);
    let last_offset = scanned.last().map(Scanned::offset);
    let complete = !cut
        && (scanned.len() < limit
            || last_offset.is_some_and(|last| range.through_offset.is_some_and(|t| last >= t)));
    let scanned_through = match (complete, range.through_offset, last_offset) {
        (true, Some(through), _) => through.max(range.after_offset),
        (_, _, Some(last)) => last,
        (_, _, None) => range.after_offset,
    };
    let events = scanned
        .into_iter()
        .filter_map(|entry| match entry {
            Scanned::Event(e) if wanted(&e.topic) => Some(e),
            _ => None,
        })
        .collect();
    RangeReply {
        token: range.token,
        epoch,
        first_retained_offset,
        events,
        scanned_through,
        complete,
    }
}
