//! The model of the connect-rate bound (`--max-stream-rate`): an independent restatement of
//! the core's token bucket, checked against every admission and refusal as it happens, so a
//! bucket loosened (a stream admitted the model has no token for) or tightened (a stream
//! refused while the model holds one) fails the run.
//!
//! The core keeps a level of tokens; the model is the other classic form of the same bucket,
//! the generic cell rate algorithm (GCRA): a theoretical arrival time `tat` that each
//! admission moves one emission interval on; a request at `t` is admitted while `tat` is at
//! most `t` plus the burst tolerance. Time is scaled by the rate (nanoseconds × rate), so the
//! emission interval is exactly 10⁹ and nothing is rounded.

use super::*;
use crate::core::StreamRefusal;

/// The emission interval in scaled units (one second of time at one token a second).
const INTERVAL: u128 = 1_000_000_000;

/// GCRA for `rate` new streams a second with a burst of `rate`.
#[derive(Debug, Clone)]
pub(super) struct RateModel {
    rate: u128,
    /// The theoretical arrival time of the next admission, in scaled units since the start.
    tat: u128,
}

impl RateModel {
    pub(super) fn new(rate: u32) -> Option<RateModel> {
        (rate > 0).then(|| RateModel {
            rate: u128::from(rate),
            tat: 0,
        })
    }

    fn scaled(&self, elapsed: Duration) -> u128 {
        elapsed.as_nanos() * self.rate
    }

    /// How many requests at `elapsed` the bucket admits, one after the other.
    fn available(&self, elapsed: Duration) -> u128 {
        let t = self.scaled(elapsed);
        let limit = t + (self.rate - 1) * INTERVAL;
        let from = self.tat.max(t);
        if from > limit {
            0
        } else {
            (limit - from) / INTERVAL + 1
        }
    }

    /// `n` requests at `elapsed` were admitted.
    fn admit(&mut self, elapsed: Duration, n: u128) {
        if n > 0 {
            self.tat = self.tat.max(self.scaled(elapsed)) + n * INTERVAL;
        }
    }
}

impl Sim {
    /// After a call into the core: the stream requests that reached the connect-rate bound
    /// since the last look (the core's `stream_requests` and `rate` refusals) must be the
    /// pending stream request of the client the call was about, admitted exactly as far as
    /// the model's bucket allows. A refused one is told to come back (`maybe_over_limit`).
    pub(super) fn check_admissions(&mut self, by: Option<ClientId>) -> Result<(), String> {
        let m = self.core.metrics();
        let (requests, refused) = (m.stream_requests, m.streams_refused(StreamRefusal::Rate));
        ensure!(
            requests >= self.seen_stream_requests && refused >= self.seen_rate_refused,
            "the stream admission counters went back"
        );
        let new = u128::from(requests - self.seen_stream_requests);
        let no = u128::from(refused - self.seen_rate_refused);
        self.seen_stream_requests = requests;
        self.seen_rate_refused = refused;
        ensure!(
            no <= new,
            "{no} stream requests refused for the rate, but {new} reached the bound"
        );
        if new == 0 {
            return Ok(());
        }
        let ci = by.and_then(|id| {
            self.slot_conn(id)
                .or_else(|| self.conns.iter().position(|c| c.id == id))
        });
        let Some(ci) = ci.filter(|&ci| self.conns[ci].want_stream.is_some()) else {
            return Err(format!(
                "{new} stream requests reached the connect-rate bound in a call about {by:?}, \
                 which has no stream request pending"
            ));
        };
        ensure!(
            new == 1,
            "connection {ci}: {new} stream requests reached the bound in one call"
        );
        let admitted = new - no;
        let elapsed = self.elapsed;
        match &mut self.rate_model {
            None => ensure!(
                no == 0,
                "connection {ci}: refused for the rate with no bound"
            ),
            Some(model) => {
                let available = model.available(elapsed);
                ensure!(
                    admitted <= available,
                    "connection {ci}: a stream admitted at {elapsed:?} with no token left in \
                     the model's bucket (the bound is looser than --max-stream-rate {})",
                    model.rate
                );
                ensure!(
                    no == 0 || admitted == available,
                    "connection {ci}: a stream refused for the rate at {elapsed:?} with \
                     {available} tokens in the model's bucket (the bound is tighter than \
                     --max-stream-rate {})",
                    model.rate
                );
                model.admit(elapsed, admitted);
            }
        }
        if no > 0 {
            self.conns[ci].maybe_over_limit = true;
            self.coverage.reach(Reach::StreamRateRefused);
        }
        Ok(())
    }
}
