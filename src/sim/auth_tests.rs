//! The private-topics simulation's scenarios: random (proptest), every kind of token, checks
//! answered at once, late, out of order and after the client left.
use proptest::prelude::*;

use super::*;

fn token() -> impl Strategy<Value = SimToken> {
    prop_oneof![
        1 => Just(SimToken::None),
        2 => (any::<u8>(), any::<u8>())
            .prop_map(|(patterns, ttl_secs)| SimToken::Valid { patterns, ttl_secs }),
        1 => any::<u8>().prop_map(|patterns| SimToken::Expired { patterns }),
        1 => any::<u8>().prop_map(|patterns| SimToken::WrongKey { patterns }),
        1 => any::<u8>().prop_map(SimToken::Garbage),
        3 => any::<u8>().prop_map(SimToken::Again),
    ]
}

fn via() -> impl Strategy<Value = Via> {
    prop_oneof![Just(Via::Header), Just(Via::Cookie), Just(Via::Query)]
}

fn op() -> impl Strategy<Value = AuthOp> {
    prop_oneof![
        3 => (0u8..16, token(), via(), any::<bool>())
            .prop_map(|(topics, token, via, resume)| AuthOp::Subscribe { topics, token, via, resume }),
        4 => (0u8..4).prop_map(|topic| AuthOp::Publish { topic }),
        2 => any::<u8>().prop_map(|secs| AuthOp::Advance { secs }),
        1 => (any::<u8>(), any::<u8>())
            .prop_map(|(conn, window)| AuthOp::Squeeze { conn, window }),
        1 => Just(AuthOp::Drain),
        2 => any::<u8>().prop_map(|n| AuthOp::Answer { n }),
        1 => any::<u8>().prop_map(|conn| AuthOp::Hangup { conn }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn no_client_sees_a_topic_its_token_does_not_allow(ops in prop::collection::vec(op(), 1..40)) {
        if let Err(e) = run(&ops) {
            prop_assert!(false, "{}", e);
        }
    }

    /// The cache of verified tokens changes no decision: off, tiny (evicting all the
    /// time) or large, every client gets the same bytes and the same close.
    #[test]
    fn the_token_cache_changes_nothing_a_client_sees(ops in prop::collection::vec(op(), 1..40)) {
        let off = run_with_cache(&ops, 0);
        prop_assert!(off.is_ok(), "{:?}", off);
        for entries in [1, 3, 10_000] {
            let on = run_with_cache(&ops, entries);
            prop_assert!(on.is_ok(), "{:?}", on);
            prop_assert_eq!(&on, &off, "with {} entries", entries);
        }
    }

    /// Checks handed out of the core and answered at once change nothing a client sees:
    /// the request goes on exactly as with the check made inline.
    #[test]
    fn checks_answered_at_once_change_nothing_a_client_sees(ops in prop::collection::vec(op(), 1..40)) {
        for entries in [0, 10_000] {
            let inline = run_with(&ops, entries, Checks::Inline);
            prop_assert!(inline.is_ok(), "{:?}", inline);
            let handed_out = run_with(&ops, entries, Checks::AtOnce);
            prop_assert!(handed_out.is_ok(), "{:?}", handed_out);
            prop_assert_eq!(&handed_out, &inline, "with {} entries", entries);
        }
    }

    /// Checks answered late, in any order, after time passed or the client hung up: every
    /// expectation of the oracle still holds (taken at the time each check is answered).
    #[test]
    fn checks_answered_late_and_out_of_order_keep_every_promise(ops in prop::collection::vec(op(), 1..40)) {
        for entries in [0, 3] {
            let held = run_with(&ops, entries, Checks::Held);
            prop_assert!(held.is_ok(), "{:?}", held);
        }
    }
}

#[test]
fn a_scenario_with_every_kind_of_token() {
    let mut ops = Vec::new();
    for (i, token) in [
        SimToken::None,
        SimToken::Valid {
            patterns: 0b0001,
            ttl_secs: 3,
        },
        SimToken::Valid {
            patterns: 0b0100,
            ttl_secs: 30,
        },
        SimToken::Expired { patterns: 0b1111 },
        SimToken::WrongKey { patterns: 0b1111 },
        SimToken::Garbage(1),
        SimToken::Again(1),
        SimToken::Again(4),
    ]
    .into_iter()
    .enumerate()
    {
        for (topics, via) in [
            (0b0010, Via::Header),
            (0b1001, Via::Cookie),
            (0b0110, Via::Query),
        ] {
            ops.push(AuthOp::Subscribe {
                topics,
                token: token.clone(),
                via,
                resume: i % 2 == 1,
            });
        }
        ops.push(AuthOp::Publish { topic: i as u8 });
    }
    ops.push(AuthOp::Squeeze {
        conn: 4,
        window: 10,
    });
    for t in 0..4 {
        ops.push(AuthOp::Publish { topic: t });
    }
    ops.push(AuthOp::Advance { secs: 9 });
    // Reconnects with the tokens held: the 3 s ones expired (refused although cached),
    // the 30 s ones still valid.
    for n in 0..6 {
        ops.push(AuthOp::Subscribe {
            topics: 0b0110,
            token: SimToken::Again(n),
            via: Via::Header,
            resume: false,
        });
    }
    ops.push(AuthOp::Drain);
    ops.push(AuthOp::Advance { secs: 19 });
    ops.push(AuthOp::Advance { secs: 19 });
    // Every token again, now past its exp: refused although cached.
    for n in 0..6 {
        ops.push(AuthOp::Subscribe {
            topics: 0b0110,
            token: SimToken::Again(n),
            via: Via::Header,
            resume: false,
        });
    }
    let off = run_with_cache(&ops, 0).expect("the scenario holds without the cache");
    let on = run_with_cache(&ops, 10_000).expect("the scenario holds with the cache");
    assert_eq!(on, off);
}

/// The oracle can fail: a client whose token allows `user/1` must not be expected to
/// see `user/2`.
#[test]
fn the_oracle_matches_patterns_independently() {
    assert!(covers(&["shop/1/*"], "shop/1/a"));
    assert!(!covers(&["user/1"], "user/2"));
    assert!(covers(&["*"], "user/2"));
}

/// Checks held while the world moves on: answered out of order, one after its client hung
/// up and its slot went to a newcomer (whose own request the stale answer must not touch),
/// one after its token expired (401, as a check made then would say).
#[test]
fn held_checks_answered_out_of_order_after_leaving_and_after_expiry() {
    let valid = |patterns, ttl_secs| SimToken::Valid { patterns, ttl_secs };
    let sub = |topics, token| AuthOp::Subscribe {
        topics,
        token,
        via: Via::Header,
        resume: false,
    };
    let ops = vec![
        sub(0b0010, valid(0b0001, 30)),
        sub(0b0100, valid(0b0010, 3)),
        sub(0b0010, valid(0b0010, 30)),
        sub(0b0010, SimToken::WrongKey { patterns: 1 }),
        // The first client leaves before its check is answered; its slot is taken next.
        AuthOp::Hangup { conn: 0 },
        sub(0b0010, valid(0b0001, 30)),
        AuthOp::Publish { topic: 1 },
        AuthOp::Answer { n: 3 },
        AuthOp::Answer { n: 0 },
        // The 3 s token expires while its check waits.
        AuthOp::Advance { secs: 9 },
        AuthOp::Answer { n: 0 },
        // Waiting now: the third client's check, then the newcomer's.
        AuthOp::Answer { n: 1 },
        AuthOp::Publish { topic: 1 },
        AuthOp::Publish { topic: 2 },
    ];
    let got = run_with(&ops, 0, Checks::Held).expect("the oracle holds");
    let status = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .split(' ')
            .nth(1)
            .map(str::to_owned)
    };
    let statuses: Vec<Option<String>> = got.iter().map(|(b, _)| status(b)).collect();
    assert_eq!(
        statuses,
        [
            None,
            Some("401".into()),
            Some("403".into()),
            Some("401".into()),
            Some("200".into()),
        ],
        "{got:?}"
    );
    assert_eq!(
        got[0].1,
        Some(CloseReason::Normal),
        "left before its answer"
    );
    assert!(
        String::from_utf8_lossy(&got[4].0).contains("user/1#"),
        "the newcomer streams"
    );
}
