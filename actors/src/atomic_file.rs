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
//! [`is_temp_file`] and removed at start-up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// The part of a temp file's name that marks it as one.
const TEMP_MARKER: &str = ".tmp-";

/// True for a file name that [`write_atomically`] created and did not finish.
pub fn is_temp_file(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.contains(TEMP_MARKER)
}

/// Replaces `dir/file_name` with `contents`, durably and atomically.
pub fn write_atomically(dir: &Path, file_name: &str, contents: &[u8]) -> io::Result<()> {
    let temp_path = dir.join(format!(
        ".{file_name}{TEMP_MARKER}{}",
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)?;
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

/// Makes renames and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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
    fn recognises_its_temp_files_only() {
        assert!(is_temp_file(".a.json.tmp-0123abcd"));
        assert!(!is_temp_file("a.json"));
        assert!(!is_temp_file("a.json.corrupt-20261124T060000Z"));
    }
}
