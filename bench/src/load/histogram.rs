//! Latency recording: an HDR histogram in microseconds (3 significant digits, up to 60 s).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency recorded; longer ones are clamped to it.
const MAX_MICROS: u64 = 60_000_000;

/// One connection's (or, merged, the run's) latencies.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"))
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        self.0.record(micros).expect("clamped into bounds");
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.0.add(&other.0).expect("same bounds");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn percentiles(&self) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=10_000 µs, one each: pN is N% of 10 ms.
        let mut lat = Latencies::default();
        for us in 1..=10_000u64 {
            lat.record(Duration::from_micros(us));
        }
        let p = lat.percentiles();
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 0.001;
        assert!(close(p.p50_ms, 5.0), "{p:?}");
        assert!(close(p.p90_ms, 9.0), "{p:?}");
        assert!(close(p.p99_ms, 9.9), "{p:?}");
        assert!(close(p.p999_ms, 9.99), "{p:?}");
        assert!(close(p.max_ms, 10.0), "{p:?}");
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_tail() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        for _ in 0..99 {
            a.record(Duration::from_micros(100));
        }
        b.record(Duration::from_millis(50));
        a.merge(&b);
        assert_eq!(a.count(), 100);
        let p = a.percentiles();
        assert!((p.p50_ms - 0.1).abs() < 0.001, "{p:?}");
        assert!((p.max_ms - 50.0).abs() < 0.05, "{p:?}");
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut lat = Latencies::default();
        lat.record(Duration::ZERO);
        lat.record(Duration::from_secs(3600));
        assert_eq!(lat.count(), 2);
        assert!(lat.percentiles().max_ms >= 59_000.0);
    }
}
