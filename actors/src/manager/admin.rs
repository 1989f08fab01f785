//! The Manager's admin facade: the messages behind the admin API (`/agents` and its
//! sub-resources), SIGHUP's agent import and `auto_register`. Registry changes go through the
//! Registry (which owns who may report); reads join its snapshot with the Manager's state and
//! Liveness's view.

use actix::prelude::*;
use serde::Serialize;
use slog::error;

use super::Manager;
use crate::liveness;
#[cfg(any(test, feature = "testkit"))]
use crate::model::agent::AgentState;
use crate::model::agent::{AgentChange, AgentInfo, AgentView, ResourceSample};
use crate::model::liveness::{AgentEvent, AgentStatus};
use crate::registry::config_owned::ConfigChanges;
use crate::registry::{self, Registry, RegistryError};
use crate::store::{self, FileMetadataStore, StoreError};
use crate::supervision::process::Retire;

/// Why a read of what the Store keeps (history, events) failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store is not running")]
    StoreStopped,
}

impl Manager {
    /// Views of these registered agents, with their liveness.
    pub(super) fn views(&self, ids: Vec<String>) -> impl std::future::Future<Output = Vec<AgentView>> + 'static {
        let registered = self.registry_view.load();
        let mut views: Vec<AgentView> = ids
            .iter()
            .filter_map(|id| registered.get(id))
            .map(|info| self.view_now(info))
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

    /// The view of one agent from what the Manager holds (liveness not yet joined).
    pub(super) fn view_now(&self, info: &AgentInfo) -> AgentView {
        let mut view = AgentView::new(info, self.agents.get(&info.id).map(|e| &e.state));
        // Only a supervised agent has a process (one whose command was just removed may
        // still be on the board while its tree ends).
        if let Some(cx) = self.supervision.as_ref().filter(|_| info.is_supervised()) {
            view.process = cx.board.view(&info.id);
        }
        view
    }

    /// Sends `msg` to the Registry and answers with its answer (a stopped Registry is a
    /// [`RegistryError::NotRunning`]).
    fn forward_to_registry<M, T>(&self, msg: M) -> ResponseFuture<Result<T, RegistryError>>
    where
        M: Message<Result = Result<T, RegistryError>> + Send + 'static,
        Registry: Handler<M>,
        T: Send + 'static,
    {
        let request = self.registry.send(msg);
        Box::pin(async move { request.await.map_err(|_| RegistryError::NotRunning)? })
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
#[rtype(result = "Result<Option<Vec<ResourceSample>>, ReadError>")]
pub struct GetHistory {
    pub id: String,
    pub limit: usize,
}

impl Handler<GetHistory> for Manager {
    type Result = ResponseFuture<Result<Option<Vec<ResourceSample>>, ReadError>>;

    fn handle(&mut self, GetHistory { id, limit }: GetHistory, _: &mut Context<Self>) -> Self::Result {
        if !self.registry_view.contains(&id) {
            return Box::pin(async { Ok(None) });
        }
        let limit = limit.min(self.policy.history_len);
        let pending = self
            .agents
            .get(&id)
            .map(|e| e.pending_samples().collect::<Vec<_>>())
            .unwrap_or_default();
        let read = self.store.send(store::ReadHistory { id, limit });
        Box::pin(async move {
            let on_disk = read.await.map_err(|_| ReadError::StoreStopped)??;
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
    type Result = ResponseActFuture<Self, Result<Vec<AgentView>, RegistryError>>;

    fn handle(&mut self, RegisterAgents(batch): RegisterAgents, _: &mut Context<Self>) -> Self::Result {
        let register = self.registry.send(registry::Register(batch.clone()));
        Box::pin(register.into_actor(self).map(move |result, act, _| {
            result.map_err(|_| RegistryError::NotRunning)??;
            for info in &batch {
                act.sync_process(info);
            }
            Ok(batch.iter().map(|info| act.view_now(info)).collect())
        }))
    }
}

/// Applies `[[agents]]` of a reloaded configuration (SIGHUP): the file's agents are as it
/// says (see `registry::config_owned`); a changed agent with a `command` is restarted only if
/// its supervision settings changed, one that left the file is stopped and removed, a new one
/// started. Answers what changed.
#[derive(Message)]
#[rtype(result = "Result<ConfigChanges, RegistryError>")]
pub struct SyncConfigAgents(pub Vec<AgentInfo>);

impl Handler<SyncConfigAgents> for Manager {
    type Result = ResponseActFuture<Self, Result<ConfigChanges, RegistryError>>;

    fn handle(&mut self, SyncConfigAgents(agents): SyncConfigAgents, _: &mut Context<Self>) -> Self::Result {
        let sync = self.forward_to_registry(registry::SyncConfigAgents(agents));
        Box::pin(sync.into_actor(self).map(|result, act, _| {
            let changes = result?;
            act.apply_config_changes(&changes);
            Ok(changes)
        }))
    }
}

impl Manager {
    /// Brings processes, liveness and files in line with what the configuration changed.
    pub fn apply_config_changes(&mut self, changes: &ConfigChanges) {
        let registered = self.registry_view.load();
        let touched = changes.added.iter().chain(changes.changed.iter().map(|(id, _)| id));
        for info in touched.filter_map(|id| registered.get(id)) {
            self.sync_process(info);
        }
        drop(registered);
        for gone in &changes.removed {
            if let Some(actor) = self.processes.remove(&gone.id) {
                actor.do_send(Retire);
            }
            let delete = self.forget_agent(&gone.id);
            let log = self.log.clone();
            actix::spawn(async move {
                if let Ok(Err(e)) = delete.await {
                    error!(log, "agent removed from the configuration, but its files could not be removed"; "error" => %e,
                        "what_to_do" => "remove agents/<id>.json and history/<id>.log by hand");
                }
            });
        }
    }

    /// Forgets an unregistered agent: no liveness, no state in memory; answers the removal of
    /// its files.
    fn forget_agent(&mut self, id: &str) -> actix::dev::Request<FileMetadataStore, store::Delete> {
        // No longer watched: no late/down, no webhook, no events file, not counted.
        if let Some(liveness) = &self.liveness {
            liveness.do_send(liveness::Forget(id.to_owned()));
        }
        if let Some(entry) = self.agents.remove(id) {
            self.samples_since_checkpoint = self
                .samples_since_checkpoint
                .saturating_sub(entry.since_checkpoint.len());
        }
        self.store.send(store::Delete(id.to_owned()))
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
    pub change: AgentChange,
}

impl Handler<UpdateAgent> for Manager {
    type Result = ResponseActFuture<Self, Result<AgentView, RegistryError>>;

    fn handle(&mut self, msg: UpdateAgent, _: &mut Context<Self>) -> Self::Result {
        let update = registry::UpdateInfo {
            id: msg.id,
            change: msg.change,
        };
        Box::pin(self.registry.send(update).into_actor(self).then(|result, act, ctx| {
            let updated = result.map_err(|_| RegistryError::NotRunning).and_then(|r| r);
            let view = updated.map(|info| {
                act.sync_process(&info);
                if let Some(entry) = act.agents.get_mut(&info.id) {
                    entry.state.name = info.name.clone();
                    entry.state.agent_type = info.agent_type.clone();
                    if !entry.dirty {
                        entry.dirty = true;
                        act.dirty.push(info.id.clone());
                    }
                }
                act.arm_timers(ctx);
                let id = info.id.clone();
                (act.views(vec![info.id]), id)
            });
            fut::wrap_future(async move {
                let (view, id) = view?;
                view.await.pop().ok_or(RegistryError::Vanished(id))
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
        // A supervised agent's tree is ended first, so nothing of it runs unregistered and
        // no late process event lands after its files are removed.
        let retired = self.processes.remove(&id).map(|actor| actor.send(Retire));
        let registry = self.registry.clone();
        let unregister = async move {
            if let Some(retired) = retired {
                let _ = retired.await;
            }
            registry.send(registry::Unregister(id)).await
        };
        Box::pin(unregister.into_actor(self).then(|result, act, _| {
            let removed = result.map_err(|_| RegistryError::NotRunning).and_then(|r| r);
            // Forget the agent now; its journal records are skipped at replay (not registered).
            let delete = removed.map(|info| act.forget_agent(&info.id));
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
    /// Only ids that start with this (the status page's search); `None` for all.
    pub prefix: Option<String>,
    pub status: Option<AgentStatus>,
    pub after: Option<String>,
    pub limit: usize,
}

/// With a status filter, candidates go to Liveness this many at a time, until a page is full:
/// a `?status=down` on a 100k-agent fleet never copies every id at once.
const STATUS_CHUNK: usize = 4096;

impl Handler<ListAgents> for Manager {
    type Result = ResponseActFuture<Self, AgentPage>;

    fn handle(&mut self, msg: ListAgents, _: &mut Context<Self>) -> Self::Result {
        let registered = self.registry_view.load();
        let limit = msg.limit;
        let liveness = self.liveness.clone();
        let find = async move {
            let of_type = |id: &&String| {
                msg.agent_type
                    .as_ref()
                    .is_none_or(|t| registered.get(id).is_some_and(|info| &info.agent_type == t))
            };
            // Ids are sorted, so those with the prefix are one run starting at the prefix itself.
            let prefix = msg.prefix.as_deref().unwrap_or("");
            let mut candidates = registered
                .ids_after(msg.after.as_deref())
                .iter()
                .skip_while(|id| id.as_str() < prefix)
                .take_while(|id| id.starts_with(prefix))
                .filter(of_type);
            // One more than a page tells whether another page follows. The status filter comes
            // before paging, so a page is full whatever it filters out.
            let mut ids: Vec<String> = Vec::new();
            match (msg.status, liveness) {
                (None, _) => ids.extend(candidates.take(limit + 1).cloned()),
                (Some(status), Some(liveness)) => loop {
                    let chunk: Vec<String> = candidates.by_ref().take(STATUS_CHUNK).cloned().collect();
                    if chunk.is_empty() {
                        break;
                    }
                    let keep = liveness
                        .send(liveness::InStatus {
                            ids: chunk.clone(),
                            status,
                        })
                        .await
                        .unwrap_or_default();
                    ids.extend(chunk.into_iter().zip(keep).filter(|(_, k)| *k).map(|(id, _)| id));
                    if ids.len() > limit {
                        break;
                    }
                },
                // Without liveness tracking every agent is new.
                (Some(AgentStatus::New), None) => ids.extend(candidates.take(limit + 1).cloned()),
                (Some(_), None) => {}
            }
            let more = ids.len() > limit;
            ids.truncate(limit);
            (ids, more)
        };
        Box::pin(fut::wrap_future(find).then(move |(ids, more), act: &mut Manager, _| {
            fut::wrap_future(act.views(ids)).map(move |agents: Vec<AgentView>, _, _| {
                let next_after = if more {
                    agents.last().map(|a| a.id.clone())
                } else {
                    None
                };
                AgentPage { agents, next_after }
            })
        }))
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
#[rtype(result = "Result<Option<Vec<AgentEvent>>, ReadError>")]
pub struct GetEvents {
    pub id: String,
    pub limit: usize,
}

impl Handler<GetEvents> for Manager {
    type Result = ResponseFuture<Result<Option<Vec<AgentEvent>>, ReadError>>;

    fn handle(&mut self, GetEvents { id, limit }: GetEvents, _: &mut Context<Self>) -> Self::Result {
        if !self.registry_view.contains(&id) {
            return Box::pin(async { Ok(None) });
        }
        let read = self.store.send(store::ReadEvents { id, limit });
        Box::pin(async move { Ok(Some(read.await.map_err(|_| ReadError::StoreStopped)??)) })
    }
}
