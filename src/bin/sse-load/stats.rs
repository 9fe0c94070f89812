//! What the run measured: a latency histogram, the identity of each event, and the report
//! (a human table, or one JSON line).

use std::fmt::Write as _;

/// Sub-buckets per power of two: the relative error of a reported percentile is below
/// 1/128 (0.8%).
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

/// A log-linear histogram of nanosecond values: constant memory (~60 KiB) however many
/// (client, event) pairs are recorded.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
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
    pub fn of(data: &str, id: &str) -> Key {
        if let Some(rest) = data.strip_prefix("ts=") {
            let digits = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or("");
            if let Ok(ns) = digits.parse() {
                return Key::Ts(ns);
            }
        }
        if let Some(pos) = data.find("the time is ")
            && let Some(ns) = parse_go_time(&data[pos + "the time is ".len()..])
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

/// The run's outcome, as reported.
#[derive(Debug, Default)]
pub struct Report {
    pub url: String,
    pub clients: usize,
    pub source_ips: u8,
    pub connected: usize,
    pub connect_failed: usize,
    pub rejected: usize,
    pub first_error: Option<String>,
    pub connect_seconds: f64,
    pub window_seconds: f64,
    /// Distinct events in the measured window (ticks, published, other).
    pub events: u64,
    pub ticks: u64,
    pub published_events: u64,
    pub expected: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub disconnected: usize,
    pub per_client_min: u64,
    pub per_client_max: u64,
    pub latency_samples: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub mean_ns: u64,
    pub deliveries_per_second: f64,
    pub publish_rate_asked: Option<f64>,
    pub published_sent: u64,
    pub published_acked: u64,
    pub published_failed: u64,
    pub publish_rate_achieved: f64,
}

impl Report {
    /// Every streaming client got every event of the window, once, in order, and nobody
    /// was lost along the way.
    pub fn all_delivered(&self) -> bool {
        self.connected == self.clients
            && self.expected > 0
            && self.delivered == self.expected
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.disconnected == 0
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let ms = |ns: u64| ns as f64 / 1e6;
        let mut o = String::new();
        let _ = writeln!(o, "sse-load report: {}", self.url);
        let _ = writeln!(
            o,
            "  clients          {} connected of {} in {:.3} s ({} failed to connect, {} refused by status; {} source IPs)",
            self.connected,
            self.clients,
            self.connect_seconds,
            self.connect_failed,
            self.rejected,
            self.source_ips
        );
        if let Some(e) = &self.first_error {
            let _ = writeln!(o, "  first error      {e}");
        }
        let _ = writeln!(
            o,
            "  window           {:.3} s, {} events ({} ticks, {} published)",
            self.window_seconds, self.events, self.ticks, self.published_events
        );
        let pct = if self.expected == 0 {
            0.0
        } else {
            100.0 * self.delivered as f64 / self.expected as f64
        };
        let _ = writeln!(
            o,
            "  delivered        {} of {} ({pct:.3}%): {} missing, {} duplicate, {} out of order, {} disconnected",
            self.delivered,
            self.expected,
            self.expected.saturating_sub(self.delivered),
            self.duplicates,
            self.out_of_order,
            self.disconnected
        );
        let _ = writeln!(
            o,
            "  per client       {} to {} events",
            self.per_client_min, self.per_client_max
        );
        let _ = writeln!(
            o,
            "  latency          p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  mean {:.3} ms  ({} samples)",
            ms(self.p50_ns),
            ms(self.p99_ns),
            ms(self.max_ns),
            ms(self.mean_ns),
            self.latency_samples
        );
        let _ = writeln!(o, "  deliveries/s     {:.0}", self.deliveries_per_second);
        if let Some(rate) = self.publish_rate_asked {
            let _ = writeln!(
                o,
                "  publish          asked {rate}/s, achieved {:.1}/s: {} sent, {} acknowledged, {} failed",
                self.publish_rate_achieved,
                self.published_sent,
                self.published_acked,
                self.published_failed
            );
        }
        let _ = writeln!(
            o,
            "  result           {}",
            if self.all_delivered() {
                "ALL DELIVERED"
            } else {
                "INCOMPLETE"
            }
        );
        o
    }

    /// One line of JSON with every number.
    pub fn json(&self) -> String {
        let mut o = String::from("{");
        let mut num = |k: &str, v: String| {
            if o.len() > 1 {
                o.push(',');
            }
            let _ = write!(o, "\"{k}\":{v}");
        };
        num("url", json_str(&self.url));
        num("clients", self.clients.to_string());
        num("source_ips", self.source_ips.to_string());
        num("connected", self.connected.to_string());
        num("connect_failed", self.connect_failed.to_string());
        num("rejected", self.rejected.to_string());
        num(
            "first_error",
            self.first_error.as_deref().map_or("null".into(), json_str),
        );
        num("connect_seconds", format!("{:.6}", self.connect_seconds));
        num("window_seconds", format!("{:.6}", self.window_seconds));
        num("events", self.events.to_string());
        num("ticks", self.ticks.to_string());
        num("published_events", self.published_events.to_string());
        num("expected", self.expected.to_string());
        num("delivered", self.delivered.to_string());
        num(
            "missing",
            self.expected.saturating_sub(self.delivered).to_string(),
        );
        num("duplicates", self.duplicates.to_string());
        num("out_of_order", self.out_of_order.to_string());
        num("disconnected", self.disconnected.to_string());
        num("per_client_min", self.per_client_min.to_string());
        num("per_client_max", self.per_client_max.to_string());
        num("latency_samples", self.latency_samples.to_string());
        num("p50_ms", format!("{:.6}", self.p50_ns as f64 / 1e6));
        num("p99_ms", format!("{:.6}", self.p99_ns as f64 / 1e6));
        num("max_ms", format!("{:.6}", self.max_ns as f64 / 1e6));
        num("mean_ms", format!("{:.6}", self.mean_ns as f64 / 1e6));
        num(
            "deliveries_per_second",
            format!("{:.1}", self.deliveries_per_second),
        );
        num(
            "publish_rate_asked",
            self.publish_rate_asked
                .map_or("null".into(), |r| format!("{r}")),
        );
        num(
            "publish_rate_achieved",
            format!("{:.1}", self.publish_rate_achieved),
        );
        num("published_sent", self.published_sent.to_string());
        num("published_acked", self.published_acked.to_string());
        num("published_failed", self.published_failed.to_string());
        num("all_delivered", self.all_delivered().to_string());
        o.push('}');
        o
    }
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    sse_server::json::push_json_string(&mut o, s);
    o
}

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
    fn keys() {
        assert_eq!(
            Key::of("the time is 2024-10-13 14:35:22.123456789 +0000 UTC", ""),
            Key::Tick(1_728_830_122_123_456_789)
        );
        assert_eq!(Key::of("ts=42", ""), Key::Ts(42));
        assert!(matches!(Key::of("hello", "1"), Key::Opaque(_)));
        assert_ne!(Key::of("hello", "1"), Key::of("hello", "2"));
    }

    #[test]
    fn json_is_one_line() {
        let r = Report {
            url: "http://x/\"q\"".into(),
            ..Report::default()
        };
        let j = r.json();
        assert!(!j.contains('\n'));
        assert!(j.contains("\"all_delivered\":false"));
        assert!(j.contains("\\\"q\\\""));
    }
}
