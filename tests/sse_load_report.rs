//! `sse-load --report`: a real run against the real server writes the HTML page, which Debian's
//! Chromium (driven by playwright-core, `tests/browser/load_report.mjs`) opens from disk: four
//! charts with data, the verdict, no request outside the file. Saves
//! `tests/artifacts/sse-load-report.png`.
//!
//! Skips (and passes) without /usr/bin/chromium, node or tests/browser/node_modules, unless
//! `SSE_REQUIRE_ECOSYSTEM=1`.

mod util;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use util::{Helper, Server, ecosystem_skip, project_dir, runs, signal};

const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn report_page_in_chromium() {
    let dir = project_dir().join("tests/browser");
    if !Path::new(CHROMIUM).exists() {
        return ecosystem_skip(
            "sse-load report test",
            "no /usr/bin/chromium (apt-get install chromium)",
        );
    }
    if !runs("node", &["--version"]) {
        return ecosystem_skip("sse-load report test", "no node");
    }
    if !dir.join("node_modules/playwright-core").is_dir() {
        return ecosystem_skip(
            "sse-load report test",
            "no tests/browser/node_modules (npm ci in tests/browser)",
        );
    }
    let artifacts = project_dir().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).expect("create tests/artifacts");
    let report = artifacts.join("sse-load-report.html");
    let shot = artifacts.join("sse-load-report.png");
    let _ = std::fs::remove_file(&shot);

    let server = Server::start(&["--interval", "200ms"]);
    let url = server.url("/events");
    let out = Command::new(env!("CARGO_BIN_EXE_sse-load"))
        .args([
            "--url",
            &url,
            "--clients",
            "200",
            "--workers",
            "2",
            "--rate",
            "100",
            "--events",
            "10",
        ])
        .args(["--duration", "10s", "--json", "--report"])
        .arg(&report)
        .output()
        .expect("run sse-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sse-load failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"all_delivered\":true"), "{stdout}");

    let mut cmd = Command::new("node");
    cmd.arg(dir.join("load_report.mjs"))
        .arg(&report)
        .arg(&shot)
        .env("SSE_CHROMIUM", CHROMIUM);
    let mut node = Helper::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut passed, mut browser) = (false, Vec::new());
    while let Some(line) = node.line(deadline) {
        match line.strip_prefix("@@ ") {
            Some("pass") => passed = true,
            Some(other) if other.starts_with("browser-pid ") => {
                browser.extend(other["browser-pid ".len()..].parse::<u32>().ok());
            }
            _ => println!("{line}"),
        }
    }
    let status = node.finish(Duration::from_secs(15));
    for pid in browser {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.contains("chrom") {
            signal(pid, 9);
        }
    }
    assert!(
        passed && status.is_some_and(|s| s.success()),
        "the report check failed ({status:?}); see its output above"
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot at {}",
        shot.display()
    );
    println!("report screenshot: {}", shot.display());
}
