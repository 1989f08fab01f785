//! [`AgentProcess`]: one actor per supervised agent, owned by the Manager. It feeds the
//! agent's [`Machine`] every event (an operator's request, the keeper's reports, timers,
//! silence, limits) and carries out the effects it returns: launching and signalling the
//! keeper, arming timers, sampling resources, and saying what changed (the log, the agent's
//! events, the webhook, Alertmanager, the [`ProcessBoard`]). The decisions are the machine's;
//! this actor only does.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use chrono::Utc;
use futures::channel::oneshot;
use slog::{error, info, warn, Logger};
use tokio::io::AsyncBufReadExt;

use super::adoption::Adoptable;
use super::board::ProcessBoard;
use super::keeper::{self, KeeperLine};
use super::limits::{self, LimitWatch};
use super::machine::{Effect, Event, Exit, Machine, Note, Now, State, Waiters};
use super::procfs;
use super::restart;
use crate::data_dir;
use crate::liveness::tracker::ProcessPhase;
use crate::liveness::{Liveness, ProcessChanged};
use crate::log_text::Present;
use crate::model::process::{
    ExitReason, LastExit, ProcessEvent, ProcessEventKind, ProcessSpec, ProcessState, ProcessView,
};
use crate::notify::alerter::{AlertName, Alerter, Fire, Resolve};
use crate::notify::webhook::{DeliverProcess, Webhook};
use crate::registry::RegistrySnapshot;
use crate::store::{AppendProcessEvent, FileMetadataStore};

mod adoption;

pub use adoption::Release;

/// A reported pid is checked against the tree at most this often.
const PID_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What every process actor shares: where outputs go, where events go.
#[derive(Clone)]
pub struct SupervisionContext {
    /// `data_dir/logs`.
    pub logs_dir: PathBuf,
    /// `data_dir`: the keepers' sockets are under its `run/`.
    pub data_dir: PathBuf,
    /// `adopt_timeout_s`: how long a tree outlives heartbeatd, waiting to be adopted by the
    /// next one; zero: it ends with heartbeatd.
    pub adopt_timeout: std::time::Duration,
    pub store: Addr<FileMetadataStore>,
    /// The webhook, and whether a URL is set.
    pub webhook: Option<(Addr<Webhook>, Arc<AtomicBool>)>,
    pub board: ProcessBoard,
    /// Fires `HeartbeatAgentFatal` (when `alertmanager_url` is set).
    pub alerter: Option<Addr<Alerter>>,
    /// The agent type of each agent, for alert labels: read from the registry's snapshot.
    pub registry: RegistrySnapshot,
    /// The process actors' logger (`actor: process`).
    pub log: Logger,
    /// Told of each program's phase: a program stopped on purpose is not `down`, and one
    /// that sends no heartbeats is `up` while it runs.
    pub liveness: Option<Addr<Liveness>>,
}

/// One supervised agent.
pub struct AgentProcess {
    id: String,
    spec: ProcessSpec,
    cx: SupervisionContext,
    machine: Machine,
    /// Answered once the tree has ended (a stop or a retirement).
    waiters: Vec<oneshot::Sender<()>>,
    /// Answered once the keeper of a new run has said whether the command started (a start
    /// or a restart), so the answer carries its pid.
    start_waiters: Vec<oneshot::Sender<()>>,
    /// Answered once a run is no longer `starting`: `running`, or it failed to start.
    running_waiters: Vec<oneshot::Sender<()>>,
    /// The resource sampling of the current run: its generation, timer and readings.
    limit_check: Option<(u64, SpawnHandle)>,
    usage: LimitWatch,
    /// The CPU ticks of the current run's reaped processes, as its keeper last said.
    reaped_cpu_ticks: u64,
    /// The pid of the last run's agent, for the events that follow its end.
    last_pid: Option<i64>,
    /// The last reported pid checked against the tree, and when.
    checked_pid: Option<(i64, Instant)>,
    pid_mismatch: Option<i64>,
    mismatch_warned: bool,
    /// A keeper left running by the previous heartbeatd, taken over when the actor starts.
    adopting: Option<Adoptable>,
    /// heartbeatd is handing over to a new one, which adopts the keeper: the actor ends
    /// without ending the tree.
    released: bool,
    /// The task reading the current keeper's reports: ended at a release, which closes this
    /// end of the keeper's pipe or socket, so the keeper knows at once to wait for the next
    /// heartbeatd (an exit meanwhile is then said to it, not to this one).
    reports: Option<tokio::task::JoinHandle<()>>,
    log: Logger,
}

impl AgentProcess {
    pub fn new(id: String, spec: ProcessSpec, cx: SupervisionContext, log: Logger) -> Self {
        Self {
            id,
            spec,
            cx,
            machine: Machine::new(),
            waiters: Vec::new(),
            start_waiters: Vec::new(),
            running_waiters: Vec::new(),
            limit_check: None,
            usage: LimitWatch::default(),
            reaped_cpu_ticks: 0,
            last_pid: None,
            checked_pid: None,
            pid_mismatch: None,
            mismatch_warned: false,
            adopting: None,
            released: false,
            reports: None,
            log,
        }
    }

    fn view(&self) -> ProcessView {
        let run = self.machine.state().run();
        ProcessView {
            state: self.machine.state().name(),
            pid: run.and_then(|r| r.agent_pid),
            started_at: run.map(|r| r.started_at),
            restarts: self.machine.restarts(),
            last_exit: self.machine.last_exit().cloned(),
            reported_pid_mismatch: self.pid_mismatch,
            usage: self.cx.board.last_usage(&self.id),
        }
    }

    fn publish(&self) {
        self.cx.board.publish(&self.id, self.view());
    }

    /// Gives `event` to the machine and carries out what it says.
    fn feed(&mut self, event: Event, ctx: &mut Context<Self>) {
        let now = Now {
            spec: &self.spec,
            at: Instant::now(),
            wall: Utc::now(),
            jitter: restart::jitter(),
        };
        let effects = self.machine.step(event, &now);
        for effect in effects {
            self.apply(effect, ctx);
        }
    }

    fn apply(&mut self, effect: Effect, ctx: &mut Context<Self>) {
        match effect {
            Effect::Launch { generation } => self.launch(generation, ctx),
            Effect::StopTree => self.signal_keeper(keeper::STOP),
            Effect::KillTree => self.signal_keeper(keeper::KILL_NOW),
            Effect::KillKeeper => self.signal_keeper(libc::SIGKILL),
            Effect::Arm(timer, after) => {
                ctx.run_later(after, move |act, ctx| act.feed(Event::Timer(timer), ctx));
            }
            Effect::Changed { from, to, exit } => self.changed(from, to, exit, ctx),
            Effect::Publish => {
                self.last_pid = self.machine.state().run().and_then(|r| r.agent_pid).or(self.last_pid);
                self.publish();
            }
            Effect::CountRestart(reason) => self.cx.board.count_restart(&self.id, reason),
            Effect::Answer(Waiters::Stop) => {
                for waiter in self.waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
            Effect::Answer(Waiters::Start) => {
                for waiter in self.start_waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
            Effect::StopWaitersWaitForStart => {
                let waiting = std::mem::take(&mut self.waiters);
                self.start_waiters.extend(waiting);
            }
            Effect::Note(note) => self.note(note),
            Effect::Remove => {
                self.cx.board.remove(&self.id);
                ctx.stop();
            }
        }
    }

    /// Spawns the keeper of run `generation` and reads its reports off this actor's thread.
    fn launch(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let spec = self.keeper_spec(Utc::now().timestamp_millis());
        let log_path = spec.log_path.clone();
        // The keeper opens the output file itself. Opening it here first creates it (0600, in
        // a 0700 logs/) in heartbeatd's process, where a refusal (a link planted at that name)
        // is logged as an ERROR saying what to do. The keeper then refuses it too and discards
        // the output; the agent still runs. Any other failure is the keeper's to report.
        let _ = data_dir::create_dir_private(&self.cx.logs_dir).and_then(|()| data_dir::open_append(&log_path));
        self.pid_mismatch = None;
        self.checked_pid = None;
        self.last_pid = None;
        self.usage = LimitWatch::default();
        self.reaped_cpu_ticks = 0;
        let spawned = match keeper::spawn_keeper(&spec) {
            Ok(spawned) => spawned,
            Err(e) => {
                error!(self.log, "could not start the agent's keeper";
                    "agent_id" => &self.id, "error" => %e,
                    "what_to_do" => "check that heartbeatd-keep and heartbeatd's binary are still in place and that the process limit (ulimit -u) is not reached");
                self.feed(Event::LaunchFailed, ctx);
                return;
            }
        };
        self.cx.board.track(&self.id, spawned.pid);
        if let Some((expected, why)) = &spawned.first_fallback {
            error!(self.log, "could not run the keeper program heartbeatd-keep: agents run under heartbeatd's own binary instead, which costs more memory per agent";
                "agent_id" => &self.id, "expected" => %expected.display(), "error" => %why,
                "what_to_do" => "install heartbeatd-keep in the same directory as heartbeatd, executable (make build puts both in target/release/); agents started from then on use it");
        }
        let addr = ctx.address();
        let reports = spawned.reports;
        self.reports = Some(actix::spawn(async move {
            let lines = std::os::fd::OwnedFd::from(reports);
            if let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(lines) {
                read_reports(pipe, &addr, generation).await;
            }
            addr.do_send(KeeperEnded { generation });
        }));
        if let Some((_, handle)) = self.limit_check.take() {
            ctx.cancel_future(handle);
        }
        if self.spec.has_limits() {
            let check = ctx.run_interval(limits::SAMPLE_INTERVAL, move |act, ctx| act.sample(generation, ctx));
            self.limit_check = Some((generation, check));
        }
        self.feed(Event::Launched { keeper: spawned.pid }, ctx);
    }

    fn signal_keeper(&self, signal: i32) {
        if let Some(keeper) = self.machine.state().run().and_then(|r| r.keeper) {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(keeper, signal) };
        }
    }

    /// Reads the tree's CPU and memory once a second; a limit that held for `limit_for_s`
    /// restarts it.
    fn sample(&mut self, generation: u64, ctx: &mut Context<Self>) {
        let run = self.machine.state().run().filter(|r| r.generation == generation);
        let Some(keeper) = run.and_then(|r| r.keeper) else {
            if let Some((_, handle)) = self.limit_check.take() {
                ctx.cancel_future(handle);
            }
            return;
        };
        if self.machine.state().name() == ProcessState::Stopping {
            return;
        }
        let usage = limits::sample_tree(keeper, self.reaped_cpu_ticks);
        self.cx.board.record(&self.id, usage);
        if let Some(reason) = self.usage.sample(usage, Instant::now(), &self.spec) {
            let spec = &self.spec;
            warn!(self.log, "the agent's tree stayed over its limit; restarting it"; "agent_id" => &self.id,
                "reason" => reason.name(), "memory_bytes" => usage.memory_bytes, "max_memory_bytes" => Present(spec.max_memory_bytes),
                "cpu_percent" => Present(self.usage.cpu_percent.map(|c| c.round() as u64)), "max_cpu_percent" => Present(spec.max_cpu_percent),
                "limit_for_s" => spec.limit_for.as_secs());
            self.feed(Event::OverLimit(reason), ctx);
        }
    }

    /// The state changed: logged, recorded, posted, published.
    fn changed(&mut self, from: ProcessState, to: ProcessState, exit: Option<LastExit>, ctx: &mut Context<Self>) {
        if !matches!(
            to,
            ProcessState::Starting | ProcessState::Running | ProcessState::Stopping
        ) {
            if let Some((_, handle)) = self.limit_check.take() {
                ctx.cancel_future(handle);
            }
            self.cx.board.untrack(&self.id);
        }
        self.publish();
        if to != ProcessState::Starting {
            for waiter in self.running_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        // A retirement (deleted, or heartbeatd stopping) is not a stop on purpose.
        if *self.machine.state() != State::Removed {
            self.tell_liveness(to);
        }
        let restarts = self.machine.restarts();
        let pid = self.machine.state().run().and_then(|r| r.agent_pid).or(self.last_pid);
        match &exit {
            Some(e) => info!(self.log, "agent process state changed"; "agent_id" => &self.id, "from" => from.name(),
                "to" => to.name(), "pid" => Present(pid), "exit_code" => Present(e.code), "exit_signal" => Present(e.signal.as_deref()),
                "reason" => e.reason.name(), "restarts" => restarts),
            None => info!(self.log, "agent process state changed"; "agent_id" => &self.id, "from" => from.name(),
                "to" => to.name(), "pid" => Present(pid), "restarts" => restarts),
        }
        let event = ProcessEvent {
            kind: ProcessEventKind::Process,
            from,
            to,
            at: Utc::now(),
            pid,
            exit,
            restarts,
        };
        if let Some(alerter) = &self.cx.alerter {
            if to == ProcessState::Fatal {
                alerter.do_send(Fire {
                    name: AlertName::HeartbeatAgentFatal,
                    agent_id: self.id.clone(),
                    agent_type: self.cx.registry.get(&self.id).map(|i| i.agent_type).unwrap_or_default(),
                    last_seen: None,
                    reported_status: None,
                    detail: event.exit.as_ref().map(|e| match (&e.code, &e.signal) {
                        (Some(code), _) => format!("last exit: code {code}"),
                        (None, Some(signal)) => format!("last exit: {signal}"),
                        _ => "last exit unknown".to_owned(),
                    }),
                });
            } else if from == ProcessState::Fatal {
                alerter.do_send(Resolve {
                    name: AlertName::HeartbeatAgentFatal,
                    agent_id: self.id.clone(),
                });
            }
        }
        if let Some((webhook, _)) = self.cx.webhook.as_ref().filter(|(_, on)| on.load(Ordering::Relaxed)) {
            webhook.do_send(DeliverProcess {
                agent_id: self.id.clone(),
                event: event.clone(),
            });
        }
        self.cx.store.do_send(AppendProcessEvent {
            agent_id: self.id.clone(),
            event,
        });
    }

    /// Tells Liveness what the program's state means for the agent's liveness.
    fn tell_liveness(&self, state: ProcessState) {
        let phase = match state {
            ProcessState::Running => ProcessPhase::Running,
            ProcessState::Starting | ProcessState::Stopping | ProcessState::Backoff => ProcessPhase::Transient,
            ProcessState::Stopped | ProcessState::Exited | ProcessState::Fatal => ProcessPhase::Stopped,
        };
        if let Some(liveness) = &self.cx.liveness {
            liveness.do_send(ProcessChanged {
                id: self.id.clone(),
                phase,
            });
        }
    }

    /// What the machine wants said that is not a change of state.
    fn note(&self, note: Note) {
        let id = &self.id;
        match note {
            Note::LaunchFailed => {}
            Note::CommandFailed(reason) => {
                warn!(self.log, "the agent's command could not be started"; "agent_id" => id,
                "error" => reason, "what_to_do" => "check command and working_dir; the agent's log file has the same line")
            }
            Note::KeeperKilled => {
                let (log, id) = (self.log.clone(), id.clone());
                super::reaper::sweep_orphans_for_a_while(move |orphans| {
                    error!(log, "the agent's keeper was killed; its tree was killed with it";
                        "agent_id" => id, "orphans_killed" => orphans,
                        "what_to_do" => "do not signal `heartbeatd-keep` processes; use heartbeatd ctl stop");
                });
            }
            Note::StartFailed { failures, allowed } => {
                warn!(self.log, "the agent's program failed before it was running; trying again";
                "agent_id" => id, "attempt" => failures, "of" => allowed + 1,
                "what_to_do" => "read its output (heartbeatd ctl tail <id>): it is given up on (fatal) after start_retries failed starts")
            }
            Note::CouldNotStart { failures } => {
                error!(self.log, "the agent's program could not start; it is left alone (fatal)";
                "agent_id" => id, "failed_starts" => failures,
                "what_to_do" => "read its output (heartbeatd ctl tail <id>), fix the cause (command, working_dir, env, what it needs), then heartbeatd ctl start <id>")
            }
            Note::TooManyRestarts => {
                error!(self.log, "the agent restarted too often and is left alone (fatal)"; "agent_id" => id,
                "max_restarts" => self.spec.max_restarts, "restart_window_s" => self.spec.restart_window.as_secs(),
                "fatal_retry_s" => Present(self.spec.fatal_retry.map(|d| d.as_secs())),
                "what_to_do" => "read its output (heartbeatd ctl tail <id>), fix the cause, then heartbeatd ctl start <id>")
            }
            Note::StartLimited { wait } => {
                warn!(self.log, "the agent restarts too fast: its next start waits for the start limit";
                "agent_id" => id, "wait_ms" => wait.as_millis() as u64,
                "what_to_do" => "look at why it keeps ending; set restart_backoff_ms so it is not restarted in a tight loop")
            }
            Note::FatalRetry => info!(self.log, "trying a fatal agent again (fatal_retry_s)"; "agent_id" => id),
            Note::StopOverdue => {
                warn!(self.log, "the agent's tree did not end within stop_timeout_s; killing it"; "agent_id" => id,
                "stop_timeout_s" => self.spec.stop_timeout.as_secs())
            }
            Note::KeeperUnresponsive => {
                error!(self.log, "the agent's keeper does not answer; killing it"; "agent_id" => id)
            }
            Note::RestartingForSettings => {
                info!(self.log, "the agent's settings changed; restarting it with them"; "agent_id" => id)
            }
            Note::RestartingForSilence => {
                warn!(self.log, "the agent went silent (liveness: down); restarting it"; "agent_id" => id)
            }
        }
    }

    /// Checks a reported pid against the tree (at most once per second per agent).
    fn check_reported_pid(&mut self, pid: i64) {
        let Some(run) = self.machine.state().run() else { return };
        let (agent_pid, keeper) = (run.agent_pid, run.keeper);
        if agent_pid == Some(pid) {
            self.pid_mismatch = None;
            return;
        }
        let now = Instant::now();
        if let Some((checked, at)) = self.checked_pid {
            if checked == pid || now.saturating_duration_since(at) < PID_CHECK_INTERVAL {
                return;
            }
        }
        self.checked_pid = Some((pid, now));
        let in_tree = match (i32::try_from(pid), keeper) {
            (Ok(p), Some(keeper)) => p > 0 && procfs::is_in_tree(p, keeper),
            _ => false,
        };
        let was = self.pid_mismatch;
        self.pid_mismatch = (!in_tree).then_some(pid);
        if !in_tree && !self.mismatch_warned {
            self.mismatch_warned = true;
            warn!(self.log, "the agent reports a pid that is not in the process tree heartbeatd runs for it (logged once per agent)";
                "agent_id" => &self.id, "reported_pid" => pid, "supervised_pid" => Present(agent_pid),
                "what_to_do" => "check that the heartbeats come from the supervised program and not from another copy of it (or from inside a PID namespace)");
        }
        if was != self.pid_mismatch {
            self.publish();
        }
    }
}

/// Passes the keeper's report lines of run `generation` on to its actor, until the end of
/// file (the keeper has exited).
async fn read_reports(from: impl tokio::io::AsyncRead + Unpin, addr: &Addr<AgentProcess>, generation: u64) {
    let mut lines = tokio::io::BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(line) = KeeperLine::parse(&line) {
            addr.do_send(KeeperReported { generation, line });
        }
    }
}

impl Actor for AgentProcess {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(keeper) = self.adopting.take() {
            self.adopt(keeper, ctx);
        } else if self.spec.autostart {
            self.feed(Event::Start, ctx);
        } else {
            self.publish();
            self.tell_liveness(ProcessState::Stopped);
        }
    }
}

/// A line from the keeper of run `generation`.
#[derive(Message)]
#[rtype(result = "()")]
struct KeeperReported {
    generation: u64,
    line: KeeperLine,
}

impl Handler<KeeperReported> for AgentProcess {
    type Result = ();

    fn handle(&mut self, msg: KeeperReported, ctx: &mut Context<Self>) {
        if self
            .machine
            .state()
            .run()
            .is_none_or(|r| r.generation != msg.generation)
        {
            return;
        }
        let event = match msg.line {
            KeeperLine::Started(pid) => Event::AgentStarted { pid },
            KeeperLine::Failed(reason) => Event::CommandFailed { reason },
            KeeperLine::ReapedCpu(ticks) => {
                self.reaped_cpu_ticks = self.reaped_cpu_ticks.max(ticks);
                self.cx.board.reaped_cpu(&self.id, ticks);
                return;
            }
            KeeperLine::OverProcesses { count, max } => {
                warn!(self.log, "the agent's tree had more processes than max_processes; its keeper killed it";
                    "agent_id" => &self.id, "processes" => count, "max_processes" => max,
                    "what_to_do" => "find out why the program forks so much (its output: heartbeatd ctl tail <id>); raise max_processes if it needs more");
                Event::OverLimit(ExitReason::OverProcesses)
            }
            KeeperLine::ExitCode(code) => Event::AgentExited(Exit::Code(code)),
            KeeperLine::ExitSignal(signal) => Event::AgentExited(Exit::Signal(signal)),
        };
        self.feed(event, ctx);
    }
}

/// The keeper of run `generation` has exited (its pipe closed).
#[derive(Message)]
#[rtype(result = "()")]
struct KeeperEnded {
    generation: u64,
}

impl Handler<KeeperEnded> for AgentProcess {
    type Result = ();

    fn handle(&mut self, KeeperEnded { generation }: KeeperEnded, ctx: &mut Context<Self>) {
        self.feed(Event::Ended { generation }, ctx);
    }
}

/// What an operator asks of a supervised agent (the admin API, `heartbeatd ctl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start it if it is not running; resets its backoff and restart count window. Answers
    /// once it is started.
    Start,
    /// Stop it; no policy starts it again until it is started. Answers once its tree is gone
    /// (at most `stop_timeout_s` plus a few seconds).
    Stop,
    /// Stop it (if running) and start it again. Answers once the new run is started.
    Restart,
}

/// The longest a start waits for its program to be `running` (or to fail) before it answers.
pub const START_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Does `Action` and answers with the process as it is then: a stop once its tree is gone; a
/// start or a restart once the program is `running` (its first heartbeat, or `start_wait_s`)
/// or has failed to start, or after [`START_ANSWER_WAIT`] if it is still starting.
#[derive(Message)]
#[rtype(result = "ProcessView")]
pub struct Control(pub Action);

impl Handler<Control> for AgentProcess {
    type Result = ResponseActFuture<Self, ProcessView>;

    fn handle(&mut self, Control(action): Control, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.feed(
            match action {
                Action::Start => Event::Start,
                Action::Stop => Event::Stop,
                Action::Restart => Event::Restart,
            },
            ctx,
        );
        // What to wait for: a run being ended, for its end (and, for a restart, the new
        // run's pid after it); a run starting, for its pid (or its failure to start).
        let state = self.machine.state();
        let wait = match (state.name(), state.run()) {
            (ProcessState::Stopping, _) => Some(&mut self.waiters),
            (ProcessState::Starting, Some(run)) if run.agent_pid.is_none() && run.failed_to_start.is_none() => {
                Some(&mut self.start_waiters)
            }
            _ => None,
        };
        let done = wait.map(|list| {
            list.push(tx);
            rx
        });
        let starts = action != Action::Stop;
        Box::pin(
            async move {
                if let Some(done) = done {
                    let _ = done.await;
                }
            }
            .into_actor(self)
            .then(move |_, act, _| {
                // A start is answered once the program is running or has failed to start.
                let running = (starts && act.machine.state().name() == ProcessState::Starting).then(|| {
                    let (tx, rx) = oneshot::channel();
                    act.running_waiters.push(tx);
                    rx
                });
                async move {
                    if let Some(running) = running {
                        let _ = actix::clock::timeout(START_ANSWER_WAIT, running).await;
                    }
                }
                .into_actor(act)
            })
            .map(|_, act, _| act.view()),
        )
    }
}

/// A heartbeat of this agent arrived, reporting `pid`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Heard {
    pub pid: i64,
}

impl Handler<Heard> for AgentProcess {
    type Result = ();

    fn handle(&mut self, Heard { pid }: Heard, ctx: &mut Context<Self>) {
        if matches!(
            self.machine.state().name(),
            ProcessState::Starting | ProcessState::Running
        ) {
            self.feed(Event::Heard, ctx);
            self.check_reported_pid(pid);
        }
    }
}

/// Liveness says the agent is `down` (or still `down` when rechecked). Answers whether its
/// silence should be checked again: yes while a silence restart is made or under way
/// (stopping, backoff); no once it is stopped, `fatal` or not restarted on silence.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct WentSilent;

impl Handler<WentSilent> for AgentProcess {
    type Result = bool;

    fn handle(&mut self, _: WentSilent, ctx: &mut Context<Self>) -> bool {
        if !self.spec.restart_on_silence {
            return false;
        }
        self.feed(Event::Silent, ctx);
        self.machine.wants_silence_recheck()
    }
}

/// New settings (a PATCH, a changed config): a running agent is restarted with them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub ProcessSpec);

impl Handler<Reconfigure> for AgentProcess {
    type Result = ();

    fn handle(&mut self, Reconfigure(spec): Reconfigure, ctx: &mut Context<Self>) {
        if spec == self.spec {
            return;
        }
        self.spec = spec;
        self.feed(Event::Reconfigured, ctx);
    }
}

/// Ends the tree and the actor (the agent was deleted, or heartbeatd is stopping). Answers
/// once the tree is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for AgentProcess {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.feed(Event::Retire, ctx);
        Box::pin(
            async move {
                let _ = rx.await;
            }
            .into_actor(self),
        )
    }
}

/// Kills the tree at once (heartbeatd's shutdown is out of time).
#[derive(Message)]
#[rtype(result = "()")]
pub struct KillNow;

impl Handler<KillNow> for AgentProcess {
    type Result = ();

    fn handle(&mut self, _: KillNow, ctx: &mut Context<Self>) {
        self.feed(Event::KillNow, ctx);
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // The actor can only go with its tree gone (Retire), released to a new heartbeatd,
        // or with heartbeatd itself; in the last case the keeper sees heartbeatd die and ends
        // the tree (or waits to be adopted, with adopt_timeout_s).
        if !self.released {
            self.signal_keeper(keeper::KILL_NOW);
        }
    }
}
