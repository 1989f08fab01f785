//! The Manager's admin facade: the messages behind the admin API (`/agents` and its
//! sub-resources), SIGHUP's agent import and `auto_register`. Registry changes go through the
//! Registry (which owns who may report); reads join its snapshot with the Manager's state and
//! Liveness's view.

use std::collections::HashMap;

use actix::prelude::*;
use serde::Serialize;
use slog::error;

use super::Manager;
use crate::liveness;
#[cfg(any(test, feature = "testkit"))]
use crate::model::agent::AgentState;
use crate::model::agent::{AgentChange, AgentInfo, AgentView, ResourceSample};
use crate::model::events::AgentEvent;
use crate::model::liveness::AgentStatus;
use crate::registry::config_owned::ConfigChanges;
use crate::registry::{self, Candidates, Registry, RegistryError};
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
    /// Views of these registered agents, with their liveness and, for supervised ones, what
    /// their trees use (measured off this thread where the last figure is stale: see
    /// `supervision::usage`).
    pub(super) fn views(&self, ids: Vec<String>) -> impl std::future::Future<Output = Vec<AgentView>> + 'static {
        self.views_within(ids, usize::MAX)
    }

    /// Views of these registered agents, in order, stopping once those built pass `max_bytes`
    /// of JSON at the least ([`AgentView::json_bytes_at_least`]; the first is always built): a
    /// page builds no view that could not fit it, however large each agent's `command`.
    pub(super) fn views_within(
        &self,
        ids: Vec<String>,
        max_bytes: usize,
    ) -> impl std::future::Future<Output = Vec<AgentView>> + 'static {
        let registered = self.registry_view.load();
        let mut at_least = 0usize;
        let mut views: Vec<AgentView> = ids
            .iter()
            .filter_map(|id| registered.get(id))
            .take_while(|info| {
                let fits = at_least == 0 || at_least < max_bytes;
                at_least = at_least.saturating_add(AgentView::json_bytes_at_least(info));
                fits
            })
            .map(|info| self.view_now(info))
            .collect();
        let statuses = self
            .liveness
            .as_ref()
            .map(|l| l.send(liveness::Statuses(views.iter().map(|v| v.id.clone()).collect())));
        let board = self.supervision.as_ref().map(|cx| cx.board.clone());
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
            let supervised: Vec<String> = views
                .iter()
                .filter(|v| v.process.is_some())
                .map(|v| v.id.clone())
                .collect();
            if let Some(board) = board.filter(|_| !supervised.is_empty()) {
                let measuring = tokio::task::spawn_blocking(move || {
                    let usage = board.measure(&supervised);
                    supervised.into_iter().zip(usage).collect::<HashMap<_, _>>()
                });
                if let Ok(measured) = measuring.await {
                    for view in &mut views {
                        if let Some(process) = view.process.as_mut() {
                            process.usage = measured.get(&view.id).copied().flatten();
                        }
                    }
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

/// Makes a page of `GET /agents` from the candidates the HTTP side found in the registry's
/// snapshot (by prefix and type, within its scan budget, off this thread): keeps those in
/// `status`, then builds the views of the first `limit`, no more than `max_bytes` can hold.
/// The Manager's share of a page is bounded by the candidates' number, whatever the fleet.
#[derive(Message)]
#[rtype(result = "AgentPage")]
pub struct ListAgents {
    pub candidates: Candidates,
    pub status: Option<AgentStatus>,
    pub limit: usize,
    /// The page's bytes: views past them are not built.
    pub max_bytes: usize,
}

/// With a status filter, candidates go to Liveness this many at a time.
const STATUS_CHUNK: usize = 4096;

impl Handler<ListAgents> for Manager {
    type Result = ResponseActFuture<Self, AgentPage>;

    fn handle(&mut self, msg: ListAgents, _: &mut Context<Self>) -> Self::Result {
        let ListAgents {
            candidates: Candidates { ids, resume_after },
            status,
            limit,
            max_bytes,
        } = msg;
        let liveness = self.liveness.clone();
        let keep = async move {
            match (status, liveness) {
                (None, _) => ids,
                (Some(status), Some(liveness)) => {
                    let mut kept = Vec::new();
                    for chunk in ids.chunks(STATUS_CHUNK) {
                        let keep = liveness
                            .send(liveness::InStatus {
                                ids: chunk.to_vec(),
                                status,
                            })
                            .await
                            .unwrap_or_default();
                        kept.extend(chunk.iter().zip(keep).filter(|(_, k)| *k).map(|(id, _)| id.clone()));
                        if kept.len() > limit {
                            break;
                        }
                    }
                    kept
                }
                // Without liveness tracking every agent is new.
                (Some(AgentStatus::New), None) => ids,
                (Some(_), None) => Vec::new(),
            }
        };
        Box::pin(
            fut::wrap_future(keep).then(move |mut ids: Vec<String>, act: &mut Manager, _| {
                // One more than a page tells that another follows; else the walk says whether it
                // stopped with ids left.
                let mut next_after = if ids.len() > limit {
                    ids.truncate(limit);
                    ids.last().cloned()
                } else {
                    resume_after
                };
                let wanted = ids.len();
                fut::wrap_future(act.views_within(ids, max_bytes)).map(move |agents: Vec<AgentView>, _, _| {
                    if let Some(last) = agents.last().filter(|_| agents.len() < wanted) {
                        // The page's bytes ended it: go on after its last agent.
                        next_after = Some(last.id.clone());
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 40 agents whose `command` is 16 arguments of 4000 bytes (64 KB each, as the API allows).
    fn big_agents() -> Vec<AgentInfo> {
        (0..40)
            .map(|i| AgentInfo {
                id: format!("big-{i:02}"),
                command: Some(vec!["x".repeat(4000); 16]),
                ..Default::default()
            })
            .collect()
    }

    #[actix_rt::test]
    async fn a_page_builds_no_view_that_could_not_fit_its_bytes() {
        // Arrange
        let actors = crate::testkit::start(1, 10);
        let agents = big_agents();
        let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
        actors.manager.send(RegisterAgents(agents)).await.unwrap().unwrap();

        // Act: a page of 256 KiB asked for all 40.
        let page = actors
            .manager
            .send(ListAgents {
                candidates: Candidates {
                    ids,
                    resume_after: None,
                },
                status: None,
                limit: 1000,
                max_bytes: 256 << 10,
            })
            .await
            .unwrap();

        // Assert: 5 views of 64 KB pass 256 KiB at the least (the old page built all 40, then
        // encoded 4 of them); the next page starts after the last one built.
        assert_eq!(page.agents.len(), 5);
        assert_eq!(page.next_after.as_deref(), Some("big-04"));
        let built: usize = page.agents.iter().map(AgentView::memory_bytes).sum();
        assert!(built < 5 * 70_000, "{built} bytes of views");
    }
}
