//! A WHATWG-conformant `text/event-stream` parser (HTML Living Standard, "Server-sent events",
//! section "Event stream interpretation").
//!
//! It is the oracle for what a browser's `EventSource` makes of our bytes: the simulator and
//! the fuzz targets decode every client's stream with it, and `sse-load` uses it to count
//! deliveries. It accepts bytes in any split (a CRLF may straddle two feeds, so may a UTF-8
//! sequence) and never panics.

/// One dispatched event, as `EventSource` would hand it to a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, or `"message"` when there was none.
    pub event_type: String,
    /// The data lines joined with LF.
    pub data: String,
    /// The last event ID *after* this event (ids persist across events, as in a browser).
    pub last_event_id: String,
}

/// Incremental parser state for one stream.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// A CR ended the previous feed: an LF at the start of the next one belongs to it.
    after_cr: bool,
    /// The first bytes have been checked for a UTF-8 BOM.
    bom_done: bool,
    bom_partial: Vec<u8>,
    data: String,
    event_type: String,
    id_buffer: String,
    last_event_id: String,
    retry: Option<u64>,
    comments: u64,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The reconnection time set by the last valid `retry:` field, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event ID, as `EventSource` would send it on reconnection.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// How many comment lines (`:` …) were seen, keep-alives included.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// True when bytes of an unfinished line or event are buffered.
    pub fn mid_event(&self) -> bool {
        !self.line.is_empty() || !self.data.is_empty() || !self.event_type.is_empty()
    }

    /// Feeds the next bytes of the stream; calls `on_event` for each event dispatched.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(Event)) {
        if !self.bom_done {
            // The BOM may itself arrive split over several feeds.
            while !bytes.is_empty() && self.bom_partial.len() < BOM.len() {
                let want = BOM[self.bom_partial.len()];
                if bytes[0] != want {
                    break;
                }
                self.bom_partial.push(bytes[0]);
                bytes = &bytes[1..];
            }
            if self.bom_partial.len() == BOM.len() {
                self.bom_done = true;
                self.bom_partial.clear();
            } else if !bytes.is_empty() {
                // Not a BOM after all: what was held back is ordinary data.
                self.bom_done = true;
                let held = std::mem::take(&mut self.bom_partial);
                self.push_bytes(&held, &mut on_event);
            } else {
                return;
            }
        }
        self.push_bytes(bytes, &mut on_event);
    }

    fn push_bytes(&mut self, bytes: &[u8], on_event: &mut impl FnMut(Event)) {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' if self.after_cr && i == start && self.line.is_empty() => {
                    // Second half of a CRLF.
                    self.after_cr = false;
                    start = i + 1;
                }
                b'\r' | b'\n' => {
                    self.line.extend_from_slice(&bytes[start..i]);
                    let line = std::mem::take(&mut self.line);
                    self.process_line(&line, on_event);
                    self.line = line;
                    self.line.clear();
                    start = i + 1;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.after_cr = false;
                }
            }
        }
        // `after_cr` already says whether the last byte was a CR: every arm above sets it.
        self.line.extend_from_slice(&bytes[start..]);
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut impl FnMut(Event)) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let mut value = &line[colon + 1..];
                if value.first() == Some(&b' ') {
                    value = &value[1..];
                }
                (&line[..colon], value)
            }
            None => (line, &line[line.len()..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"event" => self.event_type = value.into_owned(),
            b"data" => {
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"id" if !value.contains('\0') => {
                self.id_buffer = value.into_owned();
            }
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Saturate rather than overflow on absurd values.
                self.retry = Some(value.parse().unwrap_or(u64::MAX));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(Event)) {
        self.last_event_id.clone_from(&self.id_buffer);
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event_type = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        self.event_type.clear();
        on_event(Event {
            event_type,
            data,
            last_event_id: self.last_event_id.clone(),
        });
    }
}

/// Parses a whole stream at once; convenient in tests.
pub fn parse_all(bytes: &[u8]) -> Vec<Event> {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    parser.feed(bytes, |e| events.push(e));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: &str, d: &str, id: &str) -> Event {
        Event {
            event_type: t.into(),
            data: d.into(),
            last_event_id: id.into(),
        }
    }

    // Cases after web-platform-tests eventsource/format-*.
    #[test]
    fn bom_is_stripped_once() {
        assert_eq!(
            parse_all(b"\xEF\xBB\xBFdata: 1\n\n"),
            vec![ev("message", "1", "")]
        );
        // A second BOM is part of the field name, so the line is ignored.
        assert_eq!(
            parse_all(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: 1\n\ndata: 2\n\n"),
            vec![ev("message", "2", "")]
        );
    }

    #[test]
    fn line_endings() {
        for s in [
            &b"data: a\r\ndata: b\r\n\r\n"[..],
            b"data: a\rdata: b\r\r",
            b"data: a\ndata: b\n\n",
        ] {
            assert_eq!(parse_all(s), vec![ev("message", "a\nb", "")]);
        }
    }

    #[test]
    fn crlf_split_across_feeds() {
        let mut p = Parser::new();
        let mut got = Vec::new();
        p.feed(b"data: a\r", |e| got.push(e));
        p.feed(b"\n\r", |e| got.push(e));
        p.feed(b"\n", |e| got.push(e));
        assert_eq!(got, vec![ev("message", "a", "")]);
    }

    #[test]
    fn leading_space_and_colons() {
        assert_eq!(parse_all(b"data:  x\n\n"), vec![ev("message", " x", "")]);
        assert_eq!(parse_all(b"data:x:y\n\n"), vec![ev("message", "x:y", "")]);
        // An empty data line still dispatches (the buffer is "\n" before the trailing LF goes).
        assert_eq!(parse_all(b"data\n\n"), vec![ev("message", "", "")]);
        assert_eq!(parse_all(b"id: 1\n\n"), Vec::<Event>::new());
        assert_eq!(parse_all(b"data\ndata\n\n"), vec![ev("message", "\n", "")]);
    }

    #[test]
    fn comments_and_unknown_fields_ignored() {
        let mut p = Parser::new();
        let mut got = Vec::new();
        p.feed(b": hi\nfoo: bar\ndata: 1\n\n", |e| got.push(e));
        assert_eq!(got, vec![ev("message", "1", "")]);
        assert_eq!(p.comments(), 1);
    }

    #[test]
    fn retry_digits_only() {
        let mut p = Parser::new();
        p.feed(b"retry: 1000\n\nretry: 10x\n\nretry:\n\n", |_| {});
        assert_eq!(p.retry(), Some(1000));
    }

    #[test]
    fn ids_persist_and_nul_ids_ignored() {
        let got = parse_all(b"id: 1\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\nid\ndata: d\n\n");
        assert_eq!(
            got,
            vec![
                ev("message", "a", "1"),
                ev("message", "b", "1"),
                ev("message", "c", "1"),
                ev("message", "d", "")
            ]
        );
    }

    #[test]
    fn event_type_resets_after_dispatch() {
        let got = parse_all(b"event: x\ndata: 1\n\ndata: 2\n\nevent: y\n\ndata: 3\n\n");
        assert_eq!(
            got,
            vec![
                ev("x", "1", ""),
                ev("message", "2", ""),
                ev("message", "3", "")
            ]
        );
    }

    /// The state a reconnecting client needs: its last id (as `EventSource` would send it),
    /// the comments counted one by one, and whether an event or a line is unfinished: a
    /// partial line, a data line or an event type not yet dispatched.
    #[test]
    fn last_id_comments_and_an_unfinished_event_are_visible() {
        let mut p = Parser::new();
        assert_eq!(
            (p.last_event_id(), p.comments(), p.mid_event()),
            ("", 0, false)
        );
        p.feed(b": a\n: b\nid: 7\ndata: x\n\n", |_| {});
        assert_eq!(
            (p.last_event_id(), p.comments(), p.mid_event()),
            ("7", 2, false)
        );
        for (bytes, mid) in [
            (&b"da"[..], true),
            (b"ta: y\n", true),
            (b"\n", false),
            (b"event: e\n", true),
            (b"\n", false),
        ] {
            p.feed(bytes, |_| {});
            assert_eq!(
                p.mid_event(),
                mid,
                "after {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn unfinished_event_not_dispatched() {
        assert_eq!(parse_all(b"data: a\n"), Vec::<Event>::new());
    }

    #[test]
    fn any_split_gives_same_events() {
        let stream =
            b"\xEF\xBB\xBFid: 1\r\nevent: e\r\ndata: a\rdata: \xC3\xA9\n\r\n: c\n\ndata: z\n\n";
        let whole = parse_all(stream);
        for cut in 0..stream.len() {
            for cut2 in cut..stream.len() {
                let mut p = Parser::new();
                let mut got = Vec::new();
                p.feed(&stream[..cut], |e| got.push(e));
                p.feed(&stream[cut..cut2], |e| got.push(e));
                p.feed(&stream[cut2..], |e| got.push(e));
                assert_eq!(got, whole, "cut at {cut},{cut2}");
            }
        }
    }
}
