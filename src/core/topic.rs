//! Topics and their bounded event logs.
//!
//! Every event is encoded once into an `Rc<[u8]>` and appended to its topic's log; clients
//! hold only cursors (local sequence numbers) into the log. The log keeps the newest
//! `max_events` entries within `max_bytes`, so memory for history is bounded per topic
//! whatever the number of clients, and a client's backlog costs it nothing but a cursor.

use std::collections::VecDeque;
use std::rc::Rc;

use super::latency::Fanout;

/// Index of a topic in the core's topic table. Stable for the life of the server.
pub type TopicId = u32;

/// One encoded event in a topic's log.
#[derive(Debug)]
pub struct Entry {
    /// The global sequence number: orders events across topics (a client of several topics
    /// receives them in this order) and forms server-assigned ids.
    pub gseq: u64,
    /// The complete SSE frame, shared by every client that receives it.
    pub frame: Rc<[u8]>,
    /// Bytes of all entries before this one since the topic began (running offset).
    pub start: u64,
    /// The publisher-given id, if the event has one (else its id derives from `gseq`).
    pub custom_id: Option<Box<str>>,
    /// Its fan-out in progress: the streams it waits for, for the latency histograms.
    pub fanout: Fanout,
}

/// What [`Topic::append`] takes.
#[derive(Debug)]
pub struct NewEntry {
    pub gseq: u64,
    pub frame: Rc<[u8]>,
    pub custom_id: Option<Box<str>>,
    pub fanout: Fanout,
}

/// A topic: its log and the clients subscribed to it.
#[derive(Debug)]
pub struct Topic {
    pub name: Box<str>,
    log: VecDeque<Entry>,
    /// Local sequence number of `log[0]`.
    first_seq: u64,
    /// Total bytes ever appended (the running offset after the newest entry).
    end_bytes: u64,
    /// Bytes currently retained.
    retained_bytes: usize,
    /// The greatest gseq evicted so far: a resume from an id below it has lost events.
    evicted_gseq: Option<u64>,
    /// Keys of the streaming clients subscribed here (order is irrelevant; removal is
    /// swap-remove with each client remembering its index).
    pub subscribers: Vec<u32>,
    /// Last time an event was appended (for evicting idle topics), as a core tick count.
    pub last_used: u64,
}

impl Topic {
    pub fn new(name: &str) -> Self {
        Topic {
            name: name.into(),
            log: VecDeque::new(),
            first_seq: 0,
            end_bytes: 0,
            retained_bytes: 0,
            evicted_gseq: None,
            subscribers: Vec::new(),
            last_used: 0,
        }
    }

    /// Local sequence number the next appended entry will get (= one past the newest).
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.log.len() as u64
    }

    /// Local sequence number of the oldest retained entry.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Entries retained.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Bytes retained.
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }

    /// The entry at local sequence `seq`, if still retained.
    pub fn get(&self, seq: u64) -> Option<&Entry> {
        let i = seq.checked_sub(self.first_seq)?;
        self.log.get(usize::try_from(i).ok()?)
    }

    /// Bytes from the start of entry `seq` to the end of the log (a cursor's backlog).
    /// `None` when `seq` is no longer retained.
    pub fn bytes_from(&self, seq: u64) -> Option<u64> {
        if seq == self.end_seq() {
            return Some(0);
        }
        self.get(seq).map(|e| self.end_bytes - e.start)
    }

    /// Appends an encoded frame, then evicts from the front to stay within the bounds,
    /// handing each evicted entry to `on_evict`. Returns the new entry's local sequence number.
    pub fn append(
        &mut self,
        entry: NewEntry,
        max_events: usize,
        max_bytes: usize,
        mut on_evict: impl FnMut(Entry),
    ) -> u64 {
        let seq = self.end_seq();
        let NewEntry {
            gseq,
            frame,
            custom_id,
            fanout,
        } = entry;
        let len = frame.len();
        self.log.push_back(Entry {
            gseq,
            frame,
            start: self.end_bytes,
            custom_id,
            fanout,
        });
        self.end_bytes += len as u64;
        self.retained_bytes += len;
        // Always keep the newest entry, even if it alone exceeds the byte bound: it must be
        // delivered to the live clients.
        while self.log.len() > 1
            && (self.log.len() > max_events.max(1) || self.retained_bytes > max_bytes)
        {
            if let Some(old) = self.log.pop_front() {
                self.retained_bytes -= old.frame.len();
                self.first_seq += 1;
                self.evicted_gseq = Some(old.gseq);
                on_evict(old);
            }
        }
        seq
    }

    /// Where a client resuming after global sequence `gseq` starts: the local sequence of
    /// the first retained entry newer than `gseq`, or `None` when events after `gseq` were
    /// already evicted (the client has a gap).
    pub fn resume_after(&self, gseq: u64) -> Option<u64> {
        if self.evicted_gseq.is_some_and(|e| e > gseq) {
            return None;
        }
        let i = self.log.partition_point(|e| e.gseq <= gseq);
        Some(self.first_seq + i as u64)
    }

    /// The greatest gseq this topic dropped (evicted or cleared), if any.
    pub fn lost_through(&self) -> Option<u64> {
        self.evicted_gseq
    }

    /// Events up to `gseq` may have been this topic's and are gone: a resume from before
    /// it has lost events.
    pub fn mark_lost_through(&mut self, gseq: u64) {
        self.evicted_gseq = self.evicted_gseq.max(Some(gseq));
    }

    /// Drops every retained entry, handing each to `on_evict` (a topic being recycled).
    pub fn clear_history(&mut self, on_evict: impl FnMut(Entry)) {
        if let Some(last) = self.log.back() {
            self.evicted_gseq = Some(last.gseq);
        }
        self.first_seq = self.end_seq();
        self.retained_bytes = 0;
        self.log.drain(..).for_each(on_evict);
    }

    /// Iterates the retained entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &str) -> Rc<[u8]> {
        Rc::from(s.as_bytes())
    }

    fn ne(gseq: u64, f: Rc<[u8]>) -> NewEntry {
        NewEntry {
            gseq,
            frame: f,
            custom_id: None,
            fanout: Fanout::new(std::time::Instant::now(), 0),
        }
    }

    #[test]
    fn bounded_by_count_and_bytes() {
        let mut t = Topic::new("a");
        for g in 0..10 {
            t.append(ne(g, frame("0123456789")), 4, 1000, |_| {});
        }
        assert_eq!(t.len(), 4);
        assert_eq!(t.first_seq(), 6);
        assert_eq!(t.end_seq(), 10);
        for g in 10..20 {
            t.append(ne(g, frame("0123456789")), 100, 25, |_| {});
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.retained_bytes(), 20);
        // A single oversized entry is still kept.
        t.append(ne(20, frame(&"x".repeat(100))), 100, 25, |_| {});
        assert_eq!(t.len(), 1);
    }

    /// Exactly the bounds are kept: `max_events` entries, `max_bytes` bytes; and
    /// `is_empty` follows the entries.
    #[test]
    fn exactly_the_bounds_are_kept() {
        let mut t = Topic::new("a");
        assert!(t.is_empty());
        for g in 0..2 {
            t.append(ne(g, frame("0123456789")), 2, 20, |_| {});
        }
        assert!(!t.is_empty());
        assert_eq!((t.len(), t.retained_bytes()), (2, 20));
        t.append(ne(2, frame("0")), 2, 20, |_| {});
        assert_eq!((t.len(), t.retained_bytes()), (2, 11));
    }

    #[test]
    fn backlog_bytes() {
        let mut t = Topic::new("a");
        t.append(ne(0, frame("aaa")), 10, 100, |_| {});
        t.append(ne(1, frame("bb")), 10, 100, |_| {});
        assert_eq!(t.bytes_from(0), Some(5));
        assert_eq!(t.bytes_from(1), Some(2));
        assert_eq!(t.bytes_from(2), Some(0));
        assert_eq!(t.bytes_from(3), None);
    }

    #[test]
    fn resume_points() {
        let mut t = Topic::new("a");
        for g in [3, 5, 9] {
            t.append(ne(g, frame("x")), 2, 100, |_| {});
        }
        // gseq 3 was evicted: resuming after 1 or 2 has a gap; after 3 or later does not.
        assert_eq!(t.resume_after(2), None);
        assert_eq!(t.resume_after(3), Some(1));
        assert_eq!(t.resume_after(5), Some(2));
        assert_eq!(t.resume_after(9), Some(3));
        assert_eq!(t.resume_after(100), Some(3));
    }
}
