//! The Manager actor: owns every agent's state in memory (authoritative) and the addresses of
//! the Registry and the Store.
//!
//! [`UpdateHeartbeat`] applies a heartbeat in memory: the agent's state changes, its new
//! history sample waits in `pending`, and the agent is marked dirty. Persistence happens off
//! the request path, in flushes: every dirty agent's state and pending samples go to the Store
//! in one [`store::Persist`] batch.
//!
//! - `flush_interval > 0`: a flush every interval (when anything changed). After `kill -9` at
//!   most the last interval of heartbeats is lost.
//! - `flush_interval = 0` (write-through): an update is answered only once a flush holding it
//!   is on disk. Updates that arrive while a flush runs share the next one (group commit), so
//!   write-through still costs a few syncs per batch, not per heartbeat.
//!
//! A failed flush keeps everything in memory and is retried with backoff (doubling up to 30 s);
//! errors are logged at most once per 10 s. [`Flush`] (shutdown) flushes at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::channel::oneshot;
use slog::{error, info, Logger};

use crate::agent::{AgentInfo, AgentState, ResourceSample};
use crate::heartbeat::Heartbeat;
use crate::ratelimit::LogGate;
use crate::registry::{Registry, RegistrySnapshot};
use crate::store::{self, AgentDelta, FileMetadataStore, PersistReport, StoreError};

/// At most one store-error log line per this long; the others are counted in it.
const STORE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// First wait before retrying a failed flush; doubles up to [`MAX_RETRY_BACKOFF`].
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// How the Manager persists.
#[derive(Debug, Clone, Copy)]
pub struct PersistPolicy {
    /// History records kept per agent: reads return at most this many, and a log is compacted
    /// back to it once it holds twice as many.
    pub history_len: usize,
    /// Time between flushes; zero for write-through.
    pub flush_interval: Duration,
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
    /// Samples not yet on disk, oldest first.
    pending: Vec<ResourceSample>,
    dirty: bool,
}

/// Owns the agents' state.
pub struct Manager {
    policy: PersistPolicy,
    agents: HashMap<String, AgentEntry>,
    /// Ids of dirty agents, in the order they became dirty.
    dirty: Vec<String>,
    /// Answered when the next flush completes (write-through updates, [`Flush`]).
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    flush_in_flight: bool,
    /// After a failed flush: no timed flush before this instant.
    retry_at: Option<Instant>,
    retry_backoff: Duration,
    store_errors: u64,
    registry_view: RegistrySnapshot,
    /// Held so the Registry lives as long as the Manager; admin messages go through it.
    registry: Addr<Registry>,
    store: Addr<FileMetadataStore>,
    store_error_gate: LogGate,
    log: Logger,
}

impl Manager {
    /// A Manager starting from the states the Store loaded at start-up.
    pub fn new(
        policy: PersistPolicy,
        loaded: Vec<AgentState>,
        registry: Addr<Registry>,
        registry_view: RegistrySnapshot,
        store: Addr<FileMetadataStore>,
        log: Logger,
    ) -> Self {
        let agents = loaded
            .into_iter()
            .map(|state| {
                let entry = AgentEntry {
                    state,
                    pending: Vec::new(),
                    dirty: false,
                };
                (entry.state.id.clone(), entry)
            })
            .collect();
        Self {
            policy,
            agents,
            dirty: Vec::new(),
            waiters: Vec::new(),
            flush_in_flight: false,
            retry_at: None,
            retry_backoff: FIRST_RETRY_BACKOFF,
            store_errors: 0,
            registry_view,
            registry,
            store,
            store_error_gate: LogGate::new(STORE_ERROR_LOG_INTERVAL),
            log,
        }
    }

    pub fn registry(&self) -> &Addr<Registry> {
        &self.registry
    }

    fn write_through(&self) -> bool {
        self.policy.flush_interval.is_zero()
    }

    /// Sends every dirty agent to the Store, unless a flush is already running (then the next
    /// one starts when it completes).
    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_in_flight || (self.dirty.is_empty() && self.waiters.is_empty()) {
            return;
        }
        let history_len = self.policy.history_len as u64;
        let mut deltas = Vec::with_capacity(self.dirty.len());
        for id in std::mem::take(&mut self.dirty) {
            let Some(entry) = self.agents.get_mut(&id) else {
                continue;
            };
            entry.dirty = false;
            let samples = std::mem::take(&mut entry.pending);
            // Counted when the flush starts: if it fails, the samples are sent again and
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
        let waiters = std::mem::take(&mut self.waiters);
        self.flush_in_flight = true;
        self.store
            .send(store::Persist(deltas))
            .into_actor(self)
            .map(move |result, act, ctx| act.flush_done(result, waiters, ctx))
            .spawn(ctx);
    }

    fn flush_done(
        &mut self,
        result: Result<Result<PersistReport, (StoreError, Vec<AgentDelta>)>, MailboxError>,
        waiters: Vec<oneshot::Sender<Result<(), String>>>,
        ctx: &mut Context<Self>,
    ) {
        self.flush_in_flight = false;
        let outcome = match result {
            Ok(Ok(report)) => {
                self.retry_at = None;
                self.retry_backoff = FIRST_RETRY_BACKOFF;
                if report.damaged_records_set_aside > 0 {
                    error!(self.log, "damaged history records were set aside during compaction";
                        "records" => report.damaged_records_set_aside);
                }
                Ok(())
            }
            Ok(Err((e, deltas))) => {
                self.keep_unpersisted(deltas);
                Err(self.note_store_error(e.to_string()))
            }
            Err(_) => Err(self.note_store_error("the store is not running".to_owned())),
        };
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
        if !self.waiters.is_empty() || (self.write_through() && !self.dirty.is_empty() && self.retry_at.is_none()) {
            self.start_flush(ctx);
        }
    }

    /// Puts a failed batch back: its samples go before anything that arrived since.
    fn keep_unpersisted(&mut self, deltas: Vec<AgentDelta>) {
        for delta in deltas {
            let Some(entry) = self.agents.get_mut(&delta.state.id) else {
                continue;
            };
            let mut samples = delta.samples;
            samples.append(&mut entry.pending);
            entry.pending = samples;
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push(delta.state.id);
            }
        }
    }

    fn note_store_error(&mut self, message: String) -> String {
        self.store_errors += 1;
        self.retry_at = Some(Instant::now() + self.retry_backoff);
        if let Some(not_logged) = self.store_error_gate.check(Instant::now()) {
            error!(self.log, "could not persist agent state; it is kept in memory and written when the disk works again";
                "error" => &message, "retry_in_ms" => self.retry_backoff.as_millis() as u64,
                "similar_errors_not_logged" => not_logged, "store_errors" => self.store_errors,
                "what_to_do" => "check free space and permissions of data_dir");
        }
        self.retry_backoff = (self.retry_backoff * 2).min(MAX_RETRY_BACKOFF);
        message
    }

    fn entry(&mut self, id: &str) -> Option<&mut AgentEntry> {
        if !self.agents.contains_key(id) {
            let info: AgentInfo = self.registry_view.get(id)?;
            let entry = AgentEntry {
                state: AgentState::new(&info),
                pending: Vec::new(),
                dirty: false,
            };
            self.agents.insert(info.id, entry);
        } else if !self.registry_view.contains(id) {
            return None;
        }
        self.agents.get_mut(id)
    }
}

impl Actor for Manager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(self.log, "manager started"; "agents_with_state" => self.agents.len(),
            "history_len" => self.policy.history_len,
            "flush_interval_ms" => self.policy.flush_interval.as_millis() as u64);
        if !self.write_through() {
            ctx.run_interval(self.policy.flush_interval, |act, ctx| {
                if act.retry_at.is_none_or(|at| Instant::now() >= at) {
                    act.start_flush(ctx);
                }
            });
        }
    }
}

/// Applies a batch of heartbeats (the seed's `UpdateHeartbeat`, batched): for each, get or
/// create the agent's state, set `last_heartbeat` and `last_seen`, queue its history sample
/// for the next flush. In write-through mode it is answered once that flush is on disk.
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
        for hb in batch {
            let Some(entry) = self.entry(&hb.agent_id) else {
                outcome.unknown_agents.push(hb.agent_id);
                continue;
            };
            let sample = entry.state.record(&hb);
            entry.pending.push(sample);
            outcome.applied += 1;
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push(hb.agent_id);
            }
        }
        if !self.write_through() || outcome.applied == 0 {
            return Box::pin(fut::ready(Ok(outcome)));
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.start_flush(ctx);
        Box::pin(fut::wrap_future(async move {
            match rx.await {
                Ok(Ok(())) => Ok(outcome),
                Ok(Err(e)) => Err(UpdateError::Store(e)),
                Err(_) => Err(UpdateError::Store("the flush was abandoned".into())),
            }
        }))
    }
}

/// One agent's state as the Manager holds it (newer than the disk between flushes).
#[derive(Message)]
#[rtype(result = "Option<AgentState>")]
pub struct GetAgent(pub String);

impl Handler<GetAgent> for Manager {
    type Result = MessageResult<GetAgent>;

    fn handle(&mut self, GetAgent(id): GetAgent, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.agents.get(&id).map(|e| e.state.clone()))
    }
}

/// One agent's newest `limit` history samples, newest first: the disk's plus those not yet
/// flushed.
#[derive(Message)]
#[rtype(result = "Result<Vec<ResourceSample>, String>")]
pub struct GetHistory {
    pub id: String,
    pub limit: usize,
}

impl Handler<GetHistory> for Manager {
    type Result = ResponseFuture<Result<Vec<ResourceSample>, String>>;

    fn handle(&mut self, GetHistory { id, limit }: GetHistory, _: &mut Context<Self>) -> Self::Result {
        let limit = limit.min(self.policy.history_len);
        let pending = self.agents.get(&id).map(|e| e.pending.clone()).unwrap_or_default();
        let read = self.store.send(store::ReadHistory { id, limit });
        Box::pin(async move {
            let on_disk = read.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            let mut all = on_disk.samples;
            // A flush in flight may have written some pending samples already.
            let last = all.last().map_or(0, |s| s.seq);
            all.extend(pending.into_iter().filter(|s| s.seq > last));
            all.reverse();
            all.truncate(limit);
            Ok(all)
        })
    }
}

/// Shutdown's last step: flush now, ignoring any retry backoff. Answers how many agents are
/// still not persisted (0 when everything is on disk) or the store's error.
#[derive(Message)]
#[rtype(result = "Result<usize, String>")]
pub struct Flush;

impl Handler<Flush> for Manager {
    type Result = ResponseActFuture<Self, Result<usize, String>>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.retry_at = None;
        self.start_flush(ctx);
        Box::pin(
            fut::wrap_future(async move { rx.await.unwrap_or_else(|_| Err("the flush was abandoned".into())) }).map(
                |result: Result<(), String>, act: &mut Manager, _| {
                    result.map(|()| act.dirty.len() + usize::from(act.flush_in_flight))
                },
            ),
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

    fn start(dir: &std::path::Path, flush_interval: Duration) -> (Addr<Manager>, Addr<FileMetadataStore>) {
        let path = dir.to_owned();
        let store = SyncArbiter::start(1, move || FileMetadataStore::open(&path, quiet()).unwrap());
        let registry = Registry::new([AgentInfo {
            id: "a".into(),
            name: "A".into(),
            agent_type: "custom".into(),
        }])
        .unwrap();
        let view = registry.snapshot();
        let policy = PersistPolicy {
            history_len: 3,
            flush_interval,
        };
        let manager = Manager::new(policy, Vec::new(), registry.start(), view, store.clone(), quiet()).start();
        (manager, store)
    }

    #[actix_rt::test]
    async fn write_through_updates_are_on_disk_when_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, store) = start(dir.path(), Duration::ZERO);

        for memory in 0..8 {
            update(&manager, &[heartbeat("a", memory)]).await;
        }
        let outcome = update(&manager, &[heartbeat("ghost", 0), heartbeat("a", 8)]).await;
        assert_eq!(outcome.applied, 1);
        assert_eq!(outcome.unknown_agents, ["ghost"]);

        let state = store.send(store::Get("a".into())).await.unwrap().unwrap().unwrap();
        assert_eq!(state.heartbeat_count, 9);
        assert_eq!(state.name, "A");
        let history = manager
            .send(GetHistory {
                id: "a".into(),
                limit: 100,
            })
            .await
            .unwrap()
            .unwrap();
        let memories: Vec<_> = history.iter().map(|s| s.memory).collect();
        assert_eq!(memories, [8, 7, 6], "newest first, at most history_len = 3");
        let on_disk = store
            .send(store::ReadHistory {
                id: "a".into(),
                limit: 100,
            })
            .await
            .unwrap()
            .unwrap();
        assert!(on_disk.samples.len() <= 6, "compacted back once over 2 × history_len");
        assert_eq!(manager.send(Flush).await.unwrap(), Ok(0));
    }

    #[actix_rt::test]
    async fn timed_flushes_persist_off_the_request_path_and_flush_forces_one() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, store) = start(dir.path(), Duration::from_secs(3600));

        update(&manager, &[heartbeat("a", 1)]).await;
        assert!(
            store.send(store::Get("a".into())).await.unwrap().unwrap().is_none(),
            "not yet flushed"
        );
        let history = manager
            .send(GetHistory {
                id: "a".into(),
                limit: 10,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(history.len(), 1, "unflushed samples are visible");

        assert_eq!(manager.send(Flush).await.unwrap(), Ok(0));
        let state = store.send(store::Get("a".into())).await.unwrap().unwrap().unwrap();
        assert_eq!(state.heartbeat_count, 1);
        assert_eq!(manager.send(GetAgent("a".into())).await.unwrap(), Some(state));
    }

    #[actix_rt::test]
    async fn a_failed_flush_keeps_the_data_and_a_later_flush_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, store) = start(dir.path(), Duration::from_secs(3600));
        // Make the history append fail: a directory where the log file should be.
        let blocker = dir.path().join("history").join("a.log");
        std::fs::create_dir_all(&blocker).unwrap();

        update(&manager, &[heartbeat("a", 1), heartbeat("a", 2)]).await;
        assert!(manager.send(Flush).await.unwrap().is_err());

        std::fs::remove_dir(&blocker).unwrap();
        update(&manager, &[heartbeat("a", 3)]).await;
        assert_eq!(manager.send(Flush).await.unwrap(), Ok(0));
        let on_disk = store
            .send(store::ReadHistory {
                id: "a".into(),
                limit: 10,
            })
            .await
            .unwrap()
            .unwrap();
        let memories: Vec<_> = on_disk.samples.iter().map(|s| s.memory).collect();
        assert_eq!(memories, [1, 2, 3], "nothing lost, nothing twice, in order");
    }
}
