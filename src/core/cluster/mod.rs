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

mod apply;
mod health;
mod publish;
mod ranges;
mod resume;

use apply::{admissible, encode_bus_event};

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::Core;
use super::client::ClientId;
use crate::bus::types::{BusReply, BusRequest};

/// Log entries asked for per range fetch (the bus caps it at its batch size too).
const FETCH_LIMIT: usize = 512;
/// Publishes one connection may have waiting for the bus; past it, its input waits
/// (backpressure through [`Core::input_room`]).
pub(in crate::core) const MAX_PUBLISHES_IN_FLIGHT: usize = 64;
/// `Retry-After` of a publish the bus did not take, in seconds.
const PUBLISH_RETRY_AFTER_SECS: u64 = 1;

/// The `reset` reasons' JSON data.
pub(super) const TOO_OLD: &str = "{\"reason\":\"too-old\"}";
pub(super) const RESTART: &str = "{\"reason\":\"restart\"}";
pub(super) const UNKNOWN_ID: &str = "{\"reason\":\"unknown-id\"}";

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
