//! Supervision against a real supervisord (Debian's `supervisor`, installed by `make bench`):
//! both run the same 500 `sleep` programs, one after the other, measured the same way from
//! `/proc` (every program carries a marker in its environment, `BENCH_MARKER=<run>-<n>`).
//!
//! - start: from the daemon's start until all 500 programs have been exec'd, and until the
//!   daemon itself says all are running;
//! - idle CPU and memory once all run (heartbeatd's keepers are counted beside it: RSS of the
//!   daemon, and the proportional set size, PSS, of daemon plus keepers);
//! - restart latency: SIGKILL of one program until its replacement has been exec'd, 100
//!   kills of 100 different programs (heartbeatd with `restart_backoff_ms = 0`, the floor;
//!   supervisord restarts a RUNNING program that dies without a backoff);
//! - ingest while supervising 500: the saturation load against heartbeatd with the 500
//!   programs, as a ratio to the ceiling measured in the same run.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod ingest;

pub(crate) use ingest::ingest_while_supervising;

use crate::measure::*;
use crate::{row, Phases, Row};

const PROGRAMS: usize = 500;
const KILLS: usize = 100;
const SLEEP: &str = "/bin/sleep";

/// The processes whose environment has `BENCH_MARKER=<prefix><anything>`, with their marker.
fn marked(prefix: &str) -> Vec<(u32, String)> {
    heartbeatd_harness::processes_with_env("BENCH_MARKER", prefix)
}

fn all_pids() -> HashSet<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The `BENCH_MARKER` value of a process, if it has one.
fn marker_of(pid: u32) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"BENCH_MARKER="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn pss_kib(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn children(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let text = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            all.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    all
}

/// What one supervisor measured.
struct Figures {
    exec_all_s: f64,
    says_running_s: f64,
    idle_cpu_percent: f64,
    helpers_idle_cpu_percent: f64,
    rss_mib: f64,
    pss_total_mib: f64,
    restart_p50_ms: f64,
    restart_p99_ms: f64,
    restarts_measured: usize,
}

trait Supervisor {
    fn pid(&self) -> u32;
    /// How many programs the supervisor itself says are running.
    fn running(&self) -> usize;
    /// Helper processes beside the daemon (heartbeatd's keepers).
    fn helpers(&self) -> Vec<u32> {
        Vec::new()
    }
}

struct Heartbeatd(Daemon);

impl Supervisor for Heartbeatd {
    fn pid(&self) -> u32 {
        self.0.pid()
    }
    fn running(&self) -> usize {
        get_json(self.0.port, "/agents?limit=10000")
            .and_then(|page| {
                page["agents"]
                    .as_array()
                    .map(|a| a.iter().filter(|agent| agent["process"]["state"] == "running").count())
            })
            .unwrap_or(0)
    }
    fn helpers(&self) -> Vec<u32> {
        children(self.0.pid())
    }
}

struct Supervisord {
    child: Child,
    config: std::path::PathBuf,
}

impl Supervisor for Supervisord {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn running(&self) -> usize {
        Command::new("supervisorctl")
            .arg("-c")
            .arg(&self.config)
            .arg("status")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.contains("RUNNING"))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn measure(name: &str, prefix: &str, started: Instant, sup: &dyn Supervisor, idle_s: f64) -> Figures {
    // Start: every program exec'd, then the supervisor's own word.
    let deadline = started + Duration::from_secs(120);
    let mut exec_all_s = f64::NAN;
    while Instant::now() < deadline {
        if marked(prefix).len() >= PROGRAMS {
            exec_all_s = started.elapsed().as_secs_f64();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let mut says_running_s = f64::NAN;
    while Instant::now() < deadline {
        if sup.running() >= PROGRAMS {
            says_running_s = started.elapsed().as_secs_f64();
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("supervise: {name}: all exec'd after {exec_all_s:.2} s, all running after {says_running_s:.2} s");

    // Idle.
    thread::sleep(Duration::from_secs(3));
    let helpers = sup.helpers();
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let (daemon_before, helpers_before) = (cpu_seconds(sup.pid()), cpu(&helpers));
    thread::sleep(Duration::from_secs_f64(idle_s));
    let idle_cpu_percent = (cpu_seconds(sup.pid()) - daemon_before) / idle_s * 100.0;
    let helpers_idle_cpu_percent = (cpu(&helpers) - helpers_before) / idle_s * 100.0;
    let rss_mib = memory_mib(sup.pid(), "VmRSS:");
    let pss_total_mib = (pss_kib(sup.pid()) + helpers.iter().map(|p| pss_kib(*p)).sum::<f64>()) / 1024.0;

    // Restarts: SIGKILL one program, wait for its replacement's exec.
    let mut latencies = Vec::new();
    let all = marked(prefix);
    let mut victims: Vec<(u32, String)> = all.into_iter().collect();
    victims.sort_by(|a, b| a.1.cmp(&b.1));
    for (pid, marker) in victims.into_iter().take(KILLS) {
        // PIDs wrap around, so "new" means not there before the kill, not a higher number.
        let before = all_pids();
        let killed = Instant::now();
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        let deadline = killed + Duration::from_secs(10);
        let mut checked: HashSet<u32> = HashSet::new();
        'wait: loop {
            for new in all_pids().difference(&before) {
                if !checked.contains(new) && marker_of(*new).as_deref() == Some(marker.as_str()) {
                    latencies.push(killed.elapsed().as_secs_f64() * 1000.0);
                    break 'wait;
                }
                // Checked again later: a process between fork and exec has its parent's
                // environment until it execs.
                if marker_of(*new).is_some() {
                    checked.insert(*new);
                }
            }
            if Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_micros(200));
        }
        // Let the supervisor settle (and stay clear of supervisord's startsecs).
        thread::sleep(Duration::from_millis(50));
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Figures {
        exec_all_s,
        says_running_s,
        idle_cpu_percent,
        helpers_idle_cpu_percent,
        rss_mib,
        pss_total_mib,
        restart_p50_ms: pick(0.5),
        restart_p99_ms: pick(0.99),
        restarts_measured: latencies.len(),
    }
}

fn heartbeatd_config(prefix: &str, backoff_ms: Option<u64>) -> String {
    let mut config = String::from("shutdown_timeout_s = 60\n");
    for n in 0..PROGRAMS {
        config.push_str(&format!(
            "[[agents]]\nid = \"p{n}\"\ncommand = [\"{SLEEP}\", \"100000\"]\nenv = {{ BENCH_MARKER = \"{prefix}{n:04}\" }}\n"
        ));
        if let Some(ms) = backoff_ms {
            config.push_str(&format!("restart_backoff_ms = {ms}\n"));
        }
    }
    config
}

fn start_supervisord(dir: &Path, prefix: &str) -> Option<Supervisord> {
    let which = Command::new("sh")
        .args(["-c", "command -v supervisord"])
        .output()
        .ok()?;
    if !which.status.success() {
        return None;
    }
    fs::create_dir_all(dir.join("logs")).ok()?;
    let d = dir.display();
    let mut conf = format!(
        "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nchildlogdir={d}/logs\nminfds=8192\nloglevel=warn\n\
         [unix_http_server]\nfile={d}/supervisor.sock\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
         [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n"
    );
    for n in 0..PROGRAMS {
        conf.push_str(&format!(
            "[program:p{n}]\ncommand={SLEEP} 100000\nenvironment=BENCH_MARKER=\"{prefix}{n:04}\"\nautorestart=true\nstdout_logfile={d}/logs/p{n}.log\nredirect_stderr=true\n"
        ));
    }
    let config = dir.join("supervisord.conf");
    fs::write(&config, conf).ok()?;
    let child = Command::new("supervisord")
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Supervisord { child, config })
}

pub(crate) fn supervise(phases: &Phases, rows: &mut Vec<Row>) {
    let run = std::process::id();
    let idle_s = phases.idle_s.min(20.0);

    eprintln!("supervise: supervisord with {PROGRAMS} programs …");
    let dir = tempfile::tempdir().unwrap();
    let prefix_s = format!("s{run}-");
    let started = Instant::now();
    let theirs = start_supervisord(dir.path(), &prefix_s).map(|sup| {
        let figures = measure("supervisord", &prefix_s, started, &sup, idle_s);
        drop(sup);
        figures
    });

    eprintln!("supervise: heartbeatd with {PROGRAMS} programs …");
    let prefix_h = format!("h{run}-");
    let started = Instant::now();
    let daemon = Heartbeatd(start_daemon(&heartbeatd_config(&prefix_h, Some(0))));
    let ours = measure("heartbeatd", &prefix_h, started, &daemon, idle_s);
    let stopped = stop_daemon(daemon.0);
    let left = marked(&prefix_h).len();

    let Some(theirs) = theirs else {
        rows.push(row(
            "supervise",
            "supervisord comparison",
            "skipped: supervisord not installed (make bench installs it)",
        ));
        return;
    };
    let fmt = |v: f64, unit: &str| format!("{v:.2} {unit}");
    rows.push(
        row("supervise", "500 programs: all exec'd after", fmt(ours.exec_all_s, "s"))
            .baseline(fmt(theirs.exec_all_s, "s"))
            .target("≤ supervisord", ours.exec_all_s <= theirs.exec_all_s),
    );
    rows.push(
        row(
            "supervise",
            "  all running, by the daemon's word",
            fmt(ours.says_running_s, "s"),
        )
        .baseline(fmt(theirs.says_running_s, "s"))
        .target("≤ supervisord", ours.says_running_s <= theirs.says_running_s),
    );
    rows.push(
        row("supervise", "idle CPU, daemon alone", fmt(ours.idle_cpu_percent, "%"))
            .baseline(fmt(theirs.idle_cpu_percent, "%"))
            .target("≤ supervisord", ours.idle_cpu_percent <= theirs.idle_cpu_percent),
    );
    rows.push(row(
        "supervise",
        "  idle CPU of heartbeatd's 500 keepers",
        fmt(ours.helpers_idle_cpu_percent, "%"),
    ));
    rows.push(
        row("supervise", "RSS, daemon alone", fmt(ours.rss_mib, "MiB"))
            .baseline(fmt(theirs.rss_mib, "MiB"))
            .target("≤ supervisord", ours.rss_mib <= theirs.rss_mib),
    );
    rows.push(
        row("supervise", "  PSS, daemon + keepers", fmt(ours.pss_total_mib, "MiB"))
            .baseline(fmt(theirs.pss_total_mib, "MiB"))
            .target("≤ supervisord", ours.pss_total_mib <= theirs.pss_total_mib),
    );
    let ratio = ours.restart_p50_ms / theirs.restart_p50_ms;
    rows.push(
        row(
            "supervise",
            "SIGKILL → replacement exec'd, p50",
            fmt(ours.restart_p50_ms, "ms"),
        )
        .baseline(fmt(theirs.restart_p50_ms, "ms"))
        .target("≤ 1/10 of supervisord", ratio <= 0.1),
    );
    let ratio99 = ours.restart_p99_ms / theirs.restart_p99_ms;
    rows.push(
        row("supervise", "  p99", fmt(ours.restart_p99_ms, "ms"))
            .baseline(fmt(theirs.restart_p99_ms, "ms"))
            .target("≤ 1/10 of supervisord", ratio99 <= 0.1),
    );
    rows.push(row(
        "supervise",
        "  restarts measured (of 100 kills)",
        format!("{} / {}", ours.restarts_measured, theirs.restarts_measured),
    ));
    rows.push(
        row(
            "supervise",
            "  programs left after heartbeatd's SIGTERM",
            left.to_string(),
        )
        .target("0", left == 0 && stopped.code == Some(0)),
    );
    rows.push(row(
        "supervise",
        "  graceful stop of 500 took",
        fmt(stopped.seconds, "s"),
    ));
}
