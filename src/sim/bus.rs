//! The cluster simulator: several real [`Core`]s in cluster mode sharing one
//! [`MemoryLog`], each with its own [`MemoryTail`] and a queue of bus requests, driven by
//! a scenario of [`ClusterOp`]s in which the bus is a faulty component: disconnects (the
//! tail and the command side), delayed and batched delivery, redelivery of seen offsets,
//! an epoch change (Redis lost its data), trims (also during an outage), a failover to a
//! copy that missed the newest events (whose offsets later publishes reuse), and time
//! passing (the head probe). Each node's command side ([`MemoryCommands`]) keeps its own
//! connection, so it may reach the failed-over log before its tail does.
//!
//! The oracle (`bus_oracle.rs`) is the shared log's own history (every event it ever
//! accepted, trimmed or lost or not): each client must receive the events of its topics
//! once, in log order, with no hole between two of them, unless a documented `reset` comes
//! between; never two payloads under one id across all clients; after an event the log
//! then lost, a reset before anything of the rewritten log; and after the scenario, with
//! every fault healed and everything delivered, every client must have caught up with the
//! log's head ([`ClusterSim::finish`]).
//!
//! It decides no resume the way the core does: where a client may continue is read from
//! the ids the log and the reset events carry (with its own reading of `<epoch>-<offset>`,
//! not the bus's parser), and whether a publisher-given id resumes exactly from its own
//! model of a node's cache (`cache.rs`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};

use crate::bus::memory::{MemoryCommands, MemoryLog, MemoryTail, unavailable};
use crate::bus::types::{BusReply, BusRequest};
use crate::config::Config;
use crate::core::drain::{OutputSink, WriteOutcome, offer};
use crate::core::{ClientId, CloseReason, Core};
use crate::sse::parse::{Event, Parser};

use super::cache::CacheModel;

#[path = "bus_health.rs"]
mod health;
#[path = "bus_oracle.rs"]
mod oracle;
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
    /// Redis fails over to a replica that missed the newest `lost % 4 + 1` events: same
    /// epoch, lower head; every node's connections drop (each reconnects on its own).
    Failover { lost: u8 },
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
    /// Failovers before it was written: which copy of the log it belongs to.
    version: u32,
    /// The failover that lost it (`version` numbering), if one did.
    lost_at: Option<u32>,
}

impl Logged {
    /// The id its frame carries.
    fn frame_id(&self) -> String {
        match &self.custom_id {
            Some(id) => id.clone(),
            None => format!("{}-{}", self.epoch, self.offset),
        }
    }

    /// Both were in the log at one moment (neither was lost before the other was written):
    /// a stream may go from one to the other without a reset.
    fn coexists(&self, other: &Logged) -> bool {
        self.lost_at.is_none_or(|f| f > other.version)
            && other.lost_at.is_none_or(|f| f > self.version)
    }
}

struct Node {
    core: Core,
    tail: MemoryTail,
    commands: MemoryCommands,
    /// The node lost Redis ([`ClusterOp::Disconnect`]) until its tail connects again: both
    /// sides fail.
    outage: bool,
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
    /// What `/health` may say of each node (`bus_health.rs`).
    health: HealthOracle,
    /// Failovers so far.
    failovers: u32,
    /// Per failover (from 1), per node: whether the node had applied an event of the part
    /// the log lost (only such a node can tell that its offsets are reused).
    knew: Vec<Vec<bool>>,
    /// Failovers that lost events some client had already received.
    failovers_under_clients: usize,
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
                // The command side caps a range page at its batch size: 1 to 4 entries,
                // from the seed, so that ranges are read in several pages.
                commands: MemoryCommands::new(1 + (seed % 4) as usize),
                outage: false,
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
            health: HealthOracle::new(),
            failovers: 0,
            knew: vec![Vec::new()],
            failovers_under_clients: 0,
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

    /// Failovers so far, and how many of them lost events some client had received.
    pub fn failovers(&self) -> (u32, usize) {
        (self.failovers, self.failovers_under_clients)
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
                    let reply = self.serve(node, request);
                    self.feed(node, reply);
                }
            }
            ClusterOp::Deliver { node, batch } => {
                let n = pick(node);
                let node = &mut self.nodes[n];
                let replies = node.tail.poll(&mut self.log, batch as usize % 8 + 1);
                for r in replies {
                    self.feed(n, r);
                }
            }
            ClusterOp::Disconnect { node } => {
                let n = pick(node);
                self.nodes[n].outage = true;
                self.nodes[n].commands.disconnect();
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
                self.nodes[n].outage = false;
                for r in self.nodes[n].tail.connect(&mut self.log, WARM) {
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
            ClusterOp::Failover { lost } => self.fail_over(lost as usize % 4 + 1),
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

    /// The node's command side answers `request` (reconnecting first when the log moved to
    /// another server), or refuses it during an outage.
    fn serve(&mut self, n: usize, request: BusRequest) -> BusReply {
        let node = &mut self.nodes[n];
        if node.outage {
            return unavailable(request, "simulated outage");
        }
        let publish = match &request {
            BusRequest::Publish(p) => Some((p.topic.clone(), p.data.clone(), p.custom_id.clone())),
            BusRequest::ProbeHead { .. } => {
                self.health.probes_answered += 1;
                None
            }
            BusRequest::FetchRange(_) => None,
        };
        let reply = node.commands.serve(&mut self.log, &node.tail, request);
        if let (BusReply::Published { id, .. }, Some((topic, data, custom_id))) = (&reply, publish)
        {
            self.answered.push(id.to_string());
            self.history.push(Logged {
                epoch: id.epoch.clone(),
                offset: id.offset,
                topic,
                data,
                custom_id,
                version: self.failovers,
                lost_at: None,
            });
        }
        reply
    }

    /// A failover losing the newest `lost` retained events: the history marks them lost,
    /// each node's knowledge of them is noted, ids answered for them are forgotten (no
    /// resume from them is owed an exact answer), and every tail's connection drops (the
    /// command sides find out at their next request).
    fn fail_over(&mut self, lost: usize) {
        let epoch = self.log.epoch().to_owned();
        self.log.fail_over(lost);
        let head = self.log.head();
        self.failovers += 1;
        let f = self.failovers;
        let mut lost_data = Vec::new();
        for l in &mut self.history {
            if l.epoch == epoch && l.offset > head && l.lost_at.is_none() {
                l.lost_at = Some(f);
                lost_data.push(l.data.clone());
            }
        }
        let knew = self
            .nodes
            .iter()
            .map(|n| matches!(&n.applied, Some((e, o)) if *e == epoch && *o > head))
            .collect();
        self.knew.push(knew);
        let seen_lost = self
            .clients
            .iter()
            .any(|c| parse(&c.bytes).iter().any(|e| lost_data.contains(&e.data)));
        self.failovers_under_clients += usize::from(seen_lost);
        let lost_id = |id: &str| cluster_position(id).is_some_and(|(e, o)| e == epoch && o > head);
        self.answered.retain(|id| !lost_id(id));
        for c in &mut self.clients {
            if let Start::Resumed { last, answered, .. } = &mut c.start
                && lost_id(last)
            {
                *answered = false;
            }
        }
        self.health.failed_over(self.nodes.len());
        for n in 0..self.nodes.len() {
            if let Some(r) = self.nodes[n].tail.disconnect("failover") {
                self.feed(n, r);
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
            } => {
                self.health.greeted(n);
                if self.nodes[n].applied.is_none() {
                    self.nodes[n].applied = Some((epoch.clone(), *after_offset));
                }
            }
            _ => {}
        }
        self.nodes[n].core.handle_bus(reply, self.now);
        self.drain(n);
    }

    /// Every open client of node `n` takes bytes again; then the node's outputs run.
    fn all_writable(&mut self, n: usize) {
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
