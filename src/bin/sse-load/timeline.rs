//! The run over time, sampled twice a second by the coordinator (for the HTML report).

/// One point of the timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    /// Streams open.
    pub streaming: u64,
    /// Events received per second since the previous sample (all clients).
    pub per_second: f64,
    /// Latency of the events received since the previous sample.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The samples of one run, in time order.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    pub samples: Vec<Sample>,
}
