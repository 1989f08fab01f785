//! The control socket: a Unix socket (default `<data_dir>/heartbeatd.sock`, mode 0600) on
//! which the whole API is served without a token, as supervisord's `supervisor.sock` or
//! docker's `docker.sock`: only heartbeatd's own user (and root) can connect, so the file's
//! mode is the authority. `heartbeatd ctl` uses it when it can.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest path a Unix socket can have (`sun_path`, less its NUL).
pub const MAX_PATH: usize = 107;

/// Why the control socket could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ControlSocketError {
    #[error("control socket {path}: the path is {len} bytes, more than the {MAX_PATH} a Unix socket can have. Set control_socket to a shorter path (or \"\" for none)")]
    TooLong { path: PathBuf, len: usize },
    #[error("control socket {path}: another heartbeatd is serving it. Stop that one first, or give this one another data_dir / control_socket")]
    InUse { path: PathBuf },
    #[error(
        "control socket {path}: something that is not a socket is there. Remove it, or set control_socket elsewhere"
    )]
    NotASocket { path: PathBuf },
    /// The socket's directory is not heartbeatd's own: another user could replace the socket
    /// with theirs, and `heartbeatd ctl` would talk to it.
    #[error("control socket {path}: its directory {dir} {reason}. Put the socket in a directory only heartbeatd's user (or root) owns and can write (the default, data_dir, is one), or set control_socket = \"\" for none")]
    UnsafeDir {
        path: PathBuf,
        dir: PathBuf,
        reason: String,
    },
    #[error("control socket {path}: {source}. Check that its directory exists and is heartbeatd's own")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds the control socket at `path`, mode 0600. A socket left there by a heartbeatd that
/// did not stop cleanly (nobody answers on it) is replaced; a live one, or anything that is
/// not a socket, is refused.
pub fn bind(path: &Path) -> Result<UnixListener, ControlSocketError> {
    let io_error = |source| ControlSocketError::Io {
        path: path.to_owned(),
        source,
    };
    let len = path.as_os_str().len();
    if len > MAX_PATH {
        return Err(ControlSocketError::TooLong {
            path: path.to_owned(),
            len,
        });
    }
    check_dir(path)?;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(ControlSocketError::InUse { path: path.to_owned() });
            }
            fs::remove_file(path).map_err(io_error)?;
        }
        Ok(_) => return Err(ControlSocketError::NotASocket { path: path.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_error)?;
    // The socket is made with the umask's mode; the directory (data_dir, 0700) keeps others
    // out until this narrows it.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_error)?;
    Ok(listener)
}

/// The socket's directory must be as private as `data_dir`: owned by heartbeatd's user (or
/// root), and writable by no one else (a sticky `/tmp` is not enough: another user can bind
/// the name first, or bind theirs once a stale one is gone).
fn check_dir(path: &Path) -> Result<(), ControlSocketError> {
    use std::os::unix::fs::MetadataExt;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let meta = fs::metadata(dir).map_err(|source| ControlSocketError::Io {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let refuse = |reason: String| ControlSocketError::UnsafeDir {
        path: path.to_owned(),
        dir: dir.to_owned(),
        reason,
    };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(refuse(format!(
            "is owned by uid {}, not by heartbeatd's user ({me}) or root",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "can be written by its group or others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Removes the socket at a graceful stop, if it is still ours.
pub fn remove(path: &Path) {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_and_a_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heartbeatd.sock");

        let live = bind(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(bind(&path), Err(ControlSocketError::InUse { .. })));

        drop(live); // the file stays, as after kill -9
        assert!(path.exists());
        let _again = bind(&path).expect("a stale socket is replaced");

        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(bind(&file), Err(ControlSocketError::NotASocket { .. })));
        assert_eq!(fs::read(&file).unwrap(), b"x", "never removed");

        let long = dir.path().join("x".repeat(120));
        assert!(matches!(bind(&long), Err(ControlSocketError::TooLong { .. })));
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        for mode in [0o777, 0o1777, 0o770] {
            fs::set_permissions(&open, fs::Permissions::from_mode(mode)).unwrap();
            let refused = bind(&open.join("h.sock"));
            assert!(
                matches!(refused, Err(ControlSocketError::UnsafeDir { .. })),
                "{mode:o}: {refused:?}"
            );
        }
        fs::set_permissions(&open, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(bind(&open.join("h.sock")).is_ok());
    }
}
