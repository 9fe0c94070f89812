//! `sse-load`: a load generator for any Server-Sent Events server.
//!
//! One thread, one mio reactor. It opens `--clients` streams at `--rate` per second, spread
//! over `--source-ips` loopback source addresses (so the count is not capped by one address's
//! ephemeral ports), decodes every stream with the WHATWG parser
//! ([`sse_server::sse::parse::Parser`]), and measures:
//!
//! - the time to connect everyone (until each stream's response head arrived);
//! - per (client, event) fan-out latency: receive time minus the time inside the event (a
//!   `the time is …` tick in Go's layout, or a `ts=<unix ns>` payload);
//! - completeness over the measured window: each client got each event once, in order.
//!
//! With `--publish-rate` it also publishes `ts=<unix ns>` events over one keep-alive
//! (pipelined) HTTP/1.1 connection and reports deliveries per second.
//!
//! Exit codes: 0 every event reached every client; 3 the run finished but delivery was
//! incomplete; 2 bad flags (or more clients than the open-file limit allows); 1 the server
//! could not be reached or opened no stream.

mod http;
mod net;
mod stats;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser as _;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use sse_server::config::parse_duration;
use sse_server::sse::parse::{Event, Parser};

use http::Chunked;
use net::HttpUrl;
use stats::{Histogram, Key, Report};

/// The command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "sse-load",
    version,
    about = "Load generator for Server-Sent Events servers: connects many clients, measures fan-out latency and completeness"
)]
struct Args {
    /// The event stream to open.
    #[arg(long, default_value = "http://127.0.0.1:3000/events")]
    url: String,
    /// Concurrent streams to open.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    clients: u32,
    /// Connections opened per second (0: as fast as possible).
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Spread source addresses over 127.0.0.1 … 127.0.0.K (IPv4 loopback servers only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    source_ips: u8,
    /// Length of the measured window, which starts once every stream is open.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// End the window after this many events (ticks seen, or events published).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    events: Option<u64>,
    /// Publish `ts=<unix ns>` events at this rate (per second) during the window.
    #[arg(long)]
    publish_rate: Option<f64>,
    /// Where to POST them (default: `/publish` on the stream's server).
    #[arg(long)]
    publish_url: Option<String>,
    /// Publish requests sent ahead of their responses on the keep-alive connection.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    publish_pipeline: u32,
    /// Extra request header (`Name: value`) for the streams and the publishes; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Give up on connections still not streaming after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// After the window, wait at most this long for its last events to reach everyone.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    drain: Duration,
    /// Print one JSON line (instead of the table) on stdout.
    #[arg(long)]
    json: bool,
}

/// Descriptors kept back from clients: epoll, stdio, the publisher, a margin.
const RESERVED_FDS: u64 = 16;
/// The publisher's token; clients use their index.
const PUBLISHER: Token = Token(usize::MAX - 1);
/// Connections started per loop turn at most, so reading is not starved while connecting.
const CONNECTS_PER_TURN: usize = 256;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            eprintln!("sse-load: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("sse-load: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Why the run could not be done.
enum Failure {
    /// A flag is wrong (exit 2).
    Usage(String),
    /// The server is unreachable, or the reactor failed (exit 1).
    Runtime(String),
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Where one client connection is.
enum Phase {
    /// Waiting for the TCP connect to complete.
    Connecting,
    /// Sending the request; `sent` bytes are out.
    Sending { sent: usize },
    /// Reading the response head.
    Head(Vec<u8>),
    /// Reading the event stream (`chunked`: the body is chunk-encoded).
    Streaming { chunked: Option<Chunked> },
    /// Over (failed, refused or closed).
    Closed,
}

/// One simulated browser.
struct Client {
    stream: Option<TcpStream>,
    phase: Phase,
    parser: Parser,
    /// Events of the window this client received.
    got: u64,
    last_tick: u64,
    last_ts: u64,
    /// Streaming when the window started: it is expected to get every window event.
    counted: bool,
}

/// The measured window.
#[derive(Clone, Copy)]
enum Window {
    NotStarted,
    Open {
        start: Instant,
        start_ns: u64,
    },
    Closed {
        start: Instant,
        start_ns: u64,
        end: Instant,
        end_ns: u64,
    },
}

/// Everything counted about events.
struct Tally {
    window: Window,
    /// Window events to the number of clients that received each.
    counts: HashMap<Key, u32>,
    /// Opaque events seen before the window opened (not part of it).
    before: std::collections::HashSet<Key>,
    /// `ts=` events are the publisher's: only those it sent are in the window.
    published_only: bool,
    /// End the window after this many distinct events (when not publishing).
    cap: Option<u64>,
    latency: Histogram,
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
}

impl Tally {
    fn window_start_ns(&self) -> Option<u64> {
        match self.window {
            Window::NotStarted => None,
            Window::Open { start_ns, .. } | Window::Closed { start_ns, .. } => Some(start_ns),
        }
    }

    fn close(&mut self, end_ns: u64) {
        if let Window::Open { start, start_ns } = self.window {
            self.window = Window::Closed {
                start,
                start_ns,
                end: Instant::now(),
                end_ns,
            };
        }
    }

    /// One event reached client `c` at `recv_ns`.
    fn on_event(&mut self, c: &mut Client, key: Key, recv_ns: u64) {
        let Some(start_ns) = self.window_start_ns() else {
            if let Key::Opaque(_) = key {
                self.before.insert(key);
            }
            return;
        };
        let open = matches!(self.window, Window::Open { .. });
        let known = self.counts.contains_key(&key);
        let admitted = known
            || match key {
                Key::Ts(_) if self.published_only => false,
                Key::Tick(t) | Key::Ts(t) => {
                    t >= start_ns
                        && match self.window {
                            Window::Closed { end_ns, .. } => t <= end_ns,
                            _ => true,
                        }
                }
                Key::Opaque(_) => open && !self.before.contains(&key),
            };
        if !admitted || !c.counted {
            return;
        }
        if let Some(t) = key.time() {
            let last = if matches!(key, Key::Tick(_)) {
                &mut c.last_tick
            } else {
                &mut c.last_ts
            };
            if t == *last {
                self.duplicates += 1;
                return;
            }
            if t < *last {
                self.out_of_order += 1;
                return;
            }
            *last = t;
            self.latency.record(recv_ns.saturating_sub(t));
        }
        let n = self.counts.entry(key).or_insert(0);
        *n += 1;
        self.delivered += 1;
        c.got += 1;
        if !known
            && open
            && !self.published_only
            && self.cap.is_some_and(|cap| self.counts.len() as u64 >= cap)
        {
            // Later events are outside the window: by time, or (opaque) by closure.
            self.close(key.time().unwrap_or_else(now_ns));
        }
    }
}

/// The `ts=` publisher on one keep-alive connection.
struct Publisher {
    url: HttpUrl,
    rate: f64,
    pipeline: usize,
    limit: Option<u64>,
    headers: String,
    stream: Option<TcpStream>,
    connected: bool,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    inflight: VecDeque<u64>,
    retry_at: Option<Instant>,
    sent: u64,
    acked: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Publisher {
    fn connect(&mut self, poll: &Poll) {
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
    fn finished(&self) -> bool {
        self.limit.is_some_and(|l| self.sent >= l) && self.inflight.is_empty()
    }

    /// Queues the requests that are due at `elapsed` into the window, and writes.
    fn pump(&mut self, poll: &Poll, elapsed: Duration, tally: &mut Tally) {
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
            let ts = now_ns();
            let body = format!("ts={ts}");
            let _ = write!(
                self.out,
                "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
                self.url.target,
                self.url.host,
                body.len(),
                self.headers
            );
            self.inflight.push_back(ts);
            tally.counts.entry(Key::Ts(ts)).or_insert(0);
            self.sent += 1;
        }
        self.flush(tally);
    }

    fn flush(&mut self, tally: &mut Tally) {
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

    fn on_event(&mut self, ev: &mio::event::Event, tally: &mut Tally) {
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
                    let Some(ts) = self.inflight.pop_front() else {
                        continue;
                    };
                    if status == 200 {
                        self.acked += 1;
                    } else {
                        self.failed += 1;
                        self.note_error(format!("publisher: status {status}"));
                        forget(tally, ts);
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
        for ts in std::mem::take(&mut self.inflight) {
            self.failed += 1;
            forget(tally, ts);
        }
        self.retry_at = Some(Instant::now() + Duration::from_millis(100));
    }
}

/// Takes an unpublished event out of the window (unless some client got it after all).
fn forget(tally: &mut Tally, ts: u64) {
    if tally.counts.get(&Key::Ts(ts)) == Some(&0) {
        tally.counts.remove(&Key::Ts(ts));
    }
}

/// The whole run's state.
struct Runner {
    args: Args,
    url: HttpUrl,
    request: Vec<u8>,
    poll: Poll,
    clients: Vec<Client>,
    tally: Tally,
    publisher: Option<Publisher>,
    buf: Box<[u8]>,
    body: Vec<u8>,
    events: Vec<Event>,
    opened: usize,
    streaming: usize,
    connect_failed: usize,
    rejected: usize,
    disconnected: usize,
    first_error: Option<String>,
    started: Instant,
    all_connected_at: Option<Instant>,
}

fn run(args: Args) -> Result<ExitCode, Failure> {
    let url = HttpUrl::parse(&args.url).map_err(Failure::Usage)?;
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err(Failure::Usage(format!(
            "--rate {} must be a number ≥ 0",
            args.rate
        )));
    }
    if args.source_ips > 1 && !net::is_v4_loopback(url.addr.ip()) {
        return Err(Failure::Usage(format!(
            "--source-ips needs an IPv4 loopback server (127.0.0.0/8), not {}",
            url.addr.ip()
        )));
    }
    let publish_url = match (&args.publish_url, args.publish_rate) {
        (_, None) => None,
        (_, Some(r)) if !(r.is_finite() && r > 0.0) => {
            return Err(Failure::Usage(format!(
                "--publish-rate {r} must be more than 0"
            )));
        }
        (Some(u), Some(_)) => Some(HttpUrl::parse(u).map_err(Failure::Usage)?),
        (None, Some(_)) => Some(url.with_target("/publish")),
    };
    if args.publish_url.is_some() && args.publish_rate.is_none() {
        return Err(Failure::Usage(
            "--publish-url needs --publish-rate".to_string(),
        ));
    }
    let mut headers = String::new();
    for h in &args.headers {
        match h.split_once(':') {
            Some((name, _))
                if !name.is_empty()
                    && !name.contains(char::is_whitespace)
                    && !h.contains(['\r', '\n']) =>
            {
                headers.push_str(h);
                headers.push_str("\r\n");
            }
            _ => {
                return Err(Failure::Usage(format!(
                    "--header `{h}` must look like `Name: value`"
                )));
            }
        }
    }
    let nofile = sse_server::os::raise_nofile_limit();
    let room = nofile.saturating_sub(RESERVED_FDS);
    eprintln!("sse-load: open-file limit {nofile}: room for {room} clients");
    if u64::from(args.clients) > room {
        return Err(Failure::Usage(format!(
            "--clients {} exceeds what the open-file limit ({nofile}) allows: at most {room} (run several sse-load processes, or raise `ulimit -n`)",
            args.clients
        )));
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{headers}\r\n",
        url.target, url.host
    )
    .into_bytes();
    let poll = Poll::new().map_err(|e| Failure::Runtime(format!("epoll: {e}")))?;
    let publisher = publish_url.map(|u| Publisher {
        url: u,
        rate: args.publish_rate.unwrap_or(1.0),
        pipeline: args.publish_pipeline as usize,
        limit: args.events,
        headers: headers.clone(),
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
    });
    let tally = Tally {
        window: Window::NotStarted,
        counts: HashMap::new(),
        before: Default::default(),
        published_only: publisher.is_some(),
        cap: args.events,
        latency: Histogram::default(),
        delivered: 0,
        duplicates: 0,
        out_of_order: 0,
    };
    let clients = (0..args.clients)
        .map(|_| Client {
            stream: None,
            phase: Phase::Connecting,
            parser: Parser::new(),
            got: 0,
            last_tick: 0,
            last_ts: 0,
            counted: false,
        })
        .collect();
    let runner = Runner {
        args,
        url,
        request,
        poll,
        clients,
        tally,
        publisher,
        buf: vec![0u8; 64 * 1024].into_boxed_slice(),
        body: Vec::new(),
        events: Vec::new(),
        opened: 0,
        streaming: 0,
        connect_failed: 0,
        rejected: 0,
        disconnected: 0,
        first_error: None,
        started: Instant::now(),
        all_connected_at: None,
    };
    runner.run()
}

impl Runner {
    fn run(mut self) -> Result<ExitCode, Failure> {
        let mut events = Events::with_capacity(4096);
        let mut drain_until: Option<Instant> = None;
        let mut last_progress = Instant::now();
        loop {
            let now = Instant::now();
            let mut timeout = Duration::from_millis(50);
            match self.tally.window {
                Window::NotStarted => {
                    self.check_first()?;
                    self.open_more(now);
                    if now.duration_since(last_progress) >= Duration::from_secs(2) {
                        last_progress = now;
                        eprintln!(
                            "sse-load: {} streaming, {} connecting, {} failed",
                            self.streaming,
                            self.opened - self.streaming - self.connect_failed - self.rejected,
                            self.connect_failed + self.rejected
                        );
                    }
                    let resolved = self.streaming + self.connect_failed + self.rejected;
                    let timed_out = now.duration_since(self.started) >= self.args.connect_timeout;
                    if resolved == self.clients.len() || timed_out {
                        self.start_window(now)?;
                    } else if self.opened < self.clients.len() && self.args.rate > 0.0 {
                        timeout = Duration::from_secs_f64(1.0 / self.args.rate).min(timeout);
                    }
                }
                Window::Open { start, .. } => {
                    let elapsed = now.duration_since(start);
                    if let Some(p) = &mut self.publisher {
                        p.pump(&self.poll, elapsed, &mut self.tally);
                        let next = Duration::from_secs_f64((p.sent as f64 + 1.0) / p.rate);
                        timeout = next.saturating_sub(elapsed).min(timeout);
                    }
                    let published_all = self.publisher.as_ref().is_some_and(Publisher::finished);
                    if elapsed >= self.args.duration || published_all || self.streaming == 0 {
                        self.tally.close(now_ns());
                    } else {
                        timeout = timeout.min(self.args.duration - elapsed);
                    }
                }
                Window::Closed { .. } => {
                    let until = *drain_until.get_or_insert(now + self.args.drain);
                    let expected = self.counted() as u64 * self.tally.counts.len() as u64;
                    if now >= until || self.tally.delivered >= expected || self.streaming == 0 {
                        break;
                    }
                    if let Some(p) = &mut self.publisher {
                        p.flush(&mut self.tally);
                    }
                    timeout = timeout.min(until - now);
                }
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Failure::Runtime(format!("epoll: {e}")));
            }
            for ev in events.iter() {
                if ev.token() == PUBLISHER {
                    if let Some(p) = &mut self.publisher {
                        p.on_event(ev, &mut self.tally);
                    }
                } else {
                    self.on_client_event(ev.token().0, ev);
                }
            }
        }
        let report = self.report();
        if self.args.json {
            println!("{}", report.json());
        } else {
            print!("{}", report.table());
        }
        if report.connected == 0 {
            eprintln!(
                "sse-load: no stream could be opened at {}: {}",
                report.url,
                report.first_error.as_deref().unwrap_or("no reason known")
            );
            return Ok(ExitCode::from(1));
        }
        Ok(if report.all_delivered() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        })
    }

    /// The first connection is opened alone: if it fails, the server is unreachable (or
    /// refuses streams) and the run stops with a clear message, before opening thousands.
    fn check_first(&self) -> Result<(), Failure> {
        if self.streaming > 0 || self.opened == 0 {
            return Ok(());
        }
        let why = self.first_error.as_deref().unwrap_or("no reason known");
        if self.rejected > 0 {
            return Err(Failure::Runtime(format!(
                "the server at {} refused the stream: {why}",
                self.args.url
            )));
        }
        if self.connect_failed > 0 {
            return Err(Failure::Runtime(format!(
                "cannot connect to {} ({}): {why}; is the server running?",
                self.url.addr, self.args.url
            )));
        }
        Ok(())
    }

    fn counted(&self) -> usize {
        self.clients.iter().filter(|c| c.counted).count()
    }

    /// Starts the connections that are due under `--rate`.
    fn open_more(&mut self, now: Instant) {
        let due = if self.streaming == 0 {
            // Until the first stream is open, only the first connection (see check_first).
            1
        } else if self.args.rate == 0.0 {
            self.clients.len()
        } else {
            let t = now.duration_since(self.started).as_secs_f64();
            ((t * self.args.rate).floor() as usize + 1).min(self.clients.len())
        };
        let mut n = 0;
        while self.opened < due && n < CONNECTS_PER_TURN {
            let i = self.opened;
            self.opened += 1;
            n += 1;
            let src = (self.args.source_ips > 1).then(|| net::source_ip(i, self.args.source_ips));
            let res = net::start_connect(src, self.url.addr).and_then(|mut s| {
                self.poll.registry().register(
                    &mut s,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(s)
            });
            match res {
                Ok(s) => self.clients[i].stream = Some(s),
                Err(e) => self.fail(i, format!("connect from {src:?}: {e}")),
            }
        }
    }

    fn fail(&mut self, i: usize, msg: String) {
        self.connect_failed += 1;
        self.close(i);
        if self.first_error.is_none() {
            self.first_error = Some(msg);
        }
    }

    fn close(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.phase = Phase::Closed;
    }

    fn start_window(&mut self, now: Instant) -> Result<(), Failure> {
        let mut gave_up = 0;
        for i in 0..self.clients.len() {
            match self.clients[i].phase {
                Phase::Streaming { .. } => self.clients[i].counted = true,
                Phase::Closed => {}
                _ => {
                    gave_up += 1;
                    self.fail(i, "not streaming by --connect-timeout".into());
                }
            }
        }
        if gave_up > 0 {
            eprintln!(
                "sse-load: gave up on {gave_up} connections not streaming by --connect-timeout"
            );
        }
        if self.streaming == 0 {
            return Err(Failure::Runtime(format!(
                "no stream could be opened at {}: {}",
                self.args.url,
                self.first_error.as_deref().unwrap_or("no reason known")
            )));
        }
        self.all_connected_at.get_or_insert(now);
        eprintln!(
            "sse-load: {} of {} streams open after {:.3} s; measuring for {:?}{}",
            self.streaming,
            self.clients.len(),
            now.duration_since(self.started).as_secs_f64(),
            self.args.duration,
            self.args
                .events
                .map_or(String::new(), |n| format!(" or {n} events"))
        );
        self.tally.window = Window::Open {
            start: now,
            start_ns: now_ns(),
        };
        if let Some(p) = &mut self.publisher {
            p.connect(&self.poll);
        }
        Ok(())
    }

    fn on_client_event(&mut self, i: usize, ev: &mio::event::Event) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        let Some(s) = &mut c.stream else { return };
        if let Phase::Connecting = c.phase {
            if ev.is_writable() || ev.is_error() || ev.is_read_closed() {
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
            } else {
                return;
            }
        }
        if let Phase::Sending { sent } = &mut c.phase {
            loop {
                match s.write(&self.request[*sent..]) {
                    Ok(n) => {
                        *sent += n;
                        if *sent == self.request.len() {
                            c.phase = Phase::Head(Vec::new());
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
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.read(i);
        }
    }

    /// Reads client `i` until the socket is empty (edge-triggered: no second notice).
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
                    let recv_ns = now_ns();
                    if let Err(msg) = self.bytes(i, n, recv_ns) {
                        self.ended(i, msg);
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

    /// The connection ended (closed by the server, or broken).
    fn ended(&mut self, i: usize, msg: String) {
        match self.clients[i].phase {
            Phase::Streaming { .. } => {
                self.streaming -= 1;
                self.disconnected += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("stream {i}: {msg}"));
                }
                self.close(i);
            }
            Phase::Closed => {}
            _ => self.fail(i, msg),
        }
    }

    /// Handles `n` bytes in `self.buf` read from client `i`.
    fn bytes(&mut self, i: usize, n: usize, recv_ns: u64) -> Result<(), String> {
        let Runner {
            clients,
            tally,
            buf,
            body,
            events,
            ..
        } = self;
        let c = &mut clients[i];
        let Phase::Head(acc) = &mut c.phase else {
            return feed(c, &buf[..n], body, events, tally, recv_ns);
        };
        acc.extend_from_slice(&buf[..n]);
        let Some(head) = http::parse_head(acc)? else {
            return Ok(());
        };
        if head.status != 200 {
            self.rejected += 1;
            if self.first_error.is_none() {
                self.first_error = Some(format!("the server answered `{}`", head.status_line));
            }
            self.close(i);
            return Ok(());
        }
        let rest = acc.split_off(head.len);
        c.phase = Phase::Streaming {
            chunked: head.chunked.then(Chunked::default),
        };
        let r = feed(c, &rest, body, events, tally, recv_ns);
        self.streaming += 1;
        if self.streaming + self.connect_failed + self.rejected == self.clients.len() {
            self.all_connected_at = Some(Instant::now());
        }
        r
    }

    fn report(&self) -> Report {
        let counted: Vec<&Client> = self.clients.iter().filter(|c| c.counted).collect();
        let (start, end) = match self.tally.window {
            Window::Closed { start, end, .. } => (Some(start), Some(end)),
            Window::Open { start, .. } => (Some(start), Some(Instant::now())),
            Window::NotStarted => (None, None),
        };
        let window = match (start, end) {
            (Some(s), Some(e)) => e.duration_since(s).as_secs_f64(),
            _ => 0.0,
        };
        let ticks = self
            .tally
            .counts
            .keys()
            .filter(|k| matches!(k, Key::Tick(_)))
            .count() as u64;
        let published = self
            .tally
            .counts
            .keys()
            .filter(|k| matches!(k, Key::Ts(_)))
            .count() as u64;
        let h = &self.tally.latency;
        let p = self.publisher.as_ref();
        let first_error = self
            .first_error
            .clone()
            .or_else(|| p.and_then(|p| p.first_error.clone()));
        Report {
            url: self.args.url.clone(),
            clients: self.clients.len(),
            source_ips: self.args.source_ips,
            connected: counted.len(),
            connect_failed: self.connect_failed,
            rejected: self.rejected,
            first_error,
            connect_seconds: self
                .all_connected_at
                .map_or(0.0, |t| t.duration_since(self.started).as_secs_f64()),
            window_seconds: window,
            events: self.tally.counts.len() as u64,
            ticks,
            published_events: published,
            expected: counted.len() as u64 * self.tally.counts.len() as u64,
            delivered: self.tally.delivered,
            duplicates: self.tally.duplicates,
            out_of_order: self.tally.out_of_order,
            disconnected: self.disconnected,
            per_client_min: counted.iter().map(|c| c.got).min().unwrap_or(0),
            per_client_max: counted.iter().map(|c| c.got).max().unwrap_or(0),
            latency_samples: h.count(),
            p50_ns: h.quantile(0.50),
            p99_ns: h.quantile(0.99),
            max_ns: h.max(),
            mean_ns: h.mean(),
            deliveries_per_second: if window > 0.0 {
                self.tally.delivered as f64 / window
            } else {
                0.0
            },
            publish_rate_asked: p.map(|p| p.rate),
            published_sent: p.map_or(0, |p| p.sent),
            published_acked: p.map_or(0, |p| p.acked),
            published_failed: p.map_or(0, |p| p.failed),
            publish_rate_achieved: match p {
                Some(p) if window > 0.0 => p.sent as f64 / window,
                _ => 0.0,
            },
        }
    }
}

/// Decodes stream bytes for one client (de-chunking if needed), parses events, tallies them.
fn feed(
    c: &mut Client,
    data: &[u8],
    scratch: &mut Vec<u8>,
    events: &mut Vec<Event>,
    tally: &mut Tally,
    recv_ns: u64,
) -> Result<(), String> {
    let Phase::Streaming { chunked } = &mut c.phase else {
        return Ok(());
    };
    events.clear();
    match chunked {
        Some(ch) => {
            scratch.clear();
            ch.feed(data, |b| scratch.extend_from_slice(b))?;
            c.parser.feed(scratch, |e| events.push(e));
            if ch.is_done() {
                for e in events.drain(..) {
                    tally.on_event(c, Key::of(&e.data, &e.last_event_id), recv_ns);
                }
                return Err("the server ended the stream (last chunk)".into());
            }
        }
        None => c.parser.feed(data, |e| events.push(e)),
    }
    for e in events.drain(..) {
        let key = Key::of(&e.data, &e.last_event_id);
        tally.on_event(c, key, recv_ns);
    }
    Ok(())
}
