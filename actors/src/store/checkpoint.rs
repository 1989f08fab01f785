//! Checkpoints: a batch of changed agents made durable with a fixed number of sync calls
//! (histories appended, states staged, all synced, states renamed into place, directories
//! synced), then `checkpoint.json` moved past the journal segments the batch covers, and those
//! segments removed. See the Store's module documentation for why the order is safe.

use std::fs;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use slog::{error, info};

use super::journal;
use super::{FileMetadataStore, StoreError};
use crate::atomic_file::{sync_filesystem, write_atomically, StagedFile, SYNC_ONE_BY_ONE_MAX};
use crate::data_dir;
use crate::model::agent::{AgentState, ResourceSample};

/// `data_dir/checkpoint.json`: where replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CheckpointMarker {
    format_version: u32,
    /// Journal segments numbered below this are covered by the state and history files.
    pub(super) journal_from: u64,
}

pub(super) const CHECKPOINT_FILE: &str = "checkpoint.json";

impl FileMetadataStore {
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
