//! Slow readers: 200 clients ask for the largest answer (a page of `GET /agents`) and never
//! read it, and 16 followers read a chatty agent's output by offset (as `ctl tail -f` does),
//! while heartbeats flow at a steady 10k/s. Against the same heartbeat load without them, in
//! the same run: throughput, p99, and heartbeatd's resident memory during the attack and 10 s
//! after the clients leave.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::measure::*;
use crate::{row, Phases, Row};

const AGENTS: usize = 10_000;
const NON_READERS: usize = 200;
const FOLLOWERS: usize = 16;
const RATE: f64 = 10_000.0;

/// A client that asks for the largest page four times (pipelined) and never reads: about
/// 1 MB waits for it.
fn non_reader(port: u16) -> Option<TcpStream> {
    let request = "GET /agents?limit=10000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    heartbeatd_harness::non_reading_client(port, request, 4)
}

/// One GET over the control socket; the JSON body.
fn socket_get(socket: &Path, path: &str) -> Option<Value> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    serde_json::from_slice(&raw[at + 4..]).ok()
}

/// Follows `agent`'s output by offset until `stop`, as `ctl tail -f` does; counts the bytes.
fn follow(socket: PathBuf, agent: &str, stop: Arc<AtomicBool>, bytes: Arc<AtomicU64>) {
    let mut cursor: Option<(String, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some((file, offset)) = cursor.clone() else {
            cursor = socket_get(&socket, &format!("/agents/{agent}/log?lines=100")).and_then(|b| {
                Some((
                    b["log"]["next_file"].as_str()?.to_owned(),
                    b["log"]["next_offset"].as_u64()?,
                ))
            });
            if cursor.is_none() {
                thread::sleep(Duration::from_millis(500));
            }
            continue;
        };
        let path = format!("/agents/{agent}/log?file={file}&offset={offset}&length=1048576");
        match socket_get(&socket, &path) {
            Some(body) if body["log"].is_object() => {
                let log = &body["log"];
                bytes.fetch_add(log["data"].as_str().map_or(0, |d| d.len() as u64), Ordering::Relaxed);
                let next = (
                    log["next_file"].as_str().unwrap_or(&file).to_owned(),
                    log["next_offset"].as_u64().unwrap_or(offset),
                );
                if next.1 == offset {
                    thread::sleep(Duration::from_millis(500));
                }
                cursor = Some(next);
            }
            _ => thread::sleep(Duration::from_secs(1)),
        }
    }
}

pub(crate) fn slow_readers(phases: &Phases, rows: &mut Vec<Row>) {
    eprintln!("slow readers: {AGENTS} agents, {NON_READERS} clients that never read, {FOLLOWERS} log followers …");
    // A chatty supervised agent: about 1 MB of output a second.
    let chatty = "[[agents]]\nid = \"chatty\"\ncommand = [\"/bin/sh\", \"-c\", \"yes 'a line of output that a follower reads, with some text in it' | head -c 100000000 | while read -r l; do echo \\\"$l\\\"; done\"]\nlog_max_bytes = 67108864\n";
    let daemon = start_daemon(&format!("{}{chatty}", agents_config(AGENTS)));
    let url = daemon.url();
    let pid = daemon.pid();
    let socket = daemon.control_socket();
    let duration = phases.fleet_s.min(20.0);
    // Warm: every agent reports once, so pages carry full views.
    let _ = load(&url, AGENTS, 16, 3.0, 0.0, None);
    wait_quiet(&daemon);

    let quiet = load(&url, AGENTS, 64, duration, 1.0, Some(RATE));
    let rss_before = memory_mib(pid, "VmRSS");

    // The attack, then the same load.
    let stop = Arc::new(AtomicBool::new(false));
    let followed = Arc::new(AtomicU64::new(0));
    let followers: Vec<_> = (0..FOLLOWERS)
        .map(|_| {
            let (socket, stop, followed) = (socket.clone(), Arc::clone(&stop), Arc::clone(&followed));
            thread::spawn(move || follow(socket, "chatty", stop, followed))
        })
        .collect();
    let port = daemon.port;
    let mut holders: Vec<TcpStream> = (0..NON_READERS).filter_map(|_| non_reader(port)).collect();
    let peak = Arc::new(AtomicU64::new(0));
    let watching = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(memory_mib(pid, "VmRSS") as u64, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    thread::sleep(Duration::from_secs(2));
    let loaded = load(&url, AGENTS, 64, duration, 1.0, Some(RATE));
    // The clients that never read are still there (send_timeout_s drops them as they stall);
    // new ones keep coming during the whole run.
    holders.extend((0..NON_READERS).filter_map(|_| non_reader(port)));
    stop.store(true, Ordering::Relaxed);
    for follower in followers {
        let _ = follower.join();
    }
    let _ = watching.join();
    let rss_peak = peak.load(Ordering::Relaxed) as f64;
    drop(holders);
    let left = Instant::now();
    thread::sleep(Duration::from_secs(10).saturating_sub(left.elapsed()));
    let rss_after = memory_mib(pid, "VmRSS");
    let metrics = get_metrics(port);
    let counter = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let refused = counter("heartbeatd_costly_reads_refused_total ");
    let timeouts = counter("heartbeatd_http_send_timeouts_total ");
    drop(daemon);

    let (quiet_rate, loaded_rate) = (
        quiet["ok_per_s"].as_f64().unwrap_or(f64::NAN),
        loaded["ok_per_s"].as_f64().unwrap_or(0.0),
    );
    let ratio = loaded_rate / quiet_rate;
    rows.push(
        row(
            "slow-readers",
            format!("heartbeats/s at {RATE:.0}/s asked (baseline: no readers)"),
            format!("{loaded_rate:.0}"),
        )
        .baseline(format!("{quiet_rate:.0}"))
        .target("≥ 0.9 × baseline", ratio >= 0.9),
    );
    rows.push(row("slow-readers", "  ratio", format!("{ratio:.2}")));
    let (p99_loaded, p99_quiet) = (p99(&loaded), p99(&quiet));
    rows.push(
        row("slow-readers", "p99 latency ms", format!("{p99_loaded:.2}"))
            .baseline(format!("{p99_quiet:.2}"))
            .target("≤ 3 × baseline", p99_loaded <= 3.0 * p99_quiet),
    );
    rows.push(
        row(
            "slow-readers",
            "RSS growth during the attack, MiB",
            format!("{:.1}", rss_peak - rss_before),
        )
        .baseline(format!("{rss_before:.1} before"))
        .target("≤ 64 MiB", rss_peak - rss_before <= 64.0),
    );
    rows.push(
        row(
            "slow-readers",
            "RSS 10 s after they left, MiB over before",
            format!("{:.1}", rss_after - rss_before),
        )
        .target("≤ 16 MiB", rss_after - rss_before <= 16.0),
    );
    rows.push(row(
        "slow-readers",
        "  log bytes followed / large reads refused (429) / dropped by send_timeout_s",
        format!(
            "{:.1} MB / {refused:.0} / {timeouts:.0}",
            followed.load(Ordering::Relaxed) as f64 / 1e6
        ),
    ));
    rows.push(row(
        "slow-readers",
        "  non-200 share under attack",
        format!("{:.3} %", 100.0 * non_200_share(&loaded)),
    ));
}
