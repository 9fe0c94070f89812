//! The local tail thread: follows the log file from its last offset and hands batches to the
//! reactor, woken by [`super::watch::Watch`] when any process commits. Like the Redis tail,
//! it never starts from "now": after its first greeting it reads on from its cursor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::super::backoff::{Backoff, Random};
use super::super::config::{BusConfig, LocalStore};
use super::super::outbox::Outbox;
use super::super::range::Scanned;
use super::super::types::{BusEvent, BusReply, ClusterId, new_epoch};
use super::store::{Store, StoreError};
use super::watch::Watch;

pub(super) struct LocalTail {
    config: BusConfig,
    local: LocalStore,
    outbox: Outbox,
    shutdown: Arc<AtomicBool>,
    /// The epoch followed; `None` until the first greeting (unless resumed from an id).
    epoch: Option<String>,
    /// The last offset handed to the reactor; `None` until the first greeting.
    cursor: Option<u64>,
    down_reported: bool,
    backoff: Backoff,
    random: Random,
}

impl LocalTail {
    pub(super) fn new(
        config: BusConfig,
        local: LocalStore,
        start: Option<ClusterId>,
        outbox: Outbox,
        shutdown: Arc<AtomicBool>,
    ) -> LocalTail {
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        LocalTail {
            config,
            local,
            outbox,
            shutdown,
            epoch: start.as_ref().map(|id| id.epoch.clone()),
            cursor: start.map(|id| id.offset),
            down_reported: false,
            backoff,
            random: Random::new(),
        }
    }

    pub(super) fn run(mut self) {
        let mut watch = Watch::new(&self.local.dir);
        while !self.stopping() {
            let opened = Store::open(
                &self.local.dir,
                self.local.durability,
                self.config.io_timeout,
                &new_epoch(self.random.next_u64()),
            );
            let mut store = match opened {
                Ok(store) => store,
                Err(e) => {
                    self.outage(e.message);
                    continue;
                }
            };
            if let Err(e) = self.follow(&mut store, &mut watch) {
                self.outage(e.message);
            }
        }
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Greets, then reads batches until an error, shutdown, or the file at the log's path
    /// is another one (then `Ok`, and the caller opens it and greets again).
    fn follow(&mut self, store: &mut Store, watch: &mut Watch) -> Result<(), StoreError> {
        self.greet(store)?;
        loop {
            if self.stopping() || self.outbox.closed() {
                return Ok(());
            }
            watch.clear();
            let more = self.read_batch(store)?;
            if !more {
                watch.wait(self.config.block);
            }
            if !store.is_current_file() {
                log::warn!(
                    "local log: {} was replaced or removed; opening it again",
                    store.path().display()
                );
                return Ok(());
            }
        }
    }

    /// Reports `EpochChanged` when the file holds another log than the one followed (the
    /// cursor then restarts at 0), then `Connected`.
    fn greet(&mut self, store: &mut Store) -> Result<(), StoreError> {
        let hello = store.hello()?;
        self.backoff.reset();
        self.down_reported = false;
        match self.epoch.replace(hello.epoch.clone()) {
            Some(previous) if previous != hello.epoch => {
                log::warn!(
                    "local log: {} holds another log (epoch {previous} → {})",
                    store.path().display(),
                    hello.epoch
                );
                self.outbox.send(BusReply::EpochChanged {
                    previous,
                    epoch: hello.epoch.clone(),
                });
                self.cursor = Some(0);
            }
            Some(_) => {}
            None => {
                let start = hello.head.saturating_sub(self.config.warm_events);
                self.cursor = Some(self.cursor.unwrap_or(start));
            }
        }
        // A cursor beyond the head (a resume id from a log that lost its newest events):
        // read from the head; the core's offsets tell the rest.
        let after = self.cursor.unwrap_or(0).min(hello.head);
        self.cursor = Some(after);
        log::info!(
            "local log: following epoch {} in {} after offset {after}, head {}",
            hello.epoch,
            store.path().display(),
            hello.head
        );
        self.outbox.send(BusReply::Connected {
            epoch: hello.epoch,
            head_offset: hello.head,
            first_retained_offset: hello.first_retained,
            after_offset: after,
        });
        Ok(())
    }

    /// Reads the next batch after the cursor and hands its events over. Returns whether a
    /// whole batch was read (more may be waiting).
    fn read_batch(&mut self, store: &mut Store) -> Result<bool, StoreError> {
        let cursor = self.cursor.unwrap_or(0);
        let (scanned, head) = store.read_after(cursor, None, self.config.batch)?;
        let full = scanned.len() >= self.config.batch;
        let mut events: Vec<BusEvent> = Vec::with_capacity(scanned.len());
        for entry in scanned {
            match entry {
                Scanned::Event(event) => {
                    self.cursor = Some(event.offset);
                    events.push(event);
                }
                Scanned::Hole(offset) => self.cursor = Some(offset),
            }
        }
        if let Some(last) = events.last() {
            let head_offset = head.max(last.offset);
            self.outbox.send(BusReply::Events {
                events,
                head_offset,
            });
        }
        Ok(full)
    }

    /// Reports the outage once, then sleeps the backoff delay (waking for shutdown).
    fn outage(&mut self, reason: String) {
        if !self.down_reported {
            log::warn!("local log: {reason}");
            self.outbox.send(BusReply::Disconnected { reason });
            self.down_reported = true;
        }
        let until = Instant::now() + self.backoff.next_delay(self.random.next_u64());
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}
