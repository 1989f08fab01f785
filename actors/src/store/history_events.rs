//! The messages that append to and read an agent's `history/<id>.log` and `events/<id>.log`
//! (the formats are `history_log` and `events_log`): liveness transitions and process state
//! changes recorded, failures to record them logged without flooding, and reads for the API.

use std::io;

use actix::prelude::*;
use slog::error;

use super::events_log::{AgentEvent, EventRecord};
use super::{FileMetadataStore, StoreError};
use crate::model::agent::ResourceSample;
use crate::model::liveness::Transition;
use crate::model::process::ProcessEvent;

impl FileMetadataStore {
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
