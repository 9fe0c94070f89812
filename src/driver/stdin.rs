//! `--stdin`: standard input as a source of events, one per line.

use std::io;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

/// Where stdin comes from in `--stdin` mode.
pub(super) enum StdinSource {
    /// A pipe, tty or socket: registered with the reactor.
    Polled,
    /// A regular file (not pollable): read a chunk each turn until EOF.
    File,
}

/// Standard input being read, with the line it is in the middle of.
pub(super) struct Stdin {
    pub(super) source: StdinSource,
    pub(super) lines: LineSplitter,
}

impl Stdin {
    /// Makes fd 0 non-blocking and registers it under `token` (or, for a regular file that
    /// epoll refuses, marks it to be read every turn). Lines longer than `max_line` bytes
    /// are cut into pieces.
    pub(super) fn setup(poll: &Poll, token: Token, max_line: usize) -> io::Result<Stdin> {
        let fd = 0;
        // SAFETY: fcntl on fd 0, which stays open for the life of the process.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
        let source = match poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            Ok(()) => StdinSource::Polled,
            // epoll refuses regular files: they are always readable, so read them each turn.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => StdinSource::File,
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot watch stdin: {e}"))),
        };
        Ok(Stdin {
            source,
            lines: LineSplitter::new(max_line),
        })
    }
}

/// Splits a byte stream into lines. A line ends at LF; trailing CRs are dropped. What is
/// left of a chunk past its last LF and longer than `max_line` bytes is cut into pieces of
/// `max_line` bytes (an event may not be longer). Invalid UTF-8 is replaced.
///
/// Linear in the input: each byte is scanned for LF once and moved at most once per chunk
/// (between chunks the partial line holds no LF and at most `max_line` bytes).
#[derive(Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    max_line: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            partial: Vec::new(),
            max_line: max_line.max(1),
        }
    }

    /// Adds a chunk; pushes every line (and piece of an overlong line) it completes.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<String>) {
        let mut scan_from = self.partial.len();
        self.partial.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(off) = self.partial[scan_from..].iter().position(|&b| b == b'\n') {
            let end = scan_from + off;
            out.push(
                String::from_utf8_lossy(&self.partial[start..end])
                    .trim_end_matches('\r')
                    .to_owned(),
            );
            start = end + 1;
            scan_from = start;
        }
        while self.partial.len() - start > self.max_line {
            let piece = &self.partial[start..start + self.max_line];
            out.push(String::from_utf8_lossy(piece).into_owned());
            start += self.max_line;
        }
        self.partial.drain(..start);
    }

    /// The input ended: pushes the unfinished last line, if any.
    pub fn finish(&mut self, out: &mut Vec<String>) {
        if !self.partial.is_empty() {
            out.push(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max_line: usize) -> Vec<String> {
        let mut s = LineSplitter::new(max_line);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn lines_across_chunks_with_crlf() {
        assert_eq!(
            split(&[b"a\r\nb", b"c\n", b"\nlast"], 100),
            ["a", "bc", "", "last"]
        );
        assert_eq!(split(&[b"x\r\r\n"], 100), ["x"]);
        assert_eq!(split(&[b"\xff\n"], 100), ["\u{fffd}"]);
    }

    #[test]
    fn overlong_rest_is_cut_but_a_complete_line_in_one_chunk_is_not() {
        assert_eq!(split(&[b"abcdefg"], 3), ["abc", "def", "g"]);
        assert_eq!(split(&[b"abcdefg\n"], 3), ["abcdefg"]);
        assert_eq!(split(&[b"ab", b"cd", b"e\n"], 3), ["abc", "de"]);
    }

    #[test]
    fn any_split_gives_the_same_lines_when_lines_are_short() {
        let input = b"one\r\ntwo\n\nthree\nfour";
        let whole = split(&[input], 100);
        for cut in 0..input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(split(&[a, b], 100), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(split(&bytes, 100), whole);
    }

    #[test]
    fn many_short_lines_in_one_chunk() {
        let input = "x\n".repeat(100_000);
        let out = split(&[input.as_bytes()], 65536);
        assert_eq!(out.len(), 100_000);
        assert!(out.iter().all(|l| l == "x"));
    }
}
