//! Arbitrary data, event type and id through `encode_event`, decoded by the WHATWG parser
//! (whole, and split in two): exactly one event comes back, with the data exactly (line
//! endings normalised to LF), the type and the id. Invalid ids and types are skipped (the
//! encoder's contract requires `valid_field_value`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_server::sim::normalise_line_breaks;
use sse_server::sse::frame::{encode_event, valid_field_value};
use sse_server::sse::parse::{Parser, parse_all};

fuzz_target!(|input: (String, Option<String>, Option<String>, u16)| {
    let (data, event, id, cut) = input;
    if !event.as_deref().is_none_or(valid_field_value)
        || !id.as_deref().is_none_or(valid_field_value)
    {
        return;
    }
    let mut frame = Vec::new();
    encode_event(&mut frame, id.as_deref(), event.as_deref(), &data);
    let events = parse_all(&frame);
    assert_eq!(
        events.len(),
        1,
        "one frame must be one event: {frame:?} gave {events:?}"
    );
    let e = &events[0];
    assert_eq!(
        e.data,
        normalise_line_breaks(&data),
        "data changed: {frame:?}"
    );
    let want_type = event
        .as_deref()
        .filter(|t| !t.is_empty())
        .unwrap_or("message");
    assert_eq!(e.event_type, want_type);
    assert_eq!(e.last_event_id, id.as_deref().unwrap_or(""));
    // Any split point gives the same event.
    let cut = usize::from(cut) % (frame.len() + 1);
    let mut p = Parser::new();
    let mut got = Vec::new();
    p.feed(&frame[..cut], |e| got.push(e));
    p.feed(&frame[cut..], |e| got.push(e));
    assert_eq!(got, events, "split at {cut} changed the events");
});
