//! The restart rules as plain functions, so they can be tested without processes or time:
//! the backoff before a restart, and the restart intensity that ends in `fatal` (as Erlang/OTP
//! supervisors bound it).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The wait before restart number `level` (0 for the first since the agent was last
/// healthy): `floor × 2^level`, capped at `ceiling`, plus up to a quarter more of jitter (so
/// agents that failed together do not restart together), never past `ceiling`.
/// `jitter` is in `[0, 1)`.
pub fn backoff(floor: Duration, ceiling: Duration, level: u32, jitter: f64) -> Duration {
    let doubled = floor.saturating_mul(1u32.checked_shl(level.min(31)).unwrap_or(u32::MAX));
    let base = doubled.min(ceiling);
    let extra = base.mul_f64(jitter.clamp(0.0, 1.0) / 4.0);
    (base + extra).min(ceiling.max(floor))
}

/// A number in `[0, 1)` for the jitter, from the random bits of a v4 UUID.
pub fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() as u64 >> 11) as f64 / (1u64 << 53) as f64
}

/// The automatic restarts within the last `window`.
#[derive(Debug, Default)]
pub struct Intensity {
    recent: VecDeque<Instant>,
}

impl Intensity {
    /// Counts a restart at `now`; true if that makes more than `max` within `window`
    /// (the agent is then `fatal`).
    pub fn too_many(&mut self, now: Instant, window: Duration, max: u32) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        // Bounded: never more than max + 1 entries are needed to decide.
        while self.recent.len() > max as usize + 1 {
            self.recent.pop_front();
        }
        self.recent.len() > max as usize
    }

    pub fn reset(&mut self) {
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_from_the_floor_up_to_the_ceiling_with_bounded_jitter() {
        let waits: Vec<_> = (0..8).map(|level| backoff(S, 60 * S, level, 0.0)).collect();
        assert_eq!(waits[..4], [S, 2 * S, 4 * S, 8 * S]);
        assert_eq!(backoff(S, 60 * S, 7, 0.0), 60 * S);
        assert_eq!(backoff(S, 60 * S, 1, 0.999).as_millis(), 2499);
        assert_eq!(backoff(S, 60 * S, 40, 0.999), 60 * S, "never past the ceiling");
        assert_eq!(backoff(Duration::ZERO, 60 * S, 5, 0.5), Duration::ZERO);
        assert_eq!(
            backoff(
                Duration::from_millis(3_600_000),
                Duration::from_millis(3_600_000),
                u32::MAX,
                0.9
            )
            .as_secs(),
            3600
        );
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn more_than_max_restarts_within_the_window_is_too_many() {
        let mut intensity = Intensity::default();
        let start = Instant::now();
        for n in 0..5 {
            assert!(!intensity.too_many(start + n * S, 60 * S, 5));
        }
        assert!(intensity.too_many(start + 5 * S, 60 * S, 5), "the sixth within 60 s");
        let mut spread = Intensity::default();
        for n in 0..20 {
            assert!(
                !spread.too_many(start + n * 20 * S, 60 * S, 5),
                "one every 20 s is fine"
            );
        }
        assert!(
            Intensity::default().too_many(start, 60 * S, 0),
            "max_restarts = 0: the first is fatal"
        );
    }
}
