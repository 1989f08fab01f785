//! Reads that no client can make expensive (issue 15, the second attack), on the real binary:
//! a filtered agent list walks a bounded part of the registry per call, a looping `/metrics`
//! client cannot make Prometheus meet the scrape limit, no answer may be framed by another
//! site, and another site's page cannot make heartbeatd build its large answers.

use crate::daemon::{http_with_headers, Daemon};

/// The most ids a filtered listing looks at per call (`routes::agents::LIST_SCAN_BUDGET`).
const SCAN_BUDGET: usize = 8192;

/// Registers `n` agents `agent-00000…` of type `web`, 10,000 per request, over the socket.
fn register(daemon: &Daemon, n: usize) {
    for start in (0..n).step_by(10_000) {
        let batch: Vec<serde_json::Value> = (start..n.min(start + 10_000))
            .map(|i| serde_json::json!({"id": format!("agent-{i:05}"), "type": "web"}))
            .collect();
        let reply = daemon.admin("POST", "/agents", Some(&serde_json::Value::from(batch).to_string()));
        assert_eq!(reply.status, 201, "{:?}", reply.body);
    }
}

/// Follows `path` page by page (`after=`); answers how many calls it took and the agents seen.
fn follow(daemon: &Daemon, path: &str) -> (usize, Vec<String>) {
    let (mut calls, mut seen, mut after) = (0, Vec::new(), None::<String>);
    loop {
        let url = match &after {
            Some(a) => format!("{path}&after={a}"),
            None => path.to_owned(),
        };
        let reply = daemon.request("GET", &url, None);
        assert_eq!(reply.status, 200, "{url}: {:?}", reply.body);
        calls += 1;
        for agent in reply.body["agents"].as_array().unwrap() {
            seen.push(agent["id"].as_str().unwrap().to_owned());
        }
        match reply.body["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return (calls, seen),
        }
    }
}

#[test]
fn a_filtered_agent_list_walks_a_bounded_part_of_the_registry_per_call() {
    // Arrange: 20,000 agents, none paused, none of type `nomatch`.
    let mut daemon = Daemon::start("");
    register(&daemon, 20_000);

    // Act + Assert: a filter that matches nothing looks at SCAN_BUDGET ids and says where it
    // stopped (the old walk went through all 20,000 on the Manager's thread, per request).
    for filter in ["type=nomatch", "status=paused"] {
        let first = daemon.request("GET", &format!("/agents?{filter}&limit=1"), None);
        assert_eq!(first.status, 200, "{filter}: {:?}", first.body);
        assert_eq!(first.body["agents"], serde_json::json!([]), "{filter}");
        assert_eq!(
            first.body["next_after"],
            format!("agent-{:05}", SCAN_BUDGET - 1),
            "{filter}: the walk stops at its budget"
        );
        // Following it reaches the end: 20,000 / 8192 calls, nothing skipped or repeated.
        let (calls, seen) = follow(&daemon, &format!("/agents?{filter}&limit=1"));
        assert_eq!((calls, seen.len()), (3, 0), "{filter}");
    }
    // A filter that matches everyone still fills its pages and sees every agent once.
    let (_, seen) = follow(&daemon, "/agents?type=web&limit=1000");
    assert_eq!(seen.len(), 20_000);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
    let (_, new) = follow(&daemon, "/agents?status=new&limit=1000");
    assert_eq!(new.len(), 20_000);
    // A prefix is found by binary search: its run, however far in.
    let (calls, run) = follow(&daemon, "/agents?prefix=agent-1999&limit=100");
    assert_eq!((calls, run.len()), (1, 10));
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}

#[test]
fn a_looping_metrics_client_cannot_make_a_scrape_meet_the_limit() {
    // Arrange
    let mut daemon = Daemon::start("");

    // Act: 60 scrapes in a row, three times the burst the limit allows: each within the cache
    // window gets the cached body, which costs nothing and takes no token.
    let statuses: Vec<u16> = (0..60)
        .map(|_| daemon.request("GET", "/metrics", None).status)
        .collect();

    // Assert: every one answered (the old endpoint took a token before looking at the cache:
    // a client looping on /metrics made Prometheus's scrapes get 429).
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}

#[test]
fn no_answer_may_be_framed_and_other_sites_cannot_navigate_to_large_answers() {
    // Arrange
    let mut daemon = Daemon::start("");
    let iframe = [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Dest", "iframe"),
    ];

    // Act + Assert: every answer, success or error, forbids framing.
    for path in ["/", "/metrics", "/agents", "/heartbeat/stats", "/healthz", "/nowhere"] {
        let reply = http_with_headers(daemon.port, "GET", path, None, &[]).unwrap();
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        let csp = reply.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp:?}");
    }
    // Another site's iframe of a large answer is refused before anything is built; a link to
    // the status page still works.
    for path in ["/metrics", "/agents?limit=10000", "/agents/agent-1/history"] {
        let reply = http_with_headers(daemon.port, "GET", path, None, &iframe).unwrap();
        assert_eq!(reply.status, 403, "{path}: {:?}", reply.body);
    }
    let link = [("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Mode", "navigate")];
    assert_eq!(
        http_with_headers(daemon.port, "GET", "/", None, &link).unwrap().status,
        200
    );
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}
