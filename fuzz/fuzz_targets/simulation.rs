//! Arbitrary scenarios (`SimConfig` and a list of `Op`s) through the simulator with every
//! invariant on; then heal, settle (liveness) and shut down with no socket left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_server::sim::{Op, Sim, SimConfig};

/// Longest scenario run (longer inputs are cut: time per input stays small).
const MAX_OPS: usize = 256;
const SETTLE_STEPS: usize = 64;

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
