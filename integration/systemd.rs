//! Under systemd (`Type=notify`): READY=1 once listening, WATCHDOG=1 at half of WATCHDOG_USEC,
//! STOPPING=1 on a stop signal. A real Unix datagram socket stands in for systemd.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::daemon::Daemon;

/// Every notification received until `deadline` or until `until` arrives.
fn receive(socket: &UnixDatagram, until: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = message == until;
                got.push(message);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    got
}

#[test]
fn ready_watchdog_and_stopping_are_sent() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let path_text = path.display().to_string();

    // Act
    let mut daemon = Daemon::start_with_env(
        dir.path(),
        "",
        &[("NOTIFY_SOCKET", &path_text), ("WATCHDOG_USEC", "200000")],
    );
    let running = receive(&socket, "never", Duration::from_millis(700));
    crate::daemon::send_signal(daemon.pid(), "TERM");
    let stopping = receive(&socket, "STOPPING=1", Duration::from_secs(10));
    let status = daemon.wait_exit(Duration::from_secs(30));

    // Assert
    assert_eq!(status.code(), Some(0));
    assert_eq!(running.first().map(String::as_str), Some("READY=1"), "{running:?}");
    let pings = running.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings >= 3, "a keep-alive every 100 ms: {running:?}");
    assert!(stopping.contains(&"STOPPING=1".to_owned()), "{stopping:?}");
}

#[test]
fn the_shipped_unit_lets_heartbeatd_stop_its_agents_and_checks_the_config_first() {
    // The unit as shipped: systemd signals heartbeatd alone (each agent gets its own
    // stop_signal from heartbeatd; after a crash the agents wait to be adopted), and a
    // configuration error stops the start early.
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/heartbeatd.service")).unwrap();
    let keys: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    assert!(keys.contains(&("KillMode", "process")), "{unit}");
    let pre = keys
        .iter()
        .find(|(k, _)| *k == "ExecStartPre")
        .expect("an ExecStartPre")
        .1;
    assert!(pre.contains(" check-config --quiet "), "{pre}");

    // What ExecStartPre runs: silent and 0 on the shipped config, 2 with the error on a bad one.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/heartbeatd.toml");
    let ok = std::process::Command::new(crate::daemon::BIN)
        .args(["check-config", "--quiet", shipped])
        .output()
        .unwrap();
    assert_eq!((ok.status.code(), ok.stdout.len()), (Some(0), 0));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "workers = 0\n").unwrap();
    let refused = std::process::Command::new(crate::daemon::BIN)
        .args(["check-config", "--quiet"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("workers"));
}
