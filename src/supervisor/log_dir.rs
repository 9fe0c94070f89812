//! Without `--redis` or `--data-dir`, the workers still need one shared log: the supervisor
//! makes a private directory for a local log (`--data-dir`) and removes it when it exits.
//! History then survives a worker's restart but not the supervisor's, as in a single
//! process's memory log.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Names tried before giving up (a supervisor killed by `SIGKILL` leaves its directory
/// behind, and a later supervisor may get the same pid).
const ATTEMPTS: u32 = 64;

/// A directory only this user can enter (mode 0700), removed with its content on drop.
pub(super) struct LogDir(PathBuf);

impl LogDir {
    /// Creates `<temp dir>/sse-server-<pid>-<n>` for the first free `n`. `mkdir` makes it or
    /// fails: an existing path (a file, a link, someone else's directory) is never used.
    pub(super) fn create() -> io::Result<LogDir> {
        let base = std::env::temp_dir();
        let pid = std::process::id();
        for n in 0..ATTEMPTS {
            let dir = base.join(format!("sse-server-{pid}-{n}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(LogDir(dir)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}/sse-server-{pid}-*: every name is taken", base.display()),
        ))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => log::info!("removed the workers' log directory {}", self.0.display()),
            Err(e) => log::warn!("cannot remove {}: {e}", self.0.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_directory_removed_on_drop() {
        let a = LogDir::create().unwrap();
        let b = LogDir::create().unwrap();
        assert_ne!(a.path(), b.path());
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(a.path().join("log.db"), b"x").unwrap();
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists());
    }
}
