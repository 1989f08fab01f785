//! A gate for log lines that could otherwise flood: one line per interval, with the count of
//! what was suppressed in between.

use std::time::{Duration, Instant};

/// Lets one event through per `interval`; counts the others.
#[derive(Debug)]
pub struct LogGate {
    /// At most one log line per this long.
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogGate {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed_since_last_line)` when this event should be logged, `None` otherwise.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_suppressed_count() {
        let mut gate = LogGate::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(gate.check(t0), Some(0));
        assert_eq!(gate.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(gate.check(t0 + Duration::from_secs(9)), None);
        assert_eq!(gate.check(t0 + Duration::from_secs(10)), Some(2));
    }
}
