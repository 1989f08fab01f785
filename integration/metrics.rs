//! `GET /metrics` in Prometheus text format 0.0.4: checked by `promtool check metrics`, and
//! scraped by a real Prometheus server on loopback. `make test` installs both (Debian's
//! `prometheus` package).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::daemon::peers::Peer;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{heartbeat, http, Daemon};

/// `live` keeps the default hour-long interval; `dead` turns down 2 s after its heartbeat.
const CONFIG: &str = "heartbeat_interval_s = 3600\n[[agents]]\nid = \"live\"\n[[agents]]\nid = \"dead\"\nheartbeat_interval_s = 1\ngrace_s = 1\n";

fn needs(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: `make test` installs it (Debian package prometheus)"
    );
}

fn metrics_text(daemon: &Daemon) -> (String, String) {
    let reply = daemon.request("GET", "/metrics", None);
    assert_eq!(reply.status, 200);
    let text = reply.body.as_str().unwrap_or_default().to_owned();
    (reply.header("content-type").unwrap_or_default().to_owned(), text)
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn metrics_are_valid_exposition_format_with_the_documented_series() {
    // Arrange
    needs("promtool");
    let daemon = Daemon::start(CONFIG);
    assert_eq!(daemon.post_heartbeat(&heartbeat("live", 1)).status, 200);
    assert_eq!(daemon.post_heartbeat(&heartbeat("ghost", 1)).status, 400);
    daemon.wait_processed(1);

    // Act
    let (content_type, text) = metrics_text(&daemon);

    // Assert
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for (series, value) in [
        ("heartbeatd_heartbeats_received_total", 1.0),
        ("heartbeatd_heartbeats_processed_total", 1.0),
        ("heartbeatd_heartbeats_rejected_total{reason=\"unknown_agent\"}", 1.0),
        ("heartbeatd_heartbeats_rejected_total{reason=\"queue_full\"}", 0.0),
        ("heartbeatd_queue_capacity", 10_000.0),
        ("heartbeatd_agents{status=\"up\"}", 1.0),
        ("heartbeatd_agents{status=\"new\"}", 1.0),
        ("heartbeatd_agent_up{agent_id=\"live\"}", 1.0),
        ("heartbeatd_agent_up{agent_id=\"dead\"}", 0.0),
        ("heartbeatd_agent_cpu_percent{agent_id=\"live\"}", 5.5),
        ("heartbeatd_processing_duration_seconds_count", 1.0),
        ("heartbeatd_agent_transitions_total{agent_id=\"live\",to=\"up\"}", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
    assert!(
        !text.contains("heartbeatd_agent_transitions_total{agent_id=\"dead\""),
        "an agent that never changed state has no transition series:\n{text}"
    );
    for family in [
        "heartbeatd_queue_wait_seconds",
        "process_resident_memory_bytes",
        "heartbeatd_store_errors_total",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} in:\n{text}");
    }
    assert_promtool_accepts(&text);
}

/// `promtool check metrics` finds nothing wrong with `text`.
pub(crate) fn assert_promtool_accepts(text: &str) {
    needs("promtool");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn per_agent_series_stop_at_metrics_agent_limit() {
    let mut daemon = Daemon::start(&format!("metrics_agent_limit = 1\n{CONFIG}"));
    let (_, text) = metrics_text(&daemon);
    assert_eq!(text.matches("heartbeatd_agent_up{").count(), 1, "{text}");
    let _ = metrics_text(&daemon);
    // The log is written by a thread of its own: a stop flushes it, so every line is there.
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    assert_eq!(
        daemon.log().matches("metrics_agent_limit reached").count(),
        1,
        "logged once:\n{}",
        daemon.log()
    );
}

fn start_prometheus(target_port: u16) -> Peer {
    needs("prometheus");
    Peer::prometheus(
        &format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: heartbeatd\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"),
        &[],
    )
}

/// `heartbeatd_agent_up` per agent id, as Prometheus has it now.
fn agent_up(prometheus: &Peer) -> Vec<(String, String)> {
    let Some(reply) = http(prometheus.port, "GET", "/api/v1/query?query=heartbeatd_agent_up", None) else {
        return Vec::new();
    };
    let results = reply.body["data"]["result"].as_array().cloned().unwrap_or_default();
    let mut pairs: Vec<(String, String)> = results
        .iter()
        .map(|r: &Value| {
            (
                r["metric"]["agent_id"].as_str().unwrap_or_default().to_owned(),
                r["value"][1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn a_real_prometheus_sees_a_live_and_a_dead_agent() {
    // Arrange: both report once; `dead` then stays silent past its interval + grace.
    let daemon = Daemon::start(CONFIG);
    for id in ["live", "dead"] {
        assert_eq!(daemon.post_heartbeat(&heartbeat(id, 1)).status, 200);
    }
    let prometheus = start_prometheus(daemon.port);

    // Act / Assert: Prometheus's own query API shows live = 1 and dead = 0.
    let wanted = vec![("dead".to_owned(), "0".to_owned()), ("live".to_owned(), "1".to_owned())];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    while last != wanted {
        let log = prometheus.log();
        assert!(
            Instant::now() < deadline,
            "Prometheus shows {last:?}, not {wanted:?}; its log:\n{log}"
        );
        thread::sleep(Duration::from_millis(250));
        last = agent_up(&prometheus);
    }
}

#[test]
fn a_scrape_flood_is_answered_from_the_last_body_and_heartbeats_go_on() {
    // Arrange
    let daemon = Daemon::start(CONFIG);
    assert_eq!(daemon.post_heartbeat(&heartbeat("live", 1)).status, 200);

    // Act: 60 scrapes as fast as one client can send them.
    let replies: Vec<_> = (0..60).map(|_| daemon.request("GET", "/metrics", None)).collect();

    // Assert: every one is answered (those within 0.25 s of a body get that body, at no
    // cost), each with the series; heartbeats are not affected.
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(replies
        .iter()
        .all(|r| r.body.as_str().is_some_and(|t| t.contains("heartbeatd_agent_up{"))));
    assert_eq!(daemon.post_heartbeat(&heartbeat("live", 1)).status, 200);
}
