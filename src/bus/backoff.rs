//! Jittered exponential backoff for reconnects, and the small random source behind it and
//! behind new epochs (no crate needed: std's hasher keys are random per process).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A splitmix64 generator seeded from the process's random hasher keys, the time and a
/// counter: different in every process and every call site, good enough for jitter and
/// for epoch names (which only need to differ from the previous epoch).
pub struct Random(u64);

impl Random {
    pub fn new() -> Random {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        Random(hasher.finish())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Default for Random {
    fn default() -> Self {
        Random::new()
    }
}

/// Delays between reconnect attempts: the n-th failure waits a random time in
/// `[d/2, d]` with `d = min(min · 2ⁿ, max)` ("equal jitter"), so a crowd of nodes that lost
/// Redis together does not come back in lockstep, and no attempt waits less than half the
/// nominal delay. [`Backoff::reset`] after a success.
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The delay before the next attempt, given a random value.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let nominal = self
            .min
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = nominal / 2;
        let span = (nominal - half).as_nanos() as u64;
        half + Duration::from_nanos(if span == 0 { 0 } else { random % (span + 1) })
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Sleeps until `until`, waking every 50 ms to return early once `stop` is set: how a helper
/// thread waits out a backoff delay without delaying shutdown.
pub fn sleep_until(until: std::time::Instant, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_cap() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(1000));
        let mut random = Random::new();
        for nominal in [100, 200, 400, 800, 1000, 1000, 1000] {
            let delay = backoff.next_delay(random.next_u64());
            assert!(
                delay >= ms(nominal / 2) && delay <= ms(nominal),
                "{delay:?}"
            );
        }
        backoff.reset();
        let delay = backoff.next_delay(u64::MAX);
        assert!(delay >= ms(50) && delay <= ms(100));
    }

    #[test]
    fn extremes_of_the_random_value_span_the_window() {
        let ms = Duration::from_millis;
        assert_eq!(Backoff::new(ms(100), ms(100)).next_delay(0), ms(50));
        let span = ms(50).as_nanos() as u64;
        assert_eq!(Backoff::new(ms(100), ms(100)).next_delay(span), ms(100));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(backoff.next_delay(7) <= Duration::from_secs(30));
        }
    }

    #[test]
    fn random_values_differ() {
        let mut a = Random::new();
        let mut b = Random::new();
        assert_ne!(a.next_u64(), b.next_u64());
    }
}
