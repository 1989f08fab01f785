//! The Manager actor: owns every agent's state in memory (authoritative) and the addresses of
//! the Registry and the Store.
//!
//! [`UpdateHeartbeats`] applies heartbeats in memory: each agent's state changes, its history
//! sample waits for the next checkpoint, and a journal record waits for the next flush. Both
//! kinds of write happen off the request path, in two pipelines to the Store:
//!
//! - **flush** (every `flush_interval`): the pending journal records, one append and one sync.
//!   After `kill -9`, at most the last interval of heartbeats is lost. With `flush_interval = 0`
//!   (write-through) an update is answered only once a flush holding it is synced; updates
//!   that arrive meanwhile share the next flush (group commit).
//! - **checkpoint** (every `checkpoint_interval`, when too many samples wait, and at shutdown):
//!   every changed agent's state and new history samples; then the journal before it can go.
//!
//! A failed write keeps everything in memory and is retried with backoff (doubling up to 30 s);
//! errors are logged at most once per 10 s. [`Flush`] (shutdown) flushes and checkpoints now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::channel::oneshot;
use serde::Serialize;
use slog::{error, info, warn, Logger};

use crate::counters::ManagerCounters;
use crate::liveness::{self, Liveness};
use crate::log_gate::LogGate;
use crate::model::agent::{AgentInfo, AgentState, AgentView, ResourceSample};
use crate::model::heartbeat::Heartbeat;
use crate::model::liveness::AgentStatus;
use crate::registry::{self, Registry, RegistryError, RegistrySnapshot};
use crate::store::events_log::EventRecord;
use crate::store::journal::JournalRecord;
use crate::store::journal_writer::{AppendJournal, JournalWriter, RotateJournal};
use crate::store::{self, AgentDelta, FileMetadataStore, PersistReport, StoreError};

/// At most one store-error log line per this long; the others are counted in it.
const STORE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// First wait before retrying a failed write; doubles up to [`MAX_RETRY_BACKOFF`].
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);
/// A checkpoint starts early once this many history samples wait in memory (bounds memory
/// at high rates: about 40 bytes each).
const MAX_SAMPLES_BETWEEN_CHECKPOINTS: usize = 1_000_000;

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
    Store(String),
}

/// One agent as the Manager holds it.
struct AgentEntry {
    state: AgentState,
    /// History samples not yet in the agent's history file, oldest first.
    since_checkpoint: Vec<ResourceSample>,
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
    /// Returns how many older samples were dropped.
    fn push_sample(&mut self, sample: ResourceSample, history_len: usize) -> usize {
        let mut dropped = 0;
        if self.since_checkpoint.len() >= 2 * history_len.max(1) {
            dropped = self.since_checkpoint.len() - history_len;
            self.since_checkpoint.drain(..dropped);
        }
        self.since_checkpoint.push(sample);
        dropped
    }
}

type Waiter = oneshot::Sender<Result<(), String>>;

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
    store_error_gate: LogGate,
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
            store_error_gate: LogGate::new(STORE_ERROR_LOG_INTERVAL),
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

    /// Views of these registered agents, with their liveness.
    fn views(&self, ids: Vec<String>) -> impl std::future::Future<Output = Vec<AgentView>> + 'static {
        let registered = self.registry_view.load();
        let mut views: Vec<AgentView> = ids
            .iter()
            .filter_map(|id| registered.get(id))
            .map(|info| AgentView::new(info, self.agents.get(&info.id).map(|e| &e.state)))
            .collect();
        let statuses = self
            .liveness
            .as_ref()
            .map(|l| l.send(liveness::Statuses(views.iter().map(|v| v.id.clone()).collect())));
        async move {
            if let Some(Ok(statuses)) = match statuses {
                Some(request) => Some(request.await),
                None => None,
            } {
                for (view, (status, since)) in views.iter_mut().zip(statuses) {
                    view.status = status;
                    view.status_since = since;
                }
            }
            views
        }
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
            entry.state.heartbeat_count = record.seq;
            entry.state.last_heartbeat = Some(record.timestamp);
            entry.state.last_seen = Some(record.received_at);
            entry.state.pid = Some(record.pid);
            if record.status.is_some() {
                entry.state.status = record.status;
            }
            let dropped = entry.push_sample(record.sample(), history_len);
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

    fn write_through(&self) -> bool {
        self.policy.flush_interval.is_zero()
    }

    fn may_retry(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Sends the pending journal records, unless a flush is running (the next one starts when
    /// it completes).
    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_in_flight || (self.journal_pending.is_empty() && self.flush_waiters.is_empty()) {
            return;
        }
        let records = std::mem::take(&mut self.journal_pending);
        let waiters = std::mem::take(&mut self.flush_waiters);
        self.flush_in_flight = true;
        self.journal
            .send(AppendJournal(records))
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.flush_in_flight = false;
                let outcome = match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err((e, mut records))) => {
                        records.append(&mut act.journal_pending);
                        act.journal_pending = records;
                        Err(act.note_store_error(e))
                    }
                    Err(_) => Err(act.note_store_error_text("the store is not running".into())),
                };
                if outcome.is_ok() {
                    act.note_store_ok();
                }
                for waiter in waiters {
                    let _ = waiter.send(outcome.clone());
                }
                let again = !act.flush_waiters.is_empty() || (act.write_through() && !act.journal_pending.is_empty());
                if again && act.may_retry() {
                    act.start_flush(ctx);
                }
            })
            .spawn(ctx);
    }

    /// Sends every changed agent's state and samples, unless a checkpoint is running.
    fn start_checkpoint(&mut self, ctx: &mut Context<Self>) {
        if self.checkpoint_in_flight || (self.dirty.is_empty() && self.checkpoint_waiters.is_empty()) {
            return;
        }
        let history_len = self.policy.history_len as u64;
        let mut deltas = Vec::with_capacity(self.dirty.len());
        for id in std::mem::take(&mut self.dirty) {
            let Some(entry) = self.agents.get_mut(&id) else {
                continue;
            };
            entry.dirty = false;
            let samples = std::mem::take(&mut entry.since_checkpoint);
            // Counted when the checkpoint starts: if it fails, the samples are sent again and
            // counted twice, which only brings the next compaction forward.
            let records = entry.state.history_records + samples.len() as u64;
            let compact = records > 2 * history_len;
            entry.state.history_records = if compact { records.min(history_len) } else { records };
            deltas.push(AgentDelta {
                state: entry.state.clone(),
                samples,
                compact_to: compact.then_some(self.policy.history_len),
            });
        }
        self.samples_since_checkpoint = 0;
        let waiters = std::mem::take(&mut self.checkpoint_waiters);
        self.checkpoint_in_flight = true;
        // The rotation is sent in the same step as the snapshot: every record appended before
        // it was processed before the snapshot, so the checkpoint covers the segments below.
        let rotated = self.journal.send(RotateJournal);
        let store = self.store.clone();
        async move {
            match rotated.await {
                Ok(journal_from) => store.send(store::Checkpoint { deltas, journal_from }).await,
                Err(_) => {
                    let gone = std::io::Error::other("the journal writer is not running");
                    Ok(Err((StoreError::new("rotate", "journal", gone), deltas)))
                }
            }
        }
        .into_actor(self)
        .map(move |result, act, ctx| {
            act.checkpoint_in_flight = false;
            let outcome = act.checkpoint_done(result);
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
            }
            if !act.checkpoint_waiters.is_empty() {
                act.start_checkpoint(ctx);
            }
        })
        .spawn(ctx);
    }

    fn checkpoint_done(
        &mut self,
        result: Result<Result<PersistReport, (StoreError, Vec<AgentDelta>)>, MailboxError>,
    ) -> Result<(), String> {
        match result {
            Ok(Ok(report)) => {
                self.note_store_ok();
                self.health.damaged(report.damaged_records_set_aside as u64);
                if report.damaged_records_set_aside > 0 {
                    error!(self.log, "damaged history records were set aside during compaction";
                        "records" => report.damaged_records_set_aside);
                }
                Ok(())
            }
            Ok(Err((e, deltas))) => {
                self.keep_unpersisted(deltas);
                Err(self.note_store_error(e))
            }
            Err(_) => Err(self.note_store_error_text("the store is not running".into())),
        }
    }

    /// Puts a failed checkpoint back: its samples go before anything that arrived since.
    fn keep_unpersisted(&mut self, deltas: Vec<AgentDelta>) {
        for delta in deltas {
            let Some(entry) = self.agents.get_mut(&delta.state.id) else {
                continue;
            };
            self.samples_since_checkpoint += delta.samples.len();
            let mut samples = delta.samples;
            samples.append(&mut entry.since_checkpoint);
            entry.since_checkpoint = samples;
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push(delta.state.id);
            }
        }
    }

    fn note_store_ok(&mut self) {
        self.health.store_ok();
        if self.retry_at.take().is_some() {
            info!(self.log, "writing to data_dir works again"; "store_errors_so_far" => self.health.store_errors());
        }
        self.retry_backoff = FIRST_RETRY_BACKOFF;
    }

    fn note_store_error(&mut self, e: StoreError) -> String {
        self.note_store_error_text(e.to_string())
    }

    fn note_store_error_text(&mut self, message: String) -> String {
        self.health.store_error();
        self.retry_at = Some(Instant::now() + self.retry_backoff);
        if let Some(not_logged) = self.store_error_gate.check(Instant::now()) {
            error!(self.log, "could not persist agent state; it is kept in memory and written when the disk works again";
                "error" => &message, "retry_in_ms" => self.retry_backoff.as_millis() as u64,
                "similar_errors_not_logged" => not_logged, "store_errors" => self.health.store_errors(),
                "what_to_do" => "check free space and permissions of data_dir");
        }
        self.retry_backoff = (self.retry_backoff * 2).min(MAX_RETRY_BACKOFF);
        message
    }

    /// Sends `msg` to the Registry and answers with its answer (a stopped Registry is a
    /// [`RegistryError::Save`]).
    fn forward_to_registry<M, T>(&self, msg: M) -> ResponseFuture<Result<T, RegistryError>>
    where
        M: Message<Result = Result<T, RegistryError>> + Send + 'static,
        Registry: Handler<M>,
        T: Send + 'static,
    {
        let request = self.registry.send(msg);
        Box::pin(async move {
            request
                .await
                .map_err(|_| RegistryError::Save("the registry is not running".into()))?
        })
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
        if !self.write_through() {
            ctx.run_interval(self.policy.flush_interval, |act, ctx| {
                if act.may_retry() {
                    act.start_flush(ctx);
                }
            });
        }
        ctx.run_interval(self.policy.checkpoint_interval, |act, ctx| {
            if act.may_retry() {
                act.start_checkpoint(ctx);
            }
        });
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
        for hb in batch {
            let Some(entry) = self.entry(&hb.agent_id) else {
                outcome.unknown_agents.push(hb.agent_id);
                continue;
            };
            let sample = entry.state.record(&hb);
            let skew_ms = entry.state.clock_skew_ms.unwrap_or(0);
            let warn_skew = skew_ms.abs() > max_skew_ms && !entry.skew_warned;
            entry.skew_warned |= warn_skew;
            seen.push((hb.agent_id.clone(), hb.received_at, hb.status));
            let dropped = entry.push_sample(sample, history_len);
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
        if let (Some(liveness), false) = (&self.liveness, seen.is_empty()) {
            liveness.do_send(liveness::Seen(seen));
        }
        if self.samples_since_checkpoint >= MAX_SAMPLES_BETWEEN_CHECKPOINTS && self.may_retry() {
            // The journal first, so the checkpoint's records are synced before it runs.
            self.start_flush(ctx);
            self.start_checkpoint(ctx);
        }
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
                Ok(Err(e)) => Err(UpdateError::Store(e)),
                Err(_) => Err(UpdateError::Store("the flush was abandoned".into())),
            }
        }))
    }
}

/// One agent's state as the Manager holds it (newer than the disk between writes).
#[cfg(any(test, feature = "testkit"))]
#[derive(Message)]
#[rtype(result = "Option<AgentState>")]
pub struct GetAgent(pub String);

#[cfg(any(test, feature = "testkit"))]
impl Handler<GetAgent> for Manager {
    type Result = MessageResult<GetAgent>;

    fn handle(&mut self, GetAgent(id): GetAgent, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.agents.get(&id).map(|e| e.state.clone()))
    }
}

/// One agent's newest `limit` history samples, newest first: the history file's plus those
/// waiting for the next checkpoint. `None` if it is not registered.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<ResourceSample>>, String>")]
pub struct GetHistory {
    pub id: String,
    pub limit: usize,
}

impl Handler<GetHistory> for Manager {
    type Result = ResponseFuture<Result<Option<Vec<ResourceSample>>, String>>;

    fn handle(&mut self, GetHistory { id, limit }: GetHistory, _: &mut Context<Self>) -> Self::Result {
        if !self.registry_view.contains(&id) {
            return Box::pin(async { Ok(None) });
        }
        let limit = limit.min(self.policy.history_len);
        let pending = self
            .agents
            .get(&id)
            .map(|e| e.since_checkpoint.clone())
            .unwrap_or_default();
        let read = self.store.send(store::ReadHistory { id, limit });
        Box::pin(async move {
            let on_disk = read.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            let mut all = on_disk.samples;
            // A checkpoint in flight may have written some pending samples already.
            let last = all.last().map_or(0, |s| s.seq);
            all.extend(pending.into_iter().filter(|s| s.seq > last));
            all.reverse();
            all.truncate(limit);
            Ok(Some(all))
        })
    }
}

/// Registers agents through the Registry, all or none (the admin API's `POST /agents`).
#[derive(Message)]
#[rtype(result = "Result<Vec<AgentView>, RegistryError>")]
pub struct RegisterAgents(pub Vec<AgentInfo>);

impl Handler<RegisterAgents> for Manager {
    type Result = ResponseFuture<Result<Vec<AgentView>, RegistryError>>;

    fn handle(&mut self, RegisterAgents(batch): RegisterAgents, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        Box::pin(async move {
            let views = batch.iter().map(|info| AgentView::new(info, None)).collect();
            registry
                .send(registry::Register(batch))
                .await
                .map_err(|_| RegistryError::Save("the registry is not running".into()))??;
            Ok(views)
        })
    }
}

/// Imports the `[[agents]]` of a reloaded configuration through the Registry (SIGHUP);
/// answers the ids added.
#[derive(Message)]
#[rtype(result = "Result<Vec<String>, RegistryError>")]
pub struct ImportConfigAgents(pub Vec<AgentInfo>);

impl Handler<ImportConfigAgents> for Manager {
    type Result = ResponseFuture<Result<Vec<String>, RegistryError>>;

    fn handle(&mut self, ImportConfigAgents(agents): ImportConfigAgents, _: &mut Context<Self>) -> Self::Result {
        self.forward_to_registry(registry::ImportConfigAgents(agents))
    }
}

/// Registers one agent by its first heartbeat (`auto_register`), batched with others by the
/// Registry; [`RegistryError::Full`] past `auto_register_limit`.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct AutoRegisterAgent(pub String);

impl Handler<AutoRegisterAgent> for Manager {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, AutoRegisterAgent(id): AutoRegisterAgent, _: &mut Context<Self>) -> Self::Result {
        self.forward_to_registry(registry::AutoRegister(id))
    }
}

/// Changes an agent's name and/or type (the admin API's `PATCH /agents/{id}`); the state file
/// follows at the next checkpoint.
#[derive(Message)]
#[rtype(result = "Result<AgentView, RegistryError>")]
pub struct UpdateAgent {
    pub id: String,
    pub name: Option<String>,
    pub agent_type: Option<String>,
    pub heartbeat_interval_s: Option<u64>,
    pub grace_s: Option<u64>,
}

impl Handler<UpdateAgent> for Manager {
    type Result = ResponseActFuture<Self, Result<AgentView, RegistryError>>;

    fn handle(&mut self, msg: UpdateAgent, _: &mut Context<Self>) -> Self::Result {
        let update = registry::UpdateInfo {
            id: msg.id,
            name: msg.name,
            agent_type: msg.agent_type,
            heartbeat_interval_s: msg.heartbeat_interval_s,
            grace_s: msg.grace_s,
        };
        Box::pin(self.registry.send(update).into_actor(self).then(|result, act, _| {
            let updated = result
                .map_err(|_| RegistryError::Save("the registry is not running".into()))
                .and_then(|r| r);
            let view = updated.map(|info| {
                if let Some(entry) = act.agents.get_mut(&info.id) {
                    entry.state.name = info.name.clone();
                    entry.state.agent_type = info.agent_type.clone();
                    if !entry.dirty {
                        entry.dirty = true;
                        act.dirty.push(info.id.clone());
                    }
                }
                act.views(vec![info.id])
            });
            fut::wrap_future(async move {
                let view = view?.await.pop();
                view.ok_or_else(|| RegistryError::Save("the agent vanished meanwhile".into()))
            })
        }))
    }
}

/// Unregisters an agent and removes its state and history (the admin API's
/// `DELETE /agents/{id}`). Its later heartbeats get the unknown-agent 400.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct DeleteAgent(pub String);

impl Handler<DeleteAgent> for Manager {
    type Result = ResponseActFuture<Self, Result<(), RegistryError>>;

    fn handle(&mut self, DeleteAgent(id): DeleteAgent, _: &mut Context<Self>) -> Self::Result {
        let unregister = self.registry.send(registry::Unregister(id));
        Box::pin(unregister.into_actor(self).then(|result, act, _| {
            let removed = result
                .map_err(|_| RegistryError::Save("the registry is not running".into()))
                .and_then(|r| r);
            // Forget the agent now; its journal records are skipped at replay (not registered).
            let delete = removed.map(|info| {
                // No longer watched: no late/down, no webhook, no events file, not counted.
                if let Some(liveness) = &act.liveness {
                    liveness.do_send(liveness::Forget(info.id.clone()));
                }
                if let Some(entry) = act.agents.remove(&info.id) {
                    act.samples_since_checkpoint = act
                        .samples_since_checkpoint
                        .saturating_sub(entry.since_checkpoint.len());
                }
                act.store.send(store::Delete(info.id))
            });
            let log = act.log.clone();
            fut::wrap_future(async move {
                if let Ok(Err(e)) = delete?.await {
                    error!(log, "agent unregistered, but its files could not be removed"; "error" => %e,
                        "what_to_do" => "remove agents/<id>.json and history/<id>.log by hand");
                }
                Ok(())
            })
        }))
    }
}

/// One page of `GET /agents`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentPage {
    pub agents: Vec<AgentView>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next_after: Option<String>,
}

/// Lists agents sorted by id, optionally of one type and/or one liveness status, `limit` at a
/// time after the id `after`.
#[derive(Message)]
#[rtype(result = "AgentPage")]
pub struct ListAgents {
    pub agent_type: Option<String>,
    pub status: Option<AgentStatus>,
    pub after: Option<String>,
    pub limit: usize,
}

impl Handler<ListAgents> for Manager {
    type Result = ResponseActFuture<Self, AgentPage>;

    fn handle(&mut self, msg: ListAgents, _: &mut Context<Self>) -> Self::Result {
        let registered = self.registry_view.load();
        let limit = msg.limit;
        let of_type = |id: &&String| {
            msg.agent_type
                .as_ref()
                .is_none_or(|t| registered.get(id).is_some_and(|info| &info.agent_type == t))
        };
        let candidates = registered.ids_after(msg.after.as_deref()).iter().filter(of_type);
        // Without a status filter, one more than a page tells whether another page follows;
        // with one, every candidate goes to Liveness first.
        let mut ids: Vec<String> = match msg.status {
            None => candidates.take(limit + 1).cloned().collect(),
            Some(_) => candidates.cloned().collect(),
        };
        // The status filter comes before paging, so a page is full whatever it filters out.
        let keep = match (msg.status, &self.liveness) {
            (Some(status), Some(liveness)) => Some(liveness.send(liveness::InStatus {
                ids: ids.clone(),
                status,
            })),
            _ => None,
        };
        let no_liveness_filter = msg.status.filter(|_| self.liveness.is_none());
        Box::pin(
            fut::wrap_future(async move {
                if let Some(request) = keep {
                    let keep = request.await.unwrap_or_default();
                    ids = ids
                        .into_iter()
                        .zip(keep)
                        .filter(|(_, k)| *k)
                        .map(|(id, _)| id)
                        .collect();
                } else if let Some(status) = no_liveness_filter {
                    // Without liveness tracking every agent is new.
                    if status != AgentStatus::New {
                        ids.clear();
                    }
                }
                let more = ids.len() > limit;
                ids.truncate(limit);
                (ids, more)
            })
            .then(move |(ids, more), act: &mut Manager, _| {
                fut::wrap_future(act.views(ids)).map(move |agents: Vec<AgentView>, _, _| {
                    let next_after = if more {
                        agents.last().map(|a| a.id.clone())
                    } else {
                        None
                    };
                    AgentPage { agents, next_after }
                })
            }),
        )
    }
}

/// One registered agent as the admin API shows it; `None` if it is not registered.
#[derive(Message)]
#[rtype(result = "Option<AgentView>")]
pub struct GetAgentView(pub String);

impl Handler<GetAgentView> for Manager {
    type Result = ResponseFuture<Option<AgentView>>;

    fn handle(&mut self, GetAgentView(id): GetAgentView, _: &mut Context<Self>) -> Self::Result {
        let views = self.views(vec![id]);
        Box::pin(async move { views.await.pop() })
    }
}

/// Pauses (no liveness transitions) or resumes an agent (`POST /agents/{id}/pause`,
/// `/resume`). Answers its view afterwards; `None` if it is not registered.
#[derive(Message)]
#[rtype(result = "Option<AgentView>")]
pub struct SetAgentPaused {
    pub id: String,
    pub paused: bool,
}

impl Handler<SetAgentPaused> for Manager {
    type Result = ResponseActFuture<Self, Option<AgentView>>;

    fn handle(&mut self, msg: SetAgentPaused, _: &mut Context<Self>) -> Self::Result {
        if !self.registry_view.contains(&msg.id) {
            return Box::pin(fut::ready(None));
        }
        let ever_seen = self.agents.get(&msg.id).is_some_and(|e| e.state.last_seen.is_some());
        let request = self.liveness.as_ref().map(|l| {
            l.send(liveness::SetPaused {
                id: msg.id.clone(),
                paused: msg.paused,
                ever_seen,
            })
        });
        let id = msg.id;
        Box::pin(
            fut::wrap_future(async move {
                if let Some(request) = request {
                    let _ = request.await;
                }
            })
            .then(move |(), act: &mut Manager, _| {
                fut::wrap_future(act.views(vec![id])).map(|mut v: Vec<AgentView>, _, _| v.pop())
            }),
        )
    }
}

/// One agent's newest `limit` liveness transitions, newest first; `None` if it is not
/// registered.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<EventRecord>>, String>")]
pub struct GetEvents {
    pub id: String,
    pub limit: usize,
}

impl Handler<GetEvents> for Manager {
    type Result = ResponseFuture<Result<Option<Vec<EventRecord>>, String>>;

    fn handle(&mut self, GetEvents { id, limit }: GetEvents, _: &mut Context<Self>) -> Self::Result {
        if !self.registry_view.contains(&id) {
            return Box::pin(async { Ok(None) });
        }
        let read = self.store.send(store::ReadEvents { id, limit });
        Box::pin(async move { Ok(Some(read.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?)) })
    }
}

/// Shutdown's last step: flush the journal and checkpoint now, ignoring any retry backoff.
/// Answers how many agents still have changes not in their files (0 when everything is), or
/// the store's error.
#[derive(Message)]
#[rtype(result = "Result<usize, String>")]
pub struct Flush;

impl Handler<Flush> for Manager {
    type Result = ResponseActFuture<Self, Result<usize, String>>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (flushed_tx, flushed) = oneshot::channel();
        let (checkpointed_tx, checkpointed) = oneshot::channel();
        self.flush_waiters.push(flushed_tx);
        self.checkpoint_waiters.push(checkpointed_tx);
        self.retry_at = None;
        self.start_flush(ctx);
        self.start_checkpoint(ctx);
        let abandoned = || Err("the write was abandoned".to_owned());
        Box::pin(
            fut::wrap_future(async move {
                flushed.await.unwrap_or_else(|_| abandoned())?;
                checkpointed.await.unwrap_or_else(|_| abandoned())
            })
            .map(|result: Result<(), String>, act: &mut Manager, _| {
                if !act.journal_pending.is_empty() {
                    warn!(act.log, "heartbeats arrived during the final flush"; "records" => act.journal_pending.len());
                }
                result.map(|()| act.dirty.len() + usize::from(act.checkpoint_in_flight))
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn quiet() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    fn heartbeat(id: &str, memory: u64) -> Heartbeat {
        Heartbeat {
            agent_id: id.into(),
            timestamp: Utc::now(),
            received_at: Utc::now(),
            pid: 1,
            cpu: 1.0,
            memory,
            status: None,
        }
    }

    async fn update(manager: &Addr<Manager>, batch: &[Heartbeat]) -> BatchOutcome {
        manager.send(UpdateHeartbeats(batch.to_vec())).await.unwrap().unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn start(dir: &std::path::Path, flush_interval: Duration) -> (Addr<Manager>, Addr<FileMetadataStore>) {
        let mut opened = FileMetadataStore::open(dir, quiet()).unwrap();
        let loaded = opened.load_all().unwrap();
        let journal = opened.start_journal_writer();
        let store = opened.start();
        let registry = Registry::new([AgentInfo {
            id: "a".into(),
            name: "A".into(),
            agent_type: "custom".into(),
            ..Default::default()
        }])
        .unwrap();
        let view = registry.snapshot();
        let policy = ManagerPolicy {
            history_len: 3,
            flush_interval,
            checkpoint_interval: HOUR,
            max_clock_skew: HOUR,
        };
        let manager = Manager::new(policy, loaded, registry.start(), view, store.clone(), journal, quiet()).start();
        (manager, store)
    }

    /// The Manager's answer to `GetHistory` for agent `a`.
    async fn history(manager: &Addr<Manager>, limit: usize) -> Vec<ResourceSample> {
        let id = "a".to_owned();
        manager.send(GetHistory { id, limit }).await.unwrap().unwrap().unwrap()
    }

    /// Agent `a`'s history as the Store reads it from disk.
    async fn on_disk(store: &Addr<FileMetadataStore>) -> Vec<ResourceSample> {
        let id = "a".to_owned();
        store
            .send(store::ReadHistory { id, limit: 100 })
            .await
            .unwrap()
            .unwrap()
            .samples
    }

    fn memories(samples: &[ResourceSample]) -> Vec<u64> {
        samples.iter().map(|s| s.memory).collect()
    }

    #[actix_rt::test]
    async fn write_through_updates_survive_a_crash_once_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = start(dir.path(), Duration::ZERO);
        for memory in 0..5 {
            update(&manager, &[heartbeat("a", memory)]).await;
        }
        let outcome = update(&manager, &[heartbeat("ghost", 0), heartbeat("a", 5)]).await;
        assert_eq!(outcome.applied, 1);
        assert_eq!(outcome.unknown_agents, ["ghost"]);
        // "Crash": no flush, no checkpoint; start again on the same directory.
        drop(manager);

        let (restarted, _) = start(dir.path(), Duration::ZERO);
        let state = restarted.send(GetAgent("a".into())).await.unwrap().unwrap();
        assert_eq!(state.heartbeat_count, 6, "replayed from the journal");
        let history = history(&restarted, 100).await;
        assert_eq!(memories(&history), [5, 4, 3], "newest first, at most history_len = 3");
    }

    #[actix_rt::test]
    async fn flush_checkpoints_and_a_restart_needs_no_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, store) = start(dir.path(), HOUR);

        for memory in 0..8 {
            update(&manager, &[heartbeat("a", memory)]).await;
        }
        assert!(
            store.send(store::Get("a".into())).await.unwrap().unwrap().is_none(),
            "nothing written yet"
        );
        assert_eq!(manager.send(Flush).await.unwrap(), Ok(0));

        let state = store.send(store::Get("a".into())).await.unwrap().unwrap().unwrap();
        assert_eq!(state.heartbeat_count, 8);
        assert_eq!(state.name, "A");
        let on_disk = on_disk(&store).await;
        assert!(on_disk.len() <= 6, "compacted back once over 2 × history_len");
        assert_eq!(memories(&on_disk).last(), Some(&7));

        let mut reopened = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        assert!(
            reopened.load_all().unwrap().replay.records.is_empty(),
            "the checkpoint covers the journal"
        );
    }

    #[actix_rt::test]
    async fn a_fast_agent_keeps_at_most_twice_history_len_samples_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, store) = start(dir.path(), HOUR);
        for memory in 0..100 {
            update(&manager, &[heartbeat("a", memory)]).await;
        }
        let newest = history(&manager, 10).await;
        assert_eq!(memories(&newest), [99, 98, 97], "history_len = 3, newest first");
        assert_eq!(manager.send(Flush).await.unwrap(), Ok(0));
        let on_disk = on_disk(&store).await;
        assert!(on_disk.len() <= 6, "{} written for 100 heartbeats", on_disk.len());
        assert_eq!(memories(&on_disk).last(), Some(&99));
        let state = store.send(store::Get("a".into())).await.unwrap().unwrap().unwrap();
        assert_eq!(state.heartbeat_count, 100, "every heartbeat counted");
    }

    #[actix_rt::test]
    async fn a_failed_checkpoint_keeps_the_data_and_a_later_one_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, store) = start(dir.path(), HOUR);
        // Make the history append fail: a directory where the log file should be.
        let blocker = dir.path().join("history").join("a.log");
        std::fs::create_dir_all(&blocker).unwrap();

        update(&manager, &[heartbeat("a", 1), heartbeat("a", 2)]).await;
        assert!(manager.send(Flush).await.unwrap().is_err());

        std::fs::remove_dir(&blocker).unwrap();
        update(&manager, &[heartbeat("a", 3)]).await;
        assert_eq!(manager.send(Flush).await.unwrap(), Ok(0));
        let on_disk = on_disk(&store).await;
        assert_eq!(memories(&on_disk), [1, 2, 3], "nothing lost, nothing twice, in order");
    }
}
