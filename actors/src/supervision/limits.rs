//! Resource limits: how much of the host an agent's tree uses, and whether it stayed over
//! `max_cpu_percent` or `max_memory_bytes` for `limit_for_s`. The actor samples the tree once
//! a second ([`sample_tree`]); [`LimitWatch`] decides, as a plain value with an explicit clock.
//! (`max_processes` is the keeper's to enforce: a fork bomb cannot wait a second.)
//!
//! How use is counted, so that a limit means what the operator meant:
//! - memory: the proportional set size (PSS) summed over the tree. A page shared by n
//!   processes counts 1/n in each, so a prefork server's shared pages count once, as the
//!   kernel's own accounting (a cgroup's, systemd's `MemoryMax`) counts them; resident sizes
//!   (RSS) added up would count them once per process. Where `smaps_rollup` cannot be read,
//!   a process counts with its RSS.
//! - CPU: everything the tree has used since it started, as a rate between samples: the live
//!   processes' own time, the time of the children each of them has waited for (`cutime`,
//!   `cstime`: a shell's short-lived commands), and the time of every process the keeper
//!   reaped itself ([`KeeperLine::ReapedCpu`](super::keeper::KeeperLine)). Without the last
//!   two, a tree kept busy by short-lived children looked idle.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::procfs::{self, ProcStat, ProcessTable};
use crate::model::process::{ExitReason, ProcessSpec};

/// Resource use is read at most this often per agent.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// What one sample of a tree found.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// CPU ticks used so far by the tree's live processes and the children they waited for.
    pub cpu_ticks: u64,
    /// CPU ticks used by the tree's processes its keeper reaped (as its keeper last said).
    pub reaped_cpu_ticks: u64,
    /// Memory of the tree in bytes: PSS summed over it (RSS where PSS cannot be read).
    pub memory_bytes: u64,
    /// Processes in the tree.
    pub processes: usize,
}

impl Usage {
    /// Every CPU tick the tree has used since it started.
    pub fn total_cpu_ticks(&self) -> u64 {
        self.cpu_ticks.saturating_add(self.reaped_cpu_ticks)
    }
}

/// One tree's use over time: CPU as a rate between samples, and how long a limit has held.
#[derive(Debug, Default)]
pub struct LimitWatch {
    /// The most CPU ticks seen so far, and when the last sample was. The most, not the
    /// last: a process reaped by the keeper leaves `/proc` before the keeper's next report
    /// counts it, so the total can dip for a sample; the ticks it dipped by are counted when
    /// the report comes, not twice.
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
        let total = usage.total_cpu_ticks();
        let cpu_percent = self.last_cpu.map(|(before, at)| {
            let seconds = now.saturating_duration_since(at).as_secs_f64().max(0.001);
            total.saturating_sub(before) as f64 / procfs::clock_ticks_per_second() as f64 / seconds * 100.0
        });
        let most = self.last_cpu.map_or(total, |(before, _)| before.max(total));
        self.last_cpu = Some((most, now));
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

/// The use of the tree under `keeper`, with `reaped_cpu_ticks` as its keeper last reported
/// (one `/proc` scan shared by every agent on this thread, at most once per
/// [`SAMPLE_INTERVAL`] / 2).
///
/// Costly for big processes: the kernel walks each one's whole address space to write its
/// `smaps_rollup`. Sample only trees that have a limit, at most once per [`SAMPLE_INTERVAL`].
pub fn sample_tree(keeper: i32, reaped_cpu_ticks: u64) -> Usage {
    usage_of(&shared_scan().descendants(keeper), reaped_cpu_ticks)
}

/// The use of `tree` (a keeper's descendants), with `reaped_cpu_ticks` as its keeper last
/// reported. Reads each process's `smaps_rollup`: see [`sample_tree`] on the cost.
pub fn usage_of(tree: &[ProcStat], reaped_cpu_ticks: u64) -> Usage {
    let page = procfs::page_size();
    Usage {
        cpu_ticks: tree
            .iter()
            .map(|p| p.cpu_ticks.saturating_add(p.children_cpu_ticks))
            .sum(),
        reaped_cpu_ticks,
        memory_bytes: tree
            .iter()
            .map(|p| procfs::read_pss(p.pid).unwrap_or(p.rss_pages.saturating_mul(page)))
            .sum(),
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

    #[test]
    fn cpu_of_reaped_processes_counts_with_the_live_ones() {
        // Short-lived children: the live tree shows almost nothing at each sample, the
        // keeper's reports carry a core's worth a second.
        let spec = spec(Some(50), None);
        let mut watch = LimitWatch::default();
        let t0 = Instant::now();
        let hz = procfs::clock_ticks_per_second();
        let s = Duration::from_secs(1);
        let mut reasons = Vec::new();
        for n in 0..5u64 {
            let usage = Usage {
                cpu_ticks: n % 2, // a child alive at this instant, or none
                reaped_cpu_ticks: n * hz,
                ..Default::default()
            };
            reasons.push(watch.sample(usage, t0 + n as u32 * s, &spec));
        }
        assert_eq!(reasons[..4], [None, None, None, None]);
        assert_eq!(reasons[4], Some(ExitReason::OverCpu));
        assert!(watch.cpu_percent.unwrap() > 90.0, "{:?}", watch.cpu_percent);
    }

    #[test]
    fn a_dip_before_the_keeper_reports_a_reaped_process_is_not_counted_twice() {
        let spec = spec(Some(50), None);
        let mut watch = LimitWatch::default();
        let t0 = Instant::now();
        let hz = procfs::clock_ticks_per_second();
        let s = Duration::from_secs(1);
        let sample = |watch: &mut LimitWatch, live: u64, reaped: u64, at: u32| {
            watch.sample(
                Usage {
                    cpu_ticks: live,
                    reaped_cpu_ticks: reaped,
                    ..Default::default()
                },
                t0 + at * s,
                &spec,
            );
            watch.cpu_percent.unwrap_or(0.0)
        };
        // A child with 40 % of a core's ticks so far …
        sample(&mut watch, 4 * hz / 10, 0, 0);
        // … ends and is reaped, not yet reported: the total dips (0 %, not negative) …
        assert_eq!(sample(&mut watch, 0, 0, 1), 0.0);
        // … then the report: only what is new since the highest total counts (10 %).
        let after = sample(&mut watch, 0, hz / 2, 2);
        assert!((after - 10.0).abs() < 1.0, "{after}");
    }
}
