//! The Manager's supervision room: it owns one [`AgentProcess`] per agent with a `command`,
//! keeps them in step with the registry (registered, changed, deleted, imported on SIGHUP),
//! tells them of heartbeats and silence, and passes the operators' start/stop/restart on.

use std::time::Duration;

use actix::prelude::*;
use slog::{error, info};

use super::Manager;
use crate::liveness::{self, WentDown};
use crate::model::agent::validate_process;
use crate::model::agent::{AgentInfo, AgentView};
use crate::supervision::adoption;
use crate::supervision::process::{Action, AgentProcess, Control, KillNow, Reconfigure, Release, Retire, WentSilent};
use crate::supervision::{keeper, reaper};

/// Why a start, stop or restart was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    #[error("agent {0:?} is not registered")]
    NotFound(String),
    #[error("agent {0:?} has no command: heartbeatd does not run it (set command to supervise it)")]
    NotSupervised(String),
    #[error("the manager is not running")]
    NotRunning,
}

impl Manager {
    /// Starts supervision: heartbeatd becomes a subreaper, every supervised agent gets its
    /// actor (autostart ones start), and Liveness reports `down` here.
    pub(super) fn start_supervision(&mut self, ctx: &mut Context<Self>) {
        if self.supervision.is_none() {
            for (_, keeper) in self.adoptable.drain() {
                adoption::stop_unwanted(keeper, &self.log);
            }
            return;
        }
        reaper::start();
        if let Some(liveness) = &self.liveness {
            liveness.do_send(liveness::WatchDown(ctx.address().recipient()));
        }
        let supervised: Vec<AgentInfo> = self
            .registry_view
            .load()
            .values()
            .filter(|info| info.is_supervised())
            .cloned()
            .collect();
        if !supervised.is_empty() {
            // Which program runs as the keepers; when heartbeatd-keep is missing, the first
            // keeper started says so as an ERROR (process.rs).
            let keeper = match keeper::keeper_program() {
                keeper::KeeperProgram::Own(path) => path.display().to_string(),
                keeper::KeeperProgram::Fallback { .. } => "heartbeatd keep (heartbeatd-keep is missing)".to_owned(),
            };
            info!(self.log, "starting supervised agents"; "agents" => supervised.len(),
                "autostart" => supervised.iter().filter(|i| i.autostart.unwrap_or(true)).count(),
                "keeper" => keeper);
        }
        for info in &supervised {
            self.sync_process(info);
        }
        // Keepers of agents deleted, or no longer supervised, while heartbeatd was away.
        for (_, keeper) in self.adoptable.drain() {
            adoption::stop_unwanted(keeper, &self.log);
        }
    }

    /// Brings the agent's process actor in line with its record: created for a new
    /// `command`, given changed settings, retired when the command is gone.
    pub(super) fn sync_process(&mut self, info: &AgentInfo) {
        let Some(cx) = &self.supervision else { return };
        // Records from the config and the API are checked before they get here; this catches
        // a registry.json edited by hand.
        if let Err(reason) = validate_process(info) {
            error!(self.log, "the agent's supervision settings are invalid; it is not run"; "agent_id" => &info.id,
                "error" => reason, "what_to_do" => "fix them with PATCH /agents/{id}");
            return;
        }
        match (info.process_spec(), self.processes.get(&info.id)) {
            (Some(spec), None) => {
                let actor = AgentProcess::new(info.id.clone(), spec, cx.clone(), cx.log.clone())
                    .adopting(self.adoptable.remove(&info.id))
                    .start();
                self.processes.insert(info.id.clone(), actor);
            }
            (Some(spec), Some(actor)) => actor.do_send(Reconfigure(spec)),
            (None, Some(_)) => {
                if let Some(actor) = self.processes.remove(&info.id) {
                    actor.do_send(Retire);
                }
            }
            (None, None) => {}
        }
    }

    /// Tells the supervised agents among a batch of heartbeats that they were heard.
    pub(super) fn heard(&self, id: &str, pid: i64) {
        if let Some(actor) = self.processes.get(id) {
            actor.do_send(crate::supervision::process::Heard { pid });
        }
    }
}

impl Handler<WentDown> for Manager {
    type Result = ();

    fn handle(&mut self, WentDown(id): WentDown, ctx: &mut Context<Self>) {
        let Some(actor) = self.processes.get(&id) else { return };
        // While the agent is being restarted for its silence, Liveness checks again one
        // interval + grace later: a restarted program that never reports either is restarted
        // again, until it reports or is `fatal` (a backoff longer than the check is waited out).
        let asked = actor.send(WentSilent);
        ctx.spawn(fut::wrap_future(asked).map(move |check_again, act: &mut Manager, _| {
            if let (Ok(true), Some(liveness)) = (check_again, &act.liveness) {
                liveness.do_send(liveness::RecheckSilence(id));
            }
        }));
    }
}

/// Start, stop or restart a supervised agent (`POST /agents/{id}/start|stop|restart`);
/// answers the agent as it is afterwards.
#[derive(Message)]
#[rtype(result = "Result<AgentView, ControlError>")]
pub struct ControlAgent {
    pub id: String,
    pub action: Action,
}

impl Handler<ControlAgent> for Manager {
    type Result = ResponseActFuture<Self, Result<AgentView, ControlError>>;

    fn handle(&mut self, ControlAgent { id, action }: ControlAgent, _: &mut Context<Self>) -> Self::Result {
        if !self.registry_view.contains(&id) {
            return Box::pin(fut::ready(Err(ControlError::NotFound(id))));
        }
        let Some(actor) = self.processes.get(&id) else {
            return Box::pin(fut::ready(Err(ControlError::NotSupervised(id))));
        };
        let done = actor.send(Control(action));
        Box::pin(done.into_actor(self).then(move |result, act, _| {
            let views = result.map(|_| act.views(vec![id]));
            fut::wrap_future(async move {
                let view = views.map_err(|_| ControlError::NotRunning)?.await;
                view.into_iter().next().ok_or(ControlError::NotRunning)
            })
        }))
    }
}

/// Ends every supervised tree (heartbeatd is stopping), all in parallel: each gets its stop
/// signal, then SIGKILL after its `stop_timeout_s`. Answers with how many were running
/// once all are gone, or once `deadline` has passed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RetireAll {
    pub deadline: Duration,
}

impl Handler<RetireAll> for Manager {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, RetireAll { deadline }: RetireAll, _: &mut Context<Self>) -> Self::Result {
        let actors: Vec<_> = self.processes.drain().map(|(_, actor)| actor).collect();
        let count = actors.len();
        Box::pin(async move {
            let retiring = futures::future::join_all(actors.iter().map(|a| a.send(Retire)));
            let mut retiring = Box::pin(retiring);
            if actix::clock::timeout(deadline, &mut retiring).await.is_err() {
                // Out of time: every tree is killed now, and gets a moment to be reaped.
                for actor in &actors {
                    actor.do_send(KillNow);
                }
                let _ = actix::clock::timeout(Duration::from_secs(2), retiring).await;
            }
            count
        })
    }
}

/// heartbeatd hands over to a new one (an upgrade) that adopts the keepers: every process
/// actor ends and leaves its tree running. Answers how many trees were left running.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ReleaseAll;

impl Handler<ReleaseAll> for Manager {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: ReleaseAll, _: &mut Context<Self>) -> Self::Result {
        let actors: Vec<_> = self.processes.drain().map(|(_, actor)| actor).collect();
        Box::pin(async move {
            let released = futures::future::join_all(actors.iter().map(|a| a.send(Release))).await;
            released.into_iter().filter(|r| matches!(r, Ok(true))).count()
        })
    }
}
