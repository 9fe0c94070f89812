//! What is measured per delivery: a latency histogram (mergeable bucket by bucket across
//! workers), the identity of each event, and a cheap hasher for the per-event counts.

use std::hash::{BuildHasherDefault, Hasher};

/// Sub-buckets per power of two: the relative error of a reported percentile is below
/// 1/128 (0.8%).
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

/// A log-linear histogram of nanosecond values: constant memory (~60 KiB) however many
/// (client, event) pairs are recorded. Two histograms merge exactly ([`Histogram::merge`]),
/// and one travels between processes as its non-empty buckets ([`Histogram::sparse`]).
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram({} values, max {})", self.total, self.max)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; ((64 - SUB_BITS as usize + 1) * SUB as usize) + 1],
            total: 0,
            max: 0,
            sum: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        v as usize
    } else {
        let e = 63 - v.leading_zeros(); // >= SUB_BITS
        let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
        ((e - SUB_BITS + 1) as u64 * SUB + sub) as usize
    }
}

fn bucket_low(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        i
    } else {
        let e = i / SUB + u64::from(SUB_BITS) - 1;
        let sub = i % SUB;
        (SUB + sub) << (e - u64::from(SUB_BITS))
    }
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean (0 when empty).
    pub fn mean(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            (self.sum / u128::from(self.total)) as u64
        }
    }

    /// Adds every value recorded in `other` (bucket by bucket: exact).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// The values recorded since `earlier` (a copy of this histogram taken before). The max
    /// is exact when it grew since, else the low edge of the highest bucket that grew.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut d = Histogram::default();
        let mut top = None;
        for (i, (a, b)) in self.counts.iter().zip(&earlier.counts).enumerate() {
            let n = a.saturating_sub(*b);
            if n > 0 {
                d.counts[i] = n;
                top = Some(i);
            }
        }
        d.total = self.total.saturating_sub(earlier.total);
        d.sum = self.sum.saturating_sub(earlier.sum);
        d.max = if self.max > earlier.max {
            self.max
        } else {
            top.map_or(0, bucket_low)
        };
        d
    }

    /// Forgets every value (keeps the memory).
    pub fn clear(&mut self) {
        if self.total > 0 {
            self.counts.fill(0);
        }
        self.total = 0;
        self.max = 0;
        self.sum = 0;
    }

    /// The histogram as text: `sum max i:count i:count …` (non-empty buckets only).
    pub fn sparse(&self) -> String {
        use std::fmt::Write as _;
        let mut o = format!("{} {}", self.sum, self.max);
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                let _ = write!(o, " {i}:{c}");
            }
        }
        o
    }

    /// Reads what [`Histogram::sparse`] wrote.
    pub fn from_sparse(s: &str) -> Result<Histogram, String> {
        let bad = || format!("bad histogram `{s}`");
        let mut h = Histogram::default();
        let mut it = s.split_ascii_whitespace();
        h.sum = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        h.max = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        for pair in it {
            let (i, c) = pair.split_once(':').ok_or_else(bad)?;
            let i: usize = i.parse().map_err(|_| bad())?;
            let c: u64 = c.parse().map_err(|_| bad())?;
            *h.counts.get_mut(i).ok_or_else(bad)? += c;
            h.total += c;
        }
        Ok(h)
    }

    /// The non-empty buckets as (low edge, values recorded), in increasing order.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, &c)| (bucket_low(i), c))
    }

    /// The value at quantile `q` (0..=1): the low edge of its bucket, at most `max`.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_low(i).min(self.max);
            }
        }
        self.max
    }
}

/// What an event is, from its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// `the time is 2024-10-13 14:35:22.123456789 +0000 UTC`: the tick's unix nanoseconds.
    Tick(u64),
    /// `ts=<unix ns>` (what `--publish-rate` sends).
    Ts(u64),
    /// Anything else: a hash of its id and data (no latency, no order check).
    Opaque(u64),
}

impl Key {
    /// Classifies an event by its data (and id, for opaque events).
    pub fn of(data: &[u8], id: &[u8]) -> Key {
        if let Some(rest) = data.strip_prefix(b"ts=")
            && let Some(ns) = parse_decimal(rest)
        {
            return Key::Ts(ns);
        }
        const TICK: &[u8] = b"the time is ";
        if let Some(pos) = data.windows(TICK.len()).position(|w| w == TICK)
            && let Ok(text) = std::str::from_utf8(&data[pos + TICK.len()..])
            && let Some(ns) = parse_go_time(text)
        {
            return Key::Tick(ns);
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        data.hash(&mut h);
        Key::Opaque(h.finish())
    }

    /// The time inside the event, in unix nanoseconds, if it has one.
    pub fn time(self) -> Option<u64> {
        match self {
            Key::Tick(t) | Key::Ts(t) => Some(t),
            Key::Opaque(_) => None,
        }
    }
}

/// The decimal number at the start of `b` (1 to 19 digits, so it fits in a `u64`; unix
/// nanoseconds have 19), eight digits at a time where it can.
pub fn parse_decimal(b: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(chunk);
        let v = u64::from_le_bytes(raw);
        if !all_digits(v) {
            break;
        }
        n = n.checked_mul(100_000_000)?.checked_add(eight_digits(v))?;
        i += 8;
    }
    while let Some(&d) = b.get(i) {
        if !d.is_ascii_digit() {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        i += 1;
    }
    (1..=19).contains(&i).then_some(n)
}

/// True when all eight bytes of `v` are ASCII digits.
fn all_digits(v: u64) -> bool {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    v & HIGH == ZEROS && (v.wrapping_add(0x0606_0606_0606_0606) & HIGH) == ZEROS
}

/// The value of eight ASCII digits packed little-endian (first digit in the lowest byte).
fn eight_digits(v: u64) -> u64 {
    let v = ((v & 0x0F00_0F00_0F00_0F00) >> 8) + (v & 0x000F_000F_000F_000F) * 10;
    let v = ((v & 0x00FF_0000_00FF_0000) >> 16) + (v & 0x0000_00FF_0000_00FF) * 100;
    ((v & 0x0000_FFFF_0000_0000) >> 32) + (v & 0x0000_0000_0000_FFFF) * 10_000
}

/// Parses Go's `time.Time` layout, `2024-10-13 14:35:22.123456789 +0000 UTC` (the zone
/// abbreviation is optional), to unix nanoseconds.
pub fn parse_go_time(s: &str) -> Option<u64> {
    let s = s.trim();
    // Drop a trailing zone abbreviation (`UTC`, `CEST`, …) after the numeric offset.
    let s = match s.rsplit_once(' ') {
        Some((head, tail)) if tail.chars().all(|c| c.is_ascii_alphabetic()) => head,
        _ => s,
    };
    let t = chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f %z").ok()?;
    u64::try_from(t.timestamp_nanos_opt()?).ok()
}

/// A multiplicative hasher for the per-event count table: its keys are small integers the
/// server chose (times, sequence numbers), not attacker-controlled keys worth SipHash's cost.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn write_isize(&mut self, v: isize) {
        self.write_u64(v as u64);
    }
}

/// Builds [`FastHasher`]s.
pub type FastBuild = BuildHasherDefault<FastHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5);
        assert!((495_000..=500_000).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((982_000..=990_000).contains(&p99), "{p99}");
        assert_eq!(h.max(), 1_000_000);
        for v in [0u64, 1, 127, 128, 129, 1 << 40, u64::MAX] {
            let b = bucket(v);
            assert!(bucket_low(b) <= v, "{v}");
            assert!(b < Histogram::default().counts.len());
        }
    }

    #[test]
    fn decimals_eight_at_a_time() {
        for n in [
            0u64,
            7,
            12,
            12_345_678,
            123_456_789,
            1_728_830_122_123_456_789,
            9_999_999_999_999_999_999,
        ] {
            let text = n.to_string();
            assert_eq!(parse_decimal(text.as_bytes()), Some(n), "{n}");
            assert_eq!(
                parse_decimal(format!("{text}:x").as_bytes()),
                Some(n),
                "{n}"
            );
        }
        assert_eq!(parse_decimal(b"12345678/"), Some(12_345_678));
        assert_eq!(parse_decimal(b"1234567:89"), Some(1_234_567));
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"x1"), None);
        assert_eq!(parse_decimal(b"99999999999999999999"), None);
    }

    #[test]
    fn keys() {
        assert_eq!(
            Key::of(b"the time is 2024-10-13 14:35:22.123456789 +0000 UTC", b""),
            Key::Tick(1_728_830_122_123_456_789)
        );
        assert_eq!(Key::of(b"ts=42", b""), Key::Ts(42));
        assert_eq!(Key::of(b"ts=42 and more", b""), Key::Ts(42));
        assert!(matches!(
            Key::of(b"ts=99999999999999999999999", b""),
            Key::Opaque(_)
        ));
        assert!(matches!(Key::of(b"hello", b"1"), Key::Opaque(_)));
        assert_ne!(Key::of(b"hello", b"1"), Key::of(b"hello", b"2"));
    }

    #[test]
    fn histograms_merge_exactly_and_travel_as_text() {
        let (mut a, mut b, mut both) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for v in [5u64, 1_000, 77_777, 3_000_000] {
            a.record(v);
            both.record(v);
        }
        for v in [9u64, 1_000, 123_456_789] {
            b.record(v);
            both.record(v);
        }
        let b = Histogram::from_sparse(&b.sparse()).unwrap();
        let before = a.clone();
        a.record(42);
        let d = a.since(&before);
        assert_eq!((d.count(), d.max(), d.quantile(0.5)), (1, 42, 42));
        let mut a = before;
        a.merge(&b);
        assert_eq!(a.counts, both.counts);
        assert_eq!(
            (a.count(), a.max(), a.mean()),
            (both.count(), both.max(), both.mean())
        );
        assert_eq!(a.quantile(0.99), both.quantile(0.99));
        assert!(Histogram::from_sparse("1 2 99999999:1").is_err());
        assert!(Histogram::from_sparse("x").is_err());
    }
}
