//! The cluster simulator: several real [`Core`]s in cluster mode sharing one
//! [`MemoryLog`], each with its own [`MemoryTail`] and a queue of bus requests, driven by
//! a scenario of [`ClusterOp`]s in which the bus is a faulty component: disconnects (the
//! tail and the command side), delayed and batched delivery, redelivery of seen offsets,
//! an epoch change (Redis lost its data), trims (also during an outage).
//!
//! The oracle is the shared log's own history (every event it ever accepted, trimmed or
//! not): each client must receive the events of its topics once, in log order, with no
//! hole between two of them, unless a documented `reset` comes between; and after the
//! scenario, with every fault healed and everything delivered, every client must have
//! caught up with the log's head ([`ClusterSim::finish`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};

use crate::bus::memory::{MemoryLog, MemoryTail};
use crate::bus::types::{BusReply, BusRequest, ClusterId, PublishFailure};
use crate::config::Config;
use crate::core::drain::{OutputSink, WriteOutcome, offer};
use crate::core::{ClientId, CloseReason, Core};
use crate::sse::parse::{Event, Parser};

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
    /// An HTTP publish on `node` (answered when the bus answers).
    Publish { node: u8, topic: u8 },
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
}

#[derive(Clone, Debug)]
enum Start {
    /// A fresh client: events after this (epoch, offset) of the node's tail.
    Fresh(Option<(String, u64)>),
    /// Resumed with this `Last-Event-ID`.
    Resumed(String),
}

struct Node {
    core: Core,
    tail: MemoryTail,
    requests: VecDeque<BusRequest>,
    /// The (epoch, offset) of the newest event the sim delivered to this node.
    applied: Option<(String, u64)>,
}

/// A cluster of simulated nodes around one in-memory log.
pub struct ClusterSim {
    nodes: Vec<Node>,
    log: MemoryLog,
    /// Every event the log ever accepted: (epoch, offset, topic, data).
    history: Vec<(String, u64, String, String)>,
    clients: Vec<SimClient>,
    now: Instant,
    epochs: u32,
    published: u64,
}

const WARM: u64 = 8;

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
            cluster: Some(crate::bus::BusConfig::new("redis://127.0.0.1:1/0")),
            ..Config::default()
        };
        let nodes = (0..nodes.max(1))
            .map(|i| Node {
                core: Core::new(cfg.clone(), now, wall, seed ^ i as u64),
                tail: MemoryTail::new(),
                requests: VecDeque::new(),
                applied: None,
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

    /// Events received by all clients so far (resets included): a scenario that checks
    /// nothing (every request refused) shows up as 0 here.
    pub fn events_received(&self) -> usize {
        self.clients.iter().map(|c| parse(&c.bytes).len()).sum()
    }

    pub fn apply(&mut self, op: &ClusterOp) {
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
            ClusterOp::Publish { node, topic } => {
                let n = pick(node);
                let topic = CLUSTER_TOPICS[topic as usize % CLUSTER_TOPICS.len()];
                let core = &mut self.nodes[n].core;
                let Some(id) = core.handle_accept(peer(), self.now) else {
                    return;
                };
                self.published += 1;
                let body = format!("p{}", self.published);
                let req = format!(
                    "POST /publish?topic={topic} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                core.handle_read(id, req.as_bytes(), self.now);
                self.collect(n);
            }
            ClusterOp::Serve { node, n } => {
                let node = pick(node);
                for _ in 0..n.max(1) {
                    let Some(request) = self.nodes[node].requests.pop_front() else {
                        break;
                    };
                    let reply = if !self.nodes[node].tail.is_connected() {
                        refuse(request)
                    } else {
                        match request {
                            BusRequest::Publish(p) => {
                                let reply = self.log.publish(&p);
                                self.history.push((
                                    self.log.epoch().to_owned(),
                                    self.log.head(),
                                    p.topic.clone(),
                                    p.data.clone(),
                                ));
                                reply
                            }
                            BusRequest::FetchRange(f) => BusReply::Range(self.log.range(&f)),
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
                    self.feed(n, refuse(request));
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
            Some(l) => Start::Resumed(l),
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
        });
        self.nodes[n].core.handle_read(id, req.as_bytes(), self.now);
        self.collect(n);
    }

    fn feed(&mut self, n: usize, reply: BusReply) {
        match &reply {
            BusReply::Events { events, .. } => {
                for e in events {
                    let newer = match &self.nodes[n].applied {
                        Some((ep, o)) => *ep != e.id.epoch || e.offset > *o,
                        None => true,
                    };
                    if newer {
                        self.nodes[n].applied = Some((e.id.epoch.clone(), e.offset));
                    }
                }
            }
            BusReply::EpochChanged { .. } => self.nodes[n].applied = None,
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
        self.collect(n);
    }

    /// Moves the node's bus requests to its queue and performs its outputs.
    fn collect(&mut self, n: usize) {
        while let Some(r) = self.nodes[n].core.poll_bus() {
            self.nodes[n].requests.push_back(r);
        }
        self.drain(n);
    }

    fn drain(&mut self, n: usize) {
        let mut sink = Sink { sim: self, node: n };
        let Ok(_) = sink.drain(1 << 20);
    }

    /// Every client so far: its events in log order, once, without a hole unless a reset
    /// comes between.
    pub fn check(&self) -> Result<(), String> {
        for (i, c) in self.clients.iter().enumerate() {
            self.check_client(c)
                .map_err(|e| format!("client {i} on node {} ({:?}): {e}", c.node, c.topic))?;
        }
        Ok(())
    }

    fn check_client(&self, c: &SimClient) -> Result<(), String> {
        let events = parse(&c.bytes);
        // The position the next event must follow: (epoch, offset); None after a reset
        // that names no position.
        let mut at: Option<(String, u64)> = match &c.start {
            Start::Fresh(applied) => applied.clone(),
            Start::Resumed(last) => ClusterId::parse(last).map(|id| (id.epoch, id.offset)),
        };
        let mut anchored = matches!(c.start, Start::Fresh(_))
            || matches!(&c.start, Start::Resumed(l) if ClusterId::parse(l).is_some());
        for e in &events {
            if e.event_type == "reset" {
                // A reset resets the expectation; its id is where the stream continues
                // from (restart: the start of an epoch, the rest: after that offset).
                at = ClusterId::parse(&e.last_event_id).map(|id| (id.epoch, id.offset));
                // Exact from its id on, except after `restart`: what is still retained.
                anchored = !e.data.contains("restart");
                continue;
            }
            let id = ClusterId::parse(&e.last_event_id)
                .ok_or_else(|| format!("event with a non-cluster id {:?}", e.last_event_id))?;
            let Some(h) = self
                .history
                .iter()
                .position(|(ep, o, _, _)| *ep == id.epoch && *o == id.offset)
            else {
                return Err(format!("{} is not in the log", e.last_event_id));
            };
            let (_, _, topic, data) = &self.history[h];
            if *topic != c.topic || *data != e.data {
                return Err(format!("{} carries the wrong event", e.last_event_id));
            }
            if let Some((ep, o)) = &at {
                if *ep == id.epoch && id.offset <= *o {
                    return Err(format!("{} again or out of order (after {o})", id));
                }
                if *ep == id.epoch && anchored {
                    let missed = self.history.iter().find(|(hep, ho, ht, _)| {
                        hep == ep && *ho > *o && *ho < id.offset && *ht == c.topic
                    });
                    if let Some((_, mo, _, _)) = missed {
                        return Err(format!("skipped {ep}-{mo} before {id}"));
                    }
                }
            }
            at = Some((id.epoch, id.offset));
            anchored = true;
        }
        Ok(())
    }

    /// Heals everything (every tail connected, every request served, everything delivered,
    /// every socket drained), then requires every open client to have reached the head.
    pub fn finish(&mut self) -> Result<(), String> {
        for c in &mut self.clients {
            c.blocked = false;
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
        let epoch = self.log.epoch().to_owned();
        for (i, c) in self.clients.iter().enumerate() {
            if c.closed {
                continue;
            }
            let Some(want) = self
                .history
                .iter()
                .rev()
                .find(|(ep, _, t, _)| *ep == epoch && *t == c.topic)
            else {
                continue;
            };
            // Where the client stands: its last event or reset with a cluster id, else
            // where it started.
            let events = parse(&c.bytes);
            let start = match &c.start {
                Start::Fresh(applied) => applied.clone(),
                Start::Resumed(l) => ClusterId::parse(l).map(|id| (id.epoch, id.offset)),
            };
            let pos = events
                .iter()
                .rev()
                .find_map(|e| ClusterId::parse(&e.last_event_id))
                .map(|id| (id.epoch, id.offset))
                .or(start);
            if !pos
                .as_ref()
                .is_some_and(|(ep, o)| *ep == epoch && *o >= want.1)
            {
                return Err(format!(
                    "no liveness: client {i} on node {} ({:?}) ends at {pos:?}, the log at {epoch}-{}",
                    c.node, c.topic, want.1
                ));
            }
        }
        Ok(())
    }
}

struct Sink<'a> {
    sim: &'a mut ClusterSim,
    node: usize,
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

    fn close(&mut self, id: ClientId, _: CloseReason) -> Result<(), Self::Error> {
        let node = self.node;
        for c in &mut self.sim.clients {
            if c.node == node && c.id == id {
                c.closed = true;
            }
        }
        Ok(())
    }
}

fn refuse(request: BusRequest) -> BusReply {
    match request {
        BusRequest::Publish(p) => BusReply::PublishFailed {
            token: p.token,
            reason: PublishFailure::Unavailable("simulated outage".into()),
        },
        BusRequest::FetchRange(f) => BusReply::RangeFailed {
            token: f.token,
            reason: "simulated outage".into(),
        },
    }
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
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
