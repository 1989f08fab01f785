//! The Store actor (the seed's FileMetadataStore; its role changed: it no longer writes one
//! JSON file per heartbeat, it checkpoints what the Manager holds). It owns everything under
//! `data_dir` but the registry files and the journal segment being appended to.
//!
//! | on disk | format module | what |
//! |---|---|---|
//! | `journal/<seq>.log` | `journal` (written by [`journal_writer`]) | every processed heartbeat, appended and synced once per flush; what a crash would otherwise lose |
//! | `agents/<id>.json` | here | each agent's state without history as of the last checkpoint, replaced atomically |
//! | `history/<id>.log` | `history_log` | each agent's resource history up to the last checkpoint, append-only, compacted |
//! | `events/<id>.log` | `events_log` | each agent's liveness transitions |
//! | `checkpoint.json` | here | the first journal segment the last checkpoint does not cover |
//!
//! The formats are private to the crate: nothing outside the Store reads or writes them.
//!
//! It runs on its own thread (a one-thread SyncArbiter) because it blocks on fsync, and one
//! thread keeps writes in the order the Manager sent them. The journal is opened here (its
//! replay is part of loading) and then handed to the JournalWriter, which appends on a
//! thread of its own so that flushes never wait behind a checkpoint.
//!
//! A [`Checkpoint`] makes a batch of changed agents durable with a fixed number of sync calls
//! however many agents it holds (append the histories and stage the state files, sync them all,
//! rename the states into place, fsync the directories), then records the journal segment the
//! batch covers up to (the Manager rotated the journal when it took the snapshot) and removes
//! the segments before it. A kill at any step leaves either the old marker (the journal is
//! replayed on top of whatever states were renamed: replay skips what a state already holds)
//! or the new one (everything it covers is durable).
//!
//! Production messages: [`Checkpoint`], [`ReadHistory`], [`ReadEvents`], [`AppendEvents`],
//! [`AppendProcessEvent`],
//! [`Delete`]. Loading happens before the actor starts ([`FileMetadataStore::load_all`]).
//! Tests also have `Get`, `Save`, `Update`, `Flush` and `LoadAll`.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use actix::prelude::*;
use chrono::Utc;
use slog::{error, info, Logger};

use serde::{Deserialize, Serialize};

// The file formats are the Store's own: nothing outside it reads or writes them.
pub(crate) mod events_log;
pub(crate) mod history_log;
pub(crate) mod journal;
pub mod journal_writer;
#[cfg(test)]
mod properties;

use crate::atomic_file::{is_temp_file, sync_dir, sync_filesystem, write_atomically, StagedFile, SYNC_ONE_BY_ONE_MAX};
use crate::data_dir::{self, Tightened};
use crate::model::agent::{AgentState, ResourceSample};
use crate::model::liveness::Transition;
use crate::model::process::ProcessEvent;
use events_log::{AgentEvent, EventRecord, EventsLog};
use history_log::HistoryLog;
use journal::{Journal, Replay};
use journal_writer::JournalWriter;

/// `data_dir/checkpoint.json`: where replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct CheckpointMarker {
    format_version: u32,
    /// Journal segments numbered below this are covered by the state and history files.
    journal_from: u64,
}

const CHECKPOINT_FILE: &str = "checkpoint.json";

/// Test hook, read once at start-up: a pause in the middle of every checkpoint (after the
/// histories are appended, before the states are renamed), announced by a log line, so a test
/// can kill the daemon inside a checkpoint. Never set in production.
pub const CHECKPOINT_PAUSE_ENV: &str = "HEARTBEATD_TEST_CHECKPOINT_PAUSE_MS";

/// A store operation failed; says which file and why.
#[derive(Debug, thiserror::Error)]
#[error("could not {action} {path}: {source}")]
pub struct StoreError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl StoreError {
    pub(crate) fn new(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Owns `data_dir`.
pub struct FileMetadataStore {
    data_dir: PathBuf,
    agents_dir: PathBuf,
    history: HistoryLog,
    events: EventsLog,
    journal_dir: PathBuf,
    /// Held from `open` until the [`JournalWriter`] takes it.
    journal: Option<Journal>,
    /// What the journal held at start-up; handed over once by [`FileMetadataStore::load_all`].
    replay: Option<Replay>,
    /// See [`CHECKPOINT_PAUSE_ENV`].
    checkpoint_pause: Option<std::time::Duration>,
    /// Events that could not be recorded (a full or read-only disk fails them all, one per
    /// agent) are logged at most once per [`EVENT_WARNING_INTERVAL`], with a count.
    event_failures: crate::log_gate::LogGate,
    log: Logger,
}

/// At most one "could not record" line per this long.
const EVENT_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl FileMetadataStore {
    /// Opens (creating if needed) the directories under `data_dir`, proves they are writable
    /// with a probe write (so an unusable data directory is reported at start-up), and reads the
    /// journal after the last checkpoint.
    pub fn open(data_dir: &Path, log: Logger) -> Result<Self, StoreError> {
        let agents_dir = data_dir.join("agents");
        let history_dir = data_dir.join("history");
        let journal_dir = data_dir.join("journal");
        for dir in [&agents_dir, &history_dir, &journal_dir] {
            data_dir::create_dir_private(dir).map_err(|e| StoreError::new("create", dir, e))?;
            let probe = ".write-probe";
            write_atomically(dir, probe, b"probe")
                .and_then(|()| fs::remove_file(dir.join(probe)))
                .map_err(|e| StoreError::new("write to", dir, e))?;
        }
        let history = HistoryLog::open(history_dir.clone()).map_err(|e| StoreError::new("open", &history_dir, e))?;
        let marker_path = data_dir.join(CHECKPOINT_FILE);
        let journal_from = match data_dir::read(&marker_path) {
            Ok(bytes) => {
                serde_json::from_slice::<CheckpointMarker>(&bytes)
                    .map_err(|e| StoreError::new("parse", &marker_path, io::Error::new(io::ErrorKind::InvalidData, e)))?
                    .journal_from
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StoreError::new("read", &marker_path, e)),
        };
        let (journal, replay) =
            Journal::open(journal_dir.clone(), journal_from).map_err(|e| StoreError::new("read", &journal_dir, e))?;
        let events_dir = data_dir.join("events");
        let events = EventsLog::open(events_dir.clone()).map_err(|e| StoreError::new("create", &events_dir, e))?;
        Ok(Self {
            data_dir: data_dir.to_owned(),
            agents_dir,
            history,
            events,
            journal_dir,
            journal: Some(journal),
            replay: Some(replay),
            checkpoint_pause: std::env::var(CHECKPOINT_PAUSE_ENV)
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map(std::time::Duration::from_millis),
            event_failures: crate::log_gate::LogGate::new(EVENT_WARNING_INTERVAL),
            log,
        })
    }

    /// Hands the journal over to its writer (once; later calls get `None`).
    pub(crate) fn take_journal(&mut self) -> Option<Journal> {
        self.journal.take()
    }

    /// Starts the [`JournalWriter`] on its own thread with the journal opened here.
    ///
    /// # Panics
    /// When called twice: there is one writer per journal.
    pub fn start_journal_writer(&mut self) -> Addr<JournalWriter> {
        JournalWriter::new(self.take_journal().expect("one journal writer per store")).start()
    }

    /// Starts the store on its own thread (a one-thread SyncArbiter).
    pub fn start(self) -> Addr<Self> {
        crate::single_thread::start_on_own_thread(self)
    }

    pub fn agents_dir(&self) -> &Path {
        &self.agents_dir
    }

    fn file_name(id: &str) -> String {
        format!("{id}.json")
    }

    fn path(&self, id: &str) -> PathBuf {
        self.agents_dir.join(Self::file_name(id))
    }

    /// Reads every agent's state (not its history) and hands over the journal records to
    /// replay; moves unparseable files aside and removes temp files of interrupted writes.
    /// Every entry of `agents/` is held to [`data_dir`]'s rules: a state file with the `fstat`
    /// of the open that reads it, any other entry with one `statx`; a link, a file of another
    /// user or one writable by others fails the load, and modes of older versions are
    /// tightened (counted in [`LoadedAgents::modes_tightened`]).
    pub fn load_all(&mut self) -> Result<LoadedAgents, StoreError> {
        let mut loaded = LoadedAgents {
            replay: self.replay.take().unwrap_or_default(),
            ..LoadedAgents::default()
        };
        if loaded.replay.damaged_lines > 0 {
            error!(self.log, "the journal has damaged lines (a write cut short by a crash); they are skipped";
                "lines" => loaded.replay.damaged_lines, "dir" => %self.journal_dir.display());
        }
        loaded.temp_files_removed += self.remove_temp_files(self.history.dir())?;
        let dir = &self.agents_dir;
        let entries = fs::read_dir(dir).map_err(|e| StoreError::new("list", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::new("list", dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if is_temp_file(&name) {
                self.remove_temp_file(&path)?;
                loaded.temp_files_removed += 1;
                continue;
            }
            if path.extension() != Some(OsStr::new("json")) {
                data_dir::audit_entry(&entry, &mut loaded.modes_tightened)
                    .map_err(|e| StoreError::new("inspect", &path, e))?;
                continue;
            }
            match self.read(&path, Some(&mut loaded.modes_tightened)) {
                Ok(state) if Some(state.id.as_str()) == path.file_stem().and_then(OsStr::to_str) => {
                    loaded.agents.push(state)
                }
                Ok(state) => {
                    self.set_aside(&path, &format!("it holds agent {:?}", state.id))?;
                    loaded.corrupt_files += 1;
                }
                Err(ReadError::Parse(reason)) => {
                    self.set_aside(&path, &reason)?;
                    loaded.corrupt_files += 1;
                }
                Err(ReadError::Io(e)) => return Err(StoreError::new("read", &path, e)),
            }
        }
        loaded.agents.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(loaded)
    }

    fn remove_temp_files(&self, dir: &Path) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in fs::read_dir(dir).map_err(|e| StoreError::new("list", dir, e))? {
            let entry = entry.map_err(|e| StoreError::new("list", dir, e))?;
            if entry.file_name().to_str().is_some_and(is_temp_file) {
                self.remove_temp_file(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn remove_temp_file(&self, path: &Path) -> Result<(), StoreError> {
        info!(self.log, "removing a temp file left by an interrupted write"; "path" => %path.display());
        fs::remove_file(path).map_err(|e| StoreError::new("remove", path, e))
    }

    /// Reads a state file; at start-up (`tightened` given) its mode is tightened if needed.
    fn read(&self, path: &Path, tightened: Option<&mut Tightened>) -> Result<AgentState, ReadError> {
        let bytes = match tightened {
            Some(tightened) => data_dir::read_at_load(path, tightened),
            None => data_dir::read(path),
        }
        .map_err(ReadError::Io)?;
        serde_json::from_slice(&bytes).map_err(|e| ReadError::Parse(e.to_string()))
    }

    /// Renames a damaged file to `<name>.corrupt-<time>`: kept for inspection, no longer loaded.
    fn set_aside(&self, path: &Path, reason: &str) -> Result<(), StoreError> {
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{stamp}"));
        let aside = PathBuf::from(aside);
        fs::rename(path, &aside).map_err(|e| StoreError::new("move aside", path, e))?;
        error!(self.log, "agent file is damaged and was moved aside; the agent starts without its saved state";
            "path" => %path.display(), "moved_to" => %aside.display(), "reason" => reason,
            "what_to_do" => "inspect or delete the moved file; restore a backup as <id>.json while heartbeatd is stopped");
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<AgentState>, StoreError> {
        let path = self.path(id);
        match self.read(&path, None) {
            Ok(state) => Ok(Some(state)),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(ReadError::Io(e)) => Err(StoreError::new("read", &path, e)),
            Err(ReadError::Parse(reason)) => Err(StoreError::new(
                "parse",
                &path,
                io::Error::new(io::ErrorKind::InvalidData, reason),
            )),
        }
    }

    pub fn save(&self, state: &AgentState) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).map_err(|e| StoreError::new("encode", self.path(&state.id), e.into()))?;
        write_atomically(&self.agents_dir, &Self::file_name(&state.id), &bytes)
            .map_err(|e| StoreError::new("write", self.path(&state.id), e))
    }

    /// Removes an agent's state and history; `false` if it had neither.
    pub fn delete(&mut self, id: &str) -> Result<bool, StoreError> {
        let path = self.path(id);
        let state = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(StoreError::new("remove", &path, e)),
        };
        let history = self
            .history
            .remove(id)
            .map_err(|e| StoreError::new("remove", self.history.path(id), e))?;
        self.events
            .remove(id)
            .map_err(|e| StoreError::new("remove", self.events.path(id), e))?;
        self.sync_dirs()?;
        Ok(state || history)
    }

    fn sync_dirs(&self) -> Result<(), StoreError> {
        for dir in [&self.agents_dir, &self.history.dir().to_owned()] {
            sync_dir(dir).map_err(|e| StoreError::new("sync", dir, e))?;
        }
        Ok(())
    }

    /// Persists `deltas`, records that the journal before segment `journal_from` is covered,
    /// and drops those segments.
    pub fn checkpoint(&mut self, deltas: &[AgentDelta], journal_from: u64) -> Result<PersistReport, StoreError> {
        let report = self.persist(deltas)?;
        let marker = CheckpointMarker {
            format_version: 1,
            journal_from,
        };
        let bytes = serde_json::to_vec(&marker).map_err(|e| StoreError::new("encode", CHECKPOINT_FILE, e.into()))?;
        write_atomically(&self.data_dir, CHECKPOINT_FILE, &bytes)
            .map_err(|e| StoreError::new("write", self.data_dir.join(CHECKPOINT_FILE), e))?;
        journal::remove_segments_before(&self.journal_dir, journal_from)
            .map_err(|e| StoreError::new("remove old segments from", &self.journal_dir, e))?;
        Ok(report)
    }

    /// Makes one batch durable. See the module documentation for the order of steps.
    fn persist(&mut self, deltas: &[AgentDelta]) -> Result<PersistReport, StoreError> {
        // Recreates the directories if they vanished, so writing resumes once it can.
        for dir in [&self.agents_dir, &self.history.dir().to_owned()] {
            data_dir::create_dir_private(dir).map_err(|e| StoreError::new("create", dir, e))?;
        }
        // A few files are synced one by one through their descriptors; a larger batch is closed
        // file by file and made durable with one syncfs, so it never needs more descriptors
        // than one (a flush can touch tens of thousands of files).
        let one_by_one = 2 * deltas.len() <= SYNC_ONE_BY_ONE_MAX;
        let mut appended = Vec::new();
        let mut records = 0;
        for delta in deltas.iter().filter(|d| !d.samples.is_empty()) {
            let file = self
                .history
                .append(&delta.state.id, &delta.samples)
                .map_err(|e| StoreError::new("append to", self.history.path(&delta.state.id), e))?;
            records += delta.samples.len();
            if one_by_one {
                appended.push(file);
            }
        }
        if let Some(pause) = self.checkpoint_pause {
            info!(self.log, "test hook: checkpoint paused"; "agents" => deltas.len(), "pause_ms" => pause.as_millis() as u64);
            std::thread::sleep(pause);
        }
        let mut staged = Vec::with_capacity(deltas.len());
        for delta in deltas {
            let bytes = serde_json::to_vec(&delta.state)
                .map_err(|e| StoreError::new("encode", self.path(&delta.state.id), e.into()))?;
            let mut file = StagedFile::stage(&self.agents_dir, &Self::file_name(&delta.state.id), &bytes)
                .map_err(|e| StoreError::new("write", self.path(&delta.state.id), e))?;
            if !one_by_one {
                file.close();
            }
            staged.push(file);
        }
        let synced = if one_by_one {
            appended
                .iter()
                .chain(staged.iter().filter_map(StagedFile::file))
                .try_for_each(fs::File::sync_data)
        } else {
            sync_filesystem(&self.agents_dir)
        };
        synced.map_err(|e| StoreError::new("sync", &self.agents_dir, e))?;
        for (delta, file) in deltas.iter().zip(staged) {
            file.commit()
                .map_err(|e| StoreError::new("rename into", self.path(&delta.state.id), e))?;
        }
        self.sync_dirs()?;

        let mut report = PersistReport {
            agents: deltas.len(),
            records,
            damaged_records_set_aside: 0,
        };
        for delta in deltas.iter().filter(|d| d.compact_to.is_some()) {
            let id = &delta.state.id;
            match self.history.compact(id, delta.compact_to.unwrap_or_default()) {
                Ok((_, damaged)) => report.damaged_records_set_aside += damaged,
                // The appended records are durable; compaction is retried at the next trigger.
                Err(e) => {
                    error!(self.log, "could not compact a history log; it will be tried again";
                    "path" => %self.history.path(id).display(), "error" => %e)
                }
            }
        }
        Ok(report)
    }

    /// The newest `limit` records of one agent's history on disk, oldest first.
    pub fn read_history(&self, id: &str, limit: usize) -> Result<HistoryOnDisk, StoreError> {
        let mut read = self
            .history
            .read(id)
            .map_err(|e| StoreError::new("read", self.history.path(id), e))?;
        if !read.damaged.is_empty() {
            error!(self.log, "history log has damaged records; they are skipped and set aside at its next compaction";
                "path" => %self.history.path(id).display(), "damaged_records" => read.damaged.len());
        }
        let skip = read.samples.len().saturating_sub(limit);
        read.samples.drain(..skip);
        Ok(HistoryOnDisk {
            samples: read.samples,
            damaged_records: read.damaged.len(),
        })
    }
}

enum ReadError {
    Io(io::Error),
    Parse(String),
}

impl Actor for FileMetadataStore {
    type Context = SyncContext<Self>;
}

/// What [`FileMetadataStore::load_all`] found on disk.
#[derive(Debug, Default)]
pub struct LoadedAgents {
    /// States as of the last checkpoint.
    pub agents: Vec<AgentState>,
    /// Journal records after the last checkpoint, to apply on top.
    pub replay: Replay,
    /// State files that did not parse and were moved aside.
    pub corrupt_files: usize,
    /// Temp files of interrupted writes that were removed.
    pub temp_files_removed: usize,
    /// State files (and other entries of `agents/`) readable by others, left so by an older
    /// version, made private.
    pub modes_tightened: Tightened,
}

/// Reads every agent's state at start-up.
#[cfg(any(test, feature = "testkit"))]
#[derive(Message)]
#[rtype(result = "Result<LoadedAgents, StoreError>")]
pub struct LoadAll;

#[cfg(any(test, feature = "testkit"))]
impl Handler<LoadAll> for FileMetadataStore {
    type Result = Result<LoadedAgents, StoreError>;

    fn handle(&mut self, _: LoadAll, _: &mut SyncContext<Self>) -> Self::Result {
        self.load_all()
    }
}

/// One agent's part of a [`Checkpoint`].
#[derive(Debug, Clone)]
pub struct AgentDelta {
    /// The agent's whole state, as it is to be on disk.
    pub state: AgentState,
    /// History records not yet on disk, oldest first.
    pub samples: Vec<ResourceSample>,
    /// Compact the log to this many records after appending.
    pub compact_to: Option<usize>,
}

/// What a [`Checkpoint`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistReport {
    pub agents: usize,
    pub records: usize,
    pub damaged_records_set_aside: usize,
}

/// Writes every changed agent's state and new history, then lets the journal before it go.
/// On failure the batch comes back so the Manager can keep it and try again (from memory,
/// never by re-syncing a file descriptor whose fsync failed); the journal still holds it.
#[derive(Message)]
#[rtype(result = "Result<PersistReport, (StoreError, Vec<AgentDelta>)>")]
pub struct Checkpoint {
    pub deltas: Vec<AgentDelta>,
    /// The first journal segment appended after the snapshot of `deltas` was taken (the
    /// answer of [`RotateJournal`](crate::store::journal_writer::RotateJournal)).
    pub journal_from: u64,
}

impl Handler<Checkpoint> for FileMetadataStore {
    type Result = Result<PersistReport, (StoreError, Vec<AgentDelta>)>;

    fn handle(&mut self, Checkpoint { deltas, journal_from }: Checkpoint, _: &mut SyncContext<Self>) -> Self::Result {
        self.checkpoint(&deltas, journal_from).map_err(|e| (e, deltas))
    }
}

/// Records liveness transitions in each agent's `events/<id>.log`. Sent by Liveness; a failure
/// is logged (the transition was logged already) and does not stop anything.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AppendEvents(pub Vec<Transition>);

impl Handler<AppendEvents> for FileMetadataStore {
    type Result = ();

    fn handle(&mut self, AppendEvents(transitions): AppendEvents, _: &mut SyncContext<Self>) {
        for t in transitions {
            let record = EventRecord {
                from: t.from,
                to: t.to,
                at: t.at,
                last_seen: t.last_seen,
                reported_status: t.reported_status,
            };
            if let Err(e) = self.events.append(&t.agent_id, &[AgentEvent::Liveness(record)]) {
                self.event_not_recorded(&t.agent_id, &e);
            }
        }
    }
}

impl FileMetadataStore {
    /// Logs an event that could not be written to `events/<id>.log`, at most once per
    /// [`EVENT_WARNING_INTERVAL`] with the count of those not logged: a full disk fails every
    /// agent's, and one line per agent would flood the log (100k lines at 100k agents).
    fn event_not_recorded(&mut self, agent_id: &str, e: &io::Error) {
        if let Some(not_logged) = self.event_failures.check(std::time::Instant::now()) {
            error!(self.log, "could not record an agent's event (liveness transition or process state change) in its events log; logged at most once per 10 s";
                "agent_id" => agent_id, "path" => %self.events.path(agent_id).display(), "error" => %e,
                "similar_not_logged" => not_logged,
                "what_to_do" => "free space on data_dir's file system (or make it writable again); the events missed are lost, the agents' state is not");
        }
    }
}

/// Records a supervised agent's change of process state in its events log.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AppendProcessEvent {
    pub agent_id: String,
    pub event: ProcessEvent,
}

impl Handler<AppendProcessEvent> for FileMetadataStore {
    type Result = ();

    fn handle(&mut self, msg: AppendProcessEvent, _: &mut SyncContext<Self>) {
        if let Err(e) = self.events.append(&msg.agent_id, &[AgentEvent::Process(msg.event)]) {
            self.event_not_recorded(&msg.agent_id, &e);
        }
    }
}

/// The newest `limit` transitions of one agent, newest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<AgentEvent>, StoreError>")]
pub struct ReadEvents {
    pub id: String,
    pub limit: usize,
}

impl Handler<ReadEvents> for FileMetadataStore {
    type Result = Result<Vec<AgentEvent>, StoreError>;

    fn handle(&mut self, msg: ReadEvents, _: &mut SyncContext<Self>) -> Self::Result {
        self.events
            .read(&msg.id, msg.limit)
            .map_err(|e| StoreError::new("read", self.events.path(&msg.id), e))
    }
}

/// An agent's history as the disk has it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryOnDisk {
    /// Oldest first.
    pub samples: Vec<ResourceSample>,
    /// Lines skipped because they did not parse.
    pub damaged_records: usize,
}

/// Reads the newest `limit` history records of one agent from disk.
#[derive(Message)]
#[rtype(result = "Result<HistoryOnDisk, StoreError>")]
pub struct ReadHistory {
    pub id: String,
    pub limit: usize,
}

impl Handler<ReadHistory> for FileMetadataStore {
    type Result = Result<HistoryOnDisk, StoreError>;

    fn handle(&mut self, msg: ReadHistory, _: &mut SyncContext<Self>) -> Self::Result {
        self.read_history(&msg.id, msg.limit)
    }
}

/// Reads one agent's state file; `None` if it has none.
#[cfg(any(test, feature = "testkit"))]
#[derive(Message)]
#[rtype(result = "Result<Option<AgentState>, StoreError>")]
pub struct Get(pub String);

#[cfg(any(test, feature = "testkit"))]
impl Handler<Get> for FileMetadataStore {
    type Result = Result<Option<AgentState>, StoreError>;

    fn handle(&mut self, Get(id): Get, _: &mut SyncContext<Self>) -> Self::Result {
        self.get(&id)
    }
}

/// Replaces one agent's state file, atomically and durably.
#[cfg(any(test, feature = "testkit"))]
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Save(pub AgentState);

#[cfg(any(test, feature = "testkit"))]
impl Handler<Save> for FileMetadataStore {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, Save(state): Save, _: &mut SyncContext<Self>) -> Self::Result {
        self.save(&state)
    }
}

/// Read-modify-write of one agent's state file, in one step of the store's thread.
#[cfg(any(test, feature = "testkit"))]
#[derive(Message)]
#[rtype(result = "Result<Option<AgentState>, StoreError>")]
pub struct Update {
    pub id: String,
    /// Applied to the stored state; not called when the agent has no file.
    pub change: Box<dyn FnOnce(&mut AgentState) + Send>,
}

#[cfg(any(test, feature = "testkit"))]
impl Handler<Update> for FileMetadataStore {
    type Result = Result<Option<AgentState>, StoreError>;

    fn handle(&mut self, Update { id, change }: Update, _: &mut SyncContext<Self>) -> Self::Result {
        let Some(mut state) = self.get(&id)? else {
            return Ok(None);
        };
        change(&mut state);
        self.save(&state)?;
        Ok(Some(state))
    }
}

/// Removes one agent's state and history; `false` if it had neither.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Delete(pub String);

impl Handler<Delete> for FileMetadataStore {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, Delete(id): Delete, _: &mut SyncContext<Self>) -> Self::Result {
        self.delete(&id)
    }
}

/// Makes every rename and removal so far durable, and proves the directories still work.
#[cfg(any(test, feature = "testkit"))]
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Flush;

#[cfg(any(test, feature = "testkit"))]
impl Handler<Flush> for FileMetadataStore {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: Flush, _: &mut SyncContext<Self>) -> Self::Result {
        self.sync_dirs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::agent::AgentInfo;
    use crate::model::heartbeat::Heartbeat;
    use crate::store::journal::JournalRecord;

    fn quiet() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    /// An agent that has sent `heartbeats` heartbeats, and the samples they produced.
    fn agent(id: &str, heartbeats: u64) -> (AgentState, Vec<ResourceSample>) {
        let mut state = AgentState::new(&AgentInfo {
            id: id.into(),
            name: "n".into(),
            agent_type: "custom".into(),
            ..Default::default()
        });
        let samples = (0..heartbeats)
            .map(|n| {
                let at = chrono::DateTime::from_timestamp(1_700_000_000 + n as i64, 0).unwrap();
                state.record(&Heartbeat {
                    agent_id: id.into(),
                    timestamp: at,
                    received_at: at,
                    pid: 7,
                    cpu: 12.5,
                    memory: n,
                    status: None,
                })
            })
            .collect();
        (state, samples)
    }

    fn lower_open_files_limit(soft: libc::rlim_t) {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain getrlimit/setrlimit on a local struct.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            limit.rlim_cur = limit.rlim_cur.min(soft);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }

    fn delta(id: &str, heartbeats: u64) -> AgentDelta {
        let (state, samples) = agent(id, heartbeats);
        AgentDelta {
            state,
            samples,
            compact_to: None,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_persisted_batch_reloads_with_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        // More agents than are synced one by one, so the syncfs path runs; and more files than
        // the descriptor limit, which a batch must not need. (Lowered for this process: other
        // tests here hold a handful of files at most.)
        lower_open_files_limit(512);
        let deltas: Vec<_> = (0..1500).map(|i| delta(&format!("a{i:04}"), 3)).collect();
        let report = store.checkpoint(&deltas, 0).unwrap();
        assert_eq!((report.agents, report.records), (1500, 4500));

        let mut reopened = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        let loaded = reopened.load_all().unwrap();
        assert_eq!(loaded.agents.len(), 1500);
        assert_eq!(loaded.agents[0], deltas[0].state);
        let history = reopened.read_history("a0000", 1440).unwrap();
        assert_eq!(history.samples, deltas[0].samples);
        assert_eq!(
            reopened.read_history("a0000", 2).unwrap().samples,
            deltas[0].samples[1..]
        );
        // And the small path: a batch synced file by file.
        store.checkpoint(&[delta("small", 2)], 0).unwrap();
        assert_eq!(reopened.read_history("small", 10).unwrap().samples.len(), 2);
        assert_eq!(reopened.get("zzz").unwrap(), None);
    }

    #[test]
    fn the_journal_is_replayed_until_a_checkpoint_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        let mut journal = store.take_journal().unwrap();
        let record = |n: u64| JournalRecord {
            agent_id: "a".into(),
            seq: n,
            timestamp: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            received_at: chrono::DateTime::from_timestamp(1_700_000_001, 0).unwrap(),
            cpu: 1.0,
            memory: n,
            pid: 9,
            status: None,
        };
        journal.append(&[record(1), record(2)]).unwrap();
        drop((store, journal)); // as after a crash: no checkpoint

        let mut reopened = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        let loaded = reopened.load_all().unwrap();
        assert!(loaded.agents.is_empty());
        assert_eq!(loaded.replay.records, [record(1), record(2)]);

        // A checkpoint covers them: the next start replays nothing.
        let mut journal = reopened.take_journal().unwrap();
        let journal_from = journal.rotate();
        reopened.checkpoint(&[delta("a", 2)], journal_from).unwrap();
        journal.append(&[record(3)]).unwrap();
        drop((reopened, journal));
        let mut third = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        let loaded = third.load_all().unwrap();
        assert_eq!(loaded.agents.len(), 1);
        assert_eq!(loaded.replay.records, [record(3)]);
        let segments = fs::read_dir(dir.path().join("journal")).unwrap().count();
        assert_eq!(segments, 1, "covered segments are removed");
    }

    #[test]
    fn compaction_keeps_the_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        let mut d = delta("a", 25);
        d.compact_to = Some(10);
        store.checkpoint(&[d], 0).unwrap();
        let seqs: Vec<_> = store
            .read_history("a", 100)
            .unwrap()
            .samples
            .iter()
            .map(|s| s.seq)
            .collect();
        assert_eq!(seqs, (16..=25).collect::<Vec<_>>());
    }

    #[test]
    fn corrupt_state_files_are_moved_aside_and_temp_files_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        store.checkpoint(&[delta("good", 2)], 0).unwrap();
        let agents = store.agents_dir().to_owned();
        fs::write(agents.join("torn.json"), b"{\"format_version\":2,\"id\":\"to").unwrap();
        fs::write(
            agents.join("other.json"),
            serde_json::to_vec(&agent("good", 1).0).unwrap(),
        )
        .unwrap();
        fs::write(agents.join(".good.json.tmp-abc"), b"partial").unwrap();
        fs::write(dir.path().join("history").join(".good.log.tmp-abc"), b"partial").unwrap();

        let loaded = store.load_all().unwrap();

        assert_eq!(
            loaded.agents.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["good"]
        );
        assert_eq!(loaded.corrupt_files, 2);
        assert_eq!(loaded.temp_files_removed, 2);
        let names = names(&agents);
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "good.json");
        assert!(names[1].starts_with("other.json.corrupt-"), "{names:?}");
        assert!(names[2].starts_with("torn.json.corrupt-"), "{names:?}");
        assert_eq!(self::names(&dir.path().join("history")), ["good.log"]);
    }

    #[test]
    fn open_reports_an_unwritable_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let err = FileMetadataStore::open(&file, quiet()).err().expect("must fail");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    #[test]
    fn a_failed_persist_leaves_no_temp_file_and_the_old_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        store.checkpoint(&[delta("a", 1)], 0).unwrap();
        // A directory where b's history log should go makes the append fail.
        fs::create_dir(dir.path().join("history").join("b.log")).unwrap();
        assert!(store.checkpoint(&[delta("a", 2), delta("b", 1)], 0).is_err());
        assert_eq!(store.get("a").unwrap().unwrap().heartbeat_count, 1, "old state kept");
        assert_eq!(names(store.agents_dir()), ["a.json"]);
    }

    #[actix_rt::test]
    async fn messages_get_save_update_delete_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let addr = FileMetadataStore::open(dir.path(), quiet()).unwrap().start();

        let checkpoint = Checkpoint {
            deltas: vec![delta("a", 2)],
            journal_from: 0,
        };
        addr.send(checkpoint).await.unwrap().unwrap();
        addr.send(Save(agent("b", 0).0)).await.unwrap().unwrap();
        let updated = addr
            .send(Update {
                id: "a".into(),
                change: Box::new(|m| m.name = "renamed".into()),
            })
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(updated.name, "renamed");
        assert_eq!(
            addr.send(Get("a".into())).await.unwrap().unwrap().unwrap().name,
            "renamed"
        );
        let history = addr
            .send(ReadHistory {
                id: "a".into(),
                limit: 10,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(history.samples.len(), 2);

        assert!(addr.send(Delete("a".into())).await.unwrap().unwrap());
        assert!(!addr.send(Delete("a".into())).await.unwrap().unwrap());
        assert!(addr.send(Get("a".into())).await.unwrap().unwrap().is_none());
        assert!(addr
            .send(ReadHistory {
                id: "a".into(),
                limit: 10
            })
            .await
            .unwrap()
            .unwrap()
            .samples
            .is_empty());
        addr.send(Flush).await.unwrap().unwrap();
    }
}
