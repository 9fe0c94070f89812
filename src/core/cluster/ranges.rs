//! Range reads from the shared log, shared by the held streams of one node.
//!
//! A stream whose resume is older than this node's cache is **held** (head sent, its cursors
//! collecting live events) and gets a [`Reader`]: the events of its topics after `after` up
//! to `through` (the newest offset applied when it started) come from the log, page after
//! page, then its cursors take over. Readers share what the log is asked:
//!
//! - A page is asked for by a [`Read`] in flight; a reader whose position falls inside one
//!   (same epoch, its topics among the read's, `read.after <= after < read.through`) waits
//!   on it instead of asking again, so a crowd resuming from one id makes one request per
//!   page.
//! - A reply is decoded once into a [`Page`] of shared frames (`Rc<[u8]>`, like the live
//!   log); each waiter takes the frames of its own topics in its own window, pointers only.
//!   The newest pages stay for a while ([`RECENT_PAGES`], [`RECENT_BYTES`]): a resume that
//!   comes a moment later is served from them without a request.
//! - A reader asks for its next page only once it has written the last one, so a client
//!   that does not read holds one page, not the range.
//! - When this node's cache moves past a held stream's cursors (more events of a topic
//!   than `--history` arrived during the read), the reader reads on: `through` moves to the
//!   newest offset applied and the cursors to the live edge, so what was evicted comes from
//!   the log instead. Only a client that leaves its page unwritten through two such moves
//!   (it does not read its socket) gets the slow-client policy.
//!
//! Every reader is its client's: it ends with the stream ([`Core::leave_stream`]), and is
//! taken off the read it waits on, so neither a waiter list nor a reply outlives its client.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use super::super::Core;
use super::super::client::{ClientId, Cursor};
use super::super::event_log::TICK_TOPIC_ID;
use super::{FETCH_LIMIT, TOO_OLD, admissible, encode_bus_event};
use crate::bus::types::{BusRequest, FetchRange, RangeReply};
use crate::config::Config;
use crate::sse::frame;

mod read_on;

/// Event data one page of a range read carries at most (one event more): with the rule that
/// the next page waits for the last to be written, what a resuming client holds beyond its
/// socket.
const PAGE_BYTES: usize = 256 * 1024;

/// Pages kept after their reply for resumes that come soon after, at most this many…
const RECENT_PAGES: usize = 16;
/// …and at most this many bytes of frames among them.
const RECENT_BYTES: usize = 4 * PAGE_BYTES;

/// The page size for this configuration: at most half the slow-client backlog, so that a
/// page alone never makes its client look slow.
fn page_bytes(cfg: &Config) -> usize {
    let half_backlog = usize::try_from(cfg.max_backlog / 2).unwrap_or(usize::MAX);
    PAGE_BYTES.min(half_backlog).max(1)
}

/// The range reads of one node: the held streams reading, the requests in flight, the
/// newest pages.
#[derive(Default)]
pub(in crate::core) struct Ranges {
    readers: HashMap<ClientId, Reader>,
    reads: HashMap<u64, Read>,
    recent: VecDeque<Rc<Page>>,
    recent_bytes: usize,
}

/// A held stream's read of the shared log.
struct Reader {
    /// The epoch it resumes in.
    epoch: String,
    /// Everything after this offset up to `through` is still to come from the log.
    after: u64,
    /// Its cursors hold the events after this offset.
    through: u64,
    topics: Vec<String>,
    /// It resumes from another epoch (told `restart`) and has had no page yet: a trimmed
    /// start of the log is expected, not a gap, and what only this node's cache still has
    /// (`cached`) comes first.
    restart: bool,
    /// A restart's frames from this node's cache, by sequence number, captured when the read
    /// began (the cache may evict them while the read is in flight).
    cached: Vec<(u64, Rc<[u8]>)>,
    /// Frames taken from pages and not yet offered to its socket, in order.
    frames: VecDeque<Rc<[u8]>>,
    /// The read in flight it waits on.
    waiting: Option<u64>,
    /// It has had a page (the first request made for it counts as a range fetch).
    started: bool,
    /// The cache moved past its cursors while it had bytes unwritten; a second time before
    /// they are written makes it slow.
    pushed: bool,
}

/// A page asked of the log, and the readers waiting for it.
struct Read {
    epoch: String,
    after: u64,
    through: u64,
    topics: Vec<String>,
    /// Each reader waiting on it, at most once (taken off when its stream ends).
    waiters: Vec<ClientId>,
}

/// A reply decoded once: the admissible events of `topics` in `(after, scanned_through]`.
struct Page {
    epoch: String,
    after: u64,
    scanned_through: u64,
    first_retained: Option<u64>,
    topics: Vec<String>,
    /// (offset, topic, frame), in offset order.
    events: Vec<(u64, String, Rc<[u8]>)>,
    bytes: usize,
}

/// A frame of which the kernel took the first so many bytes.
type PartFrame = (Rc<[u8]>, usize);

/// Every topic of `wanted` is among `read`.
fn covers(read: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|t| read.contains(t))
}

impl Page {
    /// The page holds what `r` reads next: the epoch and topics match, and it starts at or
    /// before `r`'s position and ends after it.
    fn serves(&self, r: &Reader) -> bool {
        self.epoch == r.epoch
            && self.after <= r.after
            && r.after < self.scanned_through
            && covers(&self.topics, &r.topics)
    }
}

impl Read {
    fn serves(&self, r: &Reader) -> bool {
        self.epoch == r.epoch
            && self.after <= r.after
            && r.after < self.through
            && covers(&self.topics, &r.topics)
    }

    fn request(&self, token: u64, max_bytes: usize) -> BusRequest {
        BusRequest::FetchRange(FetchRange {
            token,
            after_offset: self.after,
            through_offset: Some(self.through),
            topics: Some(self.topics.clone()),
            limit: FETCH_LIMIT,
            max_bytes,
        })
    }
}

impl Ranges {
    /// Forgets the pages kept (the log they came from was lost).
    pub(in crate::core) fn forget_pages(&mut self) {
        self.recent.clear();
        self.recent_bytes = 0;
    }

    fn keep_page(&mut self, page: Rc<Page>) {
        if page.scanned_through <= page.after || page.bytes > RECENT_BYTES {
            return;
        }
        self.recent_bytes += page.bytes;
        self.recent.push_back(page);
        while self.recent.len() > RECENT_PAGES || self.recent_bytes > RECENT_BYTES {
            let Some(old) = self.recent.pop_front() else {
                break;
            };
            self.recent_bytes -= old.bytes;
        }
    }

    /// Takes reader `id` off the read it waits on.
    fn detach(&mut self, id: ClientId) {
        let Some(token) = self.readers.get_mut(&id).and_then(|r| r.waiting.take()) else {
            return;
        };
        if let Some(read) = self.reads.get_mut(&token)
            && let Some(i) = read.waiters.iter().position(|w| *w == id)
        {
            read.waiters.swap_remove(i);
        }
    }
}

/// Beginning and serving reads.
impl Core {
    /// Holds a new stream (its cursors at the live edge) and reads the events of `topics`
    /// after `after` up to the newest offset applied from the shared log.
    pub(in crate::core) fn begin_fetch(
        &mut self,
        id: ClientId,
        after: u64,
        restart: bool,
        topics: Vec<String>,
    ) {
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        let through = cl.last_offset;
        if after >= through {
            return;
        }
        let Some(epoch) = cl.epoch.clone() else {
            return;
        };
        let cached = if restart {
            self.cached_frames(id)
        } else {
            Vec::new()
        };
        let reader = Reader {
            epoch,
            after,
            through,
            topics,
            restart,
            cached,
            frames: VecDeque::new(),
            waiting: None,
            started: false,
            pushed: false,
        };
        if let Some(cl) = self.cluster.as_mut() {
            cl.ranges.readers.insert(id, reader);
        }
        if let Some(c) = self.client_mut(id) {
            c.hold();
        }
        self.serve_reader(id);
    }

    /// The frames this node caches for client `id`'s topics from where the cache is complete
    /// (`complete_from`, after its newest hole), in log order.
    fn cached_frames(&self, id: ClientId) -> Vec<(u64, Rc<[u8]>)> {
        let (Some(c), Some(cl)) = (self.client(id), self.cluster.as_ref()) else {
            return Vec::new();
        };
        let from_start: Vec<Cursor> = c
            .cursors()
            .iter()
            .filter(|cur| cur.topic != TICK_TOPIC_ID)
            .map(|cur| Cursor {
                next: self.log.topic(cur.topic).first_seq(),
                ..*cur
            })
            .collect();
        self.log
            .pending_frames(&from_start)
            .filter(|(_, e)| e.gseq >= cl.complete_from)
            .map(|(_, e)| (e.gseq, e.frame.clone()))
            .collect()
    }

    /// Moves reader `id` on while it has nothing to write: released once it has read
    /// through, else given the next page from the pages kept, or put on a read in flight
    /// that covers its position, or on a new one.
    fn serve_reader(&mut self, id: ClientId) {
        let max_bytes = page_bytes(&self.cfg);
        loop {
            let Some(cl) = self.cluster.as_mut() else {
                return;
            };
            let ranges = &mut cl.ranges;
            let Some(r) = ranges.readers.get(&id) else {
                return;
            };
            if r.waiting.is_some() || !r.frames.is_empty() {
                return;
            }
            if r.after >= r.through {
                ranges.readers.remove(&id);
                if let Some(c) = self.client_mut(id) {
                    c.release();
                }
                self.schedule(id);
                return;
            }
            if let Some(page) = ranges.recent.iter().find(|p| p.serves(r)).cloned() {
                cl.stats.range_pages_shared += 1;
                self.apply_page(id, &page);
                continue;
            }
            let token = match ranges.reads.iter().find(|(_, read)| read.serves(r)) {
                Some((&token, _)) => {
                    cl.stats.range_pages_shared += 1;
                    token
                }
                None => {
                    cl.next_token += 1;
                    let token = cl.next_token;
                    let read = Read {
                        epoch: r.epoch.clone(),
                        after: r.after,
                        through: r.through,
                        topics: r.topics.clone(),
                        waiters: Vec::new(),
                    };
                    cl.stats.range_pages += 1;
                    cl.stats.range_fetches += u64::from(!r.started);
                    cl.requests.push_back(read.request(token, max_bytes));
                    ranges.reads.insert(token, read);
                    token
                }
            };
            if let Some(read) = ranges.reads.get_mut(&token) {
                read.waiters.push(id);
            }
            if let Some(r) = ranges.readers.get_mut(&id) {
                r.waiting = Some(token);
            }
            return;
        }
    }

    /// Gives reader `id` what `page` holds for it: its topics' frames in its window (after
    /// the cache's own frames for a restart), or `reset` `too-old` when events after its
    /// position were trimmed. A page that ends before its position changes nothing.
    fn apply_page(&mut self, id: ClientId, page: &Page) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let base = cl.gseq_base;
        let Some(r) = cl.ranges.readers.get_mut(&id) else {
            return;
        };
        let lost = !r.restart
            && page
                .first_retained
                .is_some_and(|first| first > r.after.saturating_add(1));
        if lost {
            let mut reset = Vec::new();
            let gap_id = format!("{}-{}", r.epoch, r.through);
            frame::encode_event(&mut reset, Some(&gap_id), Some("reset"), TOO_OLD);
            r.frames.push_back(reset.into());
            r.after = r.through;
        } else if page.scanned_through > r.after {
            if r.restart {
                // From the epoch's start: first what this node still caches that the log
                // has trimmed (a quiet topic's cache reaches back further than a busy log).
                let before = page
                    .first_retained
                    .unwrap_or(u64::MAX)
                    .min(r.through.saturating_add(1));
                let end = base.saturating_add(before);
                for (gseq, f) in std::mem::take(&mut r.cached) {
                    if gseq < end {
                        r.frames.push_back(f);
                    }
                }
            }
            for (offset, topic, f) in &page.events {
                if *offset > r.after && *offset <= r.through && r.topics.contains(topic) {
                    r.frames.push_back(f.clone());
                }
            }
            r.after = page.scanned_through.min(r.through);
        } else if page.after >= r.after {
            // The log had nothing more to show from here: stop reading it.
            r.after = r.through;
        } else {
            // A read from further back that ended before this reader's position.
            return;
        }
        r.restart = false;
        r.started = true;
        r.cached = Vec::new();
        self.schedule(id);
    }

    /// A range reply: decoded once, kept for later resumes, then given to every reader
    /// waiting on it.
    pub(super) fn on_range(&mut self, range: RangeReply, now: Instant) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let Some(read) = cl.ranges.reads.remove(&range.token) else {
            return;
        };
        let mut refused = 0;
        let mut bytes = 0;
        let mut events = Vec::with_capacity(range.events.len());
        for e in range
            .events
            .into_iter()
            .filter(|e| e.offset > read.after && e.offset <= read.through)
        {
            match admissible(&e) {
                Ok(()) => {
                    let f: Rc<[u8]> = encode_bus_event(&e).into();
                    bytes += f.len();
                    events.push((e.offset, e.topic, f));
                }
                Err(why) => {
                    refused += 1;
                    log::warn!("shared log entry {} refused ({why:?}) in a range", e.offset);
                }
            }
        }
        cl.stats.entries_refused += refused;
        let page = Rc::new(Page {
            epoch: range.epoch,
            after: read.after,
            scanned_through: range.scanned_through.min(read.through),
            first_retained: range.first_retained_offset,
            topics: read.topics,
            events,
            bytes,
        });
        if page.epoch == read.epoch {
            cl.ranges.keep_page(page.clone());
        }
        for id in read.waiters {
            let Some(cl) = self.cluster.as_mut() else {
                return;
            };
            let Some(r) = cl.ranges.readers.get_mut(&id) else {
                continue;
            };
            if r.waiting != Some(range.token) {
                continue;
            }
            r.waiting = None;
            if !self
                .client(id)
                .is_some_and(|c| c.is_held() && c.is_streaming())
            {
                continue;
            }
            if page.epoch != read.epoch {
                // The log was lost meanwhile: the epoch change reaches this node's tail too.
                self.end_stream_with_retry(id, now);
                continue;
            }
            self.apply_page(id, &page);
            self.serve_reader(id);
        }
    }

    /// A range read failed: every stream waiting on it is told to come back later.
    pub(super) fn on_range_failed(&mut self, token: u64, reason: &str, now: Instant) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        cl.stats.range_failures += 1;
        let Some(read) = cl.ranges.reads.remove(&token) else {
            return;
        };
        log::info!(
            "range read failed ({reason}): {} streams retry later",
            read.waiters.len()
        );
        for id in read.waiters {
            let waits = self.cluster.as_mut().is_some_and(|cl| {
                cl.ranges
                    .readers
                    .get_mut(&id)
                    .is_some_and(|r| r.waiting.take() == Some(token))
            });
            if waits {
                self.end_stream_with_retry(id, now);
            }
        }
    }
}

/// The write path of a held stream: the frames its reader took, then the next page.
impl Core {
    /// True while client `id`'s resume is being read from the shared log.
    pub fn is_reading_range(&self, id: ClientId) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|cl| cl.ranges.readers.contains_key(&id))
    }

    /// The frames client `id`'s reader took and has not offered yet, in order.
    pub(in crate::core) fn range_frames(&self, id: ClientId) -> impl Iterator<Item = &[u8]> {
        self.cluster
            .as_ref()
            .and_then(|cl| cl.ranges.readers.get(&id))
            .into_iter()
            .flat_map(|r| r.frames.iter().map(|f| &f[..]))
    }

    /// True when client `id`'s reader has frames to write.
    pub(in crate::core) fn has_range_frames(&self, id: ClientId) -> bool {
        self.cluster
            .as_ref()
            .and_then(|cl| cl.ranges.readers.get(&id))
            .is_some_and(|r| !r.frames.is_empty())
    }

    /// The kernel took `written` bytes of client `id`'s range frames (and perhaps more):
    /// returns the bytes left over, the frame it took only a part of (and how much), and
    /// how many frames it took whole.
    pub(in crate::core) fn take_range_written(
        &mut self,
        id: ClientId,
        mut written: usize,
    ) -> (usize, Option<PartFrame>, u64) {
        let Some(r) = self
            .cluster
            .as_mut()
            .and_then(|cl| cl.ranges.readers.get_mut(&id))
        else {
            return (written, None, 0);
        };
        let mut whole = 0;
        while written > 0 {
            let Some(f) = r.frames.pop_front() else { break };
            if written >= f.len() {
                written -= f.len();
                whole += 1;
            } else {
                return (0, Some((f, written)), whole);
            }
        }
        (written, None, whole)
    }

    /// Client `id` has written everything queued ahead of its cursors: its reader may take
    /// the next page (or be done).
    pub(in crate::core) fn range_written(&mut self, id: ClientId) {
        if self.client(id).is_none_or(|c| c.pending().is_some()) {
            return;
        }
        let idle = self.cluster.as_mut().and_then(|cl| {
            let r = cl.ranges.readers.get_mut(&id)?;
            r.frames.is_empty().then(|| r.pushed = false)
        });
        if idle.is_some() {
            self.serve_reader(id);
        }
    }

    /// Forgets the reader of a stream that ended (and takes it off the read it waits on).
    pub(in crate::core) fn forget_reader(&mut self, id: ClientId) {
        if let Some(cl) = self.cluster.as_mut() {
            cl.ranges.detach(id);
            cl.ranges.readers.remove(&id);
        }
    }

    /// Debug check: every reader belongs to a live, held stream and waits on at most one
    /// read, which lists it; every waiter of a read is a reader waiting on it.
    pub(in crate::core) fn check_readers(&self) -> Result<(), String> {
        let Some(cl) = self.cluster.as_ref() else {
            return Ok(());
        };
        for (id, r) in &cl.ranges.readers {
            if !self
                .client(*id)
                .is_some_and(|c| c.is_held() && c.is_streaming())
            {
                return Err(format!("a range reader of client {} not held", id.key));
            }
            if let Some(token) = r.waiting {
                let listed = cl
                    .ranges
                    .reads
                    .get(&token)
                    .map(|read| read.waiters.iter().filter(|w| *w == id).count());
                if listed != Some(1) {
                    return Err(format!(
                        "range reader {} not listed once by its read",
                        id.key
                    ));
                }
                if !r.frames.is_empty() {
                    return Err(format!(
                        "range reader {} waits with frames unwritten",
                        id.key
                    ));
                }
            }
        }
        for (token, read) in &cl.ranges.reads {
            for w in &read.waiters {
                if cl.ranges.readers.get(w).and_then(|r| r.waiting) != Some(*token) {
                    return Err(format!(
                        "read {token} lists client {} not waiting on it",
                        w.key
                    ));
                }
            }
        }
        Ok(())
    }
}
