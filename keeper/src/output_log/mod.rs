//! A supervised agent's output file, `data_dir/logs/<id>.log`: stdout and stderr appended
//! line by line, rotated past a size (`<id>.log.1` … `<id>.log.<backups>`), every line kept
//! whole in one file.
//!
//! Written by the agent's keeper, never by heartbeatd's own threads. Output is not promised
//! durable (no fsync): it is the agent's diagnostics, not heartbeatd's records.
//!
//! Whole lines are gathered in a buffer and written together: when it holds
//! [`BUFFER_BYTES`], and at the latest [`FLUSH_INTERVAL`] after its first line (the keeper
//! calls [`OutputLog::flush`] then). A program printing one short line at a time (`yes`) costs
//! one write per buffer, not one per line. Where a rotation falls is decided as lines arrive,
//! so each line still lands whole in one file.
//!
//! The file is checked before it is written (at most every [`PLACE_CHECK_INTERVAL`], and
//! before every rotation): if it was removed or moved away (a full disk's reflex, logrotate
//! without `copytruncate`), it is opened again at its path, and a line in it says so.
//!
//! Every open goes through [`crate::private_file`] (heartbeatd's `data_dir` rules): the files
//! are created 0600, the directory 0700, and a link at `logs/<id>.log` is refused, never
//! followed (it would send the agent's output into any file).

#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memchr::{memchr, memrchr};

use crate::private_file;

/// A line longer than this is written in pieces of this size, each ended with a newline, so a
/// program that never writes a newline cannot make the keeper buffer without bound.
pub const MAX_LINE: usize = 64 * 1024;
/// Whole lines wait in the buffer until it holds this many bytes …
pub const BUFFER_BYTES: usize = 64 * 1024;
/// … or until this long after the first of them.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// The file is checked for having been removed or moved at most this often (and before each
/// rotation): an `fstat` and an `lstat`.
pub const PLACE_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// The line written into a file opened again because the last one was removed or moved.
pub const REOPENED_NOTE: &str = "the output file was removed or moved; reopened";

/// The output file of one agent.
pub struct OutputLog {
    path: PathBuf,
    file: File,
    /// Its size once the buffer is written.
    size: u64,
    /// Rotate before a line that would take it past this.
    max_bytes: u64,
    /// Rotated files kept.
    backups: u32,
    /// The start of a line not yet ended.
    partial: Vec<u8>,
    /// Whole lines not yet written …
    pending: Vec<u8>,
    /// … the offsets in them where a new file starts …
    rotate_at: Vec<usize>,
    /// … and when the first of them came.
    pending_since: Option<Instant>,
    last_place_check: Option<Instant>,
    /// Output the file refused (disk full, say) since the last write that worked: up to this
    /// many bytes, and why. Said in the file once it takes writes again.
    lost: u64,
    lost_reason: String,
}

impl OutputLog {
    /// Opens (or creates) `path` for appending; its directory is created if needed.
    pub fn open(path: &Path, max_bytes: u64, backups: u32) -> io::Result<Self> {
        let file = open_at(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            max_bytes,
            backups,
            partial: Vec::new(),
            pending: Vec::with_capacity(BUFFER_BYTES),
            rotate_at: Vec::new(),
            pending_since: None,
            last_place_check: None,
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

    /// Takes a chunk of output: complete lines are buffered (and written once the buffer is
    /// full), the rest waits for its end. Never fails: what the file refuses is counted (see
    /// [`flush`](Self::flush)); the agent is never held up by its output file.
    pub fn write(&mut self, mut chunk: &[u8]) {
        if !self.partial.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &chunk[..chunk.len().min(room)];
            match memchr(b'\n', window) {
                Some(end) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&chunk[..=end]);
                    self.buffer_lines(&line);
                    chunk = &chunk[end + 1..];
                }
                None if chunk.len() < room => {
                    self.partial.extend_from_slice(chunk);
                    return;
                }
                None => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(window);
                    line.push(b'\n');
                    self.buffer_lines(&line);
                    chunk = &chunk[room..];
                }
            }
        }
        // A window of MAX_LINE bytes at a time: every line before its last newline is shorter
        // than MAX_LINE, so they go on together; a full window without one is cut.
        while !chunk.is_empty() {
            let window = &chunk[..chunk.len().min(MAX_LINE)];
            match memrchr(b'\n', window) {
                Some(last) => {
                    self.buffer_lines(&chunk[..=last]);
                    chunk = &chunk[last + 1..];
                }
                None if window.len() == MAX_LINE => {
                    let mut piece = window.to_vec();
                    piece.push(b'\n');
                    self.buffer_lines(&piece);
                    chunk = &chunk[MAX_LINE..];
                }
                None => {
                    self.partial.extend_from_slice(window);
                    return;
                }
            }
        }
    }

    /// Writes what is left of an unfinished line (the output ended), with a newline, and
    /// everything buffered.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            self.buffer_lines(&line);
        }
        self.flush();
    }

    /// Writes a line of heartbeatd's own (a start failure, say), marked as such, at once.
    pub fn note(&mut self, text: &str) {
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            self.buffer_lines(&line);
        }
        self.buffer_lines(format!("heartbeatd: {text}\n").as_bytes());
        self.flush();
    }

    /// When the buffered lines must be written: [`FLUSH_INTERVAL`] after the first of them.
    pub fn flush_due(&self) -> Option<Instant> {
        self.pending_since.map(|since| since + FLUSH_INTERVAL)
    }

    /// Writes every buffered line, rotating where they were planned to; first checks that the
    /// file is still in place. Never fails: what the file refuses is counted, said once on the
    /// keeper's stderr (heartbeatd's), and noted in the file (`heartbeatd: up to N bytes of
    /// output lost: <why>`) when it takes writes again.
    pub fn flush(&mut self) {
        self.flush_checking(true);
    }

    /// `check_place`: check that the file is in place even if it was checked less than
    /// [`PLACE_CHECK_INTERVAL`] ago (a flush on time does; one of a full buffer need not).
    fn flush_checking(&mut self, check_place: bool) {
        self.pending_since = None;
        if self.pending.is_empty() && self.rotate_at.is_empty() {
            return;
        }
        let now = Instant::now();
        let check_due = self
            .last_place_check
            .is_none_or(|at| now.saturating_duration_since(at) >= PLACE_CHECK_INTERVAL);
        if check_place || check_due || !self.rotate_at.is_empty() {
            self.last_place_check = Some(now);
            match self.reopen_if_moved() {
                Ok(false) => {}
                // A new file: its rotations are planned afresh from its own size.
                Ok(true) => {
                    self.size = self.file.metadata().map_or(0, |m| m.len());
                    let pending = std::mem::take(&mut self.pending);
                    self.rotate_at.clear();
                    self.buffer_lines(&pending);
                    self.pending_since = None;
                }
                Err(e) => {
                    let unwritten = self.pending.len() as u64;
                    self.pending.clear();
                    self.rotate_at.clear();
                    self.count_lost(unwritten, &e);
                    return;
                }
            }
        }
        let pending = std::mem::take(&mut self.pending);
        let rotate_at = std::mem::take(&mut self.rotate_at);
        if let Err((e, unwritten)) = self.write_out(&pending, &rotate_at) {
            self.count_lost(unwritten, &e);
        }
        // The plan was made for the file as it was; what it is now is what counts.
        if let Ok(meta) = self.file.metadata() {
            self.size = meta.len();
        }
        // The buffer's allocation is kept for the next lines.
        self.pending = pending;
        self.pending.clear();
    }

    /// Writes `pending`, rotating at each offset of `rotate_at`; on failure, the error and
    /// how many bytes of `pending` were not written.
    fn write_out(&mut self, pending: &[u8], rotate_at: &[usize]) -> Result<(), (io::Error, u64)> {
        let unwritten_from = |from: usize| (pending.len() - from) as u64;
        if self.lost > 0 {
            let note = format!(
                "heartbeatd: up to {} bytes of output lost: {}\n",
                self.lost, self.lost_reason
            );
            self.file
                .write_all(note.as_bytes())
                .map_err(|e| (e, unwritten_from(0)))?;
            self.lost = 0;
        }
        let mut from = 0;
        for &at in rotate_at {
            self.file
                .write_all(&pending[from..at])
                .map_err(|e| (e, unwritten_from(from)))?;
            self.rotate().map_err(|e| (e, unwritten_from(at)))?;
            from = at;
        }
        self.file
            .write_all(&pending[from..])
            .map_err(|e| (e, unwritten_from(from)))
    }

    fn count_lost(&mut self, bytes: u64, e: &io::Error) {
        if self.lost == 0 {
            let dir = self.path.parent().unwrap_or(Path::new(".")).display().to_string();
            eprintln!(
                "heartbeatd-keep: cannot write {}: {e}; the agent's output is dropped until it can (check free space in data_dir, and that {dir} exists and is writable)",
                self.path.display()
            );
        }
        // What was not written is counted; it is not tried again.
        self.lost += bytes;
        self.lost_reason = e.to_string();
    }

    /// Lines for the buffer, rotations planned between them: a line that would take the file
    /// past `max_bytes` starts a new one (unless the file is empty: it goes in whole anyway).
    fn buffer_lines(&mut self, mut lines: &[u8]) {
        while !lines.is_empty() {
            let room = self.max_bytes.saturating_sub(self.size);
            if lines.len() as u64 <= room {
                self.buffer(lines);
                return;
            }
            // As many whole lines as fit.
            let fit = memrchr(b'\n', &lines[..room as usize]).map_or(0, |i| i + 1);
            if fit > 0 {
                self.buffer(&lines[..fit]);
                lines = &lines[fit..];
            } else if self.size > 0 {
                self.rotate_at.push(self.pending.len());
                self.size = 0;
            } else {
                let end = memchr(b'\n', lines).map_or(lines.len(), |i| i + 1);
                self.buffer(&lines[..end]);
                lines = &lines[end..];
            }
        }
    }

    fn buffer(&mut self, bytes: &[u8]) {
        if self.pending_since.is_none() {
            self.pending_since = Some(Instant::now());
        }
        self.pending.extend_from_slice(bytes);
        self.size += bytes.len() as u64;
        if self.pending.len() >= BUFFER_BYTES {
            self.flush_checking(false);
        }
    }

    /// Whether the open file is no longer the one at the path: removed (no link left) or
    /// moved (the path names another file, or nothing).
    fn moved_or_removed(&self) -> bool {
        let Ok(open) = self.file.metadata() else { return false };
        if open.nlink() == 0 {
            return true;
        }
        match fs::symlink_metadata(&self.path) {
            Ok(at) => (at.dev(), at.ino()) != (open.dev(), open.ino()),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }

    /// Opens the file again at its path if it was removed or moved, with a line saying so;
    /// whether it did.
    fn reopen_if_moved(&mut self) -> io::Result<bool> {
        if !self.moved_or_removed() {
            return Ok(false);
        }
        self.file = open_at(&self.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the output file was removed or moved, and opening it again failed: {e}"),
            )
        })?;
        eprintln!(
            "heartbeatd-keep: {} was removed or moved; opened it again (output written meanwhile went to the old file)",
            self.path.display()
        );
        self.file
            .write_all(format!("heartbeatd: {REOPENED_NOTE}\n").as_bytes())?;
        Ok(true)
    }

    /// `<id>.log` becomes `<id>.log.1`, `.1` becomes `.2`, …; the oldest past `backups` goes.
    fn rotate(&mut self) -> io::Result<()> {
        if self.backups == 0 {
            return self.file.set_len(0);
        }
        for n in (1..self.backups).rev() {
            match fs::rename(Self::backup_path(&self.path, n), Self::backup_path(&self.path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        match fs::rename(&self.path, Self::backup_path(&self.path, 1)) {
            // Gone since the check: there is nothing to rotate, only a file to open.
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.file = private_file::open_append(&self.path)?;
        Ok(())
    }
}

/// Opens `path` for appending, creating it and its directory (0600, 0700) if needed.
fn open_at(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        private_file::create_dir_private(dir)?;
    }
    private_file::open_append(path)
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
    let mut file = private_file::open_read(path)?;
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
