//! The tick's time string, in the layout of Go's `time.Time` (as the prototype printed it):
//! `2024-10-13 14:35:22.123456789 +0000 UTC`, always UTC, always nine fractional digits.

use chrono::{DateTime, Utc};

/// Formats `t` in the Go layout `2006-01-02 15:04:05.000000000 -0700 MST` for UTC.
pub fn go_utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.9f +0000 UTC").to_string()
}

/// The data of a tick event.
pub fn tick_text(t: DateTime<Utc>) -> String {
    format!("the time is {}", go_utc(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn go_layout() {
        let t = Utc.with_ymd_and_hms(2024, 10, 13, 14, 35, 22).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        assert_eq!(
            tick_text(t),
            "the time is 2024-10-13 14:35:22.123456789 +0000 UTC"
        );
    }

    #[test]
    fn nine_digits_even_when_zero() {
        let t = Utc.with_ymd_and_hms(2001, 2, 3, 4, 5, 6).unwrap();
        assert_eq!(go_utc(t), "2001-02-03 04:05:06.000000000 +0000 UTC");
        let t = t + chrono::Duration::nanoseconds(1_000);
        assert_eq!(go_utc(t), "2001-02-03 04:05:06.000001000 +0000 UTC");
    }
}
