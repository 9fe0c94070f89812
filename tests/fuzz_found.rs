//! Cases found by the `simulation` fuzz target, kept as regressions.
use sse_server::sim::{Op, Sim, SimConfig};

/// A connection that never sends a request under a 161 s head timeout, with ticks on: it is
/// closed only after about 80 tick wake-ups, so a settle budget of 64 reported "no liveness"
/// (a harness limit, not a core bug). The fuzz target now allows 512 wake-ups, as here.
#[test]
fn a_long_head_timeout_settles_within_the_fuzz_targets_budget() {
    let config = SimConfig {
        latest: false,
        small_backlog: false,
        history: 60,
        keepalive: false,
        retry: true,
        ticks: true,
        max_clients: 38,
        initial_window: 0,
        history_bytes: 40448,
        max_topics: 3,
        topics_per_client: 35,
        backlog_bytes: 4343,
        backlog_events: 44,
        extra_connections: 250,
        head_timeout_secs: 161,
        keepalive_secs: 80,
        max_body: 9377,
        outputs_per_turn: 50611,
        stream_rate: 0,
    };
    let ops = [Op::Advance { millis: 59519 }, Op::Connect];
    let mut sim = Sim::new(&config, 7);
    let result = sim
        .run(&ops)
        .and_then(|()| sim.heal_and_settle(512))
        .and_then(|()| sim.finish(512));
    if let Err(e) = result {
        panic!("{e}\n{}", sim.summary());
    }
}
