//! The `ts=` publisher: POSTs `ts=<unix ns>` events at a fixed rate over one keep-alive,
//! pipelined HTTP/1.1 connection, round-robin over the topics. Runs in the first worker.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use crate::args::Plan;
use crate::http;
use crate::net::HttpUrl;
use crate::stats::Key;
use crate::tally::{EventKey, Tally};

/// The publisher's token; clients use their index.
pub const PUBLISHER: Token = Token(usize::MAX - 1);

/// The publisher and its connection.
pub struct Publisher {
    url: HttpUrl,
    /// Events per second.
    pub rate: f64,
    pipeline: usize,
    limit: Option<u64>,
    headers: String,
    stream: Option<TcpStream>,
    connected: bool,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    inflight: VecDeque<EventKey>,
    retry_at: Option<Instant>,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub first_error: Option<String>,
}

impl Publisher {
    /// A publisher for the plan, when it publishes.
    pub fn new(plan: &Plan) -> Option<Publisher> {
        Some(Publisher {
            url: plan.publish.clone()?,
            rate: plan.args.publish_rate?,
            pipeline: plan.args.publish_pipeline as usize,
            limit: plan.args.events,
            headers: plan.headers.clone(),
            stream: None,
            connected: false,
            out: Vec::new(),
            inbuf: Vec::new(),
            inflight: VecDeque::new(),
            retry_at: None,
            sent: 0,
            acked: 0,
            failed: 0,
            first_error: None,
        })
    }

    /// Opens the connection (again).
    pub fn connect(&mut self, poll: &Poll) {
        match TcpStream::connect(self.url.addr) {
            Ok(mut s) => {
                if let Err(e) = poll.registry().register(
                    &mut s,
                    PUBLISHER,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.note_error(format!("publisher: register: {e}"));
                    return;
                }
                let _ = s.set_nodelay(true);
                self.stream = Some(s);
                self.connected = false;
            }
            Err(e) => {
                self.note_error(format!("publisher: connect {}: {e}", self.url.addr));
                self.retry_at = Some(Instant::now() + Duration::from_millis(100));
            }
        }
    }

    fn note_error(&mut self, msg: String) {
        if self.first_error.is_none() {
            self.first_error = Some(msg);
        }
    }

    /// True once every event it will send was sent and answered.
    pub fn finished(&self) -> bool {
        self.limit.is_some_and(|l| self.sent >= l) && self.inflight.is_empty()
    }

    /// When the next event is due, counted from the window's start.
    pub fn next_due(&self) -> Duration {
        Duration::from_secs_f64((self.sent as f64 + 1.0) / self.rate)
    }

    /// Queues the requests that are due at `elapsed` into the window, and writes.
    pub fn pump(&mut self, plan: &Plan, poll: &Poll, elapsed: Duration, tally: &mut Tally) {
        if self.stream.is_none() {
            if self.retry_at.is_none_or(|t| t <= Instant::now()) {
                self.retry_at = None;
                self.connect(poll);
            }
            return;
        }
        let mut due = (elapsed.as_secs_f64() * self.rate).floor() as u64 + 1;
        if let Some(l) = self.limit {
            due = due.min(l);
        }
        while self.sent < due && self.inflight.len() < self.pipeline {
            let Some((target, group)) = plan.publish_target(self.sent) else {
                return;
            };
            let ts = crate::now_ns();
            let body = format!("ts={ts}");
            let _ = write!(
                self.out,
                "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
                self.url.host,
                body.len(),
                self.headers
            );
            let key = (group, Key::Ts(ts));
            self.inflight.push_back(key);
            tally.expect(key);
            self.sent += 1;
        }
        self.flush(tally);
    }

    /// Writes what is queued, as far as the socket takes it.
    pub fn flush(&mut self, tally: &mut Tally) {
        if !self.connected {
            return;
        }
        let Some(s) = &mut self.stream else { return };
        while !self.out.is_empty() {
            match s.write(&self.out) {
                Ok(0) => break,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost(format!("publisher: write: {e}"), tally);
                    return;
                }
            }
        }
    }

    /// Handles readiness of its connection.
    pub fn on_event(&mut self, ev: &mio::event::Event, tally: &mut Tally) {
        let Some(s) = &mut self.stream else { return };
        if !self.connected && (ev.is_writable() || ev.is_error()) {
            match s.take_error() {
                Ok(None) if s.peer_addr().is_ok() => self.connected = true,
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    self.lost(format!("publisher: connect {}: {e}", self.url.addr), tally);
                    return;
                }
            }
        }
        if self.connected {
            self.flush(tally);
        }
        if ev.is_readable() || ev.is_read_closed() {
            self.read(tally);
        }
    }

    fn read(&mut self, tally: &mut Tally) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(s) = &mut self.stream else { return };
            match s.read(&mut buf) {
                Ok(0) => {
                    self.lost("publisher: the server closed the connection".into(), tally);
                    return;
                }
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost(format!("publisher: read: {e}"), tally);
                    return;
                }
            }
        }
        let mut used = 0;
        loop {
            match http::take_response(&self.inbuf[used..]) {
                Ok(Some((status, n))) => {
                    used += n;
                    let Some(key) = self.inflight.pop_front() else {
                        continue;
                    };
                    if status == 200 {
                        self.acked += 1;
                    } else {
                        self.failed += 1;
                        self.note_error(format!("publisher: status {status}"));
                        tally.forget(key);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.lost(format!("publisher: {e}"), tally);
                    return;
                }
            }
        }
        self.inbuf.drain(..used);
    }

    /// The connection is gone: requests without an answer are unknown; retry shortly.
    fn lost(&mut self, msg: String, tally: &mut Tally) {
        self.note_error(msg);
        self.stream = None;
        self.connected = false;
        self.out.clear();
        self.inbuf.clear();
        for key in std::mem::take(&mut self.inflight) {
            self.failed += 1;
            tally.forget(key);
        }
        self.retry_at = Some(Instant::now() + Duration::from_millis(100));
    }
}
