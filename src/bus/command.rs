//! The command thread: publishes (pipelined), range fetches and head probes, one batch of
//! requests per round trip. While Redis is unreachable every request is answered at once
//! with a failure (the reactor answers `503`), and reconnects are attempted no more often
//! than the backoff.

use super::backoff::{Backoff, Random};
use super::config::{BusConfig, RedisStore};
use super::endpoint::Endpoint;
use super::fingerprint::Delivered;
use super::outbox::{Outbox, Seen, SeenDelivered};
use super::range::{Scanned, page};
use super::redis::{self as wire, Entry};
use super::types::{
    BusReply, BusRequest, FetchRange, Publish, PublishFailure, RangeReply, take_batch,
};
use redis::{Connection, RedisResult, Value};
use std::sync::mpsc::Receiver;
use std::time::Instant;

pub(super) struct Commands {
    config: BusConfig,
    keys: RedisStore,
    endpoint: Endpoint,
    outbox: Outbox,
    publish: redis::Script,
    hello: redis::Script,
    /// The tail's position: checked against the log at every (re)connect.
    seen: Seen,
    /// The tail's fingerprint: read back at every (re)connect and with every range read.
    delivered: SeenDelivered,
    con: Option<Connection>,
    /// When `con` last answered: after [`BusConfig::block`] of silence it is checked with a
    /// `PING` before use, so a connection that died while idle (a server `timeout`, a
    /// `CLIENT KILL`, a NAT) is replaced instead of failing a publish with an unknown outcome.
    last_answer: Instant,
    /// No connection attempt before this instant (backoff after a failure).
    retry_at: Instant,
    /// Why the last attempt failed, for the replies while down.
    down_reason: String,
    backoff: Backoff,
    random: Random,
}

impl Commands {
    pub(super) fn new(
        config: BusConfig,
        keys: RedisStore,
        endpoint: Endpoint,
        outbox: Outbox,
        (seen, delivered): (Seen, SeenDelivered),
    ) -> Commands {
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        Commands {
            config,
            keys,
            endpoint,
            outbox,
            publish: redis::Script::new(&wire::publish_script()),
            hello: redis::Script::new(wire::HELLO_SCRIPT),
            seen,
            delivered,
            con: None,
            retry_at: Instant::now(),
            last_answer: Instant::now(),
            down_reason: "not connected yet".into(),
            backoff,
            random: Random::new(),
        }
    }

    /// Serves requests until the handle is dropped (the channel closes).
    pub(super) fn run(mut self, requests: Receiver<BusRequest>) {
        while let Ok(first) = requests.recv() {
            let batch = take_batch(first, &requests, self.config.batch);
            if !batch.publishes.is_empty() {
                self.publish_all(batch.publishes);
            }
            for range in batch.ranges {
                self.fetch(range);
            }
            for token in batch.probes {
                self.probe(token);
            }
            if self.outbox.closed() {
                return;
            }
        }
    }

    /// The connection, (re)opened when the backoff allows; `None` while Redis is down.
    fn connection(&mut self) -> Option<&mut Connection> {
        if let Some(con) = self.con.as_mut()
            && self.last_answer.elapsed() >= self.config.block
        {
            match redis::cmd("PING").query::<Value>(con) {
                Ok(_) => self.last_answer = Instant::now(),
                Err(e) => {
                    log::info!("bus: idle command connection died: {}", wire::describe(&e));
                    self.con = None;
                }
            }
        }
        if self.con.is_none() && Instant::now() >= self.retry_at {
            // A `WAIT` may take its whole timeout before answering.
            let read_timeout = self.config.io_timeout + self.keys.replica_timeout;
            match self
                .endpoint
                .client(self.config.io_timeout)
                .and_then(|client| wire::connect(&client, &self.config, read_timeout))
                .and_then(|con| self.prepare(con))
            {
                Ok(con) => {
                    self.backoff.reset();
                    self.con = Some(con);
                    self.last_answer = Instant::now();
                }
                Err(e) => self.broken(&e),
            }
        }
        self.con.as_mut()
    }

    /// Loads the publish script, and checks the log against the tail's position with the
    /// hello script first: after a Redis restart this connection may well be the first to
    /// reach it, and a log that came back older must get its new epoch before any publish.
    /// Then the tail's fingerprint: after a failover this connection may reach the promoted
    /// copy before the tail does, and one whose offsets were already reused with other
    /// content must get its new epoch before a range read hands any of them out.
    fn prepare(&mut self, mut con: Connection) -> RedisResult<Connection> {
        let seen = self.seen.lock().ok().and_then(|seen| seen.clone());
        let candidate = wire::new_epoch(self.random.next_u64());
        let position = seen
            .as_ref()
            .map(|(epoch, offset)| (epoch.as_str(), *offset));
        let hello = wire::hello(
            &mut con,
            &self.keys,
            &self.hello,
            &candidate,
            position,
            false,
        )?;
        if let Some(delivered) = self.delivered()
            && delivered.epoch == hello.epoch
            && hello.head >= delivered.offset
        {
            let entries = wire::entry_at(&mut con, &self.keys, delivered.offset, &hello.epoch)?;
            if delivered.rewritten(&hello.epoch, wire::at_offset(&entries)) {
                let candidate = wire::new_epoch(self.random.next_u64());
                renew(&mut con, &self.keys, &self.hello, &candidate, &delivered)?;
            }
        }
        self.publish.load(&mut con)?;
        Ok(con)
    }

    /// The tail's fingerprint as it stands.
    fn delivered(&self) -> Option<Delivered> {
        self.delivered.lock().ok().and_then(|d| d.clone())
    }

    fn broken(&mut self, error: &redis::RedisError) {
        self.down_reason = wire::describe(error);
        log::warn!("bus: command connection: {}", self.down_reason);
        self.con = None;
        self.retry_at = Instant::now() + self.backoff.next_delay(self.random.next_u64());
    }

    /// Sends every publish in one pipeline of `EVALSHA`s; reloads the script and resends
    /// the ones that met `NOSCRIPT` (a `SCRIPT FLUSH`), once.
    fn publish_all(&mut self, publishes: Vec<Publish>) {
        let mut pending = publishes;
        for attempt in 0..2 {
            let answers = match self.connection() {
                None => {
                    let reason = PublishFailure::Unavailable(self.down_reason.clone());
                    return self.fail_all(&pending, reason);
                }
                Some(_) => self.send_publishes(&pending),
            };
            let answers = match answers {
                Ok((answers, confirmed)) if answers.len() == pending.len() => {
                    if let Some(short) = self.replicas_short(confirmed) {
                        return self.fail_all(&pending, PublishFailure::Unavailable(short));
                    }
                    answers
                }
                Ok(_) => {
                    let e = wire::protocol_error("pipeline answer count mismatch");
                    self.broken(&e);
                    return self.fail_all(&pending, PublishFailure::Unknown(wire::describe(&e)));
                }
                Err(e) => {
                    self.broken(&e);
                    return self.fail_all(&pending, PublishFailure::Unknown(wire::describe(&e)));
                }
            };
            // A replica (the master demoted by a failover): drop the connection, so the next
            // attempt asks the Sentinels (or the address) again, and fail the batch as down.
            if let Some(Value::ServerError(e)) = answers
                .iter()
                .find(|a| matches!(a, Value::ServerError(e) if e.code() == "READONLY"))
            {
                let why = format!("the server is a replica: {}", e.details().unwrap_or(""));
                log::warn!("bus: command connection: {why}");
                self.down_reason = why.clone();
                self.con = None;
                return self.fail_all(&pending, PublishFailure::Unavailable(why));
            }
            let mut retry = Vec::new();
            for (publish, answer) in pending.into_iter().zip(answers) {
                let reply = match &answer {
                    Value::ServerError(e) if e.code() == "NOSCRIPT" && attempt == 0 => {
                        retry.push(publish);
                        continue;
                    }
                    Value::ServerError(e) => BusReply::PublishFailed {
                        token: publish.token,
                        reason: PublishFailure::Rejected(format!(
                            "{} {}",
                            e.code(),
                            e.details().unwrap_or("")
                        )),
                    },
                    other => match wire::published_id(other) {
                        Some((id, moved)) => {
                            if moved > 0 {
                                log::warn!(
                                    "bus: moved {moved} entries no node wrote off the top of the \
                                     log to {}",
                                    self.keys.foreign_key()
                                );
                                self.outbox.send(BusReply::Foreign { entries: moved });
                            }
                            BusReply::Published {
                                token: publish.token,
                                id,
                            }
                        }
                        None => BusReply::PublishFailed {
                            token: publish.token,
                            reason: PublishFailure::Rejected("unexpected script answer".into()),
                        },
                    },
                };
                self.outbox.send(reply);
            }
            if retry.is_empty() {
                return;
            }
            if let Some(con) = self.con.as_mut()
                && let Err(e) = self.publish.load(con)
            {
                self.broken(&e);
            }
            pending = retry;
        }
    }

    /// With `--redis-wait N`: `None` when at least N replicas confirmed the batch, else why
    /// not (the events are in the master's log all the same; a publisher that retries gets
    /// them at least once). Logged, since it means replication is behind or broken.
    fn replicas_short(&self, confirmed: Option<u64>) -> Option<String> {
        let wanted = u64::from(self.keys.replicas);
        let confirmed = confirmed?;
        if confirmed >= wanted {
            return None;
        }
        let why = format!("replicas did not confirm ({confirmed} of {wanted})");
        log::warn!("bus: {why}");
        Some(why)
    }

    /// The answers to each publish, and, with `--redis-wait`, how many replicas the `WAIT`
    /// after them counted (one `WAIT` covers every write of the connection so far).
    fn send_publishes(&mut self, publishes: &[Publish]) -> RedisResult<(Vec<Value>, Option<u64>)> {
        let (stream, meta, foreign) = (
            self.keys.stream_key(),
            self.keys.meta_key(),
            self.keys.foreign_key(),
        );
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for publish in publishes {
            let command = pipe
                .cmd("EVALSHA")
                .arg(self.publish.get_hash())
                .arg(3)
                .arg(&stream)
                .arg(&meta)
                .arg(&foreign)
                .arg(wire::new_epoch(self.random.next_u64()))
                .arg(self.config.max_len);
            for (name, value) in wire::entry_fields(publish) {
                command.arg(name).arg(value.as_ref());
            }
        }
        let waits = self.keys.replicas > 0;
        if waits {
            let ms = self.keys.replica_timeout.as_millis().max(1) as u64;
            pipe.cmd("WAIT").arg(self.keys.replicas).arg(ms);
        }
        let Some(con) = self.con.as_mut() else {
            return Err(wire::protocol_error("no connection"));
        };
        let answer: Value = pipe.query(con)?;
        self.last_answer = Instant::now();
        let Value::Array(mut items) = answer else {
            return Err(wire::protocol_error("pipeline answer is not a list"));
        };
        if !waits {
            return Ok((items, None));
        }
        // An error or garbage from `WAIT` counts as no replica: never a false 200.
        let confirmed = items.pop().as_ref().and_then(wire::as_u64).unwrap_or(0);
        Ok((items, Some(confirmed)))
    }

    fn fail_all(&mut self, publishes: &[Publish], reason: PublishFailure) {
        for publish in publishes {
            self.outbox.send(BusReply::PublishFailed {
                token: publish.token,
                reason: reason.clone(),
            });
        }
    }

    /// Reads the epoch, the first retained entry and up to `limit` entries after
    /// `after_offset`, in one pipeline.
    fn fetch(&mut self, range: FetchRange) {
        let reply = if self.connection().is_none() {
            BusReply::RangeFailed {
                token: range.token,
                reason: self.down_reason.clone(),
            }
        } else {
            let delivered = self.delivered();
            let candidate = wire::new_epoch(self.random.next_u64());
            let answer = match self.con.as_mut() {
                Some(con) => read_range(con, &self.config, &self.keys, &range, delivered.as_ref())
                    .and_then(|(reply, rewritten)| match (rewritten, &delivered) {
                        (true, Some(d)) => {
                            let epoch = renew(con, &self.keys, &self.hello, &candidate, d)?;
                            Ok(RangeReply {
                                epoch,
                                events: Vec::new(),
                                scanned_through: range.after_offset,
                                complete: true,
                                ..reply
                            })
                        }
                        _ => Ok(reply),
                    })
                    .inspect(|_| self.last_answer = Instant::now()),
                None => Err(wire::protocol_error("no connection")),
            };
            match answer {
                Ok(reply) => BusReply::Range(reply),
                Err(e) => {
                    self.broken(&e);
                    BusReply::RangeFailed {
                        token: range.token,
                        reason: self.down_reason.clone(),
                    }
                }
            }
        };
        self.outbox.send(reply);
    }
}

/// Head probes.
impl Commands {
    /// Reads the meta hash's epoch and counter (`HMGET meta e o`): the head as the log has
    /// it, whatever the tail has shown.
    fn probe(&mut self, token: u64) {
        let meta = self.keys.meta_key();
        let reply = match self.connection() {
            None => Err(self.down_reason.clone()),
            Some(con) => match redis::cmd("HMGET").arg(meta).arg("e").arg("o").query(con) {
                Ok(Value::Array(fields)) => {
                    self.last_answer = Instant::now();
                    let epoch = fields.first().and_then(wire::as_text);
                    let head = fields.get(1).and_then(wire::as_u64).unwrap_or(0);
                    epoch
                        .map(|epoch| (epoch, head))
                        .ok_or_else(|| "the log has no epoch yet".to_owned())
                }
                Ok(_) => Err("unexpected HMGET answer".to_owned()),
                Err(e) => {
                    self.broken(&e);
                    Err(self.down_reason.clone())
                }
            },
        };
        self.outbox.send(BusReply::head(token, reply));
    }
}

/// The log, still in `delivered`'s epoch, holds another entry at its offset: the hello
/// script starts a new epoch (`candidate`, unless another node's check did first), as the
/// tail's greeting would. Answers the log's epoch now.
fn renew(
    con: &mut Connection,
    keys: &RedisStore,
    hello: &redis::Script,
    candidate: &str,
    delivered: &Delivered,
) -> RedisResult<String> {
    log::warn!(
        "bus: the log's entry {} is not the event this node delivered under that id (a \
         replica promoted without the newest events): starting a new epoch",
        delivered.offset
    );
    let seen = Some((delivered.epoch.as_str(), delivered.offset));
    Ok(wire::hello(con, keys, hello, candidate, seen, true)?.epoch)
}

/// One page of a range read, and whether the log was found rewritten under the tail's
/// fingerprint (`delivered`, read back in the same pipeline): then the page must not be
/// handed out.
fn read_range(
    con: &mut Connection,
    config: &BusConfig,
    keys: &RedisStore,
    range: &FetchRange,
    delivered: Option<&Delivered>,
) -> RedisResult<(RangeReply, bool)> {
    let limit = range.limit.clamp(1, config.batch.max(1));
    let through = range
        .through_offset
        .map_or_else(|| "+".to_owned(), |t| format!("{t}-0"));
    let mut pipe = redis::pipe();
    pipe.cmd("HGET")
        .arg(keys.meta_key())
        .arg("e")
        .cmd("XRANGE")
        .arg(keys.stream_key())
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .cmd("XRANGE")
        .arg(keys.stream_key())
        .arg(format!("{}-0", range.after_offset.saturating_add(1)))
        .arg(through)
        .arg("COUNT")
        .arg(limit);
    if let Some(d) = delivered {
        let id = format!("{}-0", d.offset);
        pipe.cmd("XRANGE").arg(keys.stream_key()).arg(&id).arg(&id);
    }
    let answers: Vec<Value> = pipe.query(con)?;
    let (epoch, first, entries, at) = match answers.as_slice() {
        [epoch, first, entries] if delivered.is_none() => (epoch, first, entries, None),
        [epoch, first, entries, at] if delivered.is_some() => (epoch, first, entries, Some(at)),
        _ => return Err(wire::protocol_error("unexpected range answer")),
    };
    let epoch = wire::as_text(epoch).unwrap_or_default();
    let rewritten = match (delivered, at) {
        (Some(d), Some(at)) => {
            d.rewritten(&epoch, wire::at_offset(&wire::xrange_entries(at, &epoch)))
        }
        _ => false,
    };
    let first_retained_offset = match wire::xrange_entries(first, &epoch).first() {
        Some(Entry::Event(e)) => Some(e.offset),
        Some(Entry::OtherEpoch { offset } | Entry::Unreadable { offset, .. }) => Some(*offset),
        Some(Entry::Foreign { ms, .. }) => Some(*ms),
        None => None,
    };
    let scanned = wire::xrange_entries(entries, &epoch)
        .into_iter()
        .filter_map(|entry| match entry {
            Entry::Event(e) => Some(Scanned::Event(e)),
            Entry::OtherEpoch { offset } | Entry::Unreadable { offset, .. } => {
                Some(Scanned::Hole(offset))
            }
            Entry::Foreign { .. } => None,
        })
        .collect();
    Ok((
        page(range, limit, epoch, first_retained_offset, scanned),
        rewritten,
    ))
}
