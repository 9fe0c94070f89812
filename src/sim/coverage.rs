//! The coverage oracle: what a run reached (close reasons, response statuses, reset reasons,
//! slow-client outcomes, topic-table paths, limits), so a test can require that a default
//! run reaches every one of them. A new reason must be added to [`Reach::ALL`].

use std::collections::HashMap;

use crate::core::CloseReason;

/// One thing a run can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    Close(CloseReason),
    /// A complete (non-stream) response with this status.
    Status(u16),
    /// A stream began with `event: reset` and this reason.
    ResetTooOld,
    ResetUnknownId,
    ResetRestart,
    /// A resume replayed retained events.
    Replayed,
    /// A resume from an id of this run one past its newest number (not issued: unknown-id).
    ResumedPastNewest,
    /// A resume from a retained event of the client's topics (which is not replayed).
    ResumedFromRetained,
    /// A resume whose replay begins with the event numbered right after the id's.
    ResumedBeforeNext,
    /// `--slow-client drop` closed a client.
    SlowDropped,
    /// `--slow-client latest` skipped a client forward.
    SlowSkipped,
    /// A stream request over `--max-clients` got the stream head, `retry:` and a close.
    OverClientLimit,
    /// A stream request past `--max-stream-rate` was told to come back.
    StreamRateRefused,
    /// A connection was refused at accept (connection limit or shutdown).
    RefusedAtAccept,
    /// The oldest connection still reading its first head was evicted for a newcomer.
    EvictedAtAccept,
    TopicCreated,
    TopicRecycled,
    /// A topic recycled by a request that took another new topic before it.
    TopicRecycledBesideNew,
    /// A new topic refused: every named topic has subscribers.
    TopicRefused,
    /// History evicted an event (by count or bytes).
    HistoryEvicted,
    /// A client took more than `MAX_IOVECS` frames in one write.
    ManyFramesBehind,
    /// The per-turn output budget ran out and the rest waited for the next turn.
    TurnBudgetExhausted,
    /// The driver stopped reading a connection whose pipelined bytes filled what the core
    /// buffers while answers are unread (backpressure), and read the rest later.
    ReadPaused,
}

impl Reach {
    /// Everything a default run must reach.
    pub const ALL: &'static [Reach] = &[
        Reach::Close(CloseReason::Normal),
        Reach::Close(CloseReason::Reset),
        Reach::Close(CloseReason::Error),
        Reach::Close(CloseReason::Slow),
        Reach::Close(CloseReason::Limit),
        Reach::Close(CloseReason::Timeout),
        Reach::Close(CloseReason::Shutdown),
        Reach::Status(200),
        Reach::Status(400),
        Reach::Status(404),
        Reach::Status(405),
        Reach::Status(408),
        Reach::Status(411),
        Reach::Status(413),
        Reach::Status(431),
        Reach::Status(503),
        Reach::ResetTooOld,
        Reach::ResetUnknownId,
        Reach::ResetRestart,
        Reach::Replayed,
        Reach::ResumedPastNewest,
        Reach::ResumedFromRetained,
        Reach::ResumedBeforeNext,
        Reach::SlowDropped,
        Reach::SlowSkipped,
        Reach::OverClientLimit,
        Reach::StreamRateRefused,
        Reach::RefusedAtAccept,
        Reach::EvictedAtAccept,
        Reach::TopicCreated,
        Reach::TopicRecycled,
        Reach::TopicRecycledBesideNew,
        Reach::TopicRefused,
        Reach::HistoryEvicted,
        Reach::ManyFramesBehind,
        Reach::TurnBudgetExhausted,
        Reach::ReadPaused,
    ];
}

/// How often a run reached each [`Reach`].
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    counts: HashMap<Reach, u64>,
}

impl Coverage {
    /// Counts one occurrence.
    pub fn reach(&mut self, r: Reach) {
        *self.counts.entry(r).or_default() += 1;
    }

    /// Adds another run's counts.
    pub fn merge(&mut self, other: &Coverage) {
        for (r, n) in &other.counts {
            *self.counts.entry(*r).or_default() += n;
        }
    }

    /// How often `r` was reached.
    pub fn count(&self, r: Reach) -> u64 {
        self.counts.get(&r).copied().unwrap_or(0)
    }

    /// What of [`Reach::ALL`] was never reached.
    pub fn missing(&self) -> Vec<Reach> {
        Reach::ALL
            .iter()
            .copied()
            .filter(|r| self.count(*r) == 0)
            .collect()
    }

    /// One line per thing of [`Reach::ALL`] with its count.
    pub fn report(&self) -> String {
        Reach::ALL
            .iter()
            .map(|r| format!("{r:?}: {}\n", self.count(*r)))
            .collect()
    }
}
