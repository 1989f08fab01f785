//! The output part of the agent's view in a real browser: what the page says when heartbeatd
//! refuses the output to it, and how it follows a flood of output (caught up with, and only
//! the newest part kept).

use serde_json::json;

use super::{check_screenshots, shoot, NOTE_BORDER};
use crate::daemon::browser::Browser;
use crate::daemon::Daemon;

#[test]
fn without_an_admin_token_the_page_says_why_it_shows_no_output_and_where_to_read_it() {
    // No admin_token and no loopback_admin: over TCP nothing can read an agent's output.
    let daemon = Daemon::start(
        "[[agents]]\nid = \"talker\"\ncommand = [\"/bin/sh\", \"-c\", \"echo hello; exec sleep 3600\"]\nheartbeats = false\n",
    );
    let mut browser = Browser::start();
    browser.open(
        &format!("http://127.0.0.1:{}/#agent=talker", daemon.port),
        "the refusal note",
        "!document.getElementById('log-refused').hidden",
    );
    let shown = browser.eval(
        "({ note: document.getElementById('log-refused').textContent.replace(/\\s+/g, ' '),
            form: document.getElementById('token-form').hidden,
            log: document.getElementById('log').textContent })",
    );
    let note = shown["note"].as_str().unwrap();
    assert!(
        note.contains("no admin_token set")
            && note.contains("heartbeatd ctl tail talker")
            && note.contains("(heartbeatd: changes over TCP need an admin_token; none is set."),
        "{shown}"
    );
    assert_eq!(
        (&shown["form"], &shown["log"]),
        (&json!(true), &json!("")),
        "no token form (no token could help), no output"
    );
    browser.eval("document.getElementById('a-output').scrollIntoView(); true");
    let shots = vec![(shoot(&mut browser, "9-agent-output-refused"), NOTE_BORDER, 200)];
    check_screenshots(&mut browser, &shots);
}

#[test]
fn a_flood_of_output_is_followed_and_the_page_keeps_only_its_newest_200_000_characters() {
    // `loopback_admin`: the page on 127.0.0.1 reads the output without a token. The agent
    // says `ready`, waits for the test, then writes 400 KB (the keeper cuts it into lines of
    // 64 KiB) and `done`.
    let trigger = tempfile::tempdir().unwrap();
    let go = trigger.path().join("go").display().to_string();
    let script = format!(
        "echo ready; while [ ! -e {go:?} ]; do sleep 0.1; done; head -c 400000 /dev/zero | tr '\\0' x; echo; echo done; exec sleep 3600"
    );
    let daemon = Daemon::start(&format!(
        "loopback_admin = true\n[[agents]]\nid = \"flood\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\nheartbeats = false\n"
    ));
    let mut browser = Browser::start();
    browser.open(
        &format!("http://127.0.0.1:{}/#agent=flood", daemon.port),
        "the output so far",
        "document.getElementById('log').textContent === 'ready\\n'",
    );
    std::fs::write(&go, "").unwrap();
    browser.wait_for(
        "the whole flood, followed",
        "document.getElementById('log').textContent.endsWith('\\ndone\\n')",
    );
    let kept = browser.eval(
        "(() => { const t = document.getElementById('log').textContent;
                  return { length: t.length, ready: t.includes('ready'), onlyX: /^x+\\n(x+\\n)*done\\n$/.test(t) }; })()",
    );
    let length = kept["length"].as_u64().unwrap();
    // 200,000 at most, less at most one line of 64 KiB + 1 (the cut is at a line's start).
    assert!(
        (200_000 - 65_537..=200_000).contains(&length),
        "the newest 200,000 characters at most, from a line's start: {kept}"
    );
    assert_eq!(
        (&kept["ready"], &kept["onlyX"]),
        (&json!(false), &json!(true)),
        "the oldest output let go, whole lines kept: {kept}"
    );
}
