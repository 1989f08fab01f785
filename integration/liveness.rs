//! Who is alive, judged on the server's clock: new → up → late → down → up, pause, our own
//! restart, clock skew, health endpoints. Short timings: interval 1 s, grace 1 s (late at
//! 1.5 s, down at 2 s).

use std::thread;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::json;

use crate::daemon::{heartbeat, Daemon};

/// `pulse` has its own 1 s timing; the defaults stay long so no other agent moves.
const CONFIG: &str = "heartbeat_interval_s = 3600\n[[agents]]\nid = \"pulse\"\nheartbeat_interval_s = 1\ngrace_s = 1\n";

fn status(daemon: &Daemon) -> String {
    daemon.request("GET", "/agents/pulse", None).body["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until `pulse` is in `wanted`; returns how long that took.
fn wait_for(daemon: &Daemon, wanted: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if status(daemon) == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "pulse did not become {wanted} within {within:?} (is {})",
            status(daemon)
        );
        thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn an_agent_goes_new_up_late_down_and_up_again() {
    // Arrange
    let daemon = Daemon::start(CONFIG);
    assert_eq!(status(&daemon), "new");

    // Act / Assert
    assert_eq!(daemon.post_heartbeat(&heartbeat("pulse", 1)).status, 200);
    wait_for(&daemon, "up", Duration::from_secs(2));
    let to_late = wait_for(&daemon, "late", Duration::from_secs(4));
    assert!(
        to_late >= Duration::from_millis(1000),
        "late too early: {to_late:?} (due at 1.5 s)"
    );
    let page = daemon.request("GET", "/agents?status=late", None).body;
    assert_eq!(page["agents"][0]["id"], "pulse", "{page}");
    wait_for(&daemon, "down", Duration::from_secs(3));
    assert!(
        daemon.request("GET", "/agents?status=down", None).body["agents"]
            .as_array()
            .unwrap()
            .len()
            == 1
    );
    assert_eq!(daemon.stats()["agents_by_status"]["down"], 1);
    assert_eq!(daemon.post_heartbeat(&heartbeat("pulse", 2)).status, 200);
    wait_for(&daemon, "up", Duration::from_secs(2));

    let agent = daemon.request("GET", "/agents/pulse", None).body;
    assert!(agent["status_since"].is_string(), "{agent}");
    let events = daemon.request("GET", "/agents/pulse/events", None).body;
    let steps: Vec<(String, String)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [("down", "up"), ("late", "down"), ("up", "late"), ("new", "up")];
    assert_eq!(
        steps,
        expected.map(|(a, b)| (a.to_owned(), b.to_owned())),
        "newest first, each once: {events}"
    );
    assert_eq!(events["events"][0]["reported_status"], "running", "{events}");
    assert!(events["events"][1]["last_seen"].is_string(), "{events}");
    // /metrics counts them per state entered (the shipped HeartbeatAgentFlapping alert's input).
    let metrics = daemon.request("GET", "/metrics", None).body;
    let metrics = metrics.as_str().unwrap_or_default();
    for (to, count) in [("up", 2), ("late", 1), ("down", 1)] {
        let line = format!("heartbeatd_agent_transitions_total{{agent_id=\"pulse\",to=\"{to}\"}} {count}");
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert_eq!(
        daemon.request("GET", "/agents/pulse/events?limit=1", None).body["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(daemon.request("GET", "/agents/nobody/events", None).status, 404);
    let log = daemon.log();
    for transition in ["to: late", "to: down", "from: down"] {
        assert!(log.contains(transition), "no {transition:?} in the log:\n{log}");
    }
    assert!(log.contains("WARN agent went silent"), "{log}");
    assert_eq!(daemon.request("GET", "/agents?status=dancing", None).status, 400);
}

#[test]
fn a_paused_agent_makes_no_transitions_until_resumed() {
    let daemon = Daemon::start(CONFIG);
    assert_eq!(daemon.post_heartbeat(&heartbeat("pulse", 1)).status, 200);
    wait_for(&daemon, "up", Duration::from_secs(2));

    let paused = daemon.admin("POST", "/agents/pulse/pause", None);
    assert_eq!(
        (paused.status, paused.body["status"].as_str()),
        (200, Some("paused")),
        "{paused:?}"
    );
    thread::sleep(Duration::from_millis(2500)); // past late and down
    assert_eq!(daemon.post_heartbeat(&heartbeat("pulse", 2)).status, 200);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(status(&daemon), "paused");

    let resumed = daemon.admin("POST", "/agents/pulse/resume", None);
    assert_eq!(resumed.body["status"], "up", "{resumed:?}");
    assert_eq!(daemon.admin("POST", "/agents/nobody/pause", None).status, 404);
    let events = daemon.request("GET", "/agents/pulse/events", None).body;
    let targets: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        ["up", "paused", "up"],
        "no late or down while paused: {events}"
    );
    assert!(!daemon.log().contains("agent went silent"), "{}", daemon.log());
}

#[test]
fn our_own_restart_does_not_mark_anyone_down_early() {
    // Arrange: pulse was up when heartbeatd stopped, and stays silent.
    let mut first = Daemon::start(CONFIG);
    assert_eq!(first.post_heartbeat(&heartbeat("pulse", 1)).status, 200);
    wait_for(&first, "up", Duration::from_secs(2));
    assert_eq!(first.stop_with("TERM").code(), Some(0));
    thread::sleep(Duration::from_millis(2500)); // longer than interval + grace

    // Act
    let second = Daemon::start_in(&first.dir, CONFIG);

    // Assert: up, with a full interval + grace from start-up before it may turn late.
    assert_eq!(status(&second), "up");
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(status(&second), "up");
    wait_for(&second, "down", Duration::from_secs(4));
}

#[test]
fn clock_skew_is_recorded_and_warned_about_once() {
    let daemon = Daemon::start(&format!("max_clock_skew_s = 300\n{CONFIG}"));
    let an_hour_ago = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    for n in 0..2 {
        let mut body = heartbeat("pulse", n);
        body["timestamp"] = json!(an_hour_ago);
        assert_eq!(daemon.post_heartbeat(&body).status, 200);
    }
    let stats = daemon.wait_processed(2);

    let agent = daemon.request("GET", "/agents/pulse", None).body;
    let skew = agent["clock_skew_ms"].as_i64().unwrap();
    assert!((3_595_000..3_610_000).contains(&skew), "{agent}");
    assert_eq!(stats["clock_skewed_agents"], 1, "{stats}");
    assert_eq!(
        daemon.log().matches("agent clock is off").count(),
        1,
        "{}",
        daemon.log()
    );
    // Liveness ignores the agent's clock: it is up, by our receive time.
    assert_eq!(status(&daemon), "up");
}

#[test]
fn health_endpoints_answer() {
    let daemon = Daemon::start("");
    let healthz = daemon.request("GET", "/healthz", None);
    assert_eq!((healthz.status, healthz.body["success"].as_bool()), (200, Some(true)));
    let readyz = daemon.request("GET", "/readyz", None);
    assert_eq!((readyz.status, readyz.body["message"].as_str()), (200, Some("ready")));
    // HEAD, as load balancers send it: the status without a body.
    for path in ["/healthz", "/readyz", "/"] {
        let head = daemon.request("HEAD", path, None);
        assert_eq!(head.status, 200, "HEAD {path}: {head:?}");
        assert!(
            head.body.is_null() || head.body == "",
            "HEAD {path} has no body: {head:?}"
        );
    }
    let by_status = daemon.stats()["agents_by_status"].clone();
    let keys: Vec<&String> = by_status.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["down", "late", "new", "paused", "stopped", "up"], "{by_status}");
}
