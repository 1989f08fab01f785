//! The old process's side of an upgrade: start the binary at heartbeatd's path as a new
//! process, hand it the listening sockets, and wait until it says it is prepared (see
//! [`super`]). Until then nothing has changed: any failure leaves this process serving.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use heartbeatd_actors::supervision::reaper;

use super::{ADOPTS, FROM_VARIABLE, PREPARED};
use crate::server::inherited::{HELD_BY_SYSTEMD, UPGRADE_VARIABLE};

/// How long the new process may take to load its configuration and check `data_dir` before
/// it is given up (and killed). Generous: a slow disk under a big `data_dir` must not fail an
/// upgrade, and this process serves meanwhile.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for the exit status of a new process that closed the pipe without
/// saying `prepared`.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(5);

/// How this process was started: what an upgrade starts again.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The path of the binary, read at start-up: a package upgrade replaces the file at this
    /// path, and the link `/proc/self/exe` then names the deleted old file.
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl Launch {
    /// This process's binary and arguments. Call it at start-up, before a package upgrade
    /// can replace the file.
    pub fn of_this_process() -> io::Result<Self> {
        Ok(Self {
            exe: std::env::current_exe()?,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// The listening sockets handed to the new process.
#[derive(Debug, Clone, Copy, Default)]
pub struct HandedSockets {
    pub tcp: Option<RawFd>,
    pub control: Option<RawFd>,
    /// systemd holds the TCP socket too (passed on, so the next process knows it).
    pub tcp_held_by_systemd: bool,
}

impl HandedSockets {
    fn variable(&self) -> String {
        let tcp = self.tcp.map(|fd| format!("tcp={fd}"));
        let control = self.control.map(|fd| format!("control={fd}"));
        let held = self.tcp_held_by_systemd.then(|| HELD_BY_SYSTEMD.to_owned());
        tcp.into_iter().chain(control).chain(held).collect::<Vec<_>>().join(",")
    }

    fn fds(&self) -> impl Iterator<Item = RawFd> {
        self.tcp.into_iter().chain(self.control)
    }
}

/// The new process, prepared to take over.
#[derive(Debug, Clone, Copy)]
pub struct Successor {
    pub pid: u32,
    /// It said it adopts the keepers left running (a version with adoption): they may be.
    pub adopts: bool,
}

/// The new process, until it said it is prepared: dropped, it is killed (it has not touched
/// `data_dir`: it waits for the lock after `prepared`).
struct KillUnlessPrepared(u32);

impl Drop for KillUnlessPrepared {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our child, reaped only by the
        // reaper thread, which hands its status to the watcher.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// Why no new process took over; this one keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("could not start {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the new heartbeatd ({exe}, pid {pid}) {how} before it was prepared to take over; its own error is in the log just above")]
    ExitedEarly { exe: PathBuf, pid: u32, how: String },
    #[error("the new heartbeatd ({exe}, pid {pid}) was not prepared within {} s and was killed", PREPARE_TIMEOUT.as_secs())]
    NotPrepared { exe: PathBuf, pid: u32 },
    #[error("could not make the pipe to the new heartbeatd: {0}")]
    Pipe(#[source] io::Error),
}

/// Starts the new process and waits until it is prepared.
pub async fn start(launch: &Launch, sockets: HandedSockets) -> Result<Successor, UpgradeError> {
    let (read_end, write_end) = pipe().map_err(UpgradeError::Pipe)?;
    // SAFETY: the read end is ours; owned from here so that every way out closes it.
    let read_end = unsafe { File::from_raw_fd(read_end) };
    let inherit: Vec<RawFd> = sockets.fds().chain([write_end]).collect();
    let mut command = Command::new(&launch.exe);
    command
        .args(&launch.args)
        .env(UPGRADE_VARIABLE, sockets.variable())
        .env(FROM_VARIABLE, format!("{}:{write_end}", std::process::id()))
        // The watchdog is for the main pid, which the new process becomes.
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null());
    // SAFETY: only fcntl between fork and exec (async-signal-safe); it clears close-on-exec on
    // the descriptors the new process must inherit.
    unsafe {
        command.pre_exec(move || {
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    reaper::start();
    let spawned = reaper::spawn_watched(|| command.spawn());
    // SAFETY: the write end is ours; the child has its own copy (or was never started).
    drop(unsafe { File::from_raw_fd(write_end) });
    let (child, exited) = spawned.map_err(|source| UpgradeError::Spawn {
        exe: launch.exe.clone(),
        source,
    })?;
    let pid = child.id();
    drop(child);
    // Killed if this future is dropped before the new process is prepared (a stop signal
    // came meanwhile): it must not take over a heartbeatd that was told to stop.
    let unprepared = KillUnlessPrepared(pid);

    let said = actix_rt::time::timeout(PREPARE_TIMEOUT, read_all(read_end)).await;
    // Decided: from here each outcome deals with the process itself (it may be reaped already,
    // and its pid reused).
    std::mem::forget(unprepared);
    match said {
        Ok(Ok(said)) if said.starts_with(PREPARED) => Ok(Successor {
            pid,
            adopts: said[PREPARED.len()..] == *ADOPTS,
        }),
        Ok(_) => {
            let how = actix_rt::task::spawn_blocking(move || exited.recv_timeout(EXIT_STATUS_WAIT))
                .await
                .ok()
                .and_then(Result::ok)
                .map_or_else(|| "closed its pipe".to_owned(), describe_wait_status);
            Err(UpgradeError::ExitedEarly {
                exe: launch.exe.clone(),
                pid,
                how,
            })
        }
        Err(_elapsed) => {
            // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            Err(UpgradeError::NotPrepared {
                exe: launch.exe.clone(),
                pid,
            })
        }
    }
}

/// Reads the pipe until the new process has written `prepared` (and `adopts`) or closed it
/// (at most two lines).
async fn read_all(pipe: File) -> io::Result<Vec<u8>> {
    actix_rt::task::spawn_blocking(move || {
        let mut said = Vec::new();
        pipe.take((PREPARED.len() + ADOPTS.len()) as u64)
            .read_to_end(&mut said)?;
        Ok(said)
    })
    .await
    .map_err(io::Error::other)?
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

/// "exited with status 2", "was killed by signal 9".
fn describe_wait_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended (wait status {status})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_are_described_as_an_operator_reads_them() {
        assert_eq!(describe_wait_status(2 << 8), "exited with status 2");
        assert_eq!(describe_wait_status(9), "was killed by signal 9");
    }

    #[test]
    fn the_sockets_variable_names_each_role() {
        let both = HandedSockets {
            tcp: Some(5),
            control: Some(6),
            tcp_held_by_systemd: true,
        };
        assert_eq!(both.variable(), "tcp=5,control=6,tcp_owner=systemd");
        let control = HandedSockets {
            tcp: None,
            control: Some(7),
            tcp_held_by_systemd: false,
        };
        assert_eq!(control.variable(), "control=7");
    }
}
