//! The simulated network and driver side: connections, requests sent in pieces, send
//! windows, time, publishing, reconnects.

use super::render::percent_encode;
use super::*;

impl Sim {
    pub(super) fn connect(&mut self) -> Result<(), String> {
        let now = self.now();
        let at_limit = self.core.connections() >= self.cfg.max_connections;
        let peer = SocketAddr::from(([127, 0, 0, 1], 10_000 + self.conns.len() as u16));
        let Some(id) = self.core.handle_accept(peer, now) else {
            ensure!(
                self.shutting_down || at_limit,
                "a connection was refused with {} of {} connections and no shutdown",
                self.core.connections(),
                self.cfg.max_connections
            );
            self.trace("refused", 0, 0);
            self.coverage.reach(Reach::RefusedAtAccept);
            return Ok(());
        };
        ensure!(
            !self.shutting_down,
            "a connection was accepted during shutdown"
        );
        self.trace("accept", u64::from(id.key), u64::from(id.generation));
        let key = id.key as usize;
        if self.slots.len() <= key {
            self.slots.resize(key + 1, None);
        }
        if let Some((generation, old)) = self.slots[key].take() {
            // The core evicted this slot's connection to make room: close it now, as the
            // driver does; its `Close` is still queued and names the old generation.
            ensure!(
                at_limit,
                "accept reused slot {key} of a live connection below the connection limit"
            );
            ensure!(
                generation != id.generation,
                "accept reused slot {key} with the same generation {generation}"
            );
            self.conns[old].open = false;
            self.coverage.reach(Reach::EvictedAtAccept);
            self.evicted.push((
                ClientId {
                    key: id.key,
                    generation,
                },
                old,
            ));
        }
        let ci = self.conns.len();
        self.conns.push(Conn {
            id,
            open: true,
            window: self.initial_window,
            watching_writable: false,
            unread: Vec::new(),
            eof_unread: false,
            reading: true,
            raw: Vec::new(),
            closed: None,
            client_ended: false,
            sent: Vec::new(),
            held: None,
            incomplete: false,
            done: false,
            head_since: self.elapsed,
            want_stream: None,
            stream: None,
            maybe_over_limit: false,
            publishes: VecDeque::new(),
            responses_seen: 0,
            checked_upto: 0,
            inherited_id: String::new(),
            timed_out: false,
            extra_408: false,
            over_limit_complete: false,
            write_error: None,
            publish_ids: HashMap::new(),
        });
        self.slots[key] = Some((id.generation, ci));
        // Like the driver, the socket is registered for reads only: writable events are
        // watched from the first write that would block on.
        self.after_call(Some(id))?;
        self.drain()
    }

    /// Sends a request in pieces; each piece is one read, outputs drained after each.
    pub(super) fn request(
        &mut self,
        ci: usize,
        kind: &RequestKind,
        cuts: &[u16],
        hold_back: bool,
    ) -> Result<(), String> {
        if self.conns[ci].done || self.conns[ci].held.is_some() {
            return Ok(());
        }
        let (bytes, expect, want, publish) = self.render(kind);
        let points = cut_points(bytes.len(), cuts);
        let mut pieces = Vec::new();
        let mut prev = 0;
        for p in points {
            pieces.push(bytes[prev..p].to_vec());
            prev = p;
        }
        pieces.push(bytes[prev..].to_vec());
        // The last piece completes the request: it goes through `finish_request`.
        let last = pieces.pop().unwrap_or_default();
        {
            let c = &mut self.conns[ci];
            c.done |= expect.closes || want.is_some();
            c.incomplete = true;
            if want.is_none() {
                // The answer may come before the last byte (an error seen in the head).
                let late = self.elapsed >= c.head_since + self.cfg.head_timeout;
                c.sent.push(Expect { late, ..expect });
            }
        }
        for p in &pieces {
            self.deliver(ci, p)?;
            if !self.conns[ci].open {
                return Ok(());
            }
        }
        if hold_back {
            self.conns[ci].held = Some((last, want, publish));
            Ok(())
        } else {
            self.finish_request(ci, &last, want, publish)
        }
    }

    /// Sends several requests in one write (split at `cuts`): each gets its answer in
    /// order; nothing is sent after a stream request or one that closes.
    pub(super) fn pipelined(
        &mut self,
        ci: usize,
        kinds: &[RequestKind],
        cuts: &[u16],
    ) -> Result<(), String> {
        if self.conns[ci].done || self.conns[ci].held.is_some() || self.conns[ci].incomplete {
            return Ok(());
        }
        let mut bytes = Vec::new();
        let mut want = None;
        for kind in kinds {
            let (b, expect, w, publish) = self.render(kind);
            bytes.extend_from_slice(&b);
            let late = {
                let c = &self.conns[ci];
                self.elapsed >= c.head_since + self.cfg.head_timeout
            };
            let c = &mut self.conns[ci];
            if w.is_none() {
                c.sent.push(Expect {
                    late,
                    completed_at: Some(self.elapsed),
                    ..expect
                });
            }
            if let Some(mut p) = publish {
                p.expect_index = c.sent.len().saturating_sub(1);
                c.publishes.push_back(p);
            }
            if expect.closes || w.is_some() {
                c.done = true;
                want = w;
                break;
            }
        }
        self.conns[ci].want_stream = want;
        let mut points = cut_points(bytes.len(), cuts);
        points.push(bytes.len());
        let mut prev = 0;
        for p in points {
            self.deliver(ci, &bytes[prev..p])?;
            prev = p;
        }
        Ok(())
    }

    pub(super) fn send_rest(&mut self, ci: usize) -> Result<(), String> {
        let Some((rest, want, publish)) = self.conns[ci].held.take() else {
            return Ok(());
        };
        self.finish_request(ci, &rest, want, publish)
    }

    /// Records the request as complete, then delivers its last piece.
    pub(super) fn finish_request(
        &mut self,
        ci: usize,
        last: &[u8],
        want: Option<StreamWant>,
        publish: Option<PubReq>,
    ) -> Result<(), String> {
        let c = &mut self.conns[ci];
        if want.is_some() {
            c.want_stream = want;
        } else if c.incomplete
            && let Some(e) = c.sent.last_mut()
        {
            e.completed_at = Some(self.elapsed);
        }
        c.incomplete = false;
        if let Some(mut p) = publish {
            p.expect_index = c.sent.len().saturating_sub(1);
            c.publishes.push_back(p);
        }
        self.deliver(ci, last)
    }

    /// The client sends `bytes`: they wait in its socket until the driver reads them.
    pub(super) fn deliver(&mut self, ci: usize, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() || !self.conns[ci].open {
            return Ok(());
        }
        self.conns[ci].unread.extend_from_slice(bytes);
        self.read_socket(ci)
    }

    /// The driver reads what the client's socket holds as `Driver::read_client` does: at
    /// most [`Core::input_room`] (and its scratch buffer) per read, pausing at 0
    /// (backpressure) until the core has room again ([`Sim::resume_reads`]). A half-close
    /// is read once every byte sent before it is.
    pub(super) fn read_socket(&mut self, ci: usize) -> Result<(), String> {
        loop {
            let c = &self.conns[ci];
            if !c.open || (c.unread.is_empty() && !c.eof_unread) {
                return Ok(());
            }
            let id = c.id;
            // Like the driver: no read at all (not even of the end) while there is no room.
            let room = self.core.input_room(id).min(DRIVER_SCRATCH);
            if room == 0 {
                self.coverage.reach(Reach::ReadPaused);
                return Ok(());
            }
            if c.unread.is_empty() {
                self.conns[ci].eof_unread = false;
                self.trace("read_closed", u64::from(id.key), 0);
                self.core.handle_read_closed(id);
                self.after_call(Some(id))?;
                self.drain()?;
                return Ok(());
            }
            let n = room.min(c.unread.len());
            let bytes: Vec<u8> = self.conns[ci].unread.drain(..n).collect();
            let now = self.now();
            self.trace("read", u64::from(id.key), fnv(0, &bytes));
            self.core.handle_read(id, &bytes, now);
            self.after_call(Some(id))?;
            self.drain()?;
        }
    }

    /// Reads again from every socket whose reading paused for backpressure, as the driver
    /// does after performing outputs (an answer written makes room).
    pub(super) fn resume_reads(&mut self) -> Result<(), String> {
        if self.resuming {
            return Ok(());
        }
        self.resuming = true;
        let mut result = Ok(());
        for ci in 0..self.conns.len() {
            let c = &self.conns[ci];
            let waiting = c.open && (!c.unread.is_empty() || c.eof_unread);
            if waiting && self.core.input_room(c.id) > 0 {
                result = self.read_socket(ci);
                if result.is_err() {
                    break;
                }
            }
        }
        self.resuming = false;
        result
    }

    pub(super) fn open_window(&mut self, ci: usize, n: usize) -> Result<(), String> {
        let c = &mut self.conns[ci];
        if !c.reading || n == 0 {
            return Ok(());
        }
        let was_full = c.window == 0;
        c.window = (c.window + n).min(MAX_WINDOW);
        if was_full && c.watching_writable {
            // Edge-triggered: only the change from full to room is reported.
            let id = c.id;
            self.trace("writable", u64::from(id.key), n as u64);
            self.core.handle_writable(id);
            self.after_call(Some(id))?;
            self.drain()?;
        }
        Ok(())
    }
}

/// Time and events.
impl Sim {
    /// Time passes to `elapsed + d`, waking at every deadline on the way.
    pub(super) fn advance(&mut self, d: Duration) -> Result<(), String> {
        let target = self.elapsed + d;
        for _ in 0..10_000 {
            let next = self
                .core
                .next_deadline()
                .map(|t| t.saturating_duration_since(self.base));
            match next {
                Some(at) if at <= target => {
                    self.elapsed = self.elapsed.max(at);
                    self.timeout()?;
                }
                _ => {
                    self.elapsed = target;
                    return Ok(());
                }
            }
        }
        Err(format!(
            "no progress: 10000 deadlines before {target:?} (a deadline that does not move)"
        ))
    }

    pub(super) fn timeout(&mut self) -> Result<(), String> {
        let (now, wall) = (self.now(), self.wall());
        self.trace("timeout", self.elapsed.as_nanos() as u64, 0);
        self.core.handle_timeout(wall, now);
        if let Some(d) = self.core.next_deadline() {
            ensure!(
                d > now,
                "next deadline {:?} is not after now {:?} right after handle_timeout",
                d.saturating_duration_since(self.base),
                self.elapsed
            );
        }
        self.after_call(None)?;
        self.drain()
    }

    pub(super) fn publish(
        &mut self,
        topic: u8,
        event: Option<u8>,
        id: Option<u8>,
        data: &[Piece],
    ) -> Result<(), String> {
        let topic = usize::from(topic) % TOPICS.len();
        let event = event.map(|e| EVENTS[usize::from(e) % EVENTS.len()]);
        let id = id.map(|i| IDS[usize::from(i) % IDS.len()]);
        let data = build_data(data);
        let valid = publish_valid(event, id, &data);
        let now = self.now();
        let before = self.core.metrics().events_published;
        let room = self.topic_available(topic, &[]);
        let r = self.core.publish(TOPICS[topic], event, id, &data, now);
        let expect_ok = valid && !self.shutting_down && room;
        match &r {
            Ok(_) => ensure!(
                expect_ok,
                "publish of an invalid event (or during shutdown) succeeded: {event:?} {id:?} {data:?}"
            ),
            Err(e) => {
                ensure!(
                    !expect_ok,
                    "publish of a valid event failed with {} {}: {event:?} {id:?} {data:?}",
                    e.status(),
                    e.message()
                );
                if valid && !self.shutting_down {
                    ensure!(
                        e.status() == 503,
                        "publish to a full topic table failed with {} instead of 503",
                        e.status()
                    );
                    // (The model counts the refusal.)
                    let _ = self.model_topic_for(topic, &[]);
                }
            }
        }
        ensure!(
            self.core.metrics().events_published == before + u64::from(r.is_ok()),
            "events_published moved by other than one publish"
        );
        if let Ok(got) = r {
            let want = self.next_event_id(id);
            ensure!(
                got == want,
                "publish returned id {got:?}, expected {want:?}"
            );
            self.seen_published += 1;
            let Some(t) = self.model_topic_for(topic, &[]) else {
                return Err("publish succeeded on a full topic table".into());
            };
            self.model_append(t, Some(&want), event, &data, id.map(str::to_owned))?;
        }
        self.after_call(None)?;
        self.drain()
    }

    pub(super) fn reconnect(&mut self, n: u8) -> Result<(), String> {
        let streams: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].stream.is_some())
            .collect();
        if streams.is_empty() || self.shutting_down {
            return Ok(());
        }
        let old = streams[usize::from(n) % streams.len()];
        if self.conns[old].open {
            self.conns[old].client_ended = true;
            let id = self.conns[old].id;
            self.core.handle_read_closed(id);
            self.after_call(Some(id))?;
            self.drain()?;
        }
        let Some(s) = &self.conns[old].stream else {
            return Ok(());
        };
        let last = match s.parser.last_event_id() {
            "" => self.conns[old].inherited_id.clone(),
            id => id.to_owned(),
        };
        let topics: Vec<usize> = s
            .topics
            .iter()
            .map(|&t| self.topics[t].name)
            .filter(|&n| n != TICK)
            .collect();
        let before = self.conns.len();
        self.connect()?;
        if self.conns.len() == before || !self.conns[before].open {
            return Ok(());
        }
        let ci = before;
        self.conns[ci].inherited_id = last.clone();
        let mut target = String::from("/events");
        for (i, t) in topics.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str("topic=");
            target.push_str(&percent_encode(TOPICS[*t]));
        }
        let mut req =
            format!("GET {target} HTTP/1.1\r\nHost: sim\r\nAccept: text/event-stream\r\n");
        if !last.is_empty() {
            let _ = write!(req, "Last-Event-ID: {last}\r\n");
        }
        req.push_str("\r\n");
        let want = StreamWant {
            topics,
            last_id: (!last.is_empty()).then_some(last),
        };
        self.conns[ci].done = true;
        self.conns[ci].incomplete = true;
        self.finish_request(ci, req.as_bytes(), Some(want), None)
    }
}

/// Where a message of `len` bytes is split: each cut taken modulo `len + 1`, inside the
/// message, in order, without repeats.
fn cut_points(len: usize, cuts: &[u16]) -> Vec<usize> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (len + 1))
        .filter(|&c| c > 0 && c < len)
        .collect();
    points.sort_unstable();
    points.dedup();
    points
}
