//! The tail thread: follows the shared log from its last offset and hands batches to the
//! reactor. Reconnects by itself; never reads from `$`, so nothing published while it was
//! away is skipped.

use super::backoff::{Backoff, Random, sleep_until};
use super::config::{BusConfig, RedisStore};
use super::endpoint::Endpoint;
use super::fingerprint::Delivered;
use super::outbox::{Outbox, Seen, SeenDelivered};
use super::redis::{self as wire, Entry};
use super::types::{BusEvent, BusReply, ClusterId};
use redis::{Connection, RedisResult, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Why reading a batch stopped following the stream.
enum Interrupt {
    /// The connection failed: report (once per outage), back off, reconnect.
    Broken(String),
    /// The log's epoch is not the one followed: greet again on the same connection.
    EpochSuspect,
}

pub(super) struct Tail {
    config: BusConfig,
    keys: RedisStore,
    endpoint: Endpoint,
    outbox: Outbox,
    shutdown: Arc<AtomicBool>,
    hello: redis::Script,
    clear: redis::Script,
    /// The epoch followed; `None` until the first greeting (unless resumed from an id).
    epoch: Option<String>,
    /// The last offset handed to the reactor (or the starting point); `None` until the
    /// first greeting decides where to start.
    cursor: Option<u64>,
    /// The fingerprint of the last event handed over: on every greeting the entry at its
    /// offset is read back, and if it holds other content the log's offsets were reused (a
    /// replica promoted without the newest events, and a node published on it first), so
    /// the log gets a new epoch instead of ids that name two events. Shared with the
    /// command thread (`delivered_shared`), which checks the same on its side.
    delivered: Option<Delivered>,
    /// An outage has been reported and no `Connected` followed yet.
    down_reported: bool,
    backoff: Backoff,
    random: Random,
    seen: Seen,
    delivered_shared: SeenDelivered,
}

impl Tail {
    /// A tail starting after `start` (same epoch: exactly after that offset), or, with
    /// `None`, at the newest [`BusConfig::warm_events`] events.
    pub(super) fn new(
        config: BusConfig,
        keys: RedisStore,
        endpoint: Endpoint,
        start: Option<ClusterId>,
        outbox: Outbox,
        shutdown: Arc<AtomicBool>,
        (seen, delivered_shared): (Seen, SeenDelivered),
    ) -> Tail {
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        Tail {
            config,
            keys,
            endpoint,
            outbox,
            shutdown,
            hello: redis::Script::new(wire::HELLO_SCRIPT),
            clear: redis::Script::new(&wire::clear_script()),
            epoch: start.as_ref().map(|id| id.epoch.clone()),
            cursor: start.map(|id| id.offset),
            delivered: None,
            down_reported: false,
            backoff,
            random: Random::new(),
            seen,
            delivered_shared,
        }
    }

    pub(super) fn run(mut self) {
        let read_timeout = self.config.block + self.config.io_timeout;
        while !self.stopping() {
            let connected = self
                .endpoint
                .client(self.config.io_timeout)
                .and_then(|client| wire::connect(&client, &self.config, read_timeout));
            let mut con = match connected {
                Ok(con) => con,
                Err(e) => {
                    self.outage(wire::describe(&e));
                    continue;
                }
            };
            if let Some(reason) = self.follow(&mut con) {
                self.outage(reason);
            }
        }
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Greets, then reads batches until the connection breaks (the reason) or shutdown
    /// (`None`).
    fn follow(&mut self, con: &mut Connection) -> Option<String> {
        loop {
            if let Err(e) = self.greet(con) {
                return Some(wire::describe(&e));
            }
            loop {
                if self.stopping() {
                    return None;
                }
                match self.read_batch(con) {
                    Ok(()) => {}
                    Err(Interrupt::EpochSuspect) => break,
                    Err(Interrupt::Broken(reason)) => return Some(reason),
                }
            }
        }
    }

    /// Reads the epoch, head and first retained offset; reports `EpochChanged` when the log
    /// is not the one followed (the cursor then restarts at 0), then `Connected`.
    fn greet(&mut self, con: &mut Connection) -> RedisResult<()> {
        let candidate = wire::new_epoch(self.random.next_u64());
        let seen = self.epoch.as_deref().zip(self.cursor);
        let mut hello = wire::hello(con, &self.keys, &self.hello, &candidate, seen, false)?;
        if self.diverged(con, &hello)? {
            let seen = self.epoch.as_deref().zip(self.cursor);
            hello = wire::hello(con, &self.keys, &self.hello, &candidate, seen, true)?;
        }
        self.backoff.reset();
        self.down_reported = false;
        match self.epoch.replace(hello.epoch.clone()) {
            Some(previous) if previous != hello.epoch => {
                log::warn!(
                    "bus: Redis lost the log (epoch {previous} → {})",
                    hello.epoch
                );
                self.outbox.send(BusReply::EpochChanged {
                    previous,
                    epoch: hello.epoch.clone(),
                });
                self.cursor = Some(0);
                self.delivered = None;
            }
            Some(_) => {}
            None => {
                let start = hello.head.saturating_sub(self.config.warm_events);
                self.cursor = Some(self.cursor.unwrap_or(start));
            }
        }
        self.share_position();
        log::info!(
            "bus: following epoch {} after offset {:?}, head {}",
            hello.epoch,
            self.cursor,
            hello.head
        );
        self.outbox.send(BusReply::Connected {
            epoch: hello.epoch,
            head_offset: hello.head,
            first_retained_offset: hello.first_retained,
            after_offset: self.cursor.unwrap_or(0),
        });
        Ok(())
    }

    /// Whether the log, still in the epoch followed, holds at the last delivered offset an
    /// entry other than the one delivered. A trimmed or missing entry proves nothing.
    fn diverged(&self, con: &mut Connection, hello: &wire::Hello) -> RedisResult<bool> {
        let Some(delivered) = &self.delivered else {
            return Ok(false);
        };
        let offset = delivered.offset;
        if self.epoch.as_deref() != Some(hello.epoch.as_str())
            || self.cursor != Some(offset)
            || hello.head < offset
        {
            return Ok(false);
        }
        let entries = wire::entry_at(con, &self.keys, offset, &hello.epoch)?;
        let diverged = delivered.rewritten(&hello.epoch, wire::at_offset(&entries));
        if diverged {
            log::warn!(
                "bus: the log's entry {offset} is not the event this node delivered under that \
                 id (a replica promoted without the newest events): starting a new epoch"
            );
        }
        Ok(diverged)
    }

    /// One round trip: the meta hash (epoch check, head for the lag metric) and an
    /// `XREAD BLOCK` from the cursor, pipelined.
    fn read_batch(&mut self, con: &mut Connection) -> Result<(), Interrupt> {
        let epoch = self.epoch.clone().unwrap_or_default();
        let cursor = self.cursor.unwrap_or(0);
        let block_ms = self.config.block.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.keys.meta_key())
            .arg("e")
            .arg("o")
            .cmd("XREAD")
            .arg("COUNT")
            .arg(self.config.batch)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(self.keys.stream_key())
            .arg(format!("{cursor}-0"))
            // The counter again once the read returned: every node's entry is written with
            // the counter, so what the read got above it is no node's.
            .cmd("HGET")
            .arg(self.keys.meta_key())
            .arg("o");
        let answers: Vec<Value> = pipe
            .query(con)
            .map_err(|e| Interrupt::Broken(wire::describe(&e)))?;
        let [meta, read, counter_after] = answers.as_slice() else {
            return Err(Interrupt::Broken("unexpected pipeline answer".into()));
        };
        let head_after = wire::as_u64(counter_after).unwrap_or(0);
        let meta = wire::as_array(meta).unwrap_or(&[]);
        let current = meta.first().and_then(wire::as_text);
        let mut head = meta.get(1).and_then(wire::as_u64).unwrap_or(0);
        let mut events: Vec<BusEvent> = Vec::new();
        // Another epoch, or the same one with a head below what was seen (an older copy of
        // the log): greet again, which tells them apart.
        let suspect = current.as_deref() != Some(epoch.as_str()) || head < cursor;
        let mut blocked = false;
        let mut skipped = 0;
        for entry in wire::xread_entries(read, &epoch) {
            // Above the counter once the read returned: no node's entry. Never moved past;
            // the clear script moves it out of the way (it decides atomically).
            if !suspect && entry.above(head_after) {
                blocked = true;
                break;
            }
            match entry {
                Entry::Foreign { ms, seq } => {
                    log::warn!("bus: skipping log entry {ms}-{seq}, which no node wrote");
                    skipped += 1;
                }
                Entry::Event(event) => {
                    self.cursor = Some(event.offset);
                    self.delivered = Some(Delivered::of(&event));
                    events.push(event);
                }
                Entry::Unreadable { offset, why } => {
                    log::warn!("bus: skipping unreadable log entry {offset}: {why}");
                    self.cursor = Some(offset);
                }
                // The meta hash still names the followed epoch: a stray entry, not a lost log.
                Entry::OtherEpoch { offset } if !suspect => {
                    log::warn!("bus: skipping log entry {offset} of another epoch");
                    self.cursor = Some(offset);
                }
                Entry::OtherEpoch { .. } => break,
            }
        }
        self.share_position();
        if let Some(last) = events.last() {
            head = head.max(last.offset);
            self.outbox.send(BusReply::Events {
                events,
                head_offset: head,
            });
        }
        if suspect {
            return Err(Interrupt::EpochSuspect);
        }
        if blocked {
            skipped += self.clear_top(con)?;
        }
        if skipped > 0 {
            self.outbox.send(BusReply::Foreign { entries: skipped });
        }
        Ok(())
    }

    /// Moves entries no node wrote off the top of the log (they would block every publish),
    /// and waits a little when there were none (the entry was a node's own after all, with
    /// the counter moved meanwhile: the next read takes it).
    fn clear_top(&mut self, con: &mut Connection) -> Result<u64, Interrupt> {
        let moved: u64 = self
            .clear
            .key(self.keys.stream_key())
            .key(self.keys.meta_key())
            .key(self.keys.foreign_key())
            .invoke(con)
            .map_err(|e| Interrupt::Broken(wire::describe(&e)))?;
        if moved > 0 {
            log::warn!(
                "bus: moved {moved} entries no node wrote off the top of the log to {}",
                self.keys.foreign_key()
            );
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(moved)
    }

    fn share_position(&self) {
        if let Ok(mut shared) = self.delivered_shared.lock() {
            shared.clone_from(&self.delivered);
        }
        if let (Some(epoch), Some(cursor), Ok(mut seen)) =
            (&self.epoch, self.cursor, self.seen.lock())
        {
            match seen.as_mut() {
                Some((e, offset)) if e == epoch => *offset = cursor,
                _ => *seen = Some((epoch.clone(), cursor)),
            }
        }
    }

    /// Reports the outage once, then sleeps the backoff delay (waking for shutdown).
    fn outage(&mut self, reason: String) {
        if !self.down_reported {
            log::warn!("bus: lost Redis: {reason}");
            self.outbox.send(BusReply::Disconnected { reason });
            self.down_reported = true;
        }
        let until = Instant::now() + self.backoff.next_delay(self.random.next_u64());
        sleep_until(until, &self.shutdown);
    }
}
