//! Core tests written to kill mutants that the other tests let survive.

use super::*;

/// A caller offering no slots gets nothing back, even with a partly written response pending
/// (kills `n < iov.len()` → `<=` for the pending slot in `write_slices`).
#[test]
fn write_slices_with_no_room_offers_nothing() {
    let mut t = T::new(cfg());
    let id = t.connect();
    t.core.handle_read(id, GET, t.now);
    // A short write leaves the response head pending.
    t.drain(Some(5));
    assert_eq!(t.core.write_slices(id, &mut []), 0);
}

fn keepalive_every_15s() -> T {
    let mut c = cfg();
    c.interval = None;
    c.keepalive = Some(Duration::from_secs(15));
    T::new(c)
}

/// Writing an event restarts the keep-alive's idle clock (kills the `>` → `==`/`<` mutants of
/// `written > 0` in `handle_written`).
#[test]
fn a_written_event_postpones_the_keepalive() {
    let mut t = keepalive_every_15s();
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    t.advance(Duration::from_secs(10));
    t.core.publish("", None, None, "x", t.now).unwrap();
    t.drain(None);
    t.advance(Duration::from_secs(7));
    t.drain(None);
    assert!(
        !t.text(a).contains(": keep-alive"),
        "idle only 7 s: {}",
        t.text(a)
    );
    assert_eq!(t.events(a).len(), 1);
}

/// A write of no bytes is not activity (kills `written > 0` → `>=` in `handle_written`).
#[test]
fn an_empty_write_does_not_postpone_the_keepalive() {
    let mut t = keepalive_every_15s();
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    t.advance(Duration::from_secs(10));
    t.core.handle_written(a, 0, t.now);
    t.advance(Duration::from_secs(7));
    t.drain(None);
    assert!(t.text(a).ends_with(": keep-alive\n\n"), "{}", t.text(a));
}

/// The driver reads its settings (`shutdown_grace`, `max_send_buffer`) from the core's config:
/// it is the one the core was made with (kills `config` returning a default one).
#[test]
fn the_config_is_the_one_given() {
    let mut c = cfg();
    c.max_send_buffer = 12_345;
    c.shutdown_grace = Duration::from_millis(4_321);
    let t = T::new(c);
    assert_eq!(t.core.config().max_send_buffer, 12_345);
    assert_eq!(t.core.config().shutdown_grace, Duration::from_millis(4_321));
}

/// A connection the driver closed at once (out of descriptors) counts as refused, each one
/// (kills `refuse` as a no-op, `-=` and `*=`).
#[test]
fn the_driver_refusals_are_counted() {
    let mut t = T::new(cfg());
    t.core.refuse();
    t.core.refuse();
    assert_eq!(t.core.metrics().refused, 2);
}

/// Shutting down is visible to the driver (it stops accepting) from the moment it is asked.
#[test]
fn shutting_down_is_reported_at_once() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    // A short write: the stream head is still pending, so shutdown waits for it.
    t.drain(Some(5));
    assert!(!t.core.is_shutting_down());
    t.core.shutdown(t.now);
    assert!(t.core.is_shutting_down());
    assert!(!t.core.is_finished(), "the stream has bytes pending");
}

/// A tick handled late keeps the cadence: the next one is due one interval after the one
/// that was due, not after the late wake-up (kills `due + interval` → `due - interval`).
#[test]
fn a_late_tick_keeps_the_cadence() {
    let mut c = cfg();
    c.interval = Some(Duration::from_secs(2));
    c.keepalive = None;
    let mut t = T::new(c);
    let start = t.now;
    assert_eq!(t.core.next_deadline(), Some(start + Duration::from_secs(2)));
    t.advance(Duration::from_millis(2_500));
    assert_eq!(t.core.next_deadline(), Some(start + Duration::from_secs(4)));
    // More than a whole interval late: missed ticks are skipped, not burst.
    t.advance(Duration::from_millis(4_000));
    assert_eq!(
        t.core.next_deadline(),
        Some(start + Duration::from_millis(8_500))
    );
}

/// EventSource clients over the client limit are told to come back after a jittered
/// `retry:` in [2 s, 7 s): spread, so they do not all return at once (kills the mutants of
/// the jitter generator that make it constant: `^=` → `|=` or `&=` in `next_random`).
#[test]
fn over_limit_retries_are_spread() {
    let mut c = cfg();
    c.max_clients = 1;
    let mut t = T::new(c);
    let first = t.connect();
    t.core.handle_read(first, GET, t.now);
    t.drain(None);
    let mut delays = Vec::new();
    for _ in 0..20 {
        let id = t.connect();
        t.core.handle_read(id, GET, t.now);
        t.drain(None);
        let text = t.text(id);
        let retry = text
            .lines()
            .find_map(|l| l.strip_prefix("retry: "))
            .and_then(|ms| ms.parse::<u64>().ok());
        let Some(ms) = retry else {
            panic!("no retry: {text}")
        };
        assert!((2_000..7_000).contains(&ms), "{ms}");
        delays.push(ms);
    }
    delays.sort_unstable();
    delays.dedup();
    assert!(
        delays.len() >= 10,
        "20 retries, distinct delays: {delays:?}"
    );
}

/// The core's invariants hold between a publish and the writes it queued (a client that is
/// writable, queued and has bytes pending is the normal state there; kills `!c.queued` →
/// `c.queued` in `check_invariants`).
#[test]
fn invariants_hold_between_a_publish_and_its_writes() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    t.core.publish("", None, None, "x", t.now).unwrap();
    assert_eq!(t.core.check_invariants(), Ok(()));
    t.drain(None);
    assert_eq!(t.core.check_invariants(), Ok(()));
}

/// With a publish token configured, `/clients` is for loopback peers and holders of the
/// token: another host without it gets 403 (kills `may_list_clients` → `true`).
#[test]
fn clients_from_another_host_need_the_token() {
    let mut c = cfg();
    // As the command line builds it: the token in the config and in the auth policy.
    c.publish_token = Some("s3cret".into());
    c.auth = std::sync::Arc::new(
        crate::auth::AuthConfig::new(crate::auth::AuthOptions {
            publish_token: Some("s3cret".into()),
            ..crate::auth::AuthOptions::default()
        })
        .unwrap(),
    );
    let mut t = T::new(c);
    let remote: std::net::SocketAddr = "10.1.2.3:4567".parse().unwrap();
    let ask = |t: &mut T, auth: &str| {
        let id = t.core.handle_accept(remote, t.now).unwrap();
        t.got.push((id, Vec::new(), false));
        let req = format!("GET /clients HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        t.core.handle_read(id, req.as_bytes(), t.now);
        t.drain(None);
        t.text(id)
    };
    let without = ask(&mut t, "");
    assert!(without.starts_with("HTTP/1.1 403 "), "{without}");
    let with = ask(&mut t, "Authorization: Bearer s3cret\r\n");
    assert!(with.starts_with("HTTP/1.1 200 "), "{with}");
}

/// Under `--allow-origin`, a stream's head answers the request's own `Origin` with
/// credentials allowed, and a complete answer does too (kills `delete !` in
/// `stream_prelude`, `cors_lines` → `vec![]` and the splice offset in `with_cors`).
#[test]
fn allow_origin_answers_streams_and_requests_with_their_origin() {
    let auth = crate::auth::AuthConfig::new(crate::auth::AuthOptions {
        allow_origins: vec!["https://app.example".into()],
        ..crate::auth::AuthOptions::default()
    })
    .unwrap();
    let mut c = cfg();
    c.auth = std::sync::Arc::new(auth);
    let mut t = T::new(c);
    let s = t.connect();
    let origin = "Origin: https://app.example\r\n";
    let req =
        format!("GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{origin}\r\n");
    t.core.handle_read(s, req.as_bytes(), t.now);
    t.drain(None);
    let head = t.text(s);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nAccess-Control-Allow-Origin: https://app.example\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nAccess-Control-Allow-Credentials: true\r\n"),
        "{head}"
    );
    assert!(!head.contains("Allow-Origin: *"), "{head}");
    let h = t.connect();
    let req = format!("GET /health HTTP/1.1\r\nHost: x\r\n{origin}\r\n");
    t.core.handle_read(h, req.as_bytes(), t.now);
    t.drain(None);
    let answer = t.text(h);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("\r\nAccess-Control-Allow-Origin: https://app.example\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
}

/// Shutdown gives streams with bytes pending `--shutdown-grace` to finish, then closes them
/// (kills `now + grace` → `now - grace` in `shutdown`).
#[test]
fn shutdown_waits_the_grace_period_for_pending_bytes() {
    let mut c = cfg();
    c.shutdown_grace = Duration::from_secs(3);
    let mut t = T::new(c);
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(Some(5));
    t.core.shutdown(t.now);
    t.advance(Duration::from_millis(2_900));
    t.drain(Some(0));
    assert!(t.core.is_live(a), "within the grace period");
    t.advance(Duration::from_millis(100));
    t.drain(Some(0));
    assert!(!t.core.is_live(a), "closed at the end of the grace period");
    assert!(t.core.is_finished());
}

/// The invariant check the simulator relies on reports a broken invariant (kills
/// `check_invariants` → `Ok(())`, which would make every simulated run vacuous).
#[test]
fn the_invariant_check_reports_a_wrong_streaming_count() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    assert_eq!(t.core.check_invariants(), Ok(()));
    t.core.connections.skew_streaming(true);
    let err = t.core.check_invariants().unwrap_err();
    assert!(err.contains("streaming count 2 but 1"), "{err}");
    t.core.connections.skew_streaming(false);
}

/// A connection reading a request that the eviction list does not name is reported (kills
/// `check_head_readers` → `Ok(())`: the simulator's check of the head-reader fix).
#[test]
fn the_invariant_check_reports_an_unlisted_request_reader() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, b"GET /eve", t.now);
    assert_eq!(t.core.check_invariants(), Ok(()));
    let listed = std::mem::take(t.core.connections.head_readers_mut());
    let err = t.core.check_invariants().unwrap_err();
    assert!(err.contains("reads a request but is not listed"), "{err}");
    *t.core.connections.head_readers_mut() = listed;
}

/// A cursor outside its topic's retained range is reported (kills `||` → `&&` in the range
/// check of `check_invariants`).
#[test]
fn the_invariant_check_reports_a_cursor_past_the_end() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    let cursor = &mut t.core.connections.by_key_mut(a.key).unwrap().cursors_mut()[0];
    cursor.next += 5;
    let err = t.core.check_invariants().unwrap_err();
    assert!(err.contains("outside"), "{err}");
    t.core.connections.by_key_mut(a.key).unwrap().cursors_mut()[0].next -= 5;
    assert_eq!(t.core.check_invariants(), Ok(()));
}

/// In debug builds every input ends with the invariant check, so a broken invariant stops
/// the run where it happened (kills `debug_check` → `()`).
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "core invariant violated")]
fn a_broken_invariant_panics_at_the_next_input_in_debug_builds() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.connections.skew_streaming(true);
    t.core.handle_read(a, b"GET /health HTTP/1.1\r\n", t.now);
}

/// What a stream client may send after its request: `--max-client-send` bytes exactly,
/// not one more (kills `>` → `>=` on the bound in `on_bytes`).
#[test]
fn a_stream_client_may_send_up_to_the_bound_after_its_request() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    let max = t.core.config().max_client_send;
    t.core.handle_read(a, &vec![b'x'; max], t.now);
    t.drain(None);
    assert!(t.core.is_live(a), "exactly the bound");
    t.core.handle_read(a, b"x", t.now);
    t.drain(None);
    assert!(!t.core.is_live(a), "one byte over");
    assert_eq!(t.core.metrics().closed(CloseReason::Limit), 1);
}

/// While an answer waits for a full socket, the core keeps what the client pipelines up to
/// `--max-head` + `--max-body` bytes exactly, and closes past it (kills the bound's `+` → `*`
/// and the mutants of `keep_early`).
#[test]
fn pipelined_bytes_are_kept_up_to_the_bound_while_an_answer_waits() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core
        .handle_read(a, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", t.now);
    t.drain(Some(0));
    let bound = t.core.config().max_head + t.core.config().max_body;
    assert_eq!(t.core.input_room(a), bound);
    t.core.handle_read(a, &vec![b'x'; bound - 1], t.now);
    t.core.handle_read(a, b"x", t.now);
    assert!(t.core.is_live(a), "exactly the bound");
    assert_eq!(t.core.input_room(a), 0);
    t.core.handle_read(a, b"x", t.now);
    assert!(!t.core.is_live(a), "one byte over");
}

/// At the head timeout, a kept-alive connection idle between requests is just closed, while
/// one that never sent a request, or sent part of one, gets a 408 (kills the mutants of
/// `r.buffered() == 0 && c.answered` in `on_timer`).
#[test]
fn the_head_timeout_answers_408_only_to_a_begun_or_first_request() {
    let mut t = T::new(cfg());
    let head_timeout = t.core.config().head_timeout;
    let kept = t.connect();
    t.core
        .handle_read(kept, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", t.now);
    t.drain(None);
    let answered = t.text(kept).len();
    let fresh = t.connect();
    let partial = t.connect();
    t.core.handle_read(partial, b"GET /hea", t.now);
    t.advance(head_timeout + Duration::from_secs(1));
    t.drain(None);
    assert_eq!(t.text(kept).len(), answered, "closed without a word");
    assert!(t.closed(kept));
    for id in [fresh, partial] {
        assert!(t.text(id).starts_with("HTTP/1.1 408 "), "{}", t.text(id));
    }
}

/// A kept-alive connection that began its next request head and stalled is answered 408,
/// like a first request; only one idle between requests closes without a word (kills
/// `RequestStream::buffered_head` → `0`).
#[test]
fn a_stalled_second_head_on_a_kept_alive_connection_is_answered_408() {
    let mut t = T::new(cfg());
    let head_timeout = t.core.config().head_timeout;
    let kept = t.connect();
    t.core.handle_read(
        kept,
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /hea",
        t.now,
    );
    t.drain(None);
    let answered = t.text(kept).len();
    t.advance(head_timeout + Duration::from_secs(1));
    t.drain(None);
    let text = t.text(kept);
    assert!(text[answered..].starts_with("HTTP/1.1 408 "), "{text}");
    assert!(t.closed(kept));
}

/// A keep-alive comment is counted once per comment sent (kills `+=` → `*=` on the counter).
#[test]
fn keepalives_are_counted() {
    let mut t = keepalive_every_15s();
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    for _ in 0..2 {
        t.advance(Duration::from_secs(17));
        t.drain(None);
    }
    assert_eq!(t.core.metrics().keepalives, 2);
    assert_eq!(t.text(a).matches(": keep-alive").count(), 2);
}

/// The list of connections reading a head (eviction candidates) stays proportional to the
/// connections, however many requests one kept-alive connection makes, even all within one
/// instant as pipelined requests of one read are (it grew by one entry per request: 501 for
/// one connection); and its compaction never drops the entry of the connection that is
/// reading a head now (kills the mutants of the `retain` condition in `note_head_reader`).
#[test]
fn the_head_reader_list_stays_proportional_to_the_connections() {
    let mut t = T::new(cfg());
    let a = t.connect();
    let listed = |t: &T| {
        t.core
            .connections
            .head_readers()
            .iter()
            .any(|&(id, since)| id == a && since == t.now)
    };
    for i in 0..1000 {
        // The first half within one instant, then one new instant for every other request.
        if i >= 500 && i % 2 == 0 {
            t.now += Duration::from_millis(1);
        }
        t.core
            .handle_read(a, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", t.now);
        t.drain(None);
        assert!(
            listed(&t),
            "request {i}: the connection reading a head is not listed"
        );
        assert!(
            t.core.connections.head_readers().len() <= 2 * t.core.connections() + 65,
            "request {i}: {} entries for {} connection",
            t.core.connections.head_readers().len(),
            t.core.connections()
        );
    }
    assert!(t.core.is_live(a));
}

/// When most connections leave, the compaction's bound falls with them and the list is
/// compacted down to it again, however many requests the one left makes (kills `>` → `==`
/// and `>` → `<` in the compaction threshold of `note_head_reader`: with them it is never
/// compacted again once it is past the lowered bound).
#[test]
fn the_head_reader_list_shrinks_when_connections_leave() {
    let mut t = T::new(cfg());
    let ids: Vec<ClientId> = (0..100).map(|_| t.connect()).collect();
    for &id in &ids[1..] {
        t.core.handle_io_error(id, IoFailure::Reset);
        t.drain(None);
    }
    let a = ids[0];
    assert_eq!(t.core.connections(), 1);
    for _ in 0..200 {
        t.now += Duration::from_millis(1);
        t.core
            .handle_read(a, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", t.now);
        t.drain(None);
    }
    assert!(t.core.is_live(a));
    assert!(
        t.core.connections.head_readers().len() <= 2 * t.core.connections() + 65,
        "{} entries for {} connection",
        t.core.connections.head_readers().len(),
        t.core.connections()
    );
}

/// A publish's `event` and `id` are 1 to `MAX_NAME` bytes without CR, LF or NUL: each bound
/// exactly (kills the mutants of `check_fields`).
#[test]
fn event_names_and_ids_are_checked_at_their_exact_bounds() {
    use crate::core::publish::{MAX_NAME, check_fields};
    let longest = "e".repeat(MAX_NAME);
    let too_long = "e".repeat(MAX_NAME + 1);
    for ok in ["a", longest.as_str()] {
        assert_eq!(check_fields(Some(ok), None), Ok(()), "event {ok}");
        assert_eq!(check_fields(None, Some(ok)), Ok(()), "id {ok}");
    }
    for bad in ["", too_long.as_str(), "a\nb", "a\rb", "a\0b"] {
        assert_eq!(
            check_fields(Some(bad), None),
            Err(RequestError::InvalidEvent),
            "event {bad:?}"
        );
        assert_eq!(
            check_fields(None, Some(bad)),
            Err(RequestError::InvalidId),
            "id {bad:?}"
        );
    }
    assert_eq!(check_fields(None, None), Ok(()));
}

/// Bytes pipelined after a stream request in the same read count against
/// `--max-client-send` exactly (kills `>` → `==` / `>=` in `start_stream`'s bound).
#[test]
fn bytes_after_a_stream_request_in_one_read_are_bounded_exactly() {
    let max = Config::default().max_client_send;
    for (extra, live) in [(max, true), (max + 1, false)] {
        let mut t = T::new(cfg());
        let a = t.connect();
        let mut bytes = GET.to_vec();
        bytes.resize(GET.len() + extra, b'x');
        t.core.handle_read(a, &bytes, t.now);
        t.drain(None);
        assert_eq!(t.core.is_live(a), live, "{extra} bytes after the request");
    }
}

/// A frame written in parts is counted once, when its last byte is written (kills `+=` →
/// `*=` for the pending frame in `handle_written`).
#[test]
fn a_frame_written_in_parts_is_counted_once() {
    let mut t = T::new(cfg());
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    let before = t.core.metrics().frames_written;
    t.core.publish("", None, None, "hello", t.now).unwrap();
    t.drain(Some(3));
    assert_eq!(t.core.metrics().frames_written, before, "a part");
    t.core.handle_writable(a);
    t.drain(None);
    assert_eq!(t.core.metrics().frames_written, before + 1, "the rest");
    assert_eq!(t.events(a).last().unwrap().data, "hello");
    // Every byte written is counted once (kills `+=` → `*=` on `bytes_written`).
    assert_eq!(t.core.metrics().bytes_written, t.text(a).len() as u64);
}

/// During shutdown, a stream whose socket takes its last frames a few bytes at a time is
/// closed only once everything is written (kills `&&` → `||` in `handle_written`'s
/// shutdown close: it closed after the first short write).
#[test]
fn a_slow_stream_gets_everything_before_its_shutdown_close() {
    let mut c = cfg();
    c.shutdown_grace = Duration::from_secs(3);
    let mut t = T::new(c);
    let a = t.connect();
    t.core.handle_read(a, GET, t.now);
    t.drain(None);
    t.core.publish("", None, None, "last words", t.now).unwrap();
    t.core.shutdown(t.now);
    t.drain(Some(4));
    for _ in 0..100 {
        if !t.core.is_live(a) {
            break;
        }
        t.core.handle_writable(a);
        t.drain(Some(4));
    }
    assert!(!t.core.is_live(a), "closed once written");
    assert_eq!(t.events(a).last().unwrap().data, "last words");
    assert_eq!(t.core.metrics().closed(CloseReason::Shutdown), 1);
}

/// The backlog bound counts exactly: a client exactly at it stays, and the unwritten rest of
/// a frame it began counts with the retained frames it has not had (kills `>` → `==` / `>=`
/// and `||` → `&&` in `append`'s slow check).
#[test]
fn the_backlog_bound_is_exact_and_counts_a_frame_in_flight() {
    // The bytes of the first three frames, measured on a twin core.
    let bound = {
        let mut t = T::new(cfg());
        let (a, b) = (t.connect(), t.connect());
        for c in [a, b] {
            t.core.handle_read(c, GET, t.now);
        }
        t.drain(None);
        t.core.handle_would_block(b, t.now);
        for _ in 0..3 {
            t.core.publish("", None, None, "0123456789", t.now).unwrap();
        }
        t.core.backlog_bytes(b).unwrap()
    };
    let mut t = T::new(Config {
        history: 100,
        history_bytes: bound as usize,
        max_backlog: bound,
        ..cfg()
    });
    let (partial, blocked) = (t.connect(), t.connect());
    for c in [partial, blocked] {
        t.core.handle_read(c, GET, t.now);
    }
    t.drain(None);
    t.core.handle_would_block(blocked, t.now);
    t.core.publish("", None, None, "0123456789", t.now).unwrap();
    // `partial` takes a few bytes of the first frame; its socket is then full.
    t.drain(Some(3));
    for _ in 0..2 {
        t.core.publish("", None, None, "0123456789", t.now).unwrap();
    }
    assert_eq!(t.core.backlog_bytes(blocked), Some(bound));
    assert!(t.core.is_live(blocked), "exactly at the bound");
    let owed = t.core.backlog_bytes(partial).unwrap();
    assert!(owed < bound && t.core.is_live(partial), "{owed} of {bound}");
    // The fourth frame evicts the first: `partial` owes the rest of it plus three frames.
    t.core.publish("", None, None, "0123456789", t.now).unwrap();
    t.drain(None);
    assert!(
        !t.core.is_live(partial),
        "past the bound with its frame in flight"
    );
    assert_eq!(t.core.metrics().closed(CloseReason::Slow), 2);
}

/// Keep-alives below 8 s are spread by an eighth of their period, not by up to a second
/// (kills `/` → `*` in `arm_keepalive`'s spread).
#[test]
fn short_keepalives_are_spread_by_an_eighth() {
    let mut c = cfg();
    c.interval = None;
    c.keepalive = Some(Duration::from_secs(2));
    let mut t = T::new(c);
    let ids: Vec<ClientId> = (0..32).map(|_| t.connect()).collect();
    for &id in &ids {
        t.core.handle_read(id, GET, t.now);
    }
    t.drain(None);
    // Every keep-alive falls within [2 s, 2.25 s): none before, all by its end.
    t.advance(Duration::from_millis(1_999));
    t.drain(None);
    assert!(ids.iter().all(|&id| !t.text(id).contains(": keep-alive")));
    t.advance(Duration::from_millis(251));
    t.drain(None);
    assert!(ids.iter().all(|&id| t.text(id).contains(": keep-alive")));
}

/// A refused request head is answered with its status and its one-line reason (kills
/// `HeadError::message` → `""` / `"xyzzy"`).
#[test]
fn a_refused_head_is_answered_with_its_reason() {
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "v".repeat(Config::default().max_head)
    );
    for (raw, status, reason) in [
        ("NOT HTTP\r\n\r\n".to_owned(), 400, "malformed request"),
        (huge, 431, "request head too large"),
        (
            "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
                .to_owned(),
            400,
            "conflicting or invalid Content-Length / Transfer-Encoding",
        ),
    ] {
        let mut t = T::new(cfg());
        let a = t.connect();
        t.core.handle_read(a, raw.as_bytes(), t.now);
        t.drain(None);
        let text = t.text(a);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        assert!(text.ends_with(&format!("{reason}\n")), "{text}");
    }
}
