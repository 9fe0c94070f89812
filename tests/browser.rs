//! The demo page in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/browser/demo.mjs`), against the real server, through a TCP proxy the script
//! controls. Checks ticks, the client count, raw-POST and form publishing (plain, named,
//! empty and multi-line events), that data with markup stays text, the browser's own reconnection with
//! Last-Event-ID after a network break, the page's own reopening with `?lastEventId=` after
//! the browser gives up on a 503, and after a server restart (done here: SIGKILL, start
//! anew, tell the script the new address) the reset signal plus exactly-once delivery of
//! everything published since; each time with no published event lost or repeated.
//! Saves `tests/artifacts/browser-demo.png` (and `browser-demo-narrow-dark.png`).
//!
//! Skips (and passes) without /usr/bin/chromium, node or tests/browser/node_modules, unless
//! `SSE_REQUIRE_ECOSYSTEM=1`.

mod util;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use util::{Helper, Server, ecosystem_skip, project_dir, runs, signal};

const CHROMIUM: &str = "/usr/bin/chromium";
const SERVER_ARGS: &[&str] = &["--interval", "500ms", "--retry", "300ms"];

/// Kills the browser by its PID if the script left it running (it is started detached).
struct BrowserGuard(Option<u32>);

impl Drop for BrowserGuard {
    fn drop(&mut self) {
        let Some(pid) = self.0 else { return };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.contains("chrom") {
            eprintln!("killing the browser left running (pid {pid})");
            signal(pid, 9);
        }
    }
}

#[test]
fn demo_page_in_chromium() {
    let dir = project_dir().join("tests/browser");
    if !Path::new(CHROMIUM).exists() {
        return ecosystem_skip(
            "browser test",
            "no /usr/bin/chromium (apt-get install chromium)",
        );
    }
    if !runs("node", &["--version"]) {
        return ecosystem_skip("browser test", "no node");
    }
    if !dir.join("node_modules/playwright-core").is_dir() {
        return ecosystem_skip(
            "browser test",
            "no tests/browser/node_modules (npm ci in tests/browser)",
        );
    }
    let artifacts = project_dir().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).expect("create tests/artifacts");

    let started = Instant::now();
    let mut server = Server::start(SERVER_ARGS);
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("demo.mjs"))
        .arg(server.url(""))
        .env("SSE_CHROMIUM", CHROMIUM)
        .env("SSE_ARTIFACTS_DIR", &artifacts)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
    let mut node = Helper::spawn(cmd);
    let mut browser = BrowserGuard(None);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut passed, mut restarts) = (false, 0);
    while let Some(line) = node.line(deadline) {
        match line.strip_prefix("@@ ") {
            Some("pass") => passed = true,
            Some("restart") => {
                // A crash-like stop, then a new server (new boot id, new port: the proxy
                // in the script follows it).
                let _ = server.child.kill();
                let _ = server.child.wait();
                std::thread::sleep(Duration::from_millis(300));
                server = Server::start(SERVER_ARGS);
                restarts += 1;
                node.say(&format!("server {}", server.url("")));
            }
            Some(other) if other.starts_with("browser-pid ") => {
                browser.0 = other["browser-pid ".len()..].parse().ok();
                println!("browser pid {:?}", browser.0);
            }
            _ => println!("{line}"),
        }
    }
    let status = node.finish(Duration::from_secs(15));
    assert!(
        status.is_some(),
        "the browser script did not finish within its time limit"
    );
    assert!(
        passed && status.is_some_and(|s| s.success()),
        "the browser script failed ({status:?}); see its output above"
    );
    assert_eq!(restarts, 1, "the script asked for one server restart");
    let shot = artifacts.join("browser-demo.png");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot at {}",
        shot.display()
    );
    println!(
        "browser test passed in {:.1} s; screenshot: {}",
        started.elapsed().as_secs_f64(),
        shot.display()
    );
}
