//! Alert backlog: heartbeats at full speed while 10k agents are down and every
//! `alertmanager_url` blackholes its requests (accepts the connection, never answers), against
//! the same run without Alertmanager. Then the blackholes answer again: does every agent's
//! alert arrive?
//!
//! `alert_resend_s = 1` (its lowest): every firing alert is sent again each second, the most
//! pressure a configuration can put on the backlog.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::measure::*;
use crate::{row, Phases, Row};

/// Agents that go down 2 s after start and stay down.
const DOWN: usize = 10_000;
/// Agents the load generator reports for (never down).
const LOADED: usize = 100;

/// An Alertmanager that blackholes until `answering` is set; then it answers 200 and records
/// the newest state (firing or not) of each agent's alert.
struct Blackhole {
    port: u16,
    answering: Arc<AtomicBool>,
    newest: Arc<Mutex<HashMap<String, bool>>>,
}

impl Blackhole {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answering = Arc::new(AtomicBool::new(false));
        let newest = Arc::new(Mutex::new(HashMap::new()));
        let (on, seen) = (Arc::clone(&answering), Arc::clone(&newest));
        thread::spawn(move || {
            // Blackholed connections are held open, unread, until the blackhole ends.
            let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
            for stream in listener.incoming().flatten() {
                if !on.load(Ordering::SeqCst) {
                    held.lock().unwrap().push(stream);
                    continue;
                }
                held.lock().unwrap().clear();
                let seen = Arc::clone(&seen);
                thread::spawn(move || answer(stream, &seen));
            }
        });
        Self {
            port,
            answering,
            newest,
        }
    }

    fn firing(&self) -> usize {
        self.newest.lock().unwrap().values().filter(|f| **f).count()
    }
}

/// Answers 200 to each request on `stream`, recording its alerts.
fn answer(stream: TcpStream, newest: &Mutex<HashMap<String, bool>>) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let alerts: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
        let now = chrono::Utc::now();
        let mut newest = newest.lock().unwrap();
        for alert in alerts {
            let ends: chrono::DateTime<chrono::Utc> = alert["endsAt"].as_str().unwrap_or("").parse().unwrap_or(now);
            let agent = alert["labels"]["agent_id"].as_str().unwrap_or("").to_owned();
            newest.insert(agent, ends > now);
        }
        drop(newest);
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

fn down_id(n: usize) -> String {
    format!("down-{n:05}")
}

/// One heartbeat for each of `ids`, over one keep-alive connection.
fn post_once_each(port: u16, ids: impl Iterator<Item = String>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for id in ids {
        let body = heartbeatd_harness::heartbeat(&id, 1).to_string();
        // One write per request (Nagle's algorithm would hold a second one back).
        let request = format!(
            "POST /heartbeat HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(request.as_bytes()).unwrap();
        let (mut status, mut length, mut line) = (String::new(), 0usize, String::new());
        reader.read_line(&mut status).unwrap();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut answer = vec![0; length];
        reader.read_exact(&mut answer).unwrap();
        assert!(status.contains(" 200 "), "{id}: {status}");
    }
}

/// What one run measured.
struct Run {
    ok_per_s: f64,
    p99_ms: f64,
    rss_mib: f64,
    peak_mib: f64,
    /// Agents whose firing alert reached every Alertmanager within 30 s of their return,
    /// and how long that took.
    delivered: Option<(usize, f64)>,
}

fn run(urls: usize, phases: &Phases) -> Run {
    let blackholes: Vec<Blackhole> = (0..urls).map(|_| Blackhole::start()).collect();
    let alertmanager = if urls == 0 {
        String::new()
    } else {
        let list: Vec<String> = blackholes
            .iter()
            .map(|b| format!("http://127.0.0.1:{}", b.port))
            .collect();
        format!("alertmanager_url = \"{}\"\nalert_resend_s = 1\n", list.join(","))
    };
    // Checkpoints every 2 s: the history samples waiting in memory for one then stay a few
    // MiB in every run, so the RSS of two runs differs by the alert backlog, not by how many
    // heartbeats each took since its last checkpoint.
    let mut config = format!(
        "heartbeat_interval_s = 3600\ncheckpoint_interval_s = 2\n{alertmanager}{}",
        agents_config(LOADED)
    );
    for n in 0..DOWN {
        config.push_str(&format!(
            "[[agents]]\nid = \"{}\"\nheartbeat_interval_s = 1\ngrace_s = 1\n",
            down_id(n)
        ));
    }
    let daemon = start_daemon(&config);
    // Every down agent is seen once, then goes silent: down 2 s later.
    post_once_each(daemon.port, (0..DOWN).map(down_id));
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.stats()["agents_by_status"]["down"].as_u64().unwrap_or(0) < DOWN as u64 {
        assert!(
            Instant::now() < deadline,
            "the agents never went down: {}",
            daemon.stats()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let report = load(
        &daemon.url(),
        LOADED,
        64,
        phases.fleet_s.min(20.0),
        phases.warmup_s,
        None,
    );
    let rss_mib = memory_mib(daemon.pid(), "VmRSS:");
    let peak_mib = memory_mib(daemon.pid(), "VmHWM:");
    let delivered = (urls > 0).then(|| {
        let back = Instant::now();
        for b in &blackholes {
            b.answering.store(true, Ordering::SeqCst);
        }
        let everywhere = || blackholes.iter().map(Blackhole::firing).min().unwrap_or(0);
        while everywhere() < DOWN && back.elapsed() < Duration::from_secs(30) {
            thread::sleep(Duration::from_millis(100));
        }
        (everywhere(), back.elapsed().as_secs_f64())
    });
    drop(daemon);
    Run {
        ok_per_s: report["ok_per_s"].as_f64().unwrap_or(0.0),
        p99_ms: p99(&report),
        rss_mib,
        peak_mib,
        delivered,
    }
}

pub(crate) fn alert_backlog(phases: &Phases, rows: &mut Vec<Row>) {
    eprintln!("alert backlog: {DOWN} agents down, unloaded run …");
    let healthy = run(0, phases);
    rows.push(row(
        "alert-backlog",
        "unloaded: heartbeats/s, p99 ms, RSS MiB",
        format!("{:.0}, {:.2}, {:.0}", healthy.ok_per_s, healthy.p99_ms, healthy.rss_mib),
    ));
    for urls in [1, 4] {
        eprintln!("alert backlog: {DOWN} agents down, {urls} blackholed alertmanager_url …");
        let attacked = run(urls, phases);
        let label = if urls == 1 {
            "1 blackholed URL"
        } else {
            "4 blackholed URLs"
        };
        let ratio = attacked.ok_per_s / healthy.ok_per_s;
        rows.push(
            row(
                "alert-backlog",
                format!("{label}: throughput ratio"),
                format!("{ratio:.2}"),
            )
            .baseline(format!("{:.0}/s", attacked.ok_per_s))
            .target("≥ 0.9", ratio >= 0.9),
        );
        let p99_ratio = attacked.p99_ms / healthy.p99_ms;
        rows.push(
            row(
                "alert-backlog",
                format!("  {label}: p99 ratio"),
                format!("{p99_ratio:.2}"),
            )
            .baseline(format!("{:.2} ms", attacked.p99_ms))
            .target("≤ 3", p99_ratio <= 3.0),
        );
        let growth = attacked.rss_mib - healthy.rss_mib;
        rows.push(
            row(
                "alert-backlog",
                format!("  {label}: RSS growth MiB"),
                format!("{growth:.0}"),
            )
            .baseline(format!("{:.0} (peak {:.0})", attacked.rss_mib, attacked.peak_mib))
            .target("≤ 64 MiB", growth <= 64.0),
        );
        if let Some((arrived, seconds)) = attacked.delivered {
            rows.push(
                row(
                    "alert-backlog",
                    format!("  {label}: firing alerts at every AM once back"),
                    format!("{arrived} of {DOWN}"),
                )
                .baseline(format!("{seconds:.1} s"))
                .target("all, ≤ 30 s", arrived == DOWN),
            );
        }
    }
}
