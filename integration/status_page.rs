//! The status page (`GET /`) in a real browser: Debian's headless Chromium, driven over the
//! DevTools protocol. The page is loaded once from a live daemon; the DOM is read as it
//! refreshes, and a screenshot is saved as `target/status-page.png`.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::daemon::browser::Browser;
use crate::daemon::{heartbeat, test_agent_bin, Daemon};

/// `target/`, where cargo builds (the test runs from `target/<profile>/deps`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_owned()
}

/// Each row's liveness, by agent id, as the page shows it.
const ROWS: &str = "Object.fromEntries([...document.querySelectorAll('#agents tr[data-id]')].map(r => [r.dataset.id, r.querySelector('[data-liveness]').textContent]))";

#[test]
fn the_status_page_shows_each_agent_in_its_state_and_follows_a_change_without_reloading() {
    // Arrange: `steady` stays up (hour-long interval); `slow` is late 1 s after its heartbeat
    // (down at 9 s); `gone` is down after 2 s; `quiet` never reported (new).
    // Two supervised agents (the test agent): `worker` runs and reports (up, running);
    // `crasher` never reports and exits at once, so it is restarted and ends `fatal`.
    let agent = test_agent_bin().display().to_string();
    let daemon = Daemon::start_with(|port| {
        format!(
            "heartbeat_interval_s = 3600\n\
             [[agents]]\nid = \"steady\"\nname = \"<b>not bold</b>\"\ntype = \"filebeat\"\n\
             [[agents]]\nid = \"slow\"\nheartbeat_interval_s = 1\ngrace_s = 8\n\
             [[agents]]\nid = \"gone\"\nheartbeat_interval_s = 1\ngrace_s = 1\n\
             [[agents]]\nid = \"quiet\"\n\
             [[agents]]\nid = \"worker\"\ncommand = [{agent:?}]\n\
             env = {{ TEST_AGENT_ID = \"worker\", TEST_AGENT_URL = \"http://127.0.0.1:{port}/heartbeat\" }}\n\
             [[agents]]\nid = \"crasher\"\ncommand = [{agent:?}]\n\
             env = {{ TEST_AGENT_MODE = \"crash:3:50,quiet\" }}\n\
             restart_backoff_ms = 100\nmax_restarts = 2\nrestart_window_s = 60\n"
        )
    });
    for id in ["steady", "slow", "gone"] {
        assert_eq!(daemon.post_heartbeat(&heartbeat(id, 64 << 20)).status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.request("GET", "/agents/slow", None).body["status"] != "late" {
        assert!(Instant::now() < deadline, "slow never became late:\n{}", daemon.log());
        thread::sleep(Duration::from_millis(100));
    }
    while daemon.request("GET", "/agents/crasher", None).body["process"]["state"] != "fatal"
        || daemon.request("GET", "/agents/worker", None).body["status"] != "up"
    {
        assert!(Instant::now() < deadline, "crasher never fatal or worker never up");
        thread::sleep(Duration::from_millis(100));
    }
    // A second heartbeat gives `steady` two history points: a sparkline.
    assert_eq!(daemon.post_heartbeat(&heartbeat("steady", 32 << 20)).status, 200);
    let mut browser = Browser::start();

    // Act: load the page once.
    let url = format!("http://127.0.0.1:{}/", daemon.port);
    browser.open(
        &url,
        "the table",
        "document.querySelectorAll('#agents tr[data-id]').length === 6",
    );
    browser.eval("window.loadedOnce = 'yes'");

    // Assert: every agent in its state, as text (not colour alone).
    let rows = browser.eval(ROWS);
    assert_eq!(
        rows,
        json!({"steady": "up", "slow": "late", "gone": "down", "quiet": "new", "worker": "up", "crasher": "stopped"}),
        "{rows}"
    );
    let summary = browser.eval(
        "Object.fromEntries([...document.querySelectorAll('#liveness-summary .chip')].map(c => [c.dataset.state, c.querySelector('b').textContent]))",
    );
    assert_eq!(
        summary,
        json!({"new": "1", "up": "2", "late": "1", "down": "1", "paused": "0", "stopped": "1"})
    );
    // Supervised agents: their process state and restarts, and a summary per process state.
    let processes = browser.eval(
        "Object.fromEntries([...document.querySelectorAll('#agents tr[data-id]')].map(r => [r.dataset.id, [r.querySelector('[data-process]')?.dataset.process ?? null, r.querySelector('[data-restarts]').textContent]]))",
    );
    assert_eq!(processes["worker"], json!(["running", "0"]), "{processes}");
    assert_eq!(processes["crasher"], json!(["fatal", "2"]), "{processes}");
    assert_eq!(processes["steady"], json!([null, "–"]), "{processes}");
    let by_process = browser.eval(
        "Object.fromEntries([...document.querySelectorAll('#process-summary .chip')].filter(c => c.querySelector('b').textContent !== '0').map(c => [c.dataset.state, c.querySelector('b').textContent]))",
    );
    assert_eq!(by_process, json!({"running": "1", "fatal": "1"}));
    assert_eq!(
        browser.eval("document.querySelector('tr[data-id=steady] td.name').textContent"),
        "<b>not bold</b>",
        "names are shown as text, never run as HTML"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('tr[data-id=steady] svg.spark polyline').length"),
        2,
        "a CPU and a memory sparkline"
    );
    // The screenshot shows all four states at once.
    std::fs::write(target_dir().join("status-page.png"), browser.screenshot()).unwrap();

    // Act: `gone` comes back and reports every 300 ms, as a recovered agent does (a single
    // heartbeat would be up for only 1 s, less than the page's 2 s refresh); the page follows
    // on its own refresh.
    let refreshes_before: u64 = browser
        .eval("Number(document.body.dataset.refreshes)")
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert_eq!(daemon.post_heartbeat(&heartbeat("gone", 1)).status, 200);
        let shown = browser.eval("document.querySelector('tr[data-id=gone] [data-liveness]').textContent");
        if shown == "up" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page still shows gone as {shown} after 20 s of heartbeats"
        );
        thread::sleep(Duration::from_millis(300));
    }

    // Assert: refreshed, not reloaded.
    assert_eq!(browser.eval("window.loadedOnce"), "yes", "the page was not reloaded");
    assert!(
        browser
            .eval("Number(document.body.dataset.refreshes)")
            .as_u64()
            .unwrap()
            > refreshes_before
    );

    // Filtering by state and searching by the start of an id go through the API.
    let ids = format!("JSON.stringify(Object.keys({ROWS}))");
    browser.eval(
        "const f = document.getElementById('filter'); f.value = 'new'; f.dispatchEvent(new Event('change')); true",
    );
    browser.wait_for("only the new agents", &format!("{ids} === '[\"quiet\"]'"));
    browser.eval("const g = document.getElementById('filter'); g.value = ''; g.dispatchEvent(new Event('change')); const q = document.getElementById('search'); q.value = 'st'; q.dispatchEvent(new Event('input')); true");
    browser.wait_for("only ids starting with st", &format!("{ids} === '[\"steady\"]'"));

    // When the daemon stops answering, the page says how old its data is.
    drop(daemon);
    browser.wait_for(
        "the stale-data warning",
        "document.getElementById('age').className === 'stale' && document.getElementById('age').textContent.startsWith('data is ')",
    );
}
