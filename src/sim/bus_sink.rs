//! The cluster simulator's driver side: one node's outputs performed on its simulated
//! clients (writes recorded, closes marked) and its requests for the bus queued, through the
//! same drain harness as the driver.

use super::*;

pub(super) struct Sink<'a> {
    pub(super) sim: &'a mut ClusterSim,
    pub(super) node: usize,
}

impl OutputSink for Sink<'_> {
    type Error = std::convert::Infallible;

    fn core(&mut self) -> &mut Core {
        &mut self.sim.nodes[self.node].core
    }

    fn now(&self) -> Instant {
        self.sim.now
    }

    fn write(&mut self, id: ClientId) -> Result<WriteOutcome, Self::Error> {
        let node = self.node;
        let client = self
            .sim
            .clients
            .iter()
            .position(|c| c.node == node && c.id == id && !c.closed);
        if client.is_some_and(|c| self.sim.clients[c].blocked) {
            return Ok(WriteOutcome::WouldBlock);
        }
        let bytes: Vec<u8> = offer(&self.sim.nodes[node].core, id, |iov| {
            iov.iter().flat_map(|s| s.iter().copied()).collect()
        });
        if bytes.is_empty() {
            return Ok(WriteOutcome::Skipped);
        }
        if let Some(c) = client {
            self.sim.clients[c].bytes.extend_from_slice(&bytes);
        }
        Ok(WriteOutcome::Wrote(bytes.len()))
    }

    fn after_write(&mut self, _: ClientId, _: WriteOutcome) -> Result<(), Self::Error> {
        Ok(())
    }

    fn close(&mut self, id: ClientId, reason: CloseReason) -> Result<(), Self::Error> {
        let node = self.node;
        for c in &mut self.sim.clients {
            if c.node == node && c.id == id && !c.closed {
                c.closed = true;
                c.dropped_reading = reason == CloseReason::Slow && !c.blocked;
            }
        }
        Ok(())
    }

    fn log_request(&mut self, request: BusRequest) -> Result<(), Self::Error> {
        self.sim.nodes[self.node].requests.push_back(request);
        Ok(())
    }

    /// The cluster simulator configures no token keys (the core never asks); were it to,
    /// the check is answered at once.
    fn verify(&mut self, request: crate::core::VerifyRequest) -> Result<(), Self::Error> {
        let now = self.sim.now;
        crate::core::drain::check_now(self.core(), &request, now);
        Ok(())
    }
}
