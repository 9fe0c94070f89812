//! Waking the local tail when any process commits to the log: an inotify watch on the data
//! directory (a commit writes the `-wal` file), so an idle tail sleeps in `poll(2)` instead
//! of querying the database on a timer. Without inotify (out of instances), it falls back to
//! polling at [`FALLBACK_POLL`], logged once.

use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::Duration;

use inotify::{Inotify, WatchMask};

/// How often the tail looks when inotify is not available.
pub(super) const FALLBACK_POLL: Duration = Duration::from_millis(20);

/// A wake-up source for changes in one directory.
pub(super) struct Watch {
    inotify: Option<Inotify>,
    buffer: Vec<u8>,
}

impl Watch {
    /// Watches `dir` for files written, created, removed or renamed in it.
    pub(super) fn new(dir: &Path) -> Watch {
        let inotify = Inotify::init().and_then(|inotify| {
            let mask = WatchMask::MODIFY
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MOVED_TO
                | WatchMask::MOVED_FROM;
            inotify.watches().add(dir, mask)?;
            Ok(inotify)
        });
        let inotify = match inotify {
            Ok(inotify) => Some(inotify),
            Err(e) => {
                log::warn!(
                    "local log: cannot watch {} ({e}); polling every {FALLBACK_POLL:?}",
                    dir.display()
                );
                None
            }
        };
        Watch {
            inotify,
            buffer: vec![0; 4096],
        }
    }

    /// Forgets the changes seen so far: call before reading the log, so a commit made after
    /// the read is always seen by the next [`Watch::wait`].
    pub(super) fn clear(&mut self) {
        if let Some(inotify) = self.inotify.as_mut() {
            while inotify
                .read_events(&mut self.buffer)
                .is_ok_and(|events| events.count() > 0)
            {}
        }
    }

    /// Waits until something changed in the directory since the last [`Watch::clear`], or
    /// `timeout` passed. Returns whether a change was seen (always true when polling).
    pub(super) fn wait(&mut self, timeout: Duration) -> bool {
        let Some(inotify) = self.inotify.as_ref() else {
            std::thread::sleep(timeout.min(FALLBACK_POLL));
            return true;
        };
        let mut fd = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut fd, 1, ms) };
        ready > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_write_in_the_directory_wakes_and_silence_times_out() {
        let dir = std::env::temp_dir().join(format!("sse-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut watch = Watch::new(&dir);
        watch.clear();
        let started = Instant::now();
        assert!(!watch.wait(Duration::from_millis(50)), "nothing happened");
        assert!(started.elapsed() >= Duration::from_millis(40));
        std::fs::write(dir.join("log.sqlite-wal"), b"x").unwrap();
        assert!(watch.wait(Duration::from_secs(5)));
        watch.clear();
        assert!(!watch.wait(Duration::from_millis(10)), "cleared");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
