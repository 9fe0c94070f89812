//! One worker's client connections ([`Clients`]): opening them at the asked rate, sending the
//! request, reading the head, then decoding the stream (de-chunking when needed) into events
//! for the tally; reconnecting with `Last-Event-ID` under `--reconnect-every`; slow clients
//! that never read.
//!
//! It knows nothing of the worker's run (its stages, the window, the coordinator): the worker
//! says when to open, reconnect or give up on a client, and reads the counts kept here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use sse_server::http::chunked::ChunkedDecoder;

use crate::args::{Plan, WorkerSpec};
use crate::frames::FrameReader;
use crate::http;
use crate::net;
use crate::stats::Key;
use crate::tally::{Seen, Tally};

/// Where one client connection is.
pub enum Phase {
    /// Not opened yet, or waiting to reconnect.
    Idle,
    /// Waiting for the TCP connect to complete.
    Connecting,
    /// Sending the request; `sent` bytes are out.
    Sending { sent: usize },
    /// Reading the response head.
    Head(Vec<u8>),
    /// Reading the event stream (`chunked`: the body is chunk-encoded).
    Streaming {
        chunked: Option<Box<ChunkedDecoder>>,
    },
    /// A `--slow` client: request sent, never reads.
    Slow,
    /// Over (failed, refused or closed).
    Closed,
}

/// One simulated browser.
pub struct Client {
    pub stream: Option<TcpStream>,
    pub phase: Phase,
    pub frames: FrameReader,
    pub seen: Seen,
    pub group: u16,
    /// The `Last-Event-ID` to resume with (kept across a reconnect with no event).
    pub resume_id: Option<Box<str>>,
}

impl Client {
    /// A client of group `group`, not opened yet.
    pub fn new(group: u16) -> Client {
        Client {
            stream: None,
            phase: Phase::Idle,
            frames: FrameReader::default(),
            seen: Seen::default(),
            group,
            resume_id: None,
        }
    }
}

/// Reads that share one receive timestamp at most.
const STAMP_READS: u32 = 16;

/// Connections started per loop turn at most, so reading is not starved while connecting.
const CONNECTS_PER_TURN: usize = 256;

/// A small xorshift generator for reconnect times (no need for a crate).
pub fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// What the connections need of their worker: the run's plan, the worker's slice of the
/// clients, and the reactor they register with.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub plan: &'a Plan,
    pub spec: &'a WorkerSpec,
    pub registry: &'a Registry,
}

/// A worker's client connections (client `i` is the reactor's `Token(i)`) and what
/// happened to them. `streaming` is the number of clients in [`Phase::Streaming`]; each
/// outcome counter only grows.
pub struct Clients {
    pub list: Vec<Client>,
    /// The read buffer, shared by all clients.
    buf: Box<[u8]>,
    decode: Decode,
    /// Clients opened so far (in order: client `opened` is the next one).
    pub opened: usize,
    pub streaming: usize,
    pub connect_failed: u64,
    pub refused: BTreeMap<String, u64>,
    pub disconnected: u64,
    pub slow: u64,
    pub slow_closed: u64,
    pub reconnects: u64,
    pub reconnect_failed: u64,
    pub first_error: Option<String>,
    reconnect_at: BinaryHeap<Reverse<(Instant, usize)>>,
    rng: u64,
    /// The receive timestamp shared by a few reads, and how many used it (0: take a new one).
    stamp: u64,
    stamp_uses: u32,
}

/// Opening, closing and reconnecting.
impl Clients {
    /// The worker's clients (`spec.count` of them, each in its group), none opened yet.
    pub fn new(plan: &Plan, spec: &WorkerSpec) -> Clients {
        Clients {
            list: (0..spec.count)
                .map(|i| Client::new(plan.group_of(spec.first + i)))
                .collect(),
            buf: vec![0u8; 64 * 1024].into_boxed_slice(),
            decode: Decode::default(),
            opened: 0,
            streaming: 0,
            connect_failed: 0,
            refused: BTreeMap::new(),
            disconnected: 0,
            slow: 0,
            slow_closed: 0,
            reconnects: 0,
            reconnect_failed: 0,
            first_error: None,
            reconnect_at: BinaryHeap::new(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ (spec.index as u64 + 1) ^ crate::now_ns(),
            stamp: 0,
            stamp_uses: 0,
        }
    }

    /// Starts the connections that are due `elapsed` after the worker started, under its
    /// share of `--rate`; while `alone` is not 0, only the first `alone` clients (the first
    /// stream to each server opens alone: see `Worker::check_first`).
    pub fn open_more(&mut self, env: Env, elapsed: Duration, alone: usize) {
        let n = self.list.len();
        let due = if alone > 0 {
            alone
        } else if env.spec.rate == 0.0 {
            n
        } else {
            let t = elapsed.as_secs_f64();
            ((t * env.spec.rate).floor() as usize + 1).min(n)
        };
        let mut started = 0;
        while self.opened < due && started < CONNECTS_PER_TURN {
            let i = self.opened;
            self.opened += 1;
            started += 1;
            self.connect(env, i);
        }
    }

    /// Opens (or reopens) client `i`'s connection.
    fn connect(&mut self, env: Env, i: usize) {
        let global = env.spec.first + i;
        let k = env.spec.source_ips;
        let src = (k > 1).then(|| net::source_ip(global, k));
        let (url, _) = env.plan.group_target(self.list[i].group);
        let res = net::start_connect(src, url.addr).and_then(|mut s| {
            env.registry
                .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
            Ok(s)
        });
        match res {
            Ok(s) => {
                let c = &mut self.list[i];
                c.stream = Some(s);
                c.phase = Phase::Connecting;
            }
            Err(e) => self.fail(env, i, format!("connect from {src:?}: {e}")),
        }
    }

    /// A connection that never got to stream failed.
    pub fn fail(&mut self, env: Env, i: usize, msg: String) {
        if self.list[i].seen.counted {
            self.reconnect_failed += 1;
            self.disconnected += 1;
        } else {
            self.connect_failed += 1;
        }
        self.close(env, i);
        self.note_error(msg);
    }

    fn note_error(&mut self, msg: String) {
        if self.first_error.is_none() {
            self.first_error = Some(msg);
        }
    }

    /// Drops client `i`'s socket.
    fn close(&mut self, env: Env, i: usize) {
        let c = &mut self.list[i];
        if let Some(mut s) = c.stream.take() {
            let _ = env.registry.deregister(&mut s);
        }
        c.phase = Phase::Closed;
    }

    /// Arms client `i`'s next reconnect, at a random time around `--reconnect-every`.
    pub fn arm_reconnect(&mut self, env: Env, i: usize, now: Instant) {
        let Some(every) = env.plan.args.reconnect_every else {
            return;
        };
        let r = next_random(&mut self.rng) % 1000;
        let after = every.mul_f64(0.5 + r as f64 / 1000.0);
        self.reconnect_at.push(Reverse((now + after, i)));
    }

    /// When the next armed reconnect is due.
    pub fn next_reconnect(&self) -> Option<Instant> {
        self.reconnect_at.peek().map(|Reverse((at, _))| *at)
    }

    /// Reconnects the clients whose time has come.
    pub fn reconnect_due(&mut self, env: Env, tally: &mut Tally, now: Instant) {
        while let Some(&Reverse((at, i))) = self.reconnect_at.peek() {
            if at > now {
                break;
            }
            self.reconnect_at.pop();
            self.reconnect(env, tally, i);
        }
    }

    /// Forgets every armed reconnect.
    pub fn cancel_reconnects(&mut self) {
        self.reconnect_at.clear();
    }

    /// Drops client `i`'s stream and opens a new one resuming after its last event id.
    fn reconnect(&mut self, env: Env, tally: &mut Tally, i: usize) {
        let c = &mut self.list[i];
        if !matches!(c.phase, Phase::Streaming { .. }) {
            return;
        }
        tally.stream_dropped(&mut c.seen, c.group);
        let id = c.frames.last_event_id();
        if !id.is_empty() {
            c.resume_id = Some(String::from_utf8_lossy(id).into());
        }
        c.frames = FrameReader::default();
        if let Some(mut s) = c.stream.take() {
            let _ = env.registry.deregister(&mut s);
        }
        c.phase = Phase::Idle;
        self.streaming -= 1;
        self.reconnects += 1;
        self.connect(env, i);
    }

    /// The connection ended (closed by the server, or broken).
    fn ended(&mut self, env: Env, tally: &mut Tally, i: usize, msg: String) {
        match self.list[i].phase {
            Phase::Streaming { .. } if env.plan.args.reconnect_every.is_some() => {
                // A browser reconnects; so do we (and the events must still all arrive).
                self.reconnect(env, tally, i);
            }
            Phase::Streaming { .. } => {
                self.streaming -= 1;
                self.disconnected += 1;
                self.note_error(format!("stream {}: {msg}", env.spec.first + i));
                self.close(env, i);
            }
            Phase::Closed => {}
            _ => self.fail(env, i, msg),
        }
    }
}

/// Readiness: sending the request, reading the head and the stream.
impl Clients {
    /// A new reactor turn: the next read takes a fresh receive timestamp.
    pub fn new_turn(&mut self) {
        self.stamp_uses = 0;
    }

    /// Handles readiness of client `i`; its events go to `tally`.
    pub fn on_client_event(
        &mut self,
        env: Env,
        tally: &mut Tally,
        i: usize,
        ev: &mio::event::Event,
    ) {
        let Some(c) = self.list.get_mut(i) else {
            return;
        };
        let Some(s) = &mut c.stream else { return };
        if let Phase::Slow = c.phase {
            if ev.is_read_closed() || ev.is_error() {
                self.slow_closed += 1;
                self.close(env, i);
            }
            return;
        }
        if let Phase::Connecting = c.phase {
            if !(ev.is_writable() || ev.is_error() || ev.is_read_closed()) {
                return;
            }
            match s.take_error() {
                Ok(None) if s.peer_addr().is_ok() => {
                    let _ = s.set_nodelay(true);
                    c.phase = Phase::Sending { sent: 0 };
                }
                Ok(None) => return,
                Ok(Some(e)) | Err(e) => {
                    self.fail(env, i, format!("connect: {e}"));
                    return;
                }
            }
        }
        if let Phase::Sending { sent } = &mut c.phase {
            let request = env.plan.stream_request(c.group, c.resume_id.as_deref());
            loop {
                match s.write(&request[*sent..]) {
                    Ok(n) => {
                        *sent += n;
                        if *sent == request.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.fail(env, i, format!("send request: {e}"));
                        return;
                    }
                }
            }
            if env.plan.is_slow(env.spec.first + i) {
                c.phase = Phase::Slow;
                self.slow += 1;
                return;
            }
            c.phase = Phase::Head(Vec::new());
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.read(env, tally, i);
        }
    }

    /// Reads client `i` until the socket is empty. Edge-triggered: a read shorter than the
    /// buffer emptied the socket, and new bytes (or the FIN) raise a new event, so the extra
    /// `read` that would only say `WouldBlock` is skipped.
    fn read(&mut self, env: Env, tally: &mut Tally, i: usize) {
        loop {
            let Some(s) = &mut self.list[i].stream else {
                return;
            };
            match s.read(&mut self.buf) {
                Ok(0) => {
                    self.ended(env, tally, i, "the server closed the connection".into());
                    return;
                }
                Ok(n) => {
                    let recv_ns = self.recv_stamp();
                    if let Err(msg) = self.bytes(env, tally, i, n, recv_ns) {
                        self.ended(env, tally, i, msg);
                        return;
                    }
                    if n < self.buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.ended(env, tally, i, format!("read: {e}"));
                    return;
                }
            }
        }
    }

    /// The receive time of a read: the clock is read once per [`STAMP_READS`] reads of one
    /// reactor turn (reads take a microsecond or two; latencies are milliseconds).
    fn recv_stamp(&mut self) -> u64 {
        if self.stamp_uses == 0 {
            self.stamp = crate::now_ns();
        }
        self.stamp_uses = (self.stamp_uses + 1) % STAMP_READS;
        self.stamp
    }

    /// Handles `n` bytes in `self.buf` read from client `i`.
    fn bytes(
        &mut self,
        env: Env,
        tally: &mut Tally,
        i: usize,
        n: usize,
        recv_ns: u64,
    ) -> Result<(), String> {
        let c = &mut self.list[i];
        let Phase::Head(acc) = &mut c.phase else {
            return feed(c, &self.buf[..n], &mut self.decode, tally, recv_ns);
        };
        acc.extend_from_slice(&self.buf[..n]);
        let Some(head) = http::parse_head(acc)? else {
            return Ok(());
        };
        if let Some(why) = head.refusal() {
            *self.refused.entry(why).or_insert(0) += 1;
            let line = head.status_line.clone();
            let ct = head.content_type.unwrap_or_else(|| "none".into());
            if self.list[i].seen.counted {
                self.reconnect_failed += 1;
                self.disconnected += 1;
            }
            self.close(env, i);
            self.note_error(format!(
                "the server answered `{line}` (Content-Type: {ct}), not an event stream"
            ));
            return Ok(());
        }
        let rest = acc.split_off(head.len);
        c.phase = Phase::Streaming {
            chunked: head.chunked.then(Box::default),
        };
        self.streaming += 1;
        if c.seen.counted {
            tally.stream_started(&mut c.seen);
            self.arm_reconnect(env, i, Instant::now());
        }
        let c = &mut self.list[i];
        feed(c, &rest, &mut self.decode, tally, recv_ns)
    }
}

/// Scratch space for decoding, shared by all clients of a worker.
#[derive(Default)]
pub struct Decode {
    /// De-chunked body bytes.
    body: Vec<u8>,
    /// The last tick text seen and its time (ticks repeat across clients: parse once).
    tick_cache: (Vec<u8>, u64),
}

impl Decode {
    /// What an event is; a tick's text is parsed once for all clients.
    fn key(&mut self, data: &[u8], id: &[u8]) -> Key {
        if data == self.tick_cache.0.as_slice() {
            return Key::Tick(self.tick_cache.1);
        }
        let k = Key::of(data, id);
        if let Key::Tick(t) = k {
            self.tick_cache.0.clear();
            self.tick_cache.0.extend_from_slice(data);
            self.tick_cache.1 = t;
        }
        k
    }
}

/// Decodes stream bytes for one client (de-chunking if needed), reads events, tallies them.
fn feed(
    c: &mut Client,
    data: &[u8],
    d: &mut Decode,
    tally: &mut Tally,
    recv_ns: u64,
) -> Result<(), String> {
    let Phase::Streaming { chunked } = &mut c.phase else {
        return Ok(());
    };
    let (seen, group) = (&mut c.seen, c.group);
    let Some(ch) = chunked else {
        c.frames.feed(data, |bytes, id| {
            let key = d.key(bytes, id);
            tally.on_event(seen, (group, key), recv_ns);
        });
        return Ok(());
    };
    let mut body = std::mem::take(&mut d.body);
    body.clear();
    let decoded = ch.feed(data, &mut body, usize::MAX);
    c.frames.feed(&body, |bytes, id| {
        let key = d.key(bytes, id);
        tally.on_event(seen, (group, key), recv_ns);
    });
    d.body = body;
    match decoded {
        Ok((_, true)) => Err("the server ended the stream (last chunk)".into()),
        Ok((_, false)) => Ok(()),
        Err(e) => Err(format!("bad chunked stream: {e:?}")),
    }
}
