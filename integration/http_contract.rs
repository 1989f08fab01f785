//! The wire contract of SEED-NOTES.md: statuses, messages, body shape, headers, stats.

use serde_json::{json, Value};

use crate::daemon::{agent_file, heartbeat, history_on_disk, journal_records, Daemon, AGENTS};

fn assert_body_shape(body: &Value, success: bool) {
    assert_eq!(body["success"], success, "{body}");
    assert!(body["message"].is_string(), "{body}");
    let ts = body["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no timestamp: {body}"));
    assert!(chrono_like_rfc3339(ts), "timestamp {ts:?} is not RFC 3339");
    assert_eq!(
        body.as_object().unwrap().len(),
        3,
        "exactly success, message, timestamp: {body}"
    );
}

fn chrono_like_rfc3339(ts: &str) -> bool {
    ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.as_bytes()[10] == b'T' && (ts.ends_with('Z') || ts.contains('+'))
}

#[test]
fn a_heartbeat_is_accepted_counted_and_saved() {
    // Arrange: write-through, so "processed" means "in the journal on disk".
    let mut daemon = Daemon::start(&format!("flush_interval_ms = 0\n{AGENTS}"));

    // Act: sent as text/plain, as `curl -d` and some agents do; parsed as JSON anyway.
    let reply = daemon.post_heartbeat(&json!({
        "agent_id": "agent-1", "pid": 1234, "status": "running", "cpu": 12.5,
        "memory": 104857600, "timestamp": "2026-11-24T06:00:00Z"
    }));

    // Assert
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_body_shape(&reply.body, true);
    assert_eq!(reply.body["message"], "heartbeat received");
    let stats = daemon.wait_processed(1);
    assert_eq!(stats["total_received"], 1);
    assert_eq!(stats["total_processed"], 1);
    assert_eq!(stats["total_errors"], 0);
    assert_eq!(stats["total_rejected"], 0);
    assert_eq!(stats["agents_registered"], 2);
    assert_eq!(stats["workers"], 10);
    assert_eq!(stats["queue_capacity"], 10_000, "workers × 1000 by default");
    assert!(stats["average_latency"].as_u64().unwrap() > 0, "{stats}");
    assert_ne!(stats["last_received_time"], "0001-01-01T00:00:00Z");
    for key in ["queue_depth", "uptime_seconds"] {
        assert!(stats[key].is_u64(), "{key}: {stats}");
    }
    let journal = journal_records(&daemon.data_dir());
    assert_eq!(journal.len(), 1, "processed means journaled: {journal:?}");
    assert_eq!(
        (journal[0]["a"].as_str(), journal[0]["m"].as_u64()),
        (Some("agent-1"), Some(104857600))
    );

    // After a stop, the agent's own files are up to date.
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    let saved = agent_file(&daemon.data_dir(), "agent-1");
    assert_eq!(saved["last_heartbeat"], "2026-11-24T06:00:00Z");
    assert_eq!(saved["pid"], 1234);
    assert_eq!(saved["name"], "Agent one");
    assert_eq!(saved["heartbeat_count"], 1);
    let history = history_on_disk(&daemon.data_dir(), "agent-1");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["m"], 104857600);
    assert_eq!(history[0]["c"], 12.5);
}

#[test]
fn stats_before_any_heartbeat_use_go_zero_values() {
    let daemon = Daemon::start(AGENTS);
    let stats = daemon.stats();
    assert_eq!(stats["last_received_time"], "0001-01-01T00:00:00Z");
    assert_eq!(stats["average_latency"], 0);
    assert_eq!(stats["total_received"], 0);
}

/// One row of the error table.
struct ErrorCase {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<String>,
    status: u16,
    /// The message must start with this.
    message: &'static str,
    /// The expected `Allow` header.
    allow: Option<&'static str>,
}

#[test]
fn every_error_status_has_the_common_body() {
    // Arrange
    let daemon = Daemon::start(AGENTS);
    let big = format!("{{\"agent_id\":\"agent-1\",\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    let valid_but = |field: &str, value: Value| {
        let mut body = heartbeat("agent-1", 1);
        body[field] = value;
        body.to_string()
    };
    let case = |name, method, path, body: Option<String>, status, message, allow| ErrorCase {
        name,
        method,
        path,
        body,
        status,
        message,
        allow,
    };
    let cases = [
        case(
            "invalid JSON",
            "POST",
            "/heartbeat",
            Some("{not json".into()),
            400,
            "invalid JSON format: ",
            None,
        ),
        case(
            "negative memory",
            "POST",
            "/heartbeat",
            Some(valid_but("memory", json!(-1))),
            400,
            "invalid JSON format: ",
            None,
        ),
        case(
            "empty agent_id",
            "POST",
            "/heartbeat",
            Some(valid_but("agent_id", json!(""))),
            400,
            "validation failed: agent_id: is required",
            None,
        ),
        case(
            "unknown agent",
            "POST",
            "/heartbeat",
            Some(valid_but("agent_id", json!("ghost"))),
            400,
            "validation failed: agent_id: agent \"ghost\" is not registered",
            None,
        ),
        case(
            "pid 0",
            "POST",
            "/heartbeat",
            Some(valid_but("pid", json!(0))),
            400,
            "validation failed: pid: ",
            None,
        ),
        case(
            "cpu over 100",
            "POST",
            "/heartbeat",
            Some(valid_but("cpu", json!(100.5))),
            400,
            "validation failed: cpu: ",
            None,
        ),
        case(
            "body over 64 KiB",
            "POST",
            "/heartbeat",
            Some(big),
            413,
            "request body is larger than",
            None,
        ),
        case(
            "GET /heartbeat",
            "GET",
            "/heartbeat",
            None,
            405,
            "method not allowed, expected POST",
            Some("POST"),
        ),
        case(
            "PUT /heartbeat",
            "PUT",
            "/heartbeat",
            Some("{}".into()),
            405,
            "method not allowed, expected POST",
            Some("POST"),
        ),
        case(
            "POST /heartbeat/stats",
            "POST",
            "/heartbeat/stats",
            Some("{}".into()),
            405,
            "method not allowed, expected GET",
            Some("GET"),
        ),
        case(
            "unknown path",
            "GET",
            "/metrics-nope",
            None,
            404,
            "not found: GET /metrics-nope",
            None,
        ),
    ];

    for c in &cases {
        // Act
        let reply = daemon.request(c.method, c.path, c.body.as_deref());

        // Assert
        let name = c.name;
        assert_eq!(reply.status, c.status, "{name}: {reply:?}");
        assert_body_shape(&reply.body, false);
        let got = reply.body["message"].as_str().unwrap();
        assert!(
            got.starts_with(c.message),
            "{name}: message {got:?} should start with {:?}",
            c.message
        );
        assert_eq!(reply.header("allow"), c.allow, "{name}: Allow header");
        assert!(
            reply
                .header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"),
            "{name}"
        );
    }
    let rejected_heartbeats = cases
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/heartbeat")
        .count();
    let stats = daemon.stats();
    assert_eq!(stats["total_rejected"], rejected_heartbeats as u64, "{stats}");
    assert_eq!(stats["total_received"], 0, "{stats}");
    let log = daemon.log();
    // Logged, but rate-limited: one line for the whole burst of bad requests (which agent's
    // request it names depends on which came first; hardening.rs checks the id is logged).
    assert_eq!(log.matches("invalid heartbeat request").count(), 1, "{log}");
}
