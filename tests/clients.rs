//! The server against real SSE client libraries, each run against its own server
//! (`--interval 300ms --retry 300ms`):
//! - Node's `eventsource` package (`tests/clients/node_eventsource.mjs`): ticks, a named
//!   event, multi-line data, resume with Last-Event-ID, the library's own reconnection after
//!   a network break (through a TCP proxy it cuts) resuming with no loss or repeat, and the
//!   reset for an unknown id.
//! - Python's httpx with httpx-sse (`tests/clients/python_httpx_sse.py`): ticks, `retry:`,
//!   a named event, multi-line data, resume with the header and with `?lastEventId=`, the
//!   reset for an unknown id, and topics.
//!
//! Each skips (and passes) when its runtime or packages are missing, unless
//! `SSE_REQUIRE_ECOSYSTEM=1`.

mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use util::{Helper, Server, ecosystem_skip, project_dir, runs};

const SERVER_ARGS: &[&str] = &["--interval", "300ms", "--retry", "300ms"];

/// Runs a client script against a fresh server; it must print `@@ pass` and exit 0.
fn run_client(name: &str, mut cmd: Command) {
    let started = Instant::now();
    let server = Server::start(SERVER_ARGS);
    cmd.arg(server.url(""));
    let mut helper = Helper::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut passed = false;
    while let Some(line) = helper.line(deadline) {
        println!("[{name}] {line}");
        passed |= line == "@@ pass";
    }
    let status = helper.finish(Duration::from_secs(10));
    assert!(status.is_some(), "{name} did not finish in time");
    assert!(
        passed && status.is_some_and(|s| s.success()),
        "{name} failed ({status:?}); see its output above"
    );
    println!("{name} passed in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn node_eventsource_package() {
    let dir = project_dir().join("tests/clients");
    if !runs("node", &["--version"]) {
        return ecosystem_skip("node eventsource client test", "no node");
    }
    if !dir.join("node_modules/eventsource").is_dir() {
        return ecosystem_skip(
            "node eventsource client test",
            "no tests/clients/node_modules (npm ci in tests/clients)",
        );
    }
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("node_eventsource.mjs"));
    run_client("node eventsource", cmd);
}

#[test]
fn python_httpx_sse() {
    let python = std::env::var("SSE_PYTHON").unwrap_or_else(|_| "python3".into());
    if !runs(&python, &["-c", "import httpx, httpx_sse"]) {
        return ecosystem_skip(
            "python httpx-sse client test",
            &format!(
                "{python} cannot import httpx and httpx_sse (pip install -r tests/clients/requirements.txt)"
            ),
        );
    }
    let mut cmd = Command::new(&python);
    cmd.arg(project_dir().join("tests/clients/python_httpx_sse.py"));
    run_client("python httpx-sse", cmd);
}
