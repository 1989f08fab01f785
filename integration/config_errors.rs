//! Start-up failures: a bad configuration exits 2 naming the key; an unusable port or data
//! directory exits 1 with a message that says what to do. Nothing is started in either case.

use std::fs;
use std::process::Command;

use crate::daemon::{Daemon, AGENTS, BIN};

fn run_with_config(text: &str, extra_args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    fs::write(&config, text).unwrap();
    let out = Command::new(BIN)
        .args(extra_args)
        .arg("--config")
        .arg(&config)
        .env("HEARTBEATD_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configurations_exit_2_and_name_the_key_and_file() {
    let cases = [
        ("unknown key", "http_prot = 8080\n", "http_prot"),
        ("wrong type", "workers = \"ten\"\n", "workers"),
        ("zero workers", "workers = 0\n", "workers"),
        (
            "duplicate agent",
            "[[agents]]\nid = \"a\"\n[[agents]]\nid = \"a\"\n",
            "agents[1].id",
        ),
        ("bad agent id", "[[agents]]\nid = \"no spaces\"\n", "agents[0].id"),
        ("a string for a boolean", "auto_register = \"yes\"\n", "auto_register"),
        ("a fraction for an integer", "workers = 1.5\n", "workers"),
        ("a syntax error", "admin_token = \"hunter2\n", "admin_token"),
    ];
    for (case, text, key) in cases {
        let (code, _, stderr) = run_with_config(text, &[]);
        assert_eq!(code, Some(2), "{case}: {stderr}");
        assert!(stderr.contains(key), "{case}: stderr does not name {key}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "{case}: a token's line is never printed: {stderr}"
        );
        assert!(
            stderr.contains("bad.toml"),
            "{case}: stderr does not name the file: {stderr}"
        );
    }
}

#[test]
fn check_config_prints_the_effective_configuration_or_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    fs::write(
        &good,
        format!("workers = 3\nadmin_token = \"hunter2-secret\"\n{AGENTS}"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&good)
        .env("HEARTBEATD_HTTP_PORT", "9123")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("workers = 3"), "{printed}");
    assert!(printed.contains("queue_capacity = 30"), "default filled in: {printed}");
    assert!(printed.contains("http_port = 9123"), "environment applied: {printed}");
    assert!(printed.contains("id = \"agent-1\""), "{printed}");
    assert!(
        printed.contains("admin_token = \"<redacted>\"") && !printed.contains("hunter2"),
        "{printed}"
    );
    // Keys whose default is derived are shown too: the host name as instance_name, and what
    // an unset grace_s means; unset optional keys are named.
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        printed.contains(&format!("instance_name = \"{}\"", host.trim())),
        "{printed}"
    );
    assert!(
        printed.contains("# grace_s is not set: each agent's grace is twice its own heartbeat_interval_s (20 s"),
        "{printed}"
    );
    assert!(
        printed.contains("# not set: ") && printed.contains("webhook_url"),
        "{printed}"
    );
    fs::write(&good, "grace_s = 7\ninstance_name = \"edge-1\"\n").unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&good).output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("grace_s = 7\n") && printed.contains("instance_name = \"edge-1\"\n"),
        "{printed}"
    );
    assert!(!printed.contains("grace_s is not set"), "{printed}");

    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "workers = -1\n").unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("workers"));
}

#[test]
fn a_port_in_use_exits_1_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, _, stderr) = run_with_config(AGENTS, &["--http-port", &port]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("could not listen") && stderr.contains(&port),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains("journal replayed"),
        "found before any state is loaded: {stderr}"
    );
}

#[test]
fn an_unusable_data_dir_exits_1_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("a-file");
    fs::write(&not_a_dir, b"").unwrap();
    let (code, _, stderr) = run_with_config(AGENTS, &["--http-port", "1", "--data-dir", not_a_dir.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("data_dir is not usable") && stderr.contains("a-file"),
        "{stderr}"
    );
}

#[test]
fn http_port_0_starts_no_server_and_says_how_to_enable_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    fs::write(
        &config,
        format!(
            "http_port = 0\ndata_dir = {:?}\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("heartbeatd.log");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stderr(fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // Signal only once it is up (its handlers are installed by then).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("heartbeatd started")
    {
        assert!(std::time::Instant::now() < deadline, "heartbeatd did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    crate::daemon::send_signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    let stderr = fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("http_port is 0") && stderr.contains("--http-port"),
        "{stderr}"
    );
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let mut daemon = Daemon::start(&format!("log_format = \"json\"\n{AGENTS}"));
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    let log = daemon.log();
    let lines: Vec<_> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let record: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(record["msg"].is_string() && record["level"].is_string(), "{line}");
    }
    assert!(log.contains("\"version\""), "start-up line carries the version: {log}");
}

#[test]
fn the_shipped_configurations_are_valid() {
    for file in ["configs/heartbeatd.toml", "configs/supervise-example.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let output = std::process::Command::new(crate::daemon::BIN)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
