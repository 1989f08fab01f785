//! How the keeper opens an agent's output file: the rules heartbeatd applies to every file
//! under `data_dir` (heartbeatd-actors' `data_dir` module, which also says why), kept here
//! for the keeper, which links none of heartbeatd.
//!
//! - never through a symbolic link (`O_NOFOLLOW`; `O_NONBLOCK` so a planted FIFO cannot block
//!   the open);
//! - created private: files 0600, directories 0700;
//! - what was opened is checked with `fstat`: a regular file (a directory for a directory),
//!   the keeper's user's, writable by no one else, and with no other name (hard link).
//!
//! A refusal is an error (`PermissionDenied`) saying what is wrong; heartbeatd, which
//! creates the file before it starts the keeper, has logged it with what to do.

use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The mode of a file the keeper creates.
pub const FILE_MODE: u32 = 0o600;
/// The mode of a directory the keeper creates.
pub const DIR_MODE: u32 = 0o700;
/// Permission bits that let the group or others write.
const WRITABLE_BY_OTHERS: u32 = 0o022;
const OPEN_FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// Opens an existing file for reading.
pub fn open_read(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().read(true))
}

/// Opens a file for appending, creating it (0600) if missing.
pub fn open_append(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().append(true).create(true))
}

/// Creates a directory (and any missing parent) 0700, and checks that it is a real directory
/// of the keeper's user that no one else can write.
pub fn create_dir_private(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)?;
    let meta = fs::symlink_metadata(path)?;
    match problem(&meta, true) {
        Some(problem) => Err(refused(path, &problem)),
        None => Ok(()),
    }
}

fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = options
        .mode(FILE_MODE)
        .custom_flags(OPEN_FLAGS)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused(path, "is a symbolic link; links inside data_dir are never followed"),
            _ => e,
        })?;
    match problem(&file.metadata()?, false) {
        Some(problem) => Err(refused(path, &problem)),
        None => Ok(file),
    }
}

/// What is wrong with a file (`dir` false) or directory (`dir` true), if anything.
fn problem(meta: &Metadata, dir: bool) -> Option<String> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Some("is a symbolic link; links inside data_dir are never followed".into());
    }
    if (dir && !kind.is_dir()) || (!dir && !kind.is_file()) {
        let wanted = if dir { "a directory" } else { "a regular file" };
        return Some(format!("is not {wanted}"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Some(format!(
            "is owned by uid {}, not by heartbeatd's user (uid {me})",
            meta.uid()
        ));
    }
    if meta.mode() & WRITABLE_BY_OTHERS != 0 {
        return Some(format!("is writable by others (mode {:o})", meta.mode() & 0o7777));
    }
    if !dir && meta.nlink() > 1 {
        return Some(format!(
            "has {} hard links: the same file has another name",
            meta.nlink()
        ));
    }
    None
}

fn refused(path: &Path, problem: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{}: {problem} (refused)", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn links_hard_links_and_files_others_can_write_are_refused_new_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        create_dir_private(&logs).unwrap();
        assert_eq!(fs::metadata(&logs).unwrap().mode() & 0o777, DIR_MODE);
        let file = logs.join("a.log");
        drop(open_append(&file).unwrap());
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, FILE_MODE);

        let target = dir.path().join("elsewhere");
        fs::write(&target, "secret").unwrap();
        let link = logs.join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_append(&link).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");

        let hard = logs.join("hard.log");
        fs::hard_link(&file, &hard).unwrap();
        assert!(open_append(&hard).unwrap_err().to_string().contains("hard links"));
        fs::remove_file(&hard).unwrap();

        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(open_read(&file).unwrap_err().to_string().contains("writable by others"));

        fs::create_dir(logs.join("d.log")).unwrap();
        assert!(open_read(&logs.join("d.log"))
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        let dir_link = dir.path().join("logs2");
        std::os::unix::fs::symlink(&logs, &dir_link).unwrap();
        assert!(create_dir_private(&dir_link).is_err(), "a link as a directory");
    }
}
