//! Reading supervised trees from `/proc`, the same way for every supervisor: which processes
//! are whose (by markers in their environment, not by parentage, which an adoption changes),
//! what they cost (PSS, private memory, CPU), and the bench's own clean-up.
//!
//! Three environment markers, each `NAME=<prefix><…>` with a prefix per supervisor and round,
//! `<pid of the bench>-<tag><round>-` ([`prefix`]), so that what an interrupted run left
//! behind can be told from what this run starts ([`sweep_stale`]):
//! - [`MARKER`] on every supervised program (`<prefix><n:04>`, one value per program);
//! - [`LOGGER`] on every per-service logger (s6-log, svlogd), same values;
//! - [`TREE`] (`<prefix>`) on the supervisor itself, so on everything it starts: programs,
//!   helpers, loggers, an upgrade's new process. Whatever carries it and is alive after the
//!   supervisor is gone was left behind.
//!
//! A process between fork and exec still has its parent's environment: a process seen without
//! a marker is looked at again for [`EXEC_GRACE`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::time::{Duration, Instant};

pub(crate) const MARKER: &str = "BENCH_MARKER";
pub(crate) const LOGGER: &str = "BENCH_LOGGER";
pub(crate) const TREE: &str = "BENCH_TREE";

/// How long after a process first appears without a marker it is looked at again: a fork
/// whose exec (through `sh` for s6 and runit) has not happened yet.
const EXEC_GRACE: Duration = Duration::from_secs(2);

/// The prefix of the markers of one supervisor (`tag`) in one round of this run.
pub(crate) fn prefix(tag: &str, round: usize) -> String {
    format!("{}-{tag}{round}-", std::process::id())
}

/// The bench run that set a marker value: the pid before its first `-`.
fn run_of(value: &str) -> Option<u32> {
    value.split('-').next()?.parse().ok()
}

/// Whether `pid` is a live run of the bench (the `scenarios` binary).
fn is_bench(pid: u32) -> bool {
    pid == std::process::id() || comm(pid).starts_with("scenarios")
}

/// Kills what an earlier run of the bench left behind: a run stopped before its clean-up
/// (Ctrl-C, a kill) leaves its trees, and runit's and s6's helpers, or supervisord's programs
/// after its kill -9, outlive their supervisor. A marker is stale when the run named in it is
/// no longer alive. Returns how many processes were killed.
pub(crate) fn sweep_stale() -> usize {
    let mut runs = BTreeSet::new();
    for name in [MARKER, LOGGER, TREE] {
        for (_, value) in heartbeatd_harness::processes_with_env(name, "") {
            runs.extend(run_of(&value).filter(|run| !is_bench(*run)));
        }
    }
    runs.into_iter()
        .map(|run| {
            let prefix = format!("{run}-");
            let found = everything(&prefix).len();
            kill_everything(&prefix);
            found
        })
        .sum()
}

/// The live programs of `prefix`, with their marker (a zombie's environment reads empty).
pub(crate) fn marked(prefix: &str) -> Vec<(u32, String)> {
    heartbeatd_harness::processes_with_env(MARKER, prefix)
}

/// marker → pid of the live programs of `prefix` (one pid per marker: the highest when a
/// program runs twice).
pub(crate) fn marked_map(prefix: &str) -> HashMap<String, u32> {
    let mut map = HashMap::new();
    for (pid, marker) in marked(prefix) {
        let slot = map.entry(marker).or_insert(pid);
        *slot = (*slot).max(pid);
    }
    map
}

/// The live per-service loggers of `prefix`.
pub(crate) fn loggers(prefix: &str) -> Vec<u32> {
    heartbeatd_harness::processes_with_env(LOGGER, prefix)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// Every live process started under the supervisor of `prefix`, the supervisor included
/// (every prefix ends with `-`, so no prefix is the start of another).
pub(crate) fn tree(prefix: &str) -> Vec<u32> {
    heartbeatd_harness::processes_with_env(TREE, prefix)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// The `MARKER` value of a process, if it has one.
pub(crate) fn marker_of(pid: u32) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(MARKER.as_bytes())?.strip_prefix(b"="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Whether `pid` is alive and still the program `marker` (not a zombie, not a reused pid).
pub(crate) fn alive_as(pid: u32, marker: &str) -> bool {
    marker_of(pid).as_deref() == Some(marker)
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces): the state
/// is `[0]`, the parent `[1]`, utime and stime `[11]` and `[12]`.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid).get(1)?.parse().ok()
}

/// The command name (`/proc/PID/comm`, 15 characters at most).
pub(crate) fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_default()
}

/// The per-service helpers of a supervisor, found from the programs and loggers, not from
/// the supervisor's children: the parent of each program (a keeper, runsv, s6-supervise),
/// each logger and the logger's parent. The supervisor itself, init and this process are
/// left out (a program whose supervisor died is re-parented to one of them).
pub(crate) fn helpers(supervisor: u32, prefix: &str) -> Vec<u32> {
    let mut found = BTreeSet::new();
    for (pid, _) in marked(prefix) {
        found.extend(parent_of(pid));
    }
    for pid in loggers(prefix) {
        found.insert(pid);
        found.extend(parent_of(pid));
    }
    for not_a_helper in [0, 1, supervisor, std::process::id()] {
        found.remove(&not_a_helper);
    }
    found.into_iter().collect()
}

/// Fields of `/proc/PID/smaps_rollup`, in KiB.
pub(crate) fn smaps_kib(pid: u32, fields: &[&str]) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            fields
                .contains(&name)
                .then(|| rest.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .sum()
}

pub(crate) fn pss_kib(pid: u32) -> f64 {
    smaps_kib(pid, &["Pss"])
}

pub(crate) fn private_kib(pid: u32) -> f64 {
    smaps_kib(pid, &["Private_Clean", "Private_Dirty"])
}

/// Private memory of each kind of helper (by command name): how many, and the median KiB.
pub(crate) fn private_by_kind(helpers: &[u32]) -> BTreeMap<String, (usize, f64)> {
    let mut kinds: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for &pid in helpers {
        kinds.entry(comm(pid)).or_default().push(private_kib(pid));
    }
    kinds
        .into_iter()
        .map(|(kind, mut values)| (kind, (values.len(), median(&mut values))))
        .collect()
}

/// CPU used so far by a set of processes, two ways:
/// - `ticks`: utime + stime of `/proc/PID/stat`, whole threads group, in clock ticks (the
///   kernel keeps their sum equal to the exact run time, cut to a tick: 10 ms at 100 Hz);
/// - `nanoseconds`: the run time of every live thread (`/proc/PID/task/*/schedstat`, first
///   field), exact, but blind to threads that ended.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuUse {
    pub(crate) ticks: u64,
    pub(crate) nanoseconds: u64,
}

impl CpuUse {
    pub(crate) fn of(pids: &[u32]) -> Self {
        let mut cpu = Self::default();
        for &pid in pids {
            let fields = stat_fields(pid);
            let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            cpu.ticks += tick(11) + tick(12);
            if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
                for task in tasks.flatten() {
                    cpu.nanoseconds += fs::read_to_string(task.path().join("schedstat"))
                        .ok()
                        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        cpu
    }

    pub(crate) fn since(self, before: Self) -> Self {
        Self {
            ticks: self.ticks.saturating_sub(before.ticks),
            nanoseconds: self.nanoseconds.saturating_sub(before.nanoseconds),
        }
    }
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    quantile(values, 0.5)
}

/// The `q` quantile (nearest rank) of `values`; NaN when empty.
pub(crate) fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values
        .get(((values.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN)
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// What a [`Watcher`] knows of a pid.
enum Seen {
    Program(String),
    /// No marker when first seen: looked at again until `until` (it may not have exec'd yet).
    Other {
        until: Instant,
    },
}

/// Sees programs appear: each [`Watcher::poll`] lists `/proc` and reads the environment of
/// new pids only, so it is cheap enough to run in a tight loop. PIDs wrap around, so "new"
/// means not listed at the previous poll, not a higher number.
pub(crate) struct Watcher {
    seen: HashMap<u32, Seen>,
}

impl Watcher {
    /// Everything alive now counts as seen.
    pub(crate) fn new() -> Self {
        let mut watcher = Self { seen: HashMap::new() };
        watcher.poll();
        watcher
    }

    /// The programs (pid, marker) exec'd since the last poll.
    pub(crate) fn poll(&mut self) -> Vec<(u32, String)> {
        let now = Instant::now();
        let listed = all_pids();
        let mut appeared = Vec::new();
        let mut seen = HashMap::with_capacity(listed.len());
        for pid in listed {
            let entry = match self.seen.remove(&pid) {
                Some(Seen::Program(marker)) => Seen::Program(marker),
                Some(Seen::Other { until }) if now > until => Seen::Other { until },
                known => {
                    let until = match known {
                        Some(Seen::Other { until }) => until,
                        _ => now + EXEC_GRACE,
                    };
                    match marker_of(pid) {
                        Some(marker) => {
                            appeared.push((pid, marker.clone()));
                            Seen::Program(marker)
                        }
                        None => Seen::Other { until },
                    }
                }
            };
            seen.insert(pid, entry);
        }
        self.seen = seen;
        appeared
    }
}

/// Every live process of `prefix`: its tree, programs and loggers.
fn everything(prefix: &str) -> BTreeSet<u32> {
    let mut all: BTreeSet<u32> = tree(prefix).into_iter().collect();
    all.extend(marked(prefix).into_iter().map(|(pid, _)| pid));
    all.extend(loggers(prefix));
    all
}

/// SIGKILL to everything of `prefix` (its tree, programs and loggers), again until nothing is
/// left (a supervisor still alive may start a program meanwhile); returns how many are left.
pub(crate) fn kill_everything(prefix: &str) -> usize {
    for _ in 0..100 {
        let left = everything(prefix);
        if left.is_empty() {
            return 0;
        }
        for pid in left {
            // SAFETY: kill has no memory preconditions; a pid gone meanwhile is ESRCH.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    everything(prefix).len()
}

/// Sends `signal` to `pid` (nothing when it is gone).
pub(crate) fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, signal) };
}
