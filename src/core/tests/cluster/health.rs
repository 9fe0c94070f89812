//! `/health`'s `not applying the log` through the core's interface, with a controlled clock:
//! a head learned (from the tail, a publish's answer or a head probe) and not applied
//! within the bound turns `/health` to 503 and the gauges to 1; applying it turns both back;
//! normal lag never does; the head probe goes out only while the tail is quiet.

use super::*;

const BOUND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// A node of epoch `EPOCH` with a one-second bound, greeted at head 0.
fn watched() -> T {
    let mut cfg = cluster_cfg();
    if let Some(bus) = cfg.cluster.as_mut() {
        bus.apply_bound = BOUND;
    }
    let mut t = T::new(cfg);
    t.connected(EPOCH, 0, 0);
    t
}

/// `/health`: (status, body).
fn health(t: &mut T) -> (u16, String) {
    let text = t.get_once("/health").1;
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

fn stalled() -> (u16, String) {
    (503, "not applying the log\n".to_owned())
}

fn ok() -> (u16, String) {
    (200, "ok\n".to_owned())
}

/// A metric's value in `/metrics`.
fn metric(t: &mut T, name: &str) -> String {
    let text = t.get_once("/metrics").1;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_owned()
}

/// A batch from the tail with events up to `applied` and the head it read.
fn batch(t: &mut T, from: u64, applied: u64, head: u64) {
    let events = (from..=applied).map(|o| event(o, "t", "x")).collect();
    t.bus(BusReply::Events {
        events,
        head_offset: head,
    });
}

/// The tokens of the head probes asked for since the last call.
fn probes(t: &mut T) -> Vec<u64> {
    t.bus_requests()
        .into_iter()
        .filter_map(|r| match r {
            BusRequest::ProbeHead { token } => Some(token),
            _ => None,
        })
        .collect()
}

fn head(t: &mut T, token: u64, epoch: &str, offset: u64) {
    t.bus(BusReply::Head {
        token,
        epoch: epoch.into(),
        head_offset: offset,
    });
}

#[test]
fn a_head_unapplied_past_the_bound_is_503_until_applied() {
    let mut t = watched();
    batch(&mut t, 1, 2, 5);
    assert_eq!(health(&mut t), ok(), "behind, within the bound");
    t.advance(BOUND - MS);
    assert_eq!(health(&mut t), ok(), "a millisecond short of the bound");
    assert!(!t.core.not_applying_log(t.now));
    t.advance(MS);
    assert_eq!(health(&mut t), stalled());
    assert_eq!(metric(&mut t, "sse_bus_apply_stalled"), "1");
    assert_eq!(metric(&mut t, "sse_bus_unapplied_seconds"), "1.000");
    // Part of it applied: the offsets still missing were learned as long ago.
    batch(&mut t, 3, 4, 5);
    assert_eq!(health(&mut t), stalled());
    batch(&mut t, 5, 5, 5);
    assert_eq!(health(&mut t), ok(), "caught up");
    assert_eq!(metric(&mut t, "sse_bus_apply_stalled"), "0");
    assert_eq!(metric(&mut t, "sse_bus_unapplied_seconds"), "0.000");
    t.advance(BOUND * 3);
    assert_eq!(health(&mut t), ok());
}

#[test]
fn a_newer_head_waits_its_own_bound() {
    let mut t = watched();
    batch(&mut t, 1, 1, 3);
    t.advance(BOUND / 2);
    batch(&mut t, 2, 3, 8);
    t.advance(BOUND / 2 + MS);
    assert_eq!(
        health(&mut t),
        ok(),
        "3 was applied within its bound; 8 was learned half a bound ago"
    );
    t.advance(BOUND / 2);
    assert_eq!(health(&mut t), stalled());
}

#[test]
fn an_id_answered_to_a_publish_raises_the_head() {
    let mut t = watched();
    let _ = t.core.publish("t", None, None, "x", t.now);
    let Some(BusRequest::Publish(Publish { token, .. })) = t.next_log_request() else {
        panic!("a publish")
    };
    t.bus(BusReply::Published {
        token,
        id: ClusterId {
            epoch: EPOCH.into(),
            offset: 1,
        },
    });
    t.advance(BOUND);
    assert_eq!(
        health(&mut t),
        stalled(),
        "answered, never shown by the tail"
    );
    batch(&mut t, 1, 1, 1);
    assert_eq!(health(&mut t), ok());
}

#[test]
fn a_probe_showing_the_head_moved_while_the_tail_is_silent_is_detected() {
    let mut t = watched();
    assert_eq!(t.core.next_deadline(), Some(t.now + BOUND / 2));
    t.advance(BOUND / 2 - MS);
    assert!(
        probes(&mut t).is_empty(),
        "the tail spoke less than half a bound ago"
    );
    t.advance(MS);
    let [token] = probes(&mut t)[..] else {
        panic!("one probe")
    };
    assert_eq!(
        t.core.next_deadline(),
        None,
        "no second probe while one is out"
    );
    t.advance(BOUND * 2);
    assert!(probes(&mut t).is_empty());
    head(&mut t, token, EPOCH, 4);
    assert_eq!(health(&mut t), ok(), "learned just now");
    t.advance(BOUND / 2);
    let [second] = probes(&mut t)[..] else {
        panic!("the tail is still quiet: probed again")
    };
    head(&mut t, second, EPOCH, 4);
    t.advance(BOUND / 2);
    assert_eq!(
        health(&mut t),
        stalled(),
        "the log moved and the tail said nothing"
    );
    let _ = probes(&mut t);
    batch(&mut t, 1, 4, 4);
    assert_eq!(health(&mut t), ok());
}

#[test]
fn probe_answers_of_another_epoch_failures_and_stale_tokens_move_no_head() {
    let mut t = watched();
    t.advance(BOUND / 2);
    let [token] = probes(&mut t)[..] else {
        panic!()
    };
    head(&mut t, token + 100, EPOCH, 9);
    head(&mut t, token, "other", 9);
    t.advance(BOUND / 2);
    let [failing] = probes(&mut t)[..] else {
        panic!("answered: the next probe is planned")
    };
    t.bus(BusReply::HeadFailed {
        token: failing,
        reason: "down".into(),
    });
    t.advance(BOUND * 3 / 2);
    assert_eq!(health(&mut t), ok());
    assert_eq!(probes(&mut t).len(), 1, "after a failure, probed again");
    assert_eq!(metric(&mut t, "sse_bus_head_probes_total"), "3");
}

#[test]
fn a_busy_tail_is_never_probed_and_its_normal_lag_never_unhealthy() {
    let mut t = watched();
    // Ten seconds of a publish every 10 ms, answered at once; the tail applies each head
    // 90 steps (0.9 of the bound) after it was answered, and reads the head as it goes.
    for step in 1..=1000u64 {
        let _ = t.core.publish("t", None, None, "x", t.now);
        let Some(BusRequest::Publish(Publish { token, .. })) = t.next_log_request() else {
            panic!("a publish at step {step}")
        };
        t.bus(BusReply::Published {
            token,
            id: ClusterId {
                epoch: EPOCH.into(),
                offset: step,
            },
        });
        if step > 90 {
            batch(&mut t, step - 90, step - 90, step);
        }
        assert!(!t.core.not_applying_log(t.now), "step {step}");
        t.advance(Duration::from_millis(10));
        // Before its first batch the tail was quiet for half a bound: one probe then.
        for token in probes(&mut t) {
            assert!(step < 91, "the tail speaks, yet a probe at step {step}");
            head(&mut t, token, EPOCH, step);
        }
    }
    assert_eq!(health(&mut t), ok());
    assert_eq!(metric(&mut t, "sse_bus_head_probes_total"), "1");
}

#[test]
fn an_outage_is_bus_down_and_the_bound_starts_again_at_the_greeting() {
    let mut t = watched();
    batch(&mut t, 1, 1, 9);
    t.advance(BOUND);
    assert_eq!(health(&mut t), stalled());
    assert_eq!(probes(&mut t).len(), 1, "half a bound after the batch");
    t.bus(BusReply::Disconnected {
        reason: "cut".into(),
    });
    assert_eq!(health(&mut t).1, "bus down\n");
    t.advance(BOUND * 5);
    assert!(probes(&mut t).is_empty(), "no probe while the tail is away");
    t.connected(EPOCH, 12, 1);
    assert_eq!(health(&mut t), ok(), "back: it has a bound to catch up");
    t.advance(BOUND / 2);
    let _ = probes(&mut t);
    batch(&mut t, 2, 12, 12);
    t.advance(BOUND * 2);
    assert_eq!(health(&mut t), ok());
}

#[test]
fn an_epoch_change_forgets_the_old_logs_heads() {
    let mut t = watched();
    batch(&mut t, 1, 1, 9);
    t.bus(BusReply::EpochChanged {
        previous: EPOCH.into(),
        epoch: "ep2".into(),
    });
    t.connected("ep2", 0, 0);
    t.advance(BOUND * 2);
    assert_eq!(health(&mut t), ok());
}

#[test]
fn the_memory_log_is_always_applied() {
    let t = T::new(cfg());
    assert!(!t.core.not_applying_log(t.now + BOUND * 100));
    assert_eq!(
        t.core.next_deadline(),
        Some(t.now + Duration::from_secs(2)),
        "ticks only"
    );
}

#[test]
fn each_step_of_catching_up_counts_and_a_long_stall_keeps_few_marks() {
    let mut t = watched();
    // Three seconds of heads every 10 ms, none applied.
    for step in 1..=300u64 {
        t.now += Duration::from_millis(10);
        t.connected(EPOCH, step, 0);
        if step > 100 {
            assert!(t.core.not_applying_log(t.now), "step {step}");
        }
    }
    // Caught up to what was known two seconds ago: what came later waits its own bound.
    batch(&mut t, 1, 100, 300);
    assert_eq!(
        health(&mut t),
        stalled(),
        "offsets known for 2 s are still missing"
    );
    batch(&mut t, 101, 250, 300);
    assert_eq!(
        health(&mut t),
        ok(),
        "what is missing was learned half a second ago"
    );
    t.advance(BOUND / 2);
    assert_eq!(health(&mut t), stalled());
    batch(&mut t, 251, 300, 300);
    assert_eq!(health(&mut t), ok());
    // Ten more seconds: the marks stay bounded (the core's invariants check it after every
    // input), the newest absorbing the heads past four bounds: reported until caught up.
    for step in 301..=1300u64 {
        t.now += Duration::from_millis(10);
        t.connected(EPOCH, step, 300);
    }
    batch(&mut t, 301, 1250, 1300);
    assert_eq!(
        health(&mut t),
        stalled(),
        "behind without a break since 4 s in"
    );
    batch(&mut t, 1251, 1300, 1300);
    assert_eq!(health(&mut t), ok());
}

/// Offsets 1..=2 applied, then a publish answered with offset 5 while the tail is away (its
/// connection dropped by a failover).
fn answered_at_5_while_away(t: &mut T) {
    batch(t, 1, 2, 2);
    let _ = t.core.publish("t", None, None, "x", t.now);
    let Some(BusRequest::Publish(Publish { token, .. })) = t.next_log_request() else {
        panic!("a publish")
    };
    t.bus(BusReply::Disconnected {
        reason: "failover".into(),
    });
    t.bus(BusReply::Published {
        token,
        id: ClusterId {
            epoch: EPOCH.into(),
            offset: 5,
        },
    });
}

/// A publish answered (offset 5) while the tail was away; the log it greets after a
/// failover holds only up to 3: offsets 4 and 5 are owed no more, offset 3 is, since the
/// answer came (a greeting does not restart its wait); and a greeting at the applied
/// offset owes nothing.
#[test]
fn a_head_the_log_no_longer_holds_is_owed_no_more() {
    let mut t = watched();
    answered_at_5_while_away(&mut t);
    t.advance(BOUND / 2);
    t.connected(EPOCH, 3, 0);
    t.advance(BOUND / 2);
    assert_eq!(health(&mut t), stalled(), "3 owed since the answer came");
    batch(&mut t, 3, 3, 3);
    assert_eq!(health(&mut t), ok(), "4 and 5 are not in the log");
    t.advance(BOUND * 2);
    assert_eq!(health(&mut t), ok());

    let mut t = watched();
    answered_at_5_while_away(&mut t);
    t.connected(EPOCH, 2, 0);
    t.advance(BOUND * 2);
    assert_eq!(
        health(&mut t),
        ok(),
        "the copy's head is the applied offset"
    );
}

/// A greeting of a log that holds no event (every entry trimmed or lost, its head kept at
/// 4) owes none: nothing there can be applied. A log that holds events owes its head.
#[test]
fn a_greeting_of_a_log_holding_no_event_owes_none() {
    let greet = |first_retained| {
        let mut t = watched();
        t.bus(BusReply::Disconnected {
            reason: "failover".into(),
        });
        t.bus(BusReply::Connected {
            epoch: EPOCH.into(),
            head_offset: 4,
            first_retained_offset: first_retained,
            after_offset: 0,
        });
        t.advance(BOUND * 2);
        health(&mut t)
    };
    assert_eq!(greet(None), ok());
    assert_eq!(greet(Some(4)), stalled());
}

/// A greeting whose head lies between two heads learned: the higher one goes, what the log
/// holds above the lower one stays owed since the higher one was learned (not since the
/// greeting).
#[test]
fn a_greeting_between_two_heads_learned_keeps_what_the_log_holds() {
    let mut t = watched();
    batch(&mut t, 1, 2, 3);
    let _ = t.core.publish("t", None, None, "x", t.now);
    let Some(BusRequest::Publish(Publish { token, .. })) = t.next_log_request() else {
        panic!("a publish")
    };
    t.advance(BOUND / 4);
    t.bus(BusReply::Published {
        token,
        id: ClusterId {
            epoch: EPOCH.into(),
            offset: 5,
        },
    });
    t.advance(BOUND / 4);
    t.connected(EPOCH, 4, 0);
    batch(&mut t, 3, 3, 4);
    t.advance(BOUND / 2);
    assert_eq!(
        health(&mut t),
        ok(),
        "4 owed for three quarters of the bound"
    );
    t.advance(BOUND / 4 + MS);
    assert_eq!(
        health(&mut t),
        stalled(),
        "4 owed for the bound: since 5 was learned, not since the greeting"
    );
    batch(&mut t, 4, 4, 4);
    assert_eq!(health(&mut t), ok(), "5 is not in the log");
}

/// After a greeting of a log that holds no event (its head kept at 4), head probes that
/// answer that same head owe nothing either: no tail can apply an offset the log does not
/// hold. A head above it (an event published since, which the log holds) is owed again.
#[test]
fn probes_of_a_log_holding_no_event_owe_none_until_it_moves() {
    let mut t = watched();
    t.bus(BusReply::Disconnected {
        reason: "failover".into(),
    });
    t.bus(BusReply::Connected {
        epoch: EPOCH.into(),
        head_offset: 4,
        first_retained_offset: None,
        after_offset: 0,
    });
    for _ in 0..4 {
        t.advance(BOUND / 2);
        let [token] = probes(&mut t)[..] else {
            panic!("the tail is quiet: one probe")
        };
        head(&mut t, token, EPOCH, 4);
    }
    assert_eq!(
        health(&mut t),
        ok(),
        "two bounds of probes at the empty head"
    );
    for _ in 0..3 {
        t.advance(BOUND / 2);
        let [token] = probes(&mut t)[..] else {
            panic!("the tail is quiet: one probe")
        };
        head(&mut t, token, EPOCH, 5);
    }
    assert_eq!(health(&mut t), stalled(), "5 is in the log, unapplied");
    batch(&mut t, 5, 5, 5);
    assert_eq!(health(&mut t), ok());
}
