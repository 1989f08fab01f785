//! Regression tests for the breaks an outside attack found (issue 8): each failed on the code
//! before its fix. Hostile values, bookkeeping after faults, and resource exhaustion.

use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::{agent_file, heartbeat, send_signal, Daemon, BIN};

/// Waits until `check` holds, or fails with `what`.
fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        thread::sleep(Duration::from_millis(25));
    }
}

fn status_of(daemon: &Daemon, id: &str) -> String {
    daemon.request("GET", &format!("/agents/{id}"), None).body["status"]
        .as_str()
        .unwrap_or("none")
        .to_owned()
}

/// The per-state counts of `/heartbeat/stats` add up to `agents_registered`.
fn assert_counts_add_up(daemon: &Daemon) -> Value {
    let stats = daemon.stats();
    let sum: u64 = stats["agents_by_status"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(sum, stats["agents_registered"].as_u64().unwrap(), "{stats}");
    stats
}

#[test]
fn a_timestamp_outside_1677_2262_is_accepted_with_server_time_and_journaling_goes_on() {
    // Arrange
    let config = "flush_interval_ms = 50\n[[agents]]\nid = \"go-zero\"\n[[agents]]\nid = \"other\"\n";
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir.path(), config);

    // Act: Go's zero time (an agent with an unset clock), then ordinary heartbeats.
    for text in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
        let mut body = heartbeat("go-zero", 1);
        body["timestamp"] = json!(text);
        assert_eq!(daemon.post_heartbeat(&body).status, 200, "{text}");
    }
    for n in 0..5 {
        assert_eq!(daemon.post_heartbeat(&heartbeat("other", n)).status, 200);
    }
    daemon.wait_processed(7);

    // Assert: the journal keeps working (ready, nothing lost after kill -9), and the log says
    // what was wrong with the timestamp.
    assert_eq!(daemon.request("GET", "/readyz", None).status, 200);
    thread::sleep(Duration::from_millis(400)); // several flush intervals
    send_signal(daemon.pid(), "KILL");
    let mut daemon = daemon;
    daemon.wait_exit(Duration::from_secs(10));
    let mut restarted = Daemon::start_in(dir.path(), config);
    assert_eq!(restarted.stop_with("TERM").code(), Some(0), "{}", restarted.log());
    let data = dir.path().join("data");
    assert_eq!(agent_file(&data, "go-zero")["heartbeat_count"], 2);
    assert_eq!(agent_file(&data, "other")["heartbeat_count"], 5);
    let log = restarted.log();
    assert!(log.contains("outside 1677-09-21"), "{log}");
    assert!(!log.contains("could not persist"), "{log}");
}

#[test]
fn huge_interval_and_grace_are_refused_over_http_and_in_the_config() {
    // Arrange
    let mut daemon = Daemon::start("");
    assert_eq!(daemon.admin("POST", "/agents", Some(r#"{"id": "a"}"#)).status, 201);
    let huge = 9_223_372_036_854_775_807u64;

    // Act / Assert: PATCH and POST answer 400 naming the key; nothing is stored.
    let cases = [
        (
            "PATCH",
            "/agents/a",
            json!({"heartbeat_interval_s": huge}),
            "heartbeat_interval_s",
        ),
        ("PATCH", "/agents/a", json!({"grace_s": 0}), "grace_s"),
        ("PATCH", "/agents/a", json!({"grace_s": 604_801}), "grace_s"),
        ("POST", "/agents", json!({"id": "b", "grace_s": huge}), "grace_s"),
        (
            "POST",
            "/agents",
            json!([{"id": "c"}, {"id": "d", "heartbeat_interval_s": huge}]),
            "entry 1",
        ),
    ];
    for (method, path, body, key) in cases {
        let reply = daemon.admin(method, path, Some(&body.to_string()));
        assert_eq!(reply.status, 400, "{method} {path} {body}: {reply:?}");
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.contains(key), "{method} {body}: {message}");
    }
    assert_eq!(daemon.request("GET", "/agents/b", None).status, 404);
    assert_eq!(daemon.request("GET", "/agents/c", None).status, 404, "all or none");
    let ok = daemon.admin(
        "PATCH",
        "/agents/a",
        Some(&json!({"heartbeat_interval_s": 604_800}).to_string()),
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    // Liveness still works: a heartbeat is taken and the daemon stops cleanly.
    assert_eq!(daemon.post_heartbeat(&heartbeat("a", 1)).status, 200);
    eventually(Duration::from_secs(3), "a is up", || status_of(&daemon, "a") == "up");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0), "{}", daemon.log());

    // The config file: exit 2 naming the key.
    for text in [
        format!("heartbeat_interval_s = {huge}\n"),
        "grace_s = 604801\n".to_owned(),
        format!("[[agents]]\nid = \"x\"\ngrace_s = {huge}\n"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        fs::write(&path, &text).unwrap();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .env("HEARTBEATD_DATA_DIR", dir.path().join("data"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        let key = if text.contains("interval") {
            "heartbeat_interval_s"
        } else {
            "grace_s"
        };
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
}

#[test]
fn a_registry_saved_with_a_huge_interval_loads_clamped_with_a_warning() {
    // Arrange: a registry.json as an older version could write it.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("data")).unwrap();
    let old = json!({"format_version": 1, "imported_from_config": [],
        "agents": [{"id": "old", "heartbeat_interval_s": 9_223_372_036_854_775_807u64, "grace_s": 1}]});
    fs::write(dir.path().join("data/registry.json"), old.to_string()).unwrap();

    // Act
    let mut daemon = Daemon::start_in(dir.path(), "");
    assert_eq!(daemon.post_heartbeat(&heartbeat("old", 1)).status, 200);
    eventually(Duration::from_secs(3), "old is up", || {
        status_of(&daemon, "old") == "up"
    });
    let agent = daemon.request("GET", "/agents/old", None).body;

    // Assert: no panic, the bound, a warning that says what to do.
    assert_eq!(agent["heartbeat_interval_s"], 604_800, "{agent}");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains("timing out of bounds") && log.contains("what_to_do"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn after_kill_9_agents_known_only_from_the_journal_start_up_and_can_go_down() {
    // Arrange: a heartbeat that only the journal holds (no checkpoint before the kill).
    let config = "flush_interval_ms = 50\ncheckpoint_interval_s = 3600\n[[agents]]\nid = \"pulse\"\nheartbeat_interval_s = 1\ngrace_s = 1\n";
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir.path(), config);
    assert_eq!(daemon.post_heartbeat(&heartbeat("pulse", 1)).status, 200);
    daemon.wait_synced(1);
    send_signal(daemon.pid(), "KILL");
    let mut daemon = daemon;
    daemon.wait_exit(Duration::from_secs(10));
    assert!(
        !dir.path().join("data/agents/pulse.json").exists(),
        "only in the journal"
    );

    // Act
    let restarted = Daemon::start_in(dir.path(), config);

    // Assert: up at start (seen before), then down once interval + grace pass with no heartbeat.
    assert_eq!(status_of(&restarted, "pulse"), "up");
    eventually(Duration::from_secs(5), "pulse goes down", || {
        status_of(&restarted, "pulse") == "down"
    });
    assert_counts_add_up(&restarted);
}

#[test]
fn a_deleted_agent_is_no_longer_watched_or_counted() {
    // Arrange
    let daemon = Daemon::start("[[agents]]\nid = \"stays\"\n");
    let gone = r#"{"id": "gone", "heartbeat_interval_s": 1, "grace_s": 1}"#;
    assert_eq!(daemon.admin("POST", "/agents", Some(gone)).status, 201);
    assert_eq!(daemon.post_heartbeat(&heartbeat("gone", 1)).status, 200);
    eventually(Duration::from_secs(3), "gone is up", || {
        status_of(&daemon, "gone") == "up"
    });

    // Act
    assert_eq!(daemon.admin("DELETE", "/agents/gone", None).status, 204);
    thread::sleep(Duration::from_secs(3)); // past late and down

    // Assert: no transition after the delete, no events file, counts add up.
    let events = daemon.data_dir().join("events/gone.log");
    assert!(!events.exists(), "events file recreated for a deleted agent");
    let stats = assert_counts_add_up(&daemon);
    assert_eq!(stats["agents_registered"], 1);
    assert_eq!(stats["agents_by_status"]["down"], 0, "{stats}");
    assert!(!daemon.log().contains("agent went silent"), "{}", daemon.log());
    let metrics = daemon.request("GET", "/metrics", None).body;
    let text = metrics.as_str().unwrap();
    assert!(text.contains("agent_id=\"stays\""), "{text}");
    assert!(!text.contains("agent_id=\"gone\""), "{text}");
}

#[test]
fn agents_registered_through_the_api_are_counted_as_new_at_once() {
    // Arrange
    let daemon = Daemon::start("[[agents]]\nid = \"seed\"\n");
    let batch: Vec<Value> = (0..1000).map(|i| json!({"id": format!("api-{i:04}")})).collect();

    // Act
    let reply = daemon.admin("POST", "/agents", Some(&Value::Array(batch).to_string()));
    assert_eq!(reply.status, 201, "{reply:?}");

    // Assert: at once, and after a heartbeat and a delete, the states add up.
    let stats = assert_counts_add_up(&daemon);
    assert_eq!(stats["agents_by_status"]["new"], 1001, "{stats}");
    assert_eq!(daemon.post_heartbeat(&heartbeat("api-0001", 1)).status, 200);
    eventually(Duration::from_secs(3), "api-0001 is up", || {
        status_of(&daemon, "api-0001") == "up"
    });
    assert_eq!(daemon.admin("DELETE", "/agents/api-0002", None).status, 204);
    let stats = assert_counts_add_up(&daemon);
    assert_eq!(stats["agents_by_status"]["up"], 1, "{stats}");
}

/// Peak resident memory of a process, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Sends `head` and then up to `body_len` bytes of body in 64 KiB chunks, stopping when the
/// server stops reading; returns the status line it answered, if any.
fn send_raw(port: u16, head: &str, body_len: usize, pace: Option<Duration>) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; if pace.is_some() { 1 } else { 64 * 1024 }];
    let mut sent = 0;
    while sent < body_len {
        if stream.write_all(&chunk).is_err() {
            break; // the server answered and closed: it is not reading any more
        }
        sent += chunk.len();
        if let Some(pace) = pace {
            thread::sleep(pace);
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().map(str::to_owned)
}

#[test]
fn unauthenticated_admin_bodies_are_never_read() {
    // Arrange
    let daemon = Daemon::start("admin_token = \"s3cret\"\n");
    assert_eq!(daemon.admin("POST", "/agents", Some(r#"{"id": "a"}"#)).status, 201);
    let before = peak_rss(daemon.pid());
    const BODY: usize = 60 * 1024 * 1024;

    // Act: 16 concurrent 60 MiB PATCHes without a token.
    let port = daemon.port;
    let attackers: Vec<_> = (0..16)
        .map(|_| {
            thread::spawn(move || {
                let head = format!("PATCH /agents/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n");
                send_raw(port, &head, BODY, None)
            })
        })
        .collect();
    let answers: Vec<_> = attackers.into_iter().map(|a| a.join().unwrap()).collect();

    // Assert: each got 401 and heartbeatd did not buffer the bodies (16 × 60 MiB).
    for answer in &answers {
        assert!(answer.as_deref().is_some_and(|l| l.contains(" 401")), "{answers:?}");
    }
    let growth = peak_rss(daemon.pid()).saturating_sub(before);
    println!(
        "peak RSS growth under 16 unauthenticated 60 MiB PATCHes: {} KiB",
        growth / 1024
    );
    assert!(growth < 64 * 1024 * 1024, "peak RSS grew by {growth} bytes");

    // An authenticated body over the 4 MiB cap: 413, in the common body shape.
    let big = format!("{{\"name\":\"{}\"}}", "n".repeat(5 * 1024 * 1024));
    let reply = crate::daemon::http_with_headers(
        daemon.port,
        "PATCH",
        "/agents/a",
        Some(&big),
        &[("Authorization", "bearer s3cret")],
    )
    .unwrap();
    assert_eq!(reply.status, 413, "{:?}", reply.status);
    assert_eq!(reply.body["success"], false);
    // The scheme is case-insensitive (RFC 7235).
    let renamed = crate::daemon::http_with_headers(
        daemon.port,
        "PATCH",
        "/agents/a",
        Some("{\"name\":\"x\"}"),
        &[("Authorization", "bearer s3cret")],
    )
    .unwrap();
    assert_eq!(renamed.status, 200, "{renamed:?}");
}

#[test]
fn invalid_heartbeats_cannot_flood_or_forge_the_log() {
    // Arrange
    let daemon = Daemon::start("[[agents]]\nid = \"a\"\n");
    let log_before = daemon.log().len();

    // Act: 300 invalid heartbeats with 60 KB ids, and one with a newline in its id.
    let long_id = "x".repeat(60_000);
    for _ in 0..300 {
        let reply = daemon.post_heartbeat(&json!({"agent_id": long_id, "pid": 1}));
        assert_eq!(reply.status, 400);
    }
    thread::sleep(Duration::from_millis(100));
    let forged = "a\nFORGED CRIT everything is on fire";
    assert_eq!(
        daemon.post_heartbeat(&json!({"agent_id": forged, "pid": 0})).status,
        400
    );

    // Assert: a few lines at most, ids cut, no forged line.
    let log = daemon.log()[log_before..].to_owned();
    assert!(log.len() < 4096, "{} bytes of log for 301 bad requests", log.len());
    assert!(log.contains("invalid heartbeat request"), "{log}");
    assert!(
        log.contains(&format!("{}…(60000 bytes)", "x".repeat(128))),
        "the id, cut: {log}"
    );
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "{log}");
}

#[test]
fn a_body_that_trickles_in_is_cut_off_at_request_timeout_s() {
    // Arrange
    let daemon = Daemon::start("request_timeout_s = 2\n[[agents]]\nid = \"a\"\n");
    let port = daemon.port;

    // Act: 20 connections each declaring 100 bytes and sending one per second.
    let started = Instant::now();
    let slow: Vec<_> = (0..20)
        .map(|_| {
            thread::spawn(move || {
                let head = "POST /heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n";
                send_raw(port, head, 100, Some(Duration::from_secs(1)))
            })
        })
        .collect();
    let answers: Vec<_> = slow.into_iter().map(|t| t.join().unwrap()).collect();

    // Assert: each is answered 408 and closed long before its body could finish (100 s).
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "slow bodies held for {took:?}");
    for answer in &answers {
        assert!(answer.as_deref().is_some_and(|l| l.contains(" 408")), "{answers:?}");
    }
    assert_eq!(
        daemon.post_heartbeat(&heartbeat("a", 1)).status,
        200,
        "others still served"
    );

    // Headers that never finish: actix's own 408 (empty body) and a closed connection.
    let started = Instant::now();
    let answer = send_raw(port, "POST /heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\n", 0, None);
    assert!(answer.as_deref().is_some_and(|l| l.contains(" 408")), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
}

#[test]
fn a_low_open_files_limit_is_warned_about_at_start() {
    // Arrange: a hard limit of 512 descriptors, below what the default max_connections needs.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("h.toml");
    fs::write(
        &config,
        format!("http_port = 0\ndata_dir = {:?}\n", dir.path().join("data")),
    )
    .unwrap();
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n 512 && exec {BIN} --config {}", config.display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_secs(1));
    send_signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("open-files limit is below"), "{stderr}");
    assert!(stderr.contains("max_connections"), "{stderr}");
}

#[test]
fn removing_data_dir_while_running_keeps_api_registrations() {
    // Arrange
    let config = "[[agents]]\nid = \"from-config\"\n";
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(dir.path(), config);
    let reply = daemon.admin("POST", "/agents", Some(&json!({"id": "from-api"}).to_string()));
    assert_eq!(reply.status, 201);

    // Act: an operator removes the whole data directory.
    fs::remove_dir_all(daemon.data_dir()).unwrap();
    let registry = daemon.data_dir().join("registry.json");
    eventually(Duration::from_secs(5), "registry.json written again", || {
        registry.exists()
    });
    assert_eq!(daemon.stop_with("TERM").code(), Some(0), "{}", daemon.log());

    // Assert: after a restart the API's agent is still registered.
    let mut restarted = Daemon::start_in(dir.path(), config);
    assert_eq!(restarted.request("GET", "/agents/from-api", None).status, 200);
    assert!(
        restarted.log().contains("registry.json was missing"),
        "{}",
        restarted.log()
    );
    assert_eq!(restarted.stop_with("TERM").code(), Some(0));
}

#[test]
fn an_auto_register_flood_is_capped_and_cheap_and_registered_agents_keep_their_service() {
    // Arrange
    const LIMIT: usize = 2000;
    let daemon = Daemon::start(&format!(
        "auto_register = true\nauto_register_limit = {LIMIT}\n[[agents]]\nid = \"real\"\n"
    ));
    let port = daemon.port;
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));

    // Act: 4 clients send heartbeats for 6,000 made-up ids while a registered agent reports
    // 100 times a second.
    let floods: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
                for i in 0..1500 {
                    let body = heartbeat(&format!("fake-{t}-{i}"), 1).to_string();
                    let status = crate::daemon::http(port, "POST", "/heartbeat", Some(&body)).map_or(0, |r| r.status);
                    *statuses.entry(status).or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let real = {
        let flooding = std::sync::Arc::clone(&flooding);
        thread::spawn(move || {
            let (mut sent, mut ok) = (0u64, 0u64);
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let body = heartbeat("real", sent).to_string();
                sent += 1;
                if crate::daemon::http(port, "POST", "/heartbeat", Some(&body)).is_some_and(|r| r.status == 200) {
                    ok += 1;
                }
                thread::sleep(Duration::from_millis(10).saturating_sub(started.elapsed()));
            }
            (sent, ok)
        })
    };
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for flood in floods {
        for (status, n) in flood.join().unwrap() {
            *statuses.entry(status).or_default() += n;
        }
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let (sent, ok) = real.join().unwrap();

    // Assert
    println!("flood answers {statuses:?}; the registered agent: {ok} of {sent} accepted");
    assert!(
        ok as f64 >= 0.99 * sent as f64,
        "registered agent starved: {ok} of {sent}"
    );
    assert_eq!(statuses.get(&200).copied(), Some(LIMIT as u64 - 1), "{statuses:?}");
    assert_eq!(
        statuses.get(&429).copied(),
        Some(6000 - LIMIT as u64 + 1),
        "{statuses:?}"
    );
    assert_eq!(daemon.stats()["agents_registered"], LIMIT);
    let data = daemon.data_dir();
    let on_disk: u64 = ["registry.json", "registry.log"]
        .iter()
        .map(|f| fs::metadata(data.join(f)).map_or(0, |m| m.len()))
        .sum();
    assert!(on_disk < 200 * LIMIT as u64, "registry files hold {on_disk} bytes");
    let log = daemon.log();
    assert_eq!(log.matches("auto_register_limit reached").count(), 1, "{log}");
}

#[test]
fn duplicate_and_differently_cased_keys_are_read_as_go_reads_them() {
    let daemon = Daemon::start("[[agents]]\nid = \"a\"\n");
    let body = r#"{"agent_id":"ghost","pid":1,"agent_id":"a","Memory":5,"memory":7}"#;
    let reply = daemon.request("POST", "/heartbeat", Some(body));
    assert_eq!(reply.status, 200, "{reply:?}");
    daemon.wait_processed(1);
    let agent = daemon.request("GET", "/agents/a", None).body;
    assert_eq!(agent["last_memory"], 7, "the last value wins: {agent}");
}

/// Sockets the process holds open.
fn open_sockets(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

#[test]
fn connections_past_max_connections_wait_in_the_backlog() {
    // Arrange
    let daemon = Daemon::start("max_connections = 10\nrequest_timeout_s = 30\n[[agents]]\nid = \"a\"\n");
    let before = open_sockets(daemon.pid());

    // Act: 60 clients connect and send nothing.
    let idle: Vec<_> = (0..60)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(500));

    // Assert: heartbeatd accepted at most max_connections of them; the rest wait in the
    // kernel's backlog and cost heartbeatd no descriptor.
    let held = open_sockets(daemon.pid()) - before;
    assert!(
        held <= 10,
        "heartbeatd holds {held} connections with max_connections = 10"
    );
    drop(idle);
    eventually(Duration::from_secs(10), "served again once they are gone", || {
        crate::daemon::http(daemon.port, "GET", "/healthz", None).is_some_and(|r| r.status == 200)
    });
}
