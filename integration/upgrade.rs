//! Restarts and upgrades that refuse nothing: one heartbeatd per data_dir (the lock), the
//! in-place upgrade (SIGUSR2, `ctl upgrade`) under steady load and with a broken new binary,
//! and systemd socket activation (a stop and start under load on a socket held outside).

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::successor::load_bin;
use crate::daemon::{heartbeatd_bin, http, send_signal, Daemon, BIN};

const LOAD_AGENTS: usize = 20;

/// `[[agents]]` for the load tool's agents.
pub(crate) fn load_agents_config() -> String {
    let out = Command::new(load_bin())
        .args(["--agents", &LOAD_AGENTS.to_string(), "--print-agents-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Starts steady load on `port`: `rate` heartbeats a second for `seconds`, over 8 keep-alive
/// connections.
pub(crate) fn start_load(port: u16, rate: u32, seconds: u32) -> Child {
    Command::new(load_bin())
        .args([
            "--url",
            &format!("http://127.0.0.1:{port}/heartbeat"),
            "--agents",
            &LOAD_AGENTS.to_string(),
            "--connections",
            "8",
            "--rate",
            &rate.to_string(),
            "--duration",
            &seconds.to_string(),
            "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The load tool's report: every answer was 200 and no request failed. Returns how many.
pub(crate) fn all_accepted(load: Child) -> u64 {
    let out = load.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ok = report["by_status"]["200"].as_u64().unwrap_or(0);
    assert_eq!(report["transport_errors"], 0, "no request failed: {report}");
    assert_eq!(report["sent"].as_u64(), Some(ok), "every answer was 200: {report}");
    assert!(ok > 0, "{report}");
    ok
}

/// The heartbeats counted in the state of the load tool's agents, once `expected` are.
pub(crate) fn wait_counted(port: u16, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counted: u64 = (1..=LOAD_AGENTS)
            .map(|i| {
                http(port, "GET", &format!("/agents/load-{i:06}"), None)
                    .map_or(0, |r| r.body["heartbeat_count"].as_u64().unwrap_or(0))
            })
            .sum();
        if counted >= expected || Instant::now() > deadline {
            return counted;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `GET /upgrade` names a process other than `old`.
pub(crate) fn wait_new_pid(daemon: &Daemon, old: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(reply) = http(daemon.port, "GET", "/upgrade", None) {
            let pid = reply.body["pid"].as_u64().unwrap_or(0) as u32;
            if pid != 0 && pid != old {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no new process:\n{}", daemon.log());
        thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_second_heartbeatd_on_the_same_data_dir_is_refused_and_names_the_first() {
    // Arrange: no control socket, so only the lock can stop the second one.
    let daemon = Daemon::start("control_socket = \"\"\n");

    // Act
    let second = Command::new(BIN)
        .arg("--config")
        .arg(daemon.dir.join("heartbeatd.toml"))
        .args(["--http-port", &free_port().to_string()])
        .output()
        .unwrap();

    // Assert
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another heartbeatd (pid {}) is running on data_dir",
            daemon.pid()
        )),
        "{stderr}"
    );
    assert_eq!(daemon.request("GET", "/heartbeat/stats", None).status, 200);
}

#[test]
fn sigusr2_hands_over_under_steady_load_refusing_nothing_and_losing_nothing() {
    // Arrange
    let mut daemon = Daemon::start(&load_agents_config());
    let old = daemon.pid();
    let load = start_load(daemon.port, 300, 6);
    thread::sleep(Duration::from_secs(2));

    // Act
    send_signal(old, "USR2");
    let new = wait_new_pid(&daemon, old);
    let old_status = daemon.handed_over_to(new);
    let accepted = all_accepted(load);

    // Assert
    assert!(
        old_status.success(),
        "the old process exits 0 after the hand-over: {old_status}"
    );
    let counted = wait_counted(daemon.port, accepted);
    assert_eq!(
        counted, accepted,
        "every heartbeat answered 200 is in the agents' state"
    );
    let log = daemon.log();
    assert!(log.contains("connections handed over"), "{log}");
    daemon.stop_successor("TERM");
    assert_eq!(
        daemon
            .log()
            .matches("every accepted heartbeat is processed and on disk")
            .count(),
        2,
        "both processes drained: {}",
        daemon.log()
    );
}

/// Replaces the file at `path` as a package upgrade does (a new file renamed over it).
///
/// Written by `sh`, not by this process: a test process that held the file open for writing
/// could pass that descriptor to a child forked meanwhile by another test, and the exec of the
/// file would fail with "Text file busy" (ETXTBSY) until that child's own exec.
fn replace_binary(path: &Path, content: &[u8]) {
    let mut sh = Command::new("sh")
        .args([
            "-c",
            "cat > \"$1.new\" && chmod 755 \"$1.new\" && mv \"$1.new\" \"$1\"",
            "sh",
        ])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    sh.stdin.take().unwrap().write_all(content).unwrap();
    assert!(sh.wait().unwrap().success());
}

pub(crate) fn ctl_upgrade(daemon: &Daemon) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(daemon.dir.join("heartbeatd.toml"))
        .args(["ctl", "upgrade"])
        .output()
        .unwrap()
}

#[test]
fn a_broken_new_binary_leaves_the_old_one_serving_and_a_good_one_takes_over() {
    // Arrange: heartbeatd runs from a copy the test can replace.
    let bins = tempfile::tempdir().unwrap();
    let installed = bins.path().join("heartbeatd");
    replace_binary(&installed, &std::fs::read(heartbeatd_bin()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_binary(&installed, dir.path(), |_| String::new(), &[]);
    let old = daemon.pid();

    // Act 1: a new binary that fails at start.
    replace_binary(&installed, b"#!/bin/sh\necho 'this build is broken' >&2\nexit 3\n");
    let failed = ctl_upgrade(&daemon);

    // Assert 1: ctl says why, the old one serves on.
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("exited with status 3"), "{stderr}");
    assert_eq!(daemon.serving_pid(), old);
    daemon.wait_for_log("this build is broken");
    daemon.wait_for_log("upgrade failed: the old heartbeatd keeps serving");

    // Act 2: no binary at all (a package removed), through SIGUSR2, ten times: each failed
    // exec races heartbeatd's reaper for the child (it once crashed heartbeatd).
    std::fs::remove_file(&installed).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for tries in 2..12 {
        send_signal(old, "USR2");
        while daemon.log().matches("upgrade failed").count() < tries {
            assert!(Instant::now() < deadline, "{}", daemon.log());
            thread::sleep(Duration::from_millis(20));
        }
    }

    // Assert 2
    assert!(daemon.log().contains("could not start"), "{}", daemon.log());
    assert_eq!(daemon.serving_pid(), old);
    assert_eq!(daemon.request("GET", "/heartbeat/stats", None).status, 200);

    // Act 3: the real binary.
    replace_binary(&installed, &std::fs::read(heartbeatd_bin()).unwrap());
    let upgraded = ctl_upgrade(&daemon);

    // Assert 3
    let stdout = String::from_utf8_lossy(&upgraded.stdout);
    assert!(
        upgraded.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&upgraded.stderr)
    );
    let new = daemon.serving_pid();
    assert_ne!(new, old);
    assert!(stdout.contains(&format!("upgraded: pid {old} → {new}")), "{stdout}");
    assert!(daemon.handed_over_to(new).success());
    daemon.stop_successor("TERM");
}

/// A heartbeatd started as systemd starts a socket-activated service: `socket` as descriptor
/// 3, `LISTEN_FDS=1` and `LISTEN_PID` its own pid (set by the shell it is exec'd from).
fn start_activated(socket: &TcpListener, dir: &Path) -> Child {
    let config = dir.join("heartbeatd.toml");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("heartbeatd.log"))
        .unwrap();
    let fd = socket.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" --config \"$1\""])
        .arg(heartbeatd_bin())
        .arg(&config)
        .stdin(Stdio::null())
        .stderr(log);
    // SAFETY: dup2 and fcntl only, between fork and exec. dup2 onto itself would leave the
    // descriptor close-on-exec, so that case clears the flag instead.
    unsafe {
        command.pre_exec(move || {
            let failed = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) < 0
            } else {
                libc::dup2(fd, 3) < 0
            };
            if failed {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().unwrap()
}

fn wait_serving(port: u16, child: &mut Child, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/readyz", None).is_none_or(|r| r.status != 200) {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.join("heartbeatd.log")).unwrap_or_default();
            panic!("heartbeatd exited during start-up ({status}):\n{log}");
        }
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stop_and_start_on_a_socket_held_by_systemd_refuses_nothing_and_loses_nothing() {
    // Arrange: the socket outlives each heartbeatd, as systemd's does.
    let dir = tempfile::tempdir().unwrap();
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("heartbeatd.toml"),
        format!(
            "http_port = {}\ndata_dir = {:?}\n{}",
            free_port(),
            dir.path().join("data").display().to_string(),
            load_agents_config()
        ),
    )
    .unwrap();
    let mut first = start_activated(&socket, dir.path());
    wait_serving(port, &mut first, dir.path());
    let load = start_load(port, 300, 6);
    thread::sleep(Duration::from_secs(2));

    // Act: stop, then start again (as `systemctl restart heartbeatd`).
    send_signal(first.id(), "TERM");
    let stopped = first.wait().unwrap();
    let mut second = start_activated(&socket, dir.path());
    let accepted = all_accepted(load);

    // Assert
    assert!(stopped.success());
    assert_eq!(wait_counted(port, accepted), accepted);
    let log = std::fs::read_to_string(dir.path().join("heartbeatd.log")).unwrap();
    assert!(log.contains("systemd socket activation"), "{log}");
    send_signal(second.id(), "TERM");
    assert!(second.wait().unwrap().success());
}

#[test]
fn systemd_socket_activate_starts_heartbeatd_on_its_socket() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("heartbeatd.toml"),
        format!(
            "http_port = 1\ndata_dir = {:?}\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();

    // Act: systemd's own launcher (Debian's systemd package) passes LISTEN_FDS.
    let mut launcher = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}")])
        .arg(heartbeatd_bin())
        .arg("--config")
        .arg(dir.path().join("heartbeatd.toml"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd; make test-tools installs it)");
    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        if let Some(reply) = http(port, "GET", "/heartbeat/stats", None) {
            break reply;
        }
        assert!(Instant::now() < deadline, "no answer on the activated socket");
        thread::sleep(Duration::from_millis(50));
    };

    // Assert: served on the launcher's socket, though http_port says 1.
    assert_eq!(reply.status, 200);
    send_signal(launcher.id(), "TERM");
    assert!(launcher.wait().unwrap().success());
}

#[test]
fn a_descriptor_handed_over_that_is_not_a_listening_socket_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("heartbeatd.toml"),
        format!("data_dir = {:?}\n", dir.path().join("data").display().to_string()),
    )
    .unwrap();
    // Bounded: a heartbeatd that ignored the descriptor would serve for ever.
    let out = Command::new("timeout")
        .args([
            "60",
            "sh",
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" --config \"$1\" 3</dev/null",
        ])
        .arg(heartbeatd_bin())
        .arg(dir.path().join("heartbeatd.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("descriptor 3 handed over in LISTEN_FDS is not a listening stream socket"),
        "{stderr}"
    );
}

#[test]
fn loopback_admin_is_judged_by_the_socket_served_not_by_http_bind() {
    // Arrange: the configuration says loopback and opts into tokenless admin there, but the
    // socket handed over listens on every address.
    let dir = tempfile::tempdir().unwrap();
    let socket = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    std::fs::write(
        dir.path().join("heartbeatd.toml"),
        format!(
            "http_bind = \"127.0.0.1\"\nhttp_port = {port}\nloopback_admin = true\ndata_dir = {:?}\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let mut daemon = start_activated(&socket, dir.path());
    wait_serving(port, &mut daemon, dir.path());

    // Act: a change over TCP without a token.
    let refused = http(port, "POST", "/agents", Some(r#"{"id": "x"}"#)).unwrap();

    // Assert: refused, as for any heartbeatd that listens beyond loopback, and the start said
    // so (the warning names the address really served).
    send_signal(daemon.id(), "TERM");
    let stopped = daemon.wait().unwrap();
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(stopped.success());
    let log = std::fs::read_to_string(dir.path().join("heartbeatd.log")).unwrap();
    assert!(log.contains("heartbeatd listens beyond loopback"), "{log}");
    assert!(log.contains("bind: 0.0.0.0"), "{log}");
}
