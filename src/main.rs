//! `sse-server`: the command line around [`sse_server::driver::Driver`], or with `--workers`
//! around [`sse_server::supervisor`].
//!
//! Exit codes: 0 after a clean shutdown, 2 for bad flags (a message on stderr), 1 when the
//! server cannot start (the address is taken, …). A `--data-dir` log that is not ours,
//! corrupt or unreadable is exit 2, like a bad flag.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use sse_server::bus::config::LogStore;
use sse_server::config::{Cli, Config};
use sse_server::driver::Driver;
use sse_server::os::raise_nofile_limit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.worker_index);
    // Before any worker starts, so that workers inherit the raised limit.
    let nofile = raise_nofile_limit();
    let cfg = match Config::from_cli(cli, nofile) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("sse-server: {msg}");
            return ExitCode::from(2);
        }
    };
    // A local log that cannot be used is the operator's to fix, like a bad flag: say which
    // file and why before anything is served (or any worker started).
    if let Some(LogStore::Local(local)) = cfg.cluster.as_ref().map(|bus| &bus.store) {
        sse_server::os::ignore_file_size_signal();
        if let Err(e) = sse_server::bus::local::check(local) {
            eprintln!("sse-server: {e}");
            return ExitCode::from(2);
        }
    }
    if cfg.workers.is_some() {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        return sse_server::supervisor::run(&cfg, &args);
    }
    let (max_clients, interval) = (cfg.max_clients, cfg.interval);
    let driver = match Driver::new(cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sse-server: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = driver.local_addr();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = out.flush();
    drop(out);
    log::info!(
        "sse-server {} on http://{addr}: ticks {}, at most {max_clients} clients (open-file limit {nofile})",
        env!("CARGO_PKG_VERSION"),
        interval.map_or("off".to_string(), |i| format!("every {i:?}")),
    );
    if let Some(metrics) = driver.metrics_addr() {
        log::info!("metrics on http://{metrics} (/metrics and /health only)");
    }
    match driver.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sse-server: {e}");
            ExitCode::from(1)
        }
    }
}

/// `RUST_LOG` (default `info`) to stderr; a worker's lines name it (`worker K`).
fn init_logging(worker: Option<u16>) {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(k) = worker {
        logger.format(move |buf, record| {
            writeln!(
                buf,
                "[{} {:<5} {} worker {k}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                record.args()
            )
        });
    }
    logger.init();
}
