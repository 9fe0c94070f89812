//! What can go wrong with the local log, classified for the threads that must answer a
//! publish (a full disk is refused outright, an I/O error is an unknown outcome), each
//! message naming the file and, for a file that is not ours, what to do.

use std::fmt;
use std::path::Path;

use rusqlite::ErrorCode;

/// Why the log cannot be used. The message names the file and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

/// What kind of failure, so the threads can answer a publish with the right refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The file is not an sse-server log, is of another format, or is corrupt: never
    /// written to, never replaced by a new epoch behind the operator's back.
    NotOurs,
    /// The disk (or the database's size limit) is full.
    Full,
    /// Another process holds the write lock longer than the busy timeout.
    Busy,
    /// Anything else the file system or SQLite reported (permissions, I/O errors).
    Io,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

pub(super) fn not_ours(path: &Path, why: &str) -> StoreError {
    StoreError {
        kind: StoreErrorKind::NotOurs,
        message: format!(
            "{} is not a usable sse-server log: {why}; move it away to start a new log",
            path.display()
        ),
    }
}

/// Classifies a SQLite error and names the file in its message.
pub(super) fn error(path: &Path, e: &rusqlite::Error) -> StoreError {
    let code = e.sqlite_error_code();
    let kind = match code {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreErrorKind::NotOurs,
        Some(ErrorCode::DiskFull) => StoreErrorKind::Full,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreErrorKind::Busy,
        _ => StoreErrorKind::Io,
    };
    if kind == StoreErrorKind::NotOurs {
        return not_ours(path, &format!("{e}"));
    }
    StoreError {
        kind,
        message: format!("{}: {e}", path.display()),
    }
}
