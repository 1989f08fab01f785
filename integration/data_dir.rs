//! `data_dir` as heartbeatd's own (issue 15): a data directory, subdirectory or file that
//! another user owns or could write, or a link where heartbeatd expects its own file, stops the
//! start (exit 1, naming the path and what to run); a link planted while heartbeatd runs is
//! refused and logged, never followed; everything heartbeatd creates is 0600 (files) or 0700
//! (directories); an old data directory (0755 / 0644) is tightened and starts.
//!
//! Tests run as root in CI. Without root no file can be given to another user: the ownership
//! tests then assert the variant with a mode that lets others write, which a non-root user can
//! set, instead of passing without asserting anything.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{heartbeat, heartbeatd_bin, http, test_agent_bin, Daemon};

/// The uid files are given to: `nobody`.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Starts heartbeatd on `dir/data` and expects it to refuse: returns its exit code and what it
/// wrote. Panics if it starts serving instead.
fn start_refused(dir: &Path) -> (Option<i32>, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("heartbeatd.toml");
    fs::write(
        &config,
        format!(
            "http_port = {port}\ndata_dir = {:?}\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    let stderr = dir.join("refused.log");
    let mut child = Command::new(heartbeatd_bin())
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), fs::read_to_string(&stderr).unwrap());
        }
        let serving = http(port, "GET", "/heartbeat/stats", None).is_some_and(|r| r.status == 200);
        if serving || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "heartbeatd started on an unsafe data_dir instead of refusing:\n{}",
                fs::read_to_string(&stderr).unwrap()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts a refused start: exit 1, the message names `path` and contains `fix`.
fn assert_refused(dir: &Path, path: &Path, fix: &str) {
    let (code, stderr) = start_refused(dir);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("data_dir is not safe to use"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:", path.display())),
        "does not name {}: {stderr}",
        path.display()
    );
    assert!(stderr.contains(fix), "does not say {fix:?}: {stderr}");
}

/// A data directory that a run of heartbeatd made (stopped gracefully), with an agent's state.
fn used_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(dir.path(), "[[agents]]\nid = \"a\"\n");
    assert_eq!(daemon.post_heartbeat(&heartbeat("a", 1)).status, 200);
    daemon.wait_processed(1);
    assert_eq!(daemon.stop_with("TERM").code(), Some(0), "{}", daemon.log());
    dir
}

/// Every path under `root`, `root` included.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut all = vec![root.to_owned()];
    let mut i = 0;
    while i < all.len() {
        let path = all[i].clone();
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                all.push(entry.unwrap().path());
            }
        }
        i += 1;
    }
    all
}

/// Every file under `root` is 0600 and every directory 0700, and nothing is a link.
fn assert_private(root: &Path) {
    for path in walk(root) {
        let meta = fs::symlink_metadata(&path).unwrap();
        let expected = if meta.is_dir() { 0o700 } else { 0o600 };
        assert!(!meta.file_type().is_symlink(), "{} is a link", path.display());
        assert_eq!(
            meta.mode() & 0o7777,
            expected,
            "{} is {:o}",
            path.display(),
            meta.mode() & 0o7777
        );
    }
}

#[test]
fn a_data_dir_of_another_user_is_refused_with_the_commands_that_fix_it() {
    let dir = used_data_dir();
    let data = dir.path().join("data");
    if is_root() {
        std::os::unix::fs::chown(&data, Some(NOBODY), None).unwrap();
        assert_refused(dir.path(), &data, &format!("chown -R root {}", data.display()));
        let (_, stderr) = start_refused(dir.path());
        assert!(
            stderr.contains("untrusted"),
            "says its content cannot be trusted: {stderr}"
        );
        std::os::unix::fs::chown(&data, Some(0), None).unwrap();
    } else {
        chmod(&data, 0o777);
        assert_refused(dir.path(), &data, &format!("chmod 700 {}", data.display()));
        chmod(&data, 0o700);
    }
    // Fixed as the message says: it starts, with the agent's state.
    let mut daemon = Daemon::start_in(dir.path(), "[[agents]]\nid = \"a\"\n");
    let agent = daemon.request("GET", "/agents/a", None).body;
    assert_eq!(agent["heartbeat_count"], 1, "{agent}");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}

#[test]
fn a_file_or_subdirectory_of_another_user_is_refused() {
    let dir = used_data_dir();
    let data = dir.path().join("data");
    fs::write(data.join("registry.log"), b"").unwrap();
    chmod(&data.join("registry.log"), 0o600);
    fs::create_dir(data.join("logs")).unwrap();
    chmod(&data.join("logs"), 0o700);
    for (name, writable_mode) in [("registry.log", 0o666), ("logs", 0o777), ("agents/a.json", 0o646)] {
        let path = data.join(name);
        let (original_owner, original_mode) = {
            let meta = fs::metadata(&path).unwrap();
            (meta.uid(), meta.mode() & 0o7777)
        };
        if is_root() {
            std::os::unix::fs::chown(&path, Some(NOBODY), None).unwrap();
            assert_refused(dir.path(), &path, &format!("root {}", path.display()));
            std::os::unix::fs::chown(&path, Some(original_owner), None).unwrap();
        } else {
            chmod(&path, writable_mode);
            assert_refused(dir.path(), &path, &format!("chmod go-w {}", path.display()));
            chmod(&path, original_mode);
        }
    }
}

#[test]
fn a_directory_or_file_others_can_write_is_refused() {
    let dir = used_data_dir();
    let data = dir.path().join("data");
    for (path, writable, fix) in [
        (data.clone(), 0o777, format!("chmod 700 {}", data.display())),
        (
            data.join("history"),
            0o770,
            format!("chmod go-w {}", data.join("history").display()),
        ),
        (
            data.join("registry.json"),
            0o620,
            format!("chmod go-w {}", data.join("registry.json").display()),
        ),
    ] {
        let before = mode(&path);
        chmod(&path, writable);
        assert_refused(dir.path(), &path, &fix);
        chmod(&path, before);
    }
}

#[test]
fn a_link_planted_in_data_dir_stops_the_start_and_is_not_followed() {
    let dir = used_data_dir();
    let data = dir.path().join("data");
    let outside = dir.path().join("outside.txt");
    fs::write(&outside, b"not heartbeatd's\n").unwrap();
    for planted in ["logs/a.log", "registry.log", "history/a.log"] {
        let link = data.join(planted);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        let _ = fs::remove_file(&link);
        symlink(&outside, &link).unwrap();
        assert_refused(dir.path(), &link, &format!("rm {}", link.display()));
        fs::remove_file(&link).unwrap();
    }
    assert_eq!(fs::read(&outside).unwrap(), b"not heartbeatd's\n");
}

#[test]
fn a_link_planted_as_an_agents_output_file_while_running_is_refused_never_followed() {
    // Arrange: two supervised programs that print one line and exit; not started yet.
    let agent = |id: &str| {
        format!(
            "[[agents]]\nid = \"{id}\"\ncommand = [\"/bin/sh\", \"-c\", \"echo output-of-{id}\"]\nautostart = false\nrestart = \"never\"\n"
        )
    };
    let mut daemon = Daemon::start(&(agent("victim") + &agent("control")));
    let data = daemon.data_dir();
    let outside = daemon.dir.join("outside.txt");
    fs::write(&outside, b"outside-secret\n").unwrap();
    fs::create_dir_all(data.join("logs")).unwrap();
    let link = data.join("logs/victim.log");
    symlink(&outside, &link).unwrap();

    // Act: both run to their end.
    for id in ["victim", "control"] {
        assert_eq!(daemon.admin("POST", &format!("/agents/{id}/start"), None).status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in ["victim", "control"] {
        loop {
            let process = daemon.request("GET", &format!("/agents/{id}"), None).body["process"].clone();
            if process["state"] == "exited" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not exit: {process}\n{}",
                daemon.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    // Assert: the control's output is in its file by now (the keeper writes before it
    // reports the exit); the victim's went nowhere, and its log is not read through the link.
    let control = daemon.admin("GET", "/agents/control/log", None);
    assert_eq!(control.body["log"]["data"], "output-of-control\n", "{control:?}");
    assert_eq!(
        fs::read(&outside).unwrap(),
        b"outside-secret\n",
        "output followed the link"
    );
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    let victim = daemon.admin("GET", "/agents/victim/log", None);
    assert_ne!(victim.status, 200, "{victim:?}");
    assert!(!victim.body.to_string().contains("outside-secret"), "{victim:?}");
    let log = daemon.log();
    let refusal = log
        .lines()
        .find(|l| l.contains("refused a file in data_dir") && l.contains(&link.display().to_string()))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(refusal.contains("ERRO") && refusal.contains("what_to_do"), "{refusal}");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0), "{}", daemon.log());
}

#[test]
fn every_file_heartbeatd_creates_is_0600_and_every_directory_0700() {
    // Arrange: a supervised agent that heartbeats and writes enough output to rotate its file,
    // an agent that goes down (an alert fires: alerts.json; a transition: events/), one
    // registered through the API (registry.log), checkpoints every second.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "checkpoint_interval_s = 1\nflush_interval_ms = 100\nalertmanager_url = \"http://127.0.0.1:{closed_port}\"\n\
         [[agents]]\nid = \"silent\"\nheartbeat_interval_s = 1\ngrace_s = 1\n\
         [[agents]]\nid = \"svc\"\ncommand = [{:?}]\nlog_max_bytes = 4096\nlog_backups = 2\n\
         env = {{ TEST_AGENT_ID = \"svc\", TEST_AGENT_MODE = \"chatty:20000\", TEST_AGENT_URL = \"@URL@\" }}\n",
        test_agent_bin().display().to_string()
    );
    let mut daemon = Daemon::start_with(|port| config.replace("@URL@", &format!("http://127.0.0.1:{port}/heartbeat")));
    let data = daemon.data_dir();
    assert_eq!(daemon.post_heartbeat(&heartbeat("silent", 1)).status, 200);
    let registered = daemon.admin("POST", "/agents", Some(r#"{"id": "api-agent"}"#));
    assert_eq!(registered.status, 201, "{registered:?}");

    // Act: wait for every kind of file, then stop.
    let expected = [
        "registry.json",
        "registry.log",
        "alerts.json",
        "checkpoint.json",
        "agents/svc.json",
        "agents/silent.json",
        "history/svc.log",
        "events/silent.log",
        "events/svc.log",
        "logs/svc.log",
        "logs/svc.log.1",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(missing) = expected.iter().find(|f| !data.join(f).exists()) {
        assert!(Instant::now() < deadline, "no {missing} yet:\n{}", daemon.log());
        thread::sleep(Duration::from_millis(100));
    }
    let journal: Vec<_> = fs::read_dir(data.join("journal")).unwrap().collect();
    assert!(!journal.is_empty(), "a journal segment");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0), "{}", daemon.log());

    // Assert
    assert_private(&data);
}

#[test]
fn an_old_data_dir_is_tightened_once_and_starts_with_its_state() {
    // Arrange: what an older version left: directories 0755, files 0644.
    let dir = used_data_dir();
    let data = dir.path().join("data");
    for path in walk(&data) {
        chmod(&path, if path.is_dir() { 0o755 } else { 0o644 });
    }
    let files = walk(&data).iter().filter(|p| p.is_file()).count();
    let dirs = walk(&data).iter().filter(|p| p.is_dir()).count();

    // Act
    let mut daemon = Daemon::start_in(dir.path(), "[[agents]]\nid = \"a\"\n");

    // Assert: private now, said once, and the state is there.
    let agent: Value = daemon.request("GET", "/agents/a", None).body;
    assert_eq!(agent["heartbeat_count"], 1, "{agent}");
    assert_eq!(daemon.stop_with("TERM").code(), Some(0), "{}", daemon.log());
    assert_private(&data);
    let log = daemon.log();
    let said: Vec<&str> = log.lines().filter(|l| l.contains("they are private now")).collect();
    assert_eq!(said.len(), 1, "{log}");
    assert!(
        said[0].contains(&format!("files: {files}")) && said[0].contains(&format!("directories: {dirs}")),
        "{}",
        said[0]
    );
}
