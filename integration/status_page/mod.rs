//! The status page (`GET /`) in a real browser: Debian's headless Chromium, driven over the
//! DevTools protocol, against a live daemon with an agent in each state the person on call
//! must tell apart. Clicks are real mouse events at the element's place on screen.
//!
//! `output.rs` holds the tests of the output part of the agent view.
//!
//! Screenshots go to `target/screenshots/` (the test prints the directory); each is decoded
//! again by the browser and checked: its size, that it is not blank (the spread of its
//! pixels), and that the colour it must show is there (the red of `down`, the line of the
//! CPU chart).

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::browser::Browser;
use crate::daemon::{heartbeat, test_agent_bin, Daemon};

mod output;

/// `target/screenshots/`, next to where cargo builds (the test runs from
/// `target/<profile>/deps`).
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.ancestors().nth(3).unwrap().join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The ids of the table's rows, top to bottom.
const ROW_IDS: &str = "JSON.stringify([...document.querySelectorAll('#agents tr[data-id]')].map(r => r.dataset.id))";

/// What the output of the agent `talker` starts with: markup that would run if the page
/// parsed it as HTML.
const HOSTILE_OUTPUT: &str = "<script>window.pwned=\"script\"</script><img src=x onerror=\"window.pwned=2\">";
/// A name that would be bold, or run, if parsed.
const HOSTILE_NAME: &str = "<b>not bold</b><img src=x onerror=\"window.pwned='name'\">";
const TOKEN: &str = "page-test-admin-token-4711";
/// The colours the screenshots must show: `down` and failures, the CPU line, the output's
/// background.
const RED: [u8; 3] = [0xcf, 0x22, 0x2e];
const CPU_LINE: [u8; 3] = [0x1b, 0x7c, 0x83];
const LOG_BACKGROUND: [u8; 3] = [0x0d, 0x11, 0x17];
/// The green of `up` and `running`; the border of a note.
const GREEN: [u8; 3] = [0x1a, 0x7f, 0x37];
const NOTE_BORDER: [u8; 3] = [0x9a, 0x67, 0x00];

/// Adds `process.usage` to a supervised agent as a heartbeatd that measures its agents'
/// trees answers it: `talker` runs (a measure), `waiting` gets values no measure can have
/// (the page must show them as unknown), the others are not running (null).
fn add_usage(agent: &mut Value, at: &str) {
    let usage = match agent["id"].as_str() {
        Some("talker") => json!({"cpu_ratio": 0.25, "memory_bytes": 48u64 << 20, "processes": 3, "at": at}),
        Some("waiting") => json!({"cpu_ratio": "<b>x</b>", "memory_bytes": -1, "processes": null, "at": "<b>"}),
        _ => Value::Null,
    };
    if let Some(process) = agent.get_mut("process").and_then(Value::as_object_mut) {
        process.insert("usage".into(), usage);
    }
}

/// The same answer with `process.usage` added to each agent in it (a listing or one agent).
fn with_usage(_url: &str, body: &mut Value) {
    let at = chrono::Utc::now().to_rfc3339();
    if let Some(agents) = body.get_mut("agents").and_then(Value::as_array_mut) {
        agents.iter_mut().for_each(|agent| add_usage(agent, &at));
    } else if body.get("id").is_some() {
        add_usage(body, &at);
    }
}

/// Checks each screenshot: it decodes, is the window's size, is not blank, and shows at
/// least `at_least` pixels of its colour. Leaves the browser on a blank page.
fn check_screenshots(browser: &mut Browser, shots: &[(PathBuf, [u8; 3], u64)]) {
    browser.open("about:blank", "a blank page", "document.readyState === 'complete'");
    println!("screenshots in {}", screenshot_dir().display());
    for (path, colour, at_least) in shots {
        let m = browser.measure_png(&std::fs::read(path).unwrap(), *colour);
        println!("{}: {m}", path.display());
        // The window is 1400 × 900; the page's viewport is its width and most of its height.
        assert!(
            m["width"] == 1400 && m["height"].as_u64().unwrap() >= 600,
            "{}: {m}",
            path.display()
        );
        assert!(
            m["spread"].as_f64().unwrap() > 15.0,
            "{} looks blank: {m}",
            path.display()
        );
        assert!(
            m["near"].as_u64().unwrap() >= *at_least,
            "{} lacks its colour: {m}",
            path.display()
        );
    }
}

/// Clicks the middle of the first element `selector` matches, as a person would.
fn click(browser: &mut Browser, selector: &str) {
    let at = browser.eval(&format!(
        "(() => {{ const e = document.querySelector({selector:?}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
    ));
    assert!(at.is_array(), "nothing to click at {selector}");
    for kind in ["mousePressed", "mouseReleased"] {
        browser.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": at[0], "y": at[1], "button": "left", "clickCount": 1}),
        );
    }
}

/// Waits until the rows are `expected`, top to bottom.
fn wait_rows(browser: &mut Browser, what: &str, expected: &[&str]) {
    let want = serde_json::to_string(&serde_json::to_string(expected).unwrap()).unwrap();
    browser.wait_for(what, &format!("{ROW_IDS} === {want}"));
}

/// Saves a screenshot of the page as it is now; its path.
fn shoot(browser: &mut Browser, name: &str) -> PathBuf {
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, browser.screenshot()).unwrap();
    path
}

/// The fleet: every state the order tells apart, an agent with a stored history of two hours
/// (with a silence in it), and a supervised agent whose output is hostile. `slow` is late 11 s
/// after its heartbeat and down 10 s later: the test looks at it as late only at its start
/// (the fleet is returned as soon as it is late).
fn fleet() -> Daemon {
    let agent = test_agent_bin().display().to_string();
    let talker =
        format!("printf '%s\\n' '{HOSTILE_OUTPUT}'; i=0; while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.3; done");
    let daemon = Daemon::start_with(|_| {
        format!(
            "heartbeat_interval_s = 3600\nadmin_token = \"{TOKEN}\"\n\
             [[agents]]\nid = \"steady\"\nname = {HOSTILE_NAME:?}\ntype = \"filebeat\"\n\
             [[agents]]\nid = \"erring\"\ntype = \"custom\"\n\
             [[agents]]\nid = \"gone\"\nheartbeat_interval_s = 1\ngrace_s = 1\n\
             [[agents]]\nid = \"slow\"\nheartbeat_interval_s = 1\ngrace_s = 20\n\
             [[agents]]\nid = \"quiet\"\n\
             [[agents]]\nid = \"crasher\"\ncommand = [{agent:?}]\n\
             env = {{ TEST_AGENT_MODE = \"crash:3:50,quiet\" }}\n\
             restart_backoff_ms = 100\nmax_restarts = 2\nrestart_window_s = 60\n\
             [[agents]]\nid = \"waiting\"\ncommand = [{agent:?}]\n\
             env = {{ TEST_AGENT_MODE = \"crash:7:50,quiet\" }}\nrestart_backoff_ms = 3600000\nrestart_backoff_max_ms = 3600000\n\
             [[agents]]\nid = \"talker\"\ncommand = [\"/bin/sh\", \"-c\", {talker:?}]\nheartbeats = false\n"
        )
    });
    // `steady`: one heartbeat a minute for two hours, but for a silence of 20 minutes; its CPU
    // a wave, its memory growing.
    let now = chrono::Utc::now();
    for minute in (0..=120i64).rev().filter(|m| !(40..60).contains(m)) {
        let mut beat = heartbeat("steady", (200 + (120 - minute) as u64) << 20);
        beat["cpu"] = json!(20.0 + 15.0 * ((minute as f64) / 9.0).sin());
        beat["timestamp"] = json!((now - chrono::Duration::minutes(minute)).to_rfc3339());
        assert_eq!(daemon.post_heartbeat(&beat).status, 200);
    }
    let mut erring = heartbeat("erring", 50 << 20);
    erring["status"] = json!("error");
    assert_eq!(daemon.post_heartbeat(&erring).status, 200);
    assert_eq!(daemon.post_heartbeat(&heartbeat("gone", 8 << 20)).status, 200);
    assert_eq!(daemon.post_heartbeat(&heartbeat("slow", 16 << 20)).status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let get = |id: &str| daemon.request("GET", &format!("/agents/{id}"), None).body;
    while get("gone")["status"] != "down"
        || get("slow")["status"] != "late"
        || get("crasher")["process"]["state"] != "fatal"
        || get("waiting")["process"]["state"] != "backoff"
        || get("talker")["status"] != "up"
    {
        assert!(
            Instant::now() < deadline,
            "the fleet never reached its states:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    daemon.wait_processed(104);
    daemon
}

#[test]
fn the_status_page_shows_the_worst_first_sorts_filters_in_the_url_and_opens_each_agent() {
    // Chromium starts while the fleet reaches its states.
    let starting = thread::spawn(Browser::start);
    let daemon = fleet();
    let page = daemon.request("GET", "/", None);
    let html = page.body.as_str().unwrap_or_default().to_owned();
    assert!(
        page.status == 200 && html.len() > 10_000 && html.len() <= 100 * 1024,
        "the page is served whole and at most 100 KB: {} bytes",
        html.len()
    );
    let mut browser = starting.join().unwrap();
    let base = format!("http://127.0.0.1:{}/", daemon.port);
    let mut shots = Vec::new();

    // Worst first by default: down, fatal, late, backoff, reports error, new, then up by id.
    browser.open(
        &base,
        "the table",
        "document.querySelectorAll('#agents tr[data-id]').length === 8",
    );
    let worst = [
        "gone", "crasher", "slow", "waiting", "erring", "quiet", "steady", "talker",
    ];
    wait_rows(&mut browser, "worst first", &worst);
    let cells = browser.eval(
        "Object.fromEntries([...document.querySelectorAll('#agents tr[data-id]')].map(r => [r.dataset.id, {
           liveness: r.querySelector('[data-liveness]').textContent,
           since: r.querySelector('[data-since]').textContent,
           reported: r.querySelector('[data-reported]').textContent,
           errorBadge: !!r.querySelector('[data-reported] .reported-error'),
           process: r.querySelector('[data-process]')?.dataset.process ?? null,
           exit: r.querySelector('[data-exit]')?.textContent ?? null,
           name: r.querySelector('.name')?.textContent ?? null }]))",
    );
    assert_eq!(cells["gone"]["liveness"], "down", "{cells}");
    assert_eq!(cells["slow"]["liveness"], "late", "{cells}");
    assert!(
        cells["gone"]["since"].as_str().unwrap().ends_with(" s ago"),
        "since times: {cells}"
    );
    // Reported `error` is its own red mark; `running` is plain text.
    assert_eq!(
        (&cells["erring"]["reported"], &cells["erring"]["errorBadge"]),
        (&json!("⚠ error"), &json!(true))
    );
    assert_eq!(
        (&cells["steady"]["reported"], &cells["steady"]["errorBadge"]),
        (&json!("running"), &json!(false))
    );
    // The backoff and fatal rows show the last exit.
    assert_eq!(cells["waiting"]["process"], "backoff");
    assert!(
        cells["waiting"]["exit"]
            .as_str()
            .unwrap()
            .starts_with("exit 7 · exited · "),
        "{cells}"
    );
    assert!(
        cells["crasher"]["exit"]
            .as_str()
            .unwrap()
            .starts_with("exit 3 · exited · "),
        "{cells}"
    );
    assert_eq!(cells["steady"]["name"], HOSTILE_NAME, "a name is text");
    // This heartbeatd answers no `process.usage`: no column waits for it.
    assert_eq!(
        browser.eval("document.querySelectorAll('#columns th').length"),
        json!(11),
        "no usage columns without the field"
    );
    shots.push((shoot(&mut browser, "1-list-worst-first"), RED, 1000));

    // Sort by a column: the first click on memory puts the most first, the second reverses.
    click(&mut browser, "th button[data-sort=memory]");
    wait_rows(
        &mut browser,
        "most memory first",
        &[
            "steady", "erring", "slow", "gone", "crasher", "quiet", "talker", "waiting",
        ],
    );
    assert!(browser.eval("location.hash").as_str().unwrap().contains("sort=-memory"));
    click(&mut browser, "th button[data-sort=memory]");
    wait_rows(
        &mut browser,
        "least memory first",
        &[
            "gone", "slow", "erring", "steady", "crasher", "quiet", "talker", "waiting",
        ],
    );
    assert_eq!(
        browser.eval("document.querySelector('th[aria-sort]').textContent"),
        "memory",
        "the sorted column is marked"
    );

    // Filters: two process states, then a reload keeps the view (the URL holds it).
    click(&mut browser, "#process-summary .chip[data-state=fatal]");
    click(&mut browser, "#process-summary .chip[data-state=backoff]");
    wait_rows(&mut browser, "fatal and backoff", &["crasher", "waiting"]);
    let hash = browser.eval("location.hash");
    assert_eq!(hash, "#sort=memory&process=fatal%2Cbackoff", "{hash}");
    browser.eval("window.beforeReload = true");
    browser.call("Page.reload", json!({}));
    browser.wait_for("the reload", "window.beforeReload === undefined");
    wait_rows(&mut browser, "the same view after a reload", &["crasher", "waiting"]);
    assert_eq!(
        browser.eval("[...document.querySelectorAll('#process-summary .chip[aria-pressed=true]')].map(c => c.dataset.state).join()"),
        "fatal,backoff"
    );
    shots.push((shoot(&mut browser, "2-list-filtered-after-reload"), RED, 500));
    // A liveness filter, and the reported-error filter, alone.
    click(&mut browser, "#clear");
    click(&mut browser, "#liveness-summary .chip[data-state=reported-error]");
    wait_rows(&mut browser, "only the agent reporting error", &["erring"]);
    click(&mut browser, "#clear");
    click(&mut browser, "#liveness-summary .chip[data-state=new]");
    wait_rows(
        &mut browser,
        "only the new agents (by memory: neither has one, so by id)",
        &["quiet", "waiting"],
    );
    click(&mut browser, "#clear");

    // Clearing the filters keeps the sort; the liveness column sorts worst first again.
    click(&mut browser, "th button[data-sort=worst]");
    // (`slow` may be down by now: then it is second, with `gone`, by id.)
    let slow_down = [
        "gone", "slow", "crasher", "waiting", "erring", "quiet", "steady", "talker",
    ];
    let either = serde_json::to_string(&[
        serde_json::to_string(&worst).unwrap(),
        serde_json::to_string(&slow_down).unwrap(),
    ])
    .unwrap();
    browser.wait_for("all of them, worst first", &format!("{either}.includes({ROW_IDS})"));

    // One agent, by a click on its row: its history as a chart with axes, its events.
    click(&mut browser, "#agents tr[data-id=steady] td:first-child");
    browser.wait_for(
        "the agent view with its charts",
        "location.hash.includes('agent=steady') && document.querySelectorAll('#cpu-chart polyline').length >= 2",
    );
    let chart = browser.eval(
        "({ lines: document.querySelectorAll('#cpu-chart polyline').length,
            points: [...document.querySelectorAll('#cpu-chart polyline')].reduce((n, l) => n + l.getAttribute('points').split(' ').length, 0),
            labels: [...document.querySelectorAll('#cpu-chart text')].map(t => t.textContent),
            memoryLabels: [...document.querySelectorAll('#memory-chart text')].map(t => t.textContent),
            caption: document.getElementById('cpu-caption').textContent,
            events: document.querySelectorAll('#events tr').length,
            processShown: !document.getElementById('a-process-card').hidden,
            title: document.getElementById('a-id').textContent })",
    );
    // 101 points; the 20-minute silence splits the line in two.
    assert_eq!((&chart["lines"], &chart["points"]), (&json!(2), &json!(101)), "{chart}");
    let labels: Vec<&str> = chart["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        labels.contains(&"0 %") && labels.iter().any(|l| l.contains(':')),
        "y and time axes: {labels:?}"
    );
    assert!(
        chart["memoryLabels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().ends_with("MiB")),
        "{chart}"
    );
    assert!(chart["caption"].as_str().unwrap().contains("101 points"), "{chart}");
    assert!(chart["events"].as_u64().unwrap() >= 1, "{chart}");
    assert_eq!(chart["processShown"], false, "not supervised");
    assert_eq!(chart["title"], format!("steady — {HOSTILE_NAME}"));
    shots.push((shoot(&mut browser, "3-agent-history-chart"), CPU_LINE, 500));

    // A fatal agent: its process, last exit and reason, and the process events.
    browser.eval("location.hash = 'agent=crasher'");
    browser.wait_for(
        "the fatal agent's process",
        "document.querySelector('[data-field=process]')?.textContent === 'fatal'",
    );
    let process = browser.eval(
        "({ exit: document.querySelector('[data-field=last-exit]').textContent,
            reason: document.querySelector('[data-field=exit-reason]').textContent,
            processEvents: document.querySelectorAll('#events tr[data-kind=process]').length })",
    );
    assert!(
        process["exit"].as_str().unwrap().starts_with("exit code 3 at "),
        "{process}"
    );
    assert_eq!(process["reason"], "exited: ended by itself");
    assert_eq!(
        browser.eval("document.querySelectorAll('[data-field=usage]').length"),
        json!(0),
        "no usage line without the field"
    );
    assert!(process["processEvents"].as_u64().unwrap() >= 3, "{process}");
    shots.push((shoot(&mut browser, "4-agent-fatal-process-and-events"), RED, 200));

    // The output is an admin read: the page asks for the token, then shows the output as
    // text and follows it by offset.
    browser.eval("location.hash = 'agent=talker'");
    browser.wait_for(
        "the token form",
        "!document.getElementById('token-form').hidden && document.getElementById('token-why').textContent.includes('admin token')",
    );
    // A wrong token is refused with heartbeatd's reason and forgotten; the right one opens it.
    browser.eval(
        "document.getElementById('token').value = 'wrong'; document.getElementById('token-form').requestSubmit(); true",
    );
    browser.wait_for(
        "the refusal of a wrong token",
        "document.getElementById('token-why').textContent.includes('the admin token is wrong') && !document.getElementById('token-form').hidden",
    );
    assert_eq!(
        browser.eval("sessionStorage.getItem('heartbeatd-admin-token')"),
        Value::Null
    );
    browser.eval(&format!(
        "document.getElementById('token').value = {TOKEN:?}; document.getElementById('token-form').requestSubmit(); true"
    ));
    browser.wait_for(
        "the output",
        "document.getElementById('log').textContent.includes('tick ')",
    );
    let first_tick = browser
        .eval("Math.max(...document.getElementById('log').textContent.match(/tick (\\d+)/g).map(t => +t.slice(5)))");
    browser.wait_for(
        "new output, followed",
        &format!("Math.max(...document.getElementById('log').textContent.match(/tick (\\d+)/g).map(t => +t.slice(5))) > {first_tick} + 3"),
    );
    let log = browser.eval("document.getElementById('log').textContent");
    assert!(
        log.as_str().unwrap().starts_with(HOSTILE_OUTPUT),
        "output is shown as text: {log}"
    );
    let lines: Vec<&str> = log.as_str().unwrap().lines().collect();
    let ticks: Vec<u64> = lines[1..lines.len()]
        .iter()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "every line once, in order: {ticks:?}"
    );
    assert_eq!(
        browser.eval("document.querySelector('[data-field=process]').textContent"),
        "running"
    );
    browser.eval("document.getElementById('a-output').scrollIntoView(); true");
    shots.push((shoot(&mut browser, "5-agent-output-followed"), LOG_BACKGROUND, 100_000));

    // A hostile id in a shared link is shown, never run.
    browser.eval("location.hash = 'agent=' + encodeURIComponent('<img src=x onerror=\"window.pwned=1\">')");
    browser.wait_for(
        "the bad id message",
        "document.getElementById('a-missing').textContent.includes('is not an agent id')",
    );
    let inert = browser.eval(
        "({ pwned: window.pwned ?? null, images: document.querySelectorAll('img').length, scripts: document.scripts.length,
            logChildren: document.getElementById('log').children.length, title: document.getElementById('a-id').textContent })",
    );
    assert_eq!(
        inert,
        json!({"pwned": null, "images": 0, "scripts": 1, "logChildren": 0, "title": "<img src=x onerror=\"window.pwned=1\">"})
    );

    // And were markup ever to get in, the page's policy would not run it: only the page's own
    // script (by its hash) may run, so an inline handler is refused.
    browser.eval(
        "window.violations = []; document.addEventListener('securitypolicyviolation', e => window.violations.push(e.violatedDirective));
         document.body.insertAdjacentHTML('beforeend', '<img id=injected src=x onerror=\"window.csp = 1\">'); true",
    );
    browser.wait_for(
        "the policy to refuse the handler",
        "window.violations.some(d => d.startsWith('script-src'))",
    );
    assert_eq!(browser.eval("window.csp ?? null"), Value::Null);
    browser.eval("document.getElementById('injected').remove(); true");

    // A heartbeatd that measures each supervised agent's tree answers `process.usage`: the
    // list grows two columns and the agent's view a line. The daemon's real answers, with the
    // field added as such a heartbeatd would.
    browser.eval("location.hash = ''; true");
    browser.wait_rewriting(
        "*/agents*",
        &with_usage,
        "the usage columns",
        "document.querySelectorAll('#columns th.usage-col').length === 2 && !!document.querySelector('tr[data-id=talker] [data-usage-cpu]')",
    );
    let cells = browser.eval(
        "Object.fromEntries(['talker', 'crasher', 'waiting', 'steady'].map(id => [id,
           [...document.querySelectorAll(`tr[data-id=${id}] [data-usage-cpu], tr[data-id=${id}] [data-usage-memory]`)].map(c => c.textContent)]))",
    );
    assert_eq!(
        cells,
        json!({"talker": ["0.25", "48 MiB"], "crasher": ["–", "–"], "waiting": ["–", "–"], "steady": ["", ""]}),
        "a measure, none (not running), values no measure can have, not supervised"
    );
    shots.push((shoot(&mut browser, "7-list-process-usage"), RED, 1000));
    browser.eval("location.hash = 'agent=talker'; true");
    let line = browser.wait_rewriting(
        "*/agents*",
        &with_usage,
        "the usage line of a running agent",
        "document.getElementById('a-id').textContent === 'talker' && document.querySelector('[data-field=usage]')?.textContent",
    );
    assert!(
        line.as_str()
            .unwrap()
            .starts_with("0.25 cores · 48 MiB · 3 processes · measured "),
        "{line}"
    );
    browser.eval("window.scrollTo(0, 0); true");
    shots.push((shoot(&mut browser, "8-agent-process-usage"), GREEN, 200));
    browser.eval("location.hash = 'agent=crasher'; true");
    browser.wait_rewriting(
        "*/agents*",
        &with_usage,
        "the usage line of an agent that is not running",
        "document.getElementById('a-id').textContent === 'crasher' && document.querySelector('[data-field=usage]')?.textContent === 'not measured (not running)'",
    );
    browser.stop_rewriting();

    // Back to the list: it follows a change without reloading (`gone` comes back).
    browser.eval("window.loadedOnce = 'yes'; location.hash = ''; true");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert_eq!(daemon.post_heartbeat(&heartbeat("gone", 8 << 20)).status, 200);
        let shown = browser.eval("document.querySelector('tr[data-id=gone] [data-liveness]')?.textContent");
        if shown == "up" {
            break;
        }
        assert!(Instant::now() < deadline, "the page still shows gone as {shown}");
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(browser.eval("window.loadedOnce"), "yes", "refreshed, not reloaded");

    // When the daemon stops answering, the page says how old its data is.
    drop(daemon);
    browser.wait_for(
        "the stale-data warning",
        "document.getElementById('age').className === 'stale' && document.getElementById('age').textContent.startsWith('data is ')",
    );
    shots.push((shoot(&mut browser, "6-list-daemon-gone"), RED, 1000));

    check_screenshots(&mut browser, &shots);
}
