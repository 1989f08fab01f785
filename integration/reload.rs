//! SIGHUP reloads what can be reloaded and never stops heartbeatd; a bad file changes nothing.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::daemon::{heartbeat, http, http_with_headers, send_signal, Daemon};
use crate::webhook::Receiver;

fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        thread::sleep(Duration::from_millis(25));
    }
}

/// Rewrites the daemon's config file with `extra` after its port and data_dir lines.
fn rewrite_config(daemon: &Daemon, extra: &str) {
    let path = daemon.dir.join("heartbeatd.toml");
    let text = fs::read_to_string(&path).unwrap();
    let head: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    fs::write(&path, format!("{head}{extra}")).unwrap();
}

#[test]
fn sighup_under_load_loses_nothing_and_does_not_stop_heartbeatd() {
    // Arrange
    let mut daemon = Daemon::start("[[agents]]\nid = \"a\"\n");
    let port = daemon.port;
    let sender = thread::spawn(move || {
        let mut accepted = 0u64;
        for n in 0..2000u64 {
            let body = heartbeat("a", n).to_string();
            if http(port, "POST", "/heartbeat", Some(&body)).is_some_and(|r| r.status == 200) {
                accepted += 1;
            }
        }
        accepted
    });

    // Act: five SIGHUPs during the load.
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(100));
        send_signal(daemon.pid(), "HUP");
    }
    let accepted = sender.join().unwrap();

    // Assert: every heartbeat accepted and kept, a clean stop.
    assert_eq!(accepted, 2000);
    daemon.wait_processed(2000);
    assert_eq!(daemon.stop_with("TERM").code(), Some(0), "{}", daemon.log());
    let state = crate::daemon::agent_file(&daemon.data_dir(), "a");
    assert_eq!(state["heartbeat_count"], 2000);
    assert!(daemon.log().matches("SIGHUP: configuration reloaded").count() >= 5);
}

#[test]
fn sighup_applies_log_level_agents_webhook_and_admin_token_and_names_what_needs_a_restart() {
    // Arrange
    let receiver = Receiver::start();
    let mut daemon = Daemon::start("admin_token = \"old\"\nworkers = 4\n[[agents]]\nid = \"first\"\n");
    assert_eq!(daemon.admin("POST", "/agents", Some(r#"{"id": "api"}"#)).status, 201);
    let patch = |token: &str| {
        http_with_headers(
            daemon.port,
            "PATCH",
            "/agents/api",
            Some("{\"name\":\"x\"}"),
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .unwrap()
        .status
    };
    assert_eq!(patch("old"), 200);

    // Act
    rewrite_config(
        &daemon,
        &format!(
            "admin_token = \"new\"\nworkers = 3\nlog_level = \"debug\"\nwebhook_url = \"http://127.0.0.1:{}/hook\"\n\
             [[agents]]\nid = \"first\"\n[[agents]]\nid = \"added\"\nheartbeat_interval_s = 1\ngrace_s = 1\n",
            receiver.port
        ),
    );
    send_signal(daemon.pid(), "HUP");
    eventually(Duration::from_secs(5), "reloaded", || {
        daemon.log().contains("SIGHUP: configuration reloaded")
    });

    // Assert: the new token, the new agent, debug lines, webhook deliveries.
    assert_eq!(patch("old"), 403);
    assert_eq!(patch("new"), 200);
    assert_eq!(daemon.request("GET", "/agents/added", None).status, 200);
    assert_eq!(daemon.post_heartbeat(&heartbeat("added", 1)).status, 200);
    eventually(Duration::from_secs(5), "a webhook delivery for 'added'", || {
        receiver.bodies().iter().any(|b| b["agent_id"] == "added")
    });
    let log = daemon.log();
    assert!(log.contains("DEBG"), "log_level debug applied:\n{log}");
    assert!(
        log.contains("take effect only after a restart") && log.contains("keys: workers"),
        "{log}"
    );
    assert!(
        !log.contains("\"new\"") && !log.contains(": new,"),
        "the token is never logged:\n{log}"
    );
    assert_eq!(daemon.stats()["workers"], 4, "workers needs a restart");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_configuration() {
    // Arrange
    let mut daemon = Daemon::start("admin_token = \"keep\"\n");
    assert_eq!(daemon.admin("POST", "/agents", Some(r#"{"id": "a"}"#)).status, 201);

    // Act
    rewrite_config(&daemon, "admin_token = \"other\"\nworkers = \"many\"\n");
    send_signal(daemon.pid(), "HUP");
    eventually(Duration::from_secs(5), "the error logged", || {
        daemon
            .log()
            .contains("the configuration is invalid; nothing was changed")
    });

    // Assert
    let reply = http_with_headers(
        daemon.port,
        "DELETE",
        "/agents/a",
        None,
        &[("Authorization", "Bearer keep")],
    )
    .unwrap();
    assert_eq!(reply.status, 204, "the old token still works");
    assert!(daemon.log().contains("workers"), "the error names the key");
    assert_eq!(daemon.post_heartbeat(&json!({"agent_id": "a", "pid": 1})).status, 400);
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}

#[test]
fn sighup_removing_webhook_url_stops_deliveries() {
    // Arrange: deliveries flow.
    let receiver = Receiver::start();
    let agent = "[[agents]]\nid = \"p\"\nheartbeat_interval_s = 1\ngrace_s = 1\n";
    let mut daemon = Daemon::start(&format!(
        "webhook_url = \"http://127.0.0.1:{}/hook\"\n{agent}",
        receiver.port
    ));
    assert_eq!(daemon.post_heartbeat(&heartbeat("p", 1)).status, 200);
    eventually(Duration::from_secs(5), "the first delivery", || {
        !receiver.bodies().is_empty()
    });

    // Act: the URL is removed and reloaded; the agent then goes late and down.
    rewrite_config(&daemon, agent);
    send_signal(daemon.pid(), "HUP");
    eventually(Duration::from_secs(5), "reloaded", || {
        daemon.log().contains("SIGHUP: configuration reloaded")
    });
    let delivered = receiver.bodies().len();
    eventually(Duration::from_secs(5), "p goes down", || {
        daemon.request("GET", "/agents/p", None).body["status"] == "down"
    });
    thread::sleep(Duration::from_millis(500));

    // Assert
    assert_eq!(receiver.bodies().len(), delivered, "{:?}", receiver.bodies());
    assert_eq!(daemon.stats()["webhook_failures"], 0);
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}
