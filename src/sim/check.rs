//! Checking what each client received, as it arrives: responses, and event streams
//! decoded with the WHATWG parser against the model.

use super::*;

impl Sim {
    /// New bytes arrived at connection `ci`: check them as far as they go.
    pub(super) fn on_received(&mut self, ci: usize) -> Result<(), String> {
        if self.conns[ci].stream.is_some() {
            return self.check_stream(ci);
        }
        self.check_responses(ci, false)
    }

    /// Checks the responses received so far on a non-stream connection (all of them, and
    /// that the last is complete, when `final_close`).
    pub(super) fn check_responses(&mut self, ci: usize, final_close: bool) -> Result<(), String> {
        let head_timeout = self.cfg.head_timeout;
        let elapsed = self.elapsed;
        let shutting_down = self.shutting_down;
        let c = &mut self.conns[ci];
        let end = c.stream.as_ref().map_or(c.raw.len(), |s| s.head_at);
        // Responses already checked are not looked at again (a flood brings thousands).
        let mut pos = c.checked_upto;
        let mut index = c.responses_seen;
        while pos < end {
            let rest = &c.raw[pos..end];
            if index == c.sent.len() && c.want_stream.is_some() && rest.len() < 13 {
                // Too short to tell a 408 from the stream head yet.
                return Ok(());
            }
            if index == c.sent.len()
                && c.want_stream.is_some()
                && !rest.starts_with(b"HTTP/1.1 408 ")
            {
                // A stream request the core did not stream: over the client limit, it gets
                // the stream head and a `retry:`, then a close.
                ensure!(
                    c.maybe_over_limit,
                    "connection {ci}: a stream request below the client limit was answered \
                     {:?}",
                    String::from_utf8_lossy(rest)
                );
                let want = STREAM_HEAD.as_bytes();
                let n = rest.len().min(want.len());
                let tail = &rest[n..];
                ensure!(
                    rest[..n] == want[..n]
                        && b"retry: "[..tail.len().min(7)] == tail[..tail.len().min(7)]
                        && tail
                            .iter()
                            .skip(7)
                            .all(|b| b.is_ascii_digit() || *b == b'\n'),
                    "connection {ci}: over the client limit, answered {:?}",
                    String::from_utf8_lossy(rest)
                );
                c.over_limit_complete = tail.len() > 7 && tail.ends_with(b"\n\n");
                if c.over_limit_complete {
                    self.coverage.reach(Reach::OverClientLimit);
                }
                return Ok(());
            }
            let Some(head_len) = find(rest, b"\r\n\r\n").map(|i| i + 4) else {
                ensure!(
                    !final_close || c.closed != Some(CloseReason::Normal) || c.client_ended,
                    "connection {ci} closed normally inside a response head: {:?}",
                    String::from_utf8_lossy(rest)
                );
                return Ok(());
            };
            let head = String::from_utf8_lossy(&rest[..head_len]).into_owned();
            let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let head_only = c.sent.get(index).is_some_and(|e| e.head_only) && status == 200;
            let body_len = if head_only {
                0
            } else {
                match content_length(&head) {
                    Some(n) => n,
                    None => {
                        return Err(format!(
                            "connection {ci}: response without Content-Length: {head:?}"
                        ));
                    }
                }
            };
            if rest.len() < head_len + body_len {
                return Ok(());
            }
            let body = String::from_utf8_lossy(&rest[head_len..head_len + body_len]);
            match c.sent.get(index) {
                Some(exp) => {
                    let due = c.head_since + head_timeout;
                    let timed_out = status == 408
                        && (exp.completed_at.is_none_or(|t| t >= due) || exp.late)
                        && elapsed >= due;
                    c.timed_out |= timed_out;
                    // Once shutting down, a publish is refused with 503 whatever else.
                    let refused = status == 503 && shutting_down;
                    ensure!(
                        exp.statuses.contains(&status) || timed_out || refused,
                        "connection {ci}: response #{index} is {status}, expected one of {:?} \
                         (body {body:?})",
                        exp.statuses
                    );
                    if head_only {
                        ensure!(
                            rest[..head_len] == *STREAM_HEAD.as_bytes(),
                            "HEAD /events answered with {head:?}"
                        );
                    }
                    // A publish answer is its event's id (what the model numbered it).
                    if let Some(id) = c.publish_ids.get(&index).filter(|_| status == 200) {
                        ensure!(
                            body == format!("{id}\n"),
                            "connection {ci}: publish answered {body:?}, expected the id {id:?}"
                        );
                    }
                    if status == 200 && !exp.closes && index >= c.responses_seen {
                        c.head_since = elapsed;
                    }
                }
                None => {
                    // A response to no request (none was begun): only a 408.
                    ensure!(
                        status == 408,
                        "connection {ci}: unexpected response #{index} {status} ({body:?}) to an \
                         incomplete request"
                    );
                    ensure!(
                        elapsed >= c.head_since + head_timeout,
                        "connection {ci}: 408 at {elapsed:?}, before the head timeout (phase \
                         began at {:?})",
                        c.head_since
                    );
                    c.timed_out = true;
                    c.extra_408 = true;
                }
            }
            if index >= c.responses_seen {
                self.coverage.reach(Reach::Status(status));
            }
            index += 1;
            c.responses_seen = c.responses_seen.max(index);
            pos += head_len + body_len;
            c.checked_upto = pos;
        }
        Ok(())
    }

    /// Checks a stream client's bytes: the head, then whole frames in order (any split).
    pub(super) fn check_stream(&mut self, ci: usize) -> Result<(), String> {
        self.check_responses(ci, false)?;
        let latest = self.cfg.slow_client == SlowClientPolicy::Latest;
        let c = &mut self.conns[ci];
        let Some(s) = &mut c.stream else {
            return Ok(());
        };
        let head_end = (s.head_at + STREAM_HEAD.len()).min(c.raw.len());
        ensure!(
            c.raw[s.head_at..head_end] == STREAM_HEAD.as_bytes()[..head_end - s.head_at],
            "connection {ci}: the stream does not start with the stream head: {:?}",
            String::from_utf8_lossy(&c.raw[s.head_at..head_end])
        );
        while s.pos < c.raw.len() {
            let rest = &c.raw[s.pos..];
            let Some(end) = find(rest, b"\n\n").map(|i| i + 2) else {
                // A partial frame: a prefix of the next frame (or of a keep-alive).
                let ok = frame::KEEPALIVE.starts_with(rest)
                    || if latest {
                        s.expected[s.matched..]
                            .iter()
                            .any(|f| f.bytes.starts_with(rest))
                    } else {
                        s.expected
                            .get(s.matched)
                            .is_some_and(|f| f.bytes.starts_with(rest))
                    };
                ensure!(
                    ok,
                    "connection {ci}: received bytes that begin no expected frame: {:?} \
                     (next expected: {:?})",
                    String::from_utf8_lossy(rest),
                    s.expected
                        .get(s.matched)
                        .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
                );
                return Ok(());
            };
            let got = &rest[..end];
            let mut events = Vec::new();
            s.parser.feed(got, |e| events.push(e));
            if got == frame::KEEPALIVE {
                ensure!(
                    events.is_empty(),
                    "a keep-alive comment dispatched an event"
                );
                s.pos += end;
                continue;
            }
            let k = if latest {
                s.expected[s.matched..]
                    .iter()
                    .position(|f| *f.bytes == *got)
                    .map(|i| s.matched + i)
            } else {
                (s.expected.get(s.matched).is_some_and(|f| *f.bytes == *got)).then_some(s.matched)
            };
            let Some(k) = k else {
                return Err(format!(
                    "connection {ci}: frame #{} is {:?}, expected {:?} (a frame lost, \
                     duplicated, reordered or cut)",
                    s.matched,
                    String::from_utf8_lossy(got),
                    s.expected
                        .get(s.matched)
                        .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
                ));
            };
            let f = &s.expected[k];
            match (&f.event, events.as_slice()) {
                (None, []) => {}
                (Some(want), [e]) => {
                    ensure!(
                        e.event_type == want.event_type && e.data == want.data,
                        "connection {ci}: the parser decoded {e:?}, expected {want:?}"
                    );
                    if let Some(id) = &want.id {
                        ensure!(
                            e.last_event_id == *id,
                            "connection {ci}: parser id {:?}, expected {id:?}",
                            e.last_event_id
                        );
                    }
                }
                (want, got) => {
                    return Err(format!(
                        "connection {ci}: the parser dispatched {got:?} for a frame that should \
                         give {want:?}"
                    ));
                }
            }
            s.dispatched.extend(events);
            s.received_frame_bytes += f.bytes.len() as u64;
            s.last_frame = Some(f.bytes.clone());
            s.matched = k + 1;
            s.pos += end;
        }
        Ok(())
    }
}
