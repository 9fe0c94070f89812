//! The event log: every topic's bounded history, the global order across topics, and the
//! ids that name events.
//!
//! Invariants (checked by [`EventLog::check_invariants`]):
//! - topic ids `0` (the default stream) and `1` (its ticks) always exist; every other topic
//!   id is in the name index under its current name, and nothing else is;
//! - global sequence numbers (gseq) increase strictly across all appends, whatever the
//!   topic: a client of several topics receives their events merged by gseq;
//! - every custom (publisher-given) id in the index names an event that is still retained,
//!   the newest retained one with that id (once that event is evicted the id no longer
//!   resolves, even if an older event with the same id is still retained);
//! - at most `max_topics` named topics besides the default and tick topics; past it, the
//!   least recently appended-to topic without subscribers is recycled (its history cleared).
//!
//! Two ways in, kept apart so that events can also come with an id assigned elsewhere (a
//! shared log): [`EventLog::assign_gseq`] hands out the next number, and [`EventLog::append`]
//! stores an event that already has one.

use std::collections::HashMap;
use std::rc::Rc;

use smallvec::SmallVec;

use super::client::Cursor;
use super::latency::{Fanout, Latency};
use super::topic::{Entry, NewEntry, Topic, TopicId};

/// The name of the default stream's topic (topic-less publishes go here).
pub const DEFAULT_TOPIC: &str = "";
/// The default stream's ticks live in a topic of their own, so a resume never replays old
/// ticks; its name cannot be asked for in a query (topics are refused if they contain NUL).
pub const TICK_TOPIC: &str = "\0tick";
pub const DEFAULT_TOPIC_ID: TopicId = 0;
pub const TICK_TOPIC_ID: TopicId = 1;

/// Where a resuming client's `Last-Event-ID` points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// No id: start at the live edge.
    Fresh,
    /// An event of this run: replay what came after this gseq.
    After(u64),
    /// An id of an earlier run of the server: everything retained is newer.
    EarlierRun,
    /// An id we never issued (or no longer remember).
    Unknown,
    /// Cluster mode: events after the id were trimmed from the shared log.
    TooOld,
}

/// The topics, their logs, and the numbering of events. See the module documentation.
#[derive(Debug)]
pub struct EventLog {
    topics: Vec<Topic>,
    index: HashMap<Box<str>, TopicId>,
    /// Publisher-given ids still in some topic's history, to their gseq.
    custom_ids: HashMap<Box<str>, u64>,
    /// Global sequence number of the next event (starts at 1; `<boot>-0` means "before all").
    next_gseq: u64,
    /// This run's id prefix: unix milliseconds at start, base 36.
    boot: String,
    /// Increments on every append; topics remember it for least-recently-used recycling.
    appends: u64,
    /// The newest event a recycled topic dropped. A topic given to a name afterwards cannot
    /// know whether that name had events among those dropped (the table forgets names), so
    /// a resume from before it is `too-old`, never a silent hole.
    recycled_through: Option<u64>,
    max_events: usize,
    max_bytes: usize,
    max_topics: usize,
}

impl EventLog {
    /// An empty log for a run started at `boot_millis` (unix milliseconds). Each topic keeps
    /// at most `max_events` entries within `max_bytes`; at most `max_topics` named topics.
    pub fn new(boot_millis: u64, max_events: usize, max_bytes: usize, max_topics: usize) -> Self {
        let mut log = EventLog {
            topics: Vec::new(),
            index: HashMap::new(),
            custom_ids: HashMap::new(),
            next_gseq: 1,
            boot: base36(boot_millis),
            appends: 0,
            recycled_through: None,
            max_events,
            max_bytes,
            max_topics,
        };
        for (id, name) in [
            (DEFAULT_TOPIC_ID, DEFAULT_TOPIC),
            (TICK_TOPIC_ID, TICK_TOPIC),
        ] {
            log.topics.push(Topic::new(name));
            log.index.insert(Box::<str>::from(name), id);
        }
        log
    }

    /// This run's event-id prefix.
    pub fn boot(&self) -> &str {
        &self.boot
    }

    /// The topic with id `t` (ids come from this log, so it exists).
    pub fn topic(&self, t: TopicId) -> &Topic {
        &self.topics[t as usize]
    }

    /// The topic with id `t`, for its subscriber list.
    pub fn topic_mut(&mut self, t: TopicId) -> &mut Topic {
        &mut self.topics[t as usize]
    }

    /// Every topic with its id, ticks included.
    pub fn topics(&self) -> impl Iterator<Item = (TopicId, &Topic)> {
        self.topics
            .iter()
            .enumerate()
            .map(|(i, t)| (i as TopicId, t))
    }

    /// The topic named `name`, created if needed (recycling the least recently used topic
    /// without subscribers when at the limit). `None` when every topic has subscribers.
    pub fn topic_for(&mut self, name: &str) -> Option<TopicId> {
        self.topic_for_avoiding(name, &[])
    }

    /// [`EventLog::topic_for`] for one of several topics resolved together (one stream
    /// request): a topic in `taken` is never recycled, though it has no subscribers yet, so
    /// two names never share a topic.
    pub fn topic_for_avoiding(&mut self, name: &str, taken: &[TopicId]) -> Option<TopicId> {
        if let Some(&t) = self.index.get(name) {
            return Some(t);
        }
        if self.topics.len() < self.max_topics + 2 {
            let t = self.topics.len() as TopicId;
            let mut topic = Topic::new(name);
            if let Some(g) = self.recycled_through {
                topic.mark_lost_through(g);
            }
            self.topics.push(topic);
            self.index.insert(name.into(), t);
            return Some(t);
        }
        let victim = self
            .topics
            .iter()
            .enumerate()
            .skip(2)
            .filter(|(i, t)| t.subscribers.is_empty() && !taken.contains(&(*i as TopicId)))
            .min_by_key(|(_, t)| t.last_used)
            .map(|(i, _)| i)?;
        let custom_ids = &mut self.custom_ids;
        let t = &mut self.topics[victim];
        self.index.remove(&t.name);
        t.clear_history(|old| forget_custom_id(custom_ids, &old));
        // What this slot dropped, now or before, may have been the new name's events too.
        let lost = t.lost_through().max(self.recycled_through);
        self.recycled_through = lost;
        if let Some(g) = lost {
            t.mark_lost_through(g);
        }
        t.name = name.into();
        t.last_used = self.appends;
        self.index.insert(name.into(), victim as TopicId);
        Some(victim as TopicId)
    }

    /// Takes the next global sequence number, for an event about to be appended.
    pub fn assign_gseq(&mut self) -> u64 {
        let gseq = self.next_gseq;
        self.next_gseq += 1;
        gseq
    }

    /// The greatest sequence number taken so far (0 before any).
    pub fn last_gseq(&self) -> u64 {
        self.next_gseq - 1
    }

    /// Takes `gseq` and every number below it: for events numbered outside this log (cluster
    /// mode numbers them by their offset in the shared log).
    pub fn claim_gseq(&mut self, gseq: u64) {
        self.next_gseq = self.next_gseq.max(gseq.saturating_add(1));
    }

    /// The sequence number of the retained event with publisher-given id `id`.
    pub fn custom_id_gseq(&self, id: &str) -> Option<u64> {
        self.custom_ids.get(id).copied()
    }

    /// Empties every topic's history (cluster mode, when the shared log was lost). The
    /// caller moves every cursor to its topic's end first.
    pub fn clear_all_history(&mut self) {
        let custom_ids = &mut self.custom_ids;
        for t in &mut self.topics {
            t.clear_history(|old| forget_custom_id(custom_ids, &old));
        }
    }

    /// The id of an event with sequence `gseq` and no publisher-given id.
    pub fn event_id(&self, gseq: u64) -> String {
        format!("{}-{gseq}", self.boot)
    }

    /// The id of the newest event (`<boot>-0` before any).
    pub fn last_event_id(&self) -> String {
        self.event_id(self.next_gseq - 1)
    }

    /// Appends an encoded frame with its sequence number and fan-out state to topic `t`,
    /// evicting the oldest entries past the bounds (an evicted entry's open fan-out is
    /// observed into `latency`). `gseq` must be above every gseq appended before.
    pub fn append(
        &mut self,
        t: TopicId,
        (gseq, frame): (u64, Rc<[u8]>),
        custom_id: Option<&str>,
        fanout: Fanout,
        latency: &mut Latency,
    ) {
        debug_assert!(gseq < self.next_gseq, "gseq {gseq} was not assigned");
        self.next_gseq = self.next_gseq.max(gseq + 1);
        self.appends += 1;
        let custom_ids = &mut self.custom_ids;
        if let Some(custom) = custom_id {
            custom_ids.insert(custom.into(), gseq);
        }
        let topic = &mut self.topics[t as usize];
        topic.last_used = self.appends;
        let entry = NewEntry {
            gseq,
            frame,
            custom_id: custom_id.map(Into::into),
            fanout,
        };
        topic.append(entry, self.max_events, self.max_bytes, |old| {
            old.fanout.close(latency);
            forget_custom_id(custom_ids, &old)
        });
    }

    /// Where a `Last-Event-ID` (empty or absent: none) points.
    pub fn resolve(&self, last: Option<&str>) -> Resume {
        let Some(last) = last.filter(|s| !s.is_empty()) else {
            return Resume::Fresh;
        };
        if let Some(&g) = self.custom_ids.get(last) {
            return Resume::After(g);
        }
        let Some((boot, seq)) = last.rsplit_once('-') else {
            return Resume::Unknown;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            return Resume::Unknown;
        };
        let base36 = !boot.is_empty()
            && boot.len() <= 13
            && boot
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if !base36 {
            Resume::Unknown
        } else if boot == self.boot {
            if seq < self.next_gseq {
                Resume::After(seq)
            } else {
                Resume::Unknown
            }
        } else {
            Resume::EarlierRun
        }
    }

    /// A client's pending entries (from its cursors) in global order.
    pub fn pending_frames(&self, cursors: &[Cursor]) -> PendingFrames<'_> {
        PendingFrames {
            topics: &self.topics,
            pos: cursors.iter().map(|c| (c.topic, c.next)).collect(),
        }
    }

    /// Checks the invariants listed in the module documentation.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.topics.len() < 2 || self.topics.len() > self.max_topics.max(1) + 2 {
            return Err(format!("{} topics", self.topics.len()));
        }
        if self.index.len() != self.topics.len() {
            return Err(format!(
                "{} names indexed for {} topics",
                self.index.len(),
                self.topics.len()
            ));
        }
        for (name, &t) in &self.index {
            if self
                .topics
                .get(t as usize)
                .is_none_or(|topic| topic.name != *name)
            {
                return Err(format!("name {name:?} indexes topic {t} of another name"));
            }
        }
        // Each indexed custom id names exactly one retained entry, the newest with that id
        // (one pass over the retained entries).
        let mut named = 0;
        for e in self.topics.iter().flat_map(Topic::entries) {
            let Some(cid) = &e.custom_id else { continue };
            match self.custom_ids.get(cid) {
                Some(&g) if g == e.gseq => named += 1,
                Some(&g) if g < e.gseq => {
                    return Err(format!("custom id {cid:?} indexes an older event"));
                }
                // An older event with a reused id, or one whose newer namesake was evicted
                // first (then the id no longer resolves).
                _ => {}
            }
        }
        if named != self.custom_ids.len() {
            return Err(format!(
                "{} custom ids indexed, {named} name a retained event",
                self.custom_ids.len()
            ));
        }
        Ok(())
    }
}

/// Iterates a streaming client's pending log entries in global order (a merge of its
/// topics' logs by gseq), without changing the client.
pub struct PendingFrames<'a> {
    topics: &'a [Topic],
    pos: SmallVec<[(TopicId, u64); 2]>,
}

impl PendingFrames<'_> {
    /// Where each cursor stands after the entries yielded so far.
    pub fn positions(&self) -> impl Iterator<Item = u64> + '_ {
        self.pos.iter().map(|(_, p)| *p)
    }
}

impl<'a> Iterator for PendingFrames<'a> {
    /// The index of the cursor the entry came from, and the entry.
    type Item = (usize, &'a Entry);

    fn next(&mut self) -> Option<Self::Item> {
        let topics = self.topics;
        let mut best: Option<(usize, &'a Entry)> = None;
        for (i, &(t, p)) in self.pos.iter().enumerate() {
            if let Some(e) = topics[t as usize].get(p)
                && best.is_none_or(|(_, b)| e.gseq < b.gseq)
            {
                best = Some((i, e));
            }
        }
        let (i, e) = best?;
        self.pos[i].1 += 1;
        Some((i, e))
    }
}

/// Forgets the custom id of an entry leaving history (unless a newer event reused the id).
fn forget_custom_id(custom_ids: &mut HashMap<Box<str>, u64>, old: &Entry) {
    if let Some(cid) = &old.custom_id
        && custom_ids.get(cid) == Some(&old.gseq)
    {
        custom_ids.remove(cid);
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(max_events: usize, max_topics: usize) -> EventLog {
        EventLog::new(36 * 36 - 1, max_events, 1 << 20, max_topics)
    }

    /// Appends `data` to topic `name` with a fresh gseq; returns the gseq.
    fn add(log: &mut EventLog, name: &str, data: &str, custom: Option<&str>) -> u64 {
        let t = log.topic_for(name).unwrap();
        let g = log.assign_gseq();
        let fanout = Fanout::new(std::time::Instant::now(), 0);
        log.append(
            t,
            (g, Rc::from(data.as_bytes())),
            custom,
            fanout,
            &mut Latency::default(),
        );
        log.check_invariants().unwrap();
        g
    }

    /// Each broken index is reported, by its own message (kills the mutants of
    /// `check_invariants`, which the simulator only runs on a correct log).
    #[test]
    fn the_invariant_check_reports_each_broken_index() {
        let broken = |corrupt: &dyn Fn(&mut EventLog), expected: &str| {
            let mut l = log(10, 4);
            add(&mut l, "a", "1", Some("x"));
            add(&mut l, "a", "2", Some("y"));
            corrupt(&mut l);
            let e = l.check_invariants().expect_err(expected);
            assert_eq!(e, expected);
        };
        broken(&|l| l.topics.truncate(1), "1 topics");
        broken(
            &|l| {
                l.index.remove("a");
            },
            "2 names indexed for 3 topics",
        );
        broken(
            &|l| {
                let t = l.topic_for("a").unwrap();
                l.topics[t as usize].name = "b".into();
            },
            "name \"a\" indexes topic 2 of another name",
        );
        broken(
            &|l| {
                *l.custom_ids.get_mut("y").unwrap() -= 1;
            },
            "custom id \"y\" indexes an older event",
        );
        broken(
            &|l| {
                l.custom_ids.insert("ghost".into(), 1);
            },
            "3 custom ids indexed, 2 name a retained event",
        );
    }

    #[test]
    fn boot_prefix_and_ids() {
        let mut l = log(10, 4);
        assert_eq!(l.boot(), "zz");
        assert_eq!(l.last_event_id(), "zz-0");
        let g = add(&mut l, "a", "x", None);
        assert_eq!(g, 1);
        assert_eq!(l.event_id(g), "zz-1");
        assert_eq!(l.last_event_id(), "zz-1");
        assert_eq!(base36(0), "0");
        assert_eq!(base36(36), "10");
    }

    #[test]
    fn gseq_orders_across_topics() {
        let mut l = log(10, 4);
        let a1 = add(&mut l, "a", "a1", None);
        let b1 = add(&mut l, "b", "b1", None);
        let a2 = add(&mut l, "a", "a2", None);
        assert!(a1 < b1 && b1 < a2);
        let (ta, tb) = (l.topic_for("a").unwrap(), l.topic_for("b").unwrap());
        let cursors = [
            Cursor {
                topic: tb,
                next: 0,
                sub_index: 0,
            },
            Cursor {
                topic: ta,
                next: 0,
                sub_index: 0,
            },
        ];
        let mut frames = l.pending_frames(&cursors);
        let order: Vec<&[u8]> = frames.by_ref().map(|(_, e)| &*e.frame).collect();
        assert_eq!(order, [&b"a1"[..], b"b1", b"a2"]);
        assert_eq!(frames.positions().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn resolving_last_event_ids() {
        let mut l = log(2, 4);
        assert_eq!(l.resolve(None), Resume::Fresh);
        assert_eq!(l.resolve(Some("")), Resume::Fresh);
        let g1 = add(&mut l, "a", "1", Some("first"));
        assert_eq!(l.resolve(Some("first")), Resume::After(g1));
        assert_eq!(l.resolve(Some("zz-1")), Resume::After(1));
        assert_eq!(l.resolve(Some("zz-0")), Resume::After(0));
        assert_eq!(l.resolve(Some("zz-2")), Resume::Unknown, "not issued yet");
        assert_eq!(l.resolve(Some("abc-5")), Resume::EarlierRun);
        assert_eq!(l.resolve(Some("ABC-5")), Resume::Unknown);
        assert_eq!(l.resolve(Some("zz-x")), Resume::Unknown);
        assert_eq!(l.resolve(Some("nodash")), Resume::Unknown);
        // The custom id leaves with its event.
        add(&mut l, "a", "2", None);
        add(&mut l, "a", "3", None);
        assert_eq!(l.resolve(Some("first")), Resume::Unknown);
    }

    #[test]
    fn a_reused_custom_id_names_the_newest_event() {
        let mut l = log(2, 4);
        add(&mut l, "a", "1", Some("x"));
        let g2 = add(&mut l, "b", "2", Some("x"));
        // Evicting the first "x" (from topic a) keeps the newer one.
        add(&mut l, "a", "3", None);
        add(&mut l, "a", "4", None);
        assert_eq!(l.resolve(Some("x")), Resume::After(g2));
    }

    #[test]
    fn a_custom_id_stops_resolving_when_its_newest_event_leaves() {
        let mut l = log(1, 4);
        add(&mut l, "a", "1", Some("x"));
        add(&mut l, "b", "2", Some("x"));
        // The newer "x" (topic b) is evicted first; the older one in topic a is retained
        // but the id no longer resolves (as before the event log was its own type).
        add(&mut l, "b", "3", None);
        assert_eq!(l.resolve(Some("x")), Resume::Unknown);
    }

    /// A name that comes back after the table recycled a topic cannot tell whether its own
    /// events were among those dropped: resuming it from before them is a gap. (A topic's
    /// loss was once kept per slot only: a name recycled away and back into another slot
    /// resumed live, silently missing what the recycling dropped.)
    #[test]
    fn a_name_back_in_another_slot_does_not_hide_what_recycling_dropped() {
        let mut l = log(10, 2);
        add(&mut l, "p", "1", None);
        let b2 = add(&mut l, "b", "2", None);
        let tv = l.topic_for("v").unwrap(); // recycles p's slot; a subscriber keeps it
        l.topic_mut(tv).subscribers.push(0);
        add(&mut l, "b", "3", None);
        l.topic_for("c").unwrap(); // recycles b's slot: b's "3" is dropped
        l.topic_mut(tv).subscribers.clear();
        let tb = l.topic_for("b").unwrap(); // b comes back in v's slot, which lost nothing
        assert_eq!(tb, tv);
        assert_eq!(l.topic(tb).resume_after(b2), None, "event 3 of b was lost");
        l.check_invariants().unwrap();
    }

    #[test]
    fn topics_recycle_least_recently_used_without_subscribers() {
        let mut l = log(10, 2);
        add(&mut l, "a", "a1", Some("ca"));
        add(&mut l, "b", "b1", None);
        let ta = l.topic_for("a").unwrap();
        // A third name recycles "a": its history and custom ids are gone.
        let tc = l.topic_for("c").unwrap();
        assert_eq!(tc, ta);
        assert_eq!(l.topic(tc).len(), 0);
        assert_eq!(l.resolve(Some("ca")), Resume::Unknown);
        l.check_invariants().unwrap();
        // With every named topic subscribed, no new topic.
        l.topic_mut(tc).subscribers.push(0);
        let tb = l.topic_for("b").unwrap();
        l.topic_mut(tb).subscribers.push(1);
        assert_eq!(l.topic_for("d"), None);
        assert_eq!(l.topic_for("b"), Some(tb), "existing names still resolve");
    }
}
