//! `heartbeatd-load` against the real daemon (started by the shared harness): its counts must match the daemon's own.

use std::process::Command;

use serde_json::Value;

use heartbeatd_harness::Daemon;

const LOAD_BIN: &str = env!("CARGO_BIN_EXE_heartbeatd-load");

fn load_tool(args: &[&str]) -> std::process::Output {
    Command::new(LOAD_BIN).args(args).output().expect("run heartbeatd-load")
}

/// A daemon with the load tool's `agents` simulated agents registered (from the tool's own
/// `--print-agents-config`), one worker and `queue_capacity`; and its heartbeat URL.
fn daemon_for(agents: usize, queue_capacity: usize) -> (Daemon, String) {
    let printed = load_tool(&["--agents", &agents.to_string(), "--print-agents-config"]);
    assert!(printed.status.success());
    let config = format!(
        "workers = 1\nqueue_capacity = {queue_capacity}\n{}",
        String::from_utf8(printed.stdout).unwrap()
    );
    let daemon = Daemon::start(&config);
    let url = format!("http://127.0.0.1:{}/heartbeat", daemon.port);
    (daemon, url)
}

#[test]
fn its_counts_match_the_daemons_stats() {
    // Arrange: a queue small enough that some requests may get 503.
    let (daemon, url) = daemon_for(20, 4);

    // Act
    let out = load_tool(&[
        "--url",
        &url,
        "--agents",
        "20",
        "--connections",
        "16",
        "--duration",
        "2",
        "--json",
    ]);

    // Assert
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_status = |status: &str| report["by_status"][status].as_u64().unwrap_or(0);
    let ok = by_status("200");
    let sent = report["sent"].as_u64().unwrap();
    assert!(ok > 0, "{report}");
    assert_eq!(report["transport_errors"], 0, "{report}");
    assert_eq!(sent, ok + by_status("503"), "only 200 and 503 expected: {report}");

    let stats = daemon.wait_processed(ok);
    assert_eq!(stats["total_received"].as_u64(), Some(ok), "{stats} vs {report}");
    assert_eq!(stats["total_rejected"].as_u64(), Some(sent - ok), "{stats} vs {report}");
    assert_eq!(stats["total_processed"].as_u64(), Some(ok), "{stats}");
    assert_eq!(stats["total_errors"], 0);
    for key in ["p50_ms", "p99_ms", "max_ms"] {
        assert!(
            report["latency"][key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }
}

#[test]
fn it_says_when_the_target_falls_behind_the_rate() {
    // Arrange: one worker, asked for far more than anything can answer.
    let (_daemon, url) = daemon_for(2, 100_000);

    // Act: 2 connections cannot do 10 million per second.
    let out = load_tool(&[
        "--url",
        &url,
        "--agents",
        "2",
        "--connections",
        "2",
        "--duration",
        "1",
        "--rate",
        "10000000",
    ]);

    // Assert
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("fell behind --rate"), "{table}");
}

#[test]
fn a_target_that_does_not_listen_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = load_tool(&[
        "--url",
        &format!("http://127.0.0.1:{port}/heartbeat"),
        "--duration",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn register_adds_its_agents_through_the_admin_api() {
    // Arrange: no agents in the config, one of the simulated ones registered already; changes
    // over TCP need the admin token.
    let daemon = Daemon::start("admin_token = \"load-token\"\n");
    let url = format!("http://127.0.0.1:{}/heartbeat", daemon.port);
    let existing = serde_json::json!({"id": "load-000002"}).to_string();
    assert_eq!(daemon.admin("POST", "/agents", Some(&existing)).status, 201);

    // Act
    let out = load_tool(&[
        "--url",
        &url,
        "--agents",
        "5",
        "--connections",
        "2",
        "--duration",
        "1",
        "--register",
        "--admin-token",
        "load-token",
        "--json",
    ]);

    // Assert: every heartbeat was for a registered agent.
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["by_status"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["200"],
        "{report}"
    );
    let page = daemon.request("GET", "/agents", None).body;
    assert_eq!(page["agents"].as_array().unwrap().len(), 5, "{page}");
}

/// The flags table of `docs/performance.md` ("Load testing") against the tool's clap
/// definition: a flag added to the tool and not to the table fails here.
#[test]
fn every_flag_is_in_the_docs_table() {
    use clap::CommandFactory;

    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/performance.md")).unwrap();
    let section = docs
        .split("## Load testing: `heartbeatd-load`")
        .nth(1)
        .expect("docs/performance.md has a section \"Load testing: `heartbeatd-load`\"");
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `--")).collect();
    let flags: Vec<String> = heartbeatd_bench::load::args::LoadArgs::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    assert!(flags.len() >= 10, "{flags:?}");
    for flag in flags {
        assert!(
            rows.iter()
                .any(|row| row.starts_with(&format!("| `{flag}`")) || row.starts_with(&format!("| `{flag} "))),
            "docs/performance.md: the flags table of heartbeatd-load has no row for {flag}"
        );
    }
}
