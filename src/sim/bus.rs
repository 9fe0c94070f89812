//! The cluster simulator: several real [`Core`]s in cluster mode sharing one
//! [`MemoryLog`], each with its own [`MemoryTail`] and a queue of bus requests, driven by
//! a scenario of [`ClusterOp`]s in which the bus is a faulty component: disconnects (the
//! tail and the command side), delayed and batched delivery, redelivery of seen offsets,
//! an epoch change (Redis lost its data), trims (also during an outage), and time passing
//! (the head probe).
//!
//! The oracle is the shared log's own history (every event it ever accepted, trimmed or
//! not): each client must receive the events of its topics once, in log order, with no
//! hole between two of them, unless a documented `reset` comes between; and after the
//! scenario, with every fault healed and everything delivered, every client must have
//! caught up with the log's head ([`ClusterSim::finish`]).
//!
//! It decides no resume the way the core does: where a client may continue is read from
//! the ids the log and the reset events carry (with its own reading of `<epoch>-<offset>`,
//! not the bus's parser), and whether a publisher-given id resumes exactly from its own
//! model of a node's cache (`cache.rs`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};

use crate::bus::memory::{MemoryLog, MemoryTail, unavailable};
use crate::bus::types::{BusReply, BusRequest};
use crate::config::Config;
use crate::core::drain::{OutputSink, WriteOutcome, offer};
use crate::core::{ClientId, CloseReason, Core};
use crate::sse::parse::{Event, Parser};

use super::cache::CacheModel;

#[path = "bus_health.rs"]
mod health;
#[path = "bus_sink.rs"]
mod sink;
use health::HealthOracle;
use sink::Sink;

/// Topics a cluster scenario uses ("" is the default stream).
pub const CLUSTER_TOPICS: [&str; 3] = ["", "a", "b"];

/// One step of a cluster scenario. Indices are taken modulo what exists.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "sim", derive(arbitrary::Arbitrary))]
pub enum ClusterOp {
    /// A new client on `node` for a topic.
    Subscribe { node: u8, topic: u8 },
    /// A client leaves and its browser reconnects to `node` with its last id.
    Reconnect { client: u8, node: u8 },
    /// An HTTP publish on `node` (answered when the bus answers), with a publisher-given id
    /// when `id % 3` is 1 (shaped like a cluster id of no epoch, `c7-7`) or 2 (`o7.x`).
    Publish { node: u8, topic: u8, id: u8 },
    /// The node's command side serves up to `n` queued requests against the log.
    Serve { node: u8, n: u8 },
    /// The node's tail delivers one batch of at most `batch` events.
    Deliver { node: u8, batch: u8 },
    /// The node loses Redis: the tail reports it, queued requests fail.
    Disconnect { node: u8 },
    /// The node's tail greets again.
    Connect { node: u8 },
    /// Fault: the node's tail re-reads up to `back` offsets it already delivered.
    Rewind { node: u8, back: u8 },
    /// Redis keeps only the newest `keep` events.
    Trim { keep: u8 },
    /// Redis lost the log: a new epoch.
    Lose,
    /// A client's socket fills (or drains again).
    Block { client: u8, blocked: bool },
    /// A new client on `node` resumes from an id some node answered to a publish (its tail
    /// may not have shown it yet, or be away): it must never get `reset` `unknown-id`.
    ResumeAnswered { node: u8, answer: u8 },
    /// `n % 8 + 2` new clients on `node` resume from a client's last id on its topic at
    /// once (a crowd reconnecting after a node restart): their range reads are shared.
    Crowd { client: u8, node: u8, n: u8 },
    /// Time passes (`ms` × 10 ms): every node's timers run, its head probe among them.
    Wait { ms: u8 },
}

struct SimClient {
    node: usize,
    id: ClientId,
    topic: String,
    /// Everything received (head included), and whether the core closed it.
    bytes: Vec<u8>,
    closed: bool,
    blocked: bool,
    /// Where the client started: the id it resumed from, else the node's applied offset.
    start: Start,
    /// Its resume was being read from the shared log when its node last settled.
    reading_range: bool,
    /// Dropped as slow while its socket took everything offered: a stream dropped for
    /// timing alone (a tail batch, a range read that took long), never for not reading.
    dropped_reading: bool,
}

#[derive(Clone, Debug)]
enum Start {
    /// A fresh client: events after this (epoch, offset) of the node's tail.
    Fresh(Option<(String, u64)>),
    /// Resumed with this `Last-Event-ID`; `custom` when it is a publisher-given id;
    /// `answered` when a node answered it to a publish (in the log's current epoch then).
    Resumed {
        last: String,
        custom: Option<CustomStart>,
        answered: bool,
    },
}

/// What the model knew when a client resumed from a publisher-given id.
#[derive(Clone, Debug)]
struct CustomStart {
    /// The node's cache held the id: the stream continues right after its event, and never
    /// with `reset` `unknown-id` (nor `restart` while the log keeps the node's epoch).
    held: bool,
    /// The epoch of the node's cache then.
    node_epoch: Option<String>,
}

/// An event the shared log accepted.
struct Logged {
    epoch: String,
    offset: u64,
    topic: String,
    data: String,
    custom_id: Option<String>,
}

struct Node {
    core: Core,
    tail: MemoryTail,
    requests: VecDeque<BusRequest>,
    /// The (epoch, offset) of the newest event the sim delivered to this node.
    applied: Option<(String, u64)>,
    cache: CacheModel,
}

/// A cluster of simulated nodes around one in-memory log.
pub struct ClusterSim {
    nodes: Vec<Node>,
    log: MemoryLog,
    /// Every event the log ever accepted.
    history: Vec<Logged>,
    clients: Vec<SimClient>,
    now: Instant,
    epochs: u32,
    published: u64,
    /// Resumes from a publisher-given id: on a node whose cache held it, and on one whose
    /// cache did not.
    custom_resumes: (usize, usize),
    /// Every id a node answered to a publish, newest last.
    answered: Vec<String>,
    /// Resumes from an answered id.
    answered_resumes: usize,
    /// The entries one range page scans at most (the bus's batch size): 1 to 4, from the
    /// seed, so that ranges are read in several pages.
    batch: usize,
    /// What `/health` may say of each node (`bus_health.rs`).
    health: HealthOracle,
}

const WARM: u64 = 8;

/// The scenario: nodes, the faulty bus, clients, and how each operation is applied.
impl ClusterSim {
    /// `nodes` nodes whose caches keep `history` events per topic; Redis keeps `max_len`.
    pub fn new(nodes: usize, history: usize, max_len: usize, seed: u64) -> ClusterSim {
        let now = Instant::now();
        let wall = Utc
            .timestamp_opt(1_728_830_122, 0)
            .single()
            .unwrap_or_default();
        let cfg = Config {
            interval: None,
            keepalive: None,
            history,
            cluster: Some(crate::bus::BusConfig {
                apply_bound: health::APPLY_BOUND,
                ..crate::bus::BusConfig::redis("redis://127.0.0.1:1/0")
            }),
            ..Config::default()
        };
        let nodes = (0..nodes.max(1))
            .map(|i| Node {
                core: Core::new(cfg.clone(), now, wall, seed ^ i as u64),
                tail: MemoryTail::new(),
                requests: VecDeque::new(),
                applied: None,
                cache: CacheModel::new(history),
            })
            .collect();
        let mut sim = ClusterSim {
            nodes,
            log: MemoryLog::new("e0", max_len),
            history: Vec::new(),
            clients: Vec::new(),
            now,
            epochs: 0,
            published: 0,
            custom_resumes: (0, 0),
            answered: Vec::new(),
            answered_resumes: 0,
            batch: 1 + (seed % 4) as usize,
            health: HealthOracle::new(),
        };
        for n in 0..sim.nodes.len() {
            sim.apply(&ClusterOp::Connect { node: n as u8 });
        }
        sim
    }

    /// Runs a scenario, checking the clients after every step; then heals and checks that
    /// everyone caught up.
    pub fn run(&mut self, ops: &[ClusterOp]) -> Result<(), String> {
        for (i, op) in ops.iter().enumerate() {
            self.apply(op);
            self.check()
                .map_err(|e| format!("after step {i} {op:?}: {e}"))?;
        }
        self.finish()
    }

    /// Events the log accepted, and client frames checked.
    pub fn summary(&self) -> String {
        format!(
            "{} published, {} clients, {} epochs",
            self.published,
            self.clients.len(),
            self.epochs + 1
        )
    }

    /// Resumes from a publisher-given id so far: (on a node whose cache held it, on one
    /// whose cache did not).
    pub fn custom_resumes(&self) -> (usize, usize) {
        self.custom_resumes
    }

    /// How many clients resumed from an id a node answered to a publish.
    pub fn answered_resumes(&self) -> usize {
        self.answered_resumes
    }

    /// Node `n`'s range reads: (reads begun, pages asked, pages shared, read-ons).
    pub fn range_stats(&self, n: usize) -> (u64, u64, u64, u64) {
        self.nodes
            .get(n)
            .and_then(|node| node.core.cluster_stats())
            .map_or((0, 0, 0, 0), |s| {
                (
                    s.range_fetches,
                    s.range_pages,
                    s.range_pages_shared,
                    s.range_extensions,
                )
            })
    }

    /// Events (resets included) each client received so far, in the order they came.
    pub fn clients_received(&self) -> Vec<usize> {
        self.clients.iter().map(|c| parse(&c.bytes).len()).collect()
    }

    /// Events received by all clients so far (resets included): a scenario that checks
    /// nothing (every request refused) shows up as 0 here.
    pub fn events_received(&self) -> usize {
        self.clients.iter().map(|c| parse(&c.bytes).len()).sum()
    }

    pub fn apply(&mut self, op: &ClusterOp) {
        self.step(op);
        self.observe_health();
    }

    fn step(&mut self, op: &ClusterOp) {
        self.now += Duration::from_millis(10);
        let nodes = self.nodes.len();
        let pick = |n: u8| n as usize % nodes;
        match *op {
            ClusterOp::Subscribe { node, topic } => {
                let topic = CLUSTER_TOPICS[topic as usize % CLUSTER_TOPICS.len()];
                self.subscribe(pick(node), topic, None);
            }
            ClusterOp::Reconnect { client, node } => {
                if self.clients.is_empty() {
                    return;
                }
                let c = client as usize % self.clients.len();
                let (old_node, id, topic) = {
                    let cl = &self.clients[c];
                    (cl.node, cl.id, cl.topic.clone())
                };
                let last = parse(&self.clients[c].bytes)
                    .last()
                    .map(|e| e.last_event_id.clone())
                    .filter(|l| !l.is_empty());
                self.nodes[old_node].core.handle_read_closed(id);
                self.clients[c].closed = true;
                self.drain(old_node);
                self.subscribe(pick(node), &topic, last);
            }
            ClusterOp::Publish { node, topic, id } => {
                let n = pick(node);
                let topic = CLUSTER_TOPICS[topic as usize % CLUSTER_TOPICS.len()];
                let core = &mut self.nodes[n].core;
                let Some(conn) = core.handle_accept(peer(), self.now) else {
                    return;
                };
                self.published += 1;
                let p = self.published;
                let custom = match id % 3 {
                    1 => format!("&id=c{p}-{p}"),
                    2 => format!("&id=o{p}.x"),
                    _ => String::new(),
                };
                let body = format!("p{p}");
                let req = format!(
                    "POST /publish?topic={topic}{custom} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                core.handle_read(conn, req.as_bytes(), self.now);
                self.drain(n);
            }
            ClusterOp::Serve { node, n } => {
                let node = pick(node);
                for _ in 0..n.max(1) {
                    let Some(request) = self.nodes[node].requests.pop_front() else {
                        break;
                    };
                    let reply = if !self.nodes[node].tail.is_connected() {
                        unavailable(request, "simulated outage")
                    } else {
                        match request {
                            BusRequest::Publish(p) => {
                                let reply = self.log.publish(&p);
                                if let BusReply::Published { id, .. } = &reply {
                                    self.answered.push(id.to_string());
                                }
                                self.history.push(Logged {
                                    epoch: self.log.epoch().to_owned(),
                                    offset: self.log.head(),
                                    topic: p.topic.clone(),
                                    data: p.data.clone(),
                                    custom_id: p.custom_id.clone(),
                                });
                                reply
                            }
                            BusRequest::FetchRange(mut f) => {
                                // The command thread caps a page at its batch size.
                                f.limit = f.limit.min(self.batch);
                                BusReply::Range(self.log.range(&f))
                            }
                            BusRequest::ProbeHead { token } => {
                                self.health.probes_answered += 1;
                                self.log.probe(token)
                            }
                        }
                    };
                    self.feed(node, reply);
                }
            }
            ClusterOp::Deliver { node, batch } => {
                let n = pick(node);
                let replies = self.nodes[n].tail.poll(&self.log, batch as usize % 8 + 1);
                for r in replies {
                    self.feed(n, r);
                }
            }
            ClusterOp::Disconnect { node } => {
                let n = pick(node);
                if let Some(r) = self.nodes[n].tail.disconnect("simulated outage") {
                    self.feed(n, r);
                }
                while let Some(request) = self.nodes[n].requests.pop_front() {
                    self.feed(n, unavailable(request, "simulated outage"));
                }
            }
            ClusterOp::Connect { node } => {
                let n = pick(node);
                if self.nodes[n].tail.is_connected() {
                    return;
                }
                for r in self.nodes[n].tail.connect(&self.log, WARM) {
                    self.feed(n, r);
                }
            }
            ClusterOp::Rewind { node, back } => self.nodes[pick(node)].tail.rewind(back as u64 % 6),
            ClusterOp::Trim { keep } => self.log.trim(keep as usize % 32 + 1),
            ClusterOp::Lose => {
                self.epochs += 1;
                self.log.lose(&format!("e{}", self.epochs));
            }
            ClusterOp::ResumeAnswered { node, answer } => self.resume_answered(pick(node), answer),
            ClusterOp::Crowd { client, node, n } => {
                if self.clients.is_empty() {
                    return;
                }
                let c = &self.clients[client as usize % self.clients.len()];
                let topic = c.topic.clone();
                let last = parse(&c.bytes)
                    .last()
                    .map(|e| e.last_event_id.clone())
                    .filter(|l| !l.is_empty());
                for _ in 0..n % 8 + 2 {
                    self.subscribe(pick(node), &topic, last.clone());
                }
            }
            ClusterOp::Wait { ms } => self.wait(Duration::from_millis(u64::from(ms) * 10)),
            ClusterOp::Block { client, blocked } => {
                if self.clients.is_empty() {
                    return;
                }
                let c = client as usize % self.clients.len();
                self.clients[c].blocked = blocked;
                if !blocked {
                    let (n, id) = (self.clients[c].node, self.clients[c].id);
                    self.nodes[n].core.handle_writable(id);
                    self.drain(n);
                }
            }
        }
    }

    /// A resume from an answered id of the log's current epoch (none yet: nothing).
    fn resume_answered(&mut self, n: usize, answer: u8) {
        let epoch = format!("{}-", self.log.epoch());
        let current: Vec<&String> = self
            .answered
            .iter()
            .filter(|id| id.starts_with(&epoch))
            .collect();
        if current.is_empty() {
            return;
        }
        let last = current[answer as usize % current.len()].clone();
        let topic = CLUSTER_TOPICS[answer as usize % CLUSTER_TOPICS.len()];
        self.answered_resumes += 1;
        self.subscribe(n, topic, Some(last));
        if let Some(Start::Resumed { answered, .. }) = self.clients.last_mut().map(|c| &mut c.start)
        {
            *answered = true;
        }
    }

    fn subscribe(&mut self, n: usize, topic: &str, last: Option<String>) {
        let core = &mut self.nodes[n].core;
        let Some(id) = core.handle_accept(peer(), self.now) else {
            return;
        };
        let header = last
            .as_ref()
            .map(|l| format!("Last-Event-ID: {l}\r\n"))
            .unwrap_or_default();
        let req = format!("GET /events?topic={topic} HTTP/1.1\r\nHost: x\r\n{header}\r\n");
        let start = match last {
            Some(last) => {
                let custom = self.is_custom(&last).then(|| CustomStart {
                    held: self.nodes[n].cache.holds(&last),
                    node_epoch: self.nodes[n].cache.epoch().map(str::to_owned),
                });
                match &custom {
                    Some(cs) if cs.held => self.custom_resumes.0 += 1,
                    Some(_) => self.custom_resumes.1 += 1,
                    None => {}
                }
                Start::Resumed {
                    last,
                    custom,
                    answered: false,
                }
            }
            None => Start::Fresh(self.nodes[n].applied.clone()),
        };
        self.clients.push(SimClient {
            node: n,
            id,
            topic: topic.to_owned(),
            bytes: Vec::new(),
            closed: false,
            blocked: false,
            start,
            reading_range: false,
            dropped_reading: false,
        });
        self.nodes[n].core.handle_read(id, req.as_bytes(), self.now);
        self.drain(n);
    }

    fn feed(&mut self, n: usize, reply: BusReply) {
        match &reply {
            BusReply::Events { events, .. } => {
                for e in events {
                    let node = &mut self.nodes[n];
                    let newer = match &node.applied {
                        Some((ep, o)) => *ep != e.id.epoch || e.offset > *o,
                        None => true,
                    };
                    if newer {
                        let hole = matches!(&node.applied,
                            Some((ep, o)) if *ep == e.id.epoch && e.offset > o + 1);
                        node.applied = Some((e.id.epoch.clone(), e.offset));
                        node.cache
                            .apply(&e.id.epoch, e.offset, &e.topic, e.custom_id.as_deref());
                        if hole {
                            node.cache.hole_before(e.offset);
                        }
                    }
                }
            }
            BusReply::EpochChanged { .. } => {
                self.nodes[n].applied = None;
                self.nodes[n].cache.clear();
            }
            BusReply::Connected {
                epoch,
                after_offset,
                ..
            } if self.nodes[n].applied.is_none() => {
                self.nodes[n].applied = Some((epoch.clone(), *after_offset));
            }
            _ => {}
        }
        self.nodes[n].core.handle_bus(reply, self.now);
        self.drain(n);
    }

    /// Performs the node's outputs, its requests for the bus among them (moved to its queue,
    /// as the driver hands them to the bus): writing can make requests (a range's next page,
    /// a pipelined publish).
    fn drain(&mut self, n: usize) {
        let mut sink = Sink { sim: self, node: n };
        let Ok(_) = sink.drain(1 << 20);
        let core = &self.nodes[n].core;
        for c in self.clients.iter_mut().filter(|c| c.node == n && !c.closed) {
            c.reading_range = core.is_reading_range(c.id);
        }
    }
}

/// The oracle: what every client received, checked against the shared log and each node's
/// cache; the liveness check at the end of a run.
impl ClusterSim {
    /// Every node's core invariants, and every client so far: its events in log order, once,
    /// without a hole unless a reset comes between.
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
        for (i, e) in events.iter().enumerate() {
            if e.event_type == "reset" {
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
            let Some(h) = self.logged(&e.last_event_id) else {
                return Err(format!("{} is not in the log", e.last_event_id));
            };
            if h.topic != c.topic || h.data != e.data {
                return Err(format!("{} carries the wrong event", e.last_event_id));
            }
            let id = (h.epoch.clone(), h.offset);
            if let Some((ep, o)) = &at {
                if *ep == id.0 && id.1 <= *o {
                    return Err(format!("{} again or out of order (after {o})", id.1));
                }
                if *ep == id.0 && anchored {
                    let missed = self.history.iter().find(|l| {
                        l.epoch == *ep && l.offset > *o && l.offset < id.1 && l.topic == c.topic
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
    fn is_custom(&self, id: &str) -> bool {
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
            let ids: Vec<ClientId> = self
                .clients
                .iter()
                .filter(|c| c.node == n && !c.closed)
                .map(|c| c.id)
                .collect();
            for id in ids {
                self.nodes[n].core.handle_writable(id);
            }
            self.drain(n);
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
                let ids: Vec<ClientId> = self
                    .clients
                    .iter()
                    .filter(|c| c.node == n && !c.closed)
                    .map(|c| c.id)
                    .collect();
                for id in ids {
                    self.nodes[n].core.handle_writable(id);
                }
                self.drain(n);
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

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}

/// The (epoch, offset) a cluster id names, read here as the README writes one,
/// `<epoch>-<offset>` with the offset in decimal as the log numbers it (not with the bus's
/// own parser, which is under test).
fn cluster_position(id: &str) -> Option<(String, u64)> {
    let (epoch, offset) = id.split_once('-')?;
    let n: u64 = offset.parse().ok()?;
    (!epoch.is_empty() && n.to_string() == offset).then(|| (epoch.to_owned(), n))
}

/// The events of a stream's bytes (after its response head).
fn parse(bytes: &[u8]) -> Vec<Event> {
    let Some(pos) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Vec::new();
    };
    let mut parser = Parser::new();
    let mut out = Vec::new();
    parser.feed(&bytes[pos + 4..], |e| out.push(e));
    out
}
