//! Heartbeat ingest while heartbeatd supervises 500 programs: the saturation load, as a ratio
//! to the ceiling measured in the same run.

use std::thread;
use std::time::{Duration, Instant};

use super::peers::{Heartbeatd, Supervisor, PROGRAMS};
use super::procs;
use crate::measure::{agents_config, load, start_ceiling};
use crate::{row, Phases, Row};

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
    let prefix = procs::prefix("in", 0);
    let mut heartbeatd = Heartbeatd::new(
        tempfile::tempdir().expect("a temp dir"),
        &prefix,
        None,
        &agents_config(AGENTS),
    );
    heartbeatd.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while procs::marked(&prefix).len() < PROGRAMS && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let url = heartbeatd.daemon.as_ref().expect("started").url();
    let ours = load(&url, AGENTS, 64, phases.saturation_s, phases.warmup_s, None);
    let supervised = procs::marked_map(&prefix).len();
    heartbeatd.stop();
    drop(heartbeatd);
    let ratio = ours["ok_per_s"].as_f64().unwrap_or(0.0) / base["ok_per_s"].as_f64().unwrap_or(f64::NAN);
    rows.push(
        row(
            "supervise",
            format!("heartbeats/s while supervising {PROGRAMS}"),
            format!("{:.0}", ours["ok_per_s"].as_f64().unwrap_or(0.0)),
        )
        .baseline(format!("{:.0}", base["ok_per_s"].as_f64().unwrap_or(0.0)))
        .target("≥ 0.75 × ceiling", ratio >= 0.75),
    );
    rows.push(row(
        "supervise",
        "  ratio to the ceiling (programs running)",
        format!("{ratio:.2} ({supervised})"),
    ));
}
