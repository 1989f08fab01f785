//! The bench's own measuring tools, on top of the shared harness (`heartbeatd-harness`):
//! the load generator and wrk, the ceiling server, `/proc` readers, and report helpers.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) use heartbeatd_harness::Daemon;

/// A daemon for a scenario: the shared harness's, with logging at WARN (a scenario reads the
/// log only when something went wrong).
pub(crate) fn start_daemon(config: &str) -> Daemon {
    Daemon::start(&format!("log_level = \"warn\"\n{config}"))
}

/// A heartbeatd process after SIGTERM; its data directory lives as long as this.
pub(crate) struct Stopped {
    pub(crate) code: Option<i32>,
    pub(crate) seconds: f64,
    pub(crate) log: String,
    daemon: Daemon,
}

impl Stopped {
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.daemon.data_dir()
    }
}

/// SIGTERM, then wait.
pub(crate) fn stop_daemon(mut daemon: Daemon) -> Stopped {
    let (took, status, log) = daemon.stop_timed();
    Stopped {
        code: status.code(),
        seconds: took.as_secs_f64(),
        log,
        daemon,
    }
}

pub(crate) const CEILING: &str = env!("CARGO_BIN_EXE_heartbeatd-ceiling");

pub(crate) const LOAD: &str = env!("CARGO_BIN_EXE_heartbeatd-load");

/// A minimal HTTP GET of a JSON document (no client library in the bench's hot path).
pub(crate) fn get_json(port: u16, path: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
}

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    (ticks(11) + ticks(12)) / clock_ticks()
}

pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory in MiB (`VmRSS`, or `VmHWM` for the peak).
pub(crate) fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Bytes a process has written to storage so far (`write_bytes` of /proc/<pid>/io).
pub(crate) fn written_bytes(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `heartbeatd-load --json` and returns its report.
pub(crate) fn load(
    url: &str,
    agents: usize,
    connections: usize,
    duration_s: f64,
    warmup_s: f64,
    rate: Option<f64>,
) -> Value {
    let mut cmd = Command::new(LOAD);
    cmd.args(["--url", url, "--json"])
        .args([
            "--agents",
            &agents.to_string(),
            "--connections",
            &connections.to_string(),
        ])
        .args(["--duration", &duration_s.to_string(), "--warmup", &warmup_s.to_string()]);
    if let Some(rate) = rate {
        cmd.args(["--rate", &rate.to_string()]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "heartbeatd-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn agents_config(agents: usize) -> String {
    let out = Command::new(LOAD)
        .args(["--agents", &agents.to_string(), "--print-agents-config"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn status_count(report: &Value, key: &str, status: &str) -> u64 {
    report[key][status].as_u64().unwrap_or(0)
}

pub(crate) fn all_ok(report: &Value) -> u64 {
    status_count(report, "by_status", "200") + status_count(report, "warmup_by_status", "200")
}

pub(crate) fn p99(report: &Value) -> f64 {
    report["latency"]["p99_ms"].as_f64().unwrap_or(f64::NAN)
}

pub(crate) fn non_200_share(report: &Value) -> f64 {
    let sent = report["sent"].as_f64().unwrap_or(0.0);
    if sent == 0.0 {
        return 0.0;
    }
    (sent - status_count(report, "by_status", "200") as f64) / sent
}

pub(crate) fn status_share(report: &Value, status: &str) -> f64 {
    let sent = report["sent"].as_f64().unwrap_or(0.0);
    if sent == 0.0 {
        0.0
    } else {
        status_count(report, "by_status", status) as f64 / sent
    }
}

/// What wrk measured.
pub(crate) struct WrkFigures {
    pub(crate) requests_per_s: f64,
    pub(crate) p99_ms: f64,
    /// Answers that were not 2xx/3xx: non-zero means the script's requests were refused.
    pub(crate) non_2xx: u64,
}

/// wrk against `url` with the same bodies as heartbeatd-load, or None when wrk is not there.
pub(crate) fn wrk(url: &str, agents: usize, duration_s: f64) -> Option<WrkFigures> {
    let script = std::env::temp_dir().join(format!("heartbeatd-bench-{}.lua", std::process::id()));
    let ids: Vec<String> = (1..=agents).map(|n| format!("\"load-{n:06}\"")).collect();
    fs::write(
        &script,
        format!(
            "local ids = {{{}}}\nlocal i = 0\nwrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             request = function()\n  i = i % #ids + 1\n  return wrk.format(nil, nil, nil, '{{\"agent_id\":\"' .. ids[i] .. '\",\"pid\":10001,\"status\":\"running\",\"cpu\":12.5,\"memory\":67108864}}')\nend\n\
             done = function(summary, latency, requests)\n  io.write(\"non-2xx: \", summary.errors.status, \"\\n\")\nend\n",
            ids.join(",")
        ),
    )
    .ok()?;
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c64",
            &format!("-d{}s", duration_s.round() as u64),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .ok()?;
    let _ = fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str, index: usize| -> Option<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))?
            .split_whitespace()
            .nth(index)
            .map(str::to_owned)
    };
    Some(WrkFigures {
        requests_per_s: field("Requests/sec:", 1)?.parse().ok()?,
        p99_ms: parse_wrk_time(&field("99%", 1)?),
        non_2xx: field("non-2xx:", 1)?.parse().ok()?,
    })
}

/// wrk prints times like `1.23ms`, `850.00us`, `1.02s`.
pub(crate) fn parse_wrk_time(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().map_or(f64::NAN, |v| v * factor)
}

/// Starts the ceiling server; returns it and its port.
pub(crate) fn start_ceiling(agents: usize) -> (Child, u16) {
    let mut child = Command::new(CEILING)
        .args(["--port", "0", "--agents", &agents.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    (child, port)
}

/// Waits until every accepted heartbeat is processed; returns the stats then.
pub(crate) fn wait_quiet(daemon: &Daemon) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = daemon.stats();
        if stats["queue_depth"] == 0 && stats["total_processed"] == stats["total_received"] || Instant::now() > deadline
        {
            return stats;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Samples the stats' queue depth every 50 ms until stopped; returns the maximum.
pub(crate) fn watch_queue(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    let max = Arc::new(AtomicU64::new(0));
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Some(stats) = get_json(port, "/heartbeat/stats") {
                max.fetch_max(stats["queue_depth"].as_u64().unwrap_or(0), Ordering::Relaxed);
            }
            thread::sleep(Duration::from_millis(50));
        }
        max.load(Ordering::Relaxed)
    })
}

/// The text of GET /metrics (a minimal HTTP client, like [`get_json`]).
pub(crate) fn get_metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// The sum of every agent's `heartbeat_count` on disk.
pub(crate) fn heartbeats_on_disk(data: &Path) -> u64 {
    fs::read_dir(data.join("agents"))
        .map(|entries| {
            entries
                .filter_map(|e| fs::read(e.ok()?.path()).ok())
                .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .map(|state| state["heartbeat_count"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}
