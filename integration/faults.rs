//! Faults: `kill -9` in the middle of load, again and again; a full disk that recovers.
//!
//! These check the durability promise of docs/durability.md: after `kill -9` every heartbeat that
//! `total_synced` counted before the kill is on disk, nothing on disk was never accepted, and
//! nothing is torn; a full disk loses nothing that is still in memory once it has room again,
//! and never panics. The promise is stated in what heartbeatd counts, not in time, so it holds
//! however starved of CPU the machine is; how much time a kill loses on an idle machine is a
//! `make bench` figure (`kill-9`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::daemon::{agent_file, heartbeat, history_on_disk, http, journal_records, send_signal, Daemon};

const AGENTS: [&str; 4] = ["crash-0", "crash-1", "crash-2", "crash-3"];

fn agents_config(extra: &str) -> String {
    let mut text = extra.to_owned();
    for id in AGENTS {
        text.push_str(&format!("[[agents]]\nid = \"{id}\"\n"));
    }
    text
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Checks that nothing under `data` is torn or left over: no temp files, every state file and
/// every journal and history line parses.
fn assert_nothing_torn(data: &Path) {
    for path in files(data) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "leftover temp file {}", path.display());
        let text = fs::read_to_string(&path).unwrap();
        if name.ends_with(".json") {
            serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{} is torn: {e}", path.display()));
        } else if name.ends_with(".log") {
            for line in text.lines().filter(|l| !l.is_empty()) {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("{}: torn line {line:?}: {e}", path.display()));
            }
        }
    }
}

/// The flush interval of the kill tests.
const FLUSH_MS: u64 = 100;

/// What the kill rounds measured.
#[derive(Default)]
struct KillReport {
    accepted: u64,
    lost: u64,
    /// The last `total_synced` seen before each kill, summed over the rounds.
    synced: u64,
}

/// The last `total_synced` that `/heartbeat/stats` answered, polled until the daemon is gone.
fn poll_synced(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut last = 0;
        while !stop.load(Ordering::Relaxed) {
            let Some(reply) = http(port, "GET", "/heartbeat/stats", None) else {
                break;
            };
            let synced = reply.body["total_synced"]
                .as_u64()
                .unwrap_or_else(|| panic!("no total_synced in {}", reply.body));
            assert!(synced >= last, "total_synced went back from {last} to {synced}");
            last = synced;
            thread::sleep(Duration::from_millis(5));
        }
        last
    })
}

/// One round: a daemon under load from one sequential client per agent, with `total_synced`
/// polled beside them; `kill -9` when `kill_at` returns; a restart that replays the journal and
/// stops cleanly. Then the disk is checked against what was counted: every heartbeat counted
/// as synced is there, nothing that was never answered 200 is, the heartbeats missing are the
/// newest ones, and nothing is torn.
fn kill_round(
    dir: &Path,
    config: &str,
    env: &[(&str, &str)],
    round: u64,
    kill_at: impl FnOnce(&Daemon),
    report: &mut KillReport,
) {
    let data = dir.join("data");
    let count_on_disk = |id: &str| -> u64 {
        match fs::read(data.join("agents").join(format!("{id}.json"))) {
            Ok(_) => agent_file(&data, id)["heartbeat_count"].as_u64().unwrap(),
            Err(_) => 0,
        }
    };
    let before: HashMap<&str, u64> = AGENTS.iter().map(|&id| (id, count_on_disk(id))).collect();
    let daemon = Daemon::start_with_env(dir, config, env);
    // One client per agent, each remembering when it got each 200.
    let stop = Arc::new(AtomicBool::new(false));
    let port = daemon.port;
    let clients: Vec<_> = AGENTS
        .iter()
        .map(|&id| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut ok_times: Vec<DateTime<Utc>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let body = heartbeat(id, ok_times.len() as u64).to_string();
                    match http(port, "POST", "/heartbeat", Some(&body)) {
                        Some(reply) if reply.status == 200 => ok_times.push(Utc::now()),
                        _ => break, // killed
                    }
                }
                (id, ok_times)
            })
        })
        .collect();
    let poller = poll_synced(port, Arc::clone(&stop));

    kill_at(&daemon);
    send_signal(daemon.pid(), "KILL");
    stop.store(true, Ordering::Relaxed);
    let mut daemon = daemon;
    daemon.wait_exit(Duration::from_secs(10));
    let answered: Vec<(&str, Vec<DateTime<Utc>>)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    // Every answer it got came before the kill.
    let synced_before_kill = poller.join().unwrap();

    // Restart (replays the journal) and stop cleanly, so the files are complete.
    let mut restarted = Daemon::start_with_env(dir, config, env);
    assert_eq!(restarted.stop_with("TERM").code(), Some(0), "{}", restarted.log());

    assert_nothing_torn(&data);
    let mut kept_in_all = 0;
    for (id, ok_times) in answered {
        report.accepted += ok_times.len() as u64;
        if ok_times.is_empty() {
            continue;
        }
        let state = agent_file(&data, id);
        let last_seen: DateTime<Utc> = state["last_seen"].as_str().unwrap().parse().unwrap();
        // Counted: each 200 is on disk unless it was answered after the last heartbeat on disk
        // was received (then it is one of the newest, not yet synced at the kill).
        let count = state["heartbeat_count"].as_u64().unwrap();
        let kept = count - before[id];
        kept_in_all += kept;
        let accepted = ok_times.len() as u64;
        assert!(
            kept <= accepted,
            "round {round}, {id}: {kept} on disk of {accepted} accepted"
        );
        let lost = accepted - kept;
        let newest = ok_times.iter().filter(|t| **t > last_seen).count() as u64;
        assert!(
            lost <= newest,
            "round {round}, {id}: {lost} accepted heartbeats lost, but only {newest} were answered after the last one on disk"
        );
        report.lost += lost;
        // The history ends with the state's last heartbeat, and holds no more than it counts.
        let history = history_on_disk(&data, id);
        assert_eq!(
            history.last().and_then(|r| r["n"].as_u64()),
            Some(count),
            "round {round}, {id}"
        );
        assert!(
            history.len() as u64 >= count.min(1440) && history.len() as u64 <= count,
            "{id}"
        );
    }
    // The promise: everything counted as synced before the kill is on disk after it.
    assert!(
        kept_in_all >= synced_before_kill,
        "round {round}: {kept_in_all} heartbeats on disk, but {synced_before_kill} were counted as synced before the kill"
    );
    report.synced += synced_before_kill;
}

#[test]
fn kill_9_twenty_times_under_load_tears_nothing_and_loses_nothing_counted_as_synced() {
    // Arrange: short intervals, so kills land in flushes and checkpoints alike.
    let config = agents_config(&format!("flush_interval_ms = {FLUSH_MS}\ncheckpoint_interval_s = 1\n"));
    let dir = tempfile::tempdir().unwrap();
    let mut report = KillReport::default();

    for round in 0..20u64 {
        // Act: kill -9 at a point that differs from round to round.
        let wait = Duration::from_millis(300 + (round * 37) % 400);
        kill_round(dir.path(), &config, &[], round, |_| thread::sleep(wait), &mut report);
    }
    assert!(report.synced > 0, "the promise was put to the test");
    println!(
        "20 random kills: {} heartbeats accepted, {} lost, {} counted as synced before the kills",
        report.accepted, report.lost, report.synced
    );
}

#[test]
fn kill_9_inside_twenty_checkpoints_loses_nothing_counted_as_synced() {
    // Arrange: every checkpoint pauses for 1.5 s halfway (histories appended, states not yet
    // renamed), and announces it. Heartbeats keep coming in the meantime; before the journal
    // had a thread of its own, they waited in memory for the checkpoint and a kill lost them.
    let config = agents_config(&format!("flush_interval_ms = {FLUSH_MS}\ncheckpoint_interval_s = 1\n"));
    let env = [("HEARTBEATD_TEST_CHECKPOINT_PAUSE_MS", "1500")];
    let dir = tempfile::tempdir().unwrap();
    let mut report = KillReport::default();
    const HOOK: &str = "test hook: checkpoint paused";

    for round in 0..20u64 {
        // Act: kill -9 at a point inside the paused checkpoint that differs from round to round.
        let paused_before = fs::read_to_string(dir.path().join("heartbeatd.log"))
            .unwrap_or_default()
            .matches(HOOK)
            .count();
        let inside = Duration::from_millis(200 + (round * 53) % 1100);
        let kill_at = |daemon: &Daemon| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while daemon.log().matches(HOOK).count() <= paused_before {
                assert!(Instant::now() < deadline, "no checkpoint started:\n{}", daemon.log());
                thread::sleep(Duration::from_millis(10));
            }
            thread::sleep(inside);
        };
        kill_round(dir.path(), &config, &env, round, kill_at, &mut report);
    }
    assert!(report.accepted > 0);
    assert!(report.synced > 0, "the promise was put to the test");
    println!(
        "20 kills inside checkpoints: {} heartbeats accepted, {} lost, {} counted as synced before the kills",
        report.accepted, report.lost, report.synced
    );
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Self {
        fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            // mode=0700: a tmpfs root is 1777 by default, and heartbeatd refuses a data_dir
            // others can write.
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs to fill a disk for real and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    let _ = std::io::Write::write_all(&mut file, &[0u8; 1]);
    filler
}

#[test]
fn a_full_disk_loses_nothing_once_it_has_room_again() {
    // Arrange: data_dir on a 2 MiB tmpfs.
    let dir = tempfile::tempdir().unwrap();
    let mount = Tmpfs::mount(dir.path().join("data"), "2m");
    let config = agents_config("flush_interval_ms = 100\ncheckpoint_interval_s = 1\n");
    let mut daemon = Daemon::start_in(dir.path(), &config);
    let filler = fill(&mount.0);

    // Act: heartbeats while the disk is full.
    for n in 0..40u64 {
        assert_eq!(
            daemon.post_heartbeat(&heartbeat(AGENTS[(n % 4) as usize], n)).status,
            200,
            "still accepting"
        );
    }
    daemon.wait_processed(40);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("could not persist") {
        assert!(Instant::now() < deadline, "no store error logged:\n{}", daemon.log());
        thread::sleep(Duration::from_millis(50));
    }
    let failing = daemon.stats();
    assert!(
        failing["store_errors"].as_u64().unwrap() >= 1,
        "counted in stats: {failing}"
    );
    assert_eq!(failing["total_synced"], 0, "nothing could be synced: {failing}");
    fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon.log().contains("works again") {
        assert!(Instant::now() < deadline, "no recovery logged:\n{}", daemon.log());
        thread::sleep(Duration::from_millis(100));
    }
    // A write that started while the disk was full may still fail once; then ready again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.request("GET", "/readyz", None).status != 200 {
        assert!(Instant::now() < deadline, "not ready again:\n{}", daemon.log());
        thread::sleep(Duration::from_millis(100));
    }
    // Every heartbeat's journal record is synced now (the journal is flushed every 100 ms).
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.stats()["total_synced"] != 40 {
        assert!(Instant::now() < deadline, "not all synced: {}", daemon.stats());
        thread::sleep(Duration::from_millis(50));
    }
    let status = daemon.stop_with("TERM");

    // Assert: no panic, a clean stop, everything on disk, nothing torn.
    let log = daemon.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let data = mount.0.clone();
    assert_nothing_torn(&data);
    let on_disk: u64 = AGENTS
        .iter()
        .map(|id| agent_file(&data, id)["heartbeat_count"].as_u64().unwrap())
        .sum();
    assert_eq!(on_disk, 40);
    let history: usize = AGENTS.iter().map(|id| history_on_disk(&data, id).len()).sum();
    assert_eq!(history, 40);
    assert!(
        journal_records(&data).is_empty(),
        "the final checkpoint covers the journal"
    );
    let errors = log.matches("could not persist").count();
    assert!(
        errors <= 3,
        "errors are logged at most once per 10 s, {errors} lines:\n{log}"
    );
}

#[test]
fn a_vanished_data_dir_is_recreated_and_nothing_is_lost() {
    // Arrange
    let config = agents_config("flush_interval_ms = 100\ncheckpoint_interval_s = 3600\n");
    let mut daemon = Daemon::start(&config);
    let data = daemon.data_dir();
    for n in 0..4u64 {
        assert_eq!(daemon.post_heartbeat(&heartbeat(AGENTS[n as usize], n)).status, 200);
    }
    daemon.wait_processed(4);

    // Act: an operator removes the whole data directory while heartbeatd runs. heartbeatd
    // may create a file in it while `rm -r` walks it (ENOTEMPTY): the operator tries again.
    let mut tries = 0;
    while let Err(e) = fs::remove_dir_all(&data) {
        tries += 1;
        assert!(tries < 20 && e.kind() == std::io::ErrorKind::DirectoryNotEmpty, "{e}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for n in 4..8u64 {
        assert_eq!(
            daemon.post_heartbeat(&heartbeat(AGENTS[(n % 4) as usize], n)).status,
            200
        );
    }
    daemon.wait_processed(8);
    let status = daemon.stop_with("TERM");

    // Assert: what was in memory is all written again (the files of the first four
    // heartbeats went with the directory; their agents' state and history did not).
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert_nothing_torn(&data);
    for id in AGENTS {
        assert_eq!(agent_file(&data, id)["heartbeat_count"], 2, "{id}");
    }
    let history: usize = AGENTS.iter().map(|id| history_on_disk(&data, id).len()).sum();
    assert_eq!(
        history, 8,
        "the history since the last checkpoint comes back from memory"
    );
}

#[test]
fn a_graceful_stop_that_cannot_write_exits_1_and_says_so() {
    // Arrange: heartbeats processed while the disk is full.
    let dir = tempfile::tempdir().unwrap();
    let mount = Tmpfs::mount(dir.path().join("data"), "2m");
    let config = agents_config("flush_interval_ms = 100\nshutdown_timeout_s = 3\n");
    let mut daemon = Daemon::start_in(dir.path(), &config);
    let _filler = fill(&mount.0);
    assert_eq!(daemon.post_heartbeat(&heartbeat(AGENTS[0], 1)).status, 200);
    daemon.wait_processed(1);

    // Act: stop while the disk is still full.
    let status = daemon.stop_with("TERM");

    // Assert: not the clean exit; the log says what is at stake and what to do.
    let log = daemon.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("could not flush agent state at shutdown"), "{log}");
    assert!(log.contains("what_to_do"), "{log}");
    assert!(
        !log.contains("every accepted heartbeat is processed and on disk"),
        "{log}"
    );
}

#[test]
fn a_long_disk_failure_holds_a_bounded_backlog_and_loses_nothing_answered_200() {
    // Arrange: data_dir on a full 2 MiB tmpfs, and a backlog bound of 50 heartbeats (a test
    // hook; the default is 262,144, about 45 MB).
    let dir = tempfile::tempdir().unwrap();
    let mount = Tmpfs::mount(dir.path().join("data"), "2m");
    let config = agents_config("flush_interval_ms = 100\ncheckpoint_interval_s = 1\n");
    let mut daemon = Daemon::start_with_env(dir.path(), &config, &[("HEARTBEATD_TEST_MAX_UNSYNCED", "50")]);
    let filler = fill(&mount.0);
    let mut accepted = 0u64;
    let mut send = |n: u64| {
        let reply = daemon.post_heartbeat(&heartbeat(AGENTS[(n % 4) as usize], n));
        if reply.status == 200 {
            accepted += 1;
        }
        reply
    };
    for n in 0..10 {
        assert_eq!(send(n).status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.stats()["store_errors"].as_u64().unwrap() == 0 {
        assert!(Instant::now() < deadline, "the disk never failed:\n{}", daemon.log());
        thread::sleep(Duration::from_millis(50));
    }

    // Act: heartbeats go on while the disk stays full.
    let refused = (10..2000u64)
        .map(&mut send)
        .find(|reply| reply.status != 200)
        .expect("heartbeats are refused once the backlog reaches its bound (the old daemon took them all)");

    // Assert: 503 with Retry-After once 50 wait in memory; /readyz, the stats and /metrics say so.
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("10"));
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("reached their bound"),
        "{refused:?}"
    );
    let ready = daemon.request("GET", "/readyz", None);
    assert_eq!(ready.status, 503);
    assert!(
        ready.body["message"].as_str().unwrap().contains("reached their bound"),
        "{ready:?}"
    );
    let stats = daemon.stats();
    assert!(stats["heartbeats_unsynced"].as_u64().unwrap() >= 50, "{stats}");
    assert_eq!(stats["total_synced"], 0, "{stats}");
    let metrics = daemon.request("GET", "/metrics", None).body;
    assert!(
        metrics.as_str().unwrap().contains("heartbeatd_heartbeats_unsynced "),
        "{metrics}"
    );

    // Once the disk has room: every heartbeat answered 200 is synced, and new ones are taken.
    fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.stats()["total_synced"].as_u64() != Some(accepted) {
        assert!(
            Instant::now() < deadline,
            "not all synced: {} of {accepted}",
            daemon.stats()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.request("GET", "/readyz", None).status != 200 {
        assert!(Instant::now() < deadline, "not ready again:\n{}", daemon.log());
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(daemon.post_heartbeat(&heartbeat(AGENTS[0], 1)).status, 200);
    let status = daemon.stop_with("TERM");
    let log = daemon.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let on_disk: u64 = AGENTS
        .iter()
        .map(|id| agent_file(&mount.0, id)["heartbeat_count"].as_u64().unwrap())
        .sum();
    assert_eq!(on_disk, accepted + 1, "every heartbeat answered 200 is on disk");
    // The agents' events failed together: one rate-limited line, not one per agent.
    let event_lines = log.matches("could not record").count();
    assert!(event_lines <= 2, "{event_lines} lines:\n{log}");
    assert!(log.contains("free space on data_dir"), "{log}");
}
