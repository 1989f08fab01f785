//! A daemon across an in-place upgrade: the old process (the test's child) exits once the new
//! one is prepared, and the new one, started by the old, is re-parented away from the test.
//! Its exit status cannot be waited for; its end is seen in `/proc` (gone, or a zombie of
//! whoever adopted it) and its log says how it stopped.

use std::fs;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use crate::{heartbeatd_bin, Daemon};

/// The load tool (`bench/src/bin/heartbeatd-load.rs`), built next to heartbeatd by
/// `cargo build --workspace --bins`, or `$HEARTBEATD_LOAD`.
pub fn load_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HEARTBEATD_LOAD") {
        return PathBuf::from(path);
    }
    let bin = heartbeatd_bin().with_file_name("heartbeatd-load");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build --workspace --bins) or set HEARTBEATD_LOAD",
        bin.display()
    );
    bin
}

/// Whether `pid` has ended (no such process, or a zombie).
pub fn has_ended(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

impl Daemon {
    /// The old process has handed over to `new_pid`: waits for it to exit (its status is
    /// returned) and follows the new one from here on.
    pub fn handed_over_to(&mut self, new_pid: u32) -> ExitStatus {
        let status = self.wait_exit(Duration::from_secs(120));
        self.successor = Some(new_pid);
        status
    }

    /// The pid `GET /upgrade` names: the process serving now.
    pub fn serving_pid(&self) -> u32 {
        let reply = self.request("GET", "/upgrade", None);
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body["pid"].as_u64().expect("a pid") as u32
    }

    /// Sends `signal` to the process that took over and waits until it has ended.
    pub fn stop_successor(&mut self, signal: &str) {
        let pid = self.successor.take().expect("an upgrade took place");
        crate::send_signal(pid, signal);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !has_ended(pid) {
            assert!(Instant::now() < deadline, "pid {pid} did not end:\n{}", self.log());
            thread::sleep(Duration::from_millis(10));
        }
    }
}
