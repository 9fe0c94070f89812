//! What the Debian package ships stays what users read and what the server reads:
//!
//! - every unit file the README shows is, byte for byte, the file under `contrib/` that the
//!   package installs (the README marks each block with `<!-- contrib/... -->`), and every
//!   shipped unit is shown;
//! - the shipped units start the packaged binary, `/usr/bin/sse-server`;
//! - the env template (`contrib/env`, installed as `/etc/sse-server/env`) names exactly the
//!   `SSE_*` variables the server reads, and only in comments, so installing it changes
//!   nothing; uncommented, its examples are values the server starts with.
//!
//! Building, installing and verifying the package itself is `.ci/package.sh` (it needs root
//! and dpkg). Plain std: no extra dependencies.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The shipped unit files, as paths from the repository root.
fn shipped_units() -> BTreeSet<String> {
    let dir = root().join("contrib/systemd");
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    entries
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".service"))
        .map(|name| format!("contrib/systemd/{name}"))
        .collect()
}

/// A fenced block of the README: its info string, the line of the comment just above it
/// (if any), and its body.
struct Block<'a> {
    info: &'a str,
    marker: Option<&'a str>,
    body: String,
    line: usize,
}

fn fenced_blocks(text: &str) -> Vec<Block<'_>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let marker = i
            .checked_sub(1)
            .map(|j| lines[j])
            .and_then(|l| l.strip_prefix("<!-- "))
            .and_then(|l| l.strip_suffix(" -->"));
        let start = i + 1;
        let mut end = start;
        while end < lines.len() && !lines[end].starts_with("```") {
            end += 1;
        }
        let body: String = lines[start..end].iter().map(|l| format!("{l}\n")).collect();
        blocks.push(Block {
            info,
            marker,
            body,
            line: i + 1,
        });
        i = end + 1;
    }
    blocks
}

#[test]
fn the_readme_shows_the_shipped_unit_files_verbatim() {
    let readme = read("README.md");
    let mut shown = BTreeSet::new();
    for block in fenced_blocks(&readme) {
        if let Some(path) = block.marker {
            let file = read(path);
            assert_eq!(
                block.body, file,
                "README.md:{}: the block marked {path} differs from the file; copy the file",
                block.line
            );
            shown.insert(path.to_owned());
        } else {
            assert_ne!(
                block.info, "ini",
                "README.md:{}: a unit block not marked `<!-- contrib/... -->`: show a shipped \
                 file instead",
                block.line
            );
        }
    }
    let units = shipped_units();
    assert_eq!(units.len(), 2, "contrib/systemd holds {units:?}");
    let missing: Vec<&String> = units.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "shipped units the README does not show: {missing:?}"
    );
}

#[test]
fn the_shipped_units_start_the_packaged_binary() {
    for path in shipped_units() {
        let unit = read(&path);
        let exec: Vec<&str> = unit
            .lines()
            .filter_map(|l| l.strip_prefix("ExecStart="))
            .collect();
        assert_eq!(exec.len(), 1, "{path}: one ExecStart= line, got {exec:?}");
        let program = exec[0].split_whitespace().next().unwrap_or_default();
        assert_eq!(
            program, "/usr/bin/sse-server",
            "{path}: ExecStart={}",
            exec[0]
        );
        assert!(
            unit.lines()
                .any(|l| l == "EnvironmentFile=-/etc/sse-server/env"),
            "{path} does not read /etc/sse-server/env"
        );
    }
}

/// Every `SSE_*` name given as `env = "..."` in the `.rs` files under `dir`.
fn env_names_in(dir: &Path, out: &mut BTreeSet<String>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            env_names_in(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("read a source file");
            for piece in text.split("env = \"").skip(1) {
                let name: String = piece.chars().take_while(|&c| c != '"').collect();
                if name.starts_with("SSE_") {
                    out.insert(name);
                }
            }
        }
    }
}

#[test]
fn the_env_template_names_every_variable_and_sets_none() {
    let mut read_by_server = BTreeSet::new();
    env_names_in(&root().join("src"), &mut read_by_server);
    assert!(
        read_by_server.len() > 30 && read_by_server.contains("SSE_LISTEN"),
        "the scan of src/ for `env = \"SSE_...\"` found only {read_by_server:?}"
    );

    let template = read("contrib/env");
    let mut in_template = BTreeSet::new();
    for (n, line) in template.lines().enumerate() {
        let trimmed = line.trim();
        assert!(
            trimmed.is_empty() || trimmed.starts_with('#'),
            "contrib/env:{}: an active line ({line:?}): the template only comments",
            n + 1
        );
        if let Some((name, value)) = trimmed.strip_prefix('#').and_then(|l| l.split_once('='))
            && name.starts_with("SSE_")
        {
            assert!(
                !value.is_empty(),
                "contrib/env:{}: {name} needs an example value",
                n + 1
            );
            assert!(
                in_template.insert(name.to_owned()),
                "contrib/env:{}: {name} twice",
                n + 1
            );
        }
    }
    let missing: Vec<&String> = read_by_server.difference(&in_template).collect();
    let unknown: Vec<&String> = in_template.difference(&read_by_server).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "contrib/env is out of date\nread by the server, not in the template: {missing:?}\n\
         in the template, not read by the server: {unknown:?}"
    );
}

/// The `#SSE_NAME=value` examples of `contrib/env`, in order.
fn env_examples() -> Vec<(String, String)> {
    read("contrib/env")
        .lines()
        .filter_map(|l| l.trim().strip_prefix('#')?.split_once('='))
        .filter(|(name, _)| name.starts_with("SSE_"))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn the_env_template_examples_are_values_the_server_starts_with() {
    let dir = std::env::temp_dir().join(format!("sse-packaging-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("create a temp dir");
    // Examples that need what a test does not have are replaced: free ports, a fresh data
    // directory. Left out: another Redis (SSE_REDIS, with which SSE_DATA_DIR conflicts, and
    // the replica count it waits for), a key file (SSE_JWT_PUBLIC_KEY; SSE_JWT_SECRET is used)
    // and the supervisor (SSE_WORKERS).
    let left_out = [
        "SSE_REDIS",
        "SSE_REDIS_WAIT",
        "SSE_REDIS_WAIT_TIMEOUT",
        "SSE_JWT_PUBLIC_KEY",
        "SSE_WORKERS",
    ];
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sse-server"));
    cmd.env_clear();
    for (name, value) in env_examples() {
        let value = match name.as_str() {
            n if left_out.contains(&n) => continue,
            "SSE_LISTEN" | "SSE_METRICS_LISTEN" => "127.0.0.1:0".to_owned(),
            "SSE_DATA_DIR" => dir.display().to_string(),
            _ => value,
        };
        cmd.env(name, value);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sse-server");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
    let started = line.starts_with("listening on http://127.0.0.1:");
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait for sse-server");
    let _ = fs::remove_dir_all(&dir);
    assert!(
        started,
        "sse-server did not start with contrib/env's examples ({read:?}, first line {line:?}):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
