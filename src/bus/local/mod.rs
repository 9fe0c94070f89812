//! The durable local log (`--data-dir`): the shared log kept in an SQLite database in WAL
//! mode on local disk, shared by every process on the host that opens the same directory
//! (`--workers`, or servers started by hand). It is the Redis log's sibling behind the same
//! [`super::BusRequest`]/[`super::BusReply`] messages: the core cannot tell them apart.
//!
//! # Shape
//! - `store.rs`: the database (schema, ownership check, epoch, offsets, trimming);
//!   `error.rs`: its failures, classified for the answer a publish gets.
//! - `tail.rs`: a thread that follows the log from its cursor, woken by `watch.rs`
//!   (inotify on the directory) when any process commits; idle, it sleeps in `poll(2)`.
//! - `command.rs`: a thread that appends each batch of publishes in one transaction and
//!   answers them once it committed, and serves range reads.
//!
//! # Semantics (the same as the Redis log's)
//! - Ids are `<epoch>-<offset>`. The epoch is made when the database file is created and
//!   is the log's identity: a new or replaced file is a new epoch (clients get `reset`
//!   `restart`); restarting a server on the same file keeps it, so resumes are exact.
//! - Offsets count from 1 without holes across all topics; the counter and the events it
//!   numbers are written in one transaction, and several processes append under SQLite's
//!   write lock, so every process reads one order.
//! - The log keeps the newest `max_len` events exactly (trimmed in the appending
//!   transaction).
//! - A file that is not ours, of another format, or corrupt is refused with a message (exit
//!   2 at start, `503` at run time); it is never written to or replaced.

mod command;
mod error;
mod store;
mod tail;
mod watch;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use super::config::{BusConfig, LocalStore};
use super::handle::ThreadBody;
use super::outbox::{Outbox, Seen};
use super::types::{BusRequest, ClusterId, new_epoch};
pub use error::{StoreError, StoreErrorKind};

/// Opens (creating it when missing) and verifies the log in `local.dir`, as a server does
/// before it serves anyone: the error says what is wrong with which file.
pub fn check(local: &LocalStore) -> Result<(), StoreError> {
    let epoch = new_epoch(super::backoff::Random::new().next_u64());
    let store = store::Store::open(&local.dir, local.durability, Duration::from_secs(5), &epoch)?;
    store.verify()
}

/// The bodies of the two helper threads for a local log, named; the command thread serves
/// `requests`.
pub(super) fn threads(
    config: BusConfig,
    local: LocalStore,
    start: Option<ClusterId>,
    requests: Receiver<BusRequest>,
    outbox: Outbox,
    stop: Arc<AtomicBool>,
) -> Vec<(&'static str, ThreadBody)> {
    let seen = Seen::default();
    let tail = tail::LocalTail::new(
        config.clone(),
        local.clone(),
        start,
        outbox.clone(),
        stop,
        seen.clone(),
    );
    let commands = command::LocalCommands::new(config, local, outbox, seen);
    vec![
        ("log-tail", Box::new(move || tail.run())),
        ("log-commands", Box::new(move || commands.run(requests))),
    ]
}
