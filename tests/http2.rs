//! HTTP/2 with TLS in front: `contrib/nginx/sse-server-http2.conf` (the block README.md's
//! `## Behind nginx` section shows, checked equal here) run by Debian's nginx with a
//! self-signed certificate made by `openssl`, in front of the real server.
//!
//! - Chromium (`tests/browser/http2.mjs`) opens ten `EventSource` streams on one page through
//!   it, more than HTTP/1.1's six per origin: all open, over one HTTP/2 connection, and an
//!   event published through nginx reaches all ten. The control, straight to the server over
//!   HTTP/1.1, opens six of seven.
//! - curl streams `/events` over HTTP/2 through it and publishes over HTTP/2 (with a
//!   `Content-Length`, and from standard input without one), the bearer token passing
//!   through. With `proxy_read_timeout` shortened to 3 s, a stream idle for longer stays open
//!   on the server's keep-alive comments, while the control (a server with `--keepalive off`
//!   behind the same block) is cut: the timeout the configuration explains is real.
//!
//! Skips (and passes) without nginx, openssl, curl, /usr/bin/chromium, node or
//! tests/browser/node_modules, unless `SSE_REQUIRE_ECOSYSTEM=1`.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::nginx::{Nginx, NginxDir, free_port, nginx_binary, readme_section};
use util::{Helper, Server, ecosystem_skip, eventually, project_dir, runs, signal};

const CHROMIUM: &str = "/usr/bin/chromium";
const CONFIG: &str = "contrib/nginx/sse-server-http2.conf";
const TOKEN: &str = "http2-test-publisher";
/// What the test sets `proxy_read_timeout` to, so that idling past it takes seconds.
const READ_TIMEOUT: Duration = Duration::from_secs(4);
/// The server: no ticks, a keep-alive comment every 2 s (well within [`READ_TIMEOUT`]), and
/// `retry:` at connect, as the README recommends behind nginx.
const SERVER_ARGS: &[&str] = &[
    "--interval",
    "off",
    "--keepalive",
    "2s",
    "--retry",
    "3s",
    "--publish-token",
    TOKEN,
];
/// Most time for a stream's head through nginx: less than the first keep-alive (1.75 s at
/// the earliest), so only the `retry:` line can have carried it.
const HEAD_LIMIT: Duration = Duration::from_secs(1);

fn config_text() -> String {
    std::fs::read_to_string(project_dir().join(CONFIG)).expect("read the nginx configuration")
}

#[test]
fn the_readme_shows_the_http2_configuration() {
    let section = readme_section("Behind nginx");
    let block = format!("```nginx\n{}```\n", config_text());
    assert!(
        section.contains(&block),
        "README.md's `## Behind nginx` must show {CONFIG} exactly, as a ```nginx block:\n{block}"
    );
}

/// `text` with `from` (which must occur exactly once) replaced by `to`.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{CONFIG} has `{from}` exactly once"
    );
    text.replace(from, to)
}

/// The configuration with the test's port, certificate, upstream and read timeout.
fn site(port: u16, cert: &Path, key: &Path, upstream: &Server) -> String {
    let text = config_text();
    let text = substitute(
        &text,
        "listen 443 ssl http2;",
        &format!("listen 127.0.0.1:{port} ssl http2;"),
    );
    let text = substitute(
        &text,
        "/etc/ssl/certs/events.example.com.pem",
        &cert.display().to_string(),
    );
    let text = substitute(
        &text,
        "/etc/ssl/private/events.example.com.key",
        &key.display().to_string(),
    );
    let text = substitute(&text, "127.0.0.1:3000", &upstream.addr.to_string());
    substitute(
        &text,
        "proxy_read_timeout 1h;",
        &format!("proxy_read_timeout {}s;", READ_TIMEOUT.as_secs()),
    )
}

/// What a test needs besides nginx, or the skip message.
fn missing_tools(browser: bool) -> Option<&'static str> {
    if nginx_binary().is_none() {
        return Some("no nginx (apt-get install nginx)");
    }
    if !runs("openssl", &["version"]) {
        return Some("no openssl (apt-get install openssl)");
    }
    if !runs("curl", &["--version"]) {
        return Some("no curl (apt-get install curl)");
    }
    if browser {
        if !Path::new(CHROMIUM).exists() {
            return Some("no /usr/bin/chromium (apt-get install chromium)");
        }
        if !runs("node", &["--version"]) {
            return Some("no node");
        }
        if !project_dir()
            .join("tests/browser/node_modules/playwright-core")
            .is_dir()
        {
            return Some("no tests/browser/node_modules (npm ci in tests/browser)");
        }
    }
    None
}

/// nginx with TLS and HTTP/2 on a free port in front of `server`, and optionally the same
/// block on a second port in front of `control`.
struct Front {
    nginx: Nginx,
    port: u16,
    control_port: Option<u16>,
    _dir: NginxDir,
}

impl Front {
    fn start(server: &Server, control: Option<&Server>) -> Front {
        let bin = nginx_binary().expect("nginx");
        let dir = NginxDir::new();
        let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
        make_certificate(&cert, &key);
        let port = free_port();
        let control_port = control.map(|_| free_port());
        let mut sites = site(port, &cert, &key, server);
        if let (Some(c), Some(p)) = (control, control_port) {
            sites.push_str(
                "# --- control: the same block in front of a server without keep-alives ---\n",
            );
            sites.push_str(&site(p, &cert, &key, c));
        }
        let config = format!(
            "master_process off;\n\
             events {{ worker_connections 128; }}\n\
             http {{\n\
             access_log off;\n\
             {}\
             # --- {CONFIG} ---\n\
             {sites}\
             }}\n",
            NginxDir::temp_paths()
        );
        let conf = dir.0.join("nginx.conf");
        std::fs::write(&conf, &config).expect("write nginx.conf");
        let nginx = Nginx::start(&bin, &dir.0, &conf);
        let ready = eventually(Duration::from_secs(10), || {
            [Some(port), control_port]
                .into_iter()
                .flatten()
                .all(|p| TcpStream::connect(("127.0.0.1", p)).is_ok())
        });
        assert!(ready, "nginx did not start listening; config:\n{config}");
        Front {
            nginx,
            port,
            control_port,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn control_url(&self, path: &str) -> String {
        let port = self.control_port.expect("a control block");
        format!("https://127.0.0.1:{port}{path}")
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost (EC P-256, valid two days).
fn make_certificate(cert: &Path, key: &Path) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// POSTs `body` to `url` over HTTP/2 with curl (`-k`: the certificate is self-signed);
/// `stdin` sends it from standard input without a `Content-Length`. Returns (status,
/// HTTP version, response body).
fn curl_publish(url: &str, token: Option<&str>, body: &str, stdin: bool) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "--http2", "--max-time", "5", "-X", "POST"])
        .args(["-w", "\n%{http_code} %{http_version}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if stdin {
        cmd.args(["-T", "-"]);
    } else {
        cmd.args(["--data-binary", body]);
    }
    let mut child = cmd
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut input = child.stdin.take().expect("curl's stdin");
    if stdin {
        input.write_all(body.as_bytes()).expect("write to curl");
    }
    drop(input);
    let out = child.wait_with_output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut last = last.split(' ');
    let status = last.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = last.next().unwrap_or("").to_owned();
    assert!(
        status != 0,
        "curl failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (status, version, answer.trim().to_owned())
}

/// `curl -N -i --http2` on a stream: its output lines, as they come (the head first).
fn curl_stream(url: &str) -> Helper {
    let mut cmd = Command::new("curl");
    // No -S: the control stream's end (curl error 92, a reset stream) is expected.
    cmd.args(["-s", "-k", "-N", "-i", "--http2", "--max-time", "30"])
        .args(["-H", "Accept: text/event-stream", url]);
    Helper::spawn(cmd)
}

/// Reads `stream`'s lines until one satisfies `pred` or `limit` passes; returns the lines read.
fn read_until(stream: &mut Helper, limit: Duration, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    while let Some(line) = stream.line(deadline) {
        let line = line.trim_end().to_owned();
        let done = pred(&line);
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

#[test]
fn curl_streams_and_publishes_over_http2() {
    if let Some(missing) = missing_tools(false) {
        return ecosystem_skip("HTTP/2 test (curl)", missing);
    }
    let server = Server::start(SERVER_ARGS);
    let quiet = Server::start(&[
        "--interval",
        "off",
        "--keepalive",
        "off",
        "--publish-token",
        TOKEN,
    ]);
    let mut front = Front::start(&server, Some(&quiet));

    // The response head, at once: HTTP/2, an event stream, then the `retry:` line that
    // carried it through nginx.
    let opened = Instant::now();
    let mut stream = curl_stream(&front.url("/events"));
    let mut control = curl_stream(&front.control_url("/events"));
    let mut head = read_until(&mut stream, Duration::from_secs(5), str::is_empty);
    let head_after = opened.elapsed();
    assert_eq!(
        head.first().map(String::as_str),
        Some("HTTP/2 200"),
        "{head:?}"
    );
    assert!(
        head.iter()
            .any(|l| l.eq_ignore_ascii_case("content-type: text/event-stream")),
        "{head:?}"
    );
    head.extend(read_until(&mut stream, Duration::from_secs(1), |l| {
        l.starts_with("retry:")
    }));
    assert!(
        head.iter().any(|l| l == "retry: 3000"),
        "the retry line: {head:?}"
    );
    assert!(
        head_after < HEAD_LIMIT,
        "the head took {head_after:?} (at most {HEAD_LIMIT:?}, before the first keep-alive)"
    );

    // Idle past proxy_read_timeout: the keep-alive comments hold the stream open, while the
    // control, which sends nothing after its head, is cut.
    let (mut idle, mut cut_after) = (Vec::new(), None);
    let until = opened + READ_TIMEOUT + Duration::from_millis(1500);
    while Instant::now() < until {
        idle.extend(read_until(&mut stream, Duration::from_millis(100), |_| {
            false
        }));
        if cut_after.is_none() && matches!(control.child.try_wait(), Ok(Some(_))) {
            cut_after = Some(opened.elapsed());
        }
    }
    assert!(
        idle.iter().filter(|l| *l == ": keep-alive").count() >= 2,
        "keep-alive comments through nginx: {idle:?}"
    );
    assert!(
        matches!(stream.child.try_wait(), Ok(None)),
        "the stream ended while idle"
    );
    let cut = eventually(Duration::from_secs(5), || {
        matches!(control.child.try_wait(), Ok(Some(_)))
    });
    assert!(
        cut,
        "a stream without keep-alives outlived proxy_read_timeout ({READ_TIMEOUT:?}): the check proves nothing"
    );
    let lived = cut_after.unwrap_or_else(|| opened.elapsed());
    assert!(
        lived + Duration::from_millis(200) >= READ_TIMEOUT,
        "the control ended after {lived:?}, before proxy_read_timeout ({READ_TIMEOUT:?})"
    );
    // nginx passes a head on with the first body bytes: the control's head never came.
    let held = read_until(&mut control, Duration::from_millis(200), |_| false);
    assert!(
        !held.iter().any(|l| l.starts_with("HTTP/")),
        "nginx passed on a head without body bytes: {held:?}"
    );

    // Publishing over HTTP/2: the token passes through; the stream sees the event.
    let (status, version, _) = curl_publish(&front.url("/publish"), None, "no token", false);
    assert_eq!(
        (status, version.as_str()),
        (401, "2"),
        "publish without the token"
    );
    let (status, version, id) = curl_publish(
        &front.url("/publish"),
        Some(TOKEN),
        "published over h2",
        false,
    );
    assert_eq!((status, version.as_str()), (200, "2"), "publish: {id}");
    let got = read_until(&mut stream, Duration::from_secs(3), |l| {
        l == "data: published over h2"
    });
    assert!(
        got.contains(&format!("id: {id}")) && got.contains(&"data: published over h2".to_owned()),
        "the event {id} on the stream: {got:?}"
    );
    // A body from standard input has no Content-Length over HTTP/2; nginx reads it whole and
    // sends one.
    let (status, _, id) = curl_publish(&front.url("/publish"), Some(TOKEN), "from stdin", true);
    assert_eq!(status, 200, "publish from stdin: {id}");
    let got = read_until(&mut stream, Duration::from_secs(3), |l| {
        l == "data: from stdin"
    });
    assert!(
        got.contains(&format!("id: {id}")),
        "the stdin event {id} on the stream: {got:?}"
    );

    drop(stream);
    drop(control);
    front.nginx.stop();
    println!(
        "over HTTP/2: head after {head_after:?}; an idle stream outlived proxy_read_timeout \
         {READ_TIMEOUT:?}; one without keep-alives was cut after {lived:?}"
    );
}

/// Kills the browser by its PID if the script left it running (it is started detached).
struct BrowserGuard(Vec<u32>);

impl Drop for BrowserGuard {
    fn drop(&mut self) {
        for pid in &self.0 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.contains("chrom") {
                eprintln!("killing the browser left running (pid {pid})");
                signal(*pid, 9);
            }
        }
    }
}

#[test]
fn ten_streams_on_one_page_in_chromium_over_http2() {
    if let Some(missing) = missing_tools(true) {
        return ecosystem_skip("HTTP/2 test (Chromium)", missing);
    }
    let server = Server::start(SERVER_ARGS);
    let mut front = Front::start(&server, None);
    let script: PathBuf = project_dir().join("tests/browser/http2.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .arg(front.url(""))
        .arg(server.url(""))
        .env("SSE_CHROMIUM", CHROMIUM)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
    let mut node = Helper::spawn(cmd);
    let mut browser = BrowserGuard(Vec::new());
    let deadline = Instant::now() + Duration::from_secs(75);
    let (mut passed, mut published) = (false, false);
    while let Some(line) = node.line(deadline) {
        match line.strip_prefix("@@ ") {
            Some("pass") => passed = true,
            Some("open 10") => {
                // Every stream reached the server, each on its own upstream connection.
                assert_eq!(server.metric("sse_clients"), 10.0, "streams at the server");
                let (status, version, id) = curl_publish(
                    &front.url("/publish"),
                    Some(TOKEN),
                    "to every stream over h2",
                    false,
                );
                assert_eq!((status, version.as_str()), (200, "2"), "publish: {id}");
                node.say(&format!("published {id}"));
                published = true;
            }
            Some(other) if other.starts_with("browser-pid ") => {
                browser
                    .0
                    .extend(other["browser-pid ".len()..].parse::<u32>().ok());
            }
            _ => println!("{line}"),
        }
    }
    let status = node.finish(Duration::from_secs(15));
    front.nginx.stop();
    assert!(published, "the page never had ten streams open");
    assert!(
        passed && status.is_some_and(|s| s.success()),
        "the HTTP/2 browser script failed ({status:?}); see its output above"
    );
}
