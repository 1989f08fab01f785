//! The shipped Prometheus and Alertmanager configurations (`configs/prometheus/prometheus.yml`,
//! `configs/alertmanager/alertmanager.yml`), installed as `docs/alerting.md` says: promtool and
//! amtool accept them (the mail receiver left commented out too), and a real Prometheus and
//! Alertmanager running them, with only their addresses and waits changed, bring heartbeatd's
//! own alert and a rule's alert to the receiver, the rule's with its runbook link.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::peers::Peer;
use crate::daemon::{heartbeat, http, Daemon};
use crate::webhook::Receiver;

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

fn shipped(path: &str) -> String {
    fs::read_to_string(configs().join(path)).unwrap_or_else(|e| panic!("configs/{path}: {e}"))
}

/// Runs a checker in `dir`; (success, what it printed).
fn check(program: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} (make test installs Debian's prometheus and prometheus-alertmanager): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `text` with `from` replaced by `to`, which must be there: a config that no longer has what
/// the test changes fails here rather than test something else.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the shipped config no longer has {from:?}:\n{text}"
    );
    text.replace(from, to)
}

#[test]
fn the_shipped_prometheus_and_alertmanager_configs_pass_promtool_and_amtool() {
    let (ok, out) = check(
        "promtool",
        &["check", "config", "prometheus.yml"],
        &configs().join("prometheus"),
    );
    assert!(ok && out.contains("1 rule files found"), "{out}");
    let (ok, out) = check(
        "amtool",
        &["check-config", "alertmanager.yml"],
        &configs().join("alertmanager"),
    );
    assert!(ok, "{out}");

    // The mail receiver the file offers, commented out, is valid too once uncommented.
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("smtp-password");
    fs::write(&password, "secret\n").unwrap();
    let text = shipped("alertmanager/alertmanager.yml");
    let (active, offered) = text.split_once("    # Or mail").expect("the mail example");
    let uncommented: String = offered
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.replacen("    # ", "    ", 1)))
        .collect();
    let uncommented = replaced(
        &uncommented,
        "/etc/prometheus/smtp-password",
        &password.display().to_string(),
    );
    assert!(uncommented.contains("email_configs:"), "{uncommented}");
    fs::write(dir.path().join("mail.yml"), format!("{active}{uncommented}")).unwrap();
    let (ok, out) = check("amtool", &["check-config", "mail.yml"], dir.path());
    assert!(ok, "{out}");
}

/// Waits up to a minute (a generous bound for a loaded machine: nothing here is a timing
/// promise) for `done`.
fn eventually(what: &str, logs: &[&Peer], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "not within 60 s: {what}\n{}",
            logs.iter().map(|p| p.log()).collect::<Vec<_>>().join("\n---\n")
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The alerts of every notification the receiver got: (alertname, status, the alert).
fn notified(receiver: &Receiver) -> Vec<(String, String, Value)> {
    receiver
        .bodies()
        .iter()
        .flat_map(|body| body["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            let name = a["labels"]["alertname"].as_str().unwrap_or_default().to_owned();
            let status = a["status"].as_str().unwrap_or_default().to_owned();
            (name, status, a)
        })
        .collect()
}

#[test]
fn an_agent_going_silent_and_heartbeatd_going_away_reach_the_receiver_through_the_shipped_configs() {
    // Arrange: Alertmanager on the shipped file, its receiver pointed at ours and its waits
    // cut to a second.
    let receiver = Receiver::start();
    let am_config = shipped("alertmanager/alertmanager.yml");
    let am_config = replaced(
        &am_config,
        "http://127.0.0.1:5001/alerts",
        &format!("http://127.0.0.1:{}/alerts", receiver.port),
    );
    let am_config = replaced(&am_config, "group_wait: 30s", "group_wait: 1s");
    let am_config = replaced(&am_config, "group_wait: 10s", "group_wait: 1s");
    let am_config = replaced(&am_config, "group_interval: 5m", "group_interval: 1s");
    let am = Peer::alertmanager(&am_config);
    eventually("Alertmanager ready", &[&am], || {
        http(am.port, "GET", "/-/ready", None).is_some_and(|r| r.status == 200)
    });
    let mut daemon = Daemon::start(&format!(
        "alertmanager_url = \"http://127.0.0.1:{}\"\nalert_resend_s = 1\ninstance_name = \"e2e-host\"\n\
         [[agents]]\nid = \"silent\"\ntype = \"filebeat\"\nheartbeat_interval_s = 1\ngrace_s = 1\n",
        am.port
    ));

    // Act 1: an agent reports once and goes silent.
    assert_eq!(daemon.post_heartbeat(&heartbeat("silent", 1)).status, 200);

    // Assert 1: heartbeatd's own alert reaches the receiver through the shipped routing.
    eventually("HeartbeatAgentDown at the receiver", &[&am], || {
        notified(&receiver).iter().any(|(name, status, a)| {
            name == "HeartbeatAgentDown" && status == "firing" && a["labels"]["agent_id"] == "silent"
        })
    });

    // Arrange 2: Prometheus on the shipped file, scraping this heartbeatd every second and
    // sending to this Alertmanager, with the shipped rules' `for:` cut to seconds.
    let prom_config = shipped("prometheus/prometheus.yml");
    let prom_config = replaced(
        &prom_config,
        "'127.0.0.1:8080'",
        &format!("'127.0.0.1:{}'", daemon.port),
    );
    let prom_config = replaced(&prom_config, "'127.0.0.1:9093'", &format!("'127.0.0.1:{}'", am.port));
    let prom_config = replaced(&prom_config, "scrape_interval: 15s", "scrape_interval: 1s");
    let prom_config = replaced(&prom_config, "evaluation_interval: 15s", "evaluation_interval: 1s");
    let rules = replaced(&shipped("prometheus/heartbeatd.rules.yml"), "for: 1m", "for: 1s");
    let prometheus = Peer::prometheus(&prom_config, &[("heartbeatd.rules.yml", rules)]);
    eventually("Prometheus scraping heartbeatd", &[&prometheus], || {
        prometheus
            .query("up{job=\"heartbeatd\"}")
            .first()
            .is_some_and(|s| s["value"][1] == "1" && s["metric"]["instance"] == "127.0.0.1")
    });

    // Act 2: heartbeatd goes away.
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));

    // Assert 2: the rule's alert reaches the receiver, with its runbook link.
    eventually("HeartbeatdDown at the receiver", &[&prometheus, &am], || {
        notified(&receiver)
            .iter()
            .any(|(name, status, _)| name == "HeartbeatdDown" && status == "firing")
    });
    let (_, _, alert) = notified(&receiver)
        .into_iter()
        .find(|(name, _, _)| name == "HeartbeatdDown")
        .unwrap();
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert_eq!(
        alert["annotations"]["runbook_url"], "docs/runbook.md#heartbeatddown",
        "{alert}"
    );
}
