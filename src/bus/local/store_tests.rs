//! Unit tests of the local log's database: numbering, reopening, epochs, trimming, refusals.

use super::*;

fn publish(data: &str) -> Publish {
    Publish {
        token: 0,
        topic: "news".into(),
        event: Some("note".into()),
        custom_id: None,
        data: data.into(),
        accepted_ms: 1_700_000_000_000,
    }
}

fn open(dir: &Path) -> Result<Store, StoreError> {
    Store::open(dir, Durability::Sync, Duration::from_secs(1), "ep0")
}

fn events(scanned: Vec<Scanned>) -> Vec<(u64, String)> {
    scanned
        .into_iter()
        .map(|s| match s {
            Scanned::Event(e) => (e.offset, e.data),
            Scanned::Hole(o) => (o, "<hole>".into()),
        })
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sse-store-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn appends_number_from_the_head_and_survive_reopening() {
    let dir = temp_dir("reopen");
    let mut store = open(&dir).unwrap();
    assert_eq!(store.epoch(), "ep0");
    let ids = store.append(&[publish("a"), publish("b")], 100).unwrap();
    assert_eq!(
        ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["ep0-1", "ep0-2"]
    );
    drop(store);
    let mut store = Store::open(&dir, Durability::Os, Duration::from_secs(1), "other").unwrap();
    assert_eq!(store.epoch(), "ep0", "an existing log keeps its epoch");
    let ids = store.append(&[publish("c")], 100).unwrap();
    assert_eq!(ids[0].offset, 3);
    let hello = store.hello().unwrap();
    assert_eq!(
        hello,
        Hello {
            epoch: "ep0".into(),
            head: 3,
            first_retained: Some(1)
        }
    );
    let (scanned, head) = store.read_after(1, None, 10).unwrap();
    assert_eq!(head, 3);
    assert_eq!(events(scanned), [(2, "b".into()), (3, "c".into())]);
    let (scanned, _) = store.read_after(0, Some(2), 10).unwrap();
    assert_eq!(events(scanned).len(), 2, "through is inclusive");
    let (scanned, _) = store.read_after(0, None, 1).unwrap();
    assert_eq!(events(scanned), [(1, "a".into())], "limit");
    store.verify().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_log_behind_what_was_seen_gets_a_new_epoch_once() {
    let dir = temp_dir("behind");
    let mut store = open(&dir).unwrap();
    store.append(&[publish("a"), publish("b")], 100).unwrap();
    assert!(
        !store.renew_if_behind(("ep0", 2), "ep1").unwrap(),
        "not behind"
    );
    assert!(
        !store.renew_if_behind(("other", 9), "ep1").unwrap(),
        "another log"
    );
    assert!(store.renew_if_behind(("ep0", 5), "ep1").unwrap());
    assert_eq!(store.epoch(), "ep1");
    let ids = store.append(&[publish("c")], 100).unwrap();
    assert_eq!(
        ids[0].to_string(),
        "ep1-3",
        "offsets go on under the new epoch"
    );
    let mut other = open(&dir).unwrap();
    assert!(
        !other.renew_if_behind(("ep0", 5), "ep2").unwrap(),
        "a second process finds it renewed already"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trimming_keeps_exactly_max_len_and_offsets_go_on() {
    let dir = temp_dir("trim");
    let mut store = open(&dir).unwrap();
    for i in 0..10 {
        store.append(&[publish(&i.to_string())], 4).unwrap();
    }
    let hello = store.hello().unwrap();
    assert_eq!((hello.head, hello.first_retained), (10, Some(7)));
    assert_eq!(store.first_retained().unwrap(), Some(7));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_foreign_or_broken_file_is_refused_untouched() {
    let dir = temp_dir("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(FILE_NAME);
    std::fs::write(&path, b"just some text, not a database at all, long enough").unwrap();
    let err = open(&dir).err().unwrap();
    assert_eq!(err.kind, StoreErrorKind::NotOurs, "{err}");
    assert!(err.message.contains("log.sqlite"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"just some text, not a database at all, long enough"
    );
    std::fs::remove_file(&path).unwrap();
    let other = Connection::open(&path).unwrap();
    other
        .execute_batch("CREATE TABLE accounts (name TEXT); INSERT INTO accounts VALUES ('x');")
        .unwrap();
    drop(other);
    let err = open(&dir).err().unwrap();
    assert_eq!(err.kind, StoreErrorKind::NotOurs);
    assert!(err.message.contains("another program"), "{err}");
    let other = Connection::open(&path).unwrap();
    let mode: String = other
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "the foreign file was not switched to WAL");
    drop(other);
    std::fs::remove_file(&path).unwrap();
    let other = Connection::open(&path).unwrap();
    other
        .execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 9;
             CREATE TABLE x (y);"
        ))
        .unwrap();
    drop(other);
    let err = open(&dir).err().unwrap();
    assert!(err.message.contains("format 9"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A format-1 log made before entries carried their acceptance time gets the column at
/// open: its entries read as unstamped, new ones round-trip theirs.
#[test]
fn a_log_without_acceptance_times_gets_the_column_and_keeps_its_entries() {
    let dir = temp_dir("unstamped");
    std::fs::create_dir_all(&dir).unwrap();
    let old = Connection::open(dir.join(FILE_NAME)).unwrap();
    old.execute_batch(&format!(
        "CREATE TABLE log (id INTEGER PRIMARY KEY CHECK (id = 1), epoch TEXT NOT NULL,
             head INTEGER NOT NULL);
         CREATE TABLE events (offset INTEGER PRIMARY KEY, topic TEXT NOT NULL,
             event TEXT, custom_id TEXT, data TEXT NOT NULL);
         INSERT INTO log VALUES (1, 'old', 1);
         INSERT INTO events VALUES (1, 'news', NULL, NULL, 'before');
         PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1;"
    ))
    .unwrap();
    drop(old);
    let mut store = open(&dir).unwrap();
    assert_eq!(store.epoch(), "old");
    store.append(&[publish("after")], 100).unwrap();
    let (scanned, _) = store.read_after(0, None, 10).unwrap();
    let stamps: Vec<Option<u64>> = scanned
        .into_iter()
        .map(|s| match s {
            Scanned::Event(e) => e.accepted_ms,
            Scanned::Hole(o) => panic!("hole at {o}"),
        })
        .collect();
    assert_eq!(stamps, [None, Some(1_700_000_000_000)]);
    drop(store);
    open(&dir).unwrap(); // the column is there: opening again changes nothing
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_database_refuses_the_whole_batch_and_keeps_counting_right() {
    let dir = temp_dir("full");
    let mut store = open(&dir).unwrap();
    store.append(&[publish("first")], 1000).unwrap();
    store.limit_pages(8);
    let big = "x".repeat(64 * 1024);
    let err = store
        .append(&[publish("ok"), publish(&big)], 1000)
        .unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Full, "{err}");
    store.limit_pages(1_000_000);
    let ids = store.append(&[publish("after")], 1000).unwrap();
    assert_eq!(ids[0].offset, 2, "the refused batch left no offsets behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_new_file_is_a_new_epoch_and_a_removed_one_is_noticed() {
    let dir = temp_dir("replaced");
    let store = open(&dir).unwrap();
    assert!(store.is_current_file());
    let path = store.path().to_owned();
    drop(store);
    let store = open(&dir).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    assert!(!store.is_current_file());
    drop(store);
    let again = Store::open(&dir, Durability::Sync, Duration::from_secs(1), "ep1").unwrap();
    assert_eq!(again.epoch(), "ep1", "a new file is a new epoch");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `rm log.sqlite*` under a running process: the database goes first, then `-shm`, then
/// `-wal`. A database made next to the old companions would share this process's index of
/// them, and every open after the removal finished would fail with a short read.
#[test]
fn a_log_removed_file_by_file_is_opened_again_only_once_all_are_gone() {
    let dir = temp_dir("removed-apart");
    let mut old = open(&dir).unwrap();
    old.append(&[publish("a")], 100).unwrap();
    let db = dir.join(FILE_NAME);
    // Each attempt is held, as a thread holds the store it opened until it next uses it.
    let mut attempts = Vec::new();
    for removed in ["", "-shm", "-wal"] {
        std::fs::remove_file(format!("{}{removed}", db.display())).unwrap();
        attempts.push(Store::open(
            &dir,
            Durability::Sync,
            Duration::from_secs(1),
            "ep1",
        ));
    }
    let mut first = Store::open(&dir, Durability::Sync, Duration::from_secs(1), "ep1")
        .expect("the log opens once its files are gone");
    assert_eq!(first.epoch(), "ep1", "a new file is a new epoch");
    let mut second = open(&dir).expect("a second connection of this process opens it");
    assert_eq!(second.epoch(), "ep1");
    assert_eq!(first.append(&[publish("b")], 100).unwrap()[0].offset, 1);
    assert_eq!(second.append(&[publish("c")], 100).unwrap()[0].offset, 2);
    for (attempt, left) in attempts.iter().zip(["-shm and -wal", "-wal"]) {
        let refused = attempt
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("opened while {left} remained"));
        assert_eq!(refused.kind, StoreErrorKind::Io, "{}", refused.message);
        assert!(refused.message.contains("remains"), "{}", refused.message);
    }
    assert!(first.is_current_file() && second.is_current_file());
    assert!(!old.is_current_file());
    drop(old);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What an open decides from the files' identities before it and after its first
/// transaction, with the interleavings `rm log.sqlite*` makes with several openers.
#[test]
fn a_connection_whose_files_changed_while_it_opened_is_not_used() {
    let id = |ino| Some(FileIdentity { dev: 1, ino });
    let (db, wal, shm, new_db, new_wal, new_shm) = (id(1), id(2), id(3), id(4), id(5), id(6));
    // Settled: an existing log, or a new one made by this open or a concurrent one.
    assert_eq!(stale_files(&[db, wal, shm], &[db, wal, shm]), None);
    assert_eq!(stale_files(&[None; 3], &[new_db, new_wal, new_shm]), None);
    assert_eq!(
        stale_files(&[db, None, None], &[db, new_wal, new_shm]),
        None
    );
    // The old -wal was opened, then removed and made anew by another connection: this
    // connection holds the deleted one while the names show the new one.
    assert_eq!(
        stale_files(&[new_db, wal, None], &[new_db, new_wal, new_shm]),
        Some(REPLACED)
    );
    // The database was removed and made again under the open.
    assert_eq!(
        stale_files(&[db, wal, shm], &[new_db, wal, shm]),
        Some(REPLACED)
    );
    // No -shm after the first transaction: the index was shared with a connection that
    // maps a removed one.
    assert_eq!(
        stale_files(&[db, None, None], &[db, new_wal, None]),
        Some(REPLACED)
    );
    // The database is gone but a companion remains: the removal is under way.
    for before in [[None, wal, shm], [None, wal, None], [None, None, shm]] {
        assert!(leftovers(&before).is_some(), "{before:?}");
        assert!(
            stale_files(&before, &[new_db, wal, shm]).is_some(),
            "{before:?}"
        );
    }
    assert_eq!(leftovers(&[None; 3]), None);
    assert_eq!(leftovers(&[db, None, None]), None);
}
