//! Supervision with real processes: heartbeatd runs the test agent
//! (`heartbeatd-test-agent`) and restarts, stops and cleans up after it. Every process of a
//! tree is found by a marker in its environment, never by pid.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{processes_with_marker, test_agent_bin, Daemon};

/// A unique marker for this test's processes.
pub(crate) fn marker(test: &str) -> String {
    format!("hbd-test-{test}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// An `[[agents]]` entry running the test agent in `mode`, with `extra` keys.
pub(crate) fn agent(id: &str, mode: &str, marker: &str, extra: &str) -> String {
    format!(
        "[[agents]]\nid = \"{id}\"\ncommand = [{:?}]\nenv = {{ TEST_AGENT_ID = \"{id}\", TEST_AGENT_MODE = \"{mode}\", TEST_MARKER = \"{marker}\", TEST_AGENT_URL = \"@URL@\" }}\n{extra}\n",
        test_agent_bin().display().to_string()
    )
}

/// Starts a daemon whose agents post to it: the config's `@URL@` becomes its heartbeat URL
/// (the port is only known once the harness has picked it).
pub(crate) fn start(config: &str) -> Daemon {
    Daemon::start_with(|port| config.replace("@URL@", &format!("http://127.0.0.1:{port}/heartbeat")))
}

fn get_agent(daemon: &Daemon, id: &str) -> Value {
    let reply = daemon.request("GET", &format!("/agents/{id}"), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

pub(crate) fn process(daemon: &Daemon, id: &str) -> Value {
    get_agent(daemon, id)["process"].clone()
}

/// Waits until `check` holds for the agent's process view; panics with the log otherwise.
pub(crate) fn wait_for(
    daemon: &Daemon,
    id: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let view = process(daemon, id);
        if check(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: not {what} within {timeout:?}: {view}\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The agent's process events, oldest first.
fn process_events(daemon: &Daemon, id: &str) -> Vec<Value> {
    let reply = daemon.request("GET", &format!("/agents/{id}/events?limit=1000"), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut events: Vec<Value> = reply.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "process")
        .cloned()
        .collect();
    events.reverse();
    events
}

fn at(event: &Value) -> chrono::DateTime<chrono::Utc> {
    event["at"].as_str().unwrap().parse().unwrap()
}

fn wait_no_processes(marker: &str, timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_with_marker(marker);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_crash_is_restarted_with_backoff_then_fatal_then_retried_after_fatal_retry_s() {
    // Arrange: an agent that exits 3 after 100 ms, every time.
    let mark = marker("crash");
    let config = agent(
        "crashy",
        "crash:3:100",
        &mark,
        "restart_backoff_ms = 400\nrestart_backoff_max_ms = 10000\nmax_restarts = 3\nrestart_window_s = 60\nfatal_retry_s = 2",
    );

    // Act
    let mut daemon = start(&config);
    let fatal = wait_for(&daemon, "crashy", "fatal", Duration::from_secs(20), |p| {
        p["state"] == "fatal"
    });
    let fatal_at = Instant::now();
    // fatal_retry_s: it is started again, and fails again.
    wait_for(&daemon, "crashy", "retried", Duration::from_secs(10), |p| {
        p["state"] != "fatal" || p["restarts"].as_u64() > fatal["restarts"].as_u64()
    });
    let retried_after = fatal_at.elapsed();

    // Assert: exit code and reason recorded.
    assert_eq!(fatal["last_exit"]["code"], 3, "{fatal}");
    assert_eq!(fatal["last_exit"]["reason"], "exited");
    assert_eq!(fatal["restarts"], 3, "max_restarts = 3: the fourth failure is fatal");
    // The backoff: each wait (ended → starting) about doubles from 400 ms, jitter ≤ +25 %.
    let events = process_events(&daemon, "crashy");
    let mut waits = Vec::new();
    for pair in events.windows(2) {
        if pair[0]["to"] == "backoff" && pair[1]["to"] == "starting" {
            waits.push((at(&pair[1]) - at(&pair[0])).num_milliseconds());
        }
    }
    assert!(waits.len() >= 3, "{events:?}");
    for (n, wait) in waits.iter().take(3).enumerate() {
        let floor = 400 * (1 << n);
        assert!(
            *wait >= floor - 20 && *wait <= floor * 5 / 4 + 250,
            "wait {n} was {wait} ms, expected {floor}..{} ms: {waits:?}",
            floor * 5 / 4
        );
    }
    assert!(events.iter().any(|e| e["to"] == "fatal" && e["exit"]["code"] == 3));
    assert!(
        retried_after >= Duration::from_millis(1500),
        "fatal_retry_s = 2, retried after {retried_after:?}"
    );
    assert_eq!(daemon.stop_with("TERM").code(), Some(0), "{}", daemon.log());
    assert!(wait_no_processes(&mark, Duration::from_secs(2)).is_empty());
}

#[test]
fn a_hung_agent_is_restarted_as_silent() {
    // Arrange: heartbeats for 1 s, then alive but silent; down after 1 + 1 s of silence.
    let mark = marker("hang");
    let config = agent(
        "hangs",
        "hang:1000",
        &mark,
        "heartbeat_interval_s = 1\ngrace_s = 1\nrestart_backoff_ms = 100",
    );

    // Act
    let mut daemon = start(&config);
    let first_pid = wait_for(&daemon, "hangs", "running", Duration::from_secs(10), |p| {
        p["state"] == "running" && p["pid"].is_i64()
    })["pid"]
        .clone();
    let restarted = wait_for(&daemon, "hangs", "restarted", Duration::from_secs(15), |p| {
        p["last_exit"]["reason"] == "silent"
    });

    // Assert
    assert_eq!(restarted["restarts"], 1, "{restarted}");
    assert_eq!(
        restarted["last_exit"]["signal"], "SIGTERM",
        "stopped with its stop signal"
    );
    let now = wait_for(&daemon, "hangs", "running again", Duration::from_secs(10), |p| {
        p["state"] == "running" && p["pid"].is_i64()
    });
    assert_ne!(now["pid"], first_pid, "a new process");
    assert!(daemon.log().contains("went silent"), "{}", daemon.log());
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    assert!(wait_no_processes(&mark, Duration::from_secs(2)).is_empty());
}

#[test]
fn a_restarted_agent_that_never_reports_is_restarted_again_until_fatal() {
    // Arrange: the first run heartbeats for 1 s then hangs; every later run never reports,
    // so liveness stays `down` and makes no new transition after the first restart.
    let mark = marker("hang-again");
    let first_run = tempfile::tempdir().unwrap();
    let mode = format!("hang:1000,quiet-after-first:{}", first_run.path().join("ran").display());
    let config = agent(
        "stuck",
        &mode,
        &mark,
        // The backoff (2.5 s) outlasts interval + grace (2 s): the recheck comes while the
        // restart is still waiting, and must be made again.
        "heartbeat_interval_s = 1\ngrace_s = 1\nrestart_backoff_ms = 2500\nrestart_backoff_max_ms = 2500\nmax_restarts = 3\nrestart_window_s = 60",
    );

    // Act
    let mut daemon = start(&config);

    // Assert: restarted for its silence again and again (every interval + grace), then
    // `fatal` past max_restarts; every end was for silence.
    let fatal = wait_for(&daemon, "stuck", "fatal", Duration::from_secs(30), |p| {
        p["state"] == "fatal"
    });
    assert_eq!(fatal["last_exit"]["reason"], "silent", "{fatal}");
    assert!(fatal["restarts"].as_u64() >= Some(3), "{fatal}");
    let silent_restarts = daemon
        .log()
        .matches("the agent went silent (liveness: down); restarting it")
        .count();
    assert!(
        silent_restarts >= 3,
        "{silent_restarts} silence restarts:\n{}",
        daemon.log()
    );
    // Given up on (fatal, which has its own alert): stopped, not down.
    assert_eq!(get_agent(&daemon, "stuck")["status"], "stopped");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    assert!(wait_no_processes(&mark, Duration::from_secs(2)).is_empty());
}

#[test]
fn sigterm_ignored_is_followed_by_sigkill_after_stop_timeout_s() {
    // Arrange
    let mark = marker("ignoreterm");
    let config =
        "admin_token = \"t0ken\"\n".to_owned() + &agent("stubborn", "ignore-term", &mark, "stop_timeout_s = 1");
    let daemon = start(&config);
    wait_for(&daemon, "stubborn", "running", Duration::from_secs(10), |p| {
        p["state"] == "running"
    });

    // Act
    let started = Instant::now();
    let reply = crate::daemon::http_with_headers(
        daemon.port,
        "POST",
        "/agents/stubborn/stop",
        None,
        &[("Authorization", "Bearer t0ken")],
    )
    .unwrap();
    let took = started.elapsed();

    // Assert: the answer comes once it is gone: after stop_timeout_s, killed.
    assert_eq!(reply.status, 200, "{reply:?}");
    let process = &reply.body["process"];
    assert_eq!(process["state"], "stopped", "{process}");
    assert_eq!(process["last_exit"]["signal"], "SIGKILL", "{process}");
    assert_eq!(process["last_exit"]["reason"], "manual");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        processes_with_marker(&mark).is_empty(),
        "nothing left once /stop answers"
    );
    // A stopped agent stays stopped: no policy starts it.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(process_of(&daemon, "stubborn")["state"], "stopped");
}

fn process_of(daemon: &Daemon, id: &str) -> Value {
    process(daemon, id)
}

#[test]
fn growing_memory_is_restarted_as_over_memory_after_limit_for_s() {
    // Arrange: +40 MiB/s against a 48 MiB limit held for 1 s.
    let mark = marker("grow");
    let config = agent(
        "greedy",
        "grow:40",
        &mark,
        "max_memory_bytes = 50331648\nlimit_for_s = 1\nrestart_backoff_ms = 100",
    );

    // Act
    let mut daemon = start(&config);
    let restarted = wait_for(&daemon, "greedy", "restarted", Duration::from_secs(20), |p| {
        p["last_exit"]["reason"] == "over_memory"
    });

    // Assert
    assert!(restarted["restarts"].as_u64() >= Some(1), "{restarted}");
    assert!(daemon.log().contains("over its limit"), "{}", daemon.log());
    let metrics = daemon.request("GET", "/metrics", None);
    let text = metrics.body.as_str().unwrap_or_default();
    assert!(
        text.contains("heartbeatd_agent_restarts_total{agent_id=\"greedy\",reason=\"over_memory\"}"),
        "{text}"
    );
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    assert!(wait_no_processes(&mark, Duration::from_secs(2)).is_empty());
}

#[test]
fn a_reported_pid_outside_the_tree_is_shown_and_warned_about_once() {
    // Arrange: the agent claims to be pid 1.
    let mark = marker("pid");
    let config = agent("liar", "report-pid:1", &mark, "") + &agent("honest", "", &mark, "");

    // Act
    let mut daemon = start(&config);
    let liar = wait_for(&daemon, "liar", "flagged", Duration::from_secs(10), |p| {
        p["reported_pid_mismatch"] == 1
    });
    thread::sleep(Duration::from_millis(1500));

    // Assert
    assert_eq!(liar["state"], "running");
    let honest = process(&daemon, "honest");
    assert!(honest.get("reported_pid_mismatch").is_none(), "{honest}");
    let warnings = daemon
        .log()
        .matches("reports a pid that is not in the process tree")
        .count();
    assert_eq!(warnings, 1, "{}", daemon.log());
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}

#[test]
fn output_rotates_at_log_max_bytes_keeping_whole_lines_and_log_backups_files() {
    // Arrange: 40 KB of 100-byte lines against 4 KiB files, 2 backups.
    let mark = marker("rotate");
    let config = agent(
        "chatty",
        "chatty:40000,quiet",
        &mark,
        "log_max_bytes = 4096\nlog_backups = 2",
    );

    // Act
    let mut daemon = start(&config);
    let log_path = daemon.data_dir().join("logs/chatty.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("line 00000399")
    {
        assert!(Instant::now() < deadline, "output not written: {}", daemon.log());
        thread::sleep(Duration::from_millis(50));
    }

    // Assert
    let files = [
        log_path.clone(),
        log_path.with_file_name("chatty.log.1"),
        log_path.with_file_name("chatty.log.2"),
    ];
    for file in &files {
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(text.len() <= 4096, "{}: {} bytes", file.display(), text.len());
        for line in text.lines() {
            assert!(
                line.len() == 99 && line.starts_with("line ") || line.starts_with("test agent"),
                "a torn line in {}: {line:?}",
                file.display()
            );
        }
    }
    assert!(
        !log_path.with_file_name("chatty.log.3").exists(),
        "only log_backups = 2 kept"
    );
    // The API reads the same file: the last lines, then by offset.
    let tail = daemon.admin("GET", "/agents/chatty/log?lines=3", None);
    assert_eq!(tail.status, 200, "{tail:?}");
    let text = tail.body["log"]["data"].as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    assert!(lines[2].starts_with("line 00000399"), "{lines:?}");
    assert_eq!(tail.body["log"]["next_offset"], tail.body["log"]["size"]);
    let again = daemon.admin(
        "GET",
        &format!(
            "/agents/chatty/log?file={}&offset={}",
            tail.body["log"]["next_file"].as_str().unwrap(),
            tail.body["log"]["next_offset"]
        ),
        None,
    );
    assert_eq!(again.body["log"]["data"], "", "nothing new: {again:?}");
    for bad in [
        "lines=0",
        "lines=10001",
        "lines=x",
        "length=0",
        "length=1048577",
        "offset=1&lines=2",
        "file=zz&offset=0",
        "tail=3",
    ] {
        let reply = daemon.admin("GET", &format!("/agents/chatty/log?{bad}"), None);
        assert_eq!(reply.status, 400, "{bad}: {reply:?}");
    }
    // An operator's read: not over TCP without a token.
    assert_eq!(daemon.request("GET", "/agents/chatty/log", None).status, 403);
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}

/// `heartbeatd --config <the daemon's> ctl …` against a live daemon, as an operator on its
/// host runs it (through the control socket the configuration names): its output and exit
/// code.
pub(crate) fn ctl(daemon: &Daemon, args: &[&str]) -> (i32, String, String) {
    let output = ctl_command(daemon).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `heartbeatd --config <the daemon's config> ctl`, no token in its environment.
fn ctl_command(daemon: &Daemon) -> std::process::Command {
    let mut command = std::process::Command::new(crate::daemon::BIN);
    command
        .arg("--config")
        .arg(daemon.dir.join("heartbeatd.toml"))
        .arg("ctl")
        .env_remove("HEARTBEATD_ADMIN_TOKEN")
        .env_remove("HEARTBEATD_URL");
    command
}

#[test]
fn ctl_status_start_stop_restart_and_tail_work_against_a_live_daemon() {
    // Arrange
    let mark = marker("ctl");
    let config = "admin_token = \"t0ken\"\n".to_owned()
        + &agent("svc", "", &mark, "autostart = false")
        + "[[agents]]\nid = \"passive\"\n"
        + "[[agents]]\nid = \"broken\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\nautostart = false\nstart_retries = 0\n";
    let daemon = start(&config);

    // Act + Assert: not started (autostart = false).
    let (code, out, _) = ctl(&daemon, &["status"]);
    assert_eq!(code, 0);
    let svc_row = out
        .lines()
        .find(|l| l.starts_with("svc "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(svc_row.contains("stopped"), "{out}");
    assert!(out.lines().next().unwrap().starts_with("ID"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("passive ")), "{out}");

    let (code, out, err) = ctl(&daemon, &["start", "svc"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("svc: running (pid ") && !out.contains("pid -"),
        "a start answers once the program is running: {out}"
    );
    let pid = process(&daemon, "svc")["pid"].as_i64().unwrap();
    wait_for(&daemon, "svc", "running", Duration::from_secs(10), |p| {
        p["state"] == "running"
    });
    let (_, out, _) = ctl(&daemon, &["status"]);
    let row = out.lines().find(|l| l.starts_with("svc ")).unwrap().to_owned();
    assert!(
        row.contains("running") && row.contains(&pid.to_string()) && row.contains(" up "),
        "{out}"
    );

    // `tail -f` follows: it prints the restarted agent's first line.
    let mut follower = ctl_command(&daemon)
        .args(["tail", "svc", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let (code, out, _) = ctl(&daemon, &["restart", "svc"]);
    assert_eq!(code, 0);
    let new_pid = process(&daemon, "svc")["pid"].as_i64().unwrap();
    assert_ne!(new_pid, pid, "{out}");
    let wanted = format!("test agent svc started (pid {new_pid})");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains(&wanted)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "tail -f did not print {wanted:?} within 10 s (or exited: {:?}); it printed {seen:?}",
                follower.try_wait()
            ),
        }
    }
    assert_eq!(
        seen.iter().filter(|l| l.contains(&wanted)).count(),
        1,
        "each line once: {seen:?}"
    );
    let _ = follower.kill();
    let _ = follower.wait();

    let (code, out, _) = ctl(&daemon, &["tail", "svc", "-n", "5"]);
    assert_eq!(code, 0);
    assert!(out.contains("test agent svc started"), "{out}");

    // status ID: the process, how it last ended, liveness, the last output.
    let (code, out, _) = ctl(&daemon, &["status", "svc"]);
    assert_eq!(code, 0, "{out}");
    for wanted in [
        "process:      running, pid ",
        "restarts:     1",
        "last exit:    SIGTERM (manual)",
        "liveness:",
        "last output:",
        "test agent svc started",
    ] {
        assert!(out.contains(wanted), "{wanted:?} in:\n{out}");
    }
    let (_, list, _) = ctl(&daemon, &["status"]);
    assert!(list.lines().next().unwrap().ends_with("REASON"), "{list}");

    // A program that dies before it is running: the start says so, exit 1.
    let (code, _, err) = ctl(&daemon, &["start", "broken"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("broken: ERROR (spawn error): exited with code 3 before it was running"),
        "{err}"
    );

    // pause and resume a passive agent's liveness.
    let (code, out, _) = ctl(&daemon, &["pause", "passive"]);
    assert_eq!((code, out.trim()), (0, "passive: liveness paused"));
    let (code, out, _) = ctl(&daemon, &["resume", "passive"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("passive: liveness "), "{out}");
    assert!(!out.contains("paused"), "{out}");

    let (code, out, _) = ctl(&daemon, &["stop", "svc"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("svc: stopped"), "{out}");
    assert!(processes_with_marker(&mark).is_empty());

    // Refused or not found: 1; usage: 2; unreachable: 3.
    assert_eq!(ctl(&daemon, &["stop", "passive"]).0, 1);
    assert_eq!(ctl(&daemon, &["start", "nobody"]).0, 1);
    assert_eq!(ctl(&daemon, &["frobnicate"]).0, 2);
    assert_eq!(ctl(&daemon, &["start", "../x"]).0, 2);
    let unreachable = std::process::Command::new(crate::daemon::BIN)
        .args(["ctl", "--url", "http://127.0.0.1:1", "status"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(3));

    // Over TCP, ctl needs the token: from the environment, or the configuration's.
    let url = format!("http://127.0.0.1:{}", daemon.port);
    let tcp = |token: Option<&str>| {
        let mut command = std::process::Command::new(crate::daemon::BIN);
        command
            .args(["ctl", "--url", &url, "stop", "svc"])
            .env_remove("HEARTBEATD_ADMIN_TOKEN");
        if let Some(token) = token {
            command.env("HEARTBEATD_ADMIN_TOKEN", token);
        }
        command.output().unwrap()
    };
    assert_eq!(tcp(None).status.code(), Some(1), "refused without the token");
    assert_eq!(tcp(Some("t0ken")).status.code(), Some(0));
    let socket = daemon.control_socket();
    std::fs::remove_file(&socket).unwrap();
    let (code, out, err) = ctl(&daemon, &["stop", "svc"]);
    assert_eq!(
        code, 0,
        "without the socket, ctl takes the config's address and token: {err}"
    );
    assert!(out.starts_with("svc: stopped"), "{out}");
}

#[test]
fn ctl_tail_f_prints_each_new_line_once_even_when_lines_repeat() {
    // Arrange: an agent whose output is the same line over and over (a health check's log).
    let config = "[[agents]]\nid = \"same\"\ncommand = [\"/bin/sh\", \"-c\", \"for i in $(seq 1 30); do echo same line; done; exec sleep 600\"]\n";
    let daemon = start(config);
    let log = daemon.data_dir().join("logs").join("same.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&log).unwrap_or_default().lines().count() < 30 {
        assert!(Instant::now() < deadline, "the agent wrote its 30 lines");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Act: follow from the last 5 lines, then append 40 more identical lines.
    let mut follower = ctl_command(&daemon)
        .args(["tail", "same", "-n", "5", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(rx.recv_timeout(Duration::from_secs(10)).expect("the first 5 lines"));
    }
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for _ in 0..40 {
            writeln!(file, "same line").unwrap();
        }
    }
    while seen.len() < 45 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("tail -f printed {} lines of 45: {seen:?}", seen.len()),
        }
    }
    // Nothing more: no old line printed again.
    let extra = rx.recv_timeout(Duration::from_millis(1500));
    let _ = follower.kill();
    let _ = follower.wait();

    // Assert
    assert!(seen.iter().all(|l| l == "same line"), "{seen:?}");
    assert!(extra.is_err(), "printed more than was written: {extra:?}");
}

#[test]
fn no_process_of_a_tree_survives_a_graceful_stop_or_a_sigkill_of_heartbeatd() {
    // Arrange: two agents, each with a grandchild that left its session with setsid().
    let mark = marker("orphans");
    let config = agent("parent-a", "grandchild", &mark, "") + &agent("parent-b", "grandchild", &mark, "");
    let mut daemon = start(&config);
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with_marker(&mark).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "agents and grandchildren not all up: {}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }

    // Act 1: graceful stop.
    assert_eq!(daemon.stop_with("TERM").code(), Some(0), "{}", daemon.log());

    // Assert 1: nothing left, at once.
    let left = processes_with_marker(&mark);
    assert!(left.is_empty(), "left after a graceful stop: {left:?}");
    assert!(daemon.log().contains("supervised agents stopped"), "{}", daemon.log());

    // Act 2: start again on the same data directory (autostart), then SIGKILL heartbeatd;
    // with adopt_timeout_s = 0 the trees do not wait to be adopted (see adoption.rs for
    // what they do otherwise).
    let dir = daemon.dir.clone();
    let config = fs::read_to_string(dir.join("heartbeatd.toml")).unwrap();
    let extra: String = config.lines().skip(2).collect::<Vec<_>>().join("\n");
    let mut again = Daemon::start_in(&dir, &format!("adopt_timeout_s = 0\n{extra}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with_marker(&mark).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "autostart agents did not start again: {}",
            again.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    crate::daemon::send_signal(again.pid(), "KILL");
    again.wait_exit(Duration::from_secs(5));

    // Assert 2: within 2 s, no process of either tree, the setsid grandchildren included.
    let left = wait_no_processes(&mark, Duration::from_secs(2));
    assert!(left.is_empty(), "left 2 s after SIGKILL of heartbeatd: {left:?}");
}

/// The parent pid of `pid` (field 4 of `/proc/<pid>/stat`, after the command in parentheses).
pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_sigkilled_keeper_leaves_no_process_of_its_tree_and_the_agent_is_started_again() {
    // Arrange: an agent with a grandchild that left its session with setsid().
    let mark = marker("keeper-kill");
    let daemon = start(&agent("tree", "grandchild", &mark, "restart_backoff_ms = 100"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with_marker(&mark).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "agent and grandchild not up: {}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let old_tree = processes_with_marker(&mark);
    let agent_pid = process(&daemon, "tree")["pid"].as_u64().unwrap() as u32;
    let keeper = parent_of(agent_pid).unwrap();
    assert_ne!(keeper, daemon.pid(), "the agent runs under its keeper");

    // Act: someone SIGKILLs the keeper.
    crate::daemon::send_signal(keeper, "KILL");

    // Assert: within 2 s no process of the old tree is left (the agent dies with its keeper,
    // heartbeatd sweeps the grandchild), and the agent is started again.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let alive: Vec<u32> = processes_with_marker(&mark)
            .into_iter()
            .filter(|pid| old_tree.contains(pid))
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left 2 s after SIGKILL of the keeper: {alive:?}\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let again = wait_for(&daemon, "tree", "running again", Duration::from_secs(10), |p| {
        p["state"] == "running" && p["pid"].as_u64().is_some_and(|pid| pid as u32 != agent_pid)
    });
    assert!(again["restarts"].as_u64() >= Some(1), "{again}");
}

#[test]
fn commands_over_http_need_an_admin_token_and_bad_settings_are_refused_naming_the_key() {
    // Arrange: loopback without a token (loopback_admin) accepts other changes, but never a
    // program to run.
    let daemon = Daemon::start("loopback_admin = true\n");
    let bin = test_agent_bin().display().to_string();

    // Act + Assert
    let reply = daemon.request("POST", "/agents", Some(&format!(r#"{{"id":"x","command":["{bin}"]}}"#)));
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(
        reply.body["message"].as_str().unwrap().contains("admin_token"),
        "{reply:?}"
    );
    assert_eq!(daemon.request("POST", "/agents", Some(r#"{"id":"plain"}"#)).status, 201);
    let reply = daemon.request("PATCH", "/agents/plain", Some(&format!(r#"{{"command":["{bin}"]}}"#)));
    assert_eq!(reply.status, 403, "{reply:?}");

    let with_token = Daemon::start("admin_token = \"t0ken\"\n");
    let post = |body: &str| {
        crate::daemon::http_with_headers(
            with_token.port,
            "POST",
            "/agents",
            Some(body),
            &[("Authorization", "Bearer t0ken")],
        )
        .unwrap()
    };
    for (body, key) in [
        (r#"{"id":"a","command":[]}"#.to_owned(), "command"),
        (
            r#"{"id":"a","command":["x"],"stop_signal":"SIGFOO"}"#.to_owned(),
            "stop_signal",
        ),
        (
            r#"{"id":"a","command":["x"],"restart_backoff_ms":5000,"restart_backoff_max_ms":10}"#.to_owned(),
            "restart_backoff_max_ms",
        ),
        (
            r#"{"id":"a","command":["x"],"stop_timeout_s":18446744073709551615}"#.to_owned(),
            "stop_timeout_s",
        ),
        (r#"{"id":"a","max_restarts":3}"#.to_owned(), "max_restarts"),
        (
            r#"{"id":"a","command":["x"],"restart":"sometimes"}"#.to_owned(),
            "restart",
        ),
    ] {
        let reply = post(&body);
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert!(
            reply.body["message"].as_str().unwrap().contains(key),
            "{body}: {reply:?}"
        );
    }
    // A program registered over HTTP with the token runs; deleting it ends it.
    let mark = marker("api");
    let reply = post(&format!(
        r#"{{"id":"api-agent","command":["{bin}"],"env":{{"TEST_AGENT_MODE":"quiet","TEST_MARKER":"{mark}"}}}}"#
    ));
    assert_eq!(reply.status, 201, "{reply:?}");
    wait_for(&with_token, "api-agent", "running", Duration::from_secs(10), |p| {
        p["state"] == "running"
    });
    assert_eq!(processes_with_marker(&mark).len(), 1);
    let deleted = crate::daemon::http_with_headers(
        with_token.port,
        "DELETE",
        "/agents/api-agent",
        None,
        &[("Authorization", "Bearer t0ken")],
    )
    .unwrap();
    assert_eq!(deleted.status, 204);
    assert!(
        processes_with_marker(&mark).is_empty(),
        "deleting the agent ends its tree"
    );
}

#[test]
fn a_config_with_bad_supervision_settings_exits_2_naming_the_key() {
    for (entry, key) in [
        ("command = []", "agents[0].command"),
        ("command = [\"x\"]\nstop_signal = \"NOPE\"", "agents[0].stop_signal"),
        (
            "command = [\"x\"]\nrestart_backoff_ms = 2000\nrestart_backoff_max_ms = 1000",
            "agents[0].restart_backoff_max_ms",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        fs::write(&config, format!("[[agents]]\nid = \"a\"\n{entry}\n")).unwrap();
        let output = std::process::Command::new(crate::daemon::BIN)
            .arg("check-config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{entry}: {stderr}");
        assert!(stderr.contains(key), "{entry}: {stderr}");
    }
}

#[test]
fn a_sighup_starts_an_added_agent_and_process_changes_reach_the_webhook_and_metrics() {
    // Arrange: no supervised agent yet, a webhook receiver.
    let receiver = crate::webhook::Receiver::start();
    let hook = format!("webhook_url = \"http://127.0.0.1:{}/hook\"\n", receiver.port);
    let mut daemon = start(&hook);
    let mark = marker("sighup");

    // Act: a crashing agent is added to the file, and heartbeatd reloads.
    let path = daemon.dir.join("heartbeatd.toml");
    let text = fs::read_to_string(&path).unwrap();
    let url = format!("http://127.0.0.1:{}/heartbeat", daemon.port);
    let added = agent(
        "added",
        "crash:4:300",
        &mark,
        "restart_backoff_ms = 200\nmax_restarts = 1",
    )
    .replace("@URL@", &url);
    fs::write(&path, format!("{text}\n{added}")).unwrap();
    crate::daemon::send_signal(daemon.pid(), "HUP");
    let fatal = wait_for_registered(&daemon, "added", |p| p["state"] == "fatal");

    // Assert: started by the reload, restarted once, then fatal.
    assert_eq!(fatal["last_exit"]["code"], 4, "{fatal}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let process_posts = loop {
        let posts: Vec<Value> = receiver
            .bodies()
            .into_iter()
            .filter(|b| b["kind"] == "process")
            .collect();
        if posts.iter().any(|p| p["to"] == "fatal") || Instant::now() > deadline {
            break posts;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let fatal_post = process_posts
        .iter()
        .find(|p| p["to"] == "fatal")
        .unwrap_or_else(|| panic!("no fatal delivery: {process_posts:?}"));
    assert_eq!(fatal_post["agent_id"], "added");
    assert_eq!(fatal_post["exit"]["code"], 4);
    assert_eq!(fatal_post["exit"]["reason"], "exited");
    assert!(process_posts.iter().any(|p| p["to"] == "backoff"), "{process_posts:?}");
    let metrics = daemon.request("GET", "/metrics", None);
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    for series in [
        "heartbeatd_agent_process_state{agent_id=\"added\",state=\"fatal\"} 1",
        "heartbeatd_agent_process_state{agent_id=\"added\",state=\"running\"} 0",
        "heartbeatd_supervised_processes{state=\"fatal\"} 1",
        "heartbeatd_agent_restarts_total{agent_id=\"added\",reason=\"exited\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    let file = daemon.dir.join("metrics.txt");
    fs::write(&file, &text).unwrap();
    let check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(fs::File::open(&file).unwrap())
        .output()
        .expect("promtool (make test installs it)");
    assert!(
        check.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}

/// Like [`wait_for`], for an agent that may not be registered yet.
fn wait_for_registered(daemon: &Daemon, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = daemon.request("GET", &format!("/agents/{id}"), None);
        if reply.status == 200 && check(&reply.body["process"]) {
            return reply.body["process"].clone();
        }
        assert!(Instant::now() < deadline, "{id}: {reply:?}\n{}", daemon.log());
        thread::sleep(Duration::from_millis(50));
    }
}
