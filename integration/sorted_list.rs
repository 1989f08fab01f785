//! `GET /agents?sort=…`: the sorted listing behind the status page. Worst first across the
//! whole fleet (down, fatal, …, up), by a column in either direction, filtered by liveness
//! (several states), process state and reported status, paged by offset; bad queries get a
//! 400 that names the parameter.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::{heartbeat, test_agent_bin, Daemon};

fn ids(reply: &Value) -> Vec<String> {
    reply["agents"]
        .as_array()
        .unwrap_or_else(|| panic!("no agents in {reply}"))
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A fleet with one agent in each state the order tells apart (all but `late`, which lasts
/// only seconds; the unit tests of the order cover it).
fn fleet() -> Daemon {
    let agent = test_agent_bin().display().to_string();
    let daemon = Daemon::start(&format!(
        "heartbeat_interval_s = 3600\n\
         [[agents]]\nid = \"up-1\"\n\
         [[agents]]\nid = \"up-2\"\n\
         [[agents]]\nid = \"error-1\"\n\
         [[agents]]\nid = \"new-1\"\n\
         [[agents]]\nid = \"paused-1\"\n\
         [[agents]]\nid = \"down-1\"\nheartbeat_interval_s = 1\ngrace_s = 1\n\
         [[agents]]\nid = \"fatal-1\"\ncommand = [{agent:?}]\n\
         env = {{ TEST_AGENT_MODE = \"crash:3:50,quiet\" }}\n\
         restart_backoff_ms = 100\nmax_restarts = 2\nrestart_window_s = 60\n"
    ));
    for (id, memory) in [
        ("up-1", 10 << 20),
        ("up-2", 30 << 20),
        ("down-1", 20 << 20),
        ("paused-1", 1),
    ] {
        assert_eq!(daemon.post_heartbeat(&heartbeat(id, memory)).status, 200);
    }
    let mut error = heartbeat("error-1", 5 << 20);
    error["status"] = json!("error");
    assert_eq!(daemon.post_heartbeat(&error).status, 200);
    assert_eq!(daemon.admin("POST", "/agents/paused-1/pause", None).status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.request("GET", "/agents/down-1", None).body["status"] != "down"
        || daemon.request("GET", "/agents/fatal-1", None).body["process"]["state"] != "fatal"
    {
        assert!(Instant::now() < deadline, "down-1 never down or fatal-1 never fatal");
        thread::sleep(Duration::from_millis(100));
    }
    daemon.wait_processed(5);
    daemon
}

#[test]
fn the_sorted_listing_puts_the_worst_first_sorts_by_a_column_filters_and_pages() {
    let daemon = fleet();

    // Worst first (the default order of `sort`): down, fatal, reports error, new, paused, up.
    let all = daemon.request("GET", "/agents?sort=worst", None);
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(
        ids(&all.body),
        ["down-1", "fatal-1", "error-1", "new-1", "paused-1", "up-1", "up-2"]
    );
    assert_eq!(
        (
            &all.body["total"],
            &all.body["offset"],
            &all.body["next_offset"],
            &all.body["sort"]
        ),
        (&json!(7), &json!(0), &Value::Null, &json!("worst"))
    );
    // The reverse: the healthiest first.
    assert_eq!(
        ids(&daemon.request("GET", "/agents?sort=-worst", None).body),
        ["up-1", "up-2", "paused-1", "new-1", "error-1", "fatal-1", "down-1"]
    );

    // Pages by offset: two at a time, each saying where the next starts.
    let first = daemon.request("GET", "/agents?sort=worst&limit=2", None).body;
    assert_eq!(
        (ids(&first), &first["next_offset"]),
        (vec!["down-1".into(), "fatal-1".into()], &json!(2))
    );
    let third = daemon.request("GET", "/agents?sort=worst&limit=2&offset=6", None).body;
    assert_eq!(
        (ids(&third), &third["next_offset"]),
        (vec!["up-2".to_owned()], &Value::Null)
    );
    assert_eq!(
        ids(&daemon.request("GET", "/agents?sort=worst&offset=50", None).body),
        Vec::<String>::new()
    );

    // By a column: the most memory first; agents that never reported come last either way.
    assert_eq!(
        ids(&daemon.request("GET", "/agents?sort=-memory", None).body),
        ["up-2", "down-1", "up-1", "error-1", "paused-1", "fatal-1", "new-1"]
    );
    assert_eq!(
        ids(&daemon.request("GET", "/agents?sort=memory", None).body),
        ["paused-1", "error-1", "up-1", "down-1", "up-2", "fatal-1", "new-1"]
    );
    assert_eq!(
        ids(&daemon.request("GET", "/agents?sort=-id", None).body)[..2],
        ["up-2", "up-1"]
    );

    // Filters: several liveness states, a process state, a reported status, a prefix.
    let cases = [
        ("status=down,new", vec!["down-1", "new-1"]),
        ("process=fatal", vec!["fatal-1"]),
        ("process=running,backoff", vec![]),
        ("reported=error", vec!["error-1"]),
        ("sort=-memory&prefix=up", vec!["up-2", "up-1"]),
        ("status=up&reported=running", vec!["up-1", "up-2"]),
    ];
    for (query, expected) in cases {
        let reply = daemon.request("GET", &format!("/agents?{query}"), None);
        assert_eq!(reply.status, 200, "{query}: {reply:?}");
        assert_eq!(ids(&reply.body), expected, "{query}");
        assert_eq!(reply.body["total"], expected.len(), "{query}");
    }

    // The listing by id is as before.
    let by_id = daemon.request("GET", "/agents?limit=2", None).body;
    assert_eq!(
        (ids(&by_id), &by_id["next_after"]),
        (vec!["down-1".into(), "error-1".into()], &json!("error-1"))
    );
}

#[test]
fn a_bad_sorted_query_gets_a_400_naming_the_parameter() {
    let daemon = Daemon::start("[[agents]]\nid = \"a\"\n");
    let cases = [
        (
            "sort=bogus",
            "sort: \"bogus\" is not one of worst, id, since, last_seen, restarts, cpu, memory",
        ),
        ("sort=--cpu", "sort: "),
        ("sort=", "sort: "),
        ("process=zombie", "process: \"zombie\" is not one of"),
        ("status=down,bogus", "status: \"bogus\" is not one of"),
        ("reported=%3Cscript%3E", "reported: \"<script>\" is not one of"),
        (
            "status=up,up,up,up,up,up,up,up,up,up,up,up,up,up,up,up,up",
            "status: at most 16 values, got 17",
        ),
        ("sort=worst&offset=100001", "offset: at most 100000"),
        ("offset=-1", "invalid query"),
        ("sort=worst&after=a", "after: pages the listing by id"),
        ("sort=worst&limit=0", "limit: must be between 1 and 10000"),
    ];
    for (query, message) in cases {
        let reply = daemon.request("GET", &format!("/agents?{query}"), None);
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
        assert_eq!(reply.body["success"], false, "{query}");
        let text = reply.body["message"].as_str().unwrap_or_default();
        assert!(text.starts_with(message) || text.contains(message), "{query}: {text}");
    }
    // The deepest offset allowed is answered (with nothing past the fleet).
    let deepest = daemon.request("GET", "/agents?sort=worst&offset=100000", None);
    assert_eq!((deepest.status, ids(&deepest.body).len()), (200, 0), "{deepest:?}");
    assert_eq!(deepest.body["total"], 1);
}
