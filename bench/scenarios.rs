//! `make bench`: heartbeatd's performance scenarios, printed as one table.
//!
//! Every figure comes from the real binaries started here: `heartbeatd`, the ceiling server
//! `heartbeatd-ceiling` (actix-web, the same parse and checks, nothing else) and the load
//! generator `heartbeatd-load`; `wrk` checks the load generator. Speed is reported as a ratio
//! to the ceiling measured in the same run, because absolute numbers drift between machines
//! and runs. Targets are printed beside the figures; nothing here asserts a time.
//!
//! `BENCH_QUICK=1` shortens every phase (for a smoke run); the README's figures come from a
//! full run. Arguments name scenarios to run (`saturation fleet idle drain history
//! steady big-start`); none runs them all.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const HEARTBEATD: &str = env!("CARGO_BIN_EXE_heartbeatd");
const CEILING: &str = env!("CARGO_BIN_EXE_heartbeatd-ceiling");
const LOAD: &str = env!("CARGO_BIN_EXE_heartbeatd-load");

/// Phase lengths and sizes; shortened by `BENCH_QUICK=1`.
struct Phases {
    warmup_s: f64,
    saturation_s: f64,
    fleet_s: f64,
    idle_s: f64,
    /// Agents with full histories on disk for the start-up scenario.
    big_start_agents: usize,
}

impl Phases {
    fn from_env() -> Self {
        if std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1") {
            Self {
                warmup_s: 1.0,
                saturation_s: 3.0,
                fleet_s: 10.0,
                idle_s: 10.0,
                big_start_agents: 10_000,
            }
        } else {
            Self {
                warmup_s: 3.0,
                saturation_s: 10.0,
                fleet_s: 60.0,
                idle_s: 30.0,
                big_start_agents: 100_000,
            }
        }
    }
}

/// One row of the final table.
struct Row {
    scenario: &'static str,
    metric: String,
    heartbeatd: String,
    baseline: String,
    target: &'static str,
    verdict: &'static str,
}

fn row(scenario: &'static str, metric: impl Into<String>, heartbeatd: impl Into<String>) -> Row {
    Row {
        scenario,
        metric: metric.into(),
        heartbeatd: heartbeatd.into(),
        baseline: String::new(),
        target: "",
        verdict: "",
    }
}

impl Row {
    fn baseline(mut self, value: impl Into<String>) -> Self {
        self.baseline = value.into();
        self
    }

    fn target(mut self, target: &'static str, met: bool) -> Self {
        self.target = target;
        self.verdict = if met { "met" } else { "MISSED" };
        self
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A heartbeatd process after SIGTERM.
struct Stopped {
    code: Option<i32>,
    seconds: f64,
    log: String,
    dir: tempfile::TempDir,
}

impl Stopped {
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// A heartbeatd process started for one scenario.
struct Daemon {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = dir.path().join("heartbeatd.toml");
        let data = dir.path().join("data");
        fs::write(
            &path,
            format!(
                "http_port = {port}\ndata_dir = {:?}\nlog_level = \"warn\"\n{config}",
                data.display().to_string()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("heartbeatd.log")).unwrap();
        let child = Command::new(HEARTBEATD)
            .arg("--config")
            .arg(&path)
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Self { child, port, dir };
        daemon.wait_ready(Duration::from_secs(120));
        daemon
    }

    fn wait_ready(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        while get_json(self.port, "/heartbeat/stats").is_none() {
            assert!(started.elapsed() < timeout, "heartbeatd did not start:\n{}", self.log());
            thread::sleep(Duration::from_millis(5));
        }
        started.elapsed()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/heartbeat", self.port)
    }

    fn stats(&self) -> Value {
        get_json(self.port, "/heartbeat/stats").expect("stats")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("heartbeatd.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait. The data directory lives as long as the returned value.
    fn stop(mut self) -> Stopped {
        let started = Instant::now();
        signal(self.pid(), "TERM");
        let status = self.child.wait().unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let log = self.log();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Stopped {
            code: status.code(),
            seconds,
            log,
            dir,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

/// A minimal HTTP GET of a JSON document (no client library in the bench's hot path).
fn get_json(port: u16, path: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split("\r\n\r\n").nth(1)?).ok()
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
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

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory in MiB (`VmRSS`, or `VmHWM` for the peak).
fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs `heartbeatd-load --json` and returns its report.
fn load(url: &str, agents: usize, connections: usize, duration_s: f64, warmup_s: f64, rate: Option<f64>) -> Value {
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

fn agents_config(agents: usize) -> String {
    let out = Command::new(LOAD)
        .args(["--agents", &agents.to_string(), "--print-agents-config"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn status_count(report: &Value, key: &str, status: &str) -> u64 {
    report[key][status].as_u64().unwrap_or(0)
}

fn all_ok(report: &Value) -> u64 {
    status_count(report, "by_status", "200") + status_count(report, "warmup_by_status", "200")
}

fn p99(report: &Value) -> f64 {
    report["latency"]["p99_ms"].as_f64().unwrap_or(f64::NAN)
}

fn non_200_share(report: &Value) -> f64 {
    let sent = report["sent"].as_f64().unwrap_or(0.0);
    if sent == 0.0 {
        return 0.0;
    }
    (sent - status_count(report, "by_status", "200") as f64) / sent
}

/// What wrk measured.
struct WrkFigures {
    requests_per_s: f64,
    p99_ms: f64,
    /// Answers that were not 2xx/3xx: non-zero means the script's requests were refused.
    non_2xx: u64,
}

/// wrk against `url` with the same bodies as heartbeatd-load, or None when wrk is not there.
fn wrk(url: &str, agents: usize, duration_s: f64) -> Option<WrkFigures> {
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
fn parse_wrk_time(text: &str) -> f64 {
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
fn start_ceiling(agents: usize) -> (Child, u16) {
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

fn saturation(phases: &Phases, rows: &mut Vec<Row>) {
    const AGENTS: usize = 10;
    eprintln!("saturation: ceiling …");
    let (mut ceiling, ceiling_port) = start_ceiling(AGENTS);
    let ceiling_url = format!("http://127.0.0.1:{ceiling_port}/heartbeat");
    let base = load(&ceiling_url, AGENTS, 64, phases.saturation_s, phases.warmup_s, None);
    let base_wrk = wrk(&ceiling_url, AGENTS, phases.saturation_s);
    let _ = ceiling.kill();
    let _ = ceiling.wait();

    eprintln!("saturation: heartbeatd …");
    // The built-in defaults (workers, queue_capacity, flush interval ...): what a user who
    // never tunes gets. Only the agents are configured.
    let daemon = Daemon::start(&agents_config(AGENTS));
    let ours = load(&daemon.url(), AGENTS, 64, phases.saturation_s, phases.warmup_s, None);
    let stats = wait_quiet(&daemon);
    let ours_wrk = wrk(&daemon.url(), AGENTS, phases.saturation_s);
    let after_wrk = wait_quiet(&daemon);
    drop(daemon);

    let ok_rate = ours["ok_per_s"].as_f64().unwrap_or(0.0);
    let base_rate = base["ok_per_s"].as_f64().unwrap_or(f64::NAN);
    let ratio = ok_rate / base_rate;
    rows.push(
        row(
            "saturation",
            "heartbeats/s answered 200 (heartbeatd-load)",
            format!("{ok_rate:.0}"),
        )
        .baseline(format!("{base_rate:.0}"))
        .target("≥ 0.85 × ceiling (built-in defaults)", ratio >= 0.85),
    );
    rows.push(row("saturation", "  ratio to the ceiling", format!("{ratio:.2}")));
    rows.push(
        row(
            "saturation",
            "p99 latency ms (baseline: ceiling)",
            format!("{:.2}", p99(&ours)),
        )
        .baseline(format!("{:.2}", p99(&base)))
        .target("≤ 2 ms", p99(&ours) <= 2.0),
    );
    let errors_other_than_503: u64 = ours["by_status"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| *k != "200" && *k != "503")
                .map(|(_, v)| v.as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
        + ours["transport_errors"].as_u64().unwrap_or(0);
    rows.push(
        row(
            "saturation",
            "answers other than 200/503",
            errors_other_than_503.to_string(),
        )
        .target("0", errors_other_than_503 == 0),
    );
    let share_503 = 100.0 * status_share(&ours, "503");
    rows.push(
        row("saturation", "  share answered 503", format!("{share_503:.3} %")).target("< 0.1 %", share_503 < 0.1),
    );
    let accepted = all_ok(&ours);
    let processed = stats["total_processed"].as_u64().unwrap_or(0);
    rows.push(
        row(
            "saturation",
            "processed == accepted (200s incl. warm-up)",
            format!("{processed} == {accepted}"),
        )
        .target(
            "equal",
            processed == accepted && stats["total_received"].as_u64() == Some(accepted),
        ),
    );
    match (ours_wrk, base_wrk) {
        (Some(ours), Some(base)) => {
            let wrk_processed = after_wrk["total_processed"].as_u64().unwrap_or(0) - processed;
            let (rps, base_rps) = (ours.requests_per_s, base.requests_per_s);
            rows.push(
                row("saturation", "wrk -t1 -c64: requests/s", format!("{rps:.0}")).baseline(format!("{base_rps:.0}")),
            );
            rows.push(row(
                "saturation",
                "  wrk ratio to the ceiling",
                format!("{:.2}", rps / base_rps),
            ));
            rows.push(
                row("saturation", "  wrk p99 ms", format!("{:.2}", ours.p99_ms))
                    .baseline(format!("{:.2}", base.p99_ms)),
            );
            rows.push(
                row("saturation", "  wrk non-2xx answers", ours.non_2xx.to_string())
                    .baseline(base.non_2xx.to_string())
                    .target("0", ours.non_2xx == 0 && base.non_2xx == 0),
            );
            rows.push(row(
                "saturation",
                "  heartbeats processed during wrk",
                wrk_processed.to_string(),
            ));
        }
        _ => rows.push(row(
            "saturation",
            "wrk comparison",
            "skipped: wrk not installed (make bench installs it)",
        )),
    }
}

fn status_share(report: &Value, status: &str) -> f64 {
    let sent = report["sent"].as_f64().unwrap_or(0.0);
    if sent == 0.0 {
        0.0
    } else {
        status_count(report, "by_status", status) as f64 / sent
    }
}

/// Waits until every accepted heartbeat is processed; returns the stats then.
fn wait_quiet(daemon: &Daemon) -> Value {
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
fn watch_queue(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
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

fn fleet(phases: &Phases, rows: &mut Vec<Row>) {
    const AGENTS: usize = 100_000;
    const RATE: f64 = 10_000.0;
    eprintln!("fleet: {AGENTS} agents at {RATE}/s for {} s …", phases.fleet_s);
    let started = Instant::now();
    let daemon = Daemon::start(&format!("queue_capacity = 1000\n{}", agents_config(AGENTS)));
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
    let stopped = daemon.stop();

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

fn idle(phases: &Phases, rows: &mut Vec<Row>) {
    const AGENTS: usize = 10;
    eprintln!(
        "idle host: {AGENTS} agents, one heartbeat each every 10 s, {} s …",
        phases.idle_s
    );
    let daemon = Daemon::start(&agents_config(AGENTS));
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

fn drain(rows: &mut Vec<Row>) {
    const AGENTS: usize = 100;
    eprintln!("drain: fill the queue, SIGTERM …");
    // Write-through (flush_interval_ms = 0): processing waits for the disk, so the queue fills
    // while the HTTP layer accepts at full speed. The worst case for a drain.
    let daemon = Daemon::start(&format!(
        "flush_interval_ms = 0\nqueue_capacity = 100000\nshutdown_timeout_s = 120\n{}",
        agents_config(AGENTS)
    ));
    let url = daemon.url();
    let loader = thread::spawn(move || load(&url, AGENTS, 64, 3.0, 0.0, None));
    thread::sleep(Duration::from_secs(2));
    let depth = daemon.stats()["queue_depth"].as_u64().unwrap_or(0);
    let stopped = daemon.stop();
    let report = loader.join().unwrap();
    let accepted = all_ok(&report);
    let on_disk = heartbeats_on_disk(&stopped.data_dir());
    let lost = accepted.saturating_sub(on_disk);
    rows.push(row("drain", "queued at SIGTERM (write-through)", depth.to_string()));
    rows.push(row(
        "drain",
        "drain time s (SIGTERM to exit)",
        format!("{:.2}", stopped.seconds),
    ));
    rows.push(
        row(
            "drain",
            "heartbeats lost (200s not on disk)",
            format!("{lost} of {accepted}"),
        )
        .target("0", lost == 0 && stopped.code == Some(0)),
    );
    rows.push(row("drain", "  exit code", format!("{:?}", stopped.code)));
    if stopped.code != Some(0) {
        eprintln!("drain: heartbeatd's log:\n{}", stopped.log);
    }
}

/// Bytes a process has written to storage so far (`write_bytes` of /proc/<pid>/io).
fn written_bytes(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Persistence cost does not grow with history_len: the same saturation load with
/// history_len 1440 and 10, checkpointing every second so histories are written and
/// compacted during the run.
fn history_cost(phases: &Phases, rows: &mut Vec<Row>) {
    const AGENTS: usize = 10;
    // Saturation throughput swings by ±15 % from run to run on a shared 2-core machine, more
    // than the effect looked for; so the two settings alternate, twice, and each keeps its
    // best run (the one least disturbed).
    let mut best: [(f64, f64); 2] = [(0.0, 0.0); 2];
    for round in 0..4 {
        let (slot, history_len) = if round % 2 == 0 { (0, 10) } else { (1, 1440) };
        eprintln!("history cost: history_len = {history_len} (round {}) …", round / 2 + 1);
        let daemon = Daemon::start(&format!(
            "queue_capacity = 1000\nhistory_len = {history_len}\ncheckpoint_interval_s = 1\n{}",
            agents_config(AGENTS)
        ));
        let written_before = written_bytes(daemon.pid());
        let t0 = Instant::now();
        load(&daemon.url(), AGENTS, 64, phases.saturation_s, phases.warmup_s, None);
        let stats = wait_quiet(&daemon);
        let elapsed = t0.elapsed().as_secs_f64();
        let mib_per_s = (written_bytes(daemon.pid()) - written_before) as f64 / elapsed / (1024.0 * 1024.0);
        let processed_per_s = stats["total_processed"].as_f64().unwrap_or(0.0) / elapsed;
        if processed_per_s > best[slot].0 {
            best[slot] = (processed_per_s, mib_per_s);
        }
    }
    let (short, long) = ((0, 0.0, best[0].0, best[0].1), (0, 0.0, best[1].0, best[1].1));
    let ratio = long.2 / short.2;
    rows.push(
        row(
            "history",
            "processed/s, history_len 1440 (baseline: 10)",
            format!("{:.0}", long.2),
        )
        .baseline(format!("{:.0}", short.2))
        .target("≥ 0.95 × baseline", ratio >= 0.95),
    );
    rows.push(row("history", "  ratio", format!("{ratio:.2}")));
    rows.push(
        row(
            "history",
            "  disk writes MiB/s (baseline: 10)",
            format!("{:.1}", long.3),
        )
        .baseline(format!("{:.1}", short.3)),
    );
}

/// Start-up with many agents whose full histories are on disk: state files are read, the
/// histories are not.
fn big_start(phases: &Phases, rows: &mut Vec<Row>) {
    let agents = phases.big_start_agents;
    const HISTORY: usize = 1440;
    eprintln!("big start: writing {agents} agents with {HISTORY}-point histories …");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for sub in ["agents", "history"] {
        fs::create_dir_all(data.join(sub)).unwrap();
    }
    let mut history = String::with_capacity(HISTORY * 64);
    for n in 1..=HISTORY {
        let _ = writeln!(
            history,
            "{{\"n\":{n},\"t\":\"2026-11-24T06:00:00Z\",\"c\":12.5,\"m\":67108864}}"
        );
    }
    let written = Instant::now();
    for n in 1..=agents {
        let id = format!("load-{n:06}");
        let state = format!(
            "{{\"format_version\":2,\"id\":\"{id}\",\"name\":\"\",\"type\":\"load\",\"status\":\"running\",\"pid\":10001,\
             \"last_heartbeat\":\"2026-11-24T06:00:00Z\",\"last_seen\":\"2026-11-24T06:00:00Z\",\"heartbeat_count\":{HISTORY},\"history_records\":{HISTORY}}}"
        );
        fs::write(data.join("agents").join(format!("{id}.json")), state).unwrap();
        fs::write(data.join("history").join(format!("{id}.log")), &history).unwrap();
    }
    eprintln!(
        "big start: {:.1} GB written in {:.0} s; starting …",
        (agents * history.len()) as f64 / 1e9,
        written.elapsed().as_secs_f64()
    );
    let config = dir.path().join("heartbeatd.toml");
    let port = free_port();
    fs::write(
        &config,
        format!(
            "http_port = {port}\ndata_dir = {:?}\nlog_level = \"warn\"\n{}",
            data.display().to_string(),
            agents_config(agents)
        ),
    )
    .unwrap();
    // Drop what writing the files left in the page cache? No: a restarting daemon finds its
    // files cached too; the figure is start-up work, not cold-disk reads.
    let started = Instant::now();
    let mut child = Command::new(HEARTBEATD)
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while get_json(port, "/heartbeat/stats").is_none() {
        assert!(started.elapsed() < Duration::from_secs(300), "heartbeatd did not start");
        thread::sleep(Duration::from_millis(5));
    }
    let ready_s = started.elapsed().as_secs_f64();
    let rss = memory_mib(child.id(), "VmRSS:");
    let peak = memory_mib(child.id(), "VmHWM:");
    let agents_with_state =
        get_json(port, "/agents?limit=1").map_or(0, |page| page["agents"][0]["heartbeat_count"].as_u64().unwrap_or(0));
    signal(child.id(), "TERM");
    let _ = child.wait();
    let label = if agents == 100_000 { "100k" } else { "10k (quick)" };
    rows.push(
        row(
            "big start",
            format!("{label} agents, full histories: s to ready"),
            format!("{ready_s:.2}"),
        )
        .target("≤ 5 s", ready_s <= 5.0),
    );
    rows.push(
        row(
            "big start",
            "  RSS MiB once ready (peak)",
            format!("{rss:.0} ({peak:.0})"),
        )
        .target("≤ 512 MiB", rss <= 512.0),
    );
    rows.push(row(
        "big start",
        "  state loaded (heartbeat_count of the first)",
        agents_with_state.to_string(),
    ));
}

/// 100k agents reporting every 10 s (10k/s) at steady state, scraped by /metrics every half
/// second with the per-agent limit (10k) reached: CPU and scrape time. (Compare the CPU with
/// the fleet scenario: the same load without scrapes.)
fn steady_fleet(phases: &Phases, rows: &mut Vec<Row>) {
    const AGENTS: usize = 100_000;
    eprintln!("steady fleet: {AGENTS} agents, every 10 s, /metrics scrapes …");
    let daemon = Daemon::start(&format!(
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

/// The text of GET /metrics (a minimal HTTP client, like [`get_json`]).
fn get_metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// The sum of every agent's `heartbeat_count` on disk.
fn heartbeats_on_disk(data: &Path) -> u64 {
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

fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {model}")
}

fn print(rows: &[Row]) -> String {
    let widths = [12, 46, 18, 12, 18];
    let mut out = String::new();
    let line = |out: &mut String, cells: [&str; 6]| {
        let _ = writeln!(
            out,
            "| {:w0$} | {:w1$} | {:w2$} | {:w3$} | {:w4$} | {} |",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
    };
    line(
        &mut out,
        ["scenario", "metric", "heartbeatd", "baseline", "target", "verdict"],
    );
    let _ = writeln!(
        out,
        "|{}|",
        widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|") + "|---------"
    );
    for r in rows {
        line(
            &mut out,
            [r.scenario, &r.metric, &r.heartbeatd, &r.baseline, r.target, r.verdict],
        );
    }
    out
}

fn main() {
    // `cargo bench` passes --bench; any other argument selects scenarios by name.
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let phases = Phases::from_env();
    let mut rows = Vec::new();
    let started = Instant::now();
    if run("saturation") {
        saturation(&phases, &mut rows);
    }
    if run("fleet") {
        fleet(&phases, &mut rows);
    }
    if run("idle") {
        idle(&phases, &mut rows);
    }
    if run("drain") {
        drain(&mut rows);
    }
    if run("history") {
        history_cost(&phases, &mut rows);
    }
    if run("steady") {
        steady_fleet(&phases, &mut rows);
    }
    if run("big-start") {
        big_start(&phases, &mut rows);
    }
    println!();
    println!(
        "heartbeatd bench on {} ({:.0} s)",
        machine(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", print(&rows));
}
