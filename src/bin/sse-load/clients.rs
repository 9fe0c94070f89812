//! One worker's client connections: opening them at the asked rate, sending the request,
//! reading the head, then decoding the stream (de-chunking when needed) into events for the
//! tally; reconnecting with `Last-Event-ID` under `--reconnect-every`; slow clients that
//! never read.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Token};
use sse_server::http::chunked::ChunkedDecoder;

use crate::frames::FrameReader;
use crate::http;
use crate::net;
use crate::stats::Key;
use crate::tally::{Seen, Tally};
use crate::worker::Worker;

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

impl Worker {
    /// Starts the connections that are due under this worker's share of `--rate`.
    pub fn open_more(&mut self, now: Instant) {
        let n = self.clients.len();
        let due = if self.checking > 0 {
            // The first stream to each server opens alone (see `Worker::check_first`).
            self.checking
        } else if self.spec.rate == 0.0 {
            n
        } else {
            let t = now.duration_since(self.started).as_secs_f64();
            ((t * self.spec.rate).floor() as usize + 1).min(n)
        };
        let mut started = 0;
        while self.opened < due && started < CONNECTS_PER_TURN {
            let i = self.opened;
            self.opened += 1;
            started += 1;
            self.connect(i);
        }
    }

    /// Opens (or reopens) client `i`'s connection.
    pub fn connect(&mut self, i: usize) {
        let global = self.spec.first + i;
        let k = self.spec.source_ips;
        let src = (k > 1).then(|| net::source_ip(global, k));
        let (url, _) = self.plan.group_target(self.clients[i].group);
        let res = net::start_connect(src, url.addr).and_then(|mut s| {
            self.poll.registry().register(
                &mut s,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        match res {
            Ok(s) => {
                let c = &mut self.clients[i];
                c.stream = Some(s);
                c.phase = Phase::Connecting;
            }
            Err(e) => self.fail(i, format!("connect from {src:?}: {e}")),
        }
    }

    /// A connection that never got to stream failed.
    pub fn fail(&mut self, i: usize, msg: String) {
        if self.clients[i].seen.counted {
            self.reconnect_failed += 1;
            self.disconnected += 1;
        } else {
            self.connect_failed += 1;
        }
        self.close(i);
        self.note_error(msg);
    }

    pub fn note_error(&mut self, msg: String) {
        if self.first_error.is_none() {
            self.first_error = Some(msg);
        }
    }

    /// Drops client `i`'s socket.
    pub fn close(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.phase = Phase::Closed;
    }

    /// Arms client `i`'s next reconnect, at a random time around `--reconnect-every`.
    pub fn arm_reconnect(&mut self, i: usize, now: Instant) {
        let Some(every) = self.plan.args.reconnect_every else {
            return;
        };
        let r = next_random(&mut self.rng) % 1000;
        let after = every.mul_f64(0.5 + r as f64 / 1000.0);
        self.reconnect_at.push(std::cmp::Reverse((now + after, i)));
    }

    /// Drops client `i`'s stream and opens a new one resuming after its last event id.
    pub fn reconnect(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if !matches!(c.phase, Phase::Streaming { .. }) {
            return;
        }
        let id = c.frames.last_event_id();
        if !id.is_empty() {
            c.resume_id = Some(String::from_utf8_lossy(id).into());
        }
        c.frames = FrameReader::default();
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.phase = Phase::Idle;
        self.streaming -= 1;
        self.reconnects += 1;
        self.connect(i);
    }

    /// Handles readiness of client `i`.
    pub fn on_client_event(&mut self, i: usize, ev: &mio::event::Event) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        let Some(s) = &mut c.stream else { return };
        if let Phase::Slow = c.phase {
            if ev.is_read_closed() || ev.is_error() {
                self.slow_closed += 1;
                self.close(i);
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
                    self.fail(i, format!("connect: {e}"));
                    return;
                }
            }
        }
        if let Phase::Sending { sent } = &mut c.phase {
            let request = self.plan.stream_request(c.group, c.resume_id.as_deref());
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
                        self.fail(i, format!("send request: {e}"));
                        return;
                    }
                }
            }
            if self.plan.is_slow(self.spec.first + i) {
                c.phase = Phase::Slow;
                self.slow += 1;
                return;
            }
            c.phase = Phase::Head(Vec::new());
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.read(i);
        }
    }

    /// Reads client `i` until the socket is empty. Edge-triggered: a read shorter than the
    /// buffer emptied the socket, and new bytes (or the FIN) raise a new event, so the extra
    /// `read` that would only say `WouldBlock` is skipped.
    fn read(&mut self, i: usize) {
        loop {
            let Some(s) = &mut self.clients[i].stream else {
                return;
            };
            match s.read(&mut self.buf) {
                Ok(0) => {
                    self.ended(i, "the server closed the connection".into());
                    return;
                }
                Ok(n) => {
                    let recv_ns = self.recv_stamp();
                    if let Err(msg) = self.bytes(i, n, recv_ns) {
                        self.ended(i, msg);
                        return;
                    }
                    if n < self.buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.ended(i, format!("read: {e}"));
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

    /// The connection ended (closed by the server, or broken).
    fn ended(&mut self, i: usize, msg: String) {
        match self.clients[i].phase {
            Phase::Streaming { .. } if self.plan.args.reconnect_every.is_some() => {
                // A browser reconnects; so do we (and the events must still all arrive).
                self.reconnect(i);
            }
            Phase::Streaming { .. } => {
                self.streaming -= 1;
                self.disconnected += 1;
                self.note_error(format!("stream {}: {msg}", self.spec.first + i));
                self.close(i);
            }
            Phase::Closed => {}
            _ => self.fail(i, msg),
        }
    }

    /// Handles `n` bytes in `self.buf` read from client `i`.
    fn bytes(&mut self, i: usize, n: usize, recv_ns: u64) -> Result<(), String> {
        let c = &mut self.clients[i];
        let Phase::Head(acc) = &mut c.phase else {
            return feed(
                c,
                &self.buf[..n],
                &mut self.decode,
                &mut self.tally,
                recv_ns,
            );
        };
        acc.extend_from_slice(&self.buf[..n]);
        let Some(head) = http::parse_head(acc)? else {
            return Ok(());
        };
        if let Some(why) = head.refusal() {
            *self.refused.entry(why).or_insert(0) += 1;
            let line = head.status_line.clone();
            let ct = head.content_type.unwrap_or_else(|| "none".into());
            if self.clients[i].seen.counted {
                self.reconnect_failed += 1;
                self.disconnected += 1;
            }
            self.close(i);
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
            self.arm_reconnect(i, Instant::now());
        }
        let c = &mut self.clients[i];
        feed(c, &rest, &mut self.decode, &mut self.tally, recv_ns)
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
