//! The core's per-client timers: one heap, lazily cancelled.
//!
//! A timer names a client by [`ClientId`] (key and generation), so a timer of a departed
//! client, or of an earlier phase of the same connection, is recognised as stale when it
//! fires instead of being removed when it stops mattering. Keep-alives are jittered, so
//! deadlines are not monotonic per kind: one heap rather than a FIFO queue per kind.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::client::ClientId;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// The request head (or body) must be complete by now.
    Head,
    /// Check a streaming client: send a keep-alive if idle.
    KeepAlive,
    /// A closing or answering connection must have taken its bytes by now.
    Linger,
    /// A streaming client's token expires: send the `token-expired` reset and close.
    TokenExpiry,
}

/// One armed timer. Ordered by time, then client, then kind: equal deadlines fire in a
/// deterministic order (the simulator relies on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub at: Instant,
    pub client: ClientId,
    pub kind: TimerKind,
}

/// Every armed timer, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    /// Arms a timer of `kind` for `client` at `at`. Earlier timers of the same client and
    /// kind stay armed: the handler decides when one fires whether it is stale.
    pub fn arm(&mut self, client: ClientId, kind: TimerKind, at: Instant) {
        self.heap.push(Reverse(Timer { at, client, kind }));
    }

    /// When the earliest timer is due.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// Takes the earliest timer if it is due at `now`.
    pub fn next(&mut self, now: Instant) -> Option<Timer> {
        if self.next_at()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(t)| t)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(key: u32) -> ClientId {
        ClientId { key, generation: 1 }
    }

    #[test]
    fn fires_in_time_order_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.arm(id(1), TimerKind::Linger, t0 + Duration::from_secs(3));
        timers.arm(id(2), TimerKind::Head, t0 + Duration::from_secs(1));
        timers.arm(id(0), TimerKind::KeepAlive, t0 + Duration::from_secs(2));
        assert_eq!(timers.next_at(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.next(t0), None);
        let due = t0 + Duration::from_secs(2);
        assert_eq!(timers.next(due).map(|t| t.client), Some(id(2)));
        assert_eq!(timers.next(due).map(|t| t.kind), Some(TimerKind::KeepAlive));
        assert_eq!(timers.next(due), None);
        assert_eq!(timers.next_at(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn equal_deadlines_fire_by_client_then_kind() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.arm(id(5), TimerKind::Head, t0);
        timers.arm(id(3), TimerKind::Linger, t0);
        timers.arm(id(3), TimerKind::Head, t0);
        let order: Vec<_> = std::iter::from_fn(|| timers.next(t0))
            .map(|t| (t.client.key, t.kind))
            .collect();
        assert_eq!(
            order,
            [
                (3, TimerKind::Head),
                (3, TimerKind::Linger),
                (5, TimerKind::Head)
            ]
        );
    }
}
