//! The local tail thread: follows the log file from its last offset and hands batches to the
//! reactor, woken by [`super::watch::Watch`] when any process commits. Like the Redis tail,
//! it never starts from "now": after its first greeting it reads on from its cursor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::super::backoff::{Backoff, Random, sleep_until};
use super::super::config::{BusConfig, LocalStore};
use super::super::outbox::{Outbox, Seen};
use super::super::range::Scanned;
use super::super::types::{BusEvent, BusReply, ClusterId, new_epoch};
use super::error::StoreError;
use super::store::Store;
use super::watch::Watch;

/// What one read found after the cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// The log has another epoch than the one followed (another process renewed it): greet.
    OtherEpoch,
    Nothing,
    Some,
    /// A whole batch: more may be waiting, read again at once.
    Full,
}

/// How long to wait before the next read. A commit writes the `-wal` file (the wake-up)
/// before it becomes visible to readers (after its fsync, with `sync`): a read right after
/// the wake-up can find nothing yet. So after a wake-up that found nothing, the tail reads
/// again after 1, 2, 4 … 64 ms, then every 64 ms, for up to [`SETTLE_FOR`], before it waits
/// for the next wake-up alone.
#[derive(Debug, Default)]
struct Settle {
    /// When the last wake-up came, while its commit has not been read yet.
    woken_at: Option<Instant>,
    delay: Duration,
}

/// How long after a wake-up the tail keeps looking for the commit behind it.
const SETTLE_FOR: Duration = Duration::from_secs(1);
const SETTLE_MAX_DELAY: Duration = Duration::from_millis(64);

impl Settle {
    fn woken(&mut self) {
        if self.woken_at.is_none() {
            self.woken_at = Some(Instant::now());
            self.delay = Duration::from_millis(1);
        }
    }

    /// The wait after a read that found `read`, at most `block`.
    fn after(&mut self, read: Read, block: Duration) -> Duration {
        if read != Read::Nothing {
            self.woken_at = None;
        }
        match self.woken_at {
            Some(at) if at.elapsed() < SETTLE_FOR => {
                let delay = self.delay;
                self.delay = (self.delay * 2).min(SETTLE_MAX_DELAY);
                delay.min(block)
            }
            _ => {
                self.woken_at = None;
                block
            }
        }
    }
}

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
    /// The newest position followed, shared with the command thread (which checks a file
    /// it opens against it before appending).
    seen: Seen,
}

impl LocalTail {
    pub(super) fn new(
        config: BusConfig,
        local: LocalStore,
        start: Option<ClusterId>,
        outbox: Outbox,
        shutdown: Arc<AtomicBool>,
        seen: Seen,
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
            seen,
        }
    }

    fn share_position(&self) {
        if let (Some(epoch), Some(cursor), Ok(mut seen)) =
            (&self.epoch, self.cursor, self.seen.lock())
        {
            *seen = Some((epoch.clone(), cursor));
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
        let mut settle = Settle::default();
        loop {
            if self.stopping() || self.outbox.closed() {
                return Ok(());
            }
            watch.clear();
            let read = self.read_batch(store)?;
            if read == Read::OtherEpoch {
                self.greet(store)?;
                continue;
            }
            if read != Read::Full {
                let timeout = settle.after(read, self.config.block);
                if watch.wait(timeout) {
                    settle.woken();
                }
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
        let mut hello = store.hello()?;
        // Fewer events than this process already saw under the same epoch: an older copy of
        // the log. Its next offsets would repeat ids with other events: a new epoch.
        if let (Some(epoch), Some(cursor)) = (self.epoch.as_deref(), self.cursor)
            && hello.epoch == epoch
            && hello.head < cursor
            && store.renew_if_behind((epoch, cursor), &new_epoch(self.random.next_u64()))?
        {
            hello = store.hello()?;
        }
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
                // A new file starts at 0; a renewed one keeps its offsets: warm from its end.
                self.cursor = Some(hello.head.saturating_sub(self.config.warm_events));
            }
            Some(_) => {}
            None => {
                let start = hello.head.saturating_sub(self.config.warm_events);
                self.cursor = Some(self.cursor.unwrap_or(start));
            }
        }
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

    /// Reads the next batch after the cursor and hands its events over.
    fn read_batch(&mut self, store: &mut Store) -> Result<Read, StoreError> {
        let cursor = self.cursor.unwrap_or(0);
        let (scanned, head) = store.read_after(cursor, None, self.config.batch)?;
        if self.epoch.as_deref() != Some(store.epoch()) {
            return Ok(Read::OtherEpoch);
        }
        let read = match scanned.len() {
            0 => Read::Nothing,
            n if n >= self.config.batch => Read::Full,
            _ => Read::Some,
        };
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
        self.share_position();
        if let Some(last) = events.last() {
            let head_offset = head.max(last.offset);
            self.outbox.send(BusReply::Events {
                events,
                head_offset,
            });
        }
        Ok(read)
    }

    /// Reports the outage once, then sleeps the backoff delay (waking for shutdown).
    fn outage(&mut self, reason: String) {
        if !self.down_reported {
            log::warn!("local log: {reason}");
            self.outbox.send(BusReply::Disconnected { reason });
            self.down_reported = true;
        }
        let until = Instant::now() + self.backoff.next_delay(self.random.next_u64());
        sleep_until(until, &self.shutdown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_wake_up_that_found_nothing_reads_again_soon_then_gives_up() {
        let block = Duration::from_secs(1);
        let mut settle = Settle::default();
        assert_eq!(
            settle.after(Read::Nothing, block),
            block,
            "no wake-up: wait"
        );
        settle.woken();
        let delays: Vec<u128> = (0..9)
            .map(|_| settle.after(Read::Nothing, block).as_millis())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
        settle.woken();
        assert_eq!(
            settle.after(Read::Nothing, block).as_millis(),
            64,
            "a second wake-up does not restart the schedule"
        );
        assert_eq!(settle.after(Read::Some, block), block, "found it: wait");
        settle.woken();
        assert_eq!(settle.after(Read::Nothing, block).as_millis(), 1);
        settle.woken_at = Some(Instant::now() - SETTLE_FOR);
        assert_eq!(settle.after(Read::Nothing, block), block, "gave up");
        assert_eq!(settle.after(Read::Nothing, block), block);
    }
}
