//! Steady: 100k agents at 10k/s with liveness on and /metrics scraped five times a second.

use std::thread;
use std::time::{Duration, Instant};

use crate::measure::*;
use crate::{row, Phases, Row};

/// 100k agents reporting every 10 s (10k/s) at steady state, scraped by /metrics every 0.2 s
/// with the per-agent limit (10k) reached: CPU and scrape time. (Compare the CPU with
/// the fleet scenario: the same load without scrapes.)
pub(crate) fn steady_fleet(phases: &Phases, rows: &mut Vec<Row>) {
    const AGENTS: usize = 100_000;
    eprintln!("steady fleet: {AGENTS} agents, every 10 s, /metrics scrapes …");
    let daemon = start_daemon(&format!(
        "queue_capacity = 1000\nheartbeat_interval_s = 10\n{}",
        agents_config(AGENTS)
    ));
    let url = daemon.url();
    let duration = phases.fleet_s.min(30.0);
    let loader = thread::spawn(move || load(&url, AGENTS, 64, duration, 0.0, Some(10_000.0)));
    thread::sleep(Duration::from_secs_f64(duration / 3.0));
    let pid = daemon.pid();
    let process_before = cpu_seconds(pid);
    let t0 = Instant::now();
    let (median, worst) = crate::scrape::scrape_ms(daemon.port, 10);
    let elapsed = t0.elapsed().as_secs_f64();
    let process = 100.0 * (cpu_seconds(pid) - process_before) / elapsed;
    let report = loader.join().unwrap();
    let stats = daemon.stats();
    drop(daemon);
    rows.push(row(
        "steady",
        "CPU % of one core, scraped every 0.2 s",
        format!("{process:.1}"),
    ));
    rows.push(
        row(
            "steady",
            "/metrics ms under load, 10k series (median of 10)",
            format!("{median:.1}"),
        )
        .target("≤ 30 ms", median <= 30.0),
    );
    rows.push(row("steady", "  worst of 10, ms", format!("{worst:.1}")));
    rows.push(row(
        "steady",
        "  agents up / down",
        format!(
            "{} / {}",
            stats["agents_by_status"]["up"], stats["agents_by_status"]["down"]
        ),
    ));
    rows.push(row(
        "steady",
        "  non-200 share",
        format!("{:.3} %", 100.0 * non_200_share(&report)),
    ));
}
