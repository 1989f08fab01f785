//! Adoption with real processes: supervised agents outlive heartbeatd for `adopt_timeout_s`
//! (a kill -9, an upgrade), and the next heartbeatd on the same data_dir takes their keepers
//! over: same pids, no restart, nothing of their output lost; without one, nothing is left.
//! Every process of a tree is found by a marker in its environment, never by pid.

use std::fs;
use std::os::unix::net::UnixListener;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::successor::has_ended;
use crate::daemon::{processes_with_marker, send_signal, Daemon};
use crate::supervision::{agent, marker, parent_of, process, start, wait_for};
use crate::upgrade::{all_accepted, ctl_upgrade, load_agents_config, start_load, wait_counted, wait_new_pid};

/// An agent that heartbeats and writes `tick N` every 100 ms, never restarted for silence
/// (the next heartbeatd listens on another port).
fn ticker(id: &str, mark: &str) -> String {
    agent(
        id,
        "ticker:100",
        mark,
        "restart_on_silence = false\nrestart_backoff_ms = 100",
    )
}

/// Waits until the agent has a pid; returns its process view.
fn with_pid(daemon: &Daemon, id: &str) -> Value {
    wait_for(daemon, id, "running with a pid", Duration::from_secs(30), |p| {
        p["state"] == "running" && p["pid"].as_u64().is_some()
    })
}

fn pid_of(view: &Value) -> u32 {
    view["pid"].as_u64().expect("a pid") as u32
}

/// The numbers of the `tick N` lines in the agent's output file, in file order.
fn ticks(daemon: &Daemon, id: &str) -> Vec<u64> {
    fs::read_to_string(daemon.data_dir().join("logs").join(format!("{id}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .collect()
}

fn wait_gone(marker: &str, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_with_marker(marker);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn after_a_sigkill_the_next_heartbeatd_adopts_every_agent_with_its_pid_and_its_output() {
    // Arrange: 20 agents running under a heartbeatd.
    let mark = marker("adopt-kill");
    let ids: Vec<String> = (0..20).map(|i| format!("agent-{i:02}")).collect();
    let config: String = ids.iter().map(|id| ticker(id, &mark)).collect();
    let mut first = start(&config);
    let before: Vec<u32> = ids.iter().map(|id| pid_of(&with_pid(&first, id))).collect();
    let keeper = parent_of(before[0]).unwrap();
    // The config as written, with the first daemon's URL: the agents' settings are unchanged.
    let written = fs::read_to_string(first.dir.join("heartbeatd.toml")).unwrap();
    let agents: String = written.lines().skip(2).collect::<Vec<_>>().join("\n");

    // Act: kill -9; during the gap one agent ends (killed), the others write on.
    send_signal(first.pid(), "KILL");
    first.wait_exit(Duration::from_secs(10));
    let ended = 7;
    send_signal(before[ended], "KILL");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !has_ended(before[ended]) {
        assert!(Instant::now() < deadline, "the agent did not end");
        thread::sleep(Duration::from_millis(20));
    }
    let ticks_in_the_gap = ticks(&first, &ids[0]).len();
    thread::sleep(Duration::from_millis(500));
    let second = Daemon::start_in(&first.dir, &agents);

    // Assert: the 19 others are adopted as they were: same pids, no restart.
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| *i != ended) {
        let view = process(&second, id);
        assert_eq!(view["state"], "running", "{id}: {view}\n{}", second.log());
        assert_eq!(pid_of(&view), before[i], "{id} kept its pid: {view}");
        assert_eq!(view["restarts"], 0, "{id}: {view}");
    }
    // The one that ended in the gap: its exit is known, and it is started again.
    let restarted = wait_for(&second, &ids[ended], "restarted", Duration::from_secs(30), |p| {
        p["pid"].as_u64().is_some_and(|pid| pid as u32 != before[ended]) && p["restarts"] == 1
    });
    assert_eq!(restarted["last_exit"]["signal"], "SIGKILL", "{restarted}");
    let mut running = processes_with_marker(&mark);
    let mut expected: Vec<u32> = before.iter().copied().filter(|p| *p != before[ended]).collect();
    expected.push(pid_of(&restarted));
    running.sort_unstable();
    expected.sort_unstable();
    assert_eq!(running, expected, "the 19 adopted and the one restarted, no duplicate");
    // Output written during the gap is in the log: one run, every tick in order, past the gap.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ticks = loop {
        let ticks = ticks(&second, &ids[0]);
        if ticks.len() > ticks_in_the_gap + 10 {
            break ticks;
        }
        assert!(Instant::now() < deadline, "no output after the adoption");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        ticks,
        (0..ticks.len() as u64).collect::<Vec<_>>(),
        "no tick lost or repeated"
    );
    assert!(second
        .log()
        .contains("adopting the keepers left running by the previous heartbeatd"));
    // The keepers are named for ps and pgrep: argv[0] `heartbeatd-keep <id>`, one word.
    assert_eq!(
        fs::read_to_string(format!("/proc/{keeper}/comm")).unwrap().trim_end(),
        "heartbeatd-keep"
    );
    let cmdline = fs::read(format!("/proc/{keeper}/cmdline")).unwrap();
    assert_eq!(cmdline, format!("heartbeatd-keep {}\0", ids[0]).into_bytes());
}

#[test]
fn with_no_heartbeatd_for_adopt_timeout_s_no_process_of_any_tree_is_left() {
    // Arrange: two agents, each with a grandchild that left its session with setsid().
    let mark = marker("adopt-timeout");
    let extra = "restart_on_silence = false";
    let config = format!(
        "adopt_timeout_s = 5\n{}{}",
        agent("tree-a", "grandchild", &mark, extra),
        agent("tree-b", "grandchild", &mark, extra)
    );
    let mut daemon = start(&config);
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with_marker(&mark).len() < 4 {
        assert!(Instant::now() < deadline, "trees not up: {}", daemon.log());
        thread::sleep(Duration::from_millis(50));
    }
    let run = daemon.data_dir().join("run");

    // Act: heartbeatd is killed and none comes back.
    send_signal(daemon.pid(), "KILL");
    daemon.wait_exit(Duration::from_secs(10));

    // Assert: the trees wait for adoption (they outlive heartbeatd), then, after
    // adopt_timeout_s, every process of them is gone, the setsid grandchildren included, and
    // so are the keepers' sockets.
    assert_eq!(processes_with_marker(&mark).len(), 4, "the trees outlive heartbeatd");
    let left = wait_gone(&mark, Duration::from_secs(60));
    assert!(left.is_empty(), "left after adopt_timeout_s: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_dir(&run).unwrap().count() > 0 {
        assert!(
            Instant::now() < deadline,
            "the keepers' sockets were left in data_dir/run"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctl_upgrade_under_load_restarts_no_agent_and_refuses_nothing() {
    // Arrange: the load tool's agents, and five supervised ones.
    let mark = marker("adopt-upgrade");
    let ids: Vec<String> = (0..5).map(|i| format!("kept-{i}")).collect();
    let config: String = load_agents_config() + &ids.iter().map(|id| ticker(id, &mark)).collect::<String>();
    let mut daemon = start(&config);
    let before: Vec<u32> = ids.iter().map(|id| pid_of(&with_pid(&daemon, id))).collect();
    let old = daemon.pid();
    let load = start_load(daemon.port, 300, 6);
    thread::sleep(Duration::from_secs(2));

    // Act
    let out = ctl_upgrade(&daemon);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = wait_new_pid(&daemon, old);
    let old_status = daemon.handed_over_to(new);
    let accepted = all_accepted(load);

    // Assert: nothing refused or lost, and every agent kept running: same pid, no restart.
    assert!(old_status.success(), "{old_status}");
    assert_eq!(wait_counted(daemon.port, accepted), accepted);
    for (id, pid) in ids.iter().zip(&before) {
        let view = process(&daemon, id);
        assert_eq!(pid_of(&view), *pid, "{id} kept its pid: {view}\n{}", daemon.log());
        assert_eq!(view["restarts"], 0, "{id}: {view}");
        assert_eq!(view["state"], "running", "{id}: {view}");
    }
    assert_eq!(
        processes_with_marker(&mark).len(),
        ids.len(),
        "no duplicate was started"
    );
    assert!(daemon
        .log()
        .contains("supervised agents left running for the new heartbeatd to adopt"));
    // A graceful stop of the new heartbeatd still leaves nothing.
    daemon.stop_successor("TERM");
    let left = wait_gone(&mark, Duration::from_secs(10));
    assert!(left.is_empty(), "left after a graceful stop: {left:?}");
}

#[test]
fn a_foreign_listener_and_a_stale_socket_in_data_dir_run_are_refused_and_the_agent_starts() {
    // Arrange: data_dir/run holds, at the agent's own socket name, a listener that is not a
    // keeper (this test process), and a stale socket nobody listens on.
    let mark = marker("adopt-foreign");
    let temp = tempfile::tempdir().unwrap();
    let run = temp.path().join("data").join("run");
    fs::create_dir_all(&run).unwrap();
    for dir in [temp.path().join("data"), run.clone()] {
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
    let foreign = UnixListener::bind(run.join("plain.sock")).unwrap();
    drop(UnixListener::bind(run.join("gone.sock")).unwrap());
    let config =
        format!("[[agents]]\nid = \"plain\"\ncommand = [\"sleep\", \"600\"]\nenv = {{ TEST_MARKER = \"{mark}\" }}\n");

    // Act
    let daemon = Daemon::start_in(temp.path(), &config);

    // Assert: both refused and said so; the agent is started as a new run.
    let view = with_pid(&daemon, "plain");
    let log = daemon.log();
    assert_eq!(log.matches("refused a socket in data_dir/run").count(), 2, "{log}");
    assert!(log.contains("is not a keeper"), "the foreign one is named: {log}");
    assert!(log.contains("nothing listens on it"), "the stale one is named: {log}");
    assert!(!run.join("gone.sock").exists());
    assert_eq!(view["restarts"], 0);
    assert_eq!(processes_with_marker(&mark), vec![pid_of(&view)]);
    assert!(!log.contains("adopting the keepers"), "{log}");
    drop(foreign);
}
