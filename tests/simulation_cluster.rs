//! The cluster simulation (`sse_server::sim::bus`): real cores in cluster mode around an
//! in-memory log whose bus misbehaves (disconnects, delayed and batched delivery,
//! redelivery of seen offsets, epoch changes, trims during outages). Every client must get
//! every event of its topics once, in order, or a documented `reset`, and catch up once the
//! faults heal. proptest shrinks a failing scenario to a short one.

use proptest::prelude::*;
use sse_server::sim::bus::{ClusterOp, ClusterSim};

fn op() -> impl Strategy<Value = ClusterOp> {
    let n = 0u8..4;
    prop_oneof![
        3 => (n.clone(), 0u8..3).prop_map(|(node, topic)| ClusterOp::Subscribe { node, topic }),
        2 => (any::<u8>(), n.clone()).prop_map(|(client, node)| ClusterOp::Reconnect { client, node }),
        6 => (n.clone(), 0u8..3).prop_map(|(node, topic)| ClusterOp::Publish { node, topic }),
        5 => (n.clone(), 1u8..5).prop_map(|(node, n)| ClusterOp::Serve { node, n }),
        6 => (n.clone(), any::<u8>()).prop_map(|(node, batch)| ClusterOp::Deliver { node, batch }),
        1 => n.clone().prop_map(|node| ClusterOp::Disconnect { node }),
        2 => n.clone().prop_map(|node| ClusterOp::Connect { node }),
        1 => (n.clone(), any::<u8>()).prop_map(|(node, back)| ClusterOp::Rewind { node, back }),
        1 => any::<u8>().prop_map(|keep| ClusterOp::Trim { keep }),
        1 => Just(ClusterOp::Lose),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(client, blocked)| ClusterOp::Block { client, blocked }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_client_gets_its_events_once_in_order_or_a_reset(
        nodes in 1usize..4,
        history in 1usize..6,
        max_len in 4usize..40,
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut sim = ClusterSim::new(nodes, history, max_len, seed);
        if let Err(e) = sim.run(&ops) {
            return Err(TestCaseError::fail(format!("{e}\n{}", sim.summary())));
        }
    }
}

/// A calm scenario (no faults) delivers everything without a single reset.
#[test]
fn a_calm_cluster_delivers_everything() {
    let mut sim = ClusterSim::new(3, 4, 100, 1);
    let mut ops = Vec::new();
    for node in 0..3 {
        ops.push(ClusterOp::Subscribe { node, topic: 1 });
    }
    for i in 0..60u8 {
        ops.push(ClusterOp::Publish {
            node: i % 3,
            topic: 1,
        });
        ops.push(ClusterOp::Serve { node: i % 3, n: 1 });
        ops.push(ClusterOp::Deliver {
            node: i % 3,
            batch: 3,
        });
    }
    sim.run(&ops).unwrap();
    assert_eq!(sim.events_received(), 3 * 60, "{}", sim.summary());
}
