//! Crash-safe file replacement: after a crash, a reader sees the old content or the new,
//! never a mix and never an empty file.
//!
//! The steps, and why each is there:
//! 1. write a temp file in the same directory (rename is only atomic within one filesystem);
//! 2. fsync the temp file (else the rename can reach disk before the data does);
//! 3. rename it over the target (atomic on POSIX);
//! 4. fsync the directory (else the rename itself can be lost in a crash).
//!
//! A failed step removes the temp file. Temp files left by a crash are recognised by
//! [`is_temp_file`] and removed at start-up. Temp files are created 0600 with `O_EXCL` and
//! `O_NOFOLLOW` ([`data_dir::create_new`]); a rename replaces a link at the target itself,
//! never what it points to.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::data_dir;

/// The part of a temp file's name that marks it as one.
const TEMP_MARKER: &str = ".tmp-";

/// True for a file name that [`write_atomically`] created and did not finish.
pub fn is_temp_file(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.contains(TEMP_MARKER)
}

/// Replaces `dir/file_name` with `contents`, durably and atomically.
pub fn write_atomically(dir: &Path, file_name: &str, contents: &[u8]) -> io::Result<()> {
    let temp_path = dir.join(format!(".{file_name}{TEMP_MARKER}{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = data_dir::create_new(&temp_path)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp_path, dir.join(file_name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        // Best effort: the temp file may not exist, and a leftover one is removed at start-up.
        let _ = fs::remove_file(&temp_path);
    }
    result
}

/// A file written to its temp name and not yet renamed: the batched form of
/// [`write_atomically`]. Stage many, make them durable together (`fdatasync` each, or [`sync_filesystem`]), then
/// [`StagedFile::commit`] each and [`sync_dir`] once. Dropped uncommitted, it removes its temp.
#[derive(Debug)]
pub struct StagedFile {
    temp: PathBuf,
    target: PathBuf,
    file: Option<File>,
}

impl StagedFile {
    /// Writes `contents` to a temp file beside `dir/file_name`; not yet synced.
    pub fn stage(dir: &Path, file_name: &str, contents: &[u8]) -> io::Result<Self> {
        let temp = dir.join(format!(".{file_name}{TEMP_MARKER}{}", uuid::Uuid::new_v4().simple()));
        let mut staged = Self {
            file: None,
            target: dir.join(file_name),
            temp,
        };
        let mut file = data_dir::create_new(&staged.temp)?;
        file.write_all(contents)?;
        staged.file = Some(file);
        Ok(staged)
    }

    /// The open temp file; `None` after [`StagedFile::close`].
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Closes the temp file, keeping it staged: for batches made durable by [`sync_filesystem`],
    /// which need no descriptor per file (and may be larger than the descriptor limit).
    pub fn close(&mut self) {
        self.file = None;
    }

    /// Renames the temp file over the target. Call only once its data is synced.
    pub fn commit(mut self) -> io::Result<()> {
        self.file = None;
        fs::rename(&self.temp, &self.target)?;
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Batches of up to this many files are synced one by one (`fdatasync`); larger ones with one
/// [`sync_filesystem`] call, however many files they hold.
pub const SYNC_ONE_BY_ONE_MAX: usize = 8;

/// Makes the data of every file on the filesystem holding `dir` durable: `syncfs(2)`.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let dir = data_dir::open_dir(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes renames and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    data_dir::open_dir(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "a.json", b"first").unwrap();
        write_atomically(dir.path(), "a.json", b"second").unwrap();
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "a.json", b"old").unwrap();
        // A directory in the way makes the rename fail after the temp file was written.
        fs::create_dir(dir.path().join("b.json")).unwrap();
        fs::write(dir.path().join("b.json").join("x"), b"").unwrap();
        assert!(write_atomically(dir.path(), "b.json", b"new").is_err());
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"old");
        let temps = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| is_temp_file(&e.as_ref().unwrap().file_name().to_string_lossy()))
            .count();
        assert_eq!(temps, 0);
    }

    #[test]
    fn staged_files_appear_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<_> = (0..20)
            .map(|i| {
                let mut staged = StagedFile::stage(dir.path(), &format!("f{i}.json"), b"x").unwrap();
                staged.close();
                staged
            })
            .collect();
        sync_filesystem(dir.path()).unwrap();
        assert!(!dir.path().join("f0.json").exists());
        let mut files = files.into_iter();
        files.next().unwrap().commit().unwrap();
        drop(files); // 19 never committed: their temps go away
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["f0.json"]);
    }

    #[test]
    fn recognises_its_temp_files_only() {
        assert!(is_temp_file(".a.json.tmp-0123abcd"));
        assert!(!is_temp_file("a.json"));
        assert!(!is_temp_file("a.json.corrupt-20261124T060000Z"));
    }
}
