//! How every file and directory under `data_dir` is opened and created: never through a
//! symbolic link, created private (files 0600, directories 0700), and refused when someone
//! other than heartbeatd's user could have written it. Every store, the registry, the alerter,
//! the keeper's output file and the log-reading endpoint go through these functions, so the
//! rules hold everywhere at once.
//!
//! Why: what heartbeatd reads from `data_dir` is trusted. `registry.log` lines carry an agent's
//! `command` (run as heartbeatd's user, often root) and its `env` (often secrets); a link
//! planted as `logs/<id>.log` would make an agent's output append to any file, and
//! `GET /agents/{id}/log` read any file. PostgreSQL refuses a data directory that is not its
//! own for the same reasons.
//!
//! The defences, in order:
//! 1. [`check`] at start-up: `data_dir`, the directories above it, its subdirectories and its
//!    files must be heartbeatd's user's and writable by no one else, and hold no link where
//!    heartbeatd expects a file or directory; otherwise heartbeatd does not start. Modes left
//!    by older versions (0755, 0644) are tightened. Once `data_dir` is heartbeatd's and 0700,
//!    no one else can plant anything in it later: this is the main defence.
//! 2. Every open here uses `O_NOFOLLOW` (a link is refused, never followed) and checks the
//!    opened file with `fstat`: a regular file, heartbeatd's user's, not writable by others,
//!    with no other name (hard link). A refusal at run time is logged (ERROR, with `what_to_do`) through the logger given to
//!    [`report_refusals_to`].
//!
//! Not covered: `O_NOFOLLOW` applies to the last component only; a subdirectory replaced by a
//! link while heartbeatd runs would be followed. Nobody but heartbeatd's user (or root) can do
//! that once [`check`] has passed, since `data_dir` is then theirs and 0700.

mod check;
pub mod lock;
mod refusal;

use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use slog::{error, Logger};

use crate::log_gate::LogGate;
pub use check::{audit_entry, check, check_all, Audit, CheckError, Tightened};
pub use refusal::Refusal;

/// The mode of every file heartbeatd creates: its own user reads and writes, no one else.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every directory heartbeatd creates.
pub const DIR_MODE: u32 = 0o700;
/// Permission bits that let the group or others write: a file or directory with any of them
/// is refused (someone else could have changed it).
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// Permission bits for the group and others: removed at start-up ([`check`]).
const OPEN_TO_OTHERS: u32 = 0o077;

/// `O_NOFOLLOW`: a link as the last component is refused (ELOOP), never followed.
/// `O_NONBLOCK`: a FIFO planted where a file is expected cannot block the open (the `fstat`
/// after it then refuses it); it changes nothing for regular files.
const OPEN_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// Where run-time refusals are logged (set once at start-up; unset in the keeper, which says
/// what it could not open on heartbeatd's stderr, and in unit tests).
static REFUSAL_LOG: OnceLock<Logger> = OnceLock::new();
/// Refusals are logged at most once per 10 s, with the number not logged: a planted link
/// refused at every checkpoint of 100k agents must not flood the log.
static REFUSAL_GATE: Mutex<Option<LogGate>> = Mutex::new(None);
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Logs every later run-time refusal to `log` (once per process; later calls are ignored).
pub fn report_refusals_to(log: Logger) {
    let _ = REFUSAL_LOG.set(log);
}

/// Logs `refusal` (if a logger is set) and turns it into the error the caller returns.
fn refuse(refusal: Refusal) -> io::Error {
    if let Some(log) = REFUSAL_LOG.get() {
        let mut gate = REFUSAL_GATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let gate = gate.get_or_insert_with(|| LogGate::new(REFUSAL_LOG_INTERVAL));
        if let Some(suppressed) = gate.check(Instant::now()) {
            error!(log, "refused a file in data_dir: {}", refusal.problem;
                "path" => %refusal.path.display(), "not_logged_since_last" => suppressed,
                "what_to_do" => &refusal.what_to_do);
        }
    }
    refusal.into_io_error()
}

/// Opens `path` with `options` plus [`OPEN_FLAGS`] (created 0600), and checks what was opened.
fn open(path: &Path, options: &mut OpenOptions) -> io::Result<(File, Metadata)> {
    let file = options
        .mode(FILE_MODE)
        .custom_flags(OPEN_FLAGS)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => match Refusal::if_link(path) {
                Some(refusal) => refuse(refusal),
                None => e,
            },
            _ => e,
        })?;
    let meta = file.metadata()?;
    if let Some(refusal) = Refusal::of_file(path, &meta) {
        return Err(refuse(refusal));
    }
    Ok((file, meta))
}

/// Opens an existing file for reading.
pub fn open_read(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().read(true)).map(|(file, _)| file)
}

/// Opens a file for appending, creating it (0600) if missing.
pub fn open_append(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().append(true).create(true)).map(|(file, _)| file)
}

/// Opens a file for reading and appending, creating it (0600) if missing.
pub fn open_read_append(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().read(true).append(true).create(true)).map(|(file, _)| file)
}

/// Opens a file for reading and writing, creating it (0600) if missing; nothing is truncated.
pub fn open_read_write(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().read(true).write(true).create(true)).map(|(file, _)| file)
}

/// Creates a new file (0600) for writing; fails if anything, a link included, has the name.
pub fn create_new(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().write(true).create_new(true)).map(|(file, _)| file)
}

/// Reads a whole file ([`open_read`]).
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let (file, meta) = open(path, OpenOptions::new().read(true))?;
    read_rest(&file, &meta)
}

/// Reads `file` to its end, its size known from the `fstat` that checked it. Through `Take`,
/// so that std's own size probe for a `File` (another `fstat` and an `lseek`, per file: 100k
/// state files at start-up) is skipped.
fn read_rest(file: &File, meta: &Metadata) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    // One byte more than the size, so the read that finds the end needs no reallocation.
    bytes
        .try_reserve_exact(meta.len() as usize + 1)
        .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
    file.take(u64::MAX).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads a whole file at start-up and tightens its mode to 0600 if the group or others could
/// read it (a file of an older version); `tightened` counts it. The `fstat` that checks the
/// file is the one done anyway, so loading 100k state files costs no extra system call.
pub fn read_at_load(path: &Path, tightened: &mut Tightened) -> io::Result<Vec<u8>> {
    let (file, meta) = open(path, OpenOptions::new().read(true))?;
    if meta.mode() & OPEN_TO_OTHERS != 0 {
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(private_mode(&meta)))?;
        tightened.files += 1;
    }
    read_rest(&file, &meta)
}

/// The mode `meta`'s file or directory is tightened to: its owner's bits only.
fn private_mode(meta: &Metadata) -> u32 {
    meta.mode() & 0o700
}

/// Creates a directory inside `data_dir` (and any missing parent) 0700, and checks that it is
/// a real directory of heartbeatd's user that no one else can write.
pub fn create_dir_private(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)?;
    let meta = fs::symlink_metadata(path)?;
    match Refusal::of_dir(path, &meta) {
        Some(refusal) => Err(refuse(refusal)),
        None => Ok(()),
    }
}

/// Creates `data_dir` itself (and any missing parent) 0700, and checks it like
/// [`create_dir_private`]; `data_dir` itself may be a link (systemd's `StateDirectory=` with
/// `DynamicUser=` makes one), checked with its target at start-up.
pub fn create_data_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)?;
    let meta = fs::metadata(path)?;
    match Refusal::of_dir(path, &meta) {
        Some(refusal) => Err(refuse(refusal)),
        None => Ok(()),
    }
}

/// Opens a directory to sync it. It follows a link: `data_dir` itself may be one, and an
/// fsync writes nothing of heartbeatd's into the directory.
pub fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path)
}

/// heartbeatd's effective user id: the owner every file under `data_dir` must have.
fn me() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests;
