//! A supervised agent's output file, `data_dir/logs/<id>.log`: stdout and stderr appended
//! line by line, rotated past a size (`<id>.log.1` … `<id>.log.<backups>`), every line kept
//! whole in one file.
//!
//! Written by the agent's keeper, never by heartbeatd's own threads. Output is not promised
//! durable (no fsync): it is the agent's diagnostics, not heartbeatd's records.
//!
//! Every open goes through [`crate::data_dir`] (the keeper's and the readers' alike): the files
//! are created 0600, the directory 0700, and a link at `logs/<id>.log` is refused, never
//! followed (it would send the agent's output into any file, or let a reader read any file).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::data_dir;

/// A line longer than this is written in pieces of this size, each ended with a newline, so a
/// program that never writes a newline cannot make the keeper buffer without bound.
pub const MAX_LINE: usize = 64 * 1024;

/// The output file of one agent.
pub struct OutputLog {
    path: PathBuf,
    file: File,
    /// Its size now.
    size: u64,
    /// Rotate before a line that would take it past this.
    max_bytes: u64,
    /// Rotated files kept.
    backups: u32,
    /// The start of a line not yet ended.
    partial: Vec<u8>,
    /// Output the file refused (disk full, say) since the last write that worked: up to this
    /// many bytes, and why. Said in the file once it takes writes again.
    lost: u64,
    lost_reason: String,
}

impl OutputLog {
    /// Opens (or creates) `path` for appending; its directory is created if needed.
    pub fn open(path: &Path, max_bytes: u64, backups: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            data_dir::create_dir_private(dir)?;
        }
        let file = data_dir::open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            max_bytes,
            backups,
            partial: Vec::new(),
            lost: 0,
            lost_reason: String::new(),
        })
    }

    /// The path of rotated file `n` (1 is the newest).
    pub fn backup_path(path: &Path, n: u32) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Takes a chunk of output: complete lines are written, the rest waits for its end.
    pub fn write(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        while !chunk.is_empty() {
            match chunk.iter().position(|b| *b == b'\n') {
                Some(end) if self.partial.len() + end < MAX_LINE => {
                    let line_end = end + 1;
                    if self.partial.is_empty() {
                        self.write_line(&chunk[..line_end])?;
                    } else {
                        let mut line = std::mem::take(&mut self.partial);
                        line.extend_from_slice(&chunk[..line_end]);
                        self.write_line(&line)?;
                    }
                    chunk = &chunk[line_end..];
                }
                _ => {
                    let room = MAX_LINE - self.partial.len();
                    let take = chunk.len().min(room);
                    self.partial.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.partial.len() >= MAX_LINE {
                        let mut line = std::mem::take(&mut self.partial);
                        line.push(b'\n');
                        self.write_line(&line)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes what is left of an unfinished line (the output ended), with a newline.
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            self.write_line(&line)?;
        }
        Ok(())
    }

    /// Takes a chunk of output and never fails: what the file refuses is counted, said once on
    /// the keeper's stderr (heartbeatd's), and noted in the file (`heartbeatd: up to N bytes
    /// of output lost: <why>`) when it takes writes again. The agent is never held up by its
    /// output.
    pub fn write_or_count(&mut self, chunk: &[u8]) {
        if self.lost > 0 {
            let note = format!("up to {} bytes of output lost: {}", self.lost, self.lost_reason);
            if self.note(&note).is_err() {
                self.lost += chunk.len() as u64;
                return;
            }
            self.lost = 0;
        }
        if let Err(e) = self.write(chunk) {
            if self.lost == 0 {
                eprintln!(
                    "heartbeatd keep: cannot write {}: {e}; the agent's output is dropped until it can (free space in data_dir)",
                    self.path.display()
                );
            }
            // What was not written is counted; a partial line waiting is dropped with it.
            self.lost += (chunk.len() + self.partial.len()) as u64;
            self.partial.clear();
            self.lost_reason = e.to_string();
        }
    }

    /// Writes a line of heartbeatd's own (a start failure, say), marked as such.
    pub fn note(&mut self, text: &str) -> io::Result<()> {
        self.finish()?;
        self.write_line(format!("heartbeatd: {text}\n").as_bytes())
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `<id>.log` becomes `<id>.log.1`, `.1` becomes `.2`, …; the oldest past `backups` goes.
    fn rotate(&mut self) -> io::Result<()> {
        if self.backups == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.backups).rev() {
            match fs::rename(Self::backup_path(&self.path, n), Self::backup_path(&self.path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, Self::backup_path(&self.path, 1))?;
        self.file = data_dir::open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The last `n` lines of an agent's output (from its current file, and the newest rotated one
/// when the current one holds fewer), reading at most `max_bytes` from the end of each file.
pub fn tail(path: &Path, n: usize, max_bytes: u64) -> io::Result<Vec<String>> {
    let mut lines = tail_of(path, n, max_bytes)?;
    if lines.len() < n {
        let older = match tail_of(&OutputLog::backup_path(path, 1), n - lines.len(), max_bytes) {
            Ok(older) => older,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        lines.splice(0..0, older);
    }
    Ok(lines)
}

fn tail_of(path: &Path, n: usize, max_bytes: u64) -> io::Result<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = data_dir::open_read(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max_bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.take(max_bytes).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // cut by the byte limit
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..].iter().map(|l| l.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn lines_are_kept_whole_across_chunks_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/a.log");
        let mut log = OutputLog::open(&path, 4096, 2).unwrap();
        // 100-byte lines delivered in awkward chunks: 50 lines = 5000 bytes, past 4096.
        let line = format!("{}\n", "x".repeat(99));
        let all = line.repeat(50);
        for chunk in all.as_bytes().chunks(37) {
            log.write(chunk).unwrap();
        }
        log.finish().unwrap();
        let (current, older) = (read(&path), read(&OutputLog::backup_path(&path, 1)));
        assert!(older.len() <= 4096 && current.len() <= 4096);
        assert_eq!(older.len() + current.len(), 5000, "nothing lost");
        for text in [&current, &older] {
            assert!(text.lines().all(|l| l.len() == 99), "whole lines only");
        }
        assert_eq!(tail(&path, 3, 1 << 20).unwrap().len(), 3);
    }

    #[test]
    fn only_backups_files_are_kept_and_an_endless_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut log = OutputLog::open(&path, 4096, 2).unwrap();
        for _ in 0..20 {
            log.write(&[b'y'; 3000]).unwrap();
            log.write(b"\n").unwrap();
        }
        assert!(OutputLog::backup_path(&path, 2).exists());
        assert!(!OutputLog::backup_path(&path, 3).exists());
        log.write(&vec![b'z'; MAX_LINE * 2 + 10]).unwrap();
        log.finish().unwrap();
        let last = tail(&path, 1, 1 << 20).unwrap();
        assert_eq!(last[0].len(), 10, "pieces of at most MAX_LINE");
    }

    #[test]
    fn output_the_disk_refuses_is_counted_and_noted_once_the_disk_takes_writes_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let mut log = OutputLog::open(&path, 1 << 20, 1).unwrap();
        log.write_or_count(b"before\n");
        // The disk fills up: /dev/full refuses every write with ENOSPC.
        let real = std::mem::replace(
            &mut log.file,
            OpenOptions::new().append(true).open("/dev/full").unwrap(),
        );
        log.write_or_count(b"lost one\n");
        log.write_or_count(b"lost two\n");
        // Space again.
        log.file = real;
        log.write_or_count(b"after\n");
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "before");
        assert!(
            lines[1].starts_with("heartbeatd: up to 18 bytes of output lost: ") && lines[1].contains("No space left"),
            "{text}"
        );
        assert_eq!(lines[2..], ["after"]);
    }
}
