//! The local log's database: one SQLite file in WAL mode, opened by every thread and process
//! that shares it. Owns the schema, the ownership check, the epoch and the offset counter;
//! callers see events, offsets and typed errors, never SQL.
//!
//! # Schema (format 1)
//! - `PRAGMA application_id` = [`APPLICATION_ID`], `PRAGMA user_version` = [`FORMAT`]: a
//!   database without them is not ours and is never written to.
//! - `log`: one row (`id` = 1) with the `epoch` (the log's identity, made when the file is
//!   created) and `head`, the last offset handed out. The counter is only ever raised inside
//!   the transaction that inserts the events it numbers, so offsets have no holes.
//! - `events`: `offset INTEGER PRIMARY KEY` (the rowid: ordered, no separate index), the
//!   topic, the optional event name and publisher id, the data, and `accepted_ms` (the
//!   accepting node's wall clock at publish, unix ms; nullable, added to files made
//!   without it at open).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, Transaction, params};

use super::super::config::Durability;
use super::super::range::Scanned;
use super::super::types::{BusEvent, ClusterId, Publish, is_valid_epoch};
use super::error::{StoreError, StoreErrorKind, error, not_ours};

/// Adds the `accepted_ms` column to a format-1 log created without it (inside the caller's
/// write transaction, so processes starting together add it once). The column is nullable:
/// a build that does not know it still reads and writes the file, and its entries are
/// simply not measured.
fn add_accepted_ms(tx: &Transaction<'_>, path: &Path) -> Result<(), StoreError> {
    let has: i64 = tx
        .query_row(
            "SELECT count(*) FROM pragma_table_info('events') WHERE name = 'accepted_ms'",
            [],
            |row| row.get(0),
        )
        .map_err(|e| error(path, &e))?;
    if has == 0 {
        tx.execute_batch("ALTER TABLE events ADD COLUMN accepted_ms INTEGER")
            .map_err(|e| error(path, &e))?;
    }
    Ok(())
}

/// `PRAGMA application_id` of an sse-server log: "SSE1" in ASCII.
pub(super) const APPLICATION_ID: i32 = 0x5353_4531;
/// The schema version this build reads and writes.
pub(super) const FORMAT: i32 = 1;
/// The database's file name inside the data directory.
pub(super) const FILE_NAME: &str = "log.sqlite";

/// Which file an open [`Store`] has: a file replaced or deleted under the same name is
/// another log (another epoch), noticed by comparing these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileIdentity {
    dev: u64,
    ino: u64,
}

/// The identity of the file at `path` now, if there is one.
pub(super) fn identity_of(path: &Path) -> Option<FileIdentity> {
    std::fs::metadata(path).ok().map(|m| FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// What a tail needs when it (re)opens the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hello {
    pub epoch: String,
    pub head: u64,
    pub first_retained: Option<u64>,
}

/// One open connection to the log.
pub(super) struct Store {
    con: Connection,
    path: PathBuf,
    /// The database, its write-ahead log and its shared-memory index, as opened: SQLite
    /// shares one index per database file within a process, so a connection that outlived
    /// the deletion of any of the three would break every new one.
    identity: [Option<FileIdentity>; 3],
    epoch: String,
}

/// The three files of a database in WAL mode.
fn files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_owned(), with("-wal"), with("-shm")]
}

fn identities(path: &Path) -> [Option<FileIdentity>; 3] {
    files(path).map(|f| identity_of(&f))
}

/// Why no database may be opened now, judged from the three files' identities: none made
/// while a `-wal` or `-shm` is there without its database (the files are being removed one
/// by one, or were only partly removed), as a database made now would sit next to another
/// log's files.
fn leftovers(now: &[Option<FileIdentity>; 3]) -> Option<&'static str> {
    (now[0].is_none() && now[1..].iter().any(Option::is_some)).then_some(
        "the database file is missing but its -wal or -shm file remains (remove them too)",
    )
}

/// Why a connection must not be used, judged from the three files' identities just before
/// it was opened (`before`) and after its first transaction (`after`), or `None` when it has
/// the files now at the log's path.
///
/// SQLite opens the companions by name and shares one shared-memory index per database file
/// within a process: a connection that opened a `-wal` or `-shm` just before it was removed
/// keeps the deleted file while the identities read afterwards are of a newer one, so it
/// would look current for good, and every other connection of this process would read that
/// index against another write-ahead log (`disk I/O error`, a short read). Refused: the
/// [`leftovers`] case, and any of the three replaced during the open (its identity changed)
/// or missing after the first transaction (which leaves all three in place in WAL mode). A
/// file that appeared during the open was made by this open or another one, never a
/// leftover, and is accepted.
fn stale_files(
    before: &[Option<FileIdentity>; 3],
    after: &[Option<FileIdentity>; 3],
) -> Option<&'static str> {
    let replaced = before
        .iter()
        .zip(after)
        .any(|(b, a)| a.is_none() || (b.is_some() && b != a));
    leftovers(before).or_else(|| replaced.then_some(REPLACED))
}

const REPLACED: &str = "its files were replaced or removed while it was being opened";

/// How often [`Store::open`] tries again at once when the files changed during an attempt
/// (another process closing the log removes the companions; the next attempt finds them
/// settled).
const OPEN_ATTEMPTS: usize = 3;

impl Store {
    /// Opens (creating the directory and the database when missing) the log in `dir`, with
    /// the durability's `synchronous` setting and `busy` as the lock wait. A new database
    /// gets the epoch `new_epoch`. Refuses a file that is not an sse-server log of this
    /// format without writing to it.
    /// Never answers a connection that may hold another log's `-wal` or `-shm`
    /// (see [`stale_files`]): that is an [`StoreErrorKind::Io`] error.
    pub(super) fn open(
        dir: &Path,
        durability: Durability,
        busy: Duration,
        new_epoch: &str,
    ) -> Result<Store, StoreError> {
        for _ in 1..OPEN_ATTEMPTS {
            if let Some(store) = Store::open_once(dir, durability, busy, new_epoch)? {
                return Ok(store);
            }
        }
        Store::open_once(dir, durability, busy, new_epoch)?
            .ok_or_else(|| stale(&dir.join(FILE_NAME), REPLACED))
    }

    /// One attempt: `None` when the files were replaced or removed during it.
    fn open_once(
        dir: &Path,
        durability: Durability,
        busy: Duration,
        new_epoch: &str,
    ) -> Result<Option<Store>, StoreError> {
        let path = dir.join(FILE_NAME);
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Err(StoreError {
                kind: StoreErrorKind::Io,
                message: format!("--data-dir {}: {e}", dir.display()),
            });
        }
        let before = identities(&path);
        if let Some(why) = leftovers(&before) {
            return Err(stale(&path, why));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let con = Connection::open_with_flags(&path, flags).map_err(|e| error(&path, &e))?;
        con.busy_timeout(busy).map_err(|e| error(&path, &e))?;
        let mut store = Store {
            con,
            identity: [None; 3],
            path,
            epoch: String::new(),
        };
        store.check_ownership()?;
        store.pragmas(durability)?;
        store.epoch = store.create_or_read(new_epoch)?;
        // After the first transaction in WAL mode, all three files exist.
        store.identity = identities(&store.path);
        match stale_files(&before, &store.identity) {
            None => Ok(Some(store)),
            Some(REPLACED) => Ok(None),
            Some(why) => Err(stale(&store.path, why)),
        }
    }

    /// The epoch of the open file.
    pub(super) fn epoch(&self) -> &str {
        &self.epoch
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the files at the log's path are still the ones this connection has open.
    pub(super) fn is_current_file(&self) -> bool {
        identities(&self.path) == self.identity
    }

    /// Gives the log a new epoch when it holds fewer events than a process of this host
    /// already saw in it (`seen`, the epoch followed and the newest offset seen): an older
    /// copy put in place of the file (a restored backup, or a power loss with `os`
    /// durability), whose next offsets would repeat ids already delivered with other
    /// events. The events stay, with their offsets, under the new epoch. Decided in one
    /// write transaction, so two processes noticing together make one new epoch. Answers
    /// whether it renewed the epoch.
    pub(super) fn renew_if_behind(
        &mut self,
        seen: (&str, u64),
        new_epoch: &str,
    ) -> Result<bool, StoreError> {
        let path = self.path.clone();
        let tx = self
            .con
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| error(&path, &e))?;
        let (epoch, head) = epoch_and_head(&tx, &path)?;
        let behind = epoch == seen.0 && head < seen.1;
        if behind {
            tx.execute("UPDATE log SET epoch = ?1 WHERE id = 1", params![new_epoch])
                .map_err(|e| error(&path, &e))?;
        }
        tx.commit().map_err(|e| error(&path, &e))?;
        if behind {
            log::warn!(
                "local log: {} holds offsets up to {head}, below {} already seen in epoch {}: \
                 an older copy; it becomes epoch {new_epoch}",
                path.display(),
                seen.1,
                seen.0
            );
            self.epoch = new_epoch.to_owned();
        }
        Ok(behind)
    }

    /// Refuses a file that some other program made, before anything is written to it:
    /// our application id and format, or an empty database (a file just created).
    fn check_ownership(&self) -> Result<(), StoreError> {
        let read = |pragma: &str| -> Result<i32, StoreError> {
            self.con
                .query_row(&format!("PRAGMA {pragma}"), [], |row| row.get(0))
                .map_err(|e| error(&self.path, &e))
        };
        let (app, format) = (read("application_id")?, read("user_version")?);
        if app == APPLICATION_ID && format == FORMAT {
            return Ok(());
        }
        let objects: i64 = self
            .con
            .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
            .map_err(|e| error(&self.path, &e))?;
        if app == 0 && format == 0 && objects == 0 {
            return Ok(());
        }
        let why = if app == APPLICATION_ID {
            format!("it has format {format}, this build reads format {FORMAT}")
        } else {
            "it is an SQLite database of another program".to_owned()
        };
        Err(not_ours(&self.path, &why))
    }

    fn pragmas(&self, durability: Durability) -> Result<(), StoreError> {
        let mode: String = self
            .con
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| error(&self.path, &e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError {
                kind: StoreErrorKind::Io,
                message: format!(
                    "{}: cannot use write-ahead logging (journal mode {mode})",
                    self.path.display()
                ),
            });
        }
        let synchronous = match durability {
            Durability::Sync => "FULL",
            Durability::Batch => "NORMAL",
            Durability::Os => "OFF",
        };
        self.con
            .execute_batch(&format!(
                "PRAGMA synchronous = {synchronous}; PRAGMA journal_size_limit = 67108864;"
            ))
            .map_err(|e| error(&self.path, &e))
    }

    /// Creates the schema in an empty database (in one write transaction, so two processes
    /// starting together make one epoch), or reads the epoch of an existing log.
    fn create_or_read(&mut self, new_epoch: &str) -> Result<String, StoreError> {
        let path = self.path.clone();
        let tx = self
            .con
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| error(&path, &e))?;
        let app: i32 = tx
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .map_err(|e| error(&path, &e))?;
        if app != APPLICATION_ID {
            tx.execute_batch(&format!(
                "CREATE TABLE log (id INTEGER PRIMARY KEY CHECK (id = 1), epoch TEXT NOT NULL,
                     head INTEGER NOT NULL);
                 CREATE TABLE events (offset INTEGER PRIMARY KEY, topic TEXT NOT NULL,
                     event TEXT, custom_id TEXT, data TEXT NOT NULL, accepted_ms INTEGER);
                 PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = {FORMAT};"
            ))
            .map_err(|e| error(&path, &e))?;
            tx.execute(
                "INSERT INTO log (id, epoch, head) VALUES (1, ?1, 0)",
                params![new_epoch],
            )
            .map_err(|e| error(&path, &e))?;
        }
        add_accepted_ms(&tx, &path)?;
        let epoch: Option<String> = tx
            .query_row("SELECT epoch FROM log WHERE id = 1", [], |row| row.get(0))
            .optional()
            .map_err(|e| error(&path, &e))?;
        tx.commit().map_err(|e| error(&path, &e))?;
        match epoch {
            Some(epoch) if is_valid_epoch(&epoch) => Ok(epoch),
            _ => Err(not_ours(&path, "its epoch is missing or malformed")),
        }
    }

    /// Runs SQLite's `quick_check` over the whole file: what a start-up does once, so a
    /// corrupt log is refused before any client is served from it.
    pub(super) fn verify(&self) -> Result<(), StoreError> {
        let verdict: String = self
            .con
            .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
            .map_err(|e| error(&self.path, &e))?;
        if verdict == "ok" {
            Ok(())
        } else {
            Err(not_ours(&self.path, &format!("it is corrupt ({verdict})")))
        }
    }

    /// The epoch, head and first retained offset, read together.
    pub(super) fn hello(&mut self) -> Result<Hello, StoreError> {
        let path = self.path.clone();
        let tx = self.con.transaction().map_err(|e| error(&path, &e))?;
        let (epoch, head) = epoch_and_head(&tx, &path)?;
        let first: Option<i64> = tx
            .query_row("SELECT min(offset) FROM events", [], |row| row.get(0))
            .map_err(|e| error(&path, &e))?;
        tx.commit().map_err(|e| error(&path, &e))?;
        self.epoch.clone_from(&epoch);
        Ok(Hello {
            epoch,
            head,
            first_retained: first.map(to_u64),
        })
    }

    /// Appends `publishes` in one transaction, in order, and trims the log to `max_len`
    /// events; answers their ids once the transaction committed. All or none.
    pub(super) fn append(
        &mut self,
        publishes: &[Publish],
        max_len: u64,
    ) -> Result<Vec<ClusterId>, StoreError> {
        let path = self.path.clone();
        let tx = self
            .con
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| error(&path, &e))?;
        let (epoch, head) = epoch_and_head(&tx, &path)?;
        let mut offset = head;
        let mut ids = Vec::with_capacity(publishes.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (offset, topic, event, custom_id, data, accepted_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(|e| error(&path, &e))?;
            for p in publishes {
                offset += 1;
                insert
                    .execute(params![
                        to_i64(offset),
                        p.topic,
                        p.event,
                        p.custom_id,
                        p.data,
                        to_i64(p.accepted_ms)
                    ])
                    .map_err(|e| error(&path, &e))?;
                ids.push(ClusterId {
                    epoch: epoch.clone(),
                    offset,
                });
            }
        }
        tx.execute(
            "UPDATE log SET head = ?1 WHERE id = 1",
            params![to_i64(offset)],
        )
        .map_err(|e| error(&path, &e))?;
        tx.execute(
            "DELETE FROM events WHERE offset <= ?1",
            params![to_i64(offset.saturating_sub(max_len))],
        )
        .map_err(|e| error(&path, &e))?;
        tx.commit().map_err(|e| error(&path, &e))?;
        Ok(ids)
    }

    /// Up to `limit` log positions after `after` (through `through` when given), in order,
    /// with the head offset, read in one transaction ([`Store::epoch`] is then the epoch
    /// they were read in). A row that does not hold an event
    /// this log could have written (not text, a field that could not be sent) is a hole.
    pub(super) fn read_after(
        &mut self,
        after: u64,
        through: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Scanned>, u64), StoreError> {
        let path = self.path.clone();
        let tx = self.con.transaction().map_err(|e| error(&path, &e))?;
        let (epoch, head) = epoch_and_head(&tx, &path)?;
        let mut scanned = Vec::new();
        {
            let mut select = tx
                .prepare_cached(
                    "SELECT offset, topic, event, custom_id, data, accepted_ms FROM events
                     WHERE offset > ?1 AND offset <= ?2 ORDER BY offset LIMIT ?3",
                )
                .map_err(|e| error(&path, &e))?;
            let through = through.map_or(i64::MAX, to_i64);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut rows = select
                .query(params![to_i64(after), through, limit])
                .map_err(|e| error(&path, &e))?;
            while let Some(row) = rows.next().map_err(|e| error(&path, &e))? {
                let offset = to_u64(row.get::<_, i64>(0).map_err(|e| error(&path, &e))?);
                let event = (|| -> rusqlite::Result<BusEvent> {
                    Ok(BusEvent {
                        offset,
                        id: ClusterId {
                            epoch: epoch.clone(),
                            offset,
                        },
                        topic: row.get(1)?,
                        event: row.get(2)?,
                        custom_id: row.get(3)?,
                        data: row.get(4)?,
                        accepted_ms: row.get::<_, Option<i64>>(5)?.map(to_u64),
                    })
                })();
                scanned.push(match event {
                    Ok(event) => Scanned::Event(event),
                    Err(e) => {
                        log::warn!("local log: skipping unreadable entry {offset}: {e}");
                        Scanned::Hole(offset)
                    }
                });
            }
        }
        tx.commit().map_err(|e| error(&path, &e))?;
        // Another process may have given the log a new epoch (`renew_if_behind`).
        self.epoch = epoch;
        Ok((scanned, head))
    }

    /// The epoch and the last offset handed out (the `log` row), read together.
    pub(super) fn head(&mut self) -> Result<(String, u64), StoreError> {
        let path = self.path.clone();
        let tx = self.con.transaction().map_err(|e| error(&path, &e))?;
        let head = epoch_and_head(&tx, &path)?;
        tx.commit().map_err(|e| error(&path, &e))?;
        Ok(head)
    }

    /// The oldest offset still kept, if any.
    pub(super) fn first_retained(&self) -> Result<Option<u64>, StoreError> {
        let first: Option<i64> = self
            .con
            .query_row("SELECT min(offset) FROM events", [], |row| row.get(0))
            .map_err(|e| error(&self.path, &e))?;
        Ok(first.map(to_u64))
    }

    /// Copies the write-ahead log into the database file, syncing both (with
    /// `synchronous=NORMAL`, what makes the commits before it survive a power loss).
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        self.con
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| error(&self.path, &e))
    }

    /// Limits the database to `pages` pages: a full disk on demand, for tests.
    #[cfg(test)]
    pub(super) fn limit_pages(&self, pages: u32) {
        let _: i64 = self
            .con
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |row| {
                row.get(0)
            })
            .unwrap_or(0);
    }
}

/// The refusal of a connection that may hold another log's companion files: an I/O error,
/// so the caller opens again after its backoff.
fn stale(path: &Path, why: &str) -> StoreError {
    StoreError {
        kind: StoreErrorKind::Io,
        message: format!("{}: not opened: {why}", path.display()),
    }
}

/// The log row: its epoch and the last offset handed out, read in `tx`.
fn epoch_and_head(tx: &Transaction<'_>, path: &Path) -> Result<(String, u64), StoreError> {
    tx.query_row("SELECT epoch, head FROM log WHERE id = 1", [], |row| {
        Ok((row.get(0)?, row.get::<_, i64>(1)?))
    })
    .map(|(epoch, head)| (epoch, to_u64(head)))
    .map_err(|e| error(path, &e))
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
