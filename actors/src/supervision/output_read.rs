//! Reading a supervised agent's output (`data_dir/logs/<id>.log` and its rotations) by byte
//! offset, as supervisord's `tailProcessLog` does: a reader asks for bytes from an offset of
//! a file, gets them with the offset to ask from next, and so neither repeats nor skips a
//! byte, across rotations (like `tail -F`).
//!
//! Files are named by identity ([`FileId`]: device, inode and birth time), not by name: a
//! rotation renames `<id>.log` to `<id>.log.1`, and a reader holding an offset into it
//! finishes that file (found among the rotations by its identity) before moving to the new
//! one. The birth time is part of it because ext4 hands a freed inode number to the next file
//! created: as rotations cycle, a file a reader held can be deleted and its inode number reused
//! by a newer file, which a (device, inode) identity took for the old one (read from a stale
//! offset: a torn line, output missed and `skipped` unset).
//!
//! Every answer is bounded: at most `max_bytes` of text *as JSON will carry it* (a control
//! byte takes six bytes once escaped, so a flood of them cannot multiply the answer), cut at
//! a line's end when one is in reach, and never inside a UTF-8 character. Bytes that are not
//! UTF-8 are shown as U+FFFD; offsets always count the file's own bytes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use super::output_log::OutputLog;

/// Which output file: its device, inode and birth time (nanoseconds since the epoch; 0 where
/// the file system does not keep it), as `<dev>-<ino>-<born>` in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    born: u64,
}

impl FileId {
    fn of(file: &File) -> io::Result<(Self, u64)> {
        let meta = file.metadata()?;
        let born = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        Ok((
            Self {
                dev: meta.dev(),
                ino: meta.ino(),
                born,
            },
            meta.len(),
        ))
    }

    /// Parses what [`FileId`]'s `Display` wrote (or `<dev>-<ino>`, as older versions wrote
    /// it: then the birth time is unknown); `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('-');
        let mut next = || u64::from_str_radix(parts.next()?, 16).ok();
        let (dev, ino) = (next()?, next()?);
        let born = match parts.next() {
            None => 0,
            Some(born) => u64::from_str_radix(born, 16).ok()?,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self { dev, ino, born })
    }

    /// Whether `self` (what a reader holds) names the file `now` identifies: the same device
    /// and inode, born at the same time (when both birth times are known).
    fn names(&self, now: &FileId) -> bool {
        self.dev == now.dev && self.ino == now.ino && (self.born == now.born || self.born == 0 || now.born == 0)
    }
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}-{:x}-{:x}", self.dev, self.ino, self.born)
    }
}

impl Serialize for FileId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where to read from.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// The last `lines` lines of the current file (those that fit the answer).
    Tail { lines: usize },
    /// From `offset` of `file` (the current file when `None`).
    At { file: Option<FileId>, offset: u64 },
}

/// One answer.
#[derive(Debug, Serialize)]
pub struct Chunk {
    /// The file the text is from, and where in it the text starts.
    pub file: FileId,
    pub offset: u64,
    /// The text, lossily decoded.
    pub data: String,
    /// Where to ask from next (pass both back).
    pub next_file: FileId,
    pub next_offset: u64,
    /// The size of `file` when it was read.
    pub size: u64,
    /// Set when the asked-for place no longer exists and reading started over: `truncated`
    /// (the file is now shorter than the offset) or `rotated_away` (the file is no longer
    /// among the kept rotations); output between was missed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<&'static str>,
}

/// Opens as every file under `data_dir` is opened: never through a symbolic link (one planted
/// in `logs/` must not make heartbeatd read another file), and only a regular file of
/// heartbeatd's own.
fn open_no_follow(path: &Path) -> io::Result<File> {
    crate::data_dir::open_read(path)
}

/// Reads from the output file `path` (with `backups` rotations kept), at most `max_bytes` of
/// escaped text. A missing file reads as empty.
pub fn read(path: &Path, backups: u32, start: Start, max_bytes: usize) -> io::Result<Option<Chunk>> {
    let current = match open_no_follow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (current_id, current_size) = FileId::of(&current)?;
    match start {
        Start::Tail { lines } => tail(current, current_id, current_size, lines, max_bytes).map(Some),
        Start::At { file, offset } => {
            let wanted = file.unwrap_or(current_id);
            if wanted.names(&current_id) {
                return if offset > current_size {
                    from(current, current_id, current_size, 0, max_bytes, Some("truncated")).map(Some)
                } else {
                    from(current, current_id, current_size, offset, max_bytes, None).map(Some)
                };
            }
            // Rotated: find it by identity, oldest last; finish it, then the newer ones.
            let mut newer: Vec<(File, FileId, u64)> = Vec::new();
            for n in 1..=backups {
                let Ok(rotated) = open_no_follow(&OutputLog::backup_path(path, n)) else {
                    break;
                };
                let (id, size) = FileId::of(&rotated)?;
                if wanted.names(&id) {
                    if offset < size {
                        return from(rotated, id, size, offset, max_bytes, None).map(Some);
                    }
                    // Finished: the next newer file, from its start.
                    let (file, id, size) = newer.pop().unwrap_or((current, current_id, current_size));
                    return from(file, id, size, 0, max_bytes, None).map(Some);
                }
                newer.push((rotated, id, size));
            }
            // Rotated past the kept files: the oldest still kept, from its start.
            let (file, id, size) = newer.pop().unwrap_or((current, current_id, current_size));
            from(file, id, size, 0, max_bytes, Some("rotated_away")).map(Some)
        }
    }
}

/// Text from `offset` of `file`.
fn from(
    mut file: File,
    id: FileId,
    size: u64,
    offset: u64,
    max_bytes: usize,
    skipped: Option<&'static str>,
) -> io::Result<Chunk> {
    file.seek(SeekFrom::Start(offset))?;
    let mut raw = Vec::with_capacity(max_bytes.min((size - offset) as usize));
    file.take(max_bytes as u64).read_to_end(&mut raw)?;
    let more_follows = offset + (raw.len() as u64) < size;
    let (data, used) = fit(&raw, max_bytes, more_follows);
    Ok(Chunk {
        file: id,
        offset,
        data,
        next_file: id,
        next_offset: offset + used as u64,
        size,
        skipped,
    })
}

/// The last `lines` whole lines before the end of `file` that fit.
fn tail(mut file: File, id: FileId, size: u64, lines: usize, max_bytes: usize) -> io::Result<Chunk> {
    let start = size.saturating_sub(max_bytes as u64);
    file.seek(SeekFrom::Start(start))?;
    let mut raw = Vec::with_capacity((size - start) as usize);
    file.take(max_bytes as u64).read_to_end(&mut raw)?;
    let end = raw.len();
    // Skip the cut first line, unless the file starts here.
    let mut first = if start == 0 {
        0
    } else {
        raw.iter().position(|b| *b == b'\n').map_or(end, |at| at + 1)
    };
    // The last `lines` whole lines (a last line without its newline yet counts too) whose
    // escaped text fits, found walking back one line at a time: each byte is looked at twice
    // at most (found, then escaped once), so a tail costs O(max_bytes) whatever the text.
    let floor = first;
    first = end;
    let (mut escaped, mut taken) = (0, 0);
    while first > floor && taken < lines {
        // The line ending at `first` (its own newline, if any, is its last byte).
        let line_start = raw[floor..first - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(floor, |at| floor + at + 1);
        let cost = escaped_len(&raw[line_start..first]);
        if escaped + cost > max_bytes {
            break;
        }
        escaped += cost;
        first = line_start;
        taken += 1;
    }
    let (data, used) = fit(&raw[first..end], max_bytes, false);
    Ok(Chunk {
        file: id,
        offset: start + first as u64,
        data,
        next_file: id,
        next_offset: start + (first + used) as u64,
        size,
        skipped: None,
    })
}

/// How many bytes `c` takes in a JSON string (serde_json's escapes).
fn escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
thread_local! {
    /// Bytes [`escaped_len`] looked at on this thread (the tests count the tail's work).
    static ESCAPED_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn escaped_len(raw: &[u8]) -> usize {
    #[cfg(test)]
    ESCAPED_BYTES.with(|n| n.set(n.get() + raw.len()));
    raw.utf8_chunks()
        .map(|chunk| chunk.valid().chars().map(escaped_char_len).sum::<usize>() + 3 * chunk.invalid().len().min(1))
        .sum()
}

/// The longest start of `raw` whose escaped text fits `max_bytes`: cut after its last newline
/// when `more_follows` and one is there, and never inside a character. Answers the text and
/// the raw bytes it covers.
fn fit(raw: &[u8], max_bytes: usize, more_follows: bool) -> (String, usize) {
    let mut used = 0;
    let mut escaped = 0;
    let mut last_line_end = None;
    'chunks: for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            let cost = escaped_char_len(c);
            if escaped + cost > max_bytes {
                break 'chunks;
            }
            escaped += cost;
            used += c.len_utf8();
            if c == '\n' {
                last_line_end = Some(used);
            }
        }
        let invalid = chunk.invalid();
        if invalid.is_empty() {
            continue;
        }
        // A character cut by the end of what was read is read whole next time.
        let at_end = used + invalid.len() == raw.len();
        if (at_end && invalid.len() < 4 && more_follows) || escaped + 3 > max_bytes {
            break;
        }
        escaped += 3;
        used += invalid.len();
    }
    let cut_short = used < raw.len() || more_follows;
    let used = match last_line_end {
        Some(end) if cut_short => end,
        _ => used,
    };
    (String::from_utf8_lossy(&raw[..used]).into_owned(), used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn at(file: Option<FileId>, offset: u64) -> Start {
        Start::At { file, offset }
    }

    #[test]
    fn a_follower_gets_every_byte_once_across_rotations() {
        // Arrange: a file written in pieces and rotated twice while a reader follows it with
        // small answers.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut written = String::new();
        let mut got = String::new();
        let (mut file, mut offset) = (None, 0);
        let mut log = OutputLog::open(&path, 1024, 3).unwrap();
        for round in 0..40 {
            let line = format!("line {round}: {}\n", "x".repeat(round * 7 % 300));
            log.write(line.as_bytes());
            log.flush();
            written.push_str(&line);
            // Act: read once per round, a little at a time.
            if round % 3 == 0 {
                while let Some(chunk) = read(&path, 3, at(file, offset), 200).unwrap() {
                    assert!(chunk.skipped.is_none(), "{chunk:?}");
                    got.push_str(&chunk.data);
                    let moved = (Some(chunk.next_file), chunk.next_offset) != (file, offset);
                    (file, offset) = (Some(chunk.next_file), chunk.next_offset);
                    if !moved {
                        break;
                    }
                }
            }
        }
        while let Some(chunk) = read(&path, 3, at(file, offset), 200).unwrap() {
            got.push_str(&chunk.data);
            if (Some(chunk.next_file), chunk.next_offset) == (file, offset) {
                break;
            }
            (file, offset) = (Some(chunk.next_file), chunk.next_offset);
        }
        // Assert: rotations happened, and the reader saw everything exactly once.
        assert!(OutputLog::backup_path(&path, 2).exists());
        assert_eq!(got, written);
    }

    #[test]
    fn control_bytes_are_bounded_as_escaped_text_and_characters_never_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, [vec![1u8; 1000], "é\n".repeat(100).into_bytes()].concat()).unwrap();

        let chunk = read(&path, 0, at(None, 0), 600).unwrap().unwrap();
        assert_eq!(chunk.next_offset, 100, "600 escaped bytes hold 100 control bytes");
        assert!(serde_json::to_string(&chunk.data).unwrap().len() <= 600 + 2);

        // From inside a two-byte character: the bad byte shows as U+FFFD, offsets stay exact.
        let chunk = read(&path, 0, at(None, 1001), 5).unwrap().unwrap();
        assert!(chunk.data.starts_with('\u{fffd}'), "{:?}", chunk.data);
        let whole = read(&path, 0, at(None, 1000), 4096).unwrap().unwrap();
        assert_eq!(whole.data, "é\n".repeat(100));
        assert_eq!(whole.next_offset, whole.size);
    }

    #[test]
    fn a_tail_is_whole_lines_that_fit_and_an_offset_past_the_end_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, &text).unwrap();

        let chunk = read(&path, 0, Start::Tail { lines: 3 }, 4096).unwrap().unwrap();
        assert_eq!(chunk.data, "line 97\nline 98\nline 99\n");
        assert_eq!(chunk.next_offset, text.len() as u64);
        assert_eq!(chunk.offset + chunk.data.len() as u64, chunk.next_offset);
        let small = read(&path, 0, Start::Tail { lines: 50 }, 20).unwrap().unwrap();
        assert_eq!(small.data, "line 98\nline 99\n", "whole lines only");

        let past = read(&path, 0, at(None, 10_000), 4096).unwrap().unwrap();
        assert_eq!(past.skipped, Some("truncated"));
        assert_eq!(past.offset, 0);
        assert!(read(&dir.path().join("none.log"), 0, at(None, 0), 10)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_tail_of_escaped_text_escapes_each_byte_once() {
        // 2000 lines of 100 control bytes (each escaped into 6), tailed within 64 KiB: the old
        // tail dropped one line at a time and escaped the whole rest again (about 27 MB of
        // escaping here; 29 s of CPU for 1 MiB).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let line = [vec![1u8; 100], vec![b'\n']].concat();
        fs::write(&path, line.repeat(2000)).unwrap();
        ESCAPED_BYTES.with(|n| n.set(0));

        let chunk = read(&path, 0, Start::Tail { lines: 1000 }, 64 << 10).unwrap().unwrap();

        // 64 KiB of escaped text holds 108 lines of 602 escaped bytes.
        assert_eq!(chunk.data.lines().count(), (64 << 10) / 602);
        assert_eq!(chunk.next_offset, chunk.size);
        let escaped = ESCAPED_BYTES.with(|n| n.get());
        assert!(escaped <= 2 * (64 << 10), "escaped {escaped} bytes to tail 64 KiB");
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("secret"), "root:x:0:0\n").unwrap();
        let path = dir.path().join("a.log");
        std::os::unix::fs::symlink(dir.path().join("secret"), &path).unwrap();
        assert!(read(&path, 0, at(None, 0), 100).is_err());
    }

    #[test]
    fn file_ids_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, "x").unwrap();
        let (id, _) = FileId::of(&File::open(&path).unwrap()).unwrap();
        assert_eq!(FileId::parse(&id.to_string()), Some(id));
        assert_eq!(FileId::parse("zz"), None);
        assert_eq!(FileId::parse("1-2-3-4"), None);
        // An id from an older version (no birth time) still names its file.
        let old = FileId::parse(&format!("{:x}-{:x}", id.dev, id.ino)).unwrap();
        assert!(old.names(&id));
    }

    #[test]
    fn a_file_that_took_a_freed_inode_number_is_not_the_file_a_reader_held() {
        // Arrange: the current file, and the id a reader kept of an older file that had the same
        // device and inode (ext4 reuses a freed inode number for the next file created).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, "line 1\nline 2\nline 3\n").unwrap();
        let (now, _) = FileId::of(&File::open(&path).unwrap()).unwrap();
        assert_ne!(now.born, 0, "this test needs a file system that keeps birth times");
        let gone = FileId {
            born: now.born - 1,
            ..now
        };

        // Act: the reader asks to go on in its old file, at an offset inside a line.
        let chunk = read(&path, 2, at(Some(gone), 3), 4096).unwrap().unwrap();

        // Assert: not read from the stale offset of the newer file: from the oldest kept file's
        // start (here the current one), saying output was missed.
        assert_eq!(chunk.skipped, Some("rotated_away"));
        assert_eq!(chunk.offset, 0);
        assert_eq!(chunk.data, "line 1\nline 2\nline 3\n");
    }
}
