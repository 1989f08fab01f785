//! Heartbeat ingest while heartbeatd supervises 500 programs: the saturation load, as a ratio
//! to the ceiling measured in the same run.

use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant};

use super::{heartbeatd_config, marked, PROGRAMS};
use crate::measure::*;
use crate::{row, Phases, Row};

/// Ingest while supervising 500 programs, against the ceiling of the same run.
pub(crate) fn ingest_while_supervising(phases: &Phases, rows: &mut Vec<Row>) {
    const AGENTS: usize = 10;
    eprintln!("supervise: ingest with {PROGRAMS} supervised programs …");
    let (mut ceiling, ceiling_port) = start_ceiling(AGENTS);
    let base = load(
        &format!("http://127.0.0.1:{ceiling_port}/heartbeat"),
        AGENTS,
        64,
        phases.saturation_s,
        phases.warmup_s,
        None,
    );
    let _ = ceiling.kill();
    let _ = ceiling.wait();
    let prefix = format!("i{}-", std::process::id());
    let config = heartbeatd_config(&prefix, None) + &agents_config(AGENTS);
    let daemon = start_daemon(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while marked(&prefix).len() < PROGRAMS && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let ours = load(&daemon.url(), AGENTS, 64, phases.saturation_s, phases.warmup_s, None);
    let supervised: HashSet<String> = marked(&prefix).into_iter().map(|(_, m)| m).collect();
    drop(daemon);
    let ratio = ours["ok_per_s"].as_f64().unwrap_or(0.0) / base["ok_per_s"].as_f64().unwrap_or(f64::NAN);
    rows.push(
        row(
            "supervise",
            "heartbeats/s while supervising 500",
            format!("{:.0}", ours["ok_per_s"].as_f64().unwrap_or(0.0)),
        )
        .baseline(format!("{:.0}", base["ok_per_s"].as_f64().unwrap_or(0.0)))
        .target("≥ 0.75 × ceiling", ratio >= 0.75),
    );
    rows.push(row(
        "supervise",
        "  ratio to the ceiling (programs running)",
        format!("{ratio:.2} ({})", supervised.len()),
    ));
}
