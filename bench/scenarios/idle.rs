//! Idle: a few agents reporting every 10 s: RSS and CPU when nothing happens.

use std::thread;
use std::time::{Duration, Instant};

use crate::measure::*;
use crate::{row, Phases, Row};

pub(crate) fn idle(phases: &Phases, rows: &mut Vec<Row>) {
    const AGENTS: usize = 10;
    eprintln!(
        "idle host: {AGENTS} agents, one heartbeat each every 10 s, {} s …",
        phases.idle_s
    );
    let daemon = start_daemon(&agents_config(AGENTS));
    thread::sleep(Duration::from_secs(1));
    let cpu_before = cpu_seconds(daemon.pid());
    let t0 = Instant::now();
    // 10 agents × 1 per 10 s = 1 per second; 10 connections like 10 agents.
    let report = load(&daemon.url(), AGENTS, AGENTS, phases.idle_s, 0.0, Some(1.0));
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = 100.0 * (cpu_seconds(daemon.pid()) - cpu_before) / elapsed;
    let rss = memory_mib(daemon.pid(), "VmRSS:");
    drop(daemon);
    rows.push(row("idle", "RSS MiB", format!("{rss:.1}")).target("≤ 16 MiB", rss <= 16.0));
    rows.push(row("idle", "CPU % of one core", format!("{cpu:.3}")).target("≤ 0.1 %", cpu <= 0.1));
    rows.push(row(
        "idle",
        "  heartbeats answered 200",
        status_count(&report, "by_status", "200").to_string(),
    ));
}
