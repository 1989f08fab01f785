//! The new process's side of an upgrade: the old heartbeatd that started it, and the pipe on
//! which it is told `prepared` (see [`super`]).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;

use super::{ADOPTS, FROM_VARIABLE, PREPARED};

/// The heartbeatd this one replaces.
#[derive(Debug)]
pub struct Predecessor {
    /// Its pid, for the log.
    pub pid: u32,
    /// The write end of the pipe it reads.
    pipe: File,
}

/// `HEARTBEATD_UPGRADE_FROM` is not what an upgrading heartbeatd sets (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{FROM_VARIABLE}={value:?} is not what heartbeatd sets for an upgrade (PID:FD, FD a pipe): {reason}. Unset it")]
pub struct MalformedUpgrade {
    value: String,
    reason: &'static str,
}

impl Predecessor {
    /// Reads and removes the variable. Call it before any other thread starts (it edits the
    /// environment).
    pub fn take_from_env() -> Result<Option<Self>, MalformedUpgrade> {
        let Some(value) = std::env::var(FROM_VARIABLE).ok() else {
            return Ok(None);
        };
        std::env::remove_var(FROM_VARIABLE);
        let malformed = |reason| MalformedUpgrade {
            value: value.clone(),
            reason,
        };
        let (pid, fd) = value.split_once(':').ok_or_else(|| malformed("no ':'"))?;
        let pid: u32 = pid.parse().map_err(|_| malformed("the pid is not a number"))?;
        let fd: RawFd = fd.parse().map_err(|_| malformed("the descriptor is not a number"))?;
        if fd < 3 {
            return Err(malformed("the descriptor is a standard stream"));
        }
        // SAFETY: fstat into a local struct; fcntl with no memory argument.
        let is_pipe = unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            libc::fstat(fd, &mut stat) == 0 && (stat.st_mode & libc::S_IFMT) == libc::S_IFIFO
        };
        if !is_pipe {
            return Err(malformed("the descriptor is not a pipe"));
        }
        // SAFETY: as above; the descriptor is ours from here on.
        let pipe = unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            File::from_raw_fd(fd)
        };
        debug_assert!(pipe.metadata().is_ok_and(|m| m.file_type().is_fifo()));
        Ok(Some(Self { pid, pipe }))
    }

    /// Tells the old process that this one is prepared (it may stop accepting and drain), and
    /// that it adopts the keepers left running.
    pub fn report_prepared(mut self) -> io::Result<()> {
        self.pipe.write_all(&[PREPARED, ADOPTS].concat())
    }
}
