//! Kill -9: how much time a `kill -9` loses on this machine, against `flush_interval_ms`.
//!
//! The tests check the exact promise (every heartbeat counted in `total_synced` before the
//! kill is on disk after the restart), which holds under any load. How long before the kill
//! the last heartbeat on disk was received depends on the journal thread getting the CPU in
//! time: that is this figure. Four agents, each with a sequential client; `kill -9` at a
//! different moment each round; a restart replays the journal. The gap of an agent is the
//! time between its last 200 and its `last_seen` on disk.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Utc};
use heartbeatd_harness::{heartbeat, http, send_signal};

use crate::measure::*;
use crate::{row, Row};

const AGENTS: [&str; 4] = ["kill-0", "kill-1", "kill-2", "kill-3"];
const FLUSH_MS: i64 = 100;
const ROUNDS: u64 = 20;

pub(crate) fn kill_loss(rows: &mut Vec<Row>) {
    eprintln!("kill -9: {ROUNDS} kills under load, flush_interval_ms = {FLUSH_MS} …");
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!("log_level = \"warn\"\nflush_interval_ms = {FLUSH_MS}\ncheckpoint_interval_s = 1\n");
    for id in AGENTS {
        config.push_str(&format!("[[agents]]\nid = \"{id}\"\n"));
    }
    let (mut gaps, mut accepted, mut on_disk_total) = (Vec::new(), 0u64, 0u64);
    for round in 0..ROUNDS {
        let data = dir.path().join("data");
        let count = |id: &str| -> u64 {
            fs::read(data.join("agents").join(format!("{id}.json")))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["heartbeat_count"].as_u64())
                .unwrap_or(0)
        };
        let before: Vec<u64> = AGENTS.iter().map(|id| count(id)).collect();
        let mut daemon = Daemon::start_in(dir.path(), &config);
        let stop = Arc::new(AtomicBool::new(false));
        let port = daemon.port;
        let clients: Vec<_> = AGENTS
            .iter()
            .map(|&id| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut last_200: Option<DateTime<Utc>> = None;
                    let mut answered = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let body = heartbeat(id, answered).to_string();
                        match http(port, "POST", "/heartbeat", Some(&body)) {
                            Some(reply) if reply.status == 200 => {
                                answered += 1;
                                last_200 = Some(Utc::now());
                            }
                            _ => break,
                        }
                    }
                    (last_200, answered)
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(300 + (round * 97) % 700));
        send_signal(daemon.pid(), "KILL");
        stop.store(true, Ordering::Relaxed);
        daemon.wait_exit(Duration::from_secs(10));
        let answers: Vec<(Option<DateTime<Utc>>, u64)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        drop(daemon);
        let mut restarted = Daemon::start_in(dir.path(), &config);
        restarted.stop_with("TERM");
        drop(restarted);
        for (i, (last_200, answered)) in answers.into_iter().enumerate() {
            accepted += answered;
            on_disk_total += count(AGENTS[i]) - before[i];
            let Some(last_200) = last_200 else { continue };
            let state: serde_json::Value =
                serde_json::from_slice(&fs::read(data.join("agents").join(format!("{}.json", AGENTS[i]))).unwrap())
                    .unwrap();
            let last_seen: DateTime<Utc> = state["last_seen"].as_str().unwrap_or("").parse().unwrap_or_default();
            gaps.push((last_200 - last_seen).num_milliseconds());
        }
    }
    gaps.sort_unstable();
    let worst = gaps.last().copied().unwrap_or(0);
    let median = gaps.get(gaps.len() / 2).copied().unwrap_or(0);
    rows.push(
        row(
            "kill-9",
            "worst gap ms: last 200 to last heartbeat on disk",
            worst.to_string(),
        )
        .baseline(format!("flush {FLUSH_MS} ms"))
        .target("≤ flush_interval_ms", worst <= FLUSH_MS),
    );
    let over = gaps.iter().filter(|g| **g > FLUSH_MS).count();
    rows.push(row("kill-9", "  median gap ms", median.to_string()));
    rows.push(row(
        "kill-9",
        "  gaps over flush_interval_ms",
        format!("{over} of {}", gaps.len()),
    ));
    rows.push(row(
        "kill-9",
        "  heartbeats on disk of those answered 200",
        format!("{on_disk_total} of {accepted}"),
    ));
}
