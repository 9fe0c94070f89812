//! Ticks checked per connection. A tick is the time string a server process pushes every
//! interval to its own streams; behind one port (`--reuse-port`, several processes) each
//! process ticks on its own, so a client is owed its own server's ticks, not every tick some
//! client saw.
//!
//! In a worker ([`TickLinks`]), each counted client's window ticks form a chain: where its
//! stream began (the window's start, or a reconnected stream's start), each tick it got, and
//! the window's end. The worker counts how many clients took each link (a few links per tick
//! and server, whatever the number of clients) and, for reconnected streams, keeps the
//! stretches without a tick around each reconnect in a histogram.
//!
//! The coordinator merges the links and checks them ([`check`]):
//!
//! - **Per server, exactly.** The links between two ticks of one stream join each server's
//!   ticks into one sequence (a stream carries only its own server's ticks), so a client that
//!   skipped a tick another client of the same server got misses it, as with one server.
//! - **Per connection, by time.** A stretch of a stream without a tick longer than two
//!   intervals (between two ticks, from the window's or the stream's start to the first, from
//!   the last to the window's or the stream's end) counts the ticks that fit in it as missed:
//!   what no client of a stalled or dead server got. The interval is `--tick-interval`, else,
//!   per client group, the median time between a stream's consecutive ticks.
//!
//! A link counts the larger of the two: expected ticks = delivered + missed.

use std::collections::{BTreeMap, HashMap};

use crate::report::EventOutcome;
use crate::stats::{FastBuild, Histogram};
use crate::tally::Seen;

/// A link that starts at the window's start (the stream was counted there).
pub const FROM_WINDOW: u64 = 0;
/// A link that starts at a reconnected stream's start (its stretch is in the histogram).
pub const FROM_RESUMED: u64 = 1;
/// A link that ends at the window's end.
pub const TO_END: u64 = u64::MAX;

/// One step of a client's tick chain: its group, where it came from (a tick's unix ns, or
/// [`FROM_WINDOW`], [`FROM_RESUMED`]) and where it went (a tick, or [`TO_END`]).
pub type Link = (u16, u64, u64);

/// Where a counted client's tick chain stands.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub enum Chain {
    /// On the stream it had at the window's start, no window tick yet.
    #[default]
    Fresh,
    /// Its last window tick (`Seen::last_tick`) came on its current stream.
    Ticking,
    /// Its stream was dropped to reconnect; not streaming yet.
    Down,
    /// On a reconnected stream (started `Seen::stream_ms` after the window opened), no tick yet.
    Resumed,
}

/// One worker's tick links and what it needs for the drain.
pub struct TickLinks {
    links: Vec<(Link, u64)>,
    index: HashMap<Link, u32, FastBuild>,
    /// The link taken last (most deliveries of a tick follow the same link).
    last: Option<u32>,
    /// Per group, the stretches without a tick around reconnects: a dropped stream's last one,
    /// a reconnected stream's first one.
    pub resumed: BTreeMap<u16, Histogram>,
    /// Window ticks delivered.
    pub delivered: u64,
    /// Per group: counted clients that got a tick after the window's end (so every window
    /// tick of their server reached them), and whether any window tick arrived at all.
    settled: Vec<u64>,
    ticking: Vec<bool>,
}

impl TickLinks {
    /// Links for `groups` client groups.
    pub fn new(groups: usize) -> TickLinks {
        TickLinks {
            links: Vec::new(),
            index: HashMap::default(),
            last: None,
            resumed: BTreeMap::new(),
            delivered: 0,
            settled: vec![0; groups],
            ticking: vec![false; groups],
        }
    }

    fn add(&mut self, link: Link) {
        if let Some(at) = self.last
            && let Some((l, n)) = self.links.get_mut(at as usize)
            && *l == link
        {
            *n += 1;
            return;
        }
        let at = *self.index.entry(link).or_insert_with(|| {
            self.links.push((link, 0));
            (self.links.len() - 1) as u32
        });
        self.links[at as usize].1 += 1;
        self.last = Some(at);
    }

    fn stretch(&mut self, group: u16, ns: u64) {
        self.resumed.entry(group).or_default().record(ns);
    }

    /// A window tick at `t` reached `seen` (counted, not a duplicate, in order): the link
    /// from where its chain stood.
    pub fn tick(&mut self, seen: &mut Seen, group: u16, t: u64, start_ns: u64) {
        let from = match seen.chain {
            Chain::Fresh => FROM_WINDOW,
            Chain::Ticking => seen.last_tick,
            Chain::Down | Chain::Resumed => {
                let began = start_ns + u64::from(seen.stream_ms) * 1_000_000;
                self.stretch(group, t.saturating_sub(began));
                FROM_RESUMED
            }
        };
        self.add((group, from, t));
        seen.last_tick = t;
        seen.chain = Chain::Ticking;
        self.delivered += 1;
        if let Some(k) = self.ticking.get_mut(usize::from(group)) {
            *k = true;
        }
    }

    /// A tick after the window's end reached `seen`: its server's window ticks are all in.
    pub fn settle(&mut self, seen: &mut Seen, group: u16) {
        if !seen.settled {
            seen.settled = true;
            if let Some(n) = self.settled.get_mut(usize::from(group)) {
                *n += 1;
            }
        }
    }

    /// `seen`'s stream was dropped at `now_ns` to reconnect: the stretch since its last tick
    /// (or its stream's start) up to then, or up to `end_ns` if the window ended first.
    pub fn dropped(
        &mut self,
        seen: &mut Seen,
        group: u16,
        now_ns: u64,
        start_ns: u64,
        end_ns: Option<u64>,
    ) {
        let from = match seen.chain {
            Chain::Fresh => start_ns,
            Chain::Ticking => seen.last_tick,
            Chain::Resumed => start_ns + u64::from(seen.stream_ms) * 1_000_000,
            Chain::Down => return,
        };
        let to = end_ns.map_or(now_ns, |e| e.min(now_ns));
        self.stretch(group, to.saturating_sub(from));
        seen.chain = Chain::Down;
    }

    /// `seen` streams again (after a reconnect) from `now_ns`.
    pub fn restarted(seen: &mut Seen, now_ns: u64, start_ns: u64) {
        if seen.chain == Chain::Down {
            seen.chain = Chain::Resumed;
            let ms = now_ns.saturating_sub(start_ns) / 1_000_000;
            seen.stream_ms = u32::try_from(ms).unwrap_or(u32::MAX);
        }
    }

    /// The window is over (it ended at `end_ns`): the last link of `seen`'s chain.
    pub fn finish(&mut self, seen: &Seen, group: u16, start_ns: u64, end_ns: u64) {
        match seen.chain {
            Chain::Fresh => self.add((group, FROM_WINDOW, TO_END)),
            Chain::Ticking => self.add((group, seen.last_tick, TO_END)),
            Chain::Resumed => {
                let began = start_ns + u64::from(seen.stream_ms) * 1_000_000;
                if end_ns > began {
                    self.stretch(group, end_ns - began);
                }
            }
            // Its reconnect did not complete: counted as lost by the connection counts.
            Chain::Down => {}
        }
    }

    /// Every group where window ticks arrived has each of its counted clients settled.
    pub fn all_settled(&self, counted_per_group: &[u64]) -> bool {
        self.ticking
            .iter()
            .zip(&self.settled)
            .zip(counted_per_group)
            .all(|((&ticking, &settled), &counted)| !ticking || settled >= counted)
    }

    /// Every link and how many clients took it.
    pub fn links(&self) -> impl Iterator<Item = (Link, u64)> + '_ {
        self.links.iter().copied()
    }
}

/// What the merged links say about the run's ticks.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TickCheck {
    /// Distinct window ticks (over every server and group).
    pub ticks: u64,
    pub delivered: u64,
    pub missed: u64,
    /// Tick sequences found: one per server whose clients got its ticks.
    pub sources: u64,
    /// The smallest interval the check used (`--tick-interval`, or inferred per group).
    pub interval_ns: Option<u64>,
    /// Each tick's receivers, and those plus the clients of its server that skipped it.
    pub outcomes: Vec<EventOutcome>,
}

/// Ticks missing from `gap` ns between two ticks of one stream, at `interval`: none up to
/// two intervals, else the ticks that fit between (at least one).
pub fn missed_between(gap: u64, interval: u64) -> u64 {
    if interval == 0 || gap <= interval.saturating_mul(2) {
        0
    } else {
        (gap.saturating_add(interval / 2) / interval)
            .saturating_sub(1)
            .max(1)
    }
}

/// Ticks missing from a stretch of `gap` ns with a tick at one end at most (from a start, to
/// an end): none up to two intervals, else the intervals that fit.
pub fn missed_in_stretch(gap: u64, interval: u64) -> u64 {
    if interval == 0 || gap <= interval.saturating_mul(2) {
        0
    } else {
        gap / interval
    }
}

/// Checks the merged links (counts summed over workers) of a window from `start_ns` to
/// `end_ns`; `interval` is `--tick-interval` when given.
pub fn check(
    links: &HashMap<Link, u64, FastBuild>,
    resumed: &BTreeMap<u16, Histogram>,
    start_ns: u64,
    end_ns: u64,
    interval: Option<u64>,
) -> TickCheck {
    let mut by_group: BTreeMap<u16, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for (&(g, from, to), &n) in links {
        by_group.entry(g).or_default().push((from, to, n));
    }
    for &g in resumed.keys() {
        by_group.entry(g).or_default();
    }
    let mut out = TickCheck::default();
    for (g, group_links) in by_group {
        let empty = Histogram::default();
        let stretches = resumed.get(&g).unwrap_or(&empty);
        check_group(
            g,
            &group_links,
            stretches,
            (start_ns, end_ns),
            interval,
            &mut out,
        );
    }
    out.outcomes.sort_by_key(|o| (o.group, o.time_ns));
    out
}

fn is_tick(v: u64) -> bool {
    v != FROM_WINDOW && v != FROM_RESUMED && v != TO_END
}

/// The weighted median of the gaps between consecutive ticks of one stream.
fn median_gap(links: &[(u64, u64, u64)]) -> Option<u64> {
    let mut gaps: Vec<(u64, u64)> = links
        .iter()
        .filter(|(f, t, _)| is_tick(*f) && is_tick(*t))
        .map(|&(f, t, n)| (t.saturating_sub(f), n))
        .collect();
    gaps.sort_unstable();
    let total: u64 = gaps.iter().map(|g| g.1).sum();
    let mut seen = 0;
    gaps.into_iter().find_map(|(gap, n)| {
        seen += n;
        (2 * seen >= total).then_some(gap)
    })
}

/// One group's ticks: its servers' sequences, then every link against them.
fn check_group(
    g: u16,
    links: &[(u64, u64, u64)],
    stretches: &Histogram,
    (start_ns, end_ns): (u64, u64),
    flag: Option<u64>,
    out: &mut TickCheck,
) {
    let mut ticks: Vec<u64> = links
        .iter()
        .flat_map(|&(f, t, _)| [f, t])
        .filter(|&v| is_tick(v))
        .collect();
    ticks.sort_unstable();
    ticks.dedup();
    let at = |t: u64| ticks.binary_search(&t).ok();
    // Servers: ticks joined by the links between two ticks of one stream.
    let mut parent: Vec<usize> = (0..ticks.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for &(f, t, _) in links {
        if let (Some(a), Some(b)) = (at(f), at(t)) {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent[ra] = rb;
        }
    }
    // Each server's ticks in time order, and each tick's server and place in it.
    let mut seqs: Vec<Vec<usize>> = Vec::new();
    let mut seq_of_root: HashMap<usize, usize> = HashMap::new();
    let place: Vec<(usize, usize)> = (0..ticks.len())
        .map(|i| {
            let r = root(&mut parent, i);
            let s = *seq_of_root.entry(r).or_insert_with(|| {
                seqs.push(Vec::new());
                seqs.len() - 1
            });
            seqs[s].push(i);
            (s, seqs[s].len() - 1)
        })
        .collect();
    let interval = flag.or_else(|| median_gap(links));
    if let Some(i) = interval
        && !ticks.is_empty()
    {
        out.interval_ns = Some(out.interval_ns.map_or(i, |o| o.min(i)));
    }
    let gap_rule = |gap: u64, between: bool| match interval {
        Some(i) if between => missed_between(gap, i),
        Some(i) => missed_in_stretch(gap, i),
        None => 0,
    };
    // A sequence with ticks closer than a tenth of the interval is not one server's (two
    // servers' ticks with the same text joined it): checked by time only.
    let joined: Vec<bool> = seqs
        .iter()
        .map(|seq| {
            interval.is_some_and(|i| {
                seq.windows(2)
                    .any(|w| ticks[w[1]].saturating_sub(ticks[w[0]]) < i / 10)
            })
        })
        .collect();
    // Per server, how many skipped each tick: a difference array over its sequence.
    let mut skipped: Vec<Vec<i64>> = seqs.iter().map(|s| vec![0; s.len() + 1]).collect();
    let mut received = vec![0u64; ticks.len()];
    // `n` clients skipped the ticks at places `from..to` of sequence `s`: how many ticks.
    let mut skip = |s: usize, from: usize, to: usize, n: u64| {
        if from >= to || joined[s] {
            return 0;
        }
        skipped[s][from] += n as i64;
        skipped[s][to] -= n as i64;
        to - from
    };
    for &(f, t, n) in links {
        let (chain, gap) = match (at(f), at(t)) {
            (Some(a), Some(b)) => {
                let ((s, pa), (_, pb)) = (place[a], place[b]);
                let gap = gap_rule(t.saturating_sub(f), true);
                (skip(s, pa + 1, pb, n), gap)
            }
            (None, Some(b)) if f == FROM_WINDOW => {
                let (s, pb) = place[b];
                let gap = gap_rule(t.saturating_sub(start_ns), false);
                (skip(s, 0, pb, n), gap)
            }
            (Some(a), None) => {
                let (s, pa) = place[a];
                let gap = gap_rule(end_ns.saturating_sub(f), false);
                (skip(s, pa + 1, seqs[s].len(), n), gap)
            }
            (None, None) if f == FROM_WINDOW => {
                // No tick in the whole window: owed the one server's ticks when the group has
                // one, and what the window's length holds in any case.
                let chain = match seqs.as_slice() {
                    [only] => skip(0, 0, only.len(), n),
                    _ => 0,
                };
                (chain, gap_rule(end_ns.saturating_sub(start_ns), false))
            }
            // From a reconnected stream's start: its stretch is in the histogram.
            _ => (0, 0),
        };
        if let Some(b) = at(t) {
            received[b] += n;
        }
        out.missed = out
            .missed
            .saturating_add(n.saturating_mul((chain as u64).max(gap)));
    }
    for (low, n) in stretches.buckets() {
        out.missed = out
            .missed
            .saturating_add(n.saturating_mul(gap_rule(low, false)));
    }
    out.ticks += ticks.len() as u64;
    out.delivered += received.iter().sum::<u64>();
    out.sources += seqs.len() as u64;
    for (s, seq) in seqs.iter().enumerate() {
        let mut run = 0i64;
        for (p, &i) in seq.iter().enumerate() {
            run += skipped[s][p];
            out.outcomes.push(EventOutcome {
                group: g,
                time_ns: Some(ticks[i]),
                received: received[i],
                expected: received[i] + run.max(0) as u64,
            });
        }
    }
}

#[cfg(test)]
#[path = "ticks_tests.rs"]
mod tests;
