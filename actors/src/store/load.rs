//! Loading at start-up: every agent's state file read (damaged ones moved aside, temp files
//! of interrupted writes removed, modes of older versions tightened), and the journal records
//! after the last checkpoint handed over for replay.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[cfg(any(test, feature = "testkit"))]
use actix::prelude::*;
use chrono::Utc;
use slog::{error, info};

use super::journal::Replay;
use super::{FileMetadataStore, StoreError};
use crate::atomic_file::is_temp_file;
use crate::data_dir::{self, Tightened};
use crate::model::agent::AgentState;

impl FileMetadataStore {
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
    pub(super) fn read(&self, path: &Path, tightened: Option<&mut Tightened>) -> Result<AgentState, ReadError> {
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
}

pub(super) enum ReadError {
    Io(io::Error),
    Parse(String),
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
