//! The tail fingerprint: the last event a node's tail handed to the core (its epoch, offset
//! and a digest of its content), and the one rule every engine applies with it. A log that
//! still names that epoch but holds another event at that offset has had its offsets reused
//! (a replica promoted without the newest events, on which a node that never saw them
//! published first): its ids would name two events, so it must become a new epoch.

use super::types::BusEvent;

/// The last event a tail handed over: what a later read of the log at its offset must find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub epoch: String,
    pub offset: u64,
    /// [`digest`] of the event's content.
    pub digest: u64,
}

/// What a log holds at a delivered event's offset, read back.
#[derive(Clone, Copy, Debug)]
pub enum AtOffset<'a> {
    /// An event of the log's current epoch.
    Event(&'a BusEvent),
    /// An entry this deployment wrote that is no event of the current epoch (of another
    /// epoch, or unreadable).
    Other,
    /// Nothing readable: trimmed, never written, or not this deployment's. Proves nothing.
    Nothing,
}

impl Delivered {
    /// The fingerprint of `event`.
    pub fn of(event: &BusEvent) -> Delivered {
        Delivered {
            epoch: event.id.epoch.clone(),
            offset: event.offset,
            digest: digest(event),
        }
    }

    /// Whether a log now in `epoch`, holding `found` at this event's offset, was rewritten
    /// under it: same epoch, and another entry than the one delivered. Another epoch is a
    /// lost log already (the epoch check's business); a trimmed entry proves nothing.
    pub fn rewritten(&self, epoch: &str, found: AtOffset<'_>) -> bool {
        if self.epoch != epoch {
            return false;
        }
        match found {
            AtOffset::Event(e) => e.offset != self.offset || digest(e) != self.digest,
            AtOffset::Other => true,
            AtOffset::Nothing => false,
        }
    }
}

/// A fingerprint of an event's content (topic, type, publisher id, data). Compared only
/// within one process.
pub fn digest(event: &BusEvent) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&event.topic, &event.event, &event.custom_id, &event.data).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::types::ClusterId;

    fn event(epoch: &str, offset: u64, data: &str) -> BusEvent {
        BusEvent {
            offset,
            id: ClusterId {
                epoch: epoch.into(),
                offset,
            },
            topic: "t".into(),
            event: None,
            custom_id: None,
            data: data.into(),
            accepted_ms: Some(1),
        }
    }

    #[test]
    fn only_other_content_in_the_same_epoch_is_a_rewrite() {
        let mine = event("e", 7, "x");
        let d = Delivered::of(&mine);
        assert!(!d.rewritten("e", AtOffset::Event(&mine)));
        let restamped = BusEvent {
            accepted_ms: Some(2),
            ..mine.clone()
        };
        assert!(
            !d.rewritten("e", AtOffset::Event(&restamped)),
            "content only"
        );
        assert!(d.rewritten("e", AtOffset::Event(&event("e", 7, "y"))));
        assert!(d.rewritten("e", AtOffset::Event(&event("e", 8, "x"))));
        assert!(d.rewritten("e", AtOffset::Other));
        assert!(!d.rewritten("e", AtOffset::Nothing), "trimmed");
        assert!(!d.rewritten("f", AtOffset::Event(&event("f", 7, "y"))));
        assert!(!d.rewritten("f", AtOffset::Other));
    }
}
