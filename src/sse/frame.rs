//! Encoding events into `text/event-stream` frames.
//!
//! Guarantees: whatever bytes the data holds, the frame is exactly one event to a WHATWG
//! parser; data lines are split on CRLF, LF and lone CR (a browser treats each as a line
//! break), so no data can end the event early or inject a field. Field values that cannot
//! hold a line break (`id`, `event`) must be checked with [`valid_field_value`] first.

use std::fmt::Write as _;

/// The comment sent to an idle client so proxies keep the stream open. A comment, never an
/// empty event: an EventSource ignores it.
pub const KEEPALIVE: &[u8] = b": keep-alive\n\n";

/// True when `value` can be written as an `id:` or `event:` field: no CR, LF or NUL.
/// (A NUL makes a browser ignore an `id` field; CR or LF would end the field.)
pub fn valid_field_value(value: &str) -> bool {
    !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// Appends one event to `out`: `id:` (if any), `event:` (if any), one `data:` line per line of
/// `data`, then the blank line that dispatches it.
///
/// `id` and `event` must satisfy [`valid_field_value`]; in debug builds this is asserted.
pub fn encode_event(out: &mut Vec<u8>, id: Option<&str>, event: Option<&str>, data: &str) {
    if let Some(id) = id {
        debug_assert!(valid_field_value(id));
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    if let Some(event) = event {
        debug_assert!(valid_field_value(event));
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    for line in data_lines(data) {
        // Always one space after the colon: the parser strips exactly one, so a line that
        // itself starts with a space keeps it.
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends `retry: <ms>` and a blank line: sets the client's reconnection delay, dispatches nothing.
pub fn encode_retry(out: &mut Vec<u8>, millis: u64) {
    let mut s = String::with_capacity(24);
    let _ = write!(s, "retry: {millis}\n\n");
    out.extend_from_slice(s.as_bytes());
}

/// Splits on CRLF, LF and lone CR, the three line breaks of the event-stream grammar.
fn data_lines(data: &str) -> impl Iterator<Item = &str> {
    let bytes = data.as_bytes();
    let mut start = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut i = start;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => {
                    let line = &data[start..i];
                    start = i + 1;
                    return Some(line);
                }
                b'\r' => {
                    let line = &data[start..i];
                    start = if bytes.get(i + 1) == Some(&b'\n') {
                        i + 2
                    } else {
                        i + 1
                    };
                    return Some(line);
                }
                _ => i += 1,
            }
        }
        done = true;
        Some(&data[start..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(id: Option<&str>, event: Option<&str>, data: &str) -> String {
        let mut out = Vec::new();
        encode_event(&mut out, id, event, data);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_data() {
        assert_eq!(enc(None, None, "hello"), "data: hello\n\n");
    }

    #[test]
    fn all_fields() {
        assert_eq!(
            enc(Some("7"), Some("tick"), "x"),
            "id: 7\nevent: tick\ndata: x\n\n"
        );
    }

    #[test]
    fn every_line_break_splits() {
        assert_eq!(
            enc(None, None, "a\nb\r\nc\rd"),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn trailing_and_empty_lines_survive() {
        assert_eq!(enc(None, None, "a\n"), "data: a\ndata: \n\n");
        assert_eq!(enc(None, None, "\n\n"), "data: \ndata: \ndata: \n\n");
        assert_eq!(enc(None, None, ""), "data: \n\n");
    }

    #[test]
    fn leading_space_and_colons_kept() {
        assert_eq!(enc(None, None, " a: b"), "data:  a: b\n\n");
    }

    #[test]
    fn field_validation() {
        assert!(valid_field_value("abc-1"));
        assert!(!valid_field_value("a\nb"));
        assert!(!valid_field_value("a\rb"));
        assert!(!valid_field_value("a\0b"));
    }

    /// Conformance: encode, then decode with the WHATWG parser (cases after web-platform-tests
    /// `eventsource/format-*`): what an EventSource sees is the data with LF line breaks.
    #[test]
    fn round_trips_through_a_whatwg_parser() {
        use crate::sse::parse::parse_all;
        let datas = [
            "plain",
            "",
            " leading space",
            "  two leading spaces",
            "colon: inside: value",
            ":starts with a colon",
            "\u{FEFF}bom inside the data",
            "nul \0 in data",
            "trailing newline\n",
            "crlf\r\nlf\nlone cr\rend",
            "\r\n\r\n",
            "\r",
            "id: fake\nevent: fake\nretry: 1\n\ndata: fake",
            "unicode \u{1F600} \u{00E9}",
        ];
        let fields = [
            (None, None),
            (Some("1"), Some("x")),
            (Some(" spaced id "), Some("with:colon")),
            (Some("\u{00E9}"), Some(" ")),
        ];
        for data in datas {
            for (id, event) in fields {
                let mut out = Vec::new();
                encode_event(&mut out, id, event, data);
                let got = parse_all(&out);
                assert_eq!(got.len(), 1, "{data:?} gave {got:?}");
                let expect = data.replace("\r\n", "\n").replace('\r', "\n");
                assert_eq!(got[0].data, expect, "data {data:?}");
                assert_eq!(got[0].event_type, event.unwrap_or("message"));
                assert_eq!(got[0].last_event_id, id.unwrap_or(""));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_data_is_one_event(data in ".*", id in "[^\r\n\x00]{0,8}", event in "[^\r\n\x00]{1,8}") {
            let mut out = Vec::new();
            encode_event(&mut out, Some(&id), Some(&event), &data);
            let got = crate::sse::parse::parse_all(&out);
            proptest::prop_assert_eq!(got.len(), 1);
            proptest::prop_assert_eq!(&got[0].data, &data.replace("\r\n", "\n").replace('\r', "\n"));
            proptest::prop_assert_eq!(&got[0].last_event_id, &id);
            proptest::prop_assert_eq!(&got[0].event_type, &event);
        }
    }

    #[test]
    fn retry_field() {
        let mut out = Vec::new();
        encode_retry(&mut out, 2500);
        assert_eq!(out, b"retry: 2500\n\n");
    }
}
