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
