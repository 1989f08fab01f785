//! Alerts in a real Alertmanager (Debian's `prometheus-alertmanager`, installed by `make
//! test`): an agent that goes silent fires `HeartbeatAgentDown` with the documented labels, the
//! alert survives a restart of heartbeatd, and the agent's next heartbeat resolves it; a
//! supervised agent that becomes `fatal` fires `HeartbeatAgentFatal`.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::peers::Peer;
use crate::daemon::{heartbeat, http, Daemon};

/// A real Alertmanager that routes every alert to a receiver that sends nothing.
struct Alertmanager(Peer);

impl Alertmanager {
    fn start() -> Self {
        let am = Alertmanager(Peer::alertmanager(
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        ));
        am.eventually("Alertmanager ready", || {
            http(am.0.port, "GET", "/-/ready", None).is_some_and(|r| r.status == 200)
        });
        am
    }

    /// The alerts Alertmanager holds for `agent_id` (active ones, not resolved).
    fn alerts_for(&self, agent_id: &str) -> Vec<Value> {
        http(self.0.port, "GET", "/api/v2/alerts", None)
            .and_then(|r| r.body.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["agent_id"] == agent_id)
            .filter(|a| {
                let ends: chrono::DateTime<chrono::Utc> =
                    a["endsAt"].as_str().unwrap_or("").parse().unwrap_or_default();
                ends > chrono::Utc::now()
            })
            .collect()
    }

    fn eventually(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            let log = self.0.log();
            assert!(
                Instant::now() < deadline,
                "not within 30 s: {what}\nAlertmanager log:\n{log}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_silent_agent_fires_heartbeat_agent_down_in_alertmanager_kept_over_a_restart_and_resolved_by_its_heartbeat() {
    // Arrange: one agent goes silent (down 2 s after its heartbeat), one never reports.
    let am = Alertmanager::start();
    let config = format!(
        "alertmanager_url = \"http://127.0.0.1:{}\"\nalert_resend_s = 1\ninstance_name = \"host-test\"\n\
         [[agents]]\nid = \"silent\"\ntype = \"filebeat\"\nheartbeat_interval_s = 1\ngrace_s = 1\n\
         [[agents]]\nid = \"never-seen\"\nheartbeat_interval_s = 1\ngrace_s = 1\n",
        am.0.port
    );
    let mut daemon = Daemon::start(&config);
    assert_eq!(daemon.post_heartbeat(&heartbeat("silent", 1)).status, 200);

    // Act 1: it goes down.
    am.eventually("HeartbeatAgentDown for silent", || !am.alerts_for("silent").is_empty());

    // Assert 1: the labels and annotations.
    let alert = am.alerts_for("silent").remove(0);
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "HeartbeatAgentDown", "{alert}");
    assert_eq!(labels["agent_type"], "filebeat");
    assert_eq!(labels["instance"], "host-test");
    assert_eq!(labels["severity"], "warning");
    assert!(
        alert["annotations"]["last_seen"].as_str().unwrap().starts_with("20"),
        "{alert}"
    );
    assert_eq!(alert["annotations"]["reported_status"], "running");
    assert_eq!(alert["status"]["state"], "active");
    assert!(
        am.alerts_for("never-seen").is_empty(),
        "an agent never seen is not down"
    );

    // Act 2: heartbeatd restarts; the alert is still firing and is sent again.
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    let dir = daemon.dir.clone();
    let extra: String = fs::read_to_string(dir.join("heartbeatd.toml"))
        .unwrap()
        .lines()
        .skip(2)
        .map(|l| format!("{l}\n"))
        .collect();
    let mut again = Daemon::start_in(&dir, &extra);
    thread::sleep(Duration::from_millis(2500));

    // Assert 2: still active, re-sent (its endsAt keeps moving), and the agent starts down.
    let before = am.alerts_for("silent");
    assert_eq!(before.len(), 1, "still firing after the restart");
    assert!(
        again.log().contains("sending again the alerts still firing"),
        "{}",
        again.log()
    );
    assert_eq!(again.request("GET", "/agents/silent", None).body["status"], "down");
    let ends_before = before[0]["endsAt"].as_str().unwrap().to_owned();
    am.eventually("the alert re-sent (endsAt moves on)", || {
        am.alerts_for("silent")
            .first()
            .is_some_and(|a| a["endsAt"].as_str().unwrap() > ends_before.as_str())
    });

    // Act 3: the agent reports again.
    assert_eq!(again.post_heartbeat(&heartbeat("silent", 2)).status, 200);

    // Assert 3: resolved.
    am.eventually("the alert resolved", || am.alerts_for("silent").is_empty());
    assert_eq!(again.request("GET", "/agents/silent", None).body["status"], "up");
    assert_eq!(again.stop_with("TERM").code(), Some(0));
}

#[test]
fn a_supervised_agent_entering_fatal_fires_heartbeat_agent_fatal() {
    // Arrange: an agent that exits 5 at once; the first failure is fatal.
    let am = Alertmanager::start();
    let bin = crate::daemon::test_agent_bin().display().to_string();
    let config = format!(
        "alertmanager_url = \"http://127.0.0.1:{}\"\nalert_resend_s = 1\ninstance_name = \"host-test\"\n\
         [[agents]]\nid = \"doomed\"\ntype = \"custom\"\ncommand = [{bin:?}]\n\
         env = {{ TEST_AGENT_MODE = \"crash:5:0,quiet\" }}\nmax_restarts = 0\n",
        am.0.port
    );

    // Act
    let mut daemon = Daemon::start(&config);
    am.eventually("HeartbeatAgentFatal for doomed", || !am.alerts_for("doomed").is_empty());

    // Assert
    let alert = am.alerts_for("doomed").remove(0);
    assert_eq!(alert["labels"]["alertname"], "HeartbeatAgentFatal", "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["agent_type"], "custom");
    assert!(
        alert["annotations"]["summary"].as_str().unwrap().contains("code 5"),
        "{alert}"
    );
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}
