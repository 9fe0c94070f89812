//! The cluster bus: one ordered, resumable event log shared by every node, kept in a Redis
//! stream (cluster mode, `--redis`). Without `--redis` none of this runs.
//!
//! # Shape
//! - [`types`] (pure): the messages between the core and the bus ([`BusRequest`] in,
//!   [`BusReply`] out), cluster ids `<epoch>-<offset>`, and the rules the core applies to
//!   them: [`classify`] (duplicate / next / gap by offset) and [`resume`].
//! - [`memory`] (pure): the same log and tail semantics in memory, with faults on demand,
//!   so the simulator (and the core's tests) drive the bus as a faulty component.
//! - [`BusHandle`]: two helper threads using the `redis` crate's **blocking** client, which
//!   hand their replies to the reactor through a bounded channel and a wake-up (a
//!   `mio::Waker` in the driver). The reactor never blocks on Redis: [`BusHandle::submit`]
//!   never waits (a full queue is an immediate failure), [`BusHandle::try_recv`] never waits.
//!   - the **tail** thread pipelines `HMGET meta e o` + `XREAD COUNT batch BLOCK block
//!     STREAMS log <cursor>-0`: always from the last offset it handed over, never `$`. On
//!     (re)connect it runs the hello script (epoch, head, first retained) and reports
//!     [`BusReply::Connected`], plus [`BusReply::EpochChanged`] if the epoch is not the one
//!     it followed. Reconnects with jittered exponential backoff (`backoff.rs`);
//!     [`BusReply::Disconnected`] once per outage.
//!   - the **command** thread takes publishes in batches and sends them as one pipeline of
//!     `EVALSHA` (the script is loaded once per connection; `NOSCRIPT` reloads and resends
//!     only the affected ones), and serves range fetches (`XRANGE`, bounded by a count).
//!     It also answers head probes (`HMGET meta e o`), which the core sends while its tail is
//!     quiet to see whether the log moved without it (`core/cluster/health.rs`).
//!     While Redis is down it answers every request at once with a failure and tries to
//!     reconnect no more often than the backoff allows: a publish fails fast, never hangs.
//!   - `handle.rs` starts the two threads (`tail.rs`, `command.rs`); they share only
//!     `outbox.rs` (the reply channel, the tail's position and its fingerprint, which the
//!     command thread reads back on every reconnect and range read: `fingerprint.rs`), so
//!     neither knows the other or the handle.
//!
//! Why helper threads rather than RESP on the reactor's own sockets: the `redis` crate is
//! the well-kept client (connection setup, auth, db selection, unix sockets, scripts,
//! pipelines) and its blocking API needs no async runtime; the core stays sans-IO either
//! way, since it only sees [`BusRequest`]/[`BusReply`] values, so the simulator drives the
//! bus as a faulty component by producing those values itself. The cost is two threads
//! and a channel hop per batch, off the reactor.
//!
//! # The log in Redis
//! Keys `{<prefix>}:log` (the stream) and `{<prefix>}:meta` (a hash: `e` the epoch, `o` the
//! last offset), one hash tag so one script may touch both. A publish runs a Lua script (in
//! the manner of Centrifugo's): create the epoch with a random value if the hash is missing
//! (which is how a node learns that Redis lost its data; a new epoch also deletes any
//! stream left over), take `o + 1` as the offset, `XADD log MAXLEN ~ <max_len> <offset>-0
//! e <epoch> t <topic> [v <event>] [i <custom id>] d <data>`, then store `o`. The counter
//! is stored only after `XADD` succeeded, so offsets never have holes; the answer is
//! `{epoch, offset}`, the id `<epoch>-<offset>`. One stream for all topics: one order.
//! Entries carry their epoch, so a tail notices a log rebuilt while it was connected (a
//! `FLUSHALL`): an entry of another epoch, or a meta hash naming another epoch, makes it
//! greet again. Deploy Redis with `appendonly yes` (and `maxmemory-policy noeviction`):
//! without persistence a restart is a new epoch, and asynchronous replication can lose the
//! tail on failover (also seen as a new epoch, or as a gap).
//!
//! # How the core and driver use the bus (the wiring plan)
//! **Driver.** With `--redis`, it creates a `mio::Waker` on a dedicated token and starts
//! [`BusHandle::start`]`(config, None, notify)` with `notify` waking it. On that token, it
//! drains [`BusHandle::try_recv`] into the core (`handle_bus(reply, now)`), bounded per turn
//! like any other work. Each core output `BusRequest` goes to [`BusHandle::submit`]; an
//! `Err(reply)` is fed straight back into the core. At shutdown: [`BusHandle::shutdown`].
//!
//! **Core inputs and outputs.**
//! - Output `Publish { token, .. }` for every HTTP or `--stdin` publish in cluster mode; the
//!   core holds the HTTP request until `Published { token, id }` (answer `200` with `id`) or
//!   `PublishFailed { token, .. }` (answer `503` + `Retry-After`). The event is **not**
//!   appended locally on `Published`: it arrives, like everyone else's, through `Events`.
//!   No node ever hands out an id that is not in the log.
//! - Input `Events { events, head_offset }`: for each event, [`classify`] its offset against
//!   the core's `last_offset`: `Duplicate` is dropped; `Next` is encoded once (the frame's
//!   `id:` is [`BusEvent::frame_id`]), appended to its topic's local log with its offset,
//!   and fanned out; `Gap { missing_from, missing_to }` first marks the range as lost: the
//!   missing events' topics are unknown, so every streaming client is told `reset`
//!   `too-old` with id `<epoch>-<missing_to>` (its stream cannot be exact any more), every
//!   topic's `complete_from` becomes `missing_to + 1`, then the event is applied. `last_offset` becomes the event's offset.
//!   `head_offset - last_offset` is the lag gauge; the count of events a counter.
//! - Input `Connected { epoch, head_offset, first_retained_offset, after_offset }`: bus-up
//!   gauge = 1, `/health` healthy again, remember `epoch`, `head_offset` and
//!   `first_retained_offset` (for [`resume`]). A node that has seen no event of this epoch
//!   yet (first start, or right after `EpochChanged`) sets `last_offset = after_offset` and
//!   every topic's `complete_from = after_offset + 1`; otherwise nothing changes (the tail
//!   continues from its own cursor, which equals the core's `last_offset`).
//! - Input `Disconnected`: bus-up gauge = 0, reconnects counter + 1, `/health` reports the
//!   bus down (a distinct body/status, so a load balancer can act). Streams stay open and
//!   keep-alives continue; new subscribers are served from the local cache.
//! - Input `EpochChanged { previous, epoch }`: the log was lost. Every streaming client gets
//!   `reset` `restart` with id `<epoch>-0`, the local logs are emptied (they hold the old
//!   epoch), `last_offset = 0`; a `Connected` with `after_offset` 0 follows, then every
//!   retained event of the new epoch through `Events`.
//! - Output `FetchRange { token, after_offset, through_offset, topics, limit, max_bytes }`
//!   and input
//!   `Range` / `RangeFailed`: see resume below.
//!
//! **Local log = a cache of the shared log.** Each topic's log keeps its newest events
//! (`--history`, `--history-bytes`) with their offsets, and `complete_from`: the smallest
//! offset from which it holds *every* event of that topic (the offset after the last
//! eviction, or the offset the tail started at after a warm start or an epoch change).
//! Ticks stay local and id-less, never in Redis.
//!
//! **`Last-Event-ID` (or `?lastEventId=`).** A cached custom id first (it may have the form
//! of a cluster id); else parse with [`ClusterId::parse`] (`unknown-id` if it is not one).
//! Then [`resume`]`(id, epoch, first_retained, head)` with the core's view:
//! - `Restart`: `reset` `restart` (id `<epoch>-0`), then every cached event of the topics
//!   when the cache reaches back to the epoch's start; otherwise a fetch from offset 0,
//!   which first writes what the cache holds (after its newest hole) that Redis trimmed.
//! - `Unknown` (offset beyond the head the node knows): `reset` `unknown-id`, live events.
//! - `TooOld`: `reset` `too-old` (id `<epoch>-<last_offset>`), live events.
//! - `After(n)`: if `n + 1 >= complete_from` of every topic of the client, a cursor placed in
//!   the local logs, as today. Otherwise the client waits (streaming head sent, keep-alives
//!   running, live events buffered by its cursor in the local logs) while the core sends
//!   `FetchRange { after_offset: n, through_offset: Some(min complete_from - 1), topics,
//!   limit }`; on `Range`, if [`RangeReply::lost_events_after`]`(n)` or the reply's epoch
//!   differs: the `reset` as above; else its events are written to that client (encoded
//!   once and shared by every held client whose position falls in the page, a page bounded
//!   by `limit` entries and `max_bytes` of data), and if not `complete`, another fetch
//!   continues from `scanned_through` once the client has written the page (through the
//!   newest offset applied, should the cache move past its cursors meanwhile); then the
//!   client joins its cursors in the local logs. `RangeFailed`
//!   (Redis down): the stream gets a jittered `retry:` (2–7 s, as for over-capacity) and is
//!   closed before any event, so the browser comes back later with the same
//!   `Last-Event-ID` and loses nothing. A range
//!   fetch never blocks the reactor; a resuming client waits on at most one, which it may
//!   share with others.
//!
//! **Sizes.** `max_len` (a `--redis-max-len` flag, say 100,000) must exceed what a node's
//! cache holds, or resumes older than the cache find the log trimmed too; `warm_events`
//! should match the cache (`--history` × topics in use, bounded by `max_len`).
//!
//! **Outages, case by case.**
//! - Redis down or unreachable: tail reports `Disconnected` and retries with backoff;
//!   publishes fail at once (`503`); streams stay open; resumes within the cache work.
//! - Connections killed (`CLIENT KILL`, network blip): the tail reconnects and reads from
//!   its cursor: nothing lost, nothing twice (the core's [`classify`] drops any redelivery).
//! - Redis restarted with `appendonly yes`: same epoch, same offsets: like a blip.
//! - Redis restarted without persistence, flushed, or failed over to a replica that lost
//!   the log: a new epoch: `EpochChanged`, clients get `reset` `restart`.
//! - Redis back with an *older* copy of the same epoch (`appendfsync everysec` and a host
//!   crash, a restored backup): its head is below offsets already delivered, and new
//!   publishes would reuse those ids. The hello script, given the position the node's
//!   tail reached, starts a new epoch when it sees this (`EpochChanged`, `reset`
//!   `restart`); it runs when the tail greets (and the tail greets again when the meta hash
//!   shows a head below its cursor) and when the command thread (re)connects, before its
//!   first publish. A node that never saw the lost offsets cannot tell: if it publishes
//!   first, those ids are reused until another node's tail notices. Deploy with
//!   `appendfsync always` where that matters; a restart of the Redis *process* with
//!   `appendonly yes` loses nothing.
//! - A Sentinel failover (`redis+sentinel://`, see `endpoint.rs`): an outage while no Sentinel
//!   names a reachable master, then both threads reconnect to the promoted one. If it missed
//!   the tail (asynchronous replication, `--redis-wait 0`), a tail that delivered the lost
//!   offsets sees its head below the cursor, or, once another node published there, the entry
//!   at its last delivered offset with other content: either starts a new epoch. With
//!   `--redis-wait N` each publish pipeline ends with `WAIT`, and a batch fewer than N replicas
//!   confirmed is answered [`PublishFailure::Unavailable`] (the events stay in the log).
//! - The stream trimmed past the cursor during an outage (`MAXLEN ~` while this node was
//!   away): the first event after reconnecting has an offset beyond `last_offset + 1`:
//!   `Gap`, clients get `reset` `too-old`.
//! - A publish whose connection broke after sending: `PublishFailed` with
//!   [`PublishFailure::Unknown`] (`503`); it may still be in the log and then reaches every
//!   node normally (at-least-once for a publisher that retries, as with any HTTP API).
//! - A node restarts: it warms its cache from the newest [`BusConfig::warm_events`] events
//!   and follows from there; its clients resume with their ids on any node.

mod backoff;
mod command;
pub mod config;
mod endpoint;
pub mod fingerprint;
mod handle;
pub mod local;
pub mod memory;
mod outbox;
mod range;
mod redis;
mod tail;
pub mod types;

pub use config::{BusConfig, BusConfigError};
pub use handle::BusHandle;
pub use outbox::Notify;
pub use types::{
    BusEvent, BusReply, BusRequest, ClusterId, Delivery, FetchRange, Publish, PublishFailure,
    RangeReply, Resume, classify, resume,
};
