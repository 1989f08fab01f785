//! Status page: first paint of `GET /` in a real headless Chromium with 10k agents that all
//! reported, while they go on reporting (a steady load), against the same page with 10
//! agents in the same run. The page's first table is the worst-first listing of the whole
//! fleet (`GET /agents?sort=worst`).

use std::thread;

use heartbeatd_harness::browser::Browser;

use crate::measure::*;
use crate::{row, Row};

/// Heartbeats per second sent while the page loads.
const LOAD_RATE: f64 = 5000.0;

/// Loads the page on a daemon with `agents` agents that reported once each, under a steady
/// load of [`LOAD_RATE`] heartbeats/s; the page's own time from request to the first drawn
/// table, ms (median of 3 loads, each in a new browser), and the heartbeats/s the load got
/// answered 200 meanwhile (that the load was there).
fn first_draw_ms(agents: usize) -> (f64, f64) {
    let daemon = start_daemon(&agents_config(agents));
    // Every agent reports once (two seconds of load reach them all).
    let _ = load(&daemon.url(), agents, 16, 2.0, 0.0, None);
    let url = format!("http://127.0.0.1:{}/", daemon.port);
    // The load goes on while the page loads (three browsers take well under 20 s).
    let heartbeats = daemon.url();
    let background = thread::spawn(move || load(&heartbeats, agents, 8, 20.0, 0.0, Some(LOAD_RATE)));
    let mut draws: Vec<f64> = (0..3)
        .map(|_| {
            let mut browser = Browser::start();
            let drawn = browser.open(&url, "the first table", "document.body.dataset.firstDrawMs");
            let rows = browser.eval("document.querySelectorAll('#agents tr[data-id]').length");
            assert_eq!(rows.as_u64(), Some(agents.min(50) as u64), "one page of rows");
            drawn.as_str().and_then(|ms| ms.parse::<f64>().ok()).unwrap_or(f64::NAN)
        })
        .collect();
    let answered = background.join().unwrap()["ok_per_s"].as_f64().unwrap_or(0.0);
    stop_daemon(daemon);
    draws.sort_by(f64::total_cmp);
    (draws[1], answered)
}

pub(crate) fn status_page(rows: &mut Vec<Row>) {
    eprintln!("status page: first paint with 10 and 10k agents in headless chromium …");
    let (small, _) = first_draw_ms(10);
    let (large, answered) = first_draw_ms(10_000);
    rows.push(
        row(
            "status",
            "first paint with data, 10k agents, under 5k heartbeats/s, ms",
            format!("{large:.0}"),
        )
        .baseline(format!("{small:.0} (10 agents); the load got {answered:.0}/s answered"))
        .target("≤ 1000 ms", large <= 1000.0),
    );
}
