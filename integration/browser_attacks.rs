//! Another site's web page, in a real headless Chromium, against a heartbeatd on loopback
//! that takes changes from loopback without a token (`loopback_admin`, set through the
//! environment so that a build without the key runs this test too, and fails it): cross-site
//! requests (fetch, a plain HTML form) and a DNS rebinding must change nothing, read nothing
//! private, and cost nothing; the status page keeps working from its own origin.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::browser::Browser;
use crate::daemon::{heartbeat, Daemon};

/// A web server on another loopback port that answers every request with `html`.
fn serve_page(html: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    port
}

/// The attacker's page: every change it can try without reading an answer, and an image that
/// makes heartbeatd build its largest page.
fn cross_site_page(target: &str) -> String {
    format!(
        r#"<!doctype html><html><body>
<img src="{target}/agents?limit=10000">
<form id="plain" method="POST" action="{target}/agents" enctype="text/plain">
<input type="hidden" name='{{"id":"evil-form","pad":"' value='"}}'>
</form>
<script>
window.done = false;
const attempt = (path, options) => fetch("{target}" + path, options).catch(() => null);
(async () => {{
  await attempt("/agents/victim/stop", {{method: "POST", mode: "no-cors"}});
  await attempt("/agents/sleeper/pause", {{method: "POST", mode: "no-cors"}});
  await attempt("/agents", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: '{{"id":"evil-fetch"}}'}});
  await attempt("/heartbeat", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: '{{"agent_id":"sleeper","pid":7,"cpu":1,"memory":1}}'}});
  await attempt("/agents/victim", {{method: "DELETE", mode: "no-cors"}});
  await attempt("/agents?limit=10000", {{mode: "no-cors"}});
  window.done = true;
}})();
</script></body></html>"#
    )
}

/// The page of a rebound name: same-origin with heartbeatd as far as the browser knows, so it
/// can read every answer; it records what it got.
const REBOUND_PAGE: &str = r#"<!doctype html><html><body><script>
window.results = {};
window.done = false;
const record = async (name, path, options) => {
  try { const r = await fetch(path, options); window.results[name] = [r.status, await r.text()]; }
  catch (e) { window.results[name] = ["error", String(e)]; }
};
(async () => {
  await record("rename", "/agents/victim", {method: "PATCH", headers: {"Content-Type": "application/json"}, body: JSON.stringify({name: "pwned"})});
  await record("delete", "/agents/sleeper", {method: "DELETE"});
  await record("log", "/agents/victim/log", {});
  await record("list", "/agents", {});
  window.done = true;
})();
</script></body></html>"#;

#[test]
fn another_sites_page_and_a_dns_rebinding_change_nothing_and_read_nothing() {
    // Arrange: a supervised agent with private output, a passive agent that reports.
    let config =
        "[[agents]]\nid = \"victim\"\ncommand = [\"/bin/sh\", \"-c\", \"echo secret-output-4711; exec sleep 600\"]\n\
                  [[agents]]\nid = \"sleeper\"\n";
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with_env(dir.path(), config, &[("HEARTBEATD_LOOPBACK_ADMIN", "true")]);
    assert_eq!(daemon.post_heartbeat(&heartbeat("sleeper", 1)).status, 200);
    let pid_of = |daemon: &Daemon| daemon.request("GET", "/agents/victim", None).body["process"]["pid"].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_of(&daemon).is_null() {
        assert!(Instant::now() < deadline, "victim never started");
        thread::sleep(Duration::from_millis(50));
    }
    let victim_pid = pid_of(&daemon);
    daemon.wait_processed(1);
    let target = format!("http://127.0.0.1:{}", daemon.port);
    let attacker = serve_page(cross_site_page(&target));
    // Chromium's own guard for local addresses (Local/Private Network Access) is off: other
    // browsers have none, and heartbeatd must hold without it.
    let mut browser = Browser::start_with(&[
        "--host-resolver-rules=MAP rebind.test 127.0.0.1",
        "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessRespectPreflightResults,PrivateNetworkAccessSendPreflights",
    ]);

    // Act 1: the page of another origin (another loopback port) runs its requests, then its
    // form is submitted (no script in the form itself).
    browser.open(
        &format!("http://127.0.0.1:{attacker}/"),
        "the attack to run",
        "window.done === true",
    );
    browser.eval("document.getElementById('plain').submit(); true");
    thread::sleep(Duration::from_millis(500));

    // Act 2: a DNS rebinding: a page served as rebind.test:<heartbeatd's port>, whose name then
    // resolves to 127.0.0.1, makes same-origin requests.
    browser.open_served(&format!("http://rebind.test:{}/", daemon.port), REBOUND_PAGE);
    browser.wait_for("the rebound page's requests", "window.done === true");
    let results: Value = browser.eval("window.results");

    // Assert: nothing changed.
    let victim = daemon.request("GET", "/agents/victim", None).body;
    assert_eq!(victim["process"]["state"], "running", "{victim}");
    assert_eq!(victim["process"]["pid"], victim_pid, "not stopped or restarted");
    assert_eq!(victim["name"], "", "not renamed");
    let sleeper = daemon.request("GET", "/agents/sleeper", None);
    assert_eq!(sleeper.status, 200, "not deleted");
    assert_eq!(sleeper.body["status"], "up", "not paused: {sleeper:?}");
    assert_eq!(sleeper.body["heartbeat_count"], 1, "no forged heartbeat");
    let ids: Vec<String> = daemon.request("GET", "/agents", None).body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["sleeper", "victim"], "nothing registered");
    // …and the rebound page read nothing: every request refused for its Host.
    for name in ["rename", "delete", "log", "list"] {
        assert_eq!(results[name][0], 421, "{name}: {results}");
    }
    assert!(!results.to_string().contains("secret-output-4711"), "{results}");
    // All seven cross-site requests (five fetches, the image, the form) were refused before
    // any work, and logged.
    let metrics = daemon.request("GET", "/metrics", None).body;
    let cross_site = metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("heartbeatd_requests_refused_total{reason=\"cross_site\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(cross_site, Some(7), "{metrics}");
    let log = daemon.log();
    assert!(
        log.contains("request refused") && log.contains("Sec-Fetch-Site"),
        "{log}"
    );

    // The status page still works from its own origin.
    browser.open(
        &format!("{target}/"),
        "the status page's table",
        "document.querySelectorAll('#agents tr[data-id]').length === 2",
    );
}
