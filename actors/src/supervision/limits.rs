//! Resource limits: how much of the host an agent's tree uses, and whether it stayed over
//! `max_cpu_percent` or `max_memory_bytes` for `limit_for_s`. The actor samples the tree once
//! a second ([`sample_tree`]); [`LimitWatch`] decides, as a plain value with an explicit clock.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::procfs::{self, ProcessTable};
use crate::model::process::{ExitReason, ProcessSpec};

/// Resource use is read at most this often per agent.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// What one sample of a tree found.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// CPU ticks used by the tree's live processes so far.
    pub cpu_ticks: u64,
    /// Resident memory of the tree, in bytes.
    pub memory_bytes: u64,
    /// Processes in the tree.
    pub processes: usize,
}

/// One tree's use over time: CPU as a rate between samples, and how long a limit has held.
#[derive(Debug, Default)]
pub struct LimitWatch {
    /// The CPU ticks at the last sample, and when.
    last_cpu: Option<(u64, Instant)>,
    over_cpu_since: Option<Instant>,
    over_memory_since: Option<Instant>,
    /// The CPU percent of one core over the last interval (`None` before two samples).
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
}

impl LimitWatch {
    /// Takes a sample at `now`; the reason to restart the tree, if a limit held for
    /// `limit_for`.
    pub fn sample(&mut self, usage: Usage, now: Instant, spec: &ProcessSpec) -> Option<ExitReason> {
        let cpu_percent = self.last_cpu.map(|(before, at)| {
            let seconds = now.saturating_duration_since(at).as_secs_f64().max(0.001);
            usage.cpu_ticks.saturating_sub(before) as f64 / procfs::clock_ticks_per_second() as f64 / seconds * 100.0
        });
        self.last_cpu = Some((usage.cpu_ticks, now));
        self.cpu_percent = cpu_percent;
        self.memory_bytes = Some(usage.memory_bytes);
        let held = |since: &mut Option<Instant>, is_over: bool| -> bool {
            if !is_over {
                *since = None;
                return false;
            }
            now.saturating_duration_since(*since.get_or_insert(now)) >= spec.limit_for
        };
        let cpu_over = held(
            &mut self.over_cpu_since,
            matches!((spec.max_cpu_percent, cpu_percent), (Some(max), Some(used)) if used > f64::from(max)),
        );
        let memory_over = held(
            &mut self.over_memory_since,
            spec.max_memory_bytes.is_some_and(|max| usage.memory_bytes > max),
        );
        if memory_over {
            Some(ExitReason::OverMemory)
        } else if cpu_over {
            Some(ExitReason::OverCpu)
        } else {
            None
        }
    }
}

thread_local! {
    /// The last `/proc` scan on this thread and when it was made: every agent's sample within
    /// the same second shares it.
    static LAST_SCAN: RefCell<Option<(Instant, Rc<ProcessTable>)>> = const { RefCell::new(None) };
}

fn shared_scan() -> Rc<ProcessTable> {
    LAST_SCAN.with(|cell| {
        let mut cached = cell.borrow_mut();
        if let Some((at, table)) = cached.as_ref() {
            if at.elapsed() < SAMPLE_INTERVAL / 2 {
                return Rc::clone(table);
            }
        }
        let table = Rc::new(ProcessTable::scan());
        *cached = Some((Instant::now(), Rc::clone(&table)));
        table
    })
}

/// The use of the tree under `keeper` (one `/proc` scan shared by every agent on this
/// thread, at most once per [`SAMPLE_INTERVAL`] / 2).
pub fn sample_tree(keeper: i32) -> Usage {
    let tree = shared_scan().descendants(keeper);
    Usage {
        cpu_ticks: tree.iter().map(|p| p.cpu_ticks).sum(),
        memory_bytes: tree.iter().map(|p| p.rss_pages).sum::<u64>() * procfs::page_size(),
        processes: tree.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::agent::AgentInfo;

    fn spec(cpu: Option<u32>, memory: Option<u64>) -> ProcessSpec {
        AgentInfo {
            id: "a".into(),
            command: Some(vec!["x".into()]),
            max_cpu_percent: cpu,
            max_memory_bytes: memory,
            limit_for_s: Some(3),
            ..Default::default()
        }
        .process_spec()
        .unwrap()
    }

    #[test]
    fn a_limit_must_hold_for_limit_for_s_and_a_dip_starts_the_count_again() {
        let spec = spec(None, Some(100 << 20));
        let mut watch = LimitWatch::default();
        let t0 = Instant::now();
        let over = Usage {
            memory_bytes: 200 << 20,
            ..Default::default()
        };
        let under = Usage {
            memory_bytes: 10 << 20,
            ..Default::default()
        };
        let s = Duration::from_secs(1);
        assert_eq!(watch.sample(over, t0, &spec), None);
        assert_eq!(watch.sample(over, t0 + 2 * s, &spec), None);
        assert_eq!(watch.sample(under, t0 + 3 * s, &spec), None, "a dip resets it");
        assert_eq!(watch.sample(over, t0 + 4 * s, &spec), None);
        assert_eq!(watch.sample(over, t0 + 7 * s, &spec), Some(ExitReason::OverMemory));
        assert_eq!(watch.memory_bytes, Some(200 << 20));
    }

    #[test]
    fn cpu_is_a_rate_between_samples() {
        let spec = spec(Some(50), None);
        let mut watch = LimitWatch::default();
        let t0 = Instant::now();
        let hz = procfs::clock_ticks_per_second();
        let s = Duration::from_secs(1);
        // A full core: hz ticks a second.
        for n in 0..5u64 {
            let reason = watch.sample(
                Usage {
                    cpu_ticks: n * hz,
                    ..Default::default()
                },
                t0 + n as u32 * s,
                &spec,
            );
            if n < 4 {
                assert_eq!(reason, None, "sample {n}");
            } else {
                assert_eq!(reason, Some(ExitReason::OverCpu));
            }
        }
        assert!((watch.cpu_percent.unwrap() - 100.0).abs() < 1.0);
    }
}
