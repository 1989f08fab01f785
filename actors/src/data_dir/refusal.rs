//! Why heartbeatd refuses a file or directory under `data_dir`, and what the operator should
//! do about it: the rules of [`super`] in one place, each with its message.

use std::ffi::CStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{me, WRITABLE_BY_OTHERS};

/// A file or directory heartbeatd will not use, why, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}. To fix: {what_to_do}", path.display())]
pub struct Refusal {
    pub path: PathBuf,
    /// What is wrong, e.g. "is a symbolic link (to /etc/passwd)".
    pub problem: String,
    /// The commands or steps that fix it.
    pub what_to_do: String,
}

/// What heartbeatd expects at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expected {
    File,
    Dir,
    /// An entry of a subdirectory: a file (or a directory left by an operator).
    FileOrDir,
}

impl Refusal {
    fn new(path: &Path, problem: String, what_to_do: String) -> Self {
        Self {
            path: path.to_owned(),
            problem,
            what_to_do,
        }
    }

    /// As the error of a file operation (`PermissionDenied`, carrying this refusal).
    pub fn into_io_error(self) -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, self)
    }

    /// The refusal an I/O error carries, if it is one.
    pub fn of_io_error(e: &io::Error) -> Option<&Self> {
        e.get_ref()?.downcast_ref()
    }

    /// `path` is a link (what an open with `O_NOFOLLOW` failing with ELOOP means).
    pub(super) fn if_link(path: &Path) -> Option<Self> {
        let meta = fs::symlink_metadata(path).ok()?;
        meta.file_type().is_symlink().then(|| Self::link(path))
    }

    fn link(path: &Path) -> Self {
        let target = fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
        Self::new(
            path,
            format!("is a symbolic link (to {target}); heartbeatd never follows links inside data_dir"),
            format!(
                "remove it (rm {}): whoever could create it could write in data_dir, so check who owns data_dir and what else they changed",
                path.display()
            ),
        )
    }

    /// The rules for an opened file: a regular file, heartbeatd's user's, not writable by
    /// others.
    pub(super) fn of_file(path: &Path, meta: &Metadata) -> Option<Self> {
        Self::of(path, meta, Expected::File)
    }

    /// The rules for a directory inside `data_dir` (`meta` from `lstat`: a link is refused).
    pub(super) fn of_dir(path: &Path, meta: &Metadata) -> Option<Self> {
        Self::of(path, meta, Expected::Dir)
    }

    pub(super) fn of(path: &Path, meta: &Metadata, expected: Expected) -> Option<Self> {
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Some(Self::link(path));
        }
        let fits = match expected {
            Expected::File => kind.is_file(),
            Expected::Dir => kind.is_dir(),
            Expected::FileOrDir => kind.is_file() || kind.is_dir(),
        };
        if !fits {
            let wanted = if expected == Expected::Dir {
                "a directory"
            } else {
                "a regular file"
            };
            return Some(Self::new(
                path,
                format!("is {} where heartbeatd expects {wanted}", kind_name(meta)),
                format!("move it out of data_dir (mv {} /somewhere/else)", path.display()),
            ));
        }
        if meta.uid() != me() {
            let chown = if kind.is_dir() { "chown -R" } else { "chown" };
            return Some(Self::new(
                path,
                format!(
                    "is owned by {}, not by heartbeatd's user ({}): its owner could change what heartbeatd reads from it",
                    user(meta.uid()),
                    user(me())
                ),
                format!(
                    "if it is heartbeatd's, {chown} {} {}; if you do not know where it came from, inspect it and move it out of data_dir",
                    chown_name(),
                    path.display()
                ),
            ));
        }
        if meta.mode() & WRITABLE_BY_OTHERS != 0 {
            return Some(Self::writable(path, meta));
        }
        if kind.is_file() && meta.nlink() > 1 {
            // Another name for the same file, made while data_dir was someone else's, could be
            // one of heartbeatd's user's own files elsewhere (for root: /etc/shadow, say):
            // appending would write there, and tightening would change its mode.
            return Some(Self::new(
                path,
                format!(
                    "has {} hard links: the same file has another name, which heartbeatd would write to as well",
                    meta.nlink()
                ),
                format!(
                    "find the other names (find / -xdev -samefile {}); if this is a copy made with cp -l or similar, replace it with a full copy (cp --remove-destination), otherwise remove it",
                    path.display()
                ),
            ));
        }
        None
    }

    fn writable(path: &Path, meta: &Metadata) -> Self {
        Self::new(
            path,
            format!(
                "is writable by its group or by anyone (mode {:04o}): someone else could have changed it",
                meta.mode() & 0o7777
            ),
            format!(
                "chmod go-w {} (heartbeatd makes its files 0600 and its directories 0700), after checking its content",
                path.display()
            ),
        )
    }

    /// The rules for `data_dir` itself (`meta` of its real directory, known to be one): like
    /// any directory's, with the advice for a directory someone else made.
    pub(super) fn of_data_dir(path: &Path, meta: &Metadata) -> Option<Self> {
        if meta.uid() != me() {
            return Some(Self::new(
                path,
                format!(
                    "is owned by {}, not by heartbeatd's user ({}): its owner could plant files that heartbeatd trusts (registry.log lines run commands as heartbeatd's user)",
                    user(meta.uid()),
                    user(me())
                ),
                format!(
                    "if you made it for heartbeatd, chown -R {} {} && chmod 700 {}; if you did not, its content cannot be trusted: move it aside (mv {} {}.untrusted) and let heartbeatd create a new one",
                    chown_name(),
                    path.display(),
                    path.display(),
                    path.display(),
                    path.display()
                ),
            ));
        }
        if meta.mode() & WRITABLE_BY_OTHERS != 0 {
            return Some(Self::new(
                path,
                format!(
                    "is writable by its group or by anyone (mode {:04o}): others could plant files that heartbeatd trusts",
                    meta.mode() & 0o7777
                ),
                format!(
                    "chmod 700 {}, after checking that every file in it is heartbeatd's",
                    path.display()
                ),
            ));
        }
        None
    }

    /// The rules for a directory above `data_dir`: its owner (root or heartbeatd's user), and
    /// no one else may rename entries in it (not writable by others, or sticky like /tmp),
    /// else they could move `data_dir` away and put their own in its place.
    pub(super) fn of_parent(path: &Path, meta: &Metadata, data_dir: &Path) -> Option<Self> {
        let owner_ok = meta.uid() == 0 || meta.uid() == me();
        let sticky = meta.mode() & libc::S_ISVTX != 0;
        if owner_ok && (meta.mode() & WRITABLE_BY_OTHERS == 0 || sticky) {
            return None;
        }
        let problem = if owner_ok {
            format!(
                "a directory above data_dir {}, is writable by others without the sticky bit (mode {:04o})",
                data_dir.display(),
                meta.mode() & 0o7777
            )
        } else {
            format!(
                "a directory above data_dir {}, is owned by {}",
                data_dir.display(),
                user(meta.uid())
            )
        };
        Some(Self::new(
            path,
            format!("{problem}: whoever can write it could replace data_dir with a directory of their own"),
            format!(
                "put data_dir where every directory above it is root's or heartbeatd's user's and writable by no one else (e.g. /var/lib/heartbeatd), or fix this one: chown root {} && chmod go-w {}",
                path.display(),
                path.display()
            ),
        ))
    }
}

fn kind_name(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}

/// `uid 0 (root)`, or `uid 1234` for a user with no name.
fn user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// heartbeatd's user as `chown` takes it: its name, or its number.
fn chown_name() -> String {
    user_name(me()).unwrap_or_else(|| me().to_string())
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: zeroed passwd is a valid out-parameter for getpwuid_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the use of pwd's strings.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points to a NUL-terminated string in buf.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}
