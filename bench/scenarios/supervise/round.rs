//! One supervisor's measurements, each the same for the four (see [`super`] for the rows):
//! [`at_rest`] from a fresh start (start time, memory, idle CPU, restart latency of a killed
//! program) and [`restarts`] of the supervisor itself (kill -9 and start again, graceful
//! restart, what its own graceful stop leaves behind).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::peers::{Supervisor, PROGRAMS};
use super::procs::{self, CpuUse, Watcher};
use crate::measure::memory_mib;

/// How long everything may take to come up (500 programs on a loaded 2-core machine).
const UP_WITHIN: Duration = Duration::from_secs(120);
/// How long a killed program's replacement may take.
const REPLACED_WITHIN: Duration = Duration::from_secs(10);
/// Time between two kills of programs: above every peer's restart latency but supervisord's
/// (about 1 s: its kills overlap, several die between two of its ticks).
const KILL_EVERY: Duration = Duration::from_millis(100);
/// How long a restart is watched after the supervisor says all run: late duplicates.
const WATCH_AFTER: Duration = Duration::from_secs(2);

/// What one supervisor showed from a fresh start.
pub(crate) struct AtRest {
    pub(crate) exec_all_s: f64,
    pub(crate) says_running_s: f64,
    pub(crate) rss_mib: f64,
    pub(crate) pss_mib: f64,
    /// Helpers counted in the PSS (beside the supervisor).
    pub(crate) helpers: usize,
    /// Kind (command name) → (how many, median private KiB).
    pub(crate) private: BTreeMap<String, (usize, f64)>,
    pub(crate) idle: CpuUse,
    pub(crate) idle_s: f64,
    /// ms from each SIGKILL of a program to its replacement's exec.
    pub(crate) latencies_ms: Vec<f64>,
    pub(crate) kills: usize,
}

/// Waits until `done()` or `within`; how long it took (NaN if never).
fn wait_for(started: Instant, within: Duration, every: Duration, mut done: impl FnMut() -> bool) -> f64 {
    while started.elapsed() < within {
        if done() {
            return started.elapsed().as_secs_f64();
        }
        thread::sleep(every);
    }
    f64::NAN
}

/// Waits until the supervisor says all run and every program is alive.
pub(crate) fn wait_all_up(sup: &dyn Supervisor) -> bool {
    let prefix = sup.prefix().to_owned();
    !wait_for(Instant::now(), UP_WITHIN, Duration::from_millis(100), || {
        sup.running() >= PROGRAMS && procs::marked_map(&prefix).len() >= PROGRAMS
    })
    .is_nan()
}

/// Starts `sup` fresh and measures it at rest; `idle_s` of quiet, `kills` programs killed.
pub(crate) fn at_rest(sup: &mut dyn Supervisor, idle_s: f64, kills: usize) -> AtRest {
    let name = sup.kind().name();
    let prefix = sup.prefix().to_owned();
    let started = Instant::now();
    sup.start();
    let exec_all_s = wait_for(started, UP_WITHIN, Duration::from_millis(20), || {
        procs::marked(&prefix).len() >= PROGRAMS
    });
    let says_running_s = wait_for(started, UP_WITHIN, Duration::from_millis(100), || {
        sup.running() >= PROGRAMS
    });
    eprintln!(
        "supervise: {name}: all exec'd after {exec_all_s:.2} s, all running by its word after {says_running_s:.2} s"
    );

    // Memory and idle CPU once it has settled.
    thread::sleep(Duration::from_secs(3));
    let pid = sup.pid().expect("the supervisor runs");
    let helpers = procs::helpers(pid, &prefix);
    let mut everyone = helpers.clone();
    everyone.push(pid);
    let beside = procs::tree(&prefix).len().saturating_sub(procs::marked(&prefix).len());
    if beside != everyone.len() {
        eprintln!(
            "supervise: {name}: {} processes counted (supervisor + helpers), {beside} in its tree beside the programs",
            everyone.len()
        );
    }
    let rss_mib = memory_mib(pid, "VmRSS:");
    let pss_mib = everyone.iter().map(|p| procs::pss_kib(*p)).sum::<f64>() / 1024.0;
    let private = procs::private_by_kind(&helpers);
    let before = CpuUse::of(&everyone);
    let quiet = Instant::now();
    thread::sleep(Duration::from_secs_f64(idle_s));
    let idle = CpuUse::of(&everyone).since(before);
    let idle_s = quiet.elapsed().as_secs_f64();

    let latencies_ms = kill_programs(&prefix, kills);
    eprintln!(
        "supervise: {name}: PSS {pss_mib:.1} MiB over {} processes, idle {} ticks / {:.1} ms in {idle_s:.0} s, {} of {kills} replacements seen",
        everyone.len(),
        idle.ticks,
        idle.nanoseconds as f64 / 1e6,
        latencies_ms.len()
    );
    AtRest {
        exec_all_s,
        says_running_s,
        rss_mib,
        pss_mib,
        helpers: helpers.len(),
        private,
        idle,
        idle_s,
        latencies_ms,
        kills,
    }
}

/// SIGKILLs `kills` different programs, one every [`KILL_EVERY`]; ms until each one's
/// replacement was exec'd (the exec is when the marker appears in a new pid).
fn kill_programs(prefix: &str, kills: usize) -> Vec<f64> {
    let mut victims: Vec<(u32, String)> = procs::marked(prefix);
    victims.sort_by(|a, b| a.1.cmp(&b.1));
    victims.truncate(kills);
    let mut watcher = Watcher::new();
    let mut waiting: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    let mut victims = victims.into_iter().peekable();
    let mut last_kill: Option<Instant> = None;
    loop {
        if last_kill.is_none_or(|at| at.elapsed() >= KILL_EVERY) {
            if let Some((pid, marker)) = victims.next() {
                procs::signal(pid, libc::SIGKILL);
                let now = Instant::now();
                last_kill = Some(now);
                waiting.insert(marker, now);
            }
        }
        for (_, marker) in watcher.poll() {
            if let Some(killed) = waiting.remove(&marker) {
                latencies.push(killed.elapsed().as_secs_f64() * 1000.0);
            }
        }
        // A replacement not seen within REPLACED_WITHIN is not counted.
        waiting.retain(|_, killed| killed.elapsed() < REPLACED_WITHIN);
        if victims.peek().is_none() && waiting.is_empty() {
            break;
        }
        thread::sleep(Duration::from_micros(200));
    }
    latencies
}

/// What a restart of the supervisor did to its programs.
#[derive(Debug, Default, Clone)]
pub(crate) struct Outcome {
    /// Programs exec'd again under a new pid.
    pub(crate) restarted: usize,
    /// Programs still running under the pid they had before.
    pub(crate) kept: usize,
    /// The most programs alive at once (more than [`PROGRAMS`]: duplicates).
    pub(crate) peak: usize,
    /// Seconds each restarted program was down (its old pid gone → its new pid exec'd).
    pub(crate) down_s: Vec<f64>,
    /// The supervisor did not say all run again in time.
    pub(crate) incomplete: bool,
}

impl Outcome {
    pub(crate) fn duplicates(&self) -> usize {
        self.peak.saturating_sub(PROGRAMS)
    }
}

/// Watches the programs of `prefix` from another thread while the supervisor goes and comes
/// back: when each old pid ends, when each program is exec'd again, the most alive at once.
pub(crate) struct Tracker {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Outcome>,
}

impl Tracker {
    /// Starts watching; the programs running now are the "before".
    pub(crate) fn start(prefix: &str) -> Self {
        let prefix = prefix.to_owned();
        let before = procs::marked_map(&prefix);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let mut watcher = Watcher::new();
        let handle = thread::spawn(move || {
            let mut gone: HashMap<String, Instant> = HashMap::new();
            let mut new: HashMap<String, Instant> = HashMap::new();
            let mut peak = before.len();
            let mut counted = Instant::now();
            while !stopping.load(Ordering::Relaxed) {
                let now = Instant::now();
                for (pid, marker) in watcher.poll() {
                    if before.get(&marker) != Some(&pid) {
                        new.entry(marker).or_insert(now);
                    }
                }
                for (marker, pid) in &before {
                    if !gone.contains_key(marker) && !procs::alive_as(*pid, marker) {
                        gone.insert(marker.clone(), now);
                    }
                }
                if counted.elapsed() > Duration::from_millis(100) {
                    peak = peak.max(procs::marked(&prefix).len());
                    counted = Instant::now();
                }
                thread::sleep(Duration::from_millis(5));
            }
            let kept = before.iter().filter(|(m, pid)| procs::alive_as(**pid, m)).count();
            let down_s = new
                .iter()
                .filter_map(|(marker, up)| Some(up.saturating_duration_since(*gone.get(marker)?).as_secs_f64()))
                .collect();
            Outcome {
                restarted: new.len(),
                kept,
                peak: peak.max(procs::marked(&prefix).len()),
                down_s,
                incomplete: false,
            }
        });
        Self { stop, handle }
    }

    pub(crate) fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("the tracker thread")
    }
}

/// How the supervisor goes away before it is started again.
#[derive(Debug, Clone, Copy)]
enum Away {
    Kill9,
    Graceful,
}

/// Takes the supervisor away and starts it again on the same tree; what that did.
fn come_back(sup: &mut dyn Supervisor, away: Away) -> Outcome {
    let tracker = Tracker::start(sup.prefix());
    match away {
        Away::Kill9 => sup.kill9(),
        Away::Graceful => {
            sup.stop();
        }
    }
    sup.start();
    let up = wait_all_up(sup);
    thread::sleep(WATCH_AFTER);
    let mut outcome = tracker.finish();
    outcome.incomplete = !up;
    eprintln!(
        "supervise: {}: {away:?} and start again: {} restarted, {} kept, peak {} alive{}",
        sup.kind().name(),
        outcome.restarted,
        outcome.kept,
        outcome.peak,
        if up { "" } else { " (not all running again)" }
    );
    outcome
}

/// What restarts of the supervisor did.
pub(crate) struct Restarts {
    pub(crate) kill9: Outcome,
    pub(crate) graceful: Outcome,
    /// Processes of its tree alive after its own graceful stop.
    pub(crate) left_after_stop: usize,
    pub(crate) stop_s: f64,
}

/// From a running supervisor (all up): a graceful restart, then its graceful stop and what
/// is left; then a fresh start, a kill -9 and a start again. Everything is killed after each
/// part, so that the next starts clean (after a kill -9, s6's and runit's helpers are no
/// longer the new scanner's children, and a graceful stop of that scanner would not stop them).
pub(crate) fn restarts(sup: &mut dyn Supervisor) -> Restarts {
    let prefix = sup.prefix().to_owned();
    let graceful = come_back(sup, Away::Graceful);

    let stop_s = sup.stop();
    thread::sleep(Duration::from_secs(2));
    let left_after_stop = procs::tree(&prefix).len();
    eprintln!(
        "supervise: {}: its graceful stop took {stop_s:.2} s and left {left_after_stop} processes",
        sup.kind().name()
    );
    procs::kill_everything(&prefix);

    sup.start();
    wait_all_up(sup);
    thread::sleep(Duration::from_secs(1));
    let kill9 = come_back(sup, Away::Kill9);
    sup.stop();
    procs::kill_everything(&prefix);
    Restarts {
        kill9,
        graceful,
        left_after_stop,
        stop_s,
    }
}
