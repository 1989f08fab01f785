//! The lock that keeps two heartbeatd processes off one `data_dir`: `heartbeatd.lock`, held
//! with `flock(LOCK_EX)` for as long as the process runs.
//!
//! Two daemons on one `data_dir` would each replay the journal, append to the same segments,
//! rewrite the same state files and start every supervised agent twice. The second one
//! therefore refuses to start, naming the first one's pid.
//!
//! Why `flock` and not a pid file alone: the kernel drops the lock when its holder dies, however
//! it dies (kill -9, OOM), so a crash never leaves a stale lock to clean up by hand, and no pid
//! is ever guessed alive after reuse. The pid written into the file is only for the message.
//! The descriptor is close-on-exec, so neither a keeper nor a new binary started for an
//! upgrade inherits it: during an upgrade the new process waits ([`DataDirLock::acquire_waiting`])
//! until the old one has drained and exited.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file's name in `data_dir`.
pub const LOCK_FILE: &str = "heartbeatd.lock";
/// How often a waiting process tries the lock again.
const RETRY_EVERY: Duration = Duration::from_millis(5);
/// The most read back from the lock file for the holder's pid (a number and a newline).
const MAX_PID_TEXT: u64 = 32;

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another heartbeatd{} is running on data_dir {}. Stop it first, or give this one another data_dir / --data-dir", holder_text(*.holder), .data_dir.display())]
    Held { data_dir: PathBuf, holder: Option<u32> },
    #[error("could not lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn holder_text(holder: Option<u32>) -> String {
    holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
}

/// `data_dir` held by this process until it is dropped (or the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    /// Holds the lock: closing it releases it.
    _file: File,
}

impl DataDirLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self, LockError> {
        let (mut file, path) = open(data_dir)?;
        match try_lock(&file) {
            Ok(true) => Self::record_holder(file, &path),
            Ok(false) => Err(LockError::Held {
                data_dir: data_dir.to_owned(),
                holder: holder(&mut file),
            }),
            Err(source) => Err(LockError::Io { path, source }),
        }
    }

    /// Takes the lock, waiting until `deadline` for its holder to let go (the old process of an
    /// upgrade, draining); [`LockError::Held`] past it.
    pub async fn acquire_waiting(data_dir: &Path, deadline: Instant) -> Result<Self, LockError> {
        let (mut file, path) = open(data_dir)?;
        loop {
            match try_lock(&file) {
                Ok(true) => return Self::record_holder(file, &path),
                Ok(false) if Instant::now() < deadline => actix_rt::time::sleep(RETRY_EVERY).await,
                Ok(false) => {
                    return Err(LockError::Held {
                        data_dir: data_dir.to_owned(),
                        holder: holder(&mut file),
                    })
                }
                Err(source) => return Err(LockError::Io { path, source }),
            }
        }
    }

    /// Writes this process's pid into the lock file, for the message a second start prints.
    fn record_holder(mut file: File, path: &Path) -> Result<Self, LockError> {
        let io_error = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        file.set_len(0).map_err(io_error)?;
        file.rewind().map_err(io_error)?;
        writeln!(file, "{}", std::process::id()).map_err(io_error)?;
        Ok(Self { _file: file })
    }
}

/// Opens (creating, 0600) the lock file through [`super`]'s checks: a link or a file of
/// another user planted there is refused.
fn open(data_dir: &Path) -> Result<(File, PathBuf), LockError> {
    let path = data_dir.join(LOCK_FILE);
    let file = super::open_read_write(&path).map_err(|source| LockError::Io {
        path: path.clone(),
        source,
    })?;
    Ok((file, path))
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file description holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor this File owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// The holder's pid as it wrote it, if the file holds one.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(MAX_PID_TEXT).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).expect("the first takes it");
        match DataDirLock::acquire(dir.path()) {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let _second = DataDirLock::acquire(dir.path()).expect("free again once dropped");
    }

    #[test]
    fn a_waiting_taker_gets_it_when_the_holder_lets_go_and_gives_up_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let system = actix_rt::System::new();
        let refused = system.block_on(DataDirLock::acquire_waiting(
            dir.path(),
            Instant::now() + Duration::from_millis(30),
        ));
        assert!(matches!(refused, Err(LockError::Held { .. })));

        let path = dir.path().to_owned();
        let taken = system.block_on(async move {
            actix_rt::spawn(async move {
                actix_rt::time::sleep(Duration::from_millis(20)).await;
                drop(first);
            });
            DataDirLock::acquire_waiting(&path, Instant::now() + Duration::from_secs(600)).await
        });
        assert!(taken.is_ok());
    }

    #[test]
    fn a_link_planted_as_the_lock_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(LOCK_FILE)).unwrap();
        assert!(matches!(DataDirLock::acquire(dir.path()), Err(LockError::Io { .. })));
        assert_eq!(
            std::fs::read(&elsewhere).unwrap(),
            b"",
            "never written through the link"
        );
    }
}
