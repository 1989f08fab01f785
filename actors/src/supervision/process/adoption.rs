//! [`AgentProcess`]'s part in adoption (see [`crate::supervision::adoption`]): the spec a
//! keeper is started with (with its socket and the digest of its settings), taking over a
//! keeper the previous heartbeatd left running, and leaving the tree running at a hand-over.

use actix::prelude::*;
use chrono::Utc;
use slog::info;

use super::{read_reports, AgentProcess, KeeperEnded};
use crate::supervision::adoption::Adoptable;
use crate::supervision::keeper::rendezvous::{self, AdoptionSpec};
use crate::supervision::keeper::KeeperSpec;
use crate::supervision::limits;
use crate::supervision::machine::Event;
use crate::supervision::reaper;

impl AgentProcess {
    /// The actor takes `keeper` over when it starts, instead of starting a run.
    pub fn adopting(mut self, keeper: Option<Adoptable>) -> Self {
        self.adopting = keeper;
        self
    }

    /// What a keeper started now for this agent runs. With `adopt_timeout_s`, it listens
    /// under `data_dir/run/` for the next heartbeatd.
    pub(super) fn keeper_spec(&self, started_at_ms: i64) -> KeeperSpec {
        let mut spec = KeeperSpec {
            agent_id: self.id.clone(),
            command: self.spec.command.clone(),
            working_dir: self.spec.working_dir.clone(),
            env: self.spec.env.clone(),
            stop_signal: self.spec.stop_signal,
            stop_timeout_ms: self.spec.stop_timeout.as_millis() as u64,
            log_path: self.cx.logs_dir.join(format!("{}.log", self.id)),
            log_max_bytes: self.spec.log_max_bytes,
            log_backups: self.spec.log_backups,
            max_processes: self.spec.max_processes,
            parent_pid: std::process::id() as i32,
            adoption: None,
        };
        let socket = rendezvous::socket_path(&self.cx.data_dir, &self.id);
        if let (false, Some(socket)) = (self.cx.adopt_timeout.is_zero(), socket) {
            spec.adoption = Some(AdoptionSpec {
                timeout_ms: self.cx.adopt_timeout.as_millis() as u64,
                socket,
                started_at_ms,
                settings_digest: rendezvous::settings_digest(&spec),
            });
        }
        spec
    }

    /// Takes over a keeper the previous heartbeatd left running: the run goes on as it is
    /// (same pids, no restart counted), its reports now come on the socket. An exit during
    /// the gap comes as its first report, and is followed by the normal policy; settings
    /// changed meanwhile restart it with the new ones, as any change of settings does.
    pub(super) fn adopt(&mut self, keeper: Adoptable, ctx: &mut Context<Self>) {
        let Adoptable { hello, stream } = keeper;
        let keeper_pid = hello.keeper_pid;
        reaper::adopted(keeper_pid);
        let started_at = chrono::DateTime::from_timestamp_millis(hello.started_at_ms).unwrap_or_else(Utc::now);
        self.last_pid = Some(i64::from(hello.agent_pid));
        self.feed(
            Event::Adopted {
                keeper: keeper_pid,
                pid: i64::from(hello.agent_pid),
                started_at,
            },
            ctx,
        );
        let Some(generation) = self.machine.state().run().map(|r| r.generation) else {
            reaper::no_longer_adopted(keeper_pid);
            return;
        };
        // Its tree is measured from now on, as one this heartbeatd started (process.usage).
        self.cx.board.track(&self.id, keeper_pid);
        let changed = rendezvous::settings_digest(&self.keeper_spec(0)) != hello.settings_digest;
        info!(self.log, "adopted the agent's keeper from the previous heartbeatd: its program kept running";
            "agent_id" => &self.id, "pid" => hello.agent_pid, "keeper_pid" => keeper_pid,
            "exited_meanwhile" => !hello.agent_running, "settings_changed" => changed);
        let addr = ctx.address();
        self.reports = Some(actix::spawn(async move {
            let socket = stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(stream));
            if let Ok(socket) = socket {
                read_reports(socket, &addr, generation).await;
            }
            reaper::no_longer_adopted(keeper_pid);
            addr.do_send(KeeperEnded { generation });
        }));
        if self.spec.has_limits() {
            let check = ctx.run_interval(limits::SAMPLE_INTERVAL, move |act, ctx| act.sample(generation, ctx));
            self.limit_check = Some((generation, check));
        }
        if changed {
            self.feed(Event::Reconfigured, ctx);
        }
    }
}

/// heartbeatd hands over to a new one that adopts the keepers: the actor ends and leaves
/// the tree running (its keeper waits for the new heartbeatd, see
/// `heartbeatd_keep::adopt`). Answers whether a tree was running.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Release;

impl Handler<Release> for AgentProcess {
    type Result = bool;

    fn handle(&mut self, _: Release, ctx: &mut Context<Self>) -> bool {
        self.released = true;
        if let Some(reports) = self.reports.take() {
            reports.abort();
        }
        ctx.stop();
        self.machine.state().run().is_some()
    }
}
