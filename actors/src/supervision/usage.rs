//! Measured usage: what each supervised tree uses, as `GET /agents/{id}`, the listing,
//! `heartbeatd ctl status` and `/metrics` show it ([`ProcessUsage`]). Counted as the limits
//! count it ([`super::limits`]: PSS summed over the tree, CPU including reaped children).
//!
//! When a tree is measured (the sampling policy):
//! - an agent with `max_cpu_percent` or `max_memory_bytes`: every second, by its process
//!   actor, because its limits need it; readers are given that figure;
//! - any other agent: only when someone asks (an agent view, a listing, a scrape), at most
//!   once per [`FRESH_FOR`]; a read within it gets the figure measured last.
//!
//! Why not every agent every second: memory is PSS, read from `smaps_rollup`, for which the
//! kernel walks the page tables of every process of the tree. Measuring 500 idle agents once
//! a second would cost an idle heartbeatd more CPU than everything else it does (its target:
//! 0.02 % of a core with 500 sleeping agents), for figures that nobody reads most of the time.
//! Measured on read, an idle heartbeatd measures nothing, and a Prometheus scraping every
//! 15 s or a status page polling every 2 s costs one measurement per agent per scrape or per
//! [`FRESH_FOR`]. (Measured with 500 `sleep` agents, release build: a scrape that measures
//! all 500 trees took 45–58 ms of CPU, one that measures none 15–20 ms; so every agent every
//! second would cost 3–4 % of a core, while idle heartbeatd used 0.010–0.017 %.)
//!
//! CPU is a rate: the CPU time the tree used since the measurement before (or, for the first
//! one, since the run started) over the wall time between them, in cores.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::limits::{self, Usage};
use super::procfs::{self, ProcStat, ProcessTable};
use crate::model::process::ProcessUsage;

/// A measurement younger than this is given to readers as it is, not measured again.
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// A CPU rate is taken over at least this long: a reading just after a run started, or just
/// after the one before it, would divide a few clock ticks by a few milliseconds.
const MIN_CPU_WINDOW: Duration = Duration::from_secs(1);

/// More trees than this measured at once are read from one scan of `/proc`, fewer by walking
/// each tree (a scan of a busy host reads every process).
const WALK_AT_MOST: usize = 8;

/// One run's meter: what measuring its tree needs, and what was measured last.
#[derive(Debug, Clone)]
pub struct Meter {
    /// The run's keeper: its descendants are the tree.
    pub keeper: i32,
    /// When the run started: tells one run's meter from the next one's.
    pub started: Instant,
    /// The CPU ticks of the run's processes its keeper reaped, as it last said.
    pub reaped_cpu_ticks: u64,
    /// The most CPU ticks counted so far, and since when the next rate runs. The most, not
    /// the last: a process reaped before its keeper reports it leaves a dip that is not
    /// counted twice (as in [`limits::LimitWatch`]).
    base: (u64, Instant),
    /// The last measurement, and when it was taken.
    last: Option<(ProcessUsage, Instant)>,
    /// A reader is measuring it now (since then): other readers take the last figure.
    measuring: Option<Instant>,
}

impl Meter {
    /// The meter of a run whose keeper started at `started`.
    pub fn new(keeper: i32, started: Instant) -> Self {
        Self {
            keeper,
            started,
            reaped_cpu_ticks: 0,
            base: (0, started),
            last: None,
            measuring: None,
        }
    }

    /// The last measurement, however old.
    pub fn last(&self) -> Option<ProcessUsage> {
        self.last.map(|(usage, _)| usage)
    }

    /// Whether a reader at `now` should measure the tree: its last figure is older than
    /// [`FRESH_FOR`] and no other reader is measuring it. Claims it if so.
    pub fn claim(&mut self, now: Instant) -> bool {
        let fresh = self
            .last
            .is_some_and(|(_, at)| now.saturating_duration_since(at) < FRESH_FOR);
        let taken = self
            .measuring
            .is_some_and(|since| now.saturating_duration_since(since) < FRESH_FOR);
        if fresh || taken {
            return false;
        }
        self.measuring = Some(now);
        true
    }

    /// Records a sample of the tree taken at `now` (`wall` on the clock) and answers it as a
    /// [`ProcessUsage`].
    pub fn record(&mut self, usage: Usage, now: Instant, wall: DateTime<Utc>) -> ProcessUsage {
        let total = usage.total_cpu_ticks();
        let (counted, since) = self.base;
        let window = now.saturating_duration_since(since);
        let cpu_ratio = total.saturating_sub(counted) as f64
            / procfs::clock_ticks_per_second() as f64
            / window.max(MIN_CPU_WINDOW).as_secs_f64();
        // A window too short to be a rate is not closed: the next reading runs from its start.
        if window >= MIN_CPU_WINDOW {
            self.base = (counted.max(total), now);
        }
        let measured = ProcessUsage {
            cpu_ratio,
            memory_bytes: usage.memory_bytes,
            processes: u32::try_from(usage.processes).unwrap_or(u32::MAX),
            at: wall,
        };
        self.last = Some((measured, now));
        self.measuring = None;
        measured
    }
}

/// The use of the trees under `keepers`, each with its reaped CPU ticks, in the order given.
/// Blocking (reads `/proc`): call it off the actors' threads.
pub fn measure_trees(keepers: &[(i32, u64)]) -> Vec<Usage> {
    if keepers.len() <= WALK_AT_MOST {
        return keepers
            .iter()
            .map(|&(keeper, reaped)| limits::usage_of(&tree_of(keeper), reaped))
            .collect();
    }
    let table = ProcessTable::scan();
    keepers
        .iter()
        .map(|&(keeper, reaped)| limits::usage_of(&table.descendants(keeper), reaped))
        .collect()
}

/// The descendants of `keeper`, found by walking its tree (not the whole of `/proc`).
fn tree_of(keeper: i32) -> Vec<ProcStat> {
    procfs::descendants(keeper)
        .into_iter()
        .filter_map(procfs::read_stat)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(seconds_of_cpu: f64) -> u64 {
        (seconds_of_cpu * procfs::clock_ticks_per_second() as f64) as u64
    }

    fn usage(cpu_ticks: u64, reaped_cpu_ticks: u64) -> Usage {
        Usage {
            cpu_ticks,
            reaped_cpu_ticks,
            memory_bytes: 7 << 20,
            processes: 2,
        }
    }

    #[test]
    fn the_first_rate_runs_from_the_start_and_each_next_one_from_the_last() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut meter = Meter::new(42, t0);
        // A core busy for the first 10 s …
        let first = meter.record(usage(ticks(10.0), 0), t0 + 10 * s, Utc::now());
        assert!((first.cpu_ratio - 1.0).abs() < 0.01, "{first:?}");
        assert_eq!((first.memory_bytes, first.processes), (7 << 20, 2));
        // … then half a core for 10 s, partly in children already reaped.
        let second = meter.record(usage(ticks(12.0), ticks(3.0)), t0 + 20 * s, Utc::now());
        assert!((second.cpu_ratio - 0.5).abs() < 0.01, "{second:?}");
        // A dip (a child reaped, not yet reported) reads as idle, never negative …
        let dip = meter.record(usage(ticks(11.0), ticks(3.0)), t0 + 30 * s, Utc::now());
        assert_eq!(dip.cpu_ratio, 0.0);
        // … and is not counted again when the report comes.
        let report = meter.record(usage(ticks(11.0), ticks(5.0)), t0 + 40 * s, Utc::now());
        assert!((report.cpu_ratio - 0.1).abs() < 0.01, "{report:?}");
    }

    #[test]
    fn a_window_under_a_second_is_divided_by_a_second_and_left_open() {
        let t0 = Instant::now();
        let mut meter = Meter::new(42, t0);
        let ms = Duration::from_millis(1);
        // 2 ticks in 5 ms is not 4 cores.
        let early = meter.record(usage(2, 0), t0 + 5 * ms, Utc::now());
        assert!(early.cpu_ratio <= 2.0 / procfs::clock_ticks_per_second() as f64 + 1e-9);
        // The window stays open: the next rate counts from the start.
        let later = meter.record(usage(ticks(2.0), 0), t0 + 2000 * ms, Utc::now());
        assert!((later.cpu_ratio - 1.0).abs() < 0.01, "{later:?}");
    }

    #[test]
    fn a_fresh_or_claimed_meter_is_not_measured_again() {
        let t0 = Instant::now();
        let mut meter = Meter::new(42, t0);
        assert!(meter.claim(t0), "never measured");
        assert!(!meter.claim(t0), "another reader is measuring it");
        meter.record(usage(0, 0), t0, Utc::now());
        assert!(!meter.claim(t0 + FRESH_FOR / 2), "fresh");
        assert!(meter.claim(t0 + FRESH_FOR), "stale");
        // A reader that never came back does not block the others for ever.
        assert!(meter.claim(t0 + FRESH_FOR * 2));
    }

    #[test]
    fn a_tree_is_measured_by_walking_it_or_from_one_scan_alike() {
        // This test process's parent's tree holds this process.
        let me = std::process::id() as i32;
        let parent = procfs::read_stat(me).unwrap().ppid;
        let walked = measure_trees(&[(parent, 5)]);
        let scanned = measure_trees(&[(parent, 5); WALK_AT_MOST + 1]);
        for usage in walked.iter().chain(&scanned) {
            assert!(usage.processes >= 1 && usage.memory_bytes > 0, "{usage:?}");
            assert_eq!(usage.reaped_cpu_ticks, 5);
        }
        assert_eq!(scanned.len(), WALK_AT_MOST + 1);
    }
}
