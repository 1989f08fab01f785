//! The write-ahead journal: `journal/<seq>.log` segments of JSON lines, one record per
//! processed heartbeat, shared by all agents.
//!
//! Every flush appends the heartbeats processed since the last one and syncs the segment once:
//! one `fdatasync` per flush however many agents reported, so persisting a heartbeat costs the
//! same at 10 agents and at 100,000. Checkpoints (see the Store) write per-agent state and
//! history and then drop the segments they cover. At start-up the segments after the last
//! checkpoint are replayed.
//!
//! Faults: a torn last line (crash during an append) is skipped and counted at replay. After a
//! failed write or sync the segment is abandoned and the next append starts a new one: a
//! failed fsync is never retried on the same descriptor. A record written twice that way is
//! harmless, because replay skips records whose heartbeat number is not newer than the state.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::atomic_file::sync_dir;
use crate::data_dir;
use crate::model::heartbeat::{Heartbeat, ReportedStatus};

/// One processed heartbeat, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    #[serde(rename = "a")]
    pub agent_id: String,
    /// The heartbeat's number for its agent (its `heartbeat_count` after it).
    #[serde(rename = "n")]
    pub seq: u64,
    /// The agent's timestamp, in nanoseconds since the Unix epoch (integers: formatting RFC
    /// 3339 was a measurable share of the journal's cost at 80k heartbeats/s).
    #[serde(rename = "t", with = "chrono::serde::ts_nanoseconds")]
    pub timestamp: DateTime<Utc>,
    /// The server's receive time, in nanoseconds since the Unix epoch.
    #[serde(rename = "r", with = "chrono::serde::ts_nanoseconds")]
    pub received_at: DateTime<Utc>,
    #[serde(rename = "c")]
    pub cpu: f64,
    #[serde(rename = "m")]
    pub memory: u64,
    #[serde(rename = "p")]
    pub pid: i64,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ReportedStatus>,
}

impl JournalRecord {
    /// The heartbeat this record was made from.
    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            agent_id: self.agent_id.clone(),
            timestamp: self.timestamp,
            received_at: self.received_at,
            pid: self.pid,
            cpu: self.cpu,
            memory: self.memory,
            status: self.status,
        }
    }
}

/// What start-up found in the journal.
#[derive(Debug, Default)]
pub struct Replay {
    /// Records of the segments after the last checkpoint, oldest first.
    pub records: Vec<JournalRecord>,
    /// Lines that did not parse (a torn tail after a crash, or damage).
    pub damaged_lines: usize,
    /// Segments read.
    pub segments: usize,
}

/// The journal directory and the segment being appended to.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// The segment appends go to.
    current: u64,
    file: Option<File>,
    /// Records left out because they could not be encoded (see [`Journal::append`]).
    pub unencodable: u64,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}.log")
}

fn segment_seq(name: &str) -> Option<u64> {
    name.strip_suffix(".log")?.parse().ok()
}

impl Journal {
    /// Opens `dir`, reads the segments numbered `from` and later, and starts a new segment
    /// after the last one (an old segment may end in a torn line, so it is never appended to).
    pub fn open(dir: PathBuf, from: u64) -> io::Result<(Self, Replay)> {
        data_dir::create_dir_private(&dir)?;
        let segments = Self::segments(&dir)?;
        let mut replay = Replay::default();
        for &seq in segments.iter().filter(|&&s| s >= from) {
            let bytes = data_dir::read(&dir.join(segment_name(seq)))?;
            replay.segments += 1;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<JournalRecord>(line) {
                    Ok(record) => replay.records.push(record),
                    Err(_) => replay.damaged_lines += 1,
                }
            }
        }
        let current = segments.last().map_or(from, |last| (last + 1).max(from));
        Ok((
            Self {
                dir,
                current,
                file: None,
                unencodable: 0,
            },
            replay,
        ))
    }

    /// Segment numbers present, ascending.
    fn segments(dir: &Path) -> io::Result<Vec<u64>> {
        let mut seqs: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().to_str().and_then(segment_seq))
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment appends go to now.
    pub fn current_segment(&self) -> u64 {
        self.current
    }

    /// Appends `records` and syncs them; answers how many are in the journal now (all but
    /// those that could not be encoded). On error the segment is abandoned (see the module
    /// documentation) and the caller keeps the records to append again.
    pub fn append(&mut self, records: &[JournalRecord]) -> io::Result<usize> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut written = 0;
        let mut buf = Vec::with_capacity(records.len() * 160);
        for record in records {
            // A record that cannot be encoded (a timestamp outside what 64-bit nanoseconds
            // hold; the HTTP layer never lets one through) is left out and counted rather than
            // failing the batch: one agent's value must never stop the journal for all.
            let start = buf.len();
            if serde_json::to_writer(&mut buf, record).is_err() {
                buf.truncate(start);
                self.unencodable += 1;
                continue;
            }
            buf.push(b'\n');
            written += 1;
        }
        let result = self.write_and_sync(&buf);
        if result.is_err() {
            self.file = None;
            self.current += 1;
        }
        result.map(|()| written)
    }

    fn write_and_sync(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            // Recreates the directory if it vanished (an operator's mistake), so writing
            // resumes once it can.
            data_dir::create_dir_private(&self.dir)?;
            let file = data_dir::open_append(&self.dir.join(segment_name(self.current)))?;
            // The new segment's name must survive a crash too.
            sync_dir(&self.dir)?;
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(buf)?;
        file.sync_data()
    }

    /// Starts a new segment for the appends that follow; returns its number. Everything
    /// before it is what a checkpoint taken now covers.
    pub fn rotate(&mut self) -> u64 {
        self.file = None;
        self.current += 1;
        self.current
    }
}

/// Removes the segments of the journal in `dir` numbered below `seq` (a checkpoint covers
/// them). Safe beside a running [`Journal`]: it appends only to segments at or above `seq`.
pub fn remove_segments_before(dir: &Path, seq: u64) -> io::Result<usize> {
    let mut removed = 0;
    let segments = match Journal::segments(dir) {
        Ok(segments) => segments,
        // The directory vanished (data_dir removed): nothing to remove; the next append
        // creates it again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for old in segments.into_iter().filter(|&s| s < seq) {
        match fs::remove_file(dir.join(segment_name(old))) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn record(agent: &str, seq: u64) -> JournalRecord {
        let at = DateTime::from_timestamp(1_700_000_000 + seq as i64, 0).unwrap();
        JournalRecord {
            agent_id: agent.into(),
            seq,
            timestamp: at,
            received_at: at,
            cpu: 1.5,
            memory: seq,
            pid: 7,
            status: Some(ReportedStatus::Running),
        }
    }

    #[test]
    fn appended_records_are_replayed_from_a_new_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, replay) = Journal::open(dir.path().to_owned(), 0).unwrap();
        assert!(replay.records.is_empty());
        journal.append(&[record("a", 1), record("b", 1)]).unwrap();
        journal.append(&[record("a", 2)]).unwrap();

        let (reopened, replay) = Journal::open(dir.path().to_owned(), 0).unwrap();
        assert_eq!(replay.records, [record("a", 1), record("b", 1), record("a", 2)]);
        assert_eq!(replay.segments, 1);
        assert!(
            reopened.current_segment() > journal.current_segment(),
            "never appends to an old segment"
        );
    }

    #[test]
    fn a_record_that_cannot_be_encoded_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path().to_owned(), 0).unwrap();
        let year_one = JournalRecord {
            timestamp: "0001-01-01T00:00:00Z".parse().unwrap(),
            ..record("zero-time", 1)
        };
        journal.append(&[record("a", 1), year_one, record("a", 2)]).unwrap();
        journal.append(&[record("a", 3)]).unwrap();
        assert_eq!(journal.unencodable, 1);
        let (_, replay) = Journal::open(dir.path().to_owned(), 0).unwrap();
        assert_eq!(replay.records, [record("a", 1), record("a", 2), record("a", 3)]);
    }

    #[test]
    fn a_torn_tail_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path().to_owned(), 0).unwrap();
        journal.append(&[record("a", 1)]).unwrap();
        let segment = dir.path().join(segment_name(journal.current_segment()));
        OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap()
            .write_all(b"{\"a\":\"a\",\"n\":2,\"t\":\"20")
            .unwrap();

        let (_, replay) = Journal::open(dir.path().to_owned(), 0).unwrap();
        assert_eq!(replay.records, [record("a", 1)]);
        assert_eq!(replay.damaged_lines, 1);
    }

    #[test]
    fn rotation_and_removal_keep_only_what_a_checkpoint_does_not_cover() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path().to_owned(), 0).unwrap();
        journal.append(&[record("a", 1)]).unwrap();
        let checkpoint = journal.rotate();
        journal.append(&[record("a", 2)]).unwrap();
        assert_eq!(remove_segments_before(dir.path(), checkpoint).unwrap(), 1);

        let (_, replay) = Journal::open(dir.path().to_owned(), checkpoint).unwrap();
        assert_eq!(replay.records, [record("a", 2)]);
    }

    #[test]
    fn a_failed_append_abandons_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path().to_owned(), 0).unwrap();
        // A directory where the next segment should be makes the open fail.
        let blocked = journal.current_segment();
        fs::create_dir(dir.path().join(segment_name(blocked))).unwrap();
        assert!(journal.append(&[record("a", 1)]).is_err());
        assert_eq!(journal.current_segment(), blocked + 1);
        journal.append(&[record("a", 1)]).unwrap();
        fs::remove_dir(dir.path().join(segment_name(blocked))).unwrap();
        let (_, replay) = Journal::open(dir.path().to_owned(), 0).unwrap();
        assert_eq!(replay.records, [record("a", 1)]);
    }
}
