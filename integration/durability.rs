//! State on disk survives restarts; damaged files are set aside, not fatal.

use std::fs;

use crate::daemon::{agent_file, heartbeat, Daemon, AGENTS};

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
    let second = Daemon::start_in(&dir, AGENTS);
    assert_eq!(second.post_heartbeat(&heartbeat("agent-1", 5)).status, 200);
    second.wait_processed(1);

    // Assert: the new heartbeat was added to the loaded history, not to a fresh one.
    let saved = agent_file(&second.data_dir(), "agent-1");
    let memories: Vec<u64> = saved["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["memory"].as_u64().unwrap())
        .collect();
    assert_eq!(memories, [0, 1, 2, 3, 4, 5]);
    assert_eq!(saved["heartbeat_count"], 6);
    assert!(
        second.log().contains("agents_with_state: 1"),
        "{}",
        second.log()
    );
}

#[test]
fn a_corrupt_agent_file_is_moved_aside_and_the_daemon_starts() {
    // Arrange: a torn file where agent-1's state should be.
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("data").join("agents");
    fs::create_dir_all(&agents).unwrap();
    fs::write(
        agents.join("agent-1.json"),
        b"{\"format_version\":1,\"id\":\"agent-1\",\"hist",
    )
    .unwrap();
    fs::write(agents.join(".agent-2.json.tmp-deadbeef"), b"half a write").unwrap();

    // Act
    let daemon = Daemon::start_in(dir.path(), AGENTS);
    assert_eq!(daemon.post_heartbeat(&heartbeat("agent-1", 1)).status, 200);
    daemon.wait_processed(1);

    // Assert
    let names: Vec<String> = fs::read_dir(&agents)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("agent-1.json.corrupt-")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains(".tmp-")),
        "temp file removed: {names:?}"
    );
    assert_eq!(
        agent_file(&daemon.data_dir(), "agent-1")["history"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let log = daemon.log();
    assert!(log.contains("ERRO") && log.contains("moved aside"), "{log}");
}
