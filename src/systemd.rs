//! systemd's service notification protocol: when `NOTIFY_SOCKET` is set (a `Type=notify` unit),
//! heartbeatd sends `READY=1` once it listens, `STOPPING=1` when a stop signal arrives, and
//! `WATCHDOG=1` at half of `WATCHDOG_USEC` while it runs. Without `NOTIFY_SOCKET` nothing is
//! sent. Failures to notify are logged, never fatal.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go, from the environment systemd sets.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    pub fn from_env() -> Self {
        Self {
            socket: std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one notification (e.g. `READY=1`); `Ok(())` when there is no socket.
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        let Some(socket) = &self.socket else { return Ok(()) };
        let sender = UnixDatagram::unbound()?;
        match socket.strip_prefix('@') {
            // An abstract socket name (Linux).
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                sender.send_to_addr(state.as_bytes(), &addr)?;
            }
            None => {
                sender.send_to(state.as_bytes(), PathBuf::from(socket))?;
            }
        }
        Ok(())
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when the watchdog is meant for
    /// this process (`WATCHDOG_PID` unset or ours).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref()?;
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some(path.display().to_string()),
        };
        notifier.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        let notifier = Notifier { socket: None };
        assert!(!notifier.enabled());
        assert!(notifier.notify("READY=1").is_ok());
        assert_eq!(notifier.watchdog_interval(), None);
    }
}
