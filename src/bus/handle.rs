//! [`BusHandle`]: the reactor's side of the bus. Starts the two helper threads, takes
//! requests without ever blocking, and hands back their replies.

use super::command::Commands;
use super::config::{BusConfig, BusConfigError, LogStore, RedisStore};
use super::endpoint::Endpoint;
use super::outbox::{Notify, Outbox, Seen, SeenDelivered};
use super::tail::Tail;
use super::types::{BusReply, BusRequest, ClusterId, PublishFailure};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

/// The running bus: a tail thread following the log and a command thread for publishes
/// and range fetches, with the `redis` crate's blocking client or SQLite. Dropping it stops
/// them (the tail within [`BusConfig::block`]); [`BusHandle::shutdown`] also waits.
pub struct BusHandle {
    requests: Option<SyncSender<BusRequest>>,
    replies: Receiver<BusReply>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl BusHandle {
    /// Validates `config` and starts the threads. The tail begins right after `start` when
    /// given (a node that knows where it was), else at the newest
    /// [`BusConfig::warm_events`]. Nothing here waits for Redis: an unreachable Redis shows
    /// up as [`BusReply::Disconnected`].
    pub fn start(
        config: BusConfig,
        start: Option<ClusterId>,
        notify: Notify,
    ) -> Result<BusHandle, BusConfigError> {
        config.validate()?;
        let (requests, requests_rx) = sync_channel(config.queue);
        let (replies_tx, replies) = sync_channel(config.queue);
        let stop = Arc::new(AtomicBool::new(false));
        let outbox = Outbox::new(replies_tx, notify, stop.clone());
        let bodies = match config.store.clone() {
            LogStore::Redis(keys) => redis_threads(config, keys, start, requests_rx, outbox)?,
            LogStore::Local(local) => {
                super::local::threads(config, local, start, requests_rx, outbox, stop.clone())
            }
        };
        let mut threads = Vec::with_capacity(bodies.len());
        for (name, body) in bodies {
            let thread = std::thread::Builder::new()
                .name(name.into())
                .spawn(body)
                .map_err(|e| BusConfigError(format!("cannot start the bus thread: {e}")))?;
            threads.push(thread);
        }
        Ok(BusHandle {
            requests: Some(requests),
            replies,
            stop,
            threads,
        })
    }

    /// Queues a request without blocking. `Err` carries the reply to apply at once instead:
    /// the queue is full (Redis slower than the publishers) or the bus stopped.
    pub fn submit(&self, request: BusRequest) -> Result<(), BusReply> {
        let stopped = || PublishFailure::Unavailable("bus stopped".into());
        let Some(requests) = &self.requests else {
            return Err(refusal(request, stopped()));
        };
        requests.try_send(request).map_err(|e| match e {
            TrySendError::Full(request) => refusal(request, PublishFailure::Overloaded),
            TrySendError::Disconnected(request) => refusal(request, stopped()),
        })
    }

    /// The next reply, if one is ready (the reactor drains this after a wake-up).
    pub fn try_recv(&self) -> Option<BusReply> {
        self.replies.try_recv().ok()
    }

    /// Waits up to `limit` for the next reply: for tests and tools, never the reactor.
    pub fn recv_timeout(&self, limit: Duration) -> Option<BusReply> {
        self.replies.recv_timeout(limit).ok()
    }

    /// Stops both threads and waits for them (at most about [`BusConfig::block`] plus
    /// [`BusConfig::io_timeout`]).
    pub fn shutdown(mut self) {
        self.stop_threads();
        // Replies still queued would keep a thread blocked in `send`: drain them.
        for thread in std::mem::take(&mut self.threads) {
            while !thread.is_finished() {
                while self.replies.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = thread.join();
        }
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.requests = None;
    }
}

impl Drop for BusHandle {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// The bodies of the Redis engine's two threads, named; the command thread serves
/// `requests`.
fn redis_threads(
    config: BusConfig,
    keys: RedisStore,
    start: Option<ClusterId>,
    requests: Receiver<BusRequest>,
    outbox: Outbox,
) -> Result<Vec<(&'static str, ThreadBody)>, BusConfigError> {
    let client = Endpoint::open(&keys.url)
        .map_err(|e| BusConfigError(format!("--redis {:?}: {e}", keys.url)))?;
    let seen = Seen::default();
    let delivered = SeenDelivered::default();
    let stop = outbox.stop_flag();
    let tail = Tail::new(
        config.clone(),
        keys.clone(),
        client.clone(),
        start,
        outbox.clone(),
        stop,
        (seen.clone(), delivered.clone()),
    );
    let commands = Commands::new(config, keys, client, outbox, (seen, delivered));
    Ok(vec![
        ("bus-tail", Box::new(move || tail.run())),
        ("bus-commands", Box::new(move || commands.run(requests))),
    ])
}

/// A helper thread's body.
pub(super) type ThreadBody = Box<dyn FnOnce() + Send>;

/// The immediate answer to a request the threads will never see.
fn refusal(request: BusRequest, why: PublishFailure) -> BusReply {
    match request {
        BusRequest::Publish(p) => BusReply::PublishFailed {
            token: p.token,
            reason: why,
        },
        BusRequest::FetchRange(r) => BusReply::RangeFailed {
            token: r.token,
            reason: why.to_string(),
        },
        BusRequest::ProbeHead { token } => BusReply::HeadFailed {
            token,
            reason: why.to_string(),
        },
    }
}
