//! Arbitrary private-topics scenarios (`sse_server::sim::auth`): tokens valid, expired,
//! wrong-key, garbage or absent, in header, cookie or query, publishes, partial writes and
//! time; fails when a client receives an event of a topic its token does not allow, a request
//! gets another status than documented, an expired stream is not closed with its reset, or
//! the cache of verified tokens changes what any client receives (run off and with 2 entries).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_server::sim::auth::{AuthOp, run_with_cache};

/// Longest scenario run (longer inputs are cut: each subscribe signs a token).
const MAX_OPS: usize = 64;

fuzz_target!(|ops: Vec<AuthOp>| {
    let ops = &ops[..ops.len().min(MAX_OPS)];
    let off = run_with_cache(ops, 0).unwrap_or_else(|e| panic!("{e}"));
    let on = run_with_cache(ops, 2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(on, off, "the token cache changed what a client received");
});
