//! Measured usage shown (issue 16, item 4), on the real binary with real processes: a busy
//! loop and a program holding a known amount of memory show what they use in
//! `GET /agents/{id}` (`process.usage`), in the listing, in `/metrics`
//! (`heartbeatd_agent_process_cpu_ratio`, `heartbeatd_agent_process_memory_bytes`, within
//! `metrics_agent_limit`, accepted by `promtool`) and in `heartbeatd ctl status [ID]`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::daemon::Daemon;
use crate::metrics::assert_promtool_accepts;
use crate::supervision::{agent, ctl, marker, start, wait_for};

const MIB: u64 = 1 << 20;
/// What the holder fills and keeps (`prefork:0:64`: 64 MiB, no children).
const HELD: u64 = 64 * MIB;
/// Room above it for the program itself (its binary, libc, heap, stacks), counted as PSS.
const OVERHEAD_AT_MOST: u64 = 32 * MIB;

/// The value of one series in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn scrape(daemon: &Daemon) -> String {
    let reply = daemon.request("GET", "/metrics", None);
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body.as_str().unwrap_or_default().to_owned()
}

/// The cell of `column` in `row`, cut at the header's column offsets.
fn cell<'a>(header: &str, row: &'a str, column: &str) -> &'a str {
    let start = header.find(column).unwrap_or_else(|| panic!("{column} in {header}"));
    let end = header[start + column.len()..]
        .find(|c: char| c != ' ')
        .map_or(row.len(), |gap| start + column.len() + gap);
    row.get(start..end.min(row.len())).unwrap_or_default().trim()
}

/// The CPU ticks `pid` has used so far (utime + stime of `/proc/<pid>/stat`).
fn cpu_ticks(pid: i64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // After the name, field 3 is the state: utime and stime are fields 14 and 15.
    (fields[14 - 3].parse::<u64>().unwrap() + fields[15 - 3].parse::<u64>().unwrap()) as f64
}

/// The agent's `process.usage` from one `GET /agents/{id}`, with `pid`'s CPU ticks read
/// just before and just after it.
fn read_between(daemon: &Daemon, id: &str, pid: i64) -> (f64, Value, f64) {
    let before = cpu_ticks(pid);
    let usage = crate::supervision::process(daemon, id)["usage"].clone();
    (before, usage, cpu_ticks(pid))
}

/// `98.5%` as 0.985.
fn percent(text: &str) -> Option<f64> {
    Some(text.strip_suffix('%')?.parse::<f64>().ok()? / 100.0)
}

/// `64.3 MiB` in bytes.
fn mebibytes(text: &str) -> Option<u64> {
    Some((text.strip_suffix(" MiB")?.parse::<f64>().ok()? * MIB as f64) as u64)
}

#[test]
fn measured_cpu_and_memory_are_shown_in_the_api_metrics_and_ctl_status() {
    // Arrange: "hog" spins a core and sends no heartbeats; "holder" (the test agent) fills
    // 64 MiB and keeps it. "zzz" runs too, but is past metrics_agent_limit (by id). None has
    // a limit: they are measured when asked.
    let mark = marker("usage");
    let config = format!(
        "metrics_agent_limit = 2\n[[agents]]\nid = \"hog\"\ncommand = [\"/bin/sh\", \"-c\", \"while :; do :; done\"]\nheartbeats = false\nenv = {{ TEST_MARKER = \"{mark}\" }}\n"
    ) + &agent("holder", "prefork:0:64", &mark, "")
        + &format!("[[agents]]\nid = \"zzz\"\ncommand = [\"/bin/sleep\", \"600\"]\nheartbeats = false\nenv = {{ TEST_MARKER = \"{mark}\" }}\n");
    let mut daemon = start(&config);

    // Act + Assert, GET /agents/{id}: memory within a sane bound of what the holder holds (a
    // read may come before it has filled it: wait for that).
    let holder = wait_for(
        &daemon,
        "holder",
        "measured holding its memory",
        Duration::from_secs(30),
        |p| p["usage"]["memory_bytes"].as_u64() >= Some(HELD),
    );
    let usage = &holder["usage"];
    assert!(
        usage["memory_bytes"].as_u64() <= Some(HELD + OVERHEAD_AT_MOST),
        "{holder}"
    );
    assert_eq!(usage["processes"], 1, "{holder}");
    assert!(
        usage["at"]
            .as_str()
            .is_some_and(|at| at.parse::<DateTime<Utc>>().is_ok()),
        "{holder}"
    );

    // CPU: the busy loop's figure is what the kernel counted for it between two readings.
    // On an idle host that is a whole core; on a loaded one less, so the test checks the
    // figure against the kernel's own count instead of a fixed share: the CPU the loop used
    // between the two readings lies between what it used from just after the first to just
    // before the second, and from just before the first to just after the second.
    let hog = wait_for(&daemon, "hog", "running", Duration::from_secs(30), |p| {
        p["state"] == "running"
    });
    let pid = hog["pid"].as_i64().unwrap_or_else(|| panic!("{hog}"));
    // Two readings measured by the GET they came from (a fresh figure, not the cached one):
    // the first is measured again at least FRESH_FOR after the one before, and so on.
    let fresh_after = |earlier: &Value| {
        for _ in 0..60 {
            let reading = read_between(&daemon, "hog", pid);
            if reading.1["at"].is_string() && reading.1["at"] != earlier["at"] {
                return reading;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("hog: never measured again after {earlier}")
    };
    let (before_first, first, after_first) = fresh_after(&hog["usage"]);
    let (before_second, second, after_second) = fresh_after(&first);
    let at = |usage: &Value| usage["at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let window = (at(&second) - at(&first)).to_std().unwrap().as_secs_f64();
    let used = second["cpu_ratio"].as_f64().unwrap() * window;
    let hz = 100.0; // USER_HZ: /proc/<pid>/stat counts in hundredths of a second on Linux
    let slack = 3.0 / hz;
    let (least, most) = ((before_second - after_first) / hz, (after_second - before_first) / hz);
    assert!(
        least - slack <= used && used <= most + slack,
        "{used:.3} s of CPU in {window:.3} s: the kernel counted {least:.3} to {most:.3} s\n{first}\n{second}"
    );
    assert!(least > 0.0, "the busy loop ran: {least}");
    let holder_cpu = |daemon: &Daemon| crate::supervision::process(daemon, "holder")["usage"]["cpu_ratio"].as_f64();
    assert!(holder_cpu(&daemon) < second["cpu_ratio"].as_f64(), "the holder sleeps");

    // The listing carries the same object.
    let listing = daemon.request("GET", "/agents", None);
    let agents = listing.body["agents"].as_array().cloned().unwrap_or_default();
    for id in ["hog", "holder", "zzz"] {
        let listed = agents
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("{id}: {listing:?}"));
        assert!(
            listed["process"]["usage"]["memory_bytes"].as_u64() > Some(0),
            "{listed}"
        );
    }

    // /metrics: both series for the agents within metrics_agent_limit, none past it.
    let text = scrape(&daemon);
    let cpu = |id: &str| {
        sample(
            &text,
            &format!("heartbeatd_agent_process_cpu_ratio{{agent_id=\"{id}\"}}"),
        )
    };
    assert!(cpu("holder").is_some() && cpu("hog") > cpu("holder"), "{text}");
    let memory = sample(&text, "heartbeatd_agent_process_memory_bytes{agent_id=\"holder\"}");
    assert!(
        memory.is_some_and(|m| (HELD as f64..=(HELD + OVERHEAD_AT_MOST) as f64).contains(&m)),
        "{text}"
    );
    assert!(
        !text.contains("heartbeatd_agent_process_memory_bytes{agent_id=\"zzz\"}"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE heartbeatd_agent_process_cpu_ratio gauge"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE heartbeatd_agent_process_memory_bytes gauge"),
        "{text}"
    );
    assert_promtool_accepts(&text);

    // ctl status: CPU and MEM columns; ctl status ID: cpu and memory lines.
    let (code, table, err) = ctl(&daemon, &["status"]);
    assert_eq!(code, 0, "{err}");
    let header = table.lines().next().unwrap_or_default();
    let row = |id: &str| {
        let start = format!("{id} ");
        table
            .lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("{table}"))
    };
    let (hog_row, holder_row) = (row("hog"), row("holder"));
    assert!(
        percent(cell(header, hog_row, "CPU")) > percent(cell(header, holder_row, "CPU")),
        "{table}"
    );
    let held = mebibytes(cell(header, holder_row, "MEM"));
    assert!(
        held.is_some_and(|m| (HELD..=HELD + OVERHEAD_AT_MOST).contains(&m)),
        "{table}"
    );
    let (code, detail, err) = ctl(&daemon, &["status", "holder"]);
    assert_eq!(code, 0, "{err}");
    let memory_line = detail
        .lines()
        .find(|l| l.trim_start().starts_with("memory:"))
        .unwrap_or_else(|| panic!("{detail}"));
    assert!(memory_line.contains("MiB (PSS), 1 process"), "{detail}");
    assert!(detail.lines().any(|l| l.trim_start().starts_with("cpu:")), "{detail}");

    // A stopped agent has no tree: usage is null.
    let (code, _, err) = ctl(&daemon, &["stop", "hog"]);
    assert_eq!(code, 0, "{err}");
    let stopped = daemon.request("GET", "/agents/hog", None).body;
    assert_eq!(stopped["process"]["state"], "stopped", "{stopped}");
    assert_eq!(stopped["process"]["usage"], Value::Null, "{stopped}");
    assert!(!scrape(&daemon).contains("heartbeatd_agent_process_cpu_ratio{agent_id=\"hog\"}"));
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}
