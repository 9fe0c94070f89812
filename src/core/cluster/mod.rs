//! Cluster mode (`--redis`): the core's side of the shared log in Redis Streams. The plan
//! this follows is in [`crate::bus`]'s documentation; in short:
//!
//! - A publish (HTTP or stdin) becomes a [`BusRequest::Publish`] ([`Core::poll_output`]); the
//!   HTTP request takes a slot in its connection's [`Client::publishes`] until `Published`
//!   (200 with the cluster id) or `PublishFailed` (503 + `Retry-After`, kept alive);
//!   pipelined publishes are submitted at once, up to [`MAX_PUBLISHES_IN_FLIGHT`] per
//!   connection, and answered in request order. Nothing is appended locally on `Published`:
//!   the event arrives like everyone else's through `Events`.
//! - `Events` are [`classify`]d by offset against the last one applied: duplicates are
//!   dropped, a gap gives every stream a `reset` `too-old`, the next one is encoded once,
//!   appended to its topic's local log with sequence number `gseq_base + offset` and fanned
//!   out. The local logs are a cache of the shared log.
//! - `EpochChanged`: every stream gets `reset` `restart` and the cache is emptied.
//! - A `Last-Event-ID` is resumed from the cache when it covers it, else the client is held
//!   (head sent, keep-alives running, live events collected by its cursors) while
//!   [`BusRequest::FetchRange`] reads what it missed from Redis; the range is written first,
//!   then its cursors are released: exactly once, in order. Held streams share those reads,
//!   and read on from the log when the cache moves past them (`ranges.rs`).
//! - Whether this node keeps up: the heads it learns against the offset it applied, and a
//!   head probe while the tail is quiet (`health.rs`, `/health`'s `not applying the log`).
//!
//! Ticks stay local and id-less; they take the newest sequence number without a new one,
//! so offsets and sequence numbers stay in step.

mod health;
mod ranges;
mod resume;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Core;
use super::access;
use super::answers::answer;
use super::client::{Bytes, Client, ClientId};
use super::connection::{begin_reading, read_next};
use super::error::RequestError;
use super::exchange::{AfterAnswer, PublishSlot};
use super::metrics::CloseReason;
use super::publish::{check_fields, valid_topic_name};
use super::timers::TimerKind;
use crate::bus::types::{
    BusEvent, BusReply, BusRequest, ClusterId, Delivery, Publish, PublishFailure, classify,
};
use crate::http::response::{self, Connection};
use crate::sse::frame;

/// Log entries asked for per range fetch (the bus caps it at its batch size too).
const FETCH_LIMIT: usize = 512;
/// Publishes one connection may have waiting for the bus; past it, its input waits
/// (backpressure through [`Core::input_room`]).
pub(in crate::core) const MAX_PUBLISHES_IN_FLIGHT: usize = 64;
/// `Retry-After` of a publish the bus did not take, in seconds.
const PUBLISH_RETRY_AFTER_SECS: u64 = 1;

/// What the core knows of the shared log, and the requests waiting for the bus.
#[derive(Default)]
pub(in crate::core) struct Cluster {
    /// The epoch followed; `None` until the bus first connected.
    epoch: Option<String>,
    /// The tail is connected (the `/health` answer and the gauge).
    connected: bool,
    /// `last_offset` is meaningful for `epoch` (an event was applied, or a greeting placed it).
    positioned: bool,
    /// The newest offset applied to the local logs (0: none of this epoch).
    last_offset: u64,
    /// The newest offset known to exist in the shared log: shown by the tail, or answered to
    /// a publish on this node.
    head_offset: u64,
    /// The oldest offset Redis still held when the tail last greeted.
    first_retained: Option<u64>,
    /// Sequence number of offset 0 of the current epoch: an event's gseq is
    /// `gseq_base + offset` (epochs restart offsets; sequence numbers only grow).
    gseq_base: u64,
    /// The local logs hold every event from this gseq on, except what a topic evicted (its
    /// own `resume_after` says so): set at a warm start, an epoch change and after a gap.
    complete_from: u64,
    next_token: u64,
    publishes: HashMap<u64, Waiter>,
    /// The held streams reading the shared log, the reads in flight, the newest pages.
    ranges: ranges::Ranges,
    /// Held clients resuming after an id this node has not applied yet.
    awaiting: Vec<Awaiting>,
    requests: VecDeque<BusRequest>,
    stats: ClusterStats,
    /// Publishes the log refused in a row (`PublishFailure::Rejected`: an error that does not
    /// pass by itself, such as out of memory or a read-only replica); reset by a success.
    refused_in_a_row: u32,
    /// The heads learned and not yet applied, and the head probe (`health.rs`).
    watch: health::ApplyWatch,
}

/// Refusals in a row after which `/health` reports that publishing is broken.
const REFUSALS_UNHEALTHY: u32 = 3;

impl Cluster {
    /// The tail is connected to the shared log.
    pub(in crate::core) fn is_connected(&self) -> bool {
        self.connected
    }

    /// The log has refused the last few publishes outright: publishing is broken until one
    /// succeeds (`/health` says so, for a load balancer or an operator's alert).
    pub(in crate::core) fn publishing_refused(&self) -> bool {
        self.refused_in_a_row >= REFUSALS_UNHEALTHY
    }

    /// The epoch followed (`None` until the bus first connected).
    pub(in crate::core) fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The newest offset applied to the local logs (0: none of this epoch).
    pub(in crate::core) fn last_offset(&self) -> u64 {
        self.last_offset
    }
}

/// A publish waiting for the bus.
struct Waiter {
    /// The HTTP publisher; `None` for a stdin line (its outcome is only logged).
    client: Option<ClientId>,
    custom_id: Option<String>,
    since: Instant,
}

/// A held client waiting for this node's tail to apply its resume point.
struct Awaiting {
    client: ClientId,
    /// The resume point, as a sequence number and as an offset.
    gseq: u64,
    offset: u64,
    /// `Events` replies seen since, whose head was still below `offset`: after two, the
    /// id is taken as never issued (`reset` `unknown-id`).
    rounds: u8,
}

/// Cluster counters and gauges, for `/metrics`.
#[derive(Default, Debug, Clone)]
pub struct ClusterStats {
    pub reconnects: u64,
    pub epoch_changes: u64,
    pub events_received: u64,
    pub duplicates_dropped: u64,
    pub gaps: u64,
    /// Entries of the shared log refused because no publish request could have made them
    /// (an invalid topic, event name or id): each one a hole, logged.
    pub entries_refused: u64,
    /// Entries no node wrote (another id shape, or above the counter), skipped or moved
    /// out of the log's way by the bus.
    pub foreign_entries: u64,
    pub publishes_accepted: u64,
    pub publishes_failed: u64,
    /// Sum of the time from handing a publish to the bus to its answer.
    pub publish_seconds_sum: f64,
    /// Range reads begun for a resume: the first page asked of the log for a held stream
    /// that no read in flight or page kept could serve.
    pub range_fetches: u64,
    /// Pages of range reads asked of the log (the first of each read included).
    pub range_pages: u64,
    /// Pages a held stream took from a read another one asked for (in flight, or kept).
    pub range_pages_shared: u64,
    /// Times a held stream read on from the log because the cache moved past its cursors.
    pub range_extensions: u64,
    pub range_failures: u64,
    /// Head probes sent while the tail was quiet (`health.rs`).
    pub head_probes: u64,
}

/// Getters and the driver's side.
impl Core {
    /// The next request for the shared log, if any: [`Core::poll_output`] hands it out as
    /// [`super::Output::Log`].
    pub(in crate::core) fn next_log_request(&mut self) -> Option<BusRequest> {
        self.cluster.as_mut()?.requests.pop_front()
    }

    /// Core tests: the requests for the shared log queued and not yet handed out, taken
    /// without performing any other output.
    #[cfg(test)]
    pub(in crate::core) fn take_queued_log_requests(&mut self) -> Vec<BusRequest> {
        self.cluster
            .as_mut()
            .map_or(Vec::new(), |c| c.requests.drain(..).collect())
    }

    /// Cluster counters (`None` in the embedded mode).
    pub fn cluster_stats(&self) -> Option<&ClusterStats> {
        self.cluster.as_ref().map(|c| &c.stats)
    }

    /// What the bus said. Ignored in the embedded mode.
    pub fn handle_bus(&mut self, reply: BusReply, now: Instant) {
        if self.cluster.is_none() {
            return;
        }
        let bound = self.apply_bound();
        match reply {
            BusReply::Connected {
                epoch,
                head_offset,
                first_retained_offset,
                after_offset,
            } => self.on_connected(epoch, head_offset, first_retained_offset, after_offset, now),
            BusReply::Disconnected { reason } => {
                if let Some(cl) = self.cluster.as_mut() {
                    if cl.connected {
                        cl.stats.reconnects += 1;
                    }
                    cl.connected = false;
                    cl.reset_apply_watch();
                }
                log::warn!("bus down: {reason}; streams stay open, publishes get 503");
            }
            BusReply::EpochChanged { previous, epoch } => {
                log::warn!("the shared log was lost (epoch {previous} → {epoch}): restart");
                self.change_epoch(epoch, now);
            }
            BusReply::Events {
                events,
                head_offset,
            } => {
                for event in events {
                    self.on_bus_event(event, now);
                    // A stream waiting for its resume point goes live once the point is
                    // applied, before what follows it could leave the cache.
                    if self
                        .cluster
                        .as_ref()
                        .is_some_and(|cl| !cl.awaiting.is_empty())
                    {
                        self.release_awaiting(None);
                    }
                }
                if let Some(cl) = self.cluster.as_mut() {
                    cl.learn_head(head_offset, now, bound);
                    cl.tail_heard(now, bound);
                }
                self.release_awaiting(Some(head_offset));
            }
            BusReply::Foreign { entries } => {
                if let Some(cl) = self.cluster.as_mut() {
                    cl.stats.foreign_entries += entries;
                }
            }
            BusReply::Published { token, id } => self.on_published(token, Ok(id), now),
            BusReply::PublishFailed { token, reason } => self.on_published(token, Err(reason), now),
            BusReply::Range(range) => self.on_range(range, now),
            BusReply::RangeFailed { token, reason } => self.on_range_failed(token, &reason, now),
            BusReply::Head {
                token,
                epoch,
                head_offset,
            } => self.on_head(token, Ok((epoch, head_offset)), now),
            BusReply::HeadFailed { token, reason } => self.on_head(token, Err(reason), now),
        }
        self.after_bus_reply(now);
        self.debug_check();
    }
}

/// Publishing through the bus.
impl Core {
    /// Hands a validated publish to the bus; returns the token its answer will carry. The
    /// answer goes to the HTTP `client` (which waits in [`Core::await_publish`]); `None` is
    /// a stdin line. Refused at once (503) while the bus is down.
    pub(in crate::core) fn publish_to_bus(
        &mut self,
        client: Option<ClientId>,
        event: Publish,
        now: Instant,
    ) -> Result<u64, RequestError> {
        let Some(cl) = self.cluster.as_mut() else {
            return Err(RequestError::ShuttingDown);
        };
        if !cl.connected {
            cl.stats.publishes_failed += 1;
            return Err(RequestError::BusUnavailable {
                retry_after_secs: PUBLISH_RETRY_AFTER_SECS,
            });
        }
        cl.next_token += 1;
        let token = cl.next_token;
        cl.publishes.insert(
            token,
            Waiter {
                client,
                custom_id: event.custom_id.clone(),
                since: now,
            },
        );
        cl.requests
            .push_back(BusRequest::Publish(Publish { token, ..event }));
        Ok(token)
    }

    /// Gives the client's publish `token` (handed to a log that answers later) its slot in
    /// [`Client::publishes`], then reads on (pipelined requests, up to
    /// [`MAX_PUBLISHES_IN_FLIGHT`]) unless the cap is reached or the request said close.
    pub(in crate::core) fn await_publish(
        &mut self,
        id: ClientId,
        token: u64,
        connection: Connection,
        now: Instant,
    ) {
        let Some(c) = self.client_mut(id) else { return };
        let cors = c.http.cors().map(Box::from);
        c.http.publishes_mut().push_back(PublishSlot {
            token,
            connection,
            answer: None,
            cors,
        });
        if reads_on(c) {
            // The read step goes on with what followed the publish.
            begin_reading(self, id, now);
        } else {
            c.http.wait_for_publishes(None);
        }
    }

    /// Answers a publish refused at once because the log is unreachable, in its place
    /// behind the client's publishes still in flight, and keeps the connection as the
    /// request asked (unlike other errors, which close).
    pub(in crate::core) fn refuse_publish_kept(
        &mut self,
        id: ClientId,
        connection: Connection,
        now: Instant,
    ) {
        let (status, bytes) = unavailable_answer(connection);
        let bytes = self.with_client_cors(id, bytes);
        let Some(c) = self.client_mut(id) else { return };
        if c.http.publishes().is_empty() {
            answer(self, id, status, bytes, AfterAnswer::after(connection), now);
            return;
        }
        c.http.publishes_mut().push_back(PublishSlot {
            token: 0,
            connection,
            answer: Some((status, bytes)),
            cors: None,
        });
        if reads_on(c) {
            begin_reading(self, id, now);
        } else {
            c.http.wait_for_publishes(None);
        }
    }

    /// Queues a final answer (an error; the connection closes after it) behind the
    /// client's publishes waiting for the bus. False when none wait: answer now.
    pub(in crate::core) fn answer_after_publishes(
        &mut self,
        id: ClientId,
        status: u16,
        bytes: Vec<u8>,
        now: Instant,
    ) -> bool {
        let Some(c) = self.client_mut(id) else {
            return false;
        };
        if c.http.publishes().is_empty() || c.is_streaming() {
            return false;
        }
        c.http.publishes_mut().push_back(PublishSlot {
            token: 0,
            connection: Connection::Close,
            answer: Some((status, bytes)),
            cors: None,
        });
        c.http.wait_for_publishes(None);
        self.flush_publishes(id, now);
        true
    }

    fn on_published(
        &mut self,
        token: u64,
        outcome: Result<ClusterId, PublishFailure>,
        now: Instant,
    ) {
        let bound = self.apply_bound();
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let Some(w) = cl.publishes.remove(&token) else {
            return;
        };
        match &outcome {
            Ok(id) => {
                // This node answered the id: it exists in the shared log, whatever the tail
                // has shown so far (a resume from it waits for it, never `unknown-id`).
                if cl.epoch.as_deref() == Some(id.epoch.as_str()) {
                    cl.learn_head(id.offset, now, bound);
                }
                cl.refused_in_a_row = 0;
                cl.stats.publishes_accepted += 1;
                cl.stats.publish_seconds_sum +=
                    now.saturating_duration_since(w.since).as_secs_f64();
                self.metrics.events_published += 1;
            }
            Err(why) => {
                if matches!(why, PublishFailure::Rejected(_)) {
                    cl.refused_in_a_row = cl.refused_in_a_row.saturating_add(1);
                }
                cl.stats.publishes_failed += 1;
                log::info!("publish not taken by the bus: {why}");
            }
        }
        let Some(id) = w.client else {
            return;
        };
        let Some(c) = self.client_mut(id) else { return };
        let Some((connection, cors)) = c
            .http
            .publishes_mut()
            .iter_mut()
            .find(|s| s.token == token)
            .map(|s| (s.connection, s.cors.take()))
        else {
            return;
        };
        let plain = "text/plain; charset=utf-8";
        let (status, bytes) = match outcome {
            Ok(cluster_id) => {
                let body = format!("{}\n", w.custom_id.unwrap_or(cluster_id.to_string()));
                let r = response::answer(200, plain, &[], body.as_bytes(), connection, false);
                (200, r)
            }
            Err(_) => unavailable_answer(connection),
        };
        let bytes = match cors {
            Some(lines) => access::with_cors(&bytes, &lines).unwrap_or(bytes),
            None => bytes,
        };
        let Some(c) = self.client_mut(id) else { return };
        if let Some(slot) = c.http.publishes_mut().iter_mut().find(|s| s.token == token) {
            slot.answer = Some((status, bytes));
        }
        self.flush_publishes(id, now);
    }

    /// Writes out the answers at the front of the client's publishes, in request order;
    /// then closes after one that said close, or reads on when the queue has room again.
    fn flush_publishes(&mut self, id: ClientId, now: Instant) {
        let shutting_down = self.shutdown_deadline.is_some();
        let Some(c) = self.client_mut(id) else { return };
        let mut out: Vec<u8> = Vec::new();
        let mut statuses: Vec<u16> = Vec::new();
        let mut close = false;
        while c
            .http
            .publishes()
            .front()
            .is_some_and(|s| s.answer.is_some())
        {
            let Some(slot) = c.http.publishes_mut().pop_front() else {
                break;
            };
            let Some((status, bytes)) = slot.answer else {
                break;
            };
            out.extend_from_slice(&bytes);
            statuses.push(status);
            if !slot.connection.keeps_alive() || (shutting_down && c.http.publishes().is_empty()) {
                close = true;
                break;
            }
        }
        if statuses.is_empty() {
            return;
        }
        c.queue_after_pending(out);
        if close {
            c.http.publishes_mut().clear();
            c.http.close_after_sent(CloseReason::Normal, now);
            self.timers
                .arm(id, TimerKind::Linger, now + self.cfg.linger);
        } else if reads_on(c)
            && let Some(early) = c.http.take_held_input()
        {
            read_next(self, id, (None, early), now);
        }
        for status in statuses {
            self.metrics.count_response(status);
        }
        self.schedule(id);
    }
}

/// The answer to a publish the log did not take: 503 + `Retry-After`, the connection kept
/// as the request asked, so a keep-alive publisher retries on the same connection.
fn unavailable_answer(connection: Connection) -> (u16, Vec<u8>) {
    let e = RequestError::BusUnavailable {
        retry_after_secs: PUBLISH_RETRY_AFTER_SECS,
    };
    let headers = e.headers();
    let headers: Vec<&str> = headers.as_deref().into_iter().collect();
    let body = format!("{} {}\n", e.status(), e.message());
    let plain = "text/plain; charset=utf-8";
    let bytes = response::answer(
        e.status(),
        plain,
        &headers,
        body.as_bytes(),
        connection,
        false,
    );
    (e.status(), bytes)
}

/// True when a connection with publishes in flight may parse more requests: below the cap,
/// and none of them said close.
fn reads_on(c: &Client) -> bool {
    let publishes = c.http.publishes();
    publishes.len() < MAX_PUBLISHES_IN_FLIGHT
        && publishes.iter().all(|s| s.connection.keeps_alive())
}

/// The tail: greetings, events, epochs.
impl Core {
    fn on_connected(
        &mut self,
        epoch: String,
        head_offset: u64,
        first_retained: Option<u64>,
        after_offset: u64,
        now: Instant,
    ) {
        let known = self.cluster.as_ref().and_then(|c| c.epoch.clone());
        if known.as_ref().is_some_and(|k| *k != epoch) {
            // A greeting in another epoch without an EpochChanged first: treat it as one.
            self.change_epoch(epoch.clone(), now);
        }
        let base = self.cluster.as_ref().map_or(0, |c| c.gseq_base);
        let bound = self.apply_bound();
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        log::info!("bus connected: epoch {epoch}, head {head_offset}");
        cl.connected = true;
        cl.epoch = Some(epoch);
        cl.first_retained = first_retained;
        if !cl.positioned {
            // First start or a new epoch: the cache starts right after `after_offset`.
            cl.positioned = true;
            cl.last_offset = after_offset;
            cl.complete_from = base + after_offset + 1;
            self.log.claim_gseq(base + after_offset);
        }
        if let Some(cl) = self.cluster.as_mut() {
            cl.greeted(head_offset, now, bound);
            cl.tail_heard(now, bound);
        }
    }

    fn on_bus_event(&mut self, event: BusEvent, now: Instant) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        if !cl.positioned {
            return;
        }
        cl.stats.events_received += 1;
        match classify(cl.last_offset, event.offset) {
            Delivery::Duplicate => {
                cl.stats.duplicates_dropped += 1;
                return;
            }
            Delivery::Next => {}
            Delivery::Gap { missing_to, .. } => {
                cl.stats.gaps += 1;
                cl.complete_from = cl.gseq_base + missing_to + 1;
                let epoch = cl.epoch.clone().unwrap_or_default();
                log::warn!("events up to {missing_to} were trimmed before this node read them");
                let mut reset = Vec::new();
                let gap_id = format!("{epoch}-{missing_to}");
                frame::encode_event(&mut reset, Some(&gap_id), Some("reset"), TOO_OLD);
                self.interject_all(&reset, now);
            }
        }
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        cl.last_offset = event.offset;
        cl.head_offset = cl.head_offset.max(event.offset);
        if let Err(why) = admissible(&event) {
            cl.stats.entries_refused += 1;
            log::warn!(
                "shared log entry {} refused ({why:?}): not written by a publish; skipped",
                event.offset
            );
            return;
        }
        let gseq = cl.gseq_base + event.offset;
        self.log.claim_gseq(gseq);
        self.observe_bus_apply(event.accepted_ms, now);
        let Some(t) = self.log.topic_for(&event.topic) else {
            // Every topic slot has subscribers and none of them wants this one: nobody here
            // can receive it. A later subscriber's resume then finds the topic incomplete.
            if let Some(cl) = self.cluster.as_mut() {
                cl.complete_from = gseq + 1;
            }
            return;
        };
        let frame = encode_bus_event(&event);
        self.append(now, t, gseq, frame.into(), event.custom_id.as_deref());
    }

    /// The shared log was lost: every stream gets `reset` `restart`, the cache is emptied,
    /// and numbering continues above every sequence number used so far.
    fn change_epoch(&mut self, epoch: String, now: Instant) {
        let mut reset = Vec::new();
        let restart_id = format!("{epoch}-0");
        frame::encode_event(&mut reset, Some(&restart_id), Some("reset"), RESTART);
        self.interject_all(&reset, now);
        self.log.clear_all_history();
        let base = self.log.last_gseq();
        if let Some(cl) = self.cluster.as_mut() {
            cl.stats.epoch_changes += 1;
            cl.epoch = Some(epoch);
            cl.positioned = false;
            cl.last_offset = 0;
            cl.head_offset = 0;
            cl.reset_apply_watch();
            cl.gseq_base = base;
            cl.complete_from = base + 1;
            cl.ranges.forget_pages();
        }
    }

    /// Puts `frame` into every stream now, after what each client has queued (its backlog is
    /// copied out of the log first, so nothing it was owed is lost). A client whose resume
    /// is being read from Redis is told to come back instead.
    fn interject_all(&mut self, frame: &[u8], now: Instant) {
        let ids: Vec<ClientId> = self
            .all_ids()
            .into_iter()
            .filter(|&id| self.is_streaming(id))
            .collect();
        for id in ids {
            if self.client(id).is_some_and(|c| c.is_held()) {
                self.end_stream_with_retry(id, now);
                continue;
            }
            let Some(c) = self.client(id) else { continue };
            let mut bytes = c.unsent();
            for (_, e) in self.log.pending_frames(c.cursors()) {
                bytes.extend_from_slice(&e.frame);
            }
            bytes.extend_from_slice(frame);
            let ends: Vec<u64> = c
                .cursors()
                .iter()
                .map(|cur| self.log.topic(cur.topic).end_seq())
                .collect();
            // Everything it had pending is copied into `bytes`: no event waits for it.
            self.release_pending(id);
            if let Some(c) = self.client_mut(id) {
                for (cur, end) in c.cursors_mut().iter_mut().zip(ends) {
                    cur.next = end;
                }
                c.set_pending(Bytes::Owned(bytes.into()));
            }
            self.schedule(id);
        }
    }

    /// Ends a stream with a jittered `retry:` (2–7 s) after what it has queued: its browser
    /// comes back later with the same `Last-Event-ID` and loses nothing.
    pub(in crate::core) fn end_stream_with_retry(&mut self, id: ClientId, now: Instant) {
        if !self.is_streaming(id) {
            return;
        }
        let delay = self.jitter(Duration::from_secs(2), Duration::from_secs(5));
        let Some(c) = self.client(id) else { return };
        let mut bytes = c.unsent();
        frame::encode_retry(&mut bytes, delay.as_millis() as u64);
        // Its resume is abandoned: no next page of it is read (`leave_stream`).
        self.finish_stream(id, bytes, CloseReason::Normal, now);
    }
}

const TOO_OLD: &str = "{\"reason\":\"too-old\"}";
const RESTART: &str = "{\"reason\":\"restart\"}";
const UNKNOWN_ID: &str = "{\"reason\":\"unknown-id\"}";

/// Whether an entry of the shared log may be sent: whoever wrote it (another deployment
/// sharing the prefix, an operator, a buggy writer), it must be what a publish request could
/// have made, or its fields would forge others (`event: x\ndata: …`, an id with a CR).
pub(super) fn admissible(e: &BusEvent) -> Result<(), RequestError> {
    if !valid_topic_name(&e.topic) {
        return Err(RequestError::InvalidTopic);
    }
    check_fields(e.event.as_deref(), e.custom_id.as_deref())
}

/// The SSE frame of an event of the shared log (its id is the cluster id, or the
/// publisher's own).
fn encode_bus_event(e: &BusEvent) -> Vec<u8> {
    let id = e.frame_id();
    let mut buf = Vec::with_capacity(e.data.len() + 32 + id.len());
    frame::encode_event(&mut buf, Some(&id), e.event.as_deref(), &e.data);
    buf
}
