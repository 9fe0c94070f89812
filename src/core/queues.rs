//! The order outputs leave the core in: closes first (a slab key is released to the driver
//! before a new connection could reuse it), then complete answers, then streams. A client
//! is listed at most once per write queue (its `queued` flag, kept by the core).

use std::collections::VecDeque;

use super::client::ClientId;
use super::metrics::CloseReason;

/// Clients waiting for a write, and closes waiting to be performed.
#[derive(Debug, Default)]
pub(super) struct OutputQueues {
    closes: VecDeque<(ClientId, CloseReason)>,
    /// Non-streaming connections with a response to send: served before `streams`.
    answers: VecDeque<ClientId>,
    streams: VecDeque<ClientId>,
}

impl OutputQueues {
    /// The client is gone: its `Close` goes out before any write.
    pub(super) fn push_close(&mut self, id: ClientId, reason: CloseReason) {
        self.closes.push_back((id, reason));
    }

    /// A client with bytes to write: streams after answers.
    pub(super) fn push_write(&mut self, id: ClientId, streaming: bool) {
        if streaming {
            self.streams.push_back(id);
        } else {
            self.answers.push_back(id);
        }
    }

    pub(super) fn pop_close(&mut self) -> Option<(ClientId, CloseReason)> {
        self.closes.pop_front()
    }

    /// The next client to write to: answers first. The id may be stale (the caller checks).
    pub(super) fn pop_write(&mut self) -> Option<ClientId> {
        self.answers
            .pop_front()
            .or_else(|| self.streams.pop_front())
    }

    /// True when no stream waits for a write (a fan-out is complete).
    pub(super) fn streams_done(&self) -> bool {
        self.streams.is_empty()
    }
}
