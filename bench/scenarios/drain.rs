//! Drain: SIGTERM under full load in write-through mode: nothing accepted is lost.

use std::thread;
use std::time::Duration;

use crate::measure::*;
use crate::{row, Row};

pub(crate) fn drain(rows: &mut Vec<Row>) {
    const AGENTS: usize = 100;
    eprintln!("drain: fill the queue, SIGTERM …");
    // Write-through (flush_interval_ms = 0): processing waits for the disk, so the queue fills
    // while the HTTP layer accepts at full speed. The worst case for a drain.
    let daemon = start_daemon(&format!(
        "flush_interval_ms = 0\nqueue_capacity = 100000\nshutdown_timeout_s = 120\n{}",
        agents_config(AGENTS)
    ));
    let url = daemon.url();
    let loader = thread::spawn(move || load(&url, AGENTS, 64, 3.0, 0.0, None));
    thread::sleep(Duration::from_secs(2));
    let depth = daemon.stats()["queue_depth"].as_u64().unwrap_or(0);
    let stopped = stop_daemon(daemon);
    let report = loader.join().unwrap();
    let accepted = all_ok(&report);
    let on_disk = heartbeats_on_disk(&stopped.data_dir());
    let lost = accepted.saturating_sub(on_disk);
    rows.push(row("drain", "queued at SIGTERM (write-through)", depth.to_string()));
    rows.push(row(
        "drain",
        "drain time s (SIGTERM to exit)",
        format!("{:.2}", stopped.seconds),
    ));
    rows.push(
        row(
            "drain",
            "heartbeats lost (200s not on disk)",
            format!("{lost} of {accepted}"),
        )
        .target("0", lost == 0 && stopped.code == Some(0)),
    );
    rows.push(row("drain", "  exit code", format!("{:?}", stopped.code)));
    if stopped.code != Some(0) {
        eprintln!("drain: heartbeatd's log:\n{}", stopped.log);
    }
}
