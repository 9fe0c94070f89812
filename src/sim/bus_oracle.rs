//! The cluster simulator's oracle: what every client received, checked against the shared
//! log's history (every event it ever accepted, trimmed or lost or not) and each node's
//! cache; the liveness check at the end of a run.

use std::collections::HashMap;

use super::*;

/// The oracle: what every client received, checked against the shared log and each node's
/// cache; the liveness check at the end of a run.
impl ClusterSim {
    /// Every node's core invariants, and every client so far: its events in log order, once,
    /// without a hole unless a reset comes between, never an event of a copy of the log
    /// that did not hold the one before it (after a failover) unless a reset comes between;
    /// and never two payloads under one id across all clients.
    pub fn check(&self) -> Result<(), String> {
        for (n, node) in self.nodes.iter().enumerate() {
            node.core
                .check_invariants()
                .map_err(|e| format!("node {n}: core invariant violated: {e}"))?;
        }
        self.health.verdict()?;
        for (i, c) in self.clients.iter().enumerate() {
            self.check_client(c)
                .map_err(|e| format!("client {i} on node {} ({:?}): {e}", c.node, c.topic))?;
        }
        self.check_ids()
    }

    /// Never two payloads under one id, across all clients of all nodes. The one case no
    /// node can prevent is excused: a node that had applied nothing of the part a failover
    /// lost cannot tell that the offsets after its position are being reused, so what it
    /// hands out of the rewritten log before a node that knew noticed is not its fault. A
    /// node that had applied the lost part must never hand out what was written over it.
    fn check_ids(&self) -> Result<(), String> {
        let mut by_id: HashMap<String, Vec<(usize, &Logged)>> = HashMap::new();
        for c in &self.clients {
            for e in parse(&c.bytes) {
                if e.event_type == "reset" {
                    continue;
                }
                let Some(h) = self.history.iter().find(|l| l.data == e.data) else {
                    continue;
                };
                let seen = by_id.entry(e.last_event_id).or_default();
                if !seen.iter().any(|(n, l)| *n == c.node && l.data == h.data) {
                    seen.push((c.node, h));
                }
            }
        }
        for (id, seen) in &by_id {
            for (i, (na, a)) in seen.iter().enumerate() {
                for (nb, b) in &seen[i + 1..] {
                    if a.data == b.data {
                        continue;
                    }
                    let ((older, _), (_, newer_node)) = if a.version < b.version {
                        ((a, na), (b, nb))
                    } else {
                        ((b, nb), (a, na))
                    };
                    let excused = older.lost_at.is_some_and(|f| {
                        self.knew
                            .get(f as usize)
                            .and_then(|k| k.get(*newer_node))
                            .is_some_and(|knew| !knew)
                    });
                    if !excused {
                        return Err(format!(
                            "id {id} came with two payloads: {:?} (node {na}) and {:?} (node \
                             {nb}); node {newer_node} had applied the lost one",
                            a.data, b.data
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_client(&self, c: &SimClient) -> Result<(), String> {
        if c.dropped_reading {
            return Err(format!(
                "dropped as slow while its socket took everything (reading a range: {})",
                c.reading_range
            ));
        }
        let events = parse(&c.bytes);
        // The position the next event must follow: (epoch, offset); None after a reset
        // that names no position.
        let mut at: Option<(String, u64)> = self.start_position(&c.start);
        let mut anchored = matches!(c.start, Start::Fresh(_)) || at.is_some();
        let (custom, answered) = match &c.start {
            Start::Resumed {
                custom, answered, ..
            } => (custom.as_ref(), *answered),
            Start::Fresh(_) => (None, false),
        };
        // The event before, when no reset came since.
        let mut prev: Option<&Logged> = None;
        for (i, e) in events.iter().enumerate() {
            if e.event_type == "reset" {
                prev = None;
                if answered && e.data.contains("unknown-id") {
                    return Err("an id a node answered to a publish: unknown-id".into());
                }
                if let Some(cs) = custom.filter(|cs| cs.held) {
                    if e.data.contains("unknown-id") {
                        return Err("a publisher-given id this node cached: unknown-id".into());
                    }
                    if e.data.contains("restart")
                        && cs.node_epoch.as_deref() == Some(self.log.epoch())
                    {
                        return Err(format!(
                            "a publisher-given id this node cached: restart, yet the log is \
                             still in epoch {}",
                            self.log.epoch()
                        ));
                    }
                }
                // A reset resets the expectation; its id is where the stream continues
                // from (restart: the start of an epoch, the rest: after that offset).
                at = cluster_position(&e.last_event_id);
                // Exact from its id on, except after `restart`: what is still retained.
                anchored = !e.data.contains("restart");
                continue;
            }
            if i == 0 && custom.is_some_and(|cs| !cs.held) {
                return Err(format!(
                    "a publisher-given id this node never cached, yet {} came without a reset",
                    e.last_event_id
                ));
            }
            // Payloads are unique: the data names the event, whatever its id.
            let Some(h) = self.history.iter().find(|l| l.data == e.data) else {
                return Err(format!("{} is not in the log", e.last_event_id));
            };
            if h.topic != c.topic || h.frame_id() != e.last_event_id {
                return Err(format!("{} carries the wrong event", e.last_event_id));
            }
            if let Some(p) = prev.filter(|p| !p.coexists(h)) {
                return Err(format!(
                    "{} ({:?}) of a copy of the log that did not hold {} ({:?}) before it, \
                     without a reset",
                    e.last_event_id,
                    h.data,
                    p.frame_id(),
                    p.data
                ));
            }
            prev = Some(h);
            let id = (h.epoch.clone(), h.offset);
            if let Some((ep, o)) = &at {
                if *ep == id.0 && id.1 <= *o {
                    return Err(format!("{} again or out of order (after {o})", id.1));
                }
                if *ep == id.0 && anchored {
                    let missed = self.history.iter().find(|l| {
                        l.epoch == *ep
                            && l.offset > *o
                            && l.offset < id.1
                            && l.topic == c.topic
                            && l.coexists(h)
                    });
                    if let Some(m) = missed {
                        return Err(format!("skipped {ep}-{} before {ep}-{}", m.offset, id.1));
                    }
                }
            }
            at = Some(id);
            anchored = true;
        }
        Ok(())
    }

    /// Whether `id` is a publisher-given id of an event the log accepted.
    pub(super) fn is_custom(&self, id: &str) -> bool {
        self.history
            .iter()
            .any(|l| l.custom_id.as_deref() == Some(id))
    }

    /// The logged event an SSE id names: its publisher-given id, else its cluster id.
    fn logged(&self, id: &str) -> Option<&Logged> {
        self.history
            .iter()
            .find(|l| l.custom_id.as_deref() == Some(id))
            .or_else(|| {
                let (epoch, offset) = cluster_position(id)?;
                self.history
                    .iter()
                    .find(|l| l.epoch == epoch && l.offset == offset && l.custom_id.is_none())
            })
    }

    /// The (epoch, offset) an id stands for: a logged event's, else a cluster id's own.
    fn position(&self, id: &str) -> Option<(String, u64)> {
        match self.logged(id) {
            Some(l) => Some((l.epoch.clone(), l.offset)),
            None => cluster_position(id),
        }
    }

    /// Where a client started.
    fn start_position(&self, start: &Start) -> Option<(String, u64)> {
        match start {
            Start::Fresh(applied) => applied.clone(),
            Start::Resumed { last, .. } => self.position(last),
        }
    }

    /// Heals everything (every tail connected, every request served, everything delivered,
    /// every socket drained), then requires every open client to have reached the head.
    pub fn finish(&mut self) -> Result<(), String> {
        for c in &mut self.clients {
            c.blocked = false;
        }
        // Every socket drains first: the cores learn that it takes bytes again before any
        // more events arrive (a stream whose socket stays full is rightly slow).
        for n in 0..self.nodes.len() {
            self.all_writable(n);
        }
        for _ in 0..64 {
            for n in 0..self.nodes.len() {
                self.apply(&ClusterOp::Connect { node: n as u8 });
                self.apply(&ClusterOp::Serve {
                    node: n as u8,
                    n: 255,
                });
                self.apply(&ClusterOp::Deliver {
                    node: n as u8,
                    batch: 7,
                });
                self.all_writable(n);
            }
        }
        self.check()?;
        self.healthy_once_caught_up()?;
        let epoch = self.log.epoch().to_owned();
        for (i, c) in self.clients.iter().enumerate() {
            if c.closed {
                continue;
            }
            // The newest event of its topic that can still be delivered: in Redis, or in the
            // node's cache. One trimmed from Redis before the node read it cannot be (a
            // client that skipped it was told by a reset, checked above).
            let node = &self.nodes[c.node];
            let first_retained = self.log.first_retained();
            let Some(want) = self.history.iter().rev().find(|l| {
                l.epoch == epoch
                    && l.lost_at.is_none()
                    && l.topic == c.topic
                    && (first_retained.is_some_and(|f| l.offset >= f)
                        || node.cache.holds_event(&epoch, &c.topic, l.offset))
            }) else {
                continue;
            };
            // Where the client stands: its last event or reset with a cluster id, else
            // where it started.
            let events = parse(&c.bytes);
            let pos = events
                .iter()
                .rev()
                .find_map(|e| self.position(&e.last_event_id))
                .or_else(|| self.start_position(&c.start));
            if !pos
                .as_ref()
                .is_some_and(|(ep, o)| *ep == epoch && *o >= want.offset)
            {
                return Err(format!(
                    "no liveness: client {i} on node {} ({:?}) ends at {pos:?}, the log at {epoch}-{}",
                    c.node, c.topic, want.offset
                ));
            }
        }
        Ok(())
    }
}
