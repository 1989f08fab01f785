//! The Manager actor: owns every agent's metadata in memory and the addresses of the Registry
//! and the Store.
//!
//! [`UpdateHeartbeat`] applies a heartbeat to the agent's metadata and saves it through the
//! Store; it is answered once the save is on disk, so a worker that counts a heartbeat as
//! processed knows it is durable. The Manager keeps serving other messages while a save is in
//! flight; the Store's single thread keeps the saves in order.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{error, info, Logger};

use crate::agent::AgentMetadata;
use crate::heartbeat::Heartbeat;
use crate::ratelimit::LogGate;
use crate::registry::{Registry, RegistrySnapshot};
use crate::store::{self, FileMetadataStore, StoreError};

/// At most one store-error log line per this long; the others are counted in it.
const STORE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why an update failed. The heartbeat is counted in `total_errors`.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("agent {0:?} does not exist")]
    UnknownAgent(String),
    /// The heartbeat is applied in memory and will be written by the next save or the flush.
    #[error("could not save: {0}")]
    Store(String),
    #[error("the store is not running")]
    StoreGone,
}

/// Owns the agents' state.
pub struct Manager {
    /// History points kept per agent.
    history_len: usize,
    agents: HashMap<String, AgentMetadata>,
    /// Agents whose last save failed; the flush at shutdown writes them again.
    unsaved: HashSet<String>,
    registry_view: RegistrySnapshot,
    /// Held so the Registry lives as long as the Manager; admin messages go through it.
    registry: Addr<Registry>,
    store: Addr<FileMetadataStore>,
    store_error_gate: LogGate,
    log: Logger,
}

impl Manager {
    /// A Manager starting from what the Store loaded at start-up.
    pub fn new(
        history_len: usize,
        loaded: Vec<AgentMetadata>,
        registry: Addr<Registry>,
        registry_view: RegistrySnapshot,
        store: Addr<FileMetadataStore>,
        log: Logger,
    ) -> Self {
        let agents = loaded
            .into_iter()
            .map(|mut meta| {
                // A smaller history_len than the last run applies at once.
                while meta.history.len() > history_len {
                    meta.history.pop_front();
                }
                (meta.id.clone(), meta)
            })
            .collect();
        Self {
            history_len,
            agents,
            unsaved: HashSet::new(),
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

    fn note_save_result(
        &mut self,
        id: String,
        result: Result<Result<(), StoreError>, MailboxError>,
    ) -> Result<(), UpdateError> {
        match result {
            Ok(Ok(())) => {
                self.unsaved.remove(&id);
                Ok(())
            }
            Ok(Err(e)) => {
                if let Some(suppressed) = self.store_error_gate.check(Instant::now()) {
                    error!(self.log, "could not save agent state; it is kept in memory and written again at the next heartbeat or at shutdown";
                        "agent_id" => &id, "error" => %e, "similar_errors_not_logged" => suppressed,
                        "what_to_do" => "check free space and permissions of data_dir");
                }
                self.unsaved.insert(id);
                Err(UpdateError::Store(e.to_string()))
            }
            Err(_) => {
                self.unsaved.insert(id);
                Err(UpdateError::StoreGone)
            }
        }
    }
}

impl Actor for Manager {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        info!(self.log, "manager started"; "agents_with_state" => self.agents.len(), "history_len" => self.history_len);
    }
}

/// Applies one heartbeat: get or create the agent's metadata, set `last_heartbeat` and
/// `last_seen`, append to the bounded history, save. Answered once saved.
#[derive(Message)]
#[rtype(result = "Result<(), UpdateError>")]
pub struct UpdateHeartbeat(pub Heartbeat);

impl Handler<UpdateHeartbeat> for Manager {
    type Result = ResponseActFuture<Self, Result<(), UpdateError>>;

    fn handle(
        &mut self,
        UpdateHeartbeat(hb): UpdateHeartbeat,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let meta = match self.agents.get_mut(&hb.agent_id) {
            Some(meta) if self.registry_view.contains(&hb.agent_id) => meta,
            _ => match self.registry_view.get(&hb.agent_id) {
                None => return Box::pin(fut::ready(Err(UpdateError::UnknownAgent(hb.agent_id)))),
                Some(info) => self
                    .agents
                    .entry(info.id.clone())
                    .or_insert_with(|| AgentMetadata::new(&info)),
            },
        };
        meta.record(&hb, self.history_len);
        let save = self.store.send(store::Save(meta.clone()));
        Box::pin(
            save.into_actor(self)
                .map(move |result, act, _| act.note_save_result(hb.agent_id, result)),
        )
    }
}

/// One agent's metadata as the Manager holds it.
#[derive(Message)]
#[rtype(result = "Option<AgentMetadata>")]
pub struct GetAgent(pub String);

impl Handler<GetAgent> for Manager {
    type Result = MessageResult<GetAgent>;

    fn handle(&mut self, GetAgent(id): GetAgent, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.agents.get(&id).cloned())
    }
}

/// Shutdown's last step: writes again every agent whose save failed, then flushes the Store.
/// Answers how many agents were written again.
#[derive(Message)]
#[rtype(result = "Result<usize, String>")]
pub struct Flush;

impl Handler<Flush> for Manager {
    type Result = ResponseActFuture<Self, Result<usize, String>>;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        let unsaved: Vec<AgentMetadata> = self
            .unsaved
            .iter()
            .filter_map(|id| self.agents.get(id).cloned())
            .collect();
        let store = self.store.clone();
        Box::pin(
            async move {
                let count = unsaved.len();
                for meta in unsaved {
                    let id = meta.id.clone();
                    match store.send(store::Save(meta)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(format!("agent {id}: {e}")),
                        Err(_) => return Err("the store is not running".to_owned()),
                    }
                }
                match store.send(store::Flush).await {
                    Ok(Ok(())) => Ok(count),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the store is not running".to_owned()),
                }
            }
            .into_actor(self)
            .map(|result, act, _| {
                if result.is_ok() {
                    act.unsaved.clear();
                }
                result
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentInfo;
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

    #[actix_rt::test]
    async fn updates_are_saved_and_unknown_agents_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let store = SyncArbiter::start(1, move || FileMetadataStore::open(&path, quiet()).unwrap());
        let registry = Registry::new([AgentInfo {
            id: "a".into(),
            name: "A".into(),
            agent_type: "custom".into(),
        }])
        .unwrap();
        let view = registry.snapshot();
        let manager = Manager::new(
            3,
            Vec::new(),
            registry.start(),
            view,
            store.clone(),
            quiet(),
        )
        .start();

        for memory in 0..5 {
            manager
                .send(UpdateHeartbeat(heartbeat("a", memory)))
                .await
                .unwrap()
                .unwrap();
        }
        let err = manager
            .send(UpdateHeartbeat(heartbeat("ghost", 0)))
            .await
            .unwrap();
        assert!(matches!(err, Err(UpdateError::UnknownAgent(id)) if id == "ghost"));

        let on_disk = store
            .send(store::Get("a".into()))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let memories: Vec<_> = on_disk.history.iter().map(|s| s.memory).collect();
        assert_eq!(
            memories,
            [2, 3, 4],
            "history bounded to history_len = 3, newest kept"
        );
        assert_eq!(on_disk.name, "A");
        assert_eq!(on_disk.heartbeat_count, 5);
        assert_eq!(
            manager.send(GetAgent("a".into())).await.unwrap(),
            Some(on_disk)
        );
        assert_eq!(manager.send(Flush).await.unwrap(), Ok(0));
    }
}
