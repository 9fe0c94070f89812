//! Shared helpers for the integration tests: start the real `sse-server` binary on port 0,
//! talk to it with raw sockets, and read what it sends.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server process; killed (SIGKILL) when dropped if still running.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `sse-server --listen 127.0.0.1:0 <args>` and waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(args, Stdio::null())
    }

    /// Like [`Server::start`], with the given stdin.
    pub fn start_with(args: &[&str], stdin: Stdio) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sse-server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sse-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Server { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        signal(self.pid(), libc_sigterm());
        self.wait_exit(Duration::from_secs(10))
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Number of open file descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// A value from `/metrics` (the first sample line starting with `name`).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = http(
            self.addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        body.lines()
            .find(|l| l.rsplit_once(' ').is_some_and(|(n, _)| n == name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing in\n{body}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn libc_sigterm() -> i32 {
    15
}

/// Sends `sig` to `pid` with the `kill` command (no unsafe in tests).
pub fn signal(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Sends a raw request, reads until the server closes (bounded at 5 s); returns
/// (status line + headers, body).
pub fn http(addr: SocketAddr, raw: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((h, b)) => (h.to_owned(), b.to_owned()),
        None => (text, String::new()),
    }
}

/// The status code of a response head.
pub fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `GET /health`: (status, body); (0, "") when nothing accepts on `addr`.
pub fn health(addr: SocketAddr) -> (u16, String) {
    if TcpStream::connect(addr).is_err() {
        return (0, String::new());
    }
    let (h, b) = http(
        addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    (status_of(&h), b)
}

/// Publishes `data` with curl-free raw HTTP; returns (status, body).
pub fn publish(addr: SocketAddr, query: &str, data: &str) -> (u16, String) {
    let raw = format!(
        "POST /publish{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{data}",
        data.len()
    );
    let (h, b) = http(addr, &raw);
    (status_of(&h), b)
}

/// A streaming client on a raw socket.
pub struct Stream {
    pub sock: TcpStream,
    pub buf: Vec<u8>,
    pub head: String,
    parser: sse_server::sse::parse::Parser,
    pub events: Vec<sse_server::sse::parse::Event>,
}

impl Stream {
    /// Connects and sends `GET <path>` with extra header lines; reads the response head.
    pub fn open(addr: SocketAddr, path: &str, headers: &[&str]) -> Stream {
        let mut sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes()).expect("write");
        let mut s = Stream {
            sock,
            buf: Vec::new(),
            head: String::new(),
            parser: Default::default(),
            events: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            s.fill();
            if let Some(pos) = s.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                s.head = String::from_utf8_lossy(&s.buf[..pos]).into_owned();
                let rest = s.buf.split_off(pos + 4);
                s.buf.clear();
                s.feed(&rest);
                return s;
            }
        }
        panic!(
            "no response head; got {:?}",
            String::from_utf8_lossy(&s.buf)
        );
    }

    fn feed(&mut self, bytes: &[u8]) {
        let events = &mut self.events;
        self.parser.feed(bytes, |e| events.push(e));
    }

    /// Reads what is available (up to the 100 ms read timeout). Returns false on EOF.
    pub fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.sock.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                if self.head.is_empty() {
                    self.buf.extend_from_slice(&chunk[..n]);
                } else {
                    self.feed(&chunk[..n]);
                }
                true
            }
            Err(_) => true,
        }
    }

    /// Reads whatever is already available without waiting. Returns false on EOF.
    pub fn fill_nonblocking(&mut self) -> bool {
        let _ = self.sock.set_nonblocking(true);
        let mut open = true;
        let mut chunk = [0u8; 65536];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => {
                    let bytes = chunk[..n].to_vec();
                    self.feed(&bytes);
                }
                Err(_) => break,
            }
        }
        let _ = self.sock.set_nonblocking(false);
        open
    }

    /// (type, data) of every event received so far.
    pub fn types_and_datas(&self) -> Vec<(&str, &str)> {
        self.events
            .iter()
            .map(|e| (e.event_type.as_str(), e.data.as_str()))
            .collect()
    }

    /// Reads until `n` events have arrived in total, or `limit` passes.
    pub fn wait_events(&mut self, n: usize, limit: Duration) -> &[sse_server::sse::parse::Event] {
        let deadline = Instant::now() + limit;
        while self.events.len() < n && Instant::now() < deadline {
            if !self.fill() {
                break;
            }
        }
        &self.events
    }

    /// Reads until the server closes the connection (true) or `limit` passes (false).
    pub fn wait_closed(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.fill() {
                return true;
            }
        }
        false
    }

    pub fn comments(&self) -> u64 {
        self.parser.comments()
    }

    /// The reconnection time the stream set with `retry:`.
    pub fn retry(&self) -> Option<u64> {
        self.parser.retry()
    }
}

/// Polls `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Whether the ecosystem tests (browser, client libraries, nginx) must run rather than skip:
/// `SSE_REQUIRE_ECOSYSTEM=1`, set by CI after `.ci/ecosystem.sh` installed what they need.
pub fn ecosystem_required() -> bool {
    std::env::var("SSE_REQUIRE_ECOSYSTEM").is_ok_and(|v| v == "1")
}

/// Skips an ecosystem test for a missing tool: prints why and how to install it, or fails
/// when [`ecosystem_required`]. Use as `return ecosystem_skip(...)`.
pub fn ecosystem_skip(test: &str, missing: &str) {
    let msg = format!("SKIPPED {test}: {missing} (run .ci/ecosystem.sh to install)");
    if ecosystem_required() {
        panic!("{msg}, but SSE_REQUIRE_ECOSYSTEM=1 requires it to run");
    }
    // Straight to the stderr handle: the test harness captures `println!`/`eprintln!` of
    // passing tests, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The project's root directory.
pub fn project_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `program --version` (or the given probe arguments) runs and exits 0.
pub fn runs(program: &str, probe: &[&str]) -> bool {
    Command::new(program)
        .args(probe)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A helper process (node, python, nginx) killed (SIGKILL) by PID when dropped, with its
/// stdout read line by line on a thread.
pub struct Helper {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Helper {
    /// Spawns `cmd` with piped stdin and stdout (stderr inherited).
    pub fn spawn(mut cmd: Command) -> Helper {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper { child, lines }
    }

    /// The next stdout line; `None` at EOF or when `deadline` passes.
    pub fn line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.lines.recv_timeout(left).ok()
    }

    /// Writes one line to its stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to helper");
        stdin.flush().expect("flush helper stdin");
    }

    /// Waits (bounded) for it to exit; kills it if it does not.
    pub fn finish(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Closes with RST instead of FIN (SO_LINGER with a zero timeout).
pub fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

pub mod nginx;
pub mod redis;

/// The bytes the kernel holds unsent on the server's side of each connection to `port`
/// (`ss` Send-Q), keyed by the peer's port.
pub fn server_send_queues(port: u16) -> Vec<(u16, u64)> {
    let out = Command::new("ss")
        .args([
            "-tnH",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // Recv-Q Send-Q Local:Port Peer:Port
            let f: Vec<&str> = l.split_whitespace().collect();
            let send_q = f.get(1)?.parse().ok()?;
            let peer_port = f.get(3)?.rsplit(':').next()?.parse().ok()?;
            Some((peer_port, send_q))
        })
        .collect()
}
