//! What the two helper threads share: the [`Outbox`] their replies go through to the
//! reactor, and the tail's [`Seen`] position and [`SeenDelivered`] fingerprint the command
//! thread checks the log against.
//!
//! Guarantees: a reply sent through an [`Outbox`] is queued in order and followed by one
//! [`Notify`] call; once the [`super::BusHandle`] is gone, sending marks the bus closed
//! (so both threads stop) instead of failing.

use super::types::BusReply;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;

/// Called by the helper threads after each reply they queue; the driver passes a closure
/// around `mio::Waker::wake`, so the reactor wakes and drains [`super::BusHandle::try_recv`].
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// The newest position the tail has seen (epoch, offset), shared with the command thread so
/// its reconnects can spot a log that came back older (see `HELLO_SCRIPT`).
pub(super) type Seen = Arc<std::sync::Mutex<Option<(String, u64)>>>;

/// The fingerprint of the last event the Redis tail handed over, shared with the command
/// thread: on every reconnect, and with every range read, it reads that entry back, so a
/// log whose offsets were reused after a failover is a new epoch before the command side
/// hands out (or publishes under) any of its ids, even while the tail has not noticed yet.
pub(super) type SeenDelivered = Arc<std::sync::Mutex<Option<super::fingerprint::Delivered>>>;

/// The sending side of the reply channel, shared by both threads: queues a reply (waiting
/// while the reactor is behind: the channel is bounded) and wakes the reactor.
#[derive(Clone)]
pub(super) struct Outbox {
    replies: SyncSender<BusReply>,
    notify: Notify,
    closed: Arc<AtomicBool>,
}

impl Outbox {
    /// An outbox sending to `replies`, calling `notify` after each reply; `closed` is the
    /// flag the threads stop on, set here when the receiving side is gone.
    pub(super) fn new(
        replies: SyncSender<BusReply>,
        notify: Notify,
        closed: Arc<AtomicBool>,
    ) -> Outbox {
        Outbox {
            replies,
            notify,
            closed,
        }
    }

    /// Queues `reply`; when the handle is gone, marks the bus closed so the threads stop.
    pub(super) fn send(&self, reply: BusReply) {
        if self.replies.send(reply).is_err() {
            self.closed.store(true, Ordering::Relaxed);
        } else {
            (self.notify)();
        }
    }

    /// The flag both threads stop on (set by the handle, or here when it is gone).
    pub(super) fn stop_flag(&self) -> Arc<AtomicBool> {
        self.closed.clone()
    }

    pub(super) fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}
