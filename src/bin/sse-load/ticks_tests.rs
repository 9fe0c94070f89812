//! Unit tests of the per-connection tick check: a worker's tally fed ticks as streams would
//! get them, its links checked as the coordinator checks the merged ones.

use std::collections::HashMap;

use super::*;
use crate::stats::Key;
use crate::tally::{Tally, Window};

const MS: u64 = 1_000_000;
/// The servers' interval in these tests.
const I: u64 = 200 * MS;
/// The window's start.
const S: u64 = 1_700_000_000_000 * MS;

fn counted() -> Seen {
    let mut c = Seen::default();
    c.counted = true;
    c
}

/// A server's `n` ticks, the first `phase` after the window opened, then one every interval.
fn ticks(phase: u64, n: u64) -> Vec<u64> {
    (0..n).map(|k| S + phase + k * I).collect()
}

/// Feeds `ticks` to client `c` of group 0 (received 1 ms after each).
fn feed(t: &mut Tally, c: &mut Seen, ticks: &[u64]) {
    for &at in ticks {
        t.on_event(c, (0, Key::Tick(at)), at + MS);
    }
}

/// Closes the window at `end`, finishes every client's chain and checks the links.
fn checked(t: &mut Tally, clients: &[Seen], end: u64, interval: Option<u64>) -> TickCheck {
    t.close(end);
    for c in clients {
        t.finish(c, 0);
    }
    let links: HashMap<Link, u64, FastBuild> = t.ticks.links().collect();
    check(&links, &t.ticks.resumed, S, end, interval)
}

#[test]
fn two_servers_ticking_at_different_times_are_each_complete() {
    let mut t = Tally::new(1, false, None);
    t.open(S);
    // One port, two processes: clients 0-2 on server A, 3-5 on B, 100 ms apart.
    let (a, b) = (ticks(50 * MS, 10), ticks(150 * MS, 10));
    let mut cs = [counted(); 6];
    for (n, c) in cs.iter_mut().enumerate() {
        feed(&mut t, c, if n < 3 { &a } else { &b });
    }
    let end = S + 2_000 * MS;
    let r = checked(&mut t, &cs, end, None);
    assert_eq!((r.ticks, r.delivered, r.missed), (20, 60, 0), "{r:?}");
    assert_eq!(r.sources, 2);
    assert_eq!(r.interval_ns, Some(I), "inferred from the streams");
    assert_eq!((t.duplicates, t.out_of_order), (0, 0));
    assert!(
        r.outcomes
            .iter()
            .all(|o| o.received == 3 && o.expected == 3)
    );
    // The old rule (every client gets every tick anyone saw) would have owed 120.
    assert_eq!(t.delivered, 60);
}

#[test]
fn a_tick_other_clients_of_its_server_got_is_missed() {
    let mut t = Tally::new(1, false, None);
    t.open(S);
    let a = ticks(50 * MS, 6);
    let (mut x, mut y) = (counted(), counted());
    feed(&mut t, &mut x, &a);
    // Y skips the third tick: a gap of two intervals, within the time rule's slack, but
    // X shows the server sent it.
    let skipped: Vec<u64> = a.iter().copied().filter(|&v| v != a[2]).collect();
    feed(&mut t, &mut y, &skipped);
    let r = checked(&mut t, &[x, y], S + 1_200 * MS, None);
    assert_eq!((r.delivered, r.missed, r.sources), (11, 1, 1), "{r:?}");
    let third = r.outcomes.iter().find(|o| o.time_ns == Some(a[2]));
    assert_eq!(third.map(|o| (o.received, o.expected)), Some((1, 2)));
    // Skipping the first and the last is found too (the window's edges).
    let mut t = Tally::new(1, false, None);
    t.open(S);
    let (mut x, mut y) = (counted(), counted());
    feed(&mut t, &mut x, &a);
    feed(&mut t, &mut y, &a[1..5]);
    let r = checked(&mut t, &[x, y], S + 1_200 * MS, None);
    assert_eq!((r.delivered, r.missed), (10, 2), "{r:?}");
}

#[test]
fn two_servers_with_one_equal_tick_text_are_checked_by_time_only() {
    let mut t = Tally::new(1, false, None);
    t.open(S);
    // In phase to the microsecond; their third ticks have the same text.
    let a = ticks(50 * MS, 8);
    let mut b: Vec<u64> = a.iter().map(|v| v + 3_000).collect();
    b[2] = a[2];
    let mut cs = [counted(); 4];
    for (n, c) in cs.iter_mut().enumerate() {
        feed(&mut t, c, if n < 2 { &a } else { &b });
    }
    let r = checked(&mut t, &cs, S + 1_600 * MS, None);
    assert_eq!(r.sources, 1, "joined by the shared text");
    assert_eq!((r.delivered, r.missed), (32, 0), "{r:?}");
}

#[test]
fn duplicates_and_out_of_order_ticks_are_counted_once() {
    let mut t = Tally::new(1, false, None);
    t.open(S);
    let a = ticks(50 * MS, 4);
    let mut c = counted();
    feed(&mut t, &mut c, &[a[0], a[1], a[1], a[0], a[2], a[3]]);
    assert_eq!((t.duplicates, t.out_of_order, t.delivered), (1, 1, 4));
    let r = checked(&mut t, &[c], S + 800 * MS, None);
    assert_eq!((r.delivered, r.missed), (4, 0), "{r:?}");
}

#[test]
fn a_gap_past_two_intervals_counts_the_ticks_no_client_got() {
    let mut t = Tally::new(1, false, None);
    t.open(S);
    // Server B stalls: none of its clients gets its ticks 3 to 7; server A is fine.
    let (a, b) = (ticks(50 * MS, 15), ticks(150 * MS, 15));
    let stalled: Vec<u64> = b
        .iter()
        .enumerate()
        .filter(|(k, _)| !(3..8).contains(k))
        .map(|(_, &v)| v)
        .collect();
    let mut cs = [counted(); 4];
    for (n, c) in cs.iter_mut().enumerate() {
        feed(&mut t, c, if n < 2 { &a } else { &stalled });
    }
    let r = checked(&mut t, &cs, S + 3_000 * MS, None);
    assert_eq!(r.interval_ns, Some(I), "the median ignores the stall");
    assert_eq!((r.delivered, r.missed), (30 + 20, 2 * 5), "{r:?}");
    assert_eq!(r.sources, 2);
    // Two intervals exactly is within the slack; with `--tick-interval` the rule is the same.
    let mut t = Tally::new(1, false, None);
    t.open(S);
    let mut c = counted();
    feed(&mut t, &mut c, &[S + 100 * MS, S + 500 * MS, S + 700 * MS]);
    let r = checked(&mut t, &[c], S + 800 * MS, Some(I));
    assert_eq!(r.missed, 0, "{r:?}");
}

#[test]
fn late_first_ticks_early_last_ticks_and_silent_streams_are_missed() {
    let mut t = Tally::new(1, false, None);
    t.open(S);
    let a = ticks(50 * MS, 10);
    let (mut x, mut late, mut early, silent) = (counted(), counted(), counted(), counted());
    feed(&mut t, &mut x, &a);
    // The whole server's first ticks lost for one client is what the other shows.
    feed(&mut t, &mut late, &a[3..]);
    feed(&mut t, &mut early, &a[..6]);
    let r = checked(&mut t, &[x, late, early, silent], S + 2_000 * MS, None);
    assert_eq!(r.delivered, 10 + 7 + 6);
    assert_eq!(r.missed, 3 + 4 + 10, "{r:?}");
    // A stream that got nothing while its group ticked at all (one server here).
    let mut t = Tally::new(1, false, None);
    t.open(S);
    let mut c = counted();
    let end = S + 2_000 * MS;
    let r = checked(&mut t, &[c], end, Some(I));
    assert_eq!(r.missed, 10, "--tick-interval: the window holds 10 ticks");
    let r = {
        let mut t = Tally::new(1, false, None);
        t.open(S);
        checked(&mut t, &[c], end, None)
    };
    assert_eq!(
        r,
        TickCheck::default(),
        "no tick anywhere: a server that does not tick"
    );
    c.counted = false;
    let mut t = Tally::new(1, false, None);
    t.open(S);
    feed(&mut t, &mut c, &a);
    assert_eq!(t.delivered, 0, "clients not counted are not checked");
}

#[test]
fn reconnected_streams_are_owed_ticks_from_their_start() {
    let mut l = TickLinks::new(1);
    let a = ticks(50 * MS, 10);
    let b = ticks(150 * MS, 10);
    // On A, dropped 100 ms after its third tick; streaming again (on B) 300 ms later.
    let mut c = counted();
    for &v in &a[..3] {
        l.tick(&mut c, 0, v, S);
    }
    l.dropped(&mut c, 0, a[2] + 100 * MS, S, None);
    assert_eq!(c.chain, Chain::Down);
    let back = a[2] + 400 * MS;
    TickLinks::restarted(&mut c, back, S);
    assert_eq!(c.chain, Chain::Resumed);
    let next: Vec<u64> = b.iter().copied().filter(|&v| v > back).collect();
    for &v in &next {
        l.tick(&mut c, 0, v, S);
    }
    l.finish(&c, 0, S, S + 2_000 * MS);
    let links: HashMap<Link, u64, FastBuild> = l.links().collect();
    assert!(links.contains_key(&(0, FROM_RESUMED, next[0])));
    let r = check(&links, &l.resumed, S, S + 2_000 * MS, None);
    assert_eq!((r.delivered, r.missed, r.sources), (3 + 6, 0, 2), "{r:?}");
    // A reconnected stream that gets nothing for a second misses what fits in it.
    let mut l = TickLinks::new(1);
    let mut c = counted();
    l.tick(&mut c, 0, a[0], S);
    l.tick(&mut c, 0, a[1], S);
    l.dropped(&mut c, 0, a[1] + 50 * MS, S, None);
    TickLinks::restarted(&mut c, a[1] + 60 * MS, S);
    l.tick(&mut c, 0, a[1] + 1_100 * MS, S);
    let links: HashMap<Link, u64, FastBuild> = l.links().collect();
    let r = check(&links, &l.resumed, S, S + 2_000 * MS, Some(I));
    assert!(r.missed >= 4, "{r:?}");
}

#[test]
fn settled_once_a_tick_past_the_window_arrives() {
    let mut t = Tally::new(2, false, None);
    t.open(S);
    let a = ticks(50 * MS, 5);
    let mut cs = [counted(); 2];
    for c in &mut cs {
        feed(&mut t, c, &a[..4]);
    }
    t.close(a[3] + 10 * MS);
    assert!(matches!(t.window, Window::Closed { .. }));
    // Group 1 has no ticks: nothing to wait for there.
    assert!(!t.ticks.all_settled(&[2, 3]));
    feed(&mut t, &mut cs[0], &a[4..]);
    assert!(!t.ticks.all_settled(&[2, 3]));
    feed(&mut t, &mut cs[1], &a[4..]);
    feed(&mut t, &mut cs[1], &a[4..]);
    assert!(t.ticks.all_settled(&[2, 3]));
    assert_eq!(t.delivered, 8, "the tick past the window is not counted");
}

#[test]
fn the_gap_rules() {
    assert_eq!(missed_between(I, I), 0);
    assert_eq!(missed_between(2 * I, I), 0);
    assert_eq!(missed_between(2 * I + 1, I), 1);
    assert_eq!(missed_between(3 * I + I / 3, I), 2);
    assert_eq!(missed_between(6 * I, I), 5);
    assert_eq!(missed_in_stretch(2 * I, I), 0);
    assert_eq!(missed_in_stretch(2 * I + 1, I), 2);
    assert_eq!(missed_in_stretch(5 * I + I / 2, I), 5);
    assert_eq!(missed_between(5, 0), 0);
    assert_eq!(missed_between(u64::MAX, u64::MAX), 0);
    assert_eq!(missed_in_stretch(u64::MAX, 1), u64::MAX);
}

#[test]
fn a_client_stays_four_words() {
    assert!(std::mem::size_of::<Seen>() <= 32);
}
