//! Per-agent resource history: `history/<id>.log`, append-only, one JSON record per line.
//!
//! Appending costs the same whatever `history_len` is. The file is compacted (rewritten
//! atomically with the newest `history_len` records) once it holds more than twice that, so
//! the amortised cost per heartbeat stays constant too.
//!
//! A crash can leave a torn last line. Before the first append to a file in a run, its last
//! byte is checked and a newline added if needed, so the torn line stays a line of its own.
//! Reads skip lines that do not parse and count them; compaction moves them to
//! `<id>.log.corrupt`. Each record carries the heartbeat number, and reads keep only records
//! whose number rises, so a batch appended twice (a flush retried after an error) counts once.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::atomic_file::write_atomically;
use crate::data_dir;
use crate::model::agent::ResourceSample;

/// What a read found in one agent's log.
#[derive(Debug, Default, PartialEq)]
pub struct HistoryRead {
    /// Oldest first, duplicates removed.
    pub samples: Vec<ResourceSample>,
    /// Lines that did not parse.
    pub damaged: Vec<String>,
}

/// The `history/` directory.
#[derive(Debug, Clone)]
pub struct HistoryLog {
    dir: PathBuf,
    /// Agents whose log tail was checked in this run.
    tail_checked: HashSet<String>,
}

impl HistoryLog {
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        data_dir::create_dir_private(&dir)?;
        Ok(Self {
            dir,
            tail_checked: HashSet::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Appends `samples` (not yet synced); returns the file so the caller can sync it.
    pub fn append(&mut self, id: &str, samples: &[ResourceSample]) -> io::Result<File> {
        let mut file = data_dir::open_read_append(&self.path(id))?;
        let mut buf = Vec::with_capacity(samples.len() * 72 + 1);
        if !self.tail_checked.contains(id) {
            let len = file.metadata()?.len();
            let mut last = [0u8; 1];
            if len > 0 && file.read_at(&mut last, len - 1)? == 1 && last[0] != b'\n' {
                buf.push(b'\n');
            }
            self.tail_checked.insert(id.to_owned());
        }
        for sample in samples {
            serde_json::to_writer(&mut buf, sample).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        file.write_all(&buf)?;
        Ok(file)
    }

    /// Reads one agent's log; an agent with no log has an empty history.
    pub fn read(&self, id: &str) -> io::Result<HistoryRead> {
        let text = match data_dir::read(&self.path(id)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HistoryRead::default()),
            Err(e) => return Err(e),
        };
        let mut read = HistoryRead::default();
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<ResourceSample>(line) {
                Ok(sample) if read.samples.last().is_none_or(|prev| sample.seq > prev.seq) => read.samples.push(sample),
                Ok(_) => {} // a duplicate from a retried append
                Err(_) => read.damaged.push(String::from_utf8_lossy(line).into_owned()),
            }
        }
        Ok(read)
    }

    /// Rewrites the log with its newest `keep` records; damaged lines are appended to
    /// `<id>.log.corrupt`. Returns (records kept, damaged lines moved).
    pub fn compact(&mut self, id: &str, keep: usize) -> io::Result<(usize, usize)> {
        let read = self.read(id)?;
        if !read.damaged.is_empty() {
            let mut aside = data_dir::open_append(&self.dir.join(format!("{id}.log.corrupt")))?;
            for line in &read.damaged {
                aside.write_all(line.as_bytes())?;
                aside.write_all(b"\n")?;
            }
            aside.sync_data()?;
        }
        let kept = &read.samples[read.samples.len().saturating_sub(keep)..];
        let mut buf = Vec::with_capacity(kept.len() * 72);
        for sample in kept {
            serde_json::to_writer(&mut buf, sample).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        write_atomically(&self.dir, &format!("{id}.log"), &buf)?;
        // The new file ends with a newline.
        self.tail_checked.insert(id.to_owned());
        Ok((kept.len(), read.damaged.len()))
    }

    /// Removes one agent's log; `false` if it had none.
    pub fn remove(&mut self, id: &str) -> io::Result<bool> {
        self.tail_checked.remove(id);
        match fs::remove_file(self.path(id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use std::fs::OpenOptions;

    fn samples(range: std::ops::Range<u64>) -> Vec<ResourceSample> {
        range
            .map(|n| ResourceSample {
                seq: n,
                time: DateTime::from_timestamp(1_700_000_000 + n as i64, 0).unwrap(),
                cpu: 1.0,
                memory: n,
            })
            .collect()
    }

    fn seqs(read: &HistoryRead) -> Vec<u64> {
        read.samples.iter().map(|s| s.seq).collect()
    }

    #[test]
    fn appends_then_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(dir.path().join("history")).unwrap();
        log.append("a", &samples(1..4)).unwrap();
        log.append("a", &samples(4..6)).unwrap();
        assert_eq!(seqs(&log.read("a").unwrap()), [1, 2, 3, 4, 5]);
        assert_eq!(log.read("none").unwrap(), HistoryRead::default());
    }

    #[test]
    fn a_retried_append_is_not_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(dir.path().to_owned()).unwrap();
        log.append("a", &samples(1..4)).unwrap();
        log.append("a", &samples(2..6)).unwrap(); // 2 and 3 again, as after a failed sync
        assert_eq!(seqs(&log.read("a").unwrap()), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_torn_tail_is_isolated_and_set_aside_by_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(dir.path().to_owned()).unwrap();
        log.append("a", &samples(1..3)).unwrap();
        // A crash in the middle of an append:
        OpenOptions::new()
            .append(true)
            .open(log.path("a"))
            .unwrap()
            .write_all(b"{\"n\":3,\"t\":\"20")
            .unwrap();

        let mut after_restart = HistoryLog::open(dir.path().to_owned()).unwrap();
        after_restart.append("a", &samples(3..5)).unwrap();
        let read = after_restart.read("a").unwrap();
        assert_eq!(seqs(&read), [1, 2, 3, 4], "records around the damage are kept");
        assert_eq!(read.damaged, ["{\"n\":3,\"t\":\"20"]);

        assert_eq!(after_restart.compact("a", 3).unwrap(), (3, 1));
        assert_eq!(seqs(&after_restart.read("a").unwrap()), [2, 3, 4]);
        let aside = fs::read_to_string(dir.path().join("a.log.corrupt")).unwrap();
        assert_eq!(aside, "{\"n\":3,\"t\":\"20\n");
    }

    #[test]
    fn remove_deletes_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(dir.path().to_owned()).unwrap();
        log.append("a", &samples(1..2)).unwrap();
        assert!(log.remove("a").unwrap());
        assert!(!log.remove("a").unwrap());
    }
}
