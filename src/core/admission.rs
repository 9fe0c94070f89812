//! The connect-rate bound (`--max-stream-rate N`): a token bucket of new event streams per
//! second, fed by the core's clock (no I/O, no real time), and the refusal of a stream request
//! past it, after the request's form is known valid and before any token or resume work.
//!
//! The bucket holds at most `N` tokens (a burst of `N` streams at once) and gains `N` a
//! second, continuously; a stream request takes one or is refused. Arithmetic is in integer
//! units of 1/10⁹ token (a nanosecond of time at a rate of one a second), so refills are
//! exact: after `d` of time the bucket has gained exactly `d × N` tokens (within the cap),
//! whatever the pattern of requests, and no rounding accumulates.
//!
//! A refusal goes through the same answer as a stream request over `--max-clients`
//! ([`super::stream::over_limit`]): an EventSource (`Accept: text/event-stream`, which never
//! retries a non-200 answer) gets `200`, a jittered `retry:` and a close; anything else gets
//! `503` with a jittered `Retry-After`. Both are counted in `sse_streams_refused_total`.
use std::time::{Duration, Instant};

use super::Core;
use super::client::ClientId;
use super::metrics::StreamRefusal;
use super::stream::over_limit;
use crate::http::request::RequestHead;

/// Units of one token (one nanosecond of refill at one token a second).
const UNIT: u128 = 1_000_000_000;

/// A token bucket of new streams: at most `rate` tokens, `rate` more a second. `rate` 0: off
/// (every request is admitted and nothing is kept).
#[derive(Debug, Clone)]
pub(super) struct StreamBucket {
    /// Tokens a second, and the most the bucket holds.
    rate: u32,
    /// Tokens held at `at`, in [`UNIT`]s; never above `rate × UNIT`.
    level: u128,
    /// When `level` was last brought up to date (`None`: never used, the bucket is full).
    at: Option<Instant>,
}

impl StreamBucket {
    /// A full bucket of `rate` tokens a second (0: off).
    pub(super) fn new(rate: u32) -> StreamBucket {
        StreamBucket {
            rate,
            level: u128::from(rate) * UNIT,
            at: None,
        }
    }

    /// Takes one token at `now` if the bucket has one (then `true`); `false`: refused, the
    /// bucket unchanged but for its refill. Always `true` when off. A `now` earlier than the
    /// last one refills nothing.
    pub(super) fn try_take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let cap = u128::from(self.rate) * UNIT;
        match self.at {
            // Never moved back: time a clock went back is not counted twice.
            Some(at) if now <= at => {}
            Some(at) => {
                // Past one second the bucket is full whatever the rate: cap, then multiply.
                let elapsed = now.duration_since(at).min(Duration::from_secs(1));
                self.level = (self.level + elapsed.as_nanos() * u128::from(self.rate)).min(cap);
                self.at = Some(now);
            }
            None => self.at = Some(now),
        }
        if self.level >= UNIT {
            self.level -= UNIT;
            true
        } else {
            false
        }
    }
}

impl Core {
    /// Admits a new stream request under `--max-stream-rate` at `now`, or refuses it (the
    /// over-limit answer, counted as `rate`) and returns `false`. Counts every request that
    /// reaches the bound, admitted or not (`sse_stream_requests_total`).
    pub(super) fn admit_stream(&mut self, id: ClientId, head: &RequestHead, now: Instant) -> bool {
        self.metrics.stream_requests += 1;
        if self.admission.try_take(now) {
            return true;
        }
        over_limit(self, id, head, StreamRefusal::Rate, now);
        false
    }
}
