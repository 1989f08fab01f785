//! State on disk survives restarts; damaged files are set aside, not fatal; the timed flush
//! writes without a stop.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use crate::daemon::{agent_file, heartbeat, history_on_disk, journal_records, Daemon, AGENTS};

#[test]
fn a_restart_keeps_last_heartbeat_and_history() {
    // Arrange: five heartbeats, then a graceful stop.
    let mut first = Daemon::start(AGENTS);
    for n in 0..5 {
        assert_eq!(first.post_heartbeat(&heartbeat("agent-1", n)).status, 200);
    }
    first.wait_processed(5);
    assert_eq!(first.stop_with("TERM").code(), Some(0), "{}", first.log());
    let dir = first.dir.clone();

    // Act: start again on the same data directory and send one more.
    let mut second = Daemon::start_in(&dir, AGENTS);
    assert_eq!(second.post_heartbeat(&heartbeat("agent-1", 5)).status, 200);
    second.wait_processed(1);
    assert_eq!(second.stop_with("TERM").code(), Some(0));

    // Assert: the new heartbeat continues the loaded state and history, not a fresh one.
    let saved = agent_file(&second.data_dir(), "agent-1");
    assert_eq!(saved["heartbeat_count"], 6);
    let memories: Vec<u64> = history_on_disk(&second.data_dir(), "agent-1")
        .iter()
        .map(|p| p["m"].as_u64().unwrap())
        .collect();
    assert_eq!(memories, [0, 1, 2, 3, 4, 5]);
    assert!(second.log().contains("agents_with_state: 1"), "{}", second.log());
}

#[test]
fn a_corrupt_agent_file_is_moved_aside_and_the_daemon_starts() {
    // Arrange: a torn file where agent-1's state should be, and leftover temp files.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("agents")).unwrap();
    fs::create_dir_all(data.join("history")).unwrap();
    fs::write(
        data.join("agents/agent-1.json"),
        b"{\"format_version\":2,\"id\":\"agent-1\",\"hea",
    )
    .unwrap();
    fs::write(data.join("agents/.agent-2.json.tmp-deadbeef"), b"half a write").unwrap();
    fs::write(data.join("history/.agent-2.log.tmp-deadbeef"), b"half a write").unwrap();

    // Act
    let mut daemon = Daemon::start_in(dir.path(), AGENTS);
    assert_eq!(daemon.post_heartbeat(&heartbeat("agent-1", 1)).status, 200);
    let stats = daemon.wait_processed(1);
    assert_eq!(stats["damaged_records"], 1, "the damage is counted: {stats}");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));

    // Assert
    let names = |sub: &str| -> Vec<String> {
        fs::read_dir(data.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    let agents = names("agents");
    assert!(
        agents.iter().any(|n| n.starts_with("agent-1.json.corrupt-")),
        "{agents:?}"
    );
    for sub in ["agents", "history"] {
        assert!(
            !names(sub).iter().any(|n| n.contains(".tmp-")),
            "temp files removed from {sub}"
        );
    }
    assert_eq!(agent_file(&daemon.data_dir(), "agent-1")["heartbeat_count"], 1);
    let log = daemon.log();
    assert!(log.contains("ERRO") && log.contains("moved aside"), "{log}");
}

/// Waits up to 10 s for `done`; panics with the daemon's log otherwise.
fn eventually(daemon: &Daemon, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen:\n{}", daemon.log());
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn flushes_and_checkpoints_write_without_a_stop() {
    // Arrange
    let daemon = Daemon::start(&format!("flush_interval_ms = 200\ncheckpoint_interval_s = 1\n{AGENTS}"));

    // Act
    for n in 0..3 {
        assert_eq!(daemon.post_heartbeat(&heartbeat("agent-2", n)).status, 200);
    }
    daemon.wait_processed(3);

    // Assert: the journal within a few flush intervals, the agent's files within a checkpoint.
    let data = daemon.data_dir();
    eventually(&daemon, "the journal flush", || {
        journal_records(&data).len() >= 3 || history_on_disk(&data, "agent-2").len() == 3
    });
    // A checkpoint appends the history first and renames the state file in last: it is done
    // when both are there (an earlier checkpoint may have left a state file of fewer).
    let state_count = || {
        std::fs::read_to_string(data.join("agents").join("agent-2.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|state| state["heartbeat_count"].as_u64())
    };
    eventually(&daemon, "the checkpoint", || {
        history_on_disk(&data, "agent-2").len() == 3 && state_count() == Some(3)
    });
    assert_eq!(agent_file(&data, "agent-2")["heartbeat_count"], 3);
    eventually(&daemon, "the journal cleanup", || journal_records(&data).is_empty());
}

#[test]
fn kill_9_after_the_heartbeats_are_counted_as_synced_loses_nothing() {
    // Arrange: no checkpoint during the test, so everything rests on the journal.
    let config = format!("flush_interval_ms = 100\ncheckpoint_interval_s = 3600\n{AGENTS}");
    let mut first = Daemon::start(&config);
    for n in 0..50 {
        assert_eq!(
            first
                .post_heartbeat(&heartbeat(if n % 2 == 0 { "agent-1" } else { "agent-2" }, n))
                .status,
            200
        );
    }
    // Synced, as `total_synced` counts (however long the starved journal thread takes).
    first.wait_synced(50);

    // Act
    crate::daemon::send_signal(first.pid(), "KILL");
    first.wait_exit(Duration::from_secs(10));
    let mut second = Daemon::start_in(&first.dir, &config);
    assert_eq!(second.stop_with("TERM").code(), Some(0), "{}", second.log());

    // Assert: every heartbeat answered 200 before the kill is back, state and history.
    let data = second.data_dir();
    for id in ["agent-1", "agent-2"] {
        assert_eq!(agent_file(&data, id)["heartbeat_count"], 25, "{id}");
        assert_eq!(history_on_disk(&data, id).len(), 25, "{id}");
    }
    assert!(second.log().contains("journal replayed"), "{}", second.log());
}
