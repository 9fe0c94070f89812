//! One connection's state inside the core.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use smallvec::SmallVec;

use super::exchange::Exchange;
use super::topic::TopicId;

/// Names a connection: its slab key and the generation it was accepted with. A slab key is
/// reused after its client leaves; the generation makes ids of departed clients stale, so
/// nothing addressed to an old client can reach the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    pub key: u32,
    pub generation: u32,
}

/// Which of the driver's listeners accepted a connection; routing serves every endpoint on
/// the main one and only `/metrics` and `/health` on the internal one (`--metrics-listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listener {
    /// The `--listen` address: every endpoint.
    #[default]
    Main,
    /// The `--metrics-listen` address: `/metrics` and `/health`; anything else is 404.
    Internal,
}

/// Bytes queued for one client ahead of its log cursors.
#[derive(Debug, Clone)]
pub enum Bytes {
    Static(&'static [u8]),
    /// Bytes shared with other clients (the stream prelude).
    Shared(Rc<[u8]>),
    /// A log frame that is partly written (counted as a delivery when it completes).
    Frame(Rc<[u8]>),
    Owned(Box<[u8]>),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Static(s) => s,
            Bytes::Shared(s) | Bytes::Frame(s) => s,
            Bytes::Owned(s) => s,
        }
    }
}

/// Bytes to send before anything from the log, and how many of them are already sent.
/// Always `offset < bytes.len()`: [`Client`] never keeps an empty or fully sent one.
#[derive(Debug, Clone)]
pub struct Pending {
    bytes: Bytes,
    offset: usize,
}

impl Pending {
    /// The bytes not sent yet (never empty).
    pub fn rest(&self) -> &[u8] {
        &self.bytes.as_slice()[self.offset..]
    }

    /// True when this is a log frame partly written (counted as delivered once complete).
    pub fn is_frame(&self) -> bool {
        matches!(self.bytes, Bytes::Frame(_))
    }

    /// The log frame partly written, if this is one.
    pub fn frame(&self) -> Option<&Rc<[u8]>> {
        match &self.bytes {
            Bytes::Frame(f) => Some(f),
            _ => None,
        }
    }
}

/// A streaming client's position in one topic's log.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    pub topic: TopicId,
    /// Local sequence number of the next entry not yet started. Invariant: at least the
    /// topic's `first_seq` (a client that would fall out is handled by the slow policy first).
    pub next: u64,
    /// This client's index in the topic's `subscribers`.
    pub sub_index: u32,
}

/// One connection.
#[derive(Debug)]
pub struct Client {
    /// The generation its id carries (fixed at accept).
    generation: u32,
    /// The HTTP exchange: phase, publishes waiting for the log, CORS, half-close.
    pub http: Exchange,
    /// Bytes queued ahead of the log cursors; kept by the methods below (never empty).
    pending: Option<Pending>,
    /// Streaming clients only; one cursor per subscribed topic (set whole at a stream's
    /// start, taken whole at its end: never two on one topic).
    cursors: SmallVec<[Cursor; 2]>,
    /// The socket is believed writable (no `WouldBlock` since the last writable event).
    writable: bool,
    /// In one of the core's write queues (at most once).
    queued: bool,
    peer: SocketAddr,
    /// The listener that accepted it (fixed at accept).
    listener: Listener,
    connected_at: Instant,
    /// Last time the kernel accepted bytes for this client (or connect time).
    last_write: Instant,
    /// Bytes received after a streaming request (bounded; past the bound: close). Saturates
    /// (u32 keeps the slab entry small).
    received_after_request: u32,
    /// A resume this node cannot serve is being read from the shared log (or waits for its
    /// tail to apply the resume point). Log
    /// frames are held back (the cursors keep collecting live events) until the range is
    /// written through `pending`; keep-alives continue.
    held: bool,
    /// A streaming client's token grant (what it may see, when it expires); `None` when every
    /// topic it follows is public.
    grant: Option<Box<crate::auth::Grant>>,
}

impl Client {
    /// A connection accepted at `now`, reading its first request within these limits.
    pub fn new(
        generation: u32,
        (peer, listener): (SocketAddr, Listener),
        now: Instant,
        limits: (usize, usize),
    ) -> Client {
        Client {
            listener,
            generation,
            http: Exchange::new(now, limits),
            pending: None,
            cursors: SmallVec::new(),
            writable: true,
            queued: false,
            peer,
            connected_at: now,
            last_write: now,
            received_after_request: 0,
            held: false,
            grant: None,
        }
    }

    pub fn is_streaming(&self) -> bool {
        self.http.is_streaming()
    }

    /// See [`Exchange::reads_request`].
    pub fn reads_request(&self) -> bool {
        self.http.reads_request()
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The listener that accepted it.
    pub fn listener(&self) -> Listener {
        self.listener
    }

    pub fn connected_at(&self) -> Instant {
        self.connected_at
    }

    /// When the kernel last accepted bytes for this client (or when it connected).
    pub fn last_write(&self) -> Instant {
        self.last_write
    }

    /// The kernel accepted bytes at `now`.
    pub fn wrote_at(&mut self, now: Instant) {
        self.last_write = now;
    }

    /// A writable event came (`true`) or a write would block (`false`).
    pub fn set_writable(&mut self, writable: bool) {
        self.writable = writable;
    }

    /// True unless its last write would block (its socket is full).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// True when a write may be queued for it: writable, and not queued already.
    pub fn may_queue(&self) -> bool {
        self.writable && !self.queued
    }

    /// It was put in a write queue.
    pub fn mark_queued(&mut self) {
        self.queued = true;
    }

    /// Taken off its write queue: true when it was queued (the write is due).
    pub fn take_queued(&mut self) -> bool {
        std::mem::replace(&mut self.queued, false)
    }

    /// The stream's cursors, one per topic.
    pub fn cursors(&self) -> &[Cursor] {
        &self.cursors
    }

    /// The cursors, to move them (the set of topics stays).
    pub fn cursors_mut(&mut self) -> &mut [Cursor] {
        &mut self.cursors
    }

    /// The cursors of a stream that starts (one per topic).
    pub fn set_cursors(&mut self, cursors: SmallVec<[Cursor; 2]>) {
        debug_assert!(
            cursors
                .iter()
                .enumerate()
                .all(|(i, c)| cursors[..i].iter().all(|o| o.topic != c.topic)),
            "two cursors on one topic"
        );
        self.cursors = cursors;
    }

    /// The cursors of a stream that ends, taken.
    pub fn take_cursors(&mut self) -> SmallVec<[Cursor; 2]> {
        std::mem::take(&mut self.cursors)
    }

    /// True while its log frames are held back (a resume being read from the shared log, or
    /// waiting for this node's tail).
    pub fn is_held(&self) -> bool {
        self.held
    }

    pub fn hold(&mut self) {
        self.held = true;
    }

    pub fn release(&mut self) {
        self.held = false;
    }

    /// The token grant of a private stream (`None`: every topic it follows is public).
    pub fn grant(&self) -> Option<&crate::auth::Grant> {
        self.grant.as_deref()
    }

    pub fn set_grant(&mut self, grant: Box<crate::auth::Grant>) {
        self.grant = Some(grant);
    }

    pub fn drop_grant(&mut self) {
        self.grant = None;
    }

    /// Counts bytes a stream's client sent after its request; returns the total (saturating).
    pub fn count_received(&mut self, bytes: usize) -> u32 {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.received_after_request = self.received_after_request.saturating_add(bytes);
        self.received_after_request
    }

    /// The bytes queued ahead of the log cursors, if any (never empty).
    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// The queued bytes not sent yet, copied (to be sent again with more after them).
    pub fn unsent(&self) -> Vec<u8> {
        self.pending
            .as_ref()
            .map_or(Vec::new(), |p| p.rest().to_vec())
    }

    /// Replaces what is queued ahead of the log with `bytes` (nothing when empty).
    pub fn set_pending(&mut self, bytes: Bytes) {
        self.pending = (!bytes.as_slice().is_empty()).then_some(Pending { bytes, offset: 0 });
    }

    /// Queues `bytes` after what is queued and not sent yet (an interim `100 Continue`, or
    /// answers written in request order).
    pub fn queue_after_pending(&mut self, bytes: Vec<u8>) {
        let bytes = match self.pending.take() {
            Some(p) => [p.rest(), &bytes].concat(),
            None => bytes,
        };
        self.set_pending(Bytes::Owned(bytes.into()));
    }

    /// The kernel took `written` bytes, the queued ones first: returns how many of them went
    /// to the log frames after it, and the partly written frame it completed, if any.
    pub fn take_written(&mut self, written: usize) -> (usize, Option<Rc<[u8]>>) {
        let Some(p) = &mut self.pending else {
            return (written, None);
        };
        let rest = p.bytes.as_slice().len() - p.offset;
        if written < rest {
            p.offset += written;
            return (0, None);
        }
        let left = written - rest;
        match self.pending.take().map(|p| p.bytes) {
            Some(Bytes::Frame(frame)) => (left, Some(frame)),
            _ => (left, None),
        }
    }

    /// A log frame of which the kernel took the first `offset` bytes: the rest goes first.
    pub fn set_partial_frame(&mut self, frame: Rc<[u8]>, offset: usize) {
        self.pending = (offset < frame.len()).then_some(Pending {
            bytes: Bytes::Frame(frame),
            offset,
        });
    }
}
