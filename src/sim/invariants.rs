//! Whole-state invariants checked after every operation, and the justification of every
//! close the core made.

use super::*;

impl Sim {
    /// Checks why a connection was closed.
    pub(super) fn verify_close(&mut self, ci: usize, reason: CloseReason) -> Result<(), String> {
        let streaming = self.conns[ci].stream.is_some();
        if streaming {
            self.check_stream(ci)?;
        } else {
            self.check_responses(ci, true)?;
        }
        let c = &self.conns[ci];
        match reason {
            CloseReason::Reset | CloseReason::Error => ensure!(
                c.client_ended,
                "connection {ci} closed as {reason:?} but the client did nothing wrong"
            ),
            CloseReason::Normal => {
                if !c.client_ended {
                    ensure!(
                        !streaming,
                        "stream connection {ci} closed normally while the client still reads"
                    );
                    let last = c.sent.last();
                    ensure!(
                        c.timed_out || self.shutting_down || last.is_some_and(|e| e.closes),
                        "connection {ci} closed normally without a request that closes"
                    );
                    ensure!(
                        // (Shutting down, the server closes after the answer in hand.)
                        c.timed_out || self.shutting_down || c.responses_seen == c.sent.len(),
                        "connection {ci} closed normally after {} of {} responses",
                        c.responses_seen,
                        c.sent.len()
                    );
                }
            }
            CloseReason::Slow => {
                ensure!(streaming, "non-stream connection {ci} closed as slow");
                ensure!(
                    self.cfg.slow_client == SlowClientPolicy::Drop,
                    "connection {ci} closed as slow under the `latest` policy"
                );
                let (bytes, unstarted, evicted) = self.lag(ci);
                let (max_bytes, max_events) = self.model_backlog_limit(ci);
                // The core counts every unsent byte, including a keep-alive comment queued
                // ahead of the frames (at most one: it is queued only when nothing else is),
                // which the model cannot see until it arrives.
                let keepalive_slack = crate::sse::frame::KEEPALIVE.len() as u64;
                ensure!(
                    !self.strict_slow
                        || bytes + keepalive_slack > max_bytes
                        || unstarted > max_events
                        || evicted,
                    "connection {ci} closed as slow although only {bytes} bytes / {unstarted} \
                     events behind, none evicted"
                );
            }
            CloseReason::Limit => {
                ensure!(!streaming, "stream connection {ci} closed as over a limit");
                // Over the client limit (told so in full), or evicted at the connection
                // limit while reading a head (its first, or idle between kept-alive
                // requests: every answer taken) or a body.
                ensure!(
                    c.over_limit_complete
                        || (c.responses_seen == 0 && !c.done)
                        || c.responses_seen == c.sent.len()
                        || c.incomplete,
                    "connection {ci} closed as over a limit without being told or evicted"
                );
            }
            CloseReason::Timeout => {
                ensure!(!streaming, "stream connection {ci} closed by a timeout");
                // Either an answer was not taken within the linger time, or the connection
                // sat in a head phase for the whole head timeout.
                let lingering = c.responses_seen < c.sent.len() + usize::from(c.extra_408)
                    || (c.want_stream.is_some() && !c.over_limit_complete);
                ensure!(
                    lingering || self.elapsed >= c.head_since + self.cfg.head_timeout,
                    "connection {ci} closed by a timeout at {:?}, {:?} after its head phase \
                     began (head timeout {:?})",
                    self.elapsed,
                    self.elapsed - c.head_since,
                    self.cfg.head_timeout
                );
            }
            CloseReason::Shutdown => ensure!(
                self.shutting_down,
                "connection {ci} closed for shutdown without a shutdown"
            ),
            CloseReason::TokenExpired => ensure!(
                streaming && self.cfg.auth.tokens_enabled(),
                "connection {ci} closed for an expired token without a token stream"
            ),
        }
        Ok(())
    }

    /// The backlog bound of stream client `ci` (bytes, events), as documented: the
    /// configured bound raised to a whole history on every topic of the client (ticks are
    /// never replayed, so the tick topic adds nothing), so that a resume of every retained
    /// event on all its topics is never taken for slowness.
    pub(super) fn model_backlog_limit(&self, ci: usize) -> (u64, u64) {
        let topics = self.conns[ci]
            .stream
            .as_ref()
            .map_or(0, |s| s.topics.iter().filter(|&&t| t != TICK).count())
            as u64;
        (
            self.cfg
                .max_backlog
                .max(topics * self.cfg.history_bytes as u64),
            self.cfg
                .max_backlog_events
                .max(topics * self.cfg.history as u64),
        )
    }

    /// (bytes not yet received, frames not yet started, an unstarted frame left history).
    pub(super) fn lag(&self, ci: usize) -> (u64, u64, bool) {
        let c = &self.conns[ci];
        let Some(s) = &c.stream else {
            return (0, 0, false);
        };
        let total: u64 =
            STREAM_HEAD.len() as u64 + s.expected.iter().map(|f| f.bytes.len() as u64).sum::<u64>();
        let got = STREAM_HEAD.len().min(c.raw.len() - s.head_at) as u64 + s.received_frame_bytes;
        // A frame in flight (a keep-alive comment in flight is not one: frames never start
        // with `:`).
        let partial = c.raw.get(s.pos).is_some_and(|&b| b != b':');
        let first_unstarted = s.matched + usize::from(partial);
        let unstarted = s.expected.len().saturating_sub(first_unstarted) as u64;
        let evicted = s.expected.iter().skip(first_unstarted).any(|f| {
            f.model.is_some_and(|m| {
                let e = &self.events[m];
                e.local_seq < self.topics[e.topic].first_seq
            })
        });
        (total.saturating_sub(got), unstarted, evicted)
    }

    /// Every invariant, checked after each operation.
    pub fn check(&mut self) -> Result<(), String> {
        let r = self.check_all();
        self.appended.clear();
        r
    }

    /// The core's counters agree with what the simulator saw: every accept, refusal and
    /// close, by reason (an operator's dashboards read them).
    fn check_metrics(&self) -> Result<(), String> {
        let m = self.core.metrics();
        ensure!(
            m.accepted == self.conns.len() as u64,
            "metrics count {} accepted connections, the simulator accepted {}",
            m.accepted,
            self.conns.len()
        );
        let refused = self.coverage.count(Reach::RefusedAtAccept);
        ensure!(
            m.refused == refused,
            "metrics count {} refused connections, the simulator saw {refused}",
            m.refused
        );
        for reason in CloseReason::ALL {
            let seen = self.coverage.count(Reach::Close(reason));
            ensure!(
                m.closed(reason) == seen,
                "metrics count {} closes for {reason:?}, the simulator performed {seen}",
                m.closed(reason)
            );
        }
        Ok(())
    }

    pub(super) fn check_all(&self) -> Result<(), String> {
        self.core
            .check_invariants()
            .map_err(|e| format!("core invariant: {e}"))?;
        let open = self.open_conns();
        ensure!(
            self.core.connections() == open.len(),
            "registry holds {} connections, the simulator has {} open sockets",
            self.core.connections(),
            open.len()
        );
        ensure!(
            self.core.connections() <= self.cfg.max_connections,
            "{} connections over the limit {}",
            self.core.connections(),
            self.cfg.max_connections
        );
        let streams = open
            .iter()
            .filter(|&&ci| self.conns[ci].stream.is_some())
            .count();
        ensure!(
            self.core.streaming_clients() == streams,
            "core counts {} stream clients, the simulator {}",
            self.core.streaming_clients(),
            streams
        );
        ensure!(
            streams <= self.cfg.max_clients,
            "{streams} stream clients over max_clients {}",
            self.cfg.max_clients
        );
        self.check_metrics()?;
        let now = self.now();
        let deadline = self.core.next_deadline();
        let head_phase = open.iter().any(|&ci| {
            let c = &self.conns[ci];
            c.stream.is_none() && c.want_stream.is_none()
        });
        ensure!(
            deadline.is_some()
                || !(head_phase || (self.cfg.interval.is_some() && !self.shutting_down)),
            "no deadline although connections wait for a head or ticks are due"
        );
        let _ = now;
        let latest = self.cfg.slow_client == SlowClientPolicy::Latest;
        for &ci in &open {
            let c = &self.conns[ci];
            let id = c.id;
            ensure!(
                self.core.is_live(id),
                "the simulator holds connection {ci} ({id:?}) that the core forgot"
            );
            let backlog = self.core.backlog_bytes(id).unwrap_or(0);
            ensure!(
                c.window == 0 || backlog == 0,
                "stall: connection {ci} has {backlog} bytes queued and {} bytes of room, but the \
                 core stopped writing (edge-triggered: no writable event will come)",
                c.window
            );
            let Some(s) = &c.stream else { continue };
            let (lag_bytes, unstarted, _) = self.lag(ci);
            let bounded = s.topics.iter().any(|t| self.appended.contains(t));
            let (max_bytes, max_events) = self.model_backlog_limit(ci);
            // The bound is on event frames; the stream head, `retry:` and a reset frame may
            // still be queued ahead of them.
            let prelude = (STREAM_HEAD.len()
                + s.expected
                    .iter()
                    .filter(|f| f.model.is_none())
                    .map(|f| f.bytes.len())
                    .sum::<usize>()) as u64;
            if latest {
                let bound = max_bytes.max(2 * self.max_frame as u64)
                    + frame::KEEPALIVE.len() as u64
                    + prelude;
                ensure!(
                    !bounded || backlog <= bound,
                    "connection {ci}: backlog {backlog} bytes over the `latest` bound {bound}"
                );
            } else if bounded {
                ensure!(
                    backlog <= max_bytes + frame::KEEPALIVE.len() as u64 + prelude,
                    "connection {ci}: backlog {backlog} bytes over the bound {max_bytes} after \
                     an append (policy drop)"
                );
                // Prelude and gap frames are pending bytes, not events: allow for them.
                ensure!(
                    unstarted <= max_events + 2,
                    "connection {ci}: {unstarted} events behind, over the bound {max_events} \
                     after an append (policy drop)"
                );
            }
            ensure!(
                lag_bytes == backlog || c.window == 0 || latest,
                "connection {ci}: the core has {backlog} bytes queued, the model {lag_bytes}"
            );
            if c.window > 0 {
                // Nothing queued and room left: everything due must have arrived whole.
                ensure!(
                    s.pos == c.raw.len(),
                    "connection {ci} has room and nothing queued but holds a partial frame {:?}",
                    String::from_utf8_lossy(&c.raw[s.pos..])
                );
                let newest_received =
                    latest && s.expected.last().map(|f| &f.bytes) == s.last_frame.as_ref();
                ensure!(
                    s.matched == s.expected.len() || newest_received,
                    "connection {ci} has room and nothing queued, yet received {} of {} frames \
                     (first missing: {:?})",
                    s.matched,
                    s.expected.len(),
                    s.expected
                        .get(s.matched)
                        .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
                );
            }
        }
        Ok(())
    }
}
