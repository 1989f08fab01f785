//! The Store actor (the seed's FileMetadataStore; its role changed: it no longer writes one
//! JSON file per heartbeat, it checkpoints what the Manager holds). It owns everything under
//! `data_dir` but the registry files and the journal segment being appended to.
//!
//! | on disk | format module | what |
//! |---|---|---|
//! | `journal/<seq>.log` | `journal` (written by [`journal_writer`]) | every processed heartbeat, appended and synced once per flush; what a crash would otherwise lose |
//! | `agents/<id>.json` | here (`load.rs` reads them at start-up) | each agent's state without history as of the last checkpoint, replaced atomically |
//! | `history/<id>.log` | `history_log` | each agent's resource history up to the last checkpoint, append-only, compacted |
//! | `events/<id>.log` | `events_log` | each agent's liveness transitions |
//! | `checkpoint.json` | `checkpoint.rs` | the first journal segment the last checkpoint does not cover |
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
//!
//! | file | role |
//! |---|---|
//! | `mod.rs` | the Store actor, opening `data_dir`, one agent's state file, its messages |
//! | `load.rs` | loading at start-up: state files, their repairs, the journal to replay |
//! | `checkpoint.rs` | [`Checkpoint`]: making a batch durable, `checkpoint.json` |
//! | `history_events.rs` | the messages that append to and read history and events logs |
//! | `journal.rs`, `history_log.rs`, `events_log.rs` | the private file formats |
//! | [`journal_writer`] | the JournalWriter actor, appending to the journal |

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use actix::prelude::*;
use slog::Logger;

// The file formats are the Store's own: nothing outside it reads or writes them.
pub(crate) mod events_log;
pub(crate) mod history_log;
pub(crate) mod journal;
pub mod journal_writer;
#[cfg(test)]
mod properties;

mod checkpoint;
mod history_events;
mod load;

use crate::atomic_file::{sync_dir, write_atomically};
use crate::data_dir;
use crate::model::agent::AgentState;
pub use checkpoint::{AgentDelta, Checkpoint, PersistReport};
use checkpoint::{CheckpointMarker, CHECKPOINT_FILE};
use events_log::EventsLog;
pub use history_events::{AppendEvents, AppendProcessEvent, HistoryOnDisk, ReadEvents, ReadHistory};
use history_log::HistoryLog;
use journal::{Journal, Replay};
use journal_writer::JournalWriter;
#[cfg(any(test, feature = "testkit"))]
pub use load::LoadAll;
pub use load::LoadedAgents;
use load::ReadError;

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
}

impl Actor for FileMetadataStore {
    type Context = SyncContext<Self>;
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
mod tests;
