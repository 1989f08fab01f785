//! Per-agent events on disk (liveness transitions and process state changes): `events/<id>.log`, one JSON line per transition,
//! bounded to the newest [`KEEP`] (rewritten atomically once the file holds about twice that).
//! Transitions are rare, so each append is synced on its own.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::atomic_file::write_atomically;
use crate::data_dir;
pub use crate::model::events::AgentEvent;
pub use crate::model::liveness::EventRecord;

/// Transitions kept per agent.
pub const KEEP: usize = 1000;
/// A file over this size holds well over [`KEEP`] lines (about 120 bytes each): compact it.
const COMPACT_OVER_BYTES: u64 = (2 * KEEP as u64) * 120;

/// The `events/` directory.
#[derive(Debug, Clone)]
pub struct EventsLog {
    dir: PathBuf,
}

impl EventsLog {
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        data_dir::create_dir_private(&dir)?;
        Ok(Self { dir })
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Appends and syncs `records`; compacts the file when it has grown past the bound.
    pub fn append(&self, id: &str, records: &[AgentEvent]) -> io::Result<()> {
        data_dir::create_dir_private(&self.dir)?;
        let mut buf = Vec::with_capacity(records.len() * 128);
        for record in records {
            serde_json::to_writer(&mut buf, record).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        let mut file = data_dir::open_append(&self.path(id))?;
        file.write_all(&buf)?;
        file.sync_data()?;
        if file.metadata()?.len() > COMPACT_OVER_BYTES {
            let mut kept = self.read(id, KEEP)?;
            kept.reverse();
            let mut out = Vec::with_capacity(kept.len() * 128);
            for record in &kept {
                serde_json::to_writer(&mut out, record).map_err(io::Error::other)?;
                out.push(b'\n');
            }
            write_atomically(&self.dir, &format!("{id}.log"), &out)?;
        }
        Ok(())
    }

    /// The newest `limit` transitions, newest first; lines that do not parse are skipped.
    pub fn read(&self, id: &str, limit: usize) -> io::Result<Vec<AgentEvent>> {
        let bytes = match data_dir::read(&self.path(id)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(bytes
            .split(|b| *b == b'\n')
            .rev()
            .filter_map(|line| serde_json::from_slice(line).ok())
            .take(limit)
            .collect())
    }

    pub fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::heartbeat::ReportedStatus;
    use crate::model::liveness::AgentStatus;
    use chrono::DateTime;

    fn record(n: i64) -> AgentEvent {
        AgentEvent::Liveness(EventRecord {
            from: AgentStatus::Up,
            to: AgentStatus::Late,
            at: DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap(),
            last_seen: None,
            reported_status: Some(ReportedStatus::Error),
        })
    }

    #[test]
    fn newest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventsLog::open(dir.path().to_owned()).unwrap();
        for n in 0..(3 * KEEP as i64) {
            log.append("a", &[record(n)]).unwrap();
        }
        let all = log.read("a", usize::MAX).unwrap();
        assert!(
            all.len() >= KEEP && all.len() <= 2 * KEEP + 100,
            "bounded: {}",
            all.len()
        );
        assert_eq!(all[0], record(3 * KEEP as i64 - 1), "newest first");
        assert_eq!(
            log.read("a", 2).unwrap(),
            [record(3 * KEEP as i64 - 1), record(3 * KEEP as i64 - 2)]
        );
        assert!(log.read("nobody", 5).unwrap().is_empty());
        log.remove("a").unwrap();
        assert!(log.read("a", 5).unwrap().is_empty());
    }
}
