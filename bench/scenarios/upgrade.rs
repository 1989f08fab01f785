//! `upgrade`: heartbeatd's in-place upgrade (`heartbeatd ctl upgrade`) while it supervises the
//! `supervise` scenario's 500 `sleep` programs and takes heartbeats at a steady rate.
//!
//! Each round starts heartbeatd fresh, waits until all 500 programs run, starts
//! `heartbeatd-load` at [`RATE`] heartbeats/s (no warm-up: every request counts), asks for the
//! upgrade [`ASK_AFTER`] into the load, and measures:
//! - programs restarted by the upgrade: exec'd again under a new pid, seen in `/proc` from
//!   before the request until the new process says all 500 run (and [`WATCH_AFTER`] more);
//! - heartbeats refused: every request of the load not answered 200 (a refused or reset
//!   connection, a 503);
//! - heartbeats answered 200 but missing from the load agents' state once the load is over;
//! - the time from `ctl upgrade`'s request to the new process serving, as `ctl upgrade`
//!   prints it.
//!
//! The binary at heartbeatd's path is the one it runs: the upgrade re-executes the same build,
//! which is what a package upgrade to an identical release costs.

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::measure::{agents_config, get_json, load};
use crate::supervise::peers::{Heartbeatd, Supervisor, PROGRAMS};
use crate::supervise::procs::{self, median};
use crate::supervise::round::{wait_all_up, Tracker};
use crate::{row, Phases, Row};

/// Rounds, one upgrade each (BENCH_QUICK: 1).
const ROUNDS: usize = 3;
/// The load tool's agents, declared in the config (no auto-registration).
const AGENTS: usize = 20;
/// Heartbeats per second, over [`CONNECTIONS`] keep-alive connections.
const RATE: f64 = 1000.0;
const CONNECTIONS: usize = 8;
/// How long the load runs: the upgrade, with 500 programs on a loaded machine, fits well
/// inside (a round whose upgrade outlasted the load says so).
const LOAD_S: f64 = 20.0;
/// When, after the load started, the upgrade is asked for.
const ASK_AFTER: Duration = Duration::from_secs(3);
/// How long programs are watched after the new process says all run: late restarts.
const WATCH_AFTER: Duration = Duration::from_secs(2);

/// What one upgrade did.
struct Upgrade {
    /// `ctl upgrade` exited 0.
    succeeded: bool,
    /// What `ctl upgrade` printed (stdout, or stderr when it failed).
    said: String,
    /// ms from the request to the new process serving, as `ctl upgrade` printed it.
    serving_ms: f64,
    /// s from starting `ctl upgrade` to its exit, measured here.
    ctl_s: f64,
    restarted: usize,
    kept: usize,
    duplicates: usize,
    sent: u64,
    refused: u64,
    /// How the refused ones were answered: status → count, and "no answer" (a refused or
    /// reset connection, a timeout).
    refused_how: BTreeMap<String, u64>,
    /// Answered 200 but not counted in the agents' state.
    missing: u64,
    /// The upgrade ended after the load did.
    outlasted_load: bool,
}

/// `serving N ms after the request` in `ctl upgrade`'s output.
fn serving_ms(said: &str) -> f64 {
    said.split("serving ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// The heartbeats counted in the state of the load tool's agents, once `expected` are (or
/// after 30 s).
fn counted(port: u16, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let total: u64 = (1..=AGENTS)
            .map(|i| {
                get_json(port, &format!("/agents/load-{i:06}"))
                    .and_then(|agent| agent["heartbeat_count"].as_u64())
                    .unwrap_or(0)
            })
            .sum();
        if total >= expected || Instant::now() > deadline {
            return total;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn one_upgrade(round: usize) -> Upgrade {
    let prefix = procs::prefix("up", round);
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut heartbeatd = Heartbeatd::new(dir, &prefix, None, &agents_config(AGENTS));
    heartbeatd.start();
    assert!(wait_all_up(&heartbeatd), "upgrade: not all {PROGRAMS} programs came up");
    let daemon = heartbeatd.daemon.as_ref().expect("started");
    let (port, url, config) = (daemon.port, daemon.url(), daemon.dir.join("heartbeatd.toml"));
    let old = daemon.pid();

    let tracker = Tracker::start(&prefix);
    let loaded = Instant::now();
    let loading = thread::spawn(move || load(&url, AGENTS, CONNECTIONS, LOAD_S, 0.0, Some(RATE)));
    thread::sleep(ASK_AFTER);
    let asked = Instant::now();
    let ctl = Command::new(heartbeatd_harness::heartbeatd_bin())
        .arg("--config")
        .arg(&config)
        .args(["ctl", "upgrade"])
        .output()
        .expect("run heartbeatd ctl upgrade");
    let ctl_s = asked.elapsed().as_secs_f64();
    let outlasted_load = loaded.elapsed().as_secs_f64() > LOAD_S;
    let succeeded = ctl.status.success();
    let said = String::from_utf8_lossy(if succeeded { &ctl.stdout } else { &ctl.stderr })
        .trim()
        .to_owned();
    eprintln!("upgrade: round {}: {said}", round + 1);
    let daemon = heartbeatd.daemon.as_mut().expect("started");
    if succeeded {
        let new = daemon.serving_pid();
        let status = daemon.handed_over_to(new);
        if !status.success() {
            eprintln!("upgrade: the old process (pid {old}) exited with {status}");
        }
    }
    if !wait_all_up(&heartbeatd) {
        eprintln!("upgrade: not all {PROGRAMS} programs run again after the upgrade");
    }
    thread::sleep(WATCH_AFTER);
    let outcome = tracker.finish();
    let report = loading.join().expect("the load thread");
    let sent = report["sent"].as_u64().unwrap_or(0);
    let ok = report["by_status"]["200"].as_u64().unwrap_or(0);
    let missing = ok.saturating_sub(counted(port, ok));
    let mut refused_how: BTreeMap<String, u64> = report["by_status"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(status, _)| status.as_str() != "200")
        .map(|(status, n)| (status.clone(), n.as_u64().unwrap_or(0)))
        .collect();
    let no_answer = report["transport_errors"].as_u64().unwrap_or(0);
    if no_answer > 0 {
        refused_how.insert("no answer".to_owned(), no_answer);
    }

    let daemon = heartbeatd.daemon.as_mut().expect("started");
    if ok < sent {
        // The log says which process refused and why (a full queue, a stop).
        for line in daemon.log().lines().filter(|l| l.contains("503")) {
            eprintln!("upgrade: round {}: {line}", round + 1);
        }
    }
    if succeeded {
        daemon.stop_successor("TERM");
        heartbeatd.daemon = None;
    } else {
        heartbeatd.stop();
    }
    drop(heartbeatd);
    let left = procs::kill_everything(&prefix);
    if left > 0 {
        eprintln!("upgrade: {left} processes of round {} could not be killed", round + 1);
    }
    Upgrade {
        succeeded,
        serving_ms: serving_ms(&said),
        said,
        ctl_s,
        restarted: outcome.restarted,
        kept: outcome.kept,
        duplicates: outcome.duplicates(),
        sent,
        refused: sent - ok.min(sent),
        refused_how,
        missing,
        outlasted_load,
    }
}

pub(crate) fn upgrade(phases: &Phases, rows: &mut Vec<Row>) {
    let stale = procs::sweep_stale();
    if stale > 0 {
        eprintln!("upgrade: killed {stale} processes an earlier, interrupted run left behind");
    }
    let rounds = if phases.idle_s < 30.0 { 1 } else { ROUNDS };
    let upgrades: Vec<Upgrade> = (0..rounds)
        .map(|round| {
            eprintln!(
                "upgrade: round {} of {rounds}: {PROGRAMS} programs, {RATE} heartbeats/s …",
                round + 1
            );
            one_upgrade(round)
        })
        .collect();
    let failed: Vec<&str> = upgrades
        .iter()
        .filter(|u| !u.succeeded)
        .map(|u| u.said.as_str())
        .collect();
    rows.push(
        row(
            "upgrade",
            "ctl upgrade succeeded",
            format!("{} of {rounds}", rounds - failed.len()),
        )
        .target("all", failed.is_empty()),
    );
    for said in failed {
        rows.push(row("upgrade", "  ctl upgrade said", said.to_owned()));
    }
    let each = |f: &dyn Fn(&Upgrade) -> String| upgrades.iter().map(f).collect::<Vec<_>>().join(", ");
    let restarted: usize = upgrades.iter().map(|u| u.restarted).max().unwrap_or(0);
    rows.push(
        row(
            "upgrade",
            format!("programs restarted by an upgrade (of {PROGRAMS})"),
            each(&|u| u.restarted.to_string()),
        )
        .baseline(format!("kept: {}", each(&|u| u.kept.to_string())))
        .target("0", restarted == 0),
    );
    let duplicates: usize = upgrades.iter().map(|u| u.duplicates).max().unwrap_or(0);
    rows.push(
        row(
            "upgrade",
            "  programs running twice at once",
            each(&|u| u.duplicates.to_string()),
        )
        .target("0", duplicates == 0),
    );
    let refused: u64 = upgrades.iter().map(|u| u.refused).sum();
    let sent: u64 = upgrades.iter().map(|u| u.sent).sum();
    let mut how: BTreeMap<String, u64> = BTreeMap::new();
    for (status, n) in upgrades.iter().flat_map(|u| &u.refused_how) {
        *how.entry(status.clone()).or_default() += n;
    }
    let how = how
        .iter()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    rows.push(
        row(
            "upgrade",
            format!("heartbeats refused during an upgrade ({RATE} /s)"),
            format!("{refused} of {sent}"),
        )
        .baseline(how)
        .target("0", refused == 0 && sent > 0),
    );
    let missing: u64 = upgrades.iter().map(|u| u.missing).sum();
    rows.push(
        row(
            "upgrade",
            "  answered 200 but not in the agents' state",
            missing.to_string(),
        )
        .target("0", missing == 0),
    );
    let mut serving: Vec<f64> = upgrades.iter().map(|u| u.serving_ms).collect();
    rows.push(
        row(
            "upgrade",
            "ctl upgrade → the new process serving (median)",
            format!("{:.0} ms", median(&mut serving)),
        )
        .baseline(format!("each: {} ms", each(&|u| format!("{:.0}", u.serving_ms)))),
    );
    rows.push(row(
        "upgrade",
        "  ctl upgrade's own run time",
        format!("{} s", each(&|u| format!("{:.2}", u.ctl_s))),
    ));
    if upgrades.iter().any(|u| u.outlasted_load) {
        rows.push(row(
            "upgrade",
            "  an upgrade outlasted the load",
            format!("{LOAD_S} s of load: refusals after it were not measured"),
        ));
    }
}
