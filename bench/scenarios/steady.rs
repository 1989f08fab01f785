//! Steady: 100k agents at 10k/s with liveness on and /metrics scraped twice a second.

use std::thread;
use std::time::{Duration, Instant};

use crate::measure::*;
use crate::{row, Phases, Row};

/// 100k agents reporting every 10 s (10k/s) at steady state, scraped by /metrics every half
/// second with the per-agent limit (10k) reached: CPU and scrape time. (Compare the CPU with
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
    let mut scrape_ms = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let text = get_metrics(daemon.port);
        scrape_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(text.contains("heartbeatd_agent_up{"), "a scrape with per-agent series");
        thread::sleep(Duration::from_millis(500));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let process = 100.0 * (cpu_seconds(pid) - process_before) / elapsed;
    let report = loader.join().unwrap();
    let stats = daemon.stats();
    drop(daemon);
    scrape_ms.sort_by(f64::total_cmp);
    let median = scrape_ms[scrape_ms.len() / 2];
    rows.push(row(
        "steady",
        "CPU % of one core, scraped every 0.5 s",
        format!("{process:.1}"),
    ));
    rows.push(
        row(
            "steady",
            "/metrics scrape ms (median of 5, 10k agents)",
            format!("{median:.1}"),
        )
        .target("≤ 50 ms", median <= 50.0),
    );
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
