//! A private `redis-server` for a test: a unix socket in a temp dir, no RDB snapshots, the
//! append-only file on or off, stopped (SIGKILL) by its PID when dropped; and a TCP proxy in
//! front of it that a test can cut and heal (a network partition for one node only).

use super::{ecosystem_skip, runs};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether the log survives a restart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Persistence {
    /// `appendonly yes`, `appendfsync always`: everything acknowledged survives a SIGKILL.
    AppendOnly,
    /// No AOF, no snapshots: a restart starts empty.
    None,
}

/// A running `redis-server` owned by the test.
pub struct RedisServer {
    child: Option<Child>,
    pub dir: PathBuf,
    persistence: Persistence,
    /// Also listening on 127.0.0.1 at this port (replication and Sentinel need TCP).
    port: Option<u16>,
    /// A replica of the server on 127.0.0.1 at this port.
    replica_of: Option<u16>,
}

impl RedisServer {
    /// Starts one, or prints a skip and returns `None` when `redis-server` is not installed
    /// (a failure instead under `SSE_REQUIRE_ECOSYSTEM=1`).
    pub fn start(test: &str, persistence: Persistence) -> Option<RedisServer> {
        Self::start_with(test, persistence, None, None)
    }

    /// A server on a unix socket and a free TCP port of 127.0.0.1, without persistence; a
    /// replica of the one on port `replica_of` when given.
    pub fn start_tcp(test: &str, replica_of: Option<u16>) -> Option<RedisServer> {
        Self::start_with(test, Persistence::None, Some(free_port()), replica_of)
    }

    fn start_with(
        test: &str,
        persistence: Persistence,
        port: Option<u16>,
        replica_of: Option<u16>,
    ) -> Option<RedisServer> {
        let dir = private_dir(test, "redis")?;
        let mut server = RedisServer {
            child: None,
            dir,
            persistence,
            port,
            replica_of,
        };
        server.launch();
        Some(server)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// `redis+unix:///…/redis.sock`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// The same socket in the `unix:///path` form.
    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The TCP port, for servers started with [`RedisServer::start_tcp`].
    pub fn port(&self) -> u16 {
        self.port.expect("started with start_tcp")
    }

    /// SIGSTOP: the process is frozen (a replica stops acknowledging, a master stops
    /// answering) until [`RedisServer::resume`].
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            super::signal(pid, 19);
        }
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            super::signal(pid, 18);
        }
    }

    fn launch(&mut self) {
        let appendonly = match self.persistence {
            Persistence::AppendOnly => "yes",
            Persistence::None => "no",
        };
        let port = self.port.unwrap_or(0).to_string();
        let mut command = Command::new("redis-server");
        command.args(["--port", &port, "--bind", "127.0.0.1"]);
        if let Some(master) = self.replica_of {
            command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        let child = command
            .arg("--unixsocket")
            .arg(self.socket())
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                appendonly,
            ])
            .args(["--appendfsync", "always", "--daemonize", "no", "--dir"])
            .arg(&self.dir)
            .args(["--logfile"])
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not answer PING within 10 s; log:\n{}",
            std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
        );
    }

    fn ping(&self) -> bool {
        let Ok(client) = ::redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return false;
        };
        ::redis::cmd("PING")
            .query::<String>(&mut con)
            .is_ok_and(|p| p == "PONG")
    }

    /// SIGKILL by PID, and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same socket and directory (the AOF, if any, is reloaded).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// A command on a fresh connection (the test's own, not the bus's).
    pub fn cmd(&self, args: &[&str]) -> ::redis::Value {
        let client = ::redis::Client::open(self.url()).expect("redis url");
        let mut con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to test redis");
        let mut cmd = ::redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut con)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port of 127.0.0.1 nothing listened on a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `redis-server --sentinel` watching the master on 127.0.0.1 at `master_port` under the
/// name `m` (quorum 2, down after 1 s, failover timeout 3 s), with its config in a temp dir;
/// SIGKILLed by PID when dropped.
pub struct Sentinel {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
}

impl Sentinel {
    pub fn start(test: &str, master_port: u16) -> Option<Sentinel> {
        let dir = private_dir(test, "sentinel")?;
        let port = free_port();
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor m 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds m 1000\n\
                 sentinel failover-timeout m 3000\n",
                dir = dir.display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server --sentinel");
        let sentinel = Sentinel {
            child: Some(child),
            dir,
            port,
        };
        let answers = || {
            let Ok(client) = ::redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
                return false;
            };
            client
                .get_connection_with_timeout(Duration::from_secs(1))
                .and_then(|mut con| ::redis::cmd("PING").query::<String>(&mut con))
                .is_ok()
        };
        assert!(
            super::eventually(Duration::from_secs(10), answers),
            "redis sentinel did not answer; log:\n{}",
            std::fs::read_to_string(sentinel.dir.join("sentinel.log")).unwrap_or_default()
        );
        Some(sentinel)
    }

    /// The master this Sentinel names now: its port.
    pub fn master_port(&self) -> Option<u16> {
        let client = ::redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).ok()?;
        let mut con = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        let (_, port): (String, u16) = ::redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("m")
            .query(&mut con)
            .ok()?;
        Some(port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP listener on 127.0.0.1 forwarding each connection to the server's unix socket.
/// [`Proxy::cut`] closes every forwarded connection and refuses new ones (accepted and
/// closed at once) until [`Proxy::heal`]. [`Proxy::isolate_tail`] cuts only a node's tail:
/// replies on the connections that sent `XREAD`, and on every connection opened from then
/// on, are held back until [`Proxy::heal`], while an established command connection goes
/// on working. [`Proxy::hold_ranges`] holds back the replies of a connection from its next
/// `XRANGE` on (a node's range reads) until [`Proxy::heal`]. [`Proxy::redirect`] sends new
/// connections to another server, and [`Proxy::drop_tails`] closes the tail connections
/// (which then reconnect through the proxy): together, a node's tail moved to another copy
/// of the log while its command connection stays where it was. [`Proxy::drop_commands`]
/// closes the others (which then reconnect through the proxy): with [`Proxy::redirect`], a
/// node's command connection moved while its tail stays.
pub struct Proxy {
    pub port: u16,
    target: Arc<Mutex<PathBuf>>,
    cut: Arc<AtomicBool>,
    hold_new: Arc<AtomicBool>,
    hold_ranges: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<Forwarded>>>,
    /// The hold flags [`Proxy::hold_commands`] set.
    commands_held: Mutex<Vec<Arc<AtomicBool>>>,
}

/// One forwarded connection: the client side, whether it has sent `XREAD` (a tail), and
/// whether its replies are held back.
struct Forwarded {
    client: TcpStream,
    tail: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: PathBuf) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let hold_new = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let hold_ranges = Arc::new(AtomicBool::new(false));
        let target = Arc::new(Mutex::new(target));
        let (c, h, s, o) = (cut.clone(), hold_new.clone(), stop.clone(), open.clone());
        let r = hold_ranges.clone();
        let t = target.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if c.load(Ordering::Relaxed) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let to = t.lock().unwrap().clone();
                let Ok(upstream) = UnixStream::connect(&to) else {
                    continue;
                };
                let tail = Arc::new(AtomicBool::new(false));
                let held = Arc::new(AtomicBool::new(h.load(Ordering::Relaxed)));
                if let Ok(copy) = client.try_clone() {
                    o.lock().unwrap().push(Forwarded {
                        client: copy,
                        tail: tail.clone(),
                        held: held.clone(),
                    });
                }
                forward(&client, &upstream, tail, held, r.clone());
            }
        });
        Proxy {
            port,
            target,
            cut,
            hold_new,
            hold_ranges,
            stop,
            open,
            commands_held: Mutex::new(Vec::new()),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        for conn in self.open.lock().unwrap().drain(..) {
            let _ = conn.client.shutdown(Shutdown::Both);
        }
    }

    /// Holds back the replies of the tail connections and of every connection opened from
    /// now until [`Proxy::heal`].
    pub fn isolate_tail(&self) {
        self.hold_new.store(true, Ordering::Relaxed);
        for conn in self.open.lock().unwrap().iter() {
            if conn.tail.load(Ordering::Relaxed) {
                conn.held.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Holds back, until [`Proxy::heal`], the replies of every connection from the moment
    /// it sends an `XRANGE`.
    pub fn hold_ranges(&self) {
        self.hold_ranges.store(true, Ordering::Relaxed);
    }

    /// Forwards the connections opened from now on to the server at `target`.
    pub fn redirect(&self, target: PathBuf) {
        *self.target.lock().unwrap() = target;
    }

    /// Closes every forwarded connection that has sent `XREAD` (a node's tail).
    pub fn drop_tails(&self) {
        let mut open = self.open.lock().unwrap();
        open.retain(|conn| {
            let tail = conn.tail.load(Ordering::Relaxed);
            if tail {
                let _ = conn.client.shutdown(Shutdown::Both);
            }
            !tail
        });
    }

    /// Holds back the replies of every open connection that has not sent `XREAD` (a node's
    /// command connection) until [`Proxy::release_commands`] or [`Proxy::heal`].
    pub fn hold_commands(&self) {
        let mut held = self.commands_held.lock().unwrap();
        for conn in self.open.lock().unwrap().iter() {
            if !conn.tail.load(Ordering::Relaxed) {
                conn.held.store(true, Ordering::Relaxed);
                held.push(conn.held.clone());
            }
        }
    }

    /// Lets the replies [`Proxy::hold_commands`] held through (and only those).
    pub fn release_commands(&self) {
        for held in self.commands_held.lock().unwrap().drain(..) {
            held.store(false, Ordering::Relaxed);
        }
    }

    /// Closes every forwarded connection that has not sent `XREAD` (a node's command
    /// connection).
    pub fn drop_commands(&self) {
        let mut open = self.open.lock().unwrap();
        open.retain(|conn| {
            let tail = conn.tail.load(Ordering::Relaxed);
            if !tail {
                let _ = conn.client.shutdown(Shutdown::Both);
            }
            tail
        });
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::Relaxed);
        self.hold_new.store(false, Ordering::Relaxed);
        self.hold_ranges.store(false, Ordering::Relaxed);
        for conn in self.open.lock().unwrap().iter() {
            conn.held.store(false, Ordering::Relaxed);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.heal();
        self.cut();
    }
}

/// Copies both ways on two threads until either side closes; then closes both. Marks
/// `tail` when the client sends `XREAD`, and sets `held` when it sends `XRANGE` while
/// `hold_ranges` is set; while `held` is set, replies wait.
fn forward(
    client: &TcpStream,
    upstream: &UnixStream,
    tail: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
    hold_ranges: Arc<AtomicBool>,
) {
    let (client, upstream) = (
        client.try_clone().expect("clone"),
        upstream.try_clone().expect("clone"),
    );
    let (c, u) = (
        client.try_clone().expect("clone"),
        upstream.try_clone().expect("clone"),
    );
    let closer = Arc::new(move || {
        let _ = c.shutdown(Shutdown::Both);
        let _ = u.shutdown(Shutdown::Both);
    });
    let requests: (Box<dyn Read + Send>, Box<dyn Write + Send>) = (
        Box::new(client.try_clone().expect("clone")),
        Box::new(upstream.try_clone().expect("clone")),
    );
    let replies: (Box<dyn Read + Send>, Box<dyn Write + Send>) =
        (Box::new(upstream), Box::new(client));
    let close = closer.clone();
    let hold = held.clone();
    std::thread::spawn(move || {
        let (mut from, mut to) = requests;
        copy_watching(&mut from, &mut to, |chunk| {
            if chunk.windows(6).any(|w| w.eq_ignore_ascii_case(b"XRANGE"))
                && hold_ranges.load(Ordering::Relaxed)
            {
                hold.store(true, Ordering::Relaxed);
            } else if chunk.windows(5).any(|w| w.eq_ignore_ascii_case(b"XREAD")) {
                tail.store(true, Ordering::Relaxed);
            }
            true
        });
        close();
    });
    std::thread::spawn(move || {
        let (mut from, mut to) = replies;
        copy_watching(&mut from, &mut to, |_| {
            while held.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            true
        });
        closer();
    });
}

/// Copies `from` to `to` chunk by chunk, showing each chunk to `before` first.
fn copy_watching(from: &mut dyn Read, to: &mut dyn Write, mut before: impl FnMut(&[u8]) -> bool) {
    let mut buf = [0u8; 16384];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !before(&buf[..n]) || to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// A fresh temp directory `sse-KIND-…` for one `redis-server` process, or `None` (the skip
/// printed) when `redis-server` is not installed.
fn private_dir(test: &str, kind: &str) -> Option<PathBuf> {
    if !runs("redis-server", &["--version"]) {
        ecosystem_skip(
            test,
            "redis-server is not installed (Debian package redis-server)",
        );
        return None;
    }
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sse-{kind}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir for redis-server");
    Some(dir)
}
