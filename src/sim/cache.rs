//! The cluster simulator's model of one node's local cache, as far as publisher-given ids
//! need it (part of the oracle, written from the documented rules, not from the core's
//! code): a node caches the events its tail applied in its current epoch, the newest
//! `--history` of each topic, and an epoch change empties it. A publisher-given id resumes
//! exactly on a node whose cache holds its event; elsewhere it is unknown to that node.

use std::collections::{HashMap, VecDeque};

/// The publisher-given ids a node can resolve, per topic, oldest first.
pub(super) struct CacheModel {
    history: usize,
    /// The epoch of the cached events.
    epoch: Option<String>,
    /// Per topic, the offsets and custom ids of its newest `history` applied events.
    topics: HashMap<String, VecDeque<(u64, Option<String>)>>,
    /// The offset after the newest hole (events trimmed before the node read them): what
    /// is cached from here on is complete.
    complete_from: u64,
}

impl CacheModel {
    pub(super) fn new(history: usize) -> CacheModel {
        CacheModel {
            history: history.max(1),
            epoch: None,
            topics: HashMap::new(),
            complete_from: 0,
        }
    }

    /// The node applied an event (newer than any it applied before).
    pub(super) fn apply(&mut self, epoch: &str, offset: u64, topic: &str, custom_id: Option<&str>) {
        if self.epoch.as_deref() != Some(epoch) {
            self.clear();
            self.epoch = Some(epoch.to_owned());
        }
        let kept = self.topics.entry(topic.to_owned()).or_default();
        kept.push_back((offset, custom_id.map(str::to_owned)));
        if kept.len() > self.history {
            kept.pop_front();
        }
    }

    /// The shared log was lost: the node empties its cache.
    pub(super) fn clear(&mut self) {
        self.topics.clear();
        self.epoch = None;
        self.complete_from = 0;
    }

    /// Whether the node can resolve the publisher-given id `id`.
    pub(super) fn holds(&self, id: &str) -> bool {
        self.topics
            .values()
            .any(|kept| kept.iter().any(|(_, c)| c.as_deref() == Some(id)))
    }

    /// The node found the events before `offset` trimmed (the ones it had not read).
    pub(super) fn hole_before(&mut self, offset: u64) {
        self.complete_from = self.complete_from.max(offset);
    }

    /// Whether the node caches the event at `offset` of `epoch` (on `topic`) with no hole
    /// after it: a resume from the epoch's start can be given it.
    pub(super) fn holds_event(&self, epoch: &str, topic: &str, offset: u64) -> bool {
        self.epoch.as_deref() == Some(epoch)
            && offset >= self.complete_from
            && self
                .topics
                .get(topic)
                .is_some_and(|kept| kept.iter().any(|&(o, _)| o == offset))
    }

    /// The epoch of the cached events (`None` before the first or after an epoch change).
    pub(super) fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_per_topic_and_forgets_on_an_epoch_change() {
        let mut cache = CacheModel::new(2);
        cache.apply("e0", 1, "a", Some("x"));
        cache.apply("e0", 2, "b", Some("y"));
        cache.apply("e0", 3, "a", None);
        assert!(cache.holds("x") && cache.holds("y"));
        assert!(cache.holds_event("e0", "a", 3) && !cache.holds_event("e0", "b", 3));
        cache.apply("e0", 4, "a", None);
        assert!(!cache.holds("x"), "pushed out of topic a's two");
        assert!(!cache.holds_event("e0", "a", 1));
        assert!(cache.holds("y"), "topic b keeps its own two");
        cache.apply("e1", 1, "a", Some("z"));
        assert!(!cache.holds("y") && cache.holds("z"));
        assert!(!cache.holds_event("e0", "a", 4) && cache.holds_event("e1", "a", 1));
        assert_eq!(cache.epoch(), Some("e1"));
        cache.apply("e1", 3, "b", None);
        cache.hole_before(3);
        assert!(!cache.holds_event("e1", "a", 1), "before a hole");
        assert!(cache.holds_event("e1", "b", 3));
        cache.clear();
        assert!(!cache.holds("z") && cache.epoch().is_none());
        cache.apply("e2", 1, "a", None);
        assert!(cache.holds_event("e2", "a", 1), "a new epoch has no hole");
    }
}
