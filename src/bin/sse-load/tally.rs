//! Counting deliveries in one worker: which events are in the measured window, how many
//! clients got each (per client group), latency, duplicates and order.
//!
//! The window is the same in every worker: the coordinator gives its start and end as unix
//! nanoseconds, so an event with a time inside (a tick, a `ts=` publish) is in or out of the
//! window whichever worker sees it, and the coordinator can add the workers' counts per event.
//!
//! Published and other events are one set per client group that every client of the group
//! must get ([`EventTable`]). Ticks are each server process's own, so they are checked per
//! connection instead ([`crate::ticks`]): each client must get its own server's ticks.

use std::collections::{HashMap, HashSet};

use crate::stats::{FastBuild, Histogram, Key};
use crate::ticks::{Chain, TickLinks};

/// An event as counted: its client group and what it is.
pub type EventKey = (u16, Key);

/// What one client has received in the window (four words: sse-load keeps one per stream).
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// Window events received.
    pub got: u32,
    /// Where its next event probably is in its group's [`EventTable`] list (just after its
    /// last one: every client of a group gets the same events in the same order).
    next: u32,
    /// When its current stream started, in milliseconds after the window opened (for a
    /// reconnected stream: its first tick is owed within two intervals of that).
    pub(crate) stream_ms: u32,
    /// Streaming when the window started: expected to get every window event of its group,
    /// and its own server's ticks.
    pub counted: bool,
    /// Where its tick chain stands.
    pub(crate) chain: Chain,
    /// A tick after the window's end reached it: all its server's window ticks are in.
    pub(crate) settled: bool,
    /// Its last window tick (unix ns; 0: none yet).
    pub(crate) last_tick: u64,
    last_ts: u64,
}

/// The measured window, in unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    NotStarted,
    Open { start_ns: u64 },
    Closed { start_ns: u64, end_ns: u64 },
}

/// Everything counted about events in one worker.
pub struct Tally {
    pub window: Window,
    /// Window events and how many of this worker's clients received each.
    pub events: EventTable,
    /// Window events per group (published and other events; ticks are in `ticks`).
    pub events_per_group: Vec<u64>,
    /// The most window events one client of each group has received (for `--events`).
    best_got: Vec<u32>,
    /// Window ticks, per connection.
    pub ticks: TickLinks,
    /// Opaque events seen before the window opened (not part of it).
    before: HashSet<EventKey, FastBuild>,
    /// Someone publishes: the event cap counts what the publisher sent, not what arrived.
    publishing: bool,
    /// End the window after this many distinct events (when not publishing).
    cap: Option<u64>,
    /// Set when this worker closed the window itself (the cap was reached).
    pub closed_here: bool,
    /// Latency of window deliveries.
    pub latency: Histogram,
    /// Events received at all (window or not), for deliveries per second over time.
    pub received: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Tally {
    /// A tally for `groups` client groups.
    pub fn new(groups: usize, publishing: bool, cap: Option<u64>) -> Tally {
        Tally {
            window: Window::NotStarted,
            events: EventTable::new(groups),
            events_per_group: vec![0; groups],
            best_got: vec![0; groups],
            ticks: TickLinks::new(groups),
            before: HashSet::default(),
            publishing,
            cap,
            closed_here: false,
            latency: Histogram::default(),
            received: 0,
            delivered: 0,
            duplicates: 0,
            out_of_order: 0,
        }
    }

    /// Opens the window at `start_ns`.
    pub fn open(&mut self, start_ns: u64) {
        if self.window == Window::NotStarted {
            self.window = Window::Open { start_ns };
        }
    }

    /// Closes the window at `end_ns` (later events are outside it).
    pub fn close(&mut self, end_ns: u64) {
        if let Window::Open { start_ns } = self.window {
            self.window = Window::Closed { start_ns, end_ns };
        }
    }

    /// Adds an event every client of its group should get (the publisher's, before it is sent).
    pub fn expect(&mut self, key: EventKey) {
        if self.events.find(key, u32::MAX).is_none() {
            self.events.add(key, 0);
            self.events_per_group[usize::from(key.0)] += 1;
        }
    }

    /// Takes an unpublished event out of the window (unless some client got it after all).
    pub fn forget(&mut self, key: EventKey) {
        if self.events.forget_unreceived(key) {
            self.events_per_group[usize::from(key.0)] -= 1;
        }
    }

    /// One event reached a client of group `group` at `recv_ns`.
    pub fn on_event(&mut self, seen: &mut Seen, key: EventKey, recv_ns: u64) {
        self.received += 1;
        let (start_ns, end_ns) = match self.window {
            Window::NotStarted => {
                if let Key::Opaque(_) = key.1 {
                    self.before.insert(key);
                }
                return;
            }
            Window::Open { start_ns } => (start_ns, None),
            Window::Closed { start_ns, end_ns } => (start_ns, Some(end_ns)),
        };
        if let Key::Tick(t) = key.1 {
            return self.on_tick(seen, key.0, t, recv_ns, (start_ns, end_ns));
        }
        let slot = self.events.find(key, seen.next);
        let known = slot.is_some();
        let admitted = known
            || match key.1 {
                Key::Tick(t) | Key::Ts(t) => t >= start_ns && end_ns.is_none_or(|e| t <= e),
                Key::Opaque(_) => end_ns.is_none() && !self.before.contains(&key),
            };
        if !admitted || !seen.counted {
            return;
        }
        if let Some(t) = key.1.time() {
            if t == seen.last_ts {
                self.duplicates += 1;
                return;
            }
            if t < seen.last_ts {
                self.out_of_order += 1;
                return;
            }
            seen.last_ts = t;
            self.latency.record(recv_ns.saturating_sub(t));
        }
        seen.next = match slot {
            Some(at) => self.events.received(key.0, at),
            None => {
                self.events_per_group[usize::from(key.0)] += 1;
                self.events.add(key, 1)
            }
        } + 1;
        self.delivered += 1;
        seen.got += 1;
        self.reached(seen, key.0, key.1.time());
    }

    /// A tick at `t` reached a client of `group`: checked on its own connection (its own
    /// server's ticks, each once, in order), not against the group's set.
    fn on_tick(
        &mut self,
        seen: &mut Seen,
        group: u16,
        t: u64,
        recv_ns: u64,
        (start_ns, end_ns): (u64, Option<u64>),
    ) {
        if !seen.counted || t < start_ns {
            return;
        }
        if end_ns.is_some_and(|e| t > e) {
            self.ticks.settle(seen, group);
            return;
        }
        if t == seen.last_tick {
            self.duplicates += 1;
            return;
        }
        if t < seen.last_tick {
            self.out_of_order += 1;
            return;
        }
        self.ticks.tick(seen, group, t, start_ns);
        self.latency.record(recv_ns.saturating_sub(t));
        self.delivered += 1;
        seen.got += 1;
        self.reached(seen, group, Some(t));
    }

    /// `--events`: a client of `group` now has `seen.got` window events (the one just
    /// received at `time`); the window ends once one client of every group with events has
    /// the cap (servers tick independently: at the last of their `n`-th ticks).
    fn reached(&mut self, seen: &Seen, group: u16, time: Option<u64>) {
        let Some(best) = self.best_got.get_mut(usize::from(group)) else {
            return;
        };
        if seen.got <= *best {
            return;
        }
        *best = seen.got;
        if matches!(self.window, Window::Open { .. })
            && !self.publishing
            && self
                .cap
                .is_some_and(|cap| self.best_got.iter().all(|&b| b == 0 || u64::from(b) >= cap))
        {
            // Later events are outside the window: by time, or (opaque) by closure.
            self.close(time.unwrap_or_else(crate::now_ns));
            self.closed_here = true;
        }
    }

    /// `seen`'s stream was dropped to reconnect (its tick chain pauses).
    pub fn stream_dropped(&mut self, seen: &mut Seen, group: u16) {
        if !seen.counted {
            return;
        }
        let (start_ns, end_ns) = match self.window {
            Window::NotStarted => return,
            Window::Open { start_ns } => (start_ns, None),
            Window::Closed { start_ns, end_ns } => (start_ns, Some(end_ns)),
        };
        self.ticks
            .dropped(seen, group, crate::now_ns(), start_ns, end_ns);
    }

    /// `seen` streams again after a reconnect (its tick chain resumes from now).
    pub fn stream_started(&self, seen: &mut Seen) {
        if !seen.counted {
            return;
        }
        if let Window::Open { start_ns } | Window::Closed { start_ns, .. } = self.window {
            TickLinks::restarted(seen, crate::now_ns(), start_ns);
        }
    }

    /// The run is over: the last link of a counted client's tick chain, to the window's end.
    pub fn finish(&mut self, seen: &Seen, group: u16) {
        if !seen.counted {
            return;
        }
        let (start_ns, end_ns) = match self.window {
            Window::NotStarted => return,
            Window::Open { start_ns } => (start_ns, crate::now_ns()),
            Window::Closed { start_ns, end_ns } => (start_ns, end_ns),
        };
        self.ticks.finish(seen, group, start_ns, end_ns);
    }

    /// Published and other deliveries (not ticks).
    pub fn set_delivered(&self) -> u64 {
        self.delivered - self.ticks.delivered
    }

    /// Published and other deliveries this worker expects (ticks are checked per connection),
    /// given how many counted clients each group has.
    pub fn expected(&self, counted_per_group: &[u64]) -> u64 {
        counted_per_group
            .iter()
            .zip(&self.events_per_group)
            .map(|(c, e)| c * e)
            .sum()
    }
}

/// One worker's window events: per group, in the order first seen (the order the server sends
/// them), with how many clients received each, and a hash index for the lookups the order
/// does not answer. A client's next event is usually the one after its last, so most
/// deliveries cost one comparison instead of a hash lookup.
pub struct EventTable {
    lists: Vec<Vec<Entry>>,
    index: HashMap<EventKey, u32, FastBuild>,
}

struct Entry {
    key: Key,
    count: u32,
    /// Taken out (a publish that failed): kept so positions stay valid.
    gone: bool,
}

impl EventTable {
    fn new(groups: usize) -> EventTable {
        EventTable {
            lists: (0..groups).map(|_| Vec::new()).collect(),
            index: HashMap::default(),
        }
    }

    /// Where `key` is in its group's list, trying position `hint` first.
    fn find(&self, key: EventKey, hint: u32) -> Option<u32> {
        let list = &self.lists[usize::from(key.0)];
        match list.get(hint as usize) {
            Some(e) if e.key == key.1 && !e.gone => Some(hint),
            _ => self.index.get(&key).copied(),
        }
    }

    /// Adds an event received `count` times; its position.
    fn add(&mut self, key: EventKey, count: u32) -> u32 {
        let list = &mut self.lists[usize::from(key.0)];
        let at = list.len() as u32;
        list.push(Entry {
            key: key.1,
            count,
            gone: false,
        });
        self.index.insert(key, at);
        at
    }

    /// One more client of `group` received the event at `at`; `at` again.
    fn received(&mut self, group: u16, at: u32) -> u32 {
        if let Some(e) = self.lists[usize::from(group)].get_mut(at as usize) {
            e.count += 1;
        }
        at
    }

    /// Takes `key` out if no client received it; true if it did.
    fn forget_unreceived(&mut self, key: EventKey) -> bool {
        let Some(&at) = self.index.get(&key) else {
            return false;
        };
        match self.lists[usize::from(key.0)].get_mut(at as usize) {
            Some(e) if e.count == 0 && !e.gone => {
                e.gone = true;
                self.index.remove(&key);
                true
            }
            _ => false,
        }
    }

    /// Every event and how many clients received it.
    pub fn iter(&self) -> impl Iterator<Item = (EventKey, u32)> + '_ {
        self.lists.iter().enumerate().flat_map(|(g, list)| {
            list.iter()
                .filter(|e| !e.gone)
                .map(move |e| ((g as u16, e.key), e.count))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_by_time_duplicates_and_order() {
        let mut t = Tally::new(1, false, None);
        let mut c = Seen {
            counted: true,
            ..Seen::default()
        };
        t.on_event(&mut c, (0, Key::Ts(50)), 60);
        assert_eq!(t.delivered, 0, "before the window opened");
        t.open(100);
        t.on_event(&mut c, (0, Key::Ts(90)), 120);
        t.on_event(&mut c, (0, Key::Ts(110)), 120);
        t.on_event(&mut c, (0, Key::Ts(110)), 130);
        t.on_event(&mut c, (0, Key::Ts(105)), 130);
        assert_eq!((t.delivered, t.duplicates, t.out_of_order), (1, 1, 1));
        t.close(200);
        t.on_event(&mut c, (0, Key::Ts(190)), 230);
        t.on_event(&mut c, (0, Key::Ts(210)), 230);
        assert_eq!((t.delivered, c.got, t.events_per_group[0]), (2, 2, 2));
        assert_eq!(t.expected(&[3]), 6);
        // A second client finds the same events by position; 210 stays outside the window.
        let mut d = Seen {
            counted: true,
            ..Seen::default()
        };
        t.on_event(&mut d, (0, Key::Ts(110)), 240);
        t.on_event(&mut d, (0, Key::Ts(210)), 245);
        t.on_event(&mut d, (0, Key::Ts(190)), 250);
        let all: Vec<_> = t.events.iter().collect();
        assert_eq!(all, [((0, Key::Ts(110)), 2), ((0, Key::Ts(190)), 2)]);
        assert_eq!(d.got, 2);
        assert_eq!(t.latency.count(), 4);
        assert_eq!(t.received, 10);
    }

    #[test]
    fn cap_closes_the_window_here() {
        let mut t = Tally::new(2, false, Some(2));
        let mut c = Seen {
            counted: true,
            ..Seen::default()
        };
        t.open(0);
        t.on_event(&mut c, (1, Key::Tick(10)), 11);
        t.on_event(&mut c, (1, Key::Tick(20)), 21);
        assert!(t.closed_here);
        assert_eq!(
            t.window,
            Window::Closed {
                start_ns: 0,
                end_ns: 20
            }
        );
        t.on_event(&mut c, (1, Key::Tick(30)), 31);
        assert_eq!(t.delivered, 2);
    }

    #[test]
    fn forgotten_publishes_leave_the_window() {
        let mut t = Tally::new(1, true, Some(1));
        t.open(0);
        t.expect((0, Key::Ts(5)));
        t.expect((0, Key::Ts(6)));
        t.forget((0, Key::Ts(5)));
        assert_eq!(t.events_per_group, [1]);
        assert!(!t.closed_here);
        let mut c = Seen {
            counted: true,
            ..Seen::default()
        };
        t.on_event(&mut c, (0, Key::Ts(6)), 7);
        t.on_event(&mut c, (0, Key::Ts(7)), 8);
        let all: Vec<_> = t.events.iter().collect();
        assert_eq!(all, [((0, Key::Ts(6)), 1), ((0, Key::Ts(7)), 1)]);
    }
}
#[cfg(test)]
mod cap_tests {
    use super::*;

    #[test]
    fn the_event_that_reaches_the_cap_still_counts_for_everyone() {
        let mut t = Tally::new(1, false, Some(1));
        t.open(0);
        let mut cs = [Seen {
            counted: true,
            ..Seen::default()
        }; 3];
        for c in &mut cs {
            t.on_event(c, (0, Key::Ts(10)), 11);
        }
        assert_eq!(t.delivered, 3);
    }
}
