//! The two latency histograms of the heartbeat pipeline, observed by the workers and exposed
//! by `GET /metrics`. Prometheus histograms are lock-free atomics, so observing costs a few
//! nanoseconds per heartbeat.

use std::sync::Arc;

use prometheus::{Histogram, HistogramOpts, Registry};

/// Buckets from 10 µs to 10 s: a manager update takes microseconds, a queue wait under load
/// milliseconds, and a stalled disk seconds.
const BUCKETS: [f64; 13] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 10.0,
];

/// The pipeline's latency histograms.
pub struct PipelineMetrics {
    /// Time a heartbeat spent in the manager update (`heartbeatd_processing_duration_seconds`).
    pub processing: Histogram,
    /// Time from acceptance to a worker taking it (`heartbeatd_queue_wait_seconds`).
    pub queue_wait: Histogram,
}

impl PipelineMetrics {
    pub fn new() -> Arc<Self> {
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec())).expect("valid histogram")
        };
        Arc::new(Self {
            processing: histogram(
                "heartbeatd_processing_duration_seconds",
                "Time a heartbeat spent in the manager update.",
            ),
            queue_wait: histogram(
                "heartbeatd_queue_wait_seconds",
                "Time from a heartbeat's acceptance to a worker taking it.",
            ),
        })
    }

    /// Adds both histograms to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.processing.clone()))?;
        registry.register(Box::new(self.queue_wait.clone()))
    }
}
