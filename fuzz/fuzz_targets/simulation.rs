//! Arbitrary scenarios (`SimConfig` and a list of `Op`s) through the simulator with every
//! invariant on; then heal, settle (liveness) and shut down with no socket left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_server::sim::{Op, Sim, SimConfig};

/// Longest scenario run (longer inputs are cut: time per input stays small).
const MAX_OPS: usize = 256;
/// Wake-ups allowed for healing and settling: a fuzzed config may set a head timeout of up to
/// 255 s (`head_timeout_secs: u8`) while ticks wake the simulator every second or two, so a
/// silent connection may need a few hundred wake-ups before its timeout closes it (64 was too
/// few: a false "no liveness", kept in `tests/fuzz_found.rs`).
const SETTLE_STEPS: usize = 512;

fuzz_target!(|input: (SimConfig, Vec<Op>)| {
    let (config, mut ops) = input;
    ops.truncate(MAX_OPS);
    let mut sim = Sim::new(&config, 7);
    let result = sim
        .run(&ops)
        .and_then(|()| sim.heal_and_settle(SETTLE_STEPS))
        .and_then(|()| sim.finish(SETTLE_STEPS));
    if let Err(e) = result {
        panic!("{e}\nconfig: {config:?}\n{}", sim.summary());
    }
});
