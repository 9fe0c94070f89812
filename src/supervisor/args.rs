//! A worker's command line: the user's arguments without the flags the supervisor sets
//! itself, then those flags with the values it resolved (pure, unit-tested).

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags with a value that the supervisor sets for each worker (`--flag V` or `--flag=V`).
const SET_WITH_VALUE: &[&str] = &[
    "--workers",
    "--worker-index",
    "--listen",
    "--metrics-listen",
];
/// Flags without a value that the supervisor sets for each worker.
const SET_FLAGS: &[&str] = &["--reuse-port", "--stdin"];
/// `SSE_*` variables of the flags above: removed from a worker's environment, so the
/// supervisor's own command line decides (a worker must never see `SSE_WORKERS`, and only
/// worker 0 may read stdin).
pub(super) const CLEARED_ENV: &[&str] = &[
    "SSE_WORKERS",
    "SSE_LISTEN",
    "SSE_METRICS_LISTEN",
    "SSE_REUSE_PORT",
    "SSE_STDIN",
];

/// What every worker is started with.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// The user's arguments (without the program name), the supervisor's flags removed.
    pub args: Vec<OsString>,
    /// The shared address, port resolved.
    pub listen: SocketAddr,
    /// The metrics listeners' base address (worker K adds K to the port), port resolved.
    pub metrics: Option<SocketAddr>,
    /// `--stdin`: worker 0 reads standard input.
    pub stdin: bool,
    /// A directory the supervisor made for the shared local log, if it made one: passed as
    /// `--data-dir` with `--durability os` (the directory does not outlive the supervisor,
    /// so syncing it to disk would buy nothing; a crashed worker still loses nothing).
    pub data_dir: Option<PathBuf>,
}

/// The user's arguments without the flags (and their values) that the supervisor sets.
/// The arguments have been parsed by clap already, so every token starting with `--` is a
/// flag (no flag takes a value that starts with a hyphen).
pub(super) fn strip(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_str().unwrap_or("");
        if SET_WITH_VALUE.contains(&text) {
            skip_value = true;
            continue;
        }
        let set_inline = SET_WITH_VALUE.iter().any(|f| {
            text.strip_prefix(f)
                .is_some_and(|rest| rest.starts_with('='))
        });
        if set_inline || SET_FLAGS.contains(&text) {
            continue;
        }
        out.push(arg.clone());
    }
    out
}

impl Plan {
    /// Worker `index`'s arguments.
    pub(super) fn args_for(&self, index: u16) -> Vec<OsString> {
        let mut out = self.args.clone();
        let mut push = |flag: &str, value: Option<&OsStr>| {
            out.push(flag.into());
            if let Some(v) = value {
                out.push(v.to_owned());
            }
        };
        push("--listen", Some(OsStr::new(&self.listen.to_string())));
        push("--reuse-port", None);
        push("--worker-index", Some(OsStr::new(&index.to_string())));
        if let Some(m) = self.metrics {
            push("--metrics-listen", Some(OsStr::new(&m.to_string())));
        }
        if self.stdin && index == 0 {
            push("--stdin", None);
        }
        if let Some(dir) = &self.data_dir {
            push("--data-dir", Some(dir.as_os_str()));
            push("--durability", Some(OsStr::new("os")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_supervisors_flags_are_removed_with_their_values() {
        let user = os(&[
            "--workers",
            "4",
            "--listen=0.0.0.0:3000",
            "--history",
            "10",
            "--stdin",
            "--reuse-port",
            "--metrics-listen",
            "127.0.0.1:9100",
            "--public-topics",
            "--redis",
            "redis://h",
            "--workers=auto",
            "--listen-backlog-is-not-a-flag=1",
        ]);
        assert_eq!(
            strip(&user),
            os(&[
                "--history",
                "10",
                "--public-topics",
                "--redis",
                "redis://h",
                "--listen-backlog-is-not-a-flag=1",
            ])
        );
    }

    #[test]
    fn each_worker_gets_the_shared_address_its_index_and_stdin_for_worker_0_only() {
        let plan = Plan {
            args: os(&["--redis", "redis://h"]),
            listen: "127.0.0.1:3000".parse().unwrap(),
            metrics: Some("127.0.0.1:9100".parse().unwrap()),
            stdin: true,
            data_dir: None,
        };
        let common = [
            "--redis",
            "redis://h",
            "--listen",
            "127.0.0.1:3000",
            "--reuse-port",
            "--worker-index",
        ];
        let mut zero = os(&common);
        zero.extend(os(&["0", "--metrics-listen", "127.0.0.1:9100", "--stdin"]));
        assert_eq!(plan.args_for(0), zero);
        let mut one = os(&common);
        one.extend(os(&["1", "--metrics-listen", "127.0.0.1:9100"]));
        assert_eq!(plan.args_for(1), one);
        let plan = Plan {
            metrics: None,
            stdin: false,
            data_dir: Some("/tmp/d".into()),
            ..plan
        };
        let mut two = os(&common);
        two.extend(os(&["2", "--data-dir", "/tmp/d", "--durability", "os"]));
        assert_eq!(plan.args_for(2), two);
    }
}
