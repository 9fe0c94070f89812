//! A Prometheus histogram of durations with fixed bucket bounds, rendered by hand: the core
//! is sans-IO and writes its own exposition text.
//!
//! Guarantees: [`Histogram::observe`] is O(1) (a scan of [`BOUNDS`], a fixed 16 entries, and
//! two additions, no allocation); rendering gives cumulative `_bucket{le=…}` lines in
//! increasing order ending with `+Inf`, then `_sum` (seconds) and `_count`, with `+Inf`
//! equal to `_count`. A bucket counts observations *at most* its bound (`le`).

use std::fmt::Write as _;
use std::time::Duration;

/// The bucket bounds, in nanoseconds and as the `le` label writes them (seconds). From
/// 100 µs (one write on an idle loopback) to 10 s (past any sane fan-out), about ×2.5 apart.
pub const BOUNDS: [(u64, &str); 16] = [
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// Observations per bucket (not cumulative: the last slot is above every bound), and their
/// sum. 18 words, no heap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: [u64; BOUNDS.len() + 1],
    /// Sum of the observations in nanoseconds (u128: cannot overflow in practice).
    sum_ns: u128,
}

impl Histogram {
    /// Records one duration.
    #[inline]
    pub fn observe(&mut self, d: Duration) {
        self.observe_n(d, 1);
    }

    /// Records `n` observations of the same duration.
    #[inline]
    pub fn observe_n(&mut self, d: Duration, n: u64) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let mut i = 0;
        while i < BOUNDS.len() && ns > BOUNDS[i].0 {
            i += 1;
        }
        self.counts[i] += n;
        self.sum_ns += u128::from(ns) * u128::from(n);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the observations.
    pub fn sum(&self) -> Duration {
        let secs = u64::try_from(self.sum_ns / 1_000_000_000).unwrap_or(u64::MAX);
        Duration::new(secs, (self.sum_ns % 1_000_000_000) as u32)
    }

    /// Observations at most `BOUNDS[i]` (cumulative); `i == BOUNDS.len()` is `+Inf`.
    pub fn cumulative(&self, i: usize) -> u64 {
        self.counts[..=i.min(BOUNDS.len())].iter().sum()
    }

    /// Appends the `# HELP`/`# TYPE` lines and the series of histogram `name`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut total = 0;
        for (i, (_, le)) in BOUNDS.iter().enumerate() {
            total += self.counts[i];
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}");
        }
        total += self.counts[BOUNDS.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let secs = self.sum_ns / 1_000_000_000;
        let nanos = self.sum_ns % 1_000_000_000;
        let _ = writeln!(out, "{name}_sum {secs}.{nanos:09}");
        let _ = writeln!(out, "{name}_count {total}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bounds_increase_and_their_labels_are_their_values() {
        for pair in BOUNDS.windows(2) {
            assert!(pair[0].0 < pair[1].0);
        }
        for (ns, le) in BOUNDS {
            let secs: f64 = le.parse().unwrap();
            assert_eq!((secs * 1e9).round() as u64, ns, "{le}");
        }
    }

    /// A value equal to a bound is in that bound's bucket (`le`), one nanosecond more is in
    /// the next; zero is in the first, anything past the last bound only in `+Inf`.
    #[test]
    fn bucket_edges() {
        let mut h = Histogram::default();
        h.observe(Duration::ZERO);
        h.observe(Duration::from_nanos(100_000));
        assert_eq!(h.cumulative(0), 2);
        h.observe(Duration::from_nanos(100_001));
        assert_eq!(h.cumulative(0), 2);
        assert_eq!(h.cumulative(1), 3);
        h.observe(ms(10_000));
        assert_eq!(h.cumulative(BOUNDS.len() - 2), 3);
        assert_eq!(h.cumulative(BOUNDS.len() - 1), 4);
        h.observe(ms(10_001));
        h.observe(Duration::MAX);
        assert_eq!(h.cumulative(BOUNDS.len() - 1), 4);
        assert_eq!(h.cumulative(BOUNDS.len()), 6);
        assert_eq!(h.count(), 6);
    }

    #[test]
    fn observing_n_at_once_is_observing_n_times() {
        let (mut one, mut many) = (Histogram::default(), Histogram::default());
        for _ in 0..5 {
            one.observe(ms(7));
        }
        many.observe_n(ms(7), 5);
        many.observe_n(ms(1), 0);
        assert_eq!(one, many);
    }

    #[test]
    fn sum_and_count() {
        let mut h = Histogram::default();
        assert_eq!((h.count(), h.sum()), (0, Duration::ZERO));
        h.observe(ms(3));
        h.observe(Duration::from_nanos(1_500_000_001));
        assert_eq!(h.count(), 2);
        assert_eq!(h.sum(), Duration::from_nanos(1_503_000_001));
    }

    /// The exposition text: cumulative buckets in order, `+Inf` equal to `_count`, `_sum` in
    /// seconds with nanosecond digits.
    #[test]
    fn renders_cumulative_buckets_inf_sum_and_count() {
        let mut h = Histogram::default();
        h.observe(ms(1)); // le 0.001
        h.observe(ms(2)); // le 0.0025
        h.observe(ms(2));
        h.observe(ms(20_000)); // +Inf only
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "What x is.");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# HELP x_seconds What x is.");
        assert_eq!(lines[1], "# TYPE x_seconds histogram");
        assert_eq!(lines[2], "x_seconds_bucket{le=\"0.0001\"} 0");
        assert_eq!(lines[4], "x_seconds_bucket{le=\"0.0005\"} 0");
        assert_eq!(lines[5], "x_seconds_bucket{le=\"0.001\"} 1");
        assert_eq!(lines[6], "x_seconds_bucket{le=\"0.0025\"} 3");
        assert_eq!(lines[17], "x_seconds_bucket{le=\"10\"} 3");
        assert_eq!(lines[18], "x_seconds_bucket{le=\"+Inf\"} 4");
        assert_eq!(lines[19], "x_seconds_sum 20.005000000");
        assert_eq!(lines[20], "x_seconds_count 4");
        assert_eq!(lines.len(), 21);
        // Cumulative: never decreasing.
        let counts: Vec<u64> = lines[2..19]
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
    }
}
