//! Scrape: `GET /metrics` with 10k per-agent series at rest, against a daemon with 10 agents
//! in the same run (what a scrape costs without per-agent series).

use std::thread;
use std::time::{Duration, Instant};

use crate::measure::*;
use crate::{row, Row};

/// Median and worst of `n` scrapes, 200 ms apart, in ms.
pub(crate) fn scrape_ms(port: u16, n: usize) -> (f64, f64) {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let started = Instant::now();
            let text = get_metrics(port);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            assert!(text.contains("heartbeatd_agent_up{"), "a scrape with per-agent series");
            thread::sleep(Duration::from_millis(200));
            ms
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() - 1])
}

/// A daemon whose `agents` agents all reported once and stay `up` (hour-long interval), at
/// rest: its queue empty and the checkpoint after the burst done.
fn at_rest(agents: usize) -> Daemon {
    let daemon = start_daemon(&format!("heartbeat_interval_s = 3600\n{}", agents_config(agents)));
    let _ = load(&daemon.url(), agents, 16, 3.0, 0.0, None);
    wait_quiet(&daemon);
    // The checkpoint writes every agent's file once after the burst: wait until heartbeatd
    // uses less than 5 % of a core over half a second (at most 60 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = cpu_seconds(daemon.pid());
        thread::sleep(Duration::from_millis(500));
        if (cpu_seconds(daemon.pid()) - before) / 0.5 < 0.05 || Instant::now() > deadline {
            break daemon;
        }
    }
}

pub(crate) fn scrape_at_rest(rows: &mut Vec<Row>) {
    eprintln!("scrape: /metrics with 10k agents at rest, and with 10 …");
    let small = at_rest(10);
    let (small_median, _) = scrape_ms(small.port, 10);
    stop_daemon(small);
    let large = at_rest(10_000);
    let (median, worst) = scrape_ms(large.port, 20);
    let series = get_metrics(large.port)
        .lines()
        .filter(|l| l.starts_with("heartbeatd_agent_"))
        .count();
    stop_daemon(large);
    rows.push(
        row(
            "scrape",
            "/metrics ms at rest, 10k agents (median of 20)",
            format!("{median:.1}"),
        )
        .baseline(format!("{small_median:.1} (10 agents)"))
        .target("≤ 15 ms", median <= 15.0),
    );
    rows.push(row("scrape", "  worst of 20, ms", format!("{worst:.1}")));
    rows.push(row("scrape", "  per-agent samples in a scrape", series.to_string()));
}
