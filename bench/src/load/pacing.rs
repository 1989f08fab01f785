//! The send schedule for `--rate`.
//!
//! Each connection sends at `rate / connections` per second, connections staggered evenly.
//! Latency is measured from each request's *scheduled* time, not from when it was actually
//! sent: when the server stalls, the requests that should have gone out meanwhile are charged
//! the wait. Measuring from the actual send time would hide the stall (coordinated omission).

use std::time::{Duration, Instant};

/// One connection's schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    interval: Duration,
    next: u64,
}

impl Schedule {
    /// The schedule of connection `index` of `connections` sharing `rate` requests per second.
    pub fn new(start: Instant, rate: f64, connections: usize, index: usize) -> Self {
        let per_connection = rate / connections as f64;
        let interval = Duration::from_secs_f64(1.0 / per_connection);
        let offset = interval.mul_f64(index as f64 / connections as f64);
        Self {
            start: start + offset,
            interval,
            next: 0,
        }
    }

    /// The scheduled time of the next request; advances the schedule.
    pub fn next_send(&mut self) -> Instant {
        let at = self.start + self.interval.mul_f64(self.next as f64);
        self.next += 1;
        at
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// Whether the target kept up with the requested rate.
///
/// The run fell behind when it sent less than 95 % of what the schedule asked for in the
/// measured window.
pub fn fell_behind(requested_rate: f64, sent: u64, window: Duration) -> bool {
    let asked = requested_rate * window.as_secs_f64();
    (sent as f64) < asked * 0.95
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_sends_at_its_share_of_the_rate() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 1000.0, 10, 0);
        assert_eq!(s.interval(), Duration::from_millis(10));
        assert_eq!(s.next_send(), t0);
        assert_eq!(s.next_send(), t0 + Duration::from_millis(10));
        for _ in 0..98 {
            s.next_send();
        }
        assert_eq!(s.next_send(), t0 + Duration::from_secs(1), "100 per second");
    }

    #[test]
    fn connections_are_staggered_across_one_interval() {
        let t0 = Instant::now();
        let firsts: Vec<_> = (0..4)
            .map(|i| Schedule::new(t0, 400.0, 4, i).next_send() - t0)
            .collect();
        assert_eq!(
            firsts,
            [0, 2_500, 5_000, 7_500].map(Duration::from_micros),
            "4 connections at 100/s each start 2.5 ms apart"
        );
    }

    #[test]
    fn falling_behind_is_judged_against_the_schedule() {
        let second = Duration::from_secs(1);
        assert!(!fell_behind(1000.0, 1000, second));
        assert!(!fell_behind(1000.0, 951, second));
        assert!(fell_behind(1000.0, 900, second));
    }
}
