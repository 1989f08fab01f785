//! The admin API against the real binary: register, list, page, rename, delete, history,
//! persistence across restarts, auth, auto-registration.

use serde_json::{json, Value};

use crate::daemon::{heartbeat, http_with_headers, Daemon, Reply};

const TOKEN: &str = "s3cret-token";

/// A call as an operator makes it: with a token over TCP, or without one over the control
/// socket (as `heartbeatd ctl` does).
fn call(daemon: &Daemon, method: &str, path: &str, body: Option<&Value>, token: Option<&str>) -> Reply {
    let body = body.map(Value::to_string);
    match token {
        Some(token) => tcp(daemon, method, path, body.as_deref(), Some(token)),
        None => daemon.admin(method, path, body.as_deref()),
    }
}

/// A call over TCP, with a token or without.
fn tcp(daemon: &Daemon, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_with_headers(daemon.port, method, path, body, &headers).expect("an answer")
}

fn ids(page: &Value) -> Vec<String> {
    page["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn registered_agents_report_and_survive_a_restart() {
    // Arrange: no agents in the config at all.
    let mut first = Daemon::start("");
    let batch = json!([
        {"id": "web-1", "name": "Web one", "type": "filebeat"},
        {"id": "web-2", "type": "filebeat"},
        {"id": "db-1", "type": "custom"}
    ]);

    // Act
    let created = call(&first, "POST", "/agents", Some(&batch), None);
    for n in 0..3 {
        assert_eq!(first.post_heartbeat(&heartbeat("web-1", n)).status, 200);
    }
    first.wait_processed(3);
    assert_eq!(first.stop_with("TERM").code(), Some(0));
    let second = Daemon::start_in(&first.dir, "");

    // Assert
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["registered"].as_array().unwrap().len(), 3);
    assert_eq!(
        ids(&call(&second, "GET", "/agents", None, None).body),
        ["db-1", "web-1", "web-2"]
    );
    let web1 = call(&second, "GET", "/agents/web-1", None, None);
    assert_eq!(web1.status, 200);
    assert_eq!(web1.body["name"], "Web one");
    assert_eq!(web1.body["type"], "filebeat");
    assert_eq!(web1.body["heartbeat_count"], 3);
    assert_eq!(web1.body["reported_status"], "running");
    assert!(web1.body["last_seen"].is_string() && web1.body["last_heartbeat"].is_string());
    let history = call(&second, "GET", "/agents/web-1/history?limit=2", None, None);
    let memories: Vec<u64> = history.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["memory"].as_u64().unwrap())
        .collect();
    assert_eq!(memories, [2, 1], "newest first, limited");
    assert_eq!(call(&second, "GET", "/agents/nope", None, None).status, 404);
    assert_eq!(call(&second, "GET", "/agents/nope/history", None, None).status, 404);
}

#[test]
fn a_deleted_agent_is_refused_and_its_files_are_gone() {
    // Arrange: agents registered through the API, with state on disk.
    let mut first = Daemon::start("");
    let two = json!([{"id": "gone"}, {"id": "kept"}]);
    assert_eq!(call(&first, "POST", "/agents", Some(&two), None).status, 201);
    assert_eq!(first.post_heartbeat(&heartbeat("gone", 1)).status, 200);
    first.wait_processed(1);
    assert_eq!(first.stop_with("TERM").code(), Some(0));
    let data = first.data_dir();
    assert!(data.join("agents/gone.json").exists() && data.join("history/gone.log").exists());
    let mut daemon = Daemon::start_in(&first.dir, "");

    // Act
    let deleted = call(&daemon, "DELETE", "/agents/gone", None, None);
    let after = daemon.post_heartbeat(&heartbeat("gone", 2));

    // Assert
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(after.status, 400);
    assert_eq!(
        after.body["message"],
        "validation failed: agent_id: agent \"gone\" is not registered"
    );
    assert_eq!(call(&daemon, "GET", "/agents/gone", None, None).status, 404);
    assert_eq!(call(&daemon, "DELETE", "/agents/gone", None, None).status, 404);
    assert!(!data.join("agents/gone.json").exists() && !data.join("history/gone.log").exists());
    // It stays deleted after a restart.
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    let restarted = Daemon::start_in(&first.dir, "");
    assert_eq!(ids(&call(&restarted, "GET", "/agents", None, None).body), ["kept"]);
}

#[test]
fn registration_is_all_or_none_and_names_the_bad_entry() {
    let daemon = Daemon::start("[[agents]]\nid = \"taken\"\n");
    let cases = [
        (json!([{"id": "ok-1"}, {"id": "not ok"}]), 400, "entry 1"),
        (json!([{"id": "ok-1"}, {"name": "no id"}]), 400, "entry 1"),
        (json!([{"id": "ok-1"}, {"id": "ok-2", "colour": "red"}]), 400, "colour"),
        (json!([{"id": "ok-1"}, {"id": "taken"}]), 409, "taken"),
        (json!([{"id": "ok-1"}, {"id": "ok-1"}]), 409, "ok-1"),
        (json!("a string"), 400, "expected an agent object"),
        (json!([]), 400, "empty"),
    ];
    for (body, status, names) in cases {
        let reply = call(&daemon, "POST", "/agents", Some(&body), None);
        assert_eq!(reply.status, status, "{body}: {reply:?}");
        assert_eq!(reply.body["success"], false);
        assert!(
            reply.body["message"].as_str().unwrap().contains(names),
            "{body}: {reply:?}"
        );
    }
    assert_eq!(
        ids(&call(&daemon, "GET", "/agents", None, None).body),
        ["taken"],
        "nothing of a refused batch"
    );
    let single = call(
        &daemon,
        "POST",
        "/agents",
        Some(&json!({"id": "ok-1", "type": "custom"})),
        None,
    );
    assert_eq!(single.status, 201);
    assert_eq!(single.body["id"], "ok-1");
}

#[test]
fn listing_pages_and_filters_and_patch_renames() {
    // Arrange
    let daemon = Daemon::start("");
    let batch: Vec<Value> = (1..=5)
        .map(|i| json!({"id": format!("a{i}"), "type": if i % 2 == 0 { "even" } else { "odd" }}))
        .collect();
    assert_eq!(call(&daemon, "POST", "/agents", Some(&json!(batch)), None).status, 201);

    // Act / Assert: pages of two, by id.
    let first = call(&daemon, "GET", "/agents?limit=2", None, None).body;
    assert_eq!(ids(&first), ["a1", "a2"]);
    let second = call(
        &daemon,
        "GET",
        &format!("/agents?limit=2&after={}", first["next_after"].as_str().unwrap()),
        None,
        None,
    )
    .body;
    assert_eq!(ids(&second), ["a3", "a4"]);
    let last = call(&daemon, "GET", "/agents?limit=2&after=a4", None, None).body;
    assert_eq!(ids(&last), ["a5"]);
    assert!(last["next_after"].is_null());
    assert_eq!(
        ids(&call(&daemon, "GET", "/agents?type=even", None, None).body),
        ["a2", "a4"]
    );
    // A prefix (the status page's search) pages within the ids that start with it.
    let more: Vec<Value> = ["b1", "b2", "b3", "c1"].iter().map(|id| json!({"id": id})).collect();
    assert_eq!(call(&daemon, "POST", "/agents", Some(&json!(more)), None).status, 201);
    let b = call(&daemon, "GET", "/agents?prefix=b&limit=2", None, None).body;
    assert_eq!(
        (ids(&b), b["next_after"].as_str()),
        (vec!["b1".to_owned(), "b2".to_owned()], Some("b2"))
    );
    let b_rest = call(&daemon, "GET", "/agents?prefix=b&limit=2&after=b2", None, None).body;
    assert_eq!(
        (ids(&b_rest), b_rest["next_after"].as_str()),
        (vec!["b3".to_owned()], None)
    );
    assert_eq!(
        ids(&call(&daemon, "GET", "/agents?prefix=a&after=a3", None, None).body),
        ["a4", "a5"]
    );
    assert!(ids(&call(&daemon, "GET", "/agents?prefix=z", None, None).body).is_empty());
    assert_eq!(call(&daemon, "GET", "/agents?limit=0", None, None).status, 400);
    assert_eq!(call(&daemon, "GET", "/agents?limit=abc", None, None).status, 400);

    let renamed = call(
        &daemon,
        "PATCH",
        "/agents/a3",
        Some(&json!({"name": "Third", "type": "special"})),
        None,
    );
    assert_eq!(renamed.status, 200, "{renamed:?}");
    assert_eq!(
        (renamed.body["name"].as_str(), renamed.body["type"].as_str()),
        (Some("Third"), Some("special"))
    );
    assert_eq!(call(&daemon, "GET", "/agents/a3", None, None).body["name"], "Third");
    assert_eq!(
        call(&daemon, "PATCH", "/agents/zz", Some(&json!({"name": "x"})), None).status,
        404
    );
    assert_eq!(
        call(&daemon, "PATCH", "/agents/a3", Some(&json!({"colour": "x"})), None).status,
        400
    );
    let put = call(&daemon, "PUT", "/agents", Some(&json!({})), None);
    assert_eq!((put.status, put.header("allow")), (405, Some("GET, POST")));
}

#[test]
fn the_auth_matrix() {
    // With a token, over TCP: missing 401, wrong 403, right 201; reads stay open.
    let daemon = Daemon::start(&format!("admin_token = \"{TOKEN}\"\n"));
    let body = json!({"id": "x"}).to_string();
    let missing = tcp(&daemon, "POST", "/agents", Some(&body), None);
    assert_eq!(
        (missing.status, missing.header("www-authenticate")),
        (401, Some("Bearer"))
    );
    assert_eq!(tcp(&daemon, "POST", "/agents", Some(&body), Some("wrong")).status, 403);
    assert_eq!(tcp(&daemon, "DELETE", "/agents/x", None, Some("wrong")).status, 403);
    assert_eq!(tcp(&daemon, "POST", "/agents", Some(&body), Some(TOKEN)).status, 201);
    assert_eq!(
        tcp(&daemon, "PATCH", "/agents/x", Some(r#"{"name": "n"}"#), None).status,
        401
    );
    assert_eq!(tcp(&daemon, "GET", "/agents/x", None, None).status, 200);
    assert_eq!(tcp(&daemon, "DELETE", "/agents/x", None, Some(TOKEN)).status, 204);
    // The control socket needs no token, even with one set.
    assert_eq!(daemon.admin("POST", "/agents", Some(&body)).status, 201);
    assert!(!daemon.log().contains(TOKEN), "the token never appears in logs");

    // No token, on loopback: changes over TCP are refused unless loopback_admin is set; the
    // control socket takes them.
    let default = Daemon::start("");
    let refused = tcp(&default, "POST", "/agents", Some(&body), None);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.body["message"].as_str().unwrap().contains("heartbeatd ctl"),
        "{refused:?}"
    );
    assert_eq!(default.admin("POST", "/agents", Some(&body)).status, 201);
    let opted_in = Daemon::start("loopback_admin = true\n");
    assert_eq!(tcp(&opted_in, "POST", "/agents", Some(&body), None).status, 201);

    // No token while listening beyond loopback: loopback_admin cannot open TCP, and the start
    // says so.
    let open = Daemon::start("http_bind = \"0.0.0.0\"\nloopback_admin = true\n");
    let refused = tcp(&open, "POST", "/agents", Some(&body), None);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(open.log().contains("no admin_token is set"), "{}", open.log());
}

#[test]
fn auto_register_registers_well_formed_unknown_agents() {
    let daemon = Daemon::start("auto_register = true\n");
    assert_eq!(daemon.post_heartbeat(&heartbeat("fresh-agent", 1)).status, 200);
    assert_eq!(daemon.post_heartbeat(&heartbeat("bad id", 1)).status, 400);
    daemon.wait_processed(1);
    let agent = call(&daemon, "GET", "/agents/fresh-agent", None, None);
    assert_eq!(agent.status, 200);
    assert_eq!(agent.body["heartbeat_count"], 1);
    daemon.wait_for_log("registered by their first heartbeat");
}

#[test]
fn max_agents_bounds_every_way_in_and_a_request_registers_at_most_10000() {
    // Arrange: room for five; three come from the config.
    let daemon = Daemon::start(
        "max_agents = 5\nauto_register = true\n[[agents]]\nid = \"c1\"\n[[agents]]\nid = \"c2\"\n[[agents]]\nid = \"c3\"\n",
    );

    // Act / Assert: three more are refused, all or none, naming the limit; two fit.
    let three = json!([{"id": "a1"}, {"id": "a2"}, {"id": "a3"}]).to_string();
    let refused = daemon.admin("POST", "/agents", Some(&three));
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(
        refused.body["message"].as_str().unwrap().contains("max_agents is 5"),
        "{refused:?}"
    );
    assert_eq!(daemon.admin("GET", "/agents/a1", None).status, 404, "all or none");
    let two = json!([{"id": "a1"}, {"id": "a2"}]).to_string();
    assert_eq!(daemon.admin("POST", "/agents", Some(&two)).status, 201);
    // auto_register stops there too.
    let unknown = daemon.post_heartbeat(&heartbeat("walk-in", 1));
    assert_eq!(unknown.status, 429, "{unknown:?}");
    // A bulk registration is capped per request, whatever max_agents says.
    let big = Daemon::start("");
    let batch: Vec<Value> = (0..10_001).map(|i| json!({"id": format!("b{i}")})).collect();
    let reply = big.admin("POST", "/agents", Some(&Value::Array(batch).to_string()));
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply.body["message"].as_str().unwrap().contains("at most 10000"),
        "{reply:?}"
    );

    // The config itself cannot pass it: exit 2 naming the key.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "max_agents = 1\n[[agents]]\nid = \"x\"\n[[agents]]\nid = \"y\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::daemon::BIN)
        .args(["check-config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_agents"));
}

#[test]
fn an_admin_body_must_be_declared_json_and_a_heartbeat_need_not() {
    // Arrange: a token, so TCP calls are authorized and only the type is wrong.
    let daemon = Daemon::start(&format!("admin_token = \"{TOKEN}\"\n[[agents]]\nid = \"a\"\n"));
    let bearer = format!("Bearer {TOKEN}");
    let post = |path: &str, body: &str, content_type: &str| {
        http_with_headers(
            daemon.port,
            "POST",
            path,
            Some(body),
            &[("Authorization", &bearer), ("Content-Type", content_type)],
        )
        .unwrap()
    };

    // Act / Assert
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let reply = post("/agents", r#"{"id":"x"}"#, content_type);
        assert_eq!(reply.status, 415, "{content_type}: {reply:?}");
        assert!(reply.body["message"].as_str().unwrap().contains("application/json"));
    }
    assert_eq!(
        post("/agents", r#"{"id":"x"}"#, "application/json; charset=utf-8").status,
        201
    );
    let body = heartbeat("a", 1).to_string();
    assert_eq!(
        post("/heartbeat", &body, "text/plain").status,
        200,
        "agents and curl -d"
    );
    assert_eq!(
        post("/heartbeat", &body, "application/x-www-form-urlencoded").status,
        200
    );
    // Bodiless calls need no type.
    assert_eq!(
        http_with_headers(
            daemon.port,
            "POST",
            "/agents/a/pause",
            None,
            &[("Authorization", &bearer)]
        )
        .unwrap()
        .status,
        200
    );
}
