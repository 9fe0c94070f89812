//! Arbitrary private-topics scenarios (`sse_server::sim::auth`): tokens valid, expired,
//! wrong-key, garbage or absent, in header, cookie or query, publishes, partial writes and
//! time; fails when a client receives an event of a topic its token does not allow, a request
//! gets another status than documented, or an expired stream is not closed with its reset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_server::sim::auth::{AuthOp, run};

/// Longest scenario run (longer inputs are cut: each subscribe signs a token).
const MAX_OPS: usize = 64;

fuzz_target!(|ops: Vec<AuthOp>| {
    if let Err(e) = run(&ops[..ops.len().min(MAX_OPS)]) {
        panic!("{e}");
    }
});
