//! The fleet view through Prometheus: the shipped rules (`configs/prometheus/`) pass promtool,
//! and a real Prometheus scraping three heartbeatd instances (three "hosts") with those rules
//! shows which instance's agents went silent and fires `HeartbeatAgentsDown` for it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::peers::Peer;
use crate::daemon::{http, Daemon};

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/prometheus")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("promtool (make test installs Debian's prometheus package)");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn the_shipped_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", "heartbeatd.rules.yml"]);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["test", "rules", "heartbeatd.rules.test.yml"]);
    assert!(ok, "{out}");
    // Every alert docs/alerting.md promises is in the file and has a unit test.
    let rules = fs::read_to_string(rules_dir().join("heartbeatd.rules.yml")).unwrap();
    let tests = fs::read_to_string(rules_dir().join("heartbeatd.rules.test.yml")).unwrap();
    for alert in [
        "HeartbeatdDown",
        "HeartbeatAgentsDown",
        "HeartbeatAgentFlapping",
        "HeartbeatdQueueFull",
        "HeartbeatdStoreErrors",
        "HeartbeatdWebhookFailures",
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "{alert} not in the rules");
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no unit test"
        );
    }
}

/// Prometheus scraping `targets` every second as job `heartbeatd`, evaluating the shipped rules
/// every second. The rules' `for:` durations (minutes, checked by their unit tests) are cut to
/// 3 s in this copy, so the alert fires within the test.
fn prometheus_with_rules(targets: &[u16]) -> Peer {
    let rules = fs::read_to_string(rules_dir().join("heartbeatd.rules.yml"))
        .unwrap()
        .replace("for: 2m", "for: 3s")
        .replace("for: 1m", "for: 3s");
    let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    Peer::prometheus(
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - heartbeatd.rules.yml\n\
             scrape_configs:\n  - job_name: heartbeatd\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
        &[("heartbeatd.rules.yml", rules)],
    )
}

#[test]
fn prometheus_over_three_instances_shows_which_one_went_silent_and_fires_heartbeat_agents_down() {
    // Arrange: three "hosts", three agents each, a 1 s interval and grace.
    let timing = "heartbeat_interval_s = 1\ngrace_s = 1\n";
    let daemons: Vec<Daemon> = (0..3)
        .map(|host| {
            let agents: String = (0..3)
                .map(|n| format!("[[agents]]\nid = \"host{host}-agent{n}\"\n"))
                .collect();
            Daemon::start(&format!("{timing}{agents}"))
        })
        .collect();
    let ports: Vec<u16> = daemons.iter().map(|d| d.port).collect();
    // Every agent reports every 300 ms, until host 1's agents are told to go silent.
    let silence_host1 = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (ports, silence_host1, stop) = (ports.clone(), Arc::clone(&silence_host1), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (host, port) in ports.iter().enumerate() {
                    if host == 1 && silence_host1.load(Ordering::Relaxed) {
                        continue;
                    }
                    for n in 0..3 {
                        let body = format!(
                            r#"{{"agent_id":"host{host}-agent{n}","pid":42,"status":"running","cpu":1.0,"memory":1}}"#
                        );
                        let _ = http(*port, "POST", "/heartbeat", Some(&body));
                    }
                }
                thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let prometheus = prometheus_with_rules(&ports);
    let down_per_instance = "sum by (instance) (heartbeatd_agents{status=\"down\"})";
    let up_per_instance = "sum by (instance) (heartbeatd_agents{status=\"up\"})";
    eventually(&prometheus, "all 9 agents up in Prometheus", || {
        prometheus.query(up_per_instance).iter().map(value).sum::<f64>() == 9.0
    });

    // Act: host 1's agents go silent.
    silence_host1.store(true, Ordering::Relaxed);

    // Assert: the fleet-wide query shows exactly host 1's three agents down …
    let host1 = format!("127.0.0.1:{}", ports[1]);
    eventually(&prometheus, "host 1's agents down in Prometheus", || {
        let down = prometheus.query(down_per_instance);
        down.len() == 3
            && down.iter().all(|r| {
                value(r)
                    == if r["metric"]["instance"] == host1.as_str() {
                        3.0
                    } else {
                        0.0
                    }
            })
    });
    // … and so does the recording rule.
    eventually(&prometheus, "the down ratio of host 1 only", || {
        let ratio = prometheus.query("instance:heartbeatd_agents_down:ratio > 0");
        ratio.len() == 1 && ratio[0]["metric"]["instance"] == host1.as_str() && value(&ratio[0]) == 1.0
    });
    // HeartbeatAgentsDown fires for host 1 only.
    eventually(&prometheus, "HeartbeatAgentsDown firing for host 1", || {
        let alerts = http(prometheus.port, "GET", "/api/v1/alerts", None)
            .and_then(|r| r.body["data"]["alerts"].as_array().cloned())
            .unwrap_or_default();
        let firing: Vec<&Value> = alerts
            .iter()
            .filter(|a| a["labels"]["alertname"] == "HeartbeatAgentsDown" && a["state"] == "firing")
            .collect();
        firing.len() == 1 && firing[0]["labels"]["instance"] == host1.as_str()
    });
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
}

fn value(result: &Value) -> f64 {
    result["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn eventually(prometheus: &Peer, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "not seen within 60 s: {what}\nPrometheus log:\n{}",
            prometheus.log()
        );
        thread::sleep(Duration::from_millis(250));
    }
}
