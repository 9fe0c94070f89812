//! Core tests with no sockets: everything through the core's own interface.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};

use super::drain::{OutputSink, WriteOutcome, offer};
use super::*;
use crate::bus::types::BusRequest;
use crate::config::SlowClientPolicy;
use crate::sse::parse::{Event, Parser};

const GET: &[u8] = b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";

struct T {
    core: Core,
    now: Instant,
    /// Bytes each client received (by id), and whether it was closed.
    got: Vec<(ClientId, Vec<u8>, bool)>,
    /// Requests for the shared log the core made, in order, not yet taken by the test.
    log_requests: std::collections::VecDeque<BusRequest>,
    /// Token checks handed out: answered at once by the drain unless `hold_checks`; then
    /// kept here, in order, for the test to answer.
    checks: std::collections::VecDeque<VerifyRequest>,
    hold_checks: bool,
}

/// The test's driver side: records what each client received.
struct Sink<'a> {
    t: &'a mut T,
    window: Option<usize>,
}

impl OutputSink for Sink<'_> {
    type Error = std::convert::Infallible;

    fn core(&mut self) -> &mut Core {
        &mut self.t.core
    }

    fn now(&self) -> Instant {
        self.t.now
    }

    fn write(&mut self, id: ClientId) -> Result<WriteOutcome, Self::Error> {
        let mut bytes: Vec<u8> = offer(&self.t.core, id, |iov| {
            iov.iter().flat_map(|s| s.iter().copied()).collect()
        });
        assert!(!bytes.is_empty(), "Write output with nothing to write");
        if let Some(w) = self.window {
            bytes.truncate(w);
        }
        let len = bytes.len();
        self.t.entry(id).1.extend_from_slice(&bytes);
        Ok(if len == 0 {
            WriteOutcome::WouldBlock
        } else {
            WriteOutcome::Wrote(len)
        })
    }

    fn after_write(&mut self, id: ClientId, outcome: WriteOutcome) -> Result<(), Self::Error> {
        if matches!(outcome, WriteOutcome::Wrote(_)) && self.window.is_some() {
            // A short write: the socket is now full.
            self.t.core.handle_would_block(id, self.t.now);
        }
        Ok(())
    }

    fn close(&mut self, id: ClientId, _: CloseReason) -> Result<(), Self::Error> {
        self.t.entry(id).2 = true;
        Ok(())
    }

    fn log_request(&mut self, request: BusRequest) -> Result<(), Self::Error> {
        self.t.log_requests.push_back(request);
        Ok(())
    }

    fn verify(&mut self, request: VerifyRequest) -> Result<(), Self::Error> {
        if self.t.hold_checks {
            self.t.checks.push_back(request);
        } else {
            drain::check_now(&mut self.t.core, &request, self.t.now);
        }
        Ok(())
    }
}

fn peer() -> SocketAddr {
    "127.0.0.1:5000".parse().unwrap()
}

fn cfg() -> Config {
    Config {
        interval: Some(Duration::from_secs(2)),
        keepalive: None,
        ..Config::default()
    }
}

impl T {
    fn new(cfg: Config) -> T {
        let now = Instant::now();
        let wall = Utc.with_ymd_and_hms(2024, 10, 13, 14, 35, 22).unwrap();
        T {
            core: Core::new(cfg, now, wall, 7),
            now,
            got: Vec::new(),
            log_requests: Default::default(),
            checks: Default::default(),
            hold_checks: false,
        }
    }

    fn connect(&mut self) -> ClientId {
        let id = self.core.handle_accept(peer(), self.now).unwrap();
        self.got.push((id, Vec::new(), false));
        id
    }

    /// `GET path` on a new connection that asks to close, drained: the connection and the
    /// whole answer.
    fn get_once(&mut self, path: &str) -> (ClientId, String) {
        let id = self.connect();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        self.core.handle_read(id, req.as_bytes(), self.now);
        self.drain(None);
        (id, self.text(id))
    }

    fn entry(&mut self, id: ClientId) -> &mut (ClientId, Vec<u8>, bool) {
        self.got.iter_mut().find(|(i, ..)| *i == id).unwrap()
    }

    /// Drains outputs; each write takes at most `window` bytes (None: everything).
    /// Performs every output with the shared harness; each write takes at most `window`
    /// bytes (then the socket is full), or everything.
    fn drain(&mut self, window: Option<usize>) {
        let Ok(done) = (Sink { t: self, window }).drain(usize::MAX);
        assert!(done);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        let wall = Utc.with_ymd_and_hms(2024, 10, 13, 14, 35, 22).unwrap()
            + chrono::Duration::from_std(d).unwrap();
        self.core.handle_timeout(wall, self.now);
    }

    fn text(&self, id: ClientId) -> String {
        String::from_utf8_lossy(&self.got.iter().find(|(i, ..)| *i == id).unwrap().1).into_owned()
    }

    fn events(&self, id: ClientId) -> Vec<Event> {
        let text = self.text(id);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(body.as_bytes(), |e| out.push(e));
        out
    }

    fn closed(&self, id: ClientId) -> bool {
        self.got.iter().find(|(i, ..)| *i == id).unwrap().2
    }
}

fn resume_request(topic: &str, last: &str) -> Vec<u8> {
    format!("GET /events?topic={topic} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {last}\r\n\r\n")
        .into_bytes()
}

mod admission;
mod auth;
mod checks;
mod cluster;
mod latency;
mod metrics;
mod mutants;
mod requests;
mod routing;
mod streams;
