//! An agent that floods its output: `yes` under supervision, beside the saturation load of 10
//! agents, against the same load on the same daemon without it (issue 16, item 9).
//!
//! - the keeper's CPU while `yes` runs (per cent of one core; its budget is 15 %, the target
//!   20 %), and `yes`'s own: a keeper that copies within its budget also holds `yes` back;
//! - the output it copies (MB/s into the output file, from the keeper's `wchar`);
//! - heartbeats/s with the flood, as a ratio to heartbeats/s just before it, same daemon.

use std::fs;

use crate::measure::*;
use crate::{row, Phases, Row};

/// The first child of `pid` (the daemon's only keeper, or the keeper's agent).
fn first_child(pid: u32) -> Option<u32> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|task| {
        fs::read_to_string(task.path().join("children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Bytes a process has passed to write calls so far (`wchar` of /proc/<pid>/io).
fn chars_written(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) fn output_flood(phases: &Phases, rows: &mut Vec<Row>) {
    const AGENTS: usize = 10;
    eprintln!("output-flood: ingest without, then with `yes` under supervision …");
    let config = agents_config(AGENTS) + "[[agents]]\nid = \"flood\"\ncommand = [\"yes\"]\nautostart = false\n";
    let daemon = start_daemon(&config);
    let url = daemon.url();
    let base = load(&url, AGENTS, 64, phases.saturation_s, phases.warmup_s, None);

    let started = daemon.admin("POST", "/agents/flood/start", None);
    assert_eq!(started.status, 200, "{started:?}");
    let keeper = first_child(daemon.pid()).expect("the flood's keeper");
    let yes = first_child(keeper).expect("yes under its keeper");
    let before = (cpu_seconds(keeper), cpu_seconds(yes), chars_written(keeper));
    let at = std::time::Instant::now();
    let ours = load(&url, AGENTS, 64, phases.saturation_s, phases.warmup_s, None);
    let seconds = at.elapsed().as_secs_f64();
    let keeper_percent = (cpu_seconds(keeper) - before.0) / seconds * 100.0;
    let yes_percent = (cpu_seconds(yes) - before.1) / seconds * 100.0;
    let mb_per_s = (chars_written(keeper) - before.2) as f64 / seconds / 1e6;
    drop(daemon);

    let per_s = |report: &serde_json::Value| report["ok_per_s"].as_f64().unwrap_or(0.0);
    let ratio = per_s(&ours) / per_s(&base);
    rows.push(
        row(
            "output-flood",
            "keeper CPU with `yes` under supervision",
            format!("{keeper_percent:.1} % of a core"),
        )
        .baseline("76-87 % before")
        .target("≤ 20 %", keeper_percent <= 20.0),
    );
    rows.push(row(
        "output-flood",
        "  `yes` itself; output copied",
        format!("{yes_percent:.1} %; {mb_per_s:.0} MB/s"),
    ));
    rows.push(
        row(
            "output-flood",
            "heartbeats/s while `yes` floods",
            format!("{:.0}", per_s(&ours)),
        )
        .baseline(format!("{:.0}", per_s(&base)))
        .target("≥ 0.75 × without", ratio >= 0.75),
    );
    rows.push(row(
        "output-flood",
        "  ratio to without (0.41-0.63 before)",
        format!("{ratio:.2}"),
    ));
}
