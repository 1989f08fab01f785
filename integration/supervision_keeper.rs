//! Which program keeps a supervised agent: `heartbeatd-keep`, installed beside heartbeatd,
//! named after the agent in `ps`; and, where it is missing, heartbeatd's own binary in keeper
//! mode, with an ERROR saying what to install. Processes are found by a marker in their
//! environment, keepers as the agent's parent.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::daemon::{heartbeatd_bin, processes_with_marker, Daemon};
use crate::supervision::{agent, marker, parent_of, process, start, wait_for};

/// `heartbeatd-keep` as cargo built it beside the heartbeatd under test.
fn keeper_bin() -> PathBuf {
    let bin = heartbeatd_bin().with_file_name("heartbeatd-keep");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// The keeper of `id`'s running agent: its executable, its argv, its `comm`.
fn keeper_of(daemon: &Daemon, id: &str) -> (PathBuf, Vec<String>, String) {
    let view = wait_for(daemon, id, "running", Duration::from_secs(20), |p| {
        p["state"] == "running" && p["pid"].as_u64().is_some()
    });
    let agent_pid = view["pid"].as_u64().unwrap() as u32;
    let keeper = parent_of(agent_pid).expect("the agent's parent");
    assert_ne!(keeper, daemon.pid(), "the agent runs under a keeper");
    let exe = fs::read_link(format!("/proc/{keeper}/exe")).unwrap();
    let argv = fs::read(format!("/proc/{keeper}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|word| !word.is_empty())
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    let comm = fs::read_to_string(format!("/proc/{keeper}/comm")).unwrap();
    (exe, argv, comm.trim_end().to_owned())
}

fn same_file(a: &Path, b: &Path) -> bool {
    fs::canonicalize(a).unwrap() == fs::canonicalize(b).unwrap()
}

#[test]
fn an_agent_is_kept_by_heartbeatd_keep_named_after_it() {
    // Arrange
    let keeper = keeper_bin();
    let mark = marker("lean-keeper");

    // Act
    let mut daemon = start(&agent("web-1", "", &mark, ""));
    let (exe, argv, comm) = keeper_of(&daemon, "web-1");

    // Assert: the keeper is the heartbeatd-keep binary, not heartbeatd's; ps shows the agent.
    assert!(same_file(&exe, &keeper), "keeper runs {}", exe.display());
    assert_eq!(argv, ["heartbeatd-keep web-1"]);
    assert_eq!(comm, "heartbeatd-keep");
    assert!(
        !daemon.log().contains("could not run the keeper program"),
        "{}",
        daemon.log()
    );
    // It keeps its tree as the old keeper did: nothing is left after a stop.
    assert!(daemon.stop_with("TERM").success());
    assert_eq!(processes_with_marker(&mark), Vec::<u32>::new());
}

/// heartbeatd copied into a directory of its own, where `place_keeper` puts (or not) a
/// `heartbeatd-keep`, keeps an agent: the keeper runs heartbeatd's own binary in keeper mode,
/// and the log says why, once, with `expected_why` in it, and what to install. Nothing of the
/// tree is left after a stop.
fn falls_back(place_keeper: impl Fn(&Path), expected_why: &str) {
    // Arrange
    let bins = tempfile::tempdir().unwrap();
    let alone = bins.path().join("heartbeatd");
    fs::copy(heartbeatd_bin(), &alone).unwrap();
    place_keeper(&bins.path().join("heartbeatd-keep"));
    let dir = tempfile::tempdir().unwrap();
    let mark = marker("keeper-fallback");
    let config = agent("db-1", "", &mark, "");

    // Act
    let mut daemon = Daemon::start_binary(
        &alone,
        dir.path(),
        |port| config.replace("@URL@", &format!("http://127.0.0.1:{port}/heartbeat")),
        &[],
    );
    let (exe, argv, comm) = keeper_of(&daemon, "db-1");

    // Assert
    assert!(same_file(&exe, &alone), "keeper runs {}", exe.display());
    assert_eq!(argv, ["heartbeatd", "keep", "db-1"]);
    // Named as the lean keeper is: a new heartbeatd adopts it by that name.
    assert_eq!(comm, "heartbeatd-keep");
    assert_eq!(process(&daemon, "db-1")["state"], "running");
    let log = daemon.log();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("could not run the keeper program heartbeatd-keep"))
        .collect();
    assert_eq!(said.len(), 1, "{log}");
    assert!(said[0].contains("ERRO"), "{}", said[0]);
    assert!(
        said[0].contains(&bins.path().join("heartbeatd-keep").display().to_string()),
        "{}",
        said[0]
    );
    assert!(said[0].contains(expected_why), "{}", said[0]);
    assert!(
        said[0].contains("install heartbeatd-keep in the same directory as heartbeatd"),
        "{}",
        said[0]
    );
    assert!(daemon.stop_with("TERM").success());
    assert_eq!(processes_with_marker(&mark), Vec::<u32>::new());
}

#[test]
fn without_heartbeatd_keep_beside_it_heartbeatd_keeps_agents_itself_and_says_what_to_install() {
    falls_back(|_| {}, "No such file");
}

#[test]
fn a_heartbeatd_keep_others_can_write_or_that_is_no_program_is_not_run() {
    use std::os::unix::fs::PermissionsExt;
    // Anyone could replace what would then run every agent, often as root.
    falls_back(
        |path| {
            fs::copy(keeper_bin(), path).unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(0o777)).unwrap();
        },
        "writable by others",
    );
    // Executable, but not a program the kernel can run.
    falls_back(
        |path| {
            fs::write(path, "not a program\n").unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        },
        "Exec format error",
    );
}

#[test]
fn check_config_says_on_stderr_which_keeper_supervised_agents_would_run_under() {
    // Arrange: a config with a supervised agent; heartbeatd as built, and a copy alone.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("heartbeatd.toml");
    fs::write(&config, "[[agents]]\nid = \"a\"\ncommand = [\"/bin/sleep\", \"600\"]\n").unwrap();
    let alone = dir.path().join("heartbeatd");
    fs::copy(heartbeatd_bin(), &alone).unwrap();
    let check = |bin: &Path| {
        let out = std::process::Command::new(bin)
            .arg("check-config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("\"/bin/sleep\","),
            "stdout is the configuration"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Act
    let built = check(&heartbeatd_bin());
    let copied = check(&alone);

    // Assert
    let keeper = fs::canonicalize(keeper_bin()).unwrap();
    assert!(
        built.contains(&format!("will run under the keeper {}", keeper_bin().display()))
            || built.contains(&format!("will run under the keeper {}", keeper.display())),
        "{built}"
    );
    assert!(copied.contains("warning: the keeper"), "{copied}");
    assert!(copied.contains("Install heartbeatd-keep beside heartbeatd"), "{copied}");
}
