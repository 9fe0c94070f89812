//! Performing the core's outputs on simulated sockets, through the same drain harness as
//! the driver ([`crate::core::drain`]), with the invariants checked after each.

use super::*;

impl Sim {
    /// Drains the core's outputs like the driver's `drain_outputs`.
    /// Performs the core's outputs through the shared drain harness until none are left.
    ///
    /// With a per-turn budget, the drain stops when it is used up, as the driver's does; the
    /// driver then knows it is busy and runs its next turn at once (here: the next drain,
    /// with nothing happening in between, since the driver's next turn finds no new events).
    pub(super) fn drain(&mut self) -> Result<(), String> {
        let budget = match self.outputs_per_turn {
            0 => MAX_OUTPUTS,
            n => n,
        };
        let mut performed = 0;
        while performed < MAX_OUTPUTS {
            if OutputSink::drain(self, budget)? {
                // As the driver after its drain: paused connections with room read again.
                return self.resume_reads();
            }
            self.coverage.reach(Reach::TurnBudgetExhausted);
            performed += budget;
        }
        Err(format!(
            "livelock: more than {MAX_OUTPUTS} outputs without the core settling"
        ))
    }

    pub(super) fn slot_conn(&self, id: ClientId) -> Option<usize> {
        match self.slots.get(id.key as usize) {
            Some(Some((generation, ci))) if *generation == id.generation => Some(*ci),
            _ => None,
        }
    }

    /// Takes what fits in the connection's send window of the slices the core offers.
    pub(super) fn on_write(&mut self, id: ClientId) -> Result<WriteOutcome, String> {
        let Some(ci) = self.slot_conn(id) else {
            return Err(format!(
                "Write for {id:?}, which has no open socket (a stale id reached the driver)"
            ));
        };
        if let Some(failure) = self.conns[ci].write_error.take() {
            self.conns[ci].client_ended = true;
            self.trace("write_error", u64::from(id.key), 0);
            return Ok(WriteOutcome::Failed(failure));
        }
        let window = self.conns[ci].window;
        let (n, taken) = offer(&self.core, id, |iov| {
            let mut taken = Vec::new();
            for s in iov {
                let room = window - taken.len();
                if room == 0 {
                    break;
                }
                taken.extend_from_slice(&s[..s.len().min(room)]);
            }
            (iov.len(), taken)
        });
        if n == crate::core::MAX_IOVECS {
            self.coverage.reach(Reach::ManyFramesBehind);
        }
        ensure!(n > 0, "Write output for {id:?} with nothing to write");
        if taken.is_empty() {
            self.trace("would_block", u64::from(id.key), 0);
            return Ok(WriteOutcome::WouldBlock);
        }
        self.trace("write", u64::from(id.key), fnv(0, &taken));
        let c = &mut self.conns[ci];
        c.window -= taken.len();
        c.raw.extend_from_slice(&taken);
        Ok(WriteOutcome::Wrote(taken.len()))
    }

    /// After a write was reported to the core: the driver side's follow-up.
    pub(super) fn on_written(&mut self, id: ClientId, outcome: WriteOutcome) -> Result<(), String> {
        let Some(ci) = self.slot_conn(id) else {
            return Err(format!("{id:?} lost its socket during a write"));
        };
        match outcome {
            // The driver starts watching writability now; re-registering reports no event
            // because the socket is full (window 0).
            WriteOutcome::WouldBlock => {
                self.conns[ci].watching_writable = true;
                Ok(())
            }
            WriteOutcome::Wrote(_) => self.on_received(ci),
            _ => Ok(()),
        }
    }

    pub(super) fn on_close(&mut self, id: ClientId, reason: CloseReason) -> Result<(), String> {
        ensure!(
            !self.core.is_live(id),
            "Close({id:?}) but the core still holds the client"
        );
        let mut iov = [IoSlice::new(&[]); 4];
        ensure!(
            self.core.write_slices(id, &mut iov) == 0,
            "a removed client {id:?} still has bytes to write"
        );
        let ci = match self.slot_conn(id) {
            Some(ci) => {
                self.slots[id.key as usize] = None;
                ci
            }
            None => {
                let Some(pos) = self.evicted.iter().position(|(e, _)| *e == id) else {
                    return Err(format!(
                        "Close for {id:?}, which the simulator does not hold (stale or twice)"
                    ));
                };
                self.evicted.swap_remove(pos).1
            }
        };
        let c = &mut self.conns[ci];
        ensure!(c.closed.is_none(), "connection {ci} closed twice");
        c.open = false;
        c.closed = Some(reason);
        self.coverage.reach(Reach::Close(reason));
        if reason == CloseReason::Slow {
            self.coverage.reach(Reach::SlowDropped);
        }
        self.verify_close(ci, reason)
    }

    /// After every call into the core: notice streams that started and events appended.
    pub(super) fn after_call(&mut self, by: Option<ClientId>) -> Result<(), String> {
        // First: a stream request refused meanwhile is still pending (nothing took it yet).
        self.check_admissions(by)?;
        let m = self.core.metrics();
        let (published, ticks) = (m.events_published, m.ticks);
        if ticks != self.seen_ticks {
            ensure!(
                ticks == self.seen_ticks + 1,
                "{} ticks in one call",
                ticks - self.seen_ticks
            );
            self.seen_ticks = ticks;
            let text = crate::timefmt::tick_text(self.wall());
            self.model_append(TICK, None, None, &text, None)?;
        }
        // One call can publish several events only for pipelined requests of one client.
        while published != self.seen_published {
            let ci = by.and_then(|id| {
                self.slot_conn(id)
                    .or_else(|| self.conns.iter().position(|c| c.id == id))
            });
            let Some(ci) = ci else {
                return Err("an event was published by no known request".into());
            };
            let Some(p) = self.conns[ci].publishes.pop_front() else {
                return Err(format!(
                    "connection {ci} published an event it did not send (or sent invalid)"
                ));
            };
            self.seen_published += 1;
            let id = self.next_event_id(p.id.as_deref());
            // The answer must carry it (checked when it arrives).
            self.conns[ci]
                .publish_ids
                .insert(p.expect_index, id.clone());
            let Some(t) = self.model_topic_for(p.topic, &[]) else {
                return Err(format!(
                    "connection {ci} published to topic {:?} although every topic has \
                     subscribers in the model's table",
                    TOPICS[p.topic]
                ));
            };
            self.model_append(t, Some(&id), p.event.as_deref(), &p.data, p.id.clone())?;
        }
        let skipped = self.core.metrics().skipped_forward;
        if skipped != self.seen_skipped {
            self.seen_skipped = skipped;
            self.coverage.reach(Reach::SlowSkipped);
        }
        let refused = self.core.metrics().responses(503);
        if refused != self.seen_503 {
            self.seen_503 = refused;
            self.on_503(by)?;
        }
        let streaming = self.core.streaming_clients();
        for ci in 0..self.conns.len() {
            let c = &self.conns[ci];
            if !c.open || c.want_stream.is_none() {
                continue;
            }
            if self.core.is_streaming(c.id) {
                self.subscribe(ci)?;
            } else if streaming >= self.cfg.max_clients || self.shutting_down {
                self.conns[ci].maybe_over_limit = true;
            }
        }
        Ok(())
    }
}

/// The simulator performs the core's outputs on simulated sockets through the same drain
/// harness as the driver, checking invariants after each.
impl OutputSink for Sim {
    type Error = String;

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn now(&self) -> Instant {
        Sim::now(self)
    }

    fn write(&mut self, id: ClientId) -> Result<WriteOutcome, String> {
        self.on_write(id)
    }

    fn after_write(&mut self, id: ClientId, outcome: WriteOutcome) -> Result<(), String> {
        self.on_written(id, outcome)
    }

    fn close(&mut self, id: ClientId, reason: CloseReason) -> Result<(), String> {
        self.trace("close", u64::from(id.key), reason as u64);
        self.on_close(id, reason)
    }

    /// The embedded mode's log answers inside the core: a request leaving it is a bug.
    fn log_request(&mut self, request: BusRequest) -> Result<(), String> {
        Err(format!(
            "the embedded core asked for a shared log: {request:?}"
        ))
    }

    /// This simulator configures no token keys: a token check leaving the core is a bug.
    fn verify(&mut self, request: crate::core::VerifyRequest) -> Result<(), String> {
        Err(format!(
            "a core without keys asked for a token check: {request:?}"
        ))
    }

    fn after_output(&mut self, client: Option<ClientId>) -> Result<(), String> {
        self.after_call(client)
    }
}
