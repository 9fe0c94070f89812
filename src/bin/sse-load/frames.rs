//! Counting-grade event-stream reading without copies: lines that lie whole in a read buffer
//! are handled in place, and an event whose single `data:` line is in the buffer is handed
//! over as a slice of it. Only a line cut by the end of a read, or a multi-line data field, is
//! copied (into buffers each client reuses). No allocation per event.
//!
//! It follows the WHATWG "event stream interpretation" for what a load test counts (each
//! event's data and the last event id; line ends CR, LF, CRLF in any split; a leading BOM;
//! comments; `id` with NUL ignored) and ignores what it does not (`event`, `retry`).
//! [`sse_server::sse::parse::Parser`] is the oracle: the tests check that both give the same
//! events for any stream and any split.

/// A UTF-8 byte order mark, skipped at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One stream's reading state (a few reused buffers; empty between events).
#[derive(Debug, Default)]
pub struct FrameReader {
    /// The start of a line the last read cut off.
    carry: Vec<u8>,
    /// The data of the event being read, when it was not a single slice of one read.
    data: Vec<u8>,
    /// `data:` lines of the event being read (held in `data` unless borrowed in `feed`).
    data_lines: u32,
    /// The `id:` field of the event being read.
    id: Vec<u8>,
    /// The last event id (what a reconnect sends as `Last-Event-ID`), unless `id_dispatched`.
    last_id: Vec<u8>,
    /// The last event id is `id` (it was dispatched and not changed since): saves a copy per
    /// event; `last_id` takes it only when an `id:` line is about to change `id`.
    id_dispatched: bool,
    /// The previous read ended in CR: an LF at the start of the next one belongs to it.
    after_cr: bool,
    /// The start of the stream was checked for a BOM.
    started: bool,
}

fn eol(b: &[u8]) -> Option<usize> {
    memchr::memchr2(b'\n', b'\r', b)
}

impl FrameReader {
    /// The last event id, as `EventSource` would send it on reconnection.
    pub fn last_event_id(&self) -> &[u8] {
        if self.id_dispatched {
            &self.id
        } else {
            &self.last_id
        }
    }

    /// Reads the next bytes; calls `on_event(data, last_event_id)` for each event dispatched.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(&[u8], &[u8])) {
        if self.started {
            return self.lines(bytes, &mut on_event);
        }
        // The BOM may itself arrive split: hold the first bytes until it can be told.
        self.carry.extend_from_slice(bytes);
        if self.carry.len() < BOM.len() && BOM.starts_with(&self.carry) {
            return;
        }
        self.started = true;
        let first = std::mem::take(&mut self.carry);
        let rest = first.strip_prefix(BOM).unwrap_or(&first);
        self.lines(rest, &mut on_event);
    }

    fn lines(&mut self, bytes: &[u8], on_event: &mut impl FnMut(&[u8], &[u8])) {
        if bytes.is_empty() {
            // Nothing to read, and a CR at the end of the last read still waits for its LF.
            return;
        }
        let mut i = 0;
        if std::mem::take(&mut self.after_cr) && bytes.first() == Some(&b'\n') {
            i = 1;
        }
        if !self.carry.is_empty() {
            let Some(p) = eol(&bytes[i..]) else {
                self.carry.extend_from_slice(&bytes[i..]);
                return;
            };
            self.carry.extend_from_slice(&bytes[i..i + p]);
            let line = std::mem::take(&mut self.carry);
            self.line(&line, None, on_event);
            self.carry = line;
            self.carry.clear();
            i = self.after_eol(bytes, i + p);
        }
        // The first data line of the event being read, still in `bytes`.
        let mut pending: Option<&[u8]> = None;
        // One scan for every line end of the read (cheaper than a search per short line).
        let base = i;
        for p in memchr::memchr2_iter(b'\n', b'\r', &bytes[base..]).map(|p| base + p) {
            if p < i {
                continue; // the LF of a CRLF
            }
            self.line(&bytes[i..p], Some(&mut pending), on_event);
            i = self.after_eol(bytes, p);
        }
        if let Some(d) = pending {
            self.data.extend_from_slice(d);
        }
        self.carry.extend_from_slice(&bytes[i..]);
    }

    /// The index after the line end at `at` (a CR and its LF are one line end).
    fn after_eol(&mut self, bytes: &[u8], at: usize) -> usize {
        let next = at + 1;
        if bytes[at] == b'\r' {
            if next == bytes.len() {
                self.after_cr = true;
            } else if bytes[next] == b'\n' {
                return next + 1;
            }
        }
        next
    }

    /// One line. `pending`, when given, may borrow the event's first data line from the line
    /// (which then lives as long as the read buffer).
    fn line<'a>(
        &mut self,
        line: &'a [u8],
        pending: Option<&mut Option<&'a [u8]>>,
        on_event: &mut impl FnMut(&[u8], &[u8]),
    ) {
        if line.is_empty() {
            self.id_dispatched = true;
            if self.data_lines > 0 {
                let borrowed = pending.and_then(|p| p.take());
                on_event(borrowed.unwrap_or(&self.data), &self.id);
            }
            self.data.clear();
            self.data_lines = 0;
            return;
        }
        if line[0] == b':' {
            return;
        }
        // The two fields a server sends most, as they are usually written; else the general
        // split at the first colon (a plain scan: field names are short).
        let (name, value): (&[u8], &[u8]) = if let Some(v) = line.strip_prefix(b"data: ") {
            (b"data", v)
        } else if let Some(v) = line.strip_prefix(b"id: ") {
            (b"id", v)
        } else {
            match line.iter().position(|&b| b == b':') {
                Some(c) => (
                    &line[..c],
                    line[c + 1..].strip_prefix(b" ").unwrap_or(&line[c + 1..]),
                ),
                None => (line, &line[line.len()..]),
            }
        };
        match name {
            b"data" => {
                match pending {
                    Some(p) if self.data_lines == 0 => *p = Some(value),
                    p => {
                        if let Some(first) = p.and_then(|p| p.take()) {
                            self.data.extend_from_slice(first);
                        }
                        if self.data_lines > 0 {
                            self.data.push(b'\n');
                        }
                        self.data.extend_from_slice(value);
                    }
                }
                self.data_lines += 1;
            }
            b"id" if !value.contains(&0) => {
                if std::mem::take(&mut self.id_dispatched) {
                    std::mem::swap(&mut self.last_id, &mut self.id);
                }
                self.id.clear();
                self.id.extend_from_slice(value);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The events, and the last event id at the end (what a reconnect would send).
    fn read(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        for c in chunks {
            r.feed(c, |d, id| {
                got.push((
                    String::from_utf8_lossy(d).into_owned(),
                    String::from_utf8_lossy(id).into_owned(),
                ))
            });
        }
        got.push((
            "end".into(),
            String::from_utf8_lossy(r.last_event_id()).into_owned(),
        ));
        got
    }

    fn oracle(stream: &[u8]) -> Vec<(String, String)> {
        let mut p = sse_server::sse::parse::Parser::new();
        let mut got = Vec::new();
        p.feed(stream, |e| got.push((e.data, e.last_event_id)));
        got.push(("end".into(), p.last_event_id().to_owned()));
        got
    }

    #[test]
    fn typical_frames_in_any_split() {
        let wire = b"\xEF\xBB\xBF: hi\r\nid: 1\r\ndata: ts=5\r\n\r\nevent: x\ndata: a\ndata:b\n\ndata\n\nid: 2\n\n";
        let want = oracle(wire);
        assert_eq!(want.len(), 4);
        assert_eq!(want[3].1, "2");
        for cut in 0..wire.len() {
            for cut2 in cut..wire.len() {
                assert_eq!(
                    read(&[&wire[..cut], &wire[cut..cut2], &wire[cut2..]]),
                    want,
                    "{cut} {cut2}"
                );
            }
        }
    }

    /// An empty read between the CR and the LF of a CRLF does not split it into two line
    /// ends (found by the proptest below: the empty read dropped the pending CR, and the LF
    /// then ended an event early).
    #[test]
    fn an_empty_read_between_cr_and_lf_keeps_the_crlf_whole() {
        let got = read(&[b"data: a\r", b"", b"\ndata: b\n\n"]);
        assert_eq!(
            got,
            [
                ("a\nb".to_owned(), String::new()),
                ("end".into(), String::new())
            ]
        );
        assert_eq!(got, oracle(b"data: a\r\ndata: b\n\n"));
    }

    const PIECES: &[&[u8]] = &[
        b"data: ",
        b"data:",
        b"id: ",
        b"id:\0",
        b"event: e",
        b": c",
        b"\n",
        b"\r",
        b"\r\n",
        b"x",
        b"ts=12",
        b"retry: 5",
        b"\xEF\xBB\xBF",
        b"data",
    ];

    proptest! {
        #[test]
        fn same_events_as_the_whatwg_parser(
            parts in proptest::collection::vec(
                proptest::sample::select(PIECES),
                0..40,
            ),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let stream: Vec<u8> = parts.concat();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&stream[at..c]);
                at = c;
            }
            chunks.push(&stream[at..]);
            prop_assert_eq!(read(&chunks), oracle(&stream));
        }
    }
}
