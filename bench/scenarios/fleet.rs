//! Fleet: 100k agents at a steady 10k heartbeats/s: CPU, RSS, queue depth, latency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::measure::*;
use crate::{row, Phases, Row};

pub(crate) fn fleet(phases: &Phases, rows: &mut Vec<Row>) {
    const AGENTS: usize = 100_000;
    const RATE: f64 = 10_000.0;
    eprintln!("fleet: {AGENTS} agents at {RATE}/s for {} s …", phases.fleet_s);
    let started = Instant::now();
    let daemon = start_daemon(&format!("queue_capacity = 1000\n{}", agents_config(AGENTS)));
    let start_s = started.elapsed().as_secs_f64();
    let capacity = daemon.stats()["queue_capacity"].as_u64().unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_queue(daemon.port, Arc::clone(&stop));
    let cpu_before = cpu_seconds(daemon.pid());
    let t0 = Instant::now();
    let report = load(&daemon.url(), AGENTS, 64, phases.fleet_s, 0.0, Some(RATE));
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = 100.0 * (cpu_seconds(daemon.pid()) - cpu_before) / elapsed;
    stop.store(true, Ordering::Relaxed);
    let max_depth = watcher.join().unwrap();
    let rss = memory_mib(daemon.pid(), "VmRSS:");
    let peak = memory_mib(daemon.pid(), "VmHWM:");
    let non_200 = non_200_share(&report);
    let stopped = stop_daemon(daemon);

    rows.push(row(
        "fleet",
        "start with 100k agents in the config, s",
        format!("{start_s:.1}"),
    ));
    rows.push(row("fleet", "CPU % of one core", format!("{cpu:.1}")).target("≤ 25 %", cpu <= 25.0));
    rows.push(row("fleet", "RSS MiB (peak)", format!("{rss:.0} ({peak:.0})")).target("≤ 256 MiB", peak <= 256.0));
    rows.push(
        row(
            "fleet",
            "max queue depth / capacity",
            format!("{max_depth} / {capacity}"),
        )
        .target("below capacity", max_depth < capacity),
    );
    // The same paced load on the ceiling: what the measurement itself (timer resolution,
    // scheduling on shared cores) adds to p99 at this rate.
    let (mut ceiling, ceiling_port) = start_ceiling(AGENTS);
    let ceiling_report = load(
        &format!("http://127.0.0.1:{ceiling_port}/heartbeat"),
        AGENTS,
        64,
        phases.fleet_s.min(10.0),
        0.0,
        Some(RATE),
    );
    let _ = ceiling.kill();
    let _ = ceiling.wait();
    rows.push(
        row(
            "fleet",
            "p99 latency ms (ceiling: same paced load)",
            format!("{:.2}", p99(&report)),
        )
        .baseline(format!("{:.2}", p99(&ceiling_report)))
        .target("≤ 2 ms", p99(&report) <= 2.0),
    );
    rows.push(
        row("fleet", "share of non-200 answers", format!("{:.3} %", 100.0 * non_200)).target("0", non_200 == 0.0),
    );
    rows.push(row(
        "fleet",
        "  sent/s (asked 10000)",
        format!("{:.0}", report["sent_per_s"].as_f64().unwrap_or(0.0)),
    ));
    rows.push(
        row(
            "fleet",
            "  exit code after SIGTERM (s to exit)",
            format!("{:?} ({:.1})", stopped.code, stopped.seconds),
        )
        .target("0", stopped.code == Some(0)),
    );
    if stopped.code != Some(0) {
        eprintln!("fleet: heartbeatd's log:\n{}", stopped.log);
    }
}
