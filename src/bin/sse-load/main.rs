//! `sse-load`: a load generator for any Server-Sent Events server.
//!
//! The process you start is the coordinator ([`coordinator`]): it checks the limits and the
//! server, starts worker processes (this binary again, each one mio reactor with its share of
//! the clients: [`worker`], [`clients`]), keeps them on one measured window, shows progress,
//! and merges their results exactly ([`report`]), optionally into an HTML page ([`html`]).
//!
//! Each client's stream is decoded with the WHATWG parser
//! ([`sse_server::sse::parse::Parser`]), de-chunked when needed with the server crate's
//! decoder; the run measures the time to connect everyone, per (client, event) fan-out latency
//! (receive time minus the time inside the event: a `the time is …` tick in Go's layout or a
//! `ts=<unix ns>` payload), and completeness: each client got each published event of its
//! group (server and topic) once, in order, across reconnects too, and its own server's ticks
//! (checked per connection: [`ticks`]).
//!
//! Exit codes: 0 every event reached every client; 3 the run finished but delivery was
//! incomplete; 2 bad flags, or more clients than the machine's limits allow; 1 the server could
//! not be reached, refused the stream, or a worker failed; 130 interrupted (partial result).

mod args;
mod clients;
mod coordinator;
mod cpu;
mod frames;
mod html;
mod http;
mod limits;
mod net;
mod publisher;
mod report;
mod stats;
mod tally;
mod ticks;
mod timeline;
mod wire;
mod worker;

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser as _;

use args::{Args, Plan, WorkerSpec};

fn main() -> ExitCode {
    let args = Args::parse();
    let worker = args.worker.clone();
    let plan = match Plan::new(args) {
        Ok(p) => p,
        Err(msg) => return fail(Failure::Usage(msg)),
    };
    let outcome = match worker {
        Some(spec) => match WorkerSpec::parse(&spec) {
            Ok(spec) => worker::run(plan, spec)
                .map(|()| ExitCode::SUCCESS)
                .map_err(Failure::Runtime),
            Err(msg) => Err(Failure::Usage(msg)),
        },
        None => coordinator::run(plan),
    };
    outcome.unwrap_or_else(fail)
}

fn fail(f: Failure) -> ExitCode {
    match f {
        Failure::Usage(msg) => {
            eprintln!("sse-load: {msg}");
            ExitCode::from(2)
        }
        Failure::Runtime(msg) => {
            eprintln!("sse-load: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Why the run could not be done.
pub enum Failure {
    /// A flag is wrong, or the machine cannot hold the run (exit 2).
    Usage(String),
    /// The server is unreachable or refuses, or the run itself failed (exit 1).
    Runtime(String),
}

/// Now, in unix nanoseconds.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
