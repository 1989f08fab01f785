//! heartbeatd's side: starting a keeper, and the pipe its [`KeeperLine`]s come back on.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

#[cfg(doc)]
use super::protocol::KeeperLine;
use super::protocol::{KeeperSpec, SPEC_ENV};
use super::rendezvous::PROCESS_NAME;

/// A keeper just started, seen from heartbeatd.
pub struct SpawnedKeeper {
    pub pid: i32,
    /// The protocol lines ([`KeeperLine`]); end of file when the keeper has exited.
    pub reports: std::process::ChildStdout,
}

/// Starts a keeper for `spec`: heartbeatd's own binary, in its own process group (a Ctrl-C on
/// heartbeatd's terminal reaches heartbeatd only, which stops the agents itself), reaped by
/// [`crate::supervision::reaper`].
pub fn spawn_keeper(spec: &KeeperSpec) -> io::Result<SpawnedKeeper> {
    let json = spec.to_env()?;
    let mut child = crate::supervision::reaper::spawn_keeper(|| {
        // Shown as `heartbeatd-keep <id>` by ps (its name, PROCESS_NAME, is set by the keeper).
        Command::new("/proc/self/exe")
            .arg0(PROCESS_NAME)
            .arg(&spec.agent_id)
            .env(SPEC_ENV, json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
    })?;
    let reports = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no pipe from the keeper"))?;
    Ok(SpawnedKeeper {
        pid: child.id() as i32,
        reports,
    })
}
