//! The three engines behind the log seam, each behind one [`Engine`]: the in-memory log the
//! simulator uses, the local SQLite log and the Redis log, the last two through
//! [`BusHandle`] exactly as the driver uses them. A contract sees only [`Engine`] and
//! [`LogNode`]: what the core sees of the bus ([`BusRequest`] in, [`BusReply`] out).

use sse_server::bus::config::Durability;
use sse_server::bus::memory::{MemoryCommands, MemoryLog, MemoryTail};
use sse_server::bus::types::new_epoch;
use sse_server::bus::{BusConfig, BusHandle, BusReply, BusRequest, ClusterId, Publish};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::redis::{Persistence, RedisServer};

/// The bus settings a contract runs with, the same for every engine.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The log's retention bound ([`BusConfig::max_len`]).
    pub max_len: u64,
    /// Events a node that does not know where it was reads first ([`BusConfig::warm_events`]).
    pub warm_events: u64,
    /// Entries per tail batch and per range page at most ([`BusConfig::batch`]).
    pub batch: usize,
}

impl Settings {
    /// A log far longer than any contract writes, the bus's default warm-up, small batches
    /// (so a tail and a range read take several).
    pub const DEFAULT: Settings = Settings {
        max_len: 100_000,
        warm_events: 1024,
        batch: 32,
    };
}

/// One node's view of the log: what the core hands the bus and what it gets back.
pub trait LogNode {
    /// Hands a request to the bus; a refusal comes back through [`LogNode::recv`].
    fn submit(&mut self, request: BusRequest);
    /// The next reply, waiting at most `timeout` for it.
    fn recv(&mut self, timeout: Duration) -> Option<BusReply>;
}

/// A log engine holding one log, on which a contract starts nodes.
pub trait Engine {
    /// A new node on the log; with `start`, a node that knows where it was (right after
    /// that id), else one that warms up with the newest [`Settings::warm_events`].
    fn node(&mut self, start: Option<ClusterId>) -> Box<dyn LogNode>;
    /// Restarts whatever keeps the log between nodes (the Redis server; the local log and
    /// the memory log have no process of their own). Call with every node dropped.
    fn restart_store(&mut self);
    /// Replaces the log with a new, empty one under the running nodes, or says why this
    /// engine cannot.
    fn replace_log(&mut self) -> Result<(), String>;
    /// Whether retention keeps exactly [`Settings::max_len`] events (else at least that many).
    fn exact_retention(&self) -> bool;
    /// A failover to a copy holding the log's events up to offset `keep` only, in the same
    /// epoch, on which a writer that never saw the rest published `others` (topic `t`) at
    /// once; every connection to the log drops. Or says why this engine cannot.
    fn fail_over(&mut self, keep: u64, others: &[String]) -> Result<(), String>;
}

/// A constructor for one engine: `None` when it cannot run here (the skip is printed).
pub type Start = fn(Settings, &str) -> Option<Box<dyn Engine>>;

fn random() -> u64 {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (COUNTER.fetch_add(1, Ordering::Relaxed) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The in-memory engine: one [`MemoryLog`], a [`MemoryTail`] and a [`MemoryCommands`] per
/// node, requests answered at once as the simulator's command side answers them.
pub fn memory(settings: Settings, _test: &str) -> Option<Box<dyn Engine>> {
    let log = MemoryLog::new(&new_epoch(random()), settings.max_len as usize);
    Some(Box::new(Memory {
        log: Rc::new(RefCell::new(log)),
        settings,
    }))
}

struct Memory {
    log: Rc<RefCell<MemoryLog>>,
    settings: Settings,
}

impl Engine for Memory {
    fn node(&mut self, start: Option<ClusterId>) -> Box<dyn LogNode> {
        Box::new(MemoryNode {
            log: self.log.clone(),
            tail: MemoryTail::new(),
            // The command threads cap a page at their batch size; so does the simulator.
            commands: MemoryCommands::new(self.settings.batch),
            start,
            settings: self.settings,
            replies: VecDeque::new(),
        })
    }

    fn restart_store(&mut self) {}

    fn replace_log(&mut self) -> Result<(), String> {
        self.log.borrow_mut().lose(&new_epoch(random()));
        Ok(())
    }

    fn exact_retention(&self) -> bool {
        true
    }

    fn fail_over(&mut self, keep: u64, others: &[String]) -> Result<(), String> {
        let mut log = self.log.borrow_mut();
        let lost = log.head().saturating_sub(keep);
        log.fail_over(lost as usize);
        for data in others {
            log.publish(&Publish {
                token: 0,
                topic: "t".into(),
                event: None,
                custom_id: None,
                data: data.clone(),
                accepted_ms: 0,
            });
        }
        Ok(())
    }
}

struct MemoryNode {
    log: Rc<RefCell<MemoryLog>>,
    tail: MemoryTail,
    commands: MemoryCommands,
    /// Where the first greeting starts, when the node knows where it was.
    start: Option<ClusterId>,
    settings: Settings,
    replies: VecDeque<BusReply>,
}

impl MemoryNode {
    /// The warm-up that places a new tail's cursor where the node wants to start.
    /// [`MemoryTail`] has no constructor from an id: a start inside the log it follows is
    /// the same as a warm-up of `head - offset` events; anything else it cannot express.
    fn warm(&self, log: &MemoryLog) -> u64 {
        match &self.start {
            None => self.settings.warm_events,
            Some(id) if id.epoch == log.epoch() && id.offset <= log.head() => {
                log.head() - id.offset
            }
            Some(id) => panic!(
                "MemoryTail cannot start after {id} on a log of epoch {} with head {}",
                log.epoch(),
                log.head()
            ),
        }
    }
}

impl LogNode for MemoryNode {
    fn submit(&mut self, request: BusRequest) {
        let mut log = self.log.borrow_mut();
        let reply = self.commands.serve(&mut log, &self.tail, request);
        self.replies.push_back(reply);
    }

    fn recv(&mut self, timeout: Duration) -> Option<BusReply> {
        if self.replies.is_empty() {
            let mut log = self.log.borrow_mut();
            let replies = if self.tail.is_connected() {
                self.tail.poll(&mut log, self.settings.batch)
            } else {
                let warm = self.warm(&log);
                self.tail.connect(&mut log, warm)
            };
            self.replies.extend(replies);
        }
        let reply = self.replies.pop_front();
        if reply.is_none() {
            // Nothing changes in the log while this thread waits: do not spin.
            std::thread::sleep(timeout.min(Duration::from_millis(2)));
        }
        reply
    }
}

/// A node on a [`BusHandle`]: the driver's view of the bus. Dropping it shuts the bus down
/// and waits for its threads.
struct HandleNode {
    bus: Option<BusHandle>,
    refused: VecDeque<BusReply>,
}

impl HandleNode {
    fn start(config: BusConfig, start: Option<ClusterId>) -> HandleNode {
        let bus = BusHandle::start(config, start, Arc::new(|| {})).expect("start the bus");
        HandleNode {
            bus: Some(bus),
            refused: VecDeque::new(),
        }
    }
}

impl LogNode for HandleNode {
    fn submit(&mut self, request: BusRequest) {
        let bus = self.bus.as_ref().expect("running");
        if let Err(reply) = bus.submit(request) {
            self.refused.push_back(reply);
        }
    }

    fn recv(&mut self, timeout: Duration) -> Option<BusReply> {
        if let Some(reply) = self.refused.pop_front() {
            return Some(reply);
        }
        self.bus.as_ref()?.recv_timeout(timeout)
    }
}

impl Drop for HandleNode {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.take() {
            bus.shutdown();
        }
    }
}

/// Short waits and quick reconnects, as `tests/bus.rs` uses, and the contract's settings.
fn tuned(mut config: BusConfig, settings: Settings) -> BusConfig {
    config.block = Duration::from_millis(200);
    config.io_timeout = Duration::from_secs(3);
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(300);
    config.max_len = settings.max_len;
    config.warm_events = settings.warm_events;
    config.batch = settings.batch;
    config
}

/// The local engine: SQLite in WAL mode in a fresh temp directory, removed at the end. A
/// new log is made under the running nodes by deleting the database's companion files
/// (`-wal`, `-shm`) and then the database.
pub fn local(settings: Settings, test: &str) -> Option<Box<dyn Engine>> {
    Some(Box::new(Local::new(settings, test, Removal::DatabaseLast)))
}

/// The local engine whose log is deleted as `rm log.sqlite*` deletes it (the database
/// first, then `-shm` and `-wal`), with a few milliseconds between the files, as a slower
/// remover or a loaded machine spaces them.
pub fn local_removed_apart(settings: Settings, test: &str) -> Option<Box<dyn Engine>> {
    let removal = Removal::DatabaseFirst(Duration::from_millis(5));
    Some(Box::new(Local::new(settings, test, removal)))
}

/// How [`Engine::replace_log`] deletes the local log's three files.
#[derive(Clone, Copy, Debug)]
enum Removal {
    /// `-wal`, `-shm`, then the database: the tail, which watches the database file's
    /// identity, reopens only once all three are gone.
    DatabaseLast,
    /// The database, `-shm`, `-wal`, this long apart.
    DatabaseFirst(Duration),
}

struct Local {
    dir: PathBuf,
    settings: Settings,
    removal: Removal,
}

impl Local {
    fn new(settings: Settings, test: &str, removal: Removal) -> Local {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir = std::env::temp_dir().join(format!(
            "sse-contract-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Local {
            dir,
            settings,
            removal,
        }
    }
}

impl Engine for Local {
    fn node(&mut self, start: Option<ClusterId>) -> Box<dyn LogNode> {
        let config = BusConfig::local(&self.dir, Durability::Sync);
        Box::new(HandleNode::start(tuned(config, self.settings), start))
    }

    fn restart_store(&mut self) {}

    /// Deletes the database and its two companion files, in the order [`Removal`] says,
    /// while the nodes run.
    fn replace_log(&mut self) -> Result<(), String> {
        let (names, gap) = match self.removal {
            Removal::DatabaseLast => (["log.sqlite-wal", "log.sqlite-shm", "log.sqlite"], None),
            Removal::DatabaseFirst(gap) => (
                ["log.sqlite", "log.sqlite-shm", "log.sqlite-wal"],
                Some(gap),
            ),
        };
        for (i, name) in names.into_iter().enumerate() {
            if let (Some(gap), true) = (gap, i > 0) {
                std::thread::sleep(gap);
            }
            match std::fs::remove_file(self.dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {name}: {e}")),
            }
        }
        Ok(())
    }

    fn exact_retention(&self) -> bool {
        true
    }

    /// One file and no replicas: no copy of the log can miss its newest events.
    fn fail_over(&mut self, _: u64, _: &[String]) -> Result<(), String> {
        Err("the local log has no replicas to fail over to".into())
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Redis engine: a private `redis-server` with `appendonly yes` (so a restart keeps
/// the log), or `None` with the skip message when it is not installed.
pub fn redis(settings: Settings, test: &str) -> Option<Box<dyn Engine>> {
    let server = RedisServer::start(test, Persistence::AppendOnly)?;
    Some(Box::new(Redis { server, settings }))
}

struct Redis {
    server: RedisServer,
    settings: Settings,
}

impl Engine for Redis {
    fn node(&mut self, start: Option<ClusterId>) -> Box<dyn LogNode> {
        let config = BusConfig::redis(self.server.url());
        Box::new(HandleNode::start(tuned(config, self.settings), start))
    }

    fn restart_store(&mut self) {
        self.server.restart();
    }

    fn replace_log(&mut self) -> Result<(), String> {
        self.server.cmd(&["FLUSHALL"]);
        Ok(())
    }

    fn exact_retention(&self) -> bool {
        false
    }

    /// The promoted copy is made in place: the entries after `keep` deleted, the counter and
    /// the stream's last id set back, `others` appended as the publish script would, and
    /// every other client connection killed, in one transaction (as the old master's death
    /// closes them; no node reads the copy on a connection to the old log, nor greets the
    /// copy before `others` are in it).
    fn fail_over(&mut self, keep: u64, others: &[String]) -> Result<(), String> {
        const SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'e')
local keep = tonumber(ARGV[1])
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], string.format('%d-1', keep), '+')) do
  redis.call('XDEL', KEYS[1], entry[1])
end
redis.call('XSETID', KEYS[1], string.format('%d-0', keep))
local o = keep
for i = 2, #ARGV do
  o = o + 1
  redis.call('XADD', KEYS[1], string.format('%d-0', o), 'e', epoch, 't', 't', 'm', 0, 'd', ARGV[i])
end
redis.call('HSET', KEYS[2], 'o', o)
return o
";
        let mut con = ::redis::Client::open(self.server.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let eval = pipe
            .cmd("EVAL")
            .arg(SCRIPT)
            .arg(2)
            .arg("{sse}:log")
            .arg("{sse}:meta")
            .arg(keep);
        for data in others {
            eval.arg(data);
        }
        pipe.cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal");
        pipe.query::<::redis::Value>(&mut con)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
