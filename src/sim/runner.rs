//! Liveness and the end of a run: jump to deadlines, heal the network and settle, finish
//! with a shutdown.

use super::*;

impl Sim {
    /// Moves the clock to the core's next deadline, runs the timeout and checks every
    /// invariant. Returns false when the core has no deadline (nothing will happen by itself).
    pub(super) fn jump_to_next_deadline(&mut self) -> Result<bool, String> {
        let Some(d) = self.core.next_deadline() else {
            return Ok(false);
        };
        self.elapsed = self.elapsed.max(d.saturating_duration_since(self.base));
        self.timeout()?;
        self.check()?;
        Ok(true)
    }

    /// Heals every fault (all clients read, sockets get room, held-back bytes stay held) and
    /// runs the clock until every open connection is a stream client with nothing missing.
    /// Fails with "no liveness" when that takes more than `max_steps` wake-ups.
    pub fn heal_and_settle(&mut self, max_steps: usize) -> Result<(), String> {
        let latest = self.cfg.slow_client == SlowClientPolicy::Latest;
        for _ in 0..max_steps {
            for ci in self.open_conns() {
                self.conns[ci].reading = true;
                self.open_window(ci, MAX_WINDOW)?;
            }
            self.check()?;
            let settled = self.open_conns().iter().all(|&ci| {
                let c = &self.conns[ci];
                c.stream.as_ref().is_some_and(|s| {
                    s.matched == s.expected.len()
                        || (latest && s.expected.last().map(|f| &f.bytes) == s.last_frame.as_ref())
                })
            });
            if settled {
                return Ok(());
            }
            if !self.jump_to_next_deadline()? {
                break;
            }
        }
        let stuck: Vec<String> = self
            .open_conns()
            .iter()
            .map(|&ci| {
                let c = &self.conns[ci];
                format!(
                    "#{ci} stream={} want={} sent={} raw={}",
                    c.stream.is_some(),
                    c.want_stream.is_some(),
                    c.sent.len(),
                    c.raw.len()
                )
            })
            .collect();
        Err(format!(
            "no liveness: after healing, {} connections still open and unsettled after \
             {max_steps} wake-ups: {stuck:?}",
            stuck.len()
        ))
    }

    /// Shuts the server down and runs until it finishes; then no socket may be left open.
    pub fn finish(&mut self, max_steps: usize) -> Result<(), String> {
        self.apply(&Op::Shutdown)?;
        for _ in 0..max_steps {
            if self.core.is_finished() {
                break;
            }
            for ci in self.open_conns() {
                self.open_window(ci, MAX_WINDOW)?;
            }
            if self.core.is_finished() {
                break;
            }
            if !self.jump_to_next_deadline()? {
                break;
            }
        }
        ensure!(
            self.core.is_finished(),
            "no liveness: shutdown did not finish within {max_steps} wake-ups ({} connections)",
            self.core.connections()
        );
        let open = self.open_conns().len();
        ensure!(
            open == 0,
            "{open} sockets still open after shutdown finished"
        );
        Ok(())
    }
}
