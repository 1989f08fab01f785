//! The Manager actor (the seed's MultiAgentManager): owns every agent's state in memory
//! (authoritative) and the addresses of the Registry, Liveness, the JournalWriter and the
//! Store.
//!
//! [`UpdateHeartbeats`] applies heartbeats in memory: each agent's state changes, its history
//! sample waits for the next checkpoint, and a journal record waits for the next flush. The
//! writes happen off the request path.
//!
//! | module | what |
//! |---|---|
//! | this one | agent state, applying heartbeats, journal replay at start-up |
//! | [`persistence`] | the flush and checkpoint pipelines, retries, the shutdown [`Flush`] |
//! | [`admin`] | the messages behind the admin API, SIGHUP's agent import, `auto_register` |
//! | [`sorted_list`] | the sorted listing ([`sorted_list::ListSorted`]): worst first, or by a column, with process and reported-status filters |
//! | [`figures`] | the per-agent figures a `/metrics` scrape reads ([`GetAgentFigures`]) |
//! | [`supervision`] | one [`AgentProcess`] per agent with a `command`: kept in step with the registry, told of heartbeats and silence, started/stopped/restarted on request |

pub mod admin;
pub mod figures;
pub mod persistence;
pub mod sorted_list;
pub mod supervision;

pub use admin::*;
pub use figures::GetAgentFigures;
pub use persistence::{Flush, PersistError};
pub use supervision::{ControlAgent, ControlError, ReleaseAll, RetireAll};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::channel::oneshot;
use slog::{info, warn, Logger};

use crate::counters::ManagerCounters;
use crate::liveness::{self, Liveness};
use crate::log_gate::LogGate;
use crate::model::agent::{AgentInfo, AgentState, ResourceSample};
use crate::model::heartbeat::Heartbeat;
use crate::registry::{Registry, RegistrySnapshot};
use crate::store;
use crate::store::journal::JournalRecord;
use crate::store::journal_writer::JournalWriter;
use crate::store::FileMetadataStore;
use crate::supervision::process::{AgentProcess, SupervisionContext};
use persistence::{FIRST_RETRY_BACKOFF, MAX_SAMPLES_BETWEEN_CHECKPOINTS, STORE_ERROR_LOG_INTERVAL};

/// How the Manager persists.
#[derive(Debug, Clone, Copy)]
pub struct ManagerPolicy {
    /// History records kept per agent: reads return at most this many, and a log is compacted
    /// back to it once it holds twice as many.
    pub history_len: usize,
    /// Time between journal flushes; zero for write-through.
    pub flush_interval: Duration,
    /// Time between checkpoints.
    pub checkpoint_interval: Duration,
    /// Beyond this difference between an agent's clock and ours, warn once per agent.
    pub max_clock_skew: Duration,
}

/// Why a write-through batch failed. Its heartbeats count in `total_errors`; they are applied
/// in memory and written by a later flush.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpdateError {
    #[error("could not persist: {0}")]
    Persist(#[from] PersistError),
}

/// One agent as the Manager holds it.
struct AgentEntry {
    state: AgentState,
    /// History samples not yet in the agent's history file, in the order the server received
    /// them, numbered in that order.
    since_checkpoint: Vec<PendingSample>,
    /// Changed since the last checkpoint.
    dirty: bool,
    /// Its clock skew was warned about (once per agent per run).
    skew_warned: bool,
}

impl AgentEntry {
    /// Queues a history sample for the next checkpoint. Only the newest `history_len` can ever
    /// be read back (the log is compacted to that many), so older ones are dropped here, in
    /// halves to keep this O(1) amortised: a fast agent between two checkpoints then costs
    /// at most `2 × history_len` samples of memory and of checkpoint writing, not one per
    /// heartbeat.
    ///
    /// One agent's heartbeats can reach the Manager out of order: two requests sent one after
    /// the other may land on different HTTP threads and workers. The sample goes where its
    /// receive time puts it, and takes the number of the sample it goes before (those after
    /// move up by one), so the history stays in receive order with ascending numbers, as the
    /// history file's reader needs. Only a heartbeat overtaken across a checkpoint stays
    /// after the samples that checkpoint wrote.
    ///
    /// Returns how many older samples were dropped.
    fn push_sample(&mut self, mut sample: ResourceSample, received_at: DateTime<Utc>, history_len: usize) -> usize {
        let mut dropped = 0;
        if self.since_checkpoint.len() >= 2 * history_len.max(1) {
            dropped = self.since_checkpoint.len() - history_len;
            self.since_checkpoint.drain(..dropped);
        }
        let at = self.since_checkpoint.partition_point(|p| p.received_at <= received_at);
        for later in self.since_checkpoint[at..].iter_mut().rev() {
            std::mem::swap(&mut later.sample.seq, &mut sample.seq);
        }
        self.since_checkpoint.insert(at, PendingSample { received_at, sample });
        dropped
    }

    /// The samples waiting for the next checkpoint, oldest first.
    fn pending_samples(&self) -> impl Iterator<Item = ResourceSample> + '_ {
        self.since_checkpoint.iter().map(|p| p.sample)
    }
}

/// A history sample waiting for the next checkpoint.
#[derive(Debug, Clone, Copy)]
struct PendingSample {
    /// When the server received its heartbeat: the order of an agent's history.
    received_at: DateTime<Utc>,
    sample: ResourceSample,
}

type Waiter = oneshot::Sender<Result<(), PersistError>>;

/// Owns the agents' state.
pub struct Manager {
    policy: ManagerPolicy,
    agents: HashMap<String, AgentEntry>,
    /// Ids of agents changed since the last checkpoint, in the order they changed.
    dirty: Vec<String>,
    samples_since_checkpoint: usize,
    /// Records for the next journal flush.
    journal_pending: Vec<JournalRecord>,
    /// Answered when the next journal flush completes (write-through updates, [`Flush`]).
    flush_waiters: Vec<Waiter>,
    flush_in_flight: bool,
    /// Records of the flush in flight (back in `journal_pending` if it fails): counted with
    /// those pending as held in memory, not yet synced.
    flush_in_flight_records: usize,
    /// A flush was due while one was syncing: the next starts when that one is done, so a
    /// slow sync does not stretch what a kill -9 can lose to two intervals.
    flush_overdue: bool,
    /// Answered when the next checkpoint completes ([`Flush`]).
    checkpoint_waiters: Vec<Waiter>,
    checkpoint_in_flight: bool,
    /// After a failed write: no timed write before this instant.
    retry_at: Option<Instant>,
    retry_backoff: Duration,
    /// Shared with Stats: errors and damage, for `/heartbeat/stats`.
    health: Arc<ManagerCounters>,
    registry_view: RegistrySnapshot,
    /// Held so the Registry lives as long as the Manager; admin messages go through it.
    registry: Addr<Registry>,
    store: Addr<FileMetadataStore>,
    /// Flushes go here, on a thread of their own: they never wait behind a checkpoint.
    journal: Addr<JournalWriter>,
    /// Told of every heartbeat; asked for statuses. `None` in tests that do not need it.
    liveness: Option<Addr<Liveness>>,
    /// Where supervised agents' outputs and events go; `None`: no agent is run (tests).
    supervision: Option<SupervisionContext>,
    /// The process actor of each agent with a `command`.
    processes: HashMap<String, Addr<AgentProcess>>,
    /// Keepers the previous heartbeatd left running, by agent id: taken over when
    /// supervision starts (see [`crate::supervision::adoption`]).
    adoptable: HashMap<String, crate::supervision::adoption::Adoptable>,
    store_error_gate: LogGate,
    /// The flush and checkpoint timers, armed only while something waits to be written.
    timers: persistence::PersistTimers,
    log: Logger,
}

impl Manager {
    /// A Manager starting from the states the Store loaded at start-up, with the journal
    /// records after the last checkpoint applied on top.
    pub fn new(
        policy: ManagerPolicy,
        loaded: store::LoadedAgents,
        registry: Addr<Registry>,
        registry_view: RegistrySnapshot,
        store: Addr<FileMetadataStore>,
        journal: Addr<JournalWriter>,
        log: Logger,
    ) -> Self {
        let agents = loaded
            .agents
            .into_iter()
            .map(|state| {
                let entry = AgentEntry {
                    state,
                    since_checkpoint: Vec::new(),
                    dirty: false,
                    skew_warned: false,
                };
                (entry.state.id.clone(), entry)
            })
            .collect();
        let mut manager = Self {
            policy,
            agents,
            dirty: Vec::new(),
            samples_since_checkpoint: 0,
            journal_pending: Vec::new(),
            flush_waiters: Vec::new(),
            flush_in_flight: false,
            flush_in_flight_records: 0,
            flush_overdue: false,
            checkpoint_waiters: Vec::new(),
            checkpoint_in_flight: false,
            retry_at: None,
            retry_backoff: FIRST_RETRY_BACKOFF,
            health: ManagerCounters::new(),
            registry_view,
            registry,
            store,
            journal,
            liveness: None,
            supervision: None,
            processes: HashMap::new(),
            adoptable: HashMap::new(),
            store_error_gate: LogGate::new(STORE_ERROR_LOG_INTERVAL),
            timers: persistence::PersistTimers::default(),
            log,
        };
        manager
            .health
            .damaged((loaded.corrupt_files + loaded.replay.damaged_lines) as u64);
        manager.replay(loaded.replay.records);
        manager
    }

    /// Registered agents that had reported before this start (from their state files or the
    /// journal): Liveness starts them `up`.
    pub fn seen_agents(&self) -> Vec<String> {
        self.agents
            .values()
            .filter(|e| e.state.last_seen.is_some() && self.registry_view.contains(&e.state.id))
            .map(|e| e.state.id.clone())
            .collect()
    }

    /// The counters Stats reports.
    pub fn health(&self) -> Arc<ManagerCounters> {
        Arc::clone(&self.health)
    }

    /// The Liveness actor to tell of heartbeats and ask for statuses.
    pub fn with_liveness(mut self, liveness: Addr<Liveness>) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// Runs the agents that have a `command` (see [`supervision`]).
    pub fn with_supervision(mut self, cx: SupervisionContext) -> Self {
        self.supervision = Some(cx);
        self
    }

    /// Takes over these keepers, left running by the previous heartbeatd, instead of
    /// starting their agents.
    pub fn with_adoptable(mut self, keepers: HashMap<String, crate::supervision::adoption::Adoptable>) -> Self {
        self.adoptable = keepers;
        self
    }

    /// Applies journal records newer than the loaded states (older ones are already in them).
    fn replay(&mut self, records: Vec<JournalRecord>) {
        let total = records.len();
        let (mut applied, mut unknown) = (0usize, 0usize);
        let history_len = self.policy.history_len;
        for record in records {
            let Some(entry) = self.entry(&record.agent_id) else {
                unknown += 1;
                continue;
            };
            if record.seq <= entry.state.heartbeat_count {
                continue;
            }
            // Applied as it was when it was processed, so the state and the history come out
            // exactly as they were before the crash.
            entry.state.heartbeat_count = record.seq - 1;
            let sample = entry.state.record(&record.heartbeat());
            let dropped = entry.push_sample(sample, record.received_at, history_len);
            let newly_dirty = !entry.dirty;
            entry.dirty = true;
            if newly_dirty {
                self.dirty.push(record.agent_id);
            }
            self.samples_since_checkpoint = self.samples_since_checkpoint + 1 - dropped;
            applied += 1;
        }
        if total > 0 {
            info!(self.log, "journal replayed: heartbeats since the last checkpoint restored";
                "records" => total, "applied" => applied, "already_in_state" => total - applied - unknown,
                "of_unregistered_agents" => unknown);
        }
    }

    /// The agent's entry, created from the registry on its first heartbeat; `None` for an
    /// agent that is not registered.
    fn entry(&mut self, id: &str) -> Option<&mut AgentEntry> {
        if !self.registry_view.contains(id) {
            return None;
        }
        if !self.agents.contains_key(id) {
            let info: AgentInfo = self.registry_view.get(id)?;
            let entry = AgentEntry {
                state: AgentState::new(&info),
                since_checkpoint: Vec::new(),
                dirty: false,
                skew_warned: false,
            };
            self.agents.insert(info.id, entry);
        }
        self.agents.get_mut(id)
    }
}

impl Actor for Manager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(self.log, "manager started"; "agents_with_state" => self.agents.len(),
            "history_len" => self.policy.history_len,
            "flush_interval_ms" => self.policy.flush_interval.as_millis() as u64,
            "checkpoint_interval_s" => self.policy.checkpoint_interval.as_secs());
        // The journal replayed at start-up may have left agents to checkpoint.
        self.arm_timers(ctx);
        self.start_supervision(ctx);
    }
}

/// Applies a batch of heartbeats (the seed's `UpdateHeartbeat`, batched): for each, get or
/// create the agent's state, set `last_heartbeat` and `last_seen`, queue its history sample
/// and its journal record. In write-through mode it is answered once the journal holds it.
#[derive(Message)]
#[rtype(result = "Result<BatchOutcome, UpdateError>")]
pub struct UpdateHeartbeats(pub Vec<Heartbeat>);

/// What became of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: usize,
    /// Ids that are not registered (any more): those heartbeats were not applied.
    pub unknown_agents: Vec<String>,
}

impl Handler<UpdateHeartbeats> for Manager {
    type Result = ResponseActFuture<Self, Result<BatchOutcome, UpdateError>>;

    fn handle(&mut self, UpdateHeartbeats(batch): UpdateHeartbeats, ctx: &mut Context<Self>) -> Self::Result {
        let mut outcome = BatchOutcome::default();
        let mut seen = Vec::with_capacity(batch.len());
        let history_len = self.policy.history_len;
        let max_skew_ms = self.policy.max_clock_skew.as_millis() as i64;
        let supervising = !self.processes.is_empty();
        let mut heard = Vec::new();
        for hb in batch {
            let supervised = supervising && self.processes.contains_key(&hb.agent_id);
            let Some(entry) = self.entry(&hb.agent_id) else {
                outcome.unknown_agents.push(hb.agent_id);
                continue;
            };
            let sample = entry.state.record(&hb);
            let skew_ms = entry.state.clock_skew_ms.unwrap_or(0);
            let warn_skew = skew_ms.abs() > max_skew_ms && !entry.skew_warned;
            entry.skew_warned |= warn_skew;
            seen.push((hb.agent_id.clone(), hb.received_at, hb.status));
            if supervised {
                heard.push((hb.agent_id.clone(), hb.pid));
            }
            let dropped = entry.push_sample(sample, hb.received_at, history_len);
            let newly_dirty = !entry.dirty;
            entry.dirty = true;
            self.journal_pending.push(JournalRecord {
                agent_id: hb.agent_id.clone(),
                seq: sample.seq,
                timestamp: hb.timestamp,
                received_at: hb.received_at,
                cpu: hb.cpu,
                memory: hb.memory,
                pid: hb.pid,
                status: hb.status,
            });
            if warn_skew {
                self.health.skewed_agent();
                warn!(self.log, "agent clock is off; liveness is judged on the server's clock, so nothing breaks (logged once per agent)";
                    "agent_id" => &hb.agent_id, "clock_skew_ms" => skew_ms, "max_clock_skew_s" => self.policy.max_clock_skew.as_secs(),
                    "what_to_do" => "check NTP on the agent's host");
            }
            if newly_dirty {
                self.dirty.push(hb.agent_id);
            }
            self.samples_since_checkpoint = self.samples_since_checkpoint + 1 - dropped;
            outcome.applied += 1;
        }
        self.publish_unsynced();
        if let (Some(liveness), false) = (&self.liveness, seen.is_empty()) {
            liveness.do_send(liveness::Seen(seen));
        }
        for (id, pid) in heard {
            self.heard(&id, pid);
        }
        if self.samples_since_checkpoint >= MAX_SAMPLES_BETWEEN_CHECKPOINTS && self.may_retry() {
            // The journal first, so the checkpoint's records are synced before it runs.
            self.start_flush(ctx);
            self.start_checkpoint(ctx);
        }
        self.arm_timers(ctx);
        if !self.write_through() || outcome.applied == 0 {
            return Box::pin(fut::ready(Ok(outcome)));
        }
        let (tx, rx) = oneshot::channel();
        self.flush_waiters.push(tx);
        if self.may_retry() {
            self.start_flush(ctx);
        }
        Box::pin(fut::wrap_future(async move {
            match rx.await {
                Ok(Ok(())) => Ok(outcome),
                Ok(Err(e)) => Err(UpdateError::Persist(e)),
                Err(_) => Err(UpdateError::Persist(PersistError::Abandoned)),
            }
        }))
    }
}

#[cfg(test)]
mod tests;
