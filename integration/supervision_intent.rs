//! Supervision doing what the operator meant (issue 16), on the real binary with real
//! processes: a program that can never start is given up on after its failed starts, a crash
//! loop without backoff is held to the start limit, a process imitating a keeper is not
//! spared, and a PATCH merges `env` and can end supervision on its own.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use std::sync::atomic::Ordering;

use crate::alert_backlog::StandIn;
use crate::daemon::{processes_with_marker, send_signal};
use crate::supervision::{agent, marker, parent_of, process, start, wait_for};

/// The process events of `id` that entered `to`, oldest first, with their times.
fn entered(daemon: &crate::daemon::Daemon, id: &str, to: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    let events = daemon
        .request("GET", &format!("/agents/{id}/events?limit=1000"), None)
        .body;
    let mut times: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "process" && e["to"] == to)
        .map(|e| e["at"].as_str().unwrap().parse().unwrap())
        .collect();
    times.reverse();
    times
}

#[test]
fn a_program_that_can_never_start_is_fatal_after_its_failed_starts_and_says_so() {
    // Arrange: `sh -c 'exit 3'` on the defaults (start_retries 3, backoff 1 s doubling).
    let daemon = start("[[agents]]\nid = \"broken\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n");

    // Act: wait for heartbeatd to give up.
    let fatal = wait_for(&daemon, "broken", "fatal", Duration::from_secs(60), |p| {
        p["state"] == "fatal"
    });

    // Assert: one start and three retries, each a failed start, never running.
    assert_eq!(fatal["restarts"], 3, "{fatal}");
    assert_eq!(fatal["last_exit"]["code"], 3);
    assert_eq!(entered(&daemon, "broken", "starting").len(), 4);
    assert!(entered(&daemon, "broken", "running").is_empty());
    let log = daemon.log();
    assert!(log.contains("failed before it was running"), "{log}");
    assert!(log.contains("could not start; it is left alone (fatal)"), "{log}");
    // Before: fatal only after max_restarts (5) in restart_window_s, after 6 spawns.
}

#[test]
fn a_crash_loop_without_backoff_is_held_to_ten_starts_in_ten_seconds() {
    // Arrange: a program that runs for a moment and exits, restarted always, no backoff.
    let daemon = start(
        "[[agents]]\nid = \"loop\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 0.05; exit 1\"]\n\
         restart = \"always\"\nrestart_backoff_ms = 0\nrestart_backoff_max_ms = 0\nmax_restarts = 10000\n\
         start_wait_s = 0\n",
    );

    // Act: let it loop for more than the limit's window.
    let deadline = Instant::now() + Duration::from_secs(60);
    while entered(&daemon, "loop", "starting").len() < 15 {
        assert!(
            Instant::now() < deadline,
            "it did not keep restarting: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Assert: no 11 starts within 10 s (without the limit: hundreds a second). The events'
    // times are taken a moment after the machine's own clock: a few ms of slack.
    let starts = entered(&daemon, "loop", "starting");
    for window in starts.windows(11) {
        let span = window[10] - window[0];
        assert!(span >= chrono::Duration::milliseconds(9_900), "11 starts within {span}");
    }
    assert!(daemon.log().contains("restarts too fast"), "{}", daemon.log());
}

#[test]
fn a_process_that_imitates_a_keeper_is_swept_with_the_rest_of_its_tree() {
    // Arrange: the agent starts a grandchild that leaves its session and whose command line
    // is `sh keep` (what a keeper's looks like: its second argument is `keep`).
    let mark = marker("imitator");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep"), "while :; do sleep 1; done\n").unwrap();
    let config = format!(
        "[[agents]]\nid = \"tree\"\ncommand = [\"/bin/sh\", \"-c\", \"setsid sh keep & exec sleep 600\"]\n\
         working_dir = {:?}\nenv = {{ TEST_MARKER = \"{mark}\" }}\nrestart_backoff_ms = 100\n",
        dir.path().display().to_string()
    );
    let daemon = start(&config);
    let deadline = Instant::now() + Duration::from_secs(10);
    let imitator = loop {
        let found = processes_with_marker(&mark).into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(b"keep"))
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the imitator did not start: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let agent_pid = process(&daemon, "tree")["pid"].as_u64().unwrap() as u32;
    let keeper = parent_of(agent_pid).unwrap();

    // Act: the keeper is SIGKILLed: its tree is re-parented to heartbeatd, which sweeps it.
    crate::daemon::send_signal(keeper, "KILL");

    // Assert: the imitator is gone too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{imitator}")).exists()
        && !std::fs::read_to_string(format!("/proc/{imitator}/stat")).is_ok_and(|s| s.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "the process imitating a keeper survived the sweep: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_patch_merges_env_and_command_null_alone_ends_supervision() {
    // Arrange: an agent registered through the API (the config file's are the file's).
    let daemon = start("");
    let svc = r#"{"id": "svc", "command": ["/bin/sleep", "600"], "env": {"A": "1", "B": "2"}, "restart": "always"}"#;
    assert_eq!(daemon.admin("POST", "/agents", Some(svc)).status, 201);
    wait_for(&daemon, "svc", "running", Duration::from_secs(10), |p| {
        p["state"] == "running"
    });

    // Act / Assert: env is merged (RFC 7396), not replaced.
    let patched = daemon.admin("PATCH", "/agents/svc", Some(r#"{"env": {"B": null, "C": "3"}}"#));
    assert_eq!(patched.status, 200, "{patched:?}");
    let record = std::fs::read_to_string(daemon.data_dir().join("registry.log")).unwrap();
    let last: Value = serde_json::from_str(record.lines().last().unwrap()).unwrap();
    let env = last.pointer("/put/env").or_else(|| last.pointer("/Put/env")).cloned();
    assert_eq!(env, Some(json!({"A": "1", "C": "3"})), "{last}");

    // `{"command": null}` alone ends supervision (its settings go with it).
    let plain = daemon.admin("PATCH", "/agents/svc", Some(r#"{"command": null}"#));
    assert_eq!(plain.status, 200, "{plain:?}");
    assert!(
        plain.body.get("command").is_none() && plain.body.get("process").is_none(),
        "{plain:?}"
    );

    // A command too large for exec is refused, naming why.
    let big = json!({"command": vec!["x".repeat(4000); 20]}).to_string();
    let refused = daemon.admin("PATCH", "/agents/svc", Some(&big));
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(
        refused.body["message"].as_str().unwrap().contains("command and env"),
        "{refused:?}"
    );
}

/// The agent's liveness as the API shows it.
fn liveness(daemon: &crate::daemon::Daemon, id: &str) -> Value {
    daemon.request("GET", &format!("/agents/{id}"), None).body["status"].clone()
}

fn wait_liveness(daemon: &crate::daemon::Daemon, id: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while liveness(daemon, id) != wanted {
        assert!(
            Instant::now() < deadline,
            "{id} never {wanted}: {}\n{}",
            liveness(daemon, id),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stop_on_purpose_pages_no_one_a_quiet_program_is_up_while_it_runs_and_fatal_alerts_end() {
    // Arrange: an agent that heartbeats every second, one that sends no heartbeats, and one
    // that can never start; alerts go to a stand-in Alertmanager.
    let am = StandIn::start();
    am.refusing.store(false, Ordering::SeqCst);
    let mark = marker("intent");
    let config = format!(
        "alertmanager_url = \"http://127.0.0.1:{}\"\n{}\
         [[agents]]\nid = \"quiet\"\ncommand = [\"/bin/sleep\", \"600\"]\nheartbeats = false\nheartbeat_interval_s = 1\ngrace_s = 1\n\
         [[agents]]\nid = \"broken\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\nstart_retries = 0\n",
        am.port,
        agent("pinger", "", &mark, "heartbeat_interval_s = 1\ngrace_s = 1"),
    );
    let daemon = start(&config);

    // A program that sends no heartbeats is up while it runs (never `new`).
    wait_liveness(&daemon, "quiet", "up");
    // One that could not start is `fatal` (its own alert), and its liveness `stopped`.
    am.eventually("HeartbeatAgentFatal for broken", |s| {
        s.newest_of("HeartbeatAgentFatal", "broken") == Some(true)
    });
    wait_liveness(&daemon, "broken", "stopped");
    wait_liveness(&daemon, "pinger", "up");

    // Act: an operator stops the pinger and waits past its interval + grace (2 s).
    let stopped = daemon.admin("POST", "/agents/pinger/stop", None);
    assert_eq!(stopped.status, 200, "{stopped:?}");
    wait_liveness(&daemon, "pinger", "stopped");
    std::thread::sleep(Duration::from_secs(4));

    // Assert: stopped, not down: no alert, no down event, down gauge 0.
    assert_eq!(liveness(&daemon, "pinger"), "stopped");
    assert_eq!(
        am.seen(|s| s.newest_of("HeartbeatAgentDown", "pinger")),
        None,
        "nobody paged"
    );
    let events = daemon.request("GET", "/agents/pinger/events", None).body;
    assert!(
        !events["events"].as_array().unwrap().iter().any(|e| e["to"] == "down"),
        "{events}"
    );
    let metrics = daemon.request("GET", "/metrics", None).body;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("heartbeatd_agent_down{agent_id=\"pinger\"} 0"),
        "{metrics}"
    );
    // The quiet one stopped: stopped too; started again: up.
    assert_eq!(daemon.admin("POST", "/agents/quiet/stop", None).status, 200);
    wait_liveness(&daemon, "quiet", "stopped");
    assert_eq!(daemon.admin("POST", "/agents/quiet/start", None).status, 200);
    wait_liveness(&daemon, "quiet", "up");

    // The fatal agent leaves the configuration (SIGHUP): its alert ends.
    let path = daemon.dir.join("heartbeatd.toml");
    let file = std::fs::read_to_string(&path).unwrap();
    let broken_at = file.find("[[agents]]\nid = \"broken\"").unwrap();
    std::fs::write(&path, &file[..broken_at]).unwrap();
    send_signal(daemon.pid(), "HUP");
    am.eventually("HeartbeatAgentFatal of broken resolved", |s| {
        s.newest_of("HeartbeatAgentFatal", "broken") == Some(false)
    });
    assert_eq!(daemon.request("GET", "/agents/broken", None).status, 404);
}

#[test]
fn a_fatal_alert_left_by_a_killed_heartbeatd_ends_when_it_starts_again() {
    // Arrange: an agent gives up (fatal) and heartbeatd is killed with its alert firing.
    let am = StandIn::start();
    am.refusing.store(false, Ordering::SeqCst);
    let alerting = format!("alertmanager_url = \"http://127.0.0.1:{}\"\n", am.port);
    let broken = "[[agents]]\nid = \"flaky\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\nstart_retries = 0\n";
    let mut first = start(&(alerting.clone() + broken));
    am.eventually("HeartbeatAgentFatal for flaky", |s| {
        s.newest_of("HeartbeatAgentFatal", "flaky") == Some(true)
    });
    let alerts = first.data_dir().join("alerts.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&alerts)
        .unwrap_or_default()
        .contains("HeartbeatAgentFatal")
    {
        assert!(Instant::now() < deadline, "alerts.json never held the alert");
        std::thread::sleep(Duration::from_millis(50));
    }
    send_signal(first.pid(), "KILL");
    first.wait_exit(Duration::from_secs(10));

    // Act: heartbeatd starts again (the program now works).
    let fixed = "[[agents]]\nid = \"flaky\"\ncommand = [\"/bin/sleep\", \"600\"]\n";
    let _again = crate::daemon::Daemon::start_in(&first.dir, &(alerting + fixed));

    // Assert: the old fatal alert is resolved.
    am.eventually("HeartbeatAgentFatal of flaky resolved", |s| {
        s.newest_of("HeartbeatAgentFatal", "flaky") == Some(false)
    });
}

#[test]
fn the_config_file_owns_its_agents_edits_are_applied_on_sighup_and_at_start() {
    // Arrange
    let agents = |edited: &str, extra: &str| {
        format!(
            "[[agents]]\nid = \"same\"\ncommand = [\"/bin/sleep\", \"600\"]\n\
             [[agents]]\nid = \"edited\"\ncommand = [\"/bin/sleep\", \"{edited}\"]\n\
             [[agents]]\nid = \"p\"\nname = \"passive\"\n{extra}"
        )
    };
    let dropped = "[[agents]]\nid = \"dropped\"\ncommand = [\"/bin/sleep\", \"600\"]\n";
    let mut daemon = start(&agents("600", dropped));
    let running = |daemon: &crate::daemon::Daemon, id: &str| {
        wait_for(daemon, id, "running", Duration::from_secs(10), |p| {
            p["state"] == "running"
        })["pid"]
            .clone()
    };
    let (same_pid, edited_pid, dropped_pid) = (
        running(&daemon, "same"),
        running(&daemon, "edited"),
        running(&daemon, "dropped"),
    );

    // The API may not change or delete the file's agents.
    let patched = daemon.admin("PATCH", "/agents/edited", Some(r#"{"command": ["/bin/sleep", "9"]}"#));
    assert_eq!(patched.status, 409, "{patched:?}");
    assert!(
        patched.body["message"].as_str().unwrap().contains("configuration file"),
        "{patched:?}"
    );
    assert_eq!(daemon.admin("DELETE", "/agents/p", None).status, 409);

    // Act: the file is edited (a command changed, a name changed, one agent removed, one
    // added) and reloaded.
    let path = daemon.dir.join("heartbeatd.toml");
    let head: String = std::fs::read_to_string(&path)
        .unwrap()
        .split("[[agents]]")
        .next()
        .unwrap()
        .to_owned();
    let edited = agents(
        "601",
        "[[agents]]\nid = \"fresh\"\ncommand = [\"/bin/sleep\", \"600\"]\n",
    )
    .replace("passive", "renamed");
    std::fs::write(&path, head.clone() + &edited).unwrap();
    send_signal(daemon.pid(), "HUP");

    // Assert: only the changed program restarted; the removed one stopped and gone; the new
    // one started; one line per agent says what changed.
    let restarted = wait_for(&daemon, "edited", "restarted", Duration::from_secs(15), |p| {
        p["state"] == "running" && p["pid"] != edited_pid
    });
    assert!(restarted["pid"].is_i64(), "{restarted}");
    running(&daemon, "fresh");
    assert_eq!(process(&daemon, "same")["pid"], same_pid, "unchanged: not restarted");
    assert_eq!(daemon.request("GET", "/agents/dropped", None).status, 404);
    let dropped_gone = !std::path::Path::new(&format!("/proc/{dropped_pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{dropped_pid}/stat")).is_ok_and(|s| s.contains(") Z "));
    assert!(dropped_gone, "the removed agent's program was stopped");
    assert_eq!(daemon.request("GET", "/agents/p", None).body["name"], "renamed");
    let log = daemon.log();
    for line in [
        "agent changed in the configuration; applying it, keys: command, agent_id: edited",
        "keys: name, agent_id: p",
        "agent removed: it left the configuration (its program is stopped), agent_id: dropped",
        "agent added from the configuration, agent_id: fresh",
    ] {
        assert!(log.contains(line), "{line:?} in:\n{log}");
    }

    // At start too: the file is edited while heartbeatd is stopped.
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    let dir = daemon.dir.clone();
    let again = crate::daemon::Daemon::start_in(&dir, &agents("602", ""));
    let now = wait_for(&again, "edited", "running", Duration::from_secs(10), |p| {
        p["state"] == "running"
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", now["pid"])).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("602"),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    assert_eq!(
        again.request("GET", "/agents/fresh", None).status,
        404,
        "left the file: removed at start"
    );
}
