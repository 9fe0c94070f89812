//! The local command thread: publishes (each batch one transaction, answered once it
//! committed), range reads and head probes. A failure answers the requests at once (the
//! reactor answers `503`); the database is opened again no more often than the backoff
//! allows.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::super::backoff::{Backoff, Random};
use super::super::config::{BusConfig, Durability, LocalStore};
use super::super::outbox::{Outbox, Seen};
use super::super::range::page;
use super::super::types::{
    BusReply, BusRequest, FetchRange, Publish, PublishFailure, new_epoch, take_batch,
};
use super::error::{StoreError, StoreErrorKind};
use super::store::Store;

/// With [`Durability::Batch`], how long after a write the checkpoint (and its fsync) comes.
pub(super) const BATCH_SYNC_DELAY: Duration = Duration::from_secs(1);

pub(super) struct LocalCommands {
    config: BusConfig,
    local: LocalStore,
    outbox: Outbox,
    store: Option<Store>,
    /// No open attempt before this instant (backoff after a failure).
    retry_at: Instant,
    down_reason: String,
    /// With [`Durability::Batch`]: a checkpoint is due at this instant.
    sync_due: Option<Instant>,
    backoff: Backoff,
    random: Random,
    /// The tail's position; with the newest id this thread answered, what a file it opens
    /// must not be behind (see [`Store::renew_if_behind`]).
    seen: Seen,
    answered: Option<(String, u64)>,
}

impl LocalCommands {
    pub(super) fn new(
        config: BusConfig,
        local: LocalStore,
        outbox: Outbox,
        seen: Seen,
    ) -> LocalCommands {
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        LocalCommands {
            config,
            local,
            outbox,
            store: None,
            retry_at: Instant::now(),
            down_reason: "not opened yet".into(),
            sync_due: None,
            backoff,
            random: Random::new(),
            seen,
            answered: None,
        }
    }

    /// The newest position this process knows of in the log it followed.
    fn position(&self) -> Option<(String, u64)> {
        let tail = self.seen.lock().ok().and_then(|seen| seen.clone());
        match (tail, self.answered.clone()) {
            (Some(t), Some(a)) if t.0 == a.0 => Some(if t.1 >= a.1 { t } else { a }),
            (_, Some(a)) => Some(a),
            (t, None) => t,
        }
    }

    /// Serves requests until the handle is dropped (the channel closes).
    pub(super) fn run(mut self, requests: Receiver<BusRequest>) {
        loop {
            let first = match self.sync_due {
                None => requests.recv().ok(),
                Some(due) => {
                    match requests.recv_timeout(due.saturating_duration_since(Instant::now())) {
                        Ok(request) => Some(request),
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            let Some(first) = first else {
                self.sync();
                return;
            };
            let batch = take_batch(first, &requests, self.config.batch);
            if !batch.publishes.is_empty() {
                self.publish_all(&batch.publishes);
            }
            for range in batch.ranges {
                self.fetch(&range);
            }
            for token in batch.probes {
                self.probe(token);
            }
            if self.outbox.closed() {
                self.sync();
                return;
            }
        }
    }

    /// The open database, (re)opened when the backoff allows; `None` while it cannot be.
    fn store(&mut self) -> Option<&mut Store> {
        if self.store.as_ref().is_some_and(|s| !s.is_current_file()) {
            log::warn!("local log: the database file was replaced or removed; opening it again");
            self.store = None;
        }
        if self.store.is_none() && Instant::now() >= self.retry_at {
            let opened = Store::open(
                &self.local.dir,
                self.local.durability,
                self.config.io_timeout,
                &new_epoch(self.random.next_u64()),
            );
            let position = self.position();
            let new = new_epoch(self.random.next_u64());
            let checked = opened.and_then(|mut store| match &position {
                Some((epoch, offset)) => {
                    store.renew_if_behind((epoch, *offset), &new).map(|_| store)
                }
                None => Ok(store),
            });
            match checked {
                Ok(store) => {
                    self.backoff.reset();
                    self.store = Some(store);
                }
                Err(e) => self.broken(&e),
            }
        }
        self.store.as_mut()
    }

    fn broken(&mut self, error: &StoreError) {
        self.down_reason = error.message.clone();
        log::warn!("local log: {}", self.down_reason);
        self.store = None;
        self.retry_at = Instant::now() + self.backoff.next_delay(self.random.next_u64());
    }

    /// Appends the batch in one transaction; every publish gets its id once it committed, or
    /// every one the same refusal.
    fn publish_all(&mut self, publishes: &[Publish]) {
        let max_len = self.config.max_len;
        let result = match self.store() {
            None => Err(PublishFailure::Unavailable(self.down_reason.clone())),
            Some(store) => store.append(publishes, max_len).map_err(|e| {
                let reason = refusal(&e);
                // A full disk or a busy lock passes by itself; anything else reopens.
                if !matches!(e.kind, StoreErrorKind::Full | StoreErrorKind::Busy) {
                    self.broken(&e);
                } else {
                    log::warn!("local log: publish refused: {}", e.message);
                }
                reason
            }),
        };
        match result {
            Ok(ids) => {
                if self.local.durability == Durability::Batch && self.sync_due.is_none() {
                    self.sync_due = Some(Instant::now() + BATCH_SYNC_DELAY);
                }
                if let Some(last) = ids.last() {
                    self.answered = Some((last.epoch.clone(), last.offset));
                }
                for (publish, id) in publishes.iter().zip(ids) {
                    self.outbox.send(BusReply::Published {
                        token: publish.token,
                        id,
                    });
                }
            }
            Err(reason) => {
                for publish in publishes {
                    self.outbox.send(BusReply::PublishFailed {
                        token: publish.token,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }

    /// The checkpoint [`Durability::Batch`] owes its last writes.
    fn sync(&mut self) {
        if self.sync_due.take().is_some()
            && let Some(store) = self.store.as_ref()
            && let Err(e) = store.checkpoint()
        {
            log::warn!("local log: checkpoint: {}", e.message);
        }
    }

    fn fetch(&mut self, range: &FetchRange) {
        let limit = range.limit.clamp(1, self.config.batch.max(1));
        let reply = match self.store() {
            None => Err(self.down_reason.clone()),
            Some(store) => store
                .read_after(range.after_offset, range.through_offset, limit)
                .and_then(|(scanned, _head)| {
                    let first = store.first_retained()?;
                    Ok(page(range, limit, store.epoch().to_owned(), first, scanned))
                })
                .map_err(|e| e.message),
        };
        self.outbox.send(match reply {
            Ok(reply) => BusReply::Range(reply),
            Err(reason) => BusReply::RangeFailed {
                token: range.token,
                reason,
            },
        });
    }
}

/// Head probes.
impl LocalCommands {
    /// Reads the `log` row's epoch and head: the head as the file has it, whatever the tail
    /// has shown.
    fn probe(&mut self, token: u64) {
        let reply = match self.store() {
            None => Err(self.down_reason.clone()),
            Some(store) => store.head().map_err(|e| e.message),
        };
        self.outbox.send(BusReply::head(token, reply));
    }
}

/// The publisher's refusal for a store error: a full disk or a busy lock is refused outright
/// (nothing was written); after an I/O error the commit may or may not have reached the file.
fn refusal(e: &StoreError) -> PublishFailure {
    match e.kind {
        StoreErrorKind::Full => PublishFailure::Rejected(format!("disk full: {}", e.message)),
        StoreErrorKind::Busy => PublishFailure::Unavailable(e.message.clone()),
        StoreErrorKind::NotOurs => PublishFailure::Rejected(e.message.clone()),
        StoreErrorKind::Io => PublishFailure::Unknown(e.message.clone()),
    }
}
