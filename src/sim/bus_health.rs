//! The cluster simulator's oracle of `/health`'s `not applying the log`: from the log's own
//! history (never from the core's marks), a node may say it only when the log's head, in
//! the epoch the node follows, has been above the offset it applied for at least the
//! bound, without a break; and once everything is delivered, no node says it. Time passes
//! with [`ClusterOp::Wait`], which runs every node's timers (the head probe among them).
//! A failover's dip of the head (below a node's applied offset, until publishes reuse the
//! offsets) is no break for a node that has not greeted the log since: it cannot see it.

use std::collections::HashMap;

use super::*;

/// The bound the simulated nodes run with: twenty steps of 10 ms, so that scenarios reach it.
pub(super) const APPLY_BOUND: Duration = Duration::from_millis(200);

/// What the oracle has seen so far.
pub(super) struct HealthOracle {
    /// Per node: since when the log's head has been above the node's applied offset, in
    /// the epoch the node follows, without a break (`None`: caught up).
    behind_since: Vec<Option<Instant>>,
    /// Per node: a failover lowered the head since its tail last greeted.
    dipped: Vec<bool>,
    /// The newest head of every epoch the log had (an epoch's head stays once it is lost).
    heads: HashMap<String, u64>,
    /// The first violation seen, reported by [`ClusterSim::check`].
    violation: Option<String>,
    /// Steps at which some node said it was not applying the log.
    pub(super) stalls_seen: usize,
    /// Head probes the log answered.
    pub(super) probes_answered: usize,
}

impl HealthOracle {
    pub(super) fn new() -> HealthOracle {
        HealthOracle {
            behind_since: Vec::new(),
            dipped: Vec::new(),
            heads: HashMap::new(),
            violation: None,
            stalls_seen: 0,
            probes_answered: 0,
        }
    }

    /// The log failed over: no node has seen its head go back yet.
    pub(super) fn failed_over(&mut self, nodes: usize) {
        self.dipped = vec![true; nodes];
    }

    /// Node `n`'s tail greeted: it has read the log's head.
    pub(super) fn greeted(&mut self, n: usize) {
        if let Some(d) = self.dipped.get_mut(n) {
            *d = false;
        }
    }

    /// The first violation, if any.
    pub(super) fn verdict(&self) -> Result<(), String> {
        match &self.violation {
            Some(v) => Err(v.clone()),
            None => Ok(()),
        }
    }
}

impl ClusterSim {
    /// Steps at which some node said `not applying the log`, and head probes answered.
    pub fn health_seen(&self) -> (usize, usize) {
        (self.health.stalls_seen, self.health.probes_answered)
    }

    /// Time passes: every node's timers run (the head probe is one), then its outputs.
    pub(super) fn wait(&mut self, by: Duration) {
        self.now += by;
        let wall = Utc
            .timestamp_opt(1_728_830_122, 0)
            .single()
            .unwrap_or_default();
        for n in 0..self.nodes.len() {
            self.nodes[n].core.handle_timeout(wall, self.now);
            self.drain(n);
        }
    }

    /// After every step: brings each node's "behind since" up to date from the log, then
    /// holds what each node's `/health` would say against it.
    pub(super) fn observe_health(&mut self) {
        self.health
            .heads
            .insert(self.log.epoch().to_owned(), self.log.head());
        let now = self.now;
        let mut stalled_any = false;
        for (n, node) in self.nodes.iter().enumerate() {
            let behind = node
                .applied
                .as_ref()
                .is_some_and(|(epoch, o)| self.health.heads.get(epoch).is_some_and(|h| h > o));
            if self.health.behind_since.len() <= n {
                self.health.behind_since.resize(n + 1, None);
            }
            let dipped = self.health.dipped.get(n).copied().unwrap_or(false);
            let since = &mut self.health.behind_since[n];
            *since = match (behind, *since) {
                (false, s) if dipped => s,
                (false, _) => None,
                (true, Some(s)) => Some(s),
                (true, None) => Some(now),
            };
            if !node.core.not_applying_log(now) {
                continue;
            }
            stalled_any = true;
            let waited = since.map(|s| now.saturating_duration_since(s));
            if waited.is_none_or(|w| w < APPLY_BOUND) && self.health.violation.is_none() {
                self.health.violation = Some(format!(
                    "node {n} says it is not applying the log, yet the log's head has been \
                     above its applied offset {:?} only for {waited:?} (bound {APPLY_BOUND:?})",
                    node.applied
                ));
            }
        }
        self.health.stalls_seen += usize::from(stalled_any);
    }

    /// Liveness: once every node applied everything, none says it is not applying the log,
    /// however long after.
    pub(super) fn healthy_once_caught_up(&self) -> Result<(), String> {
        let later = self.now + APPLY_BOUND * 10;
        for (n, node) in self.nodes.iter().enumerate() {
            if node.core.not_applying_log(later) {
                return Err(format!(
                    "node {n} caught up ({:?}, log at {}-{}) but still says it is not applying \
                     the log",
                    node.applied,
                    self.log.epoch(),
                    self.log.head()
                ));
            }
        }
        Ok(())
    }
}
