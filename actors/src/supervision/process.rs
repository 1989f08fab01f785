//! [`AgentProcess`]: one actor per supervised agent, owned by the Manager. It owns the agent's
//! running tree (through its keeper), its process state, and every decision about it:
//! start, stop, restart with backoff, `fatal` after too many restarts, restarts on silence
//! and on resource limits.
//!
//! ```text
//!            start                 first heartbeat / start_wait_s
//! stopped ──────────▶ starting ───────────────────────────────▶ running
//!    ▲                  │  ▲                                      │
//!    │ stop             │  └──── backoff ◀── ended (policy) ◀─────┤ exit, silent,
//!    │                  │           │                             │ over_cpu, over_memory
//!    └── stopping ◀─────┴───────────┼──── stop / restart ◀────────┘
//!                                   └──▶ fatal (too many) ──fatal_retry_s──▶ starting
//!                        exited: ended and the policy says no restart
//! ```
//!
//! Every change of state is logged, appended to the agent's events log, posted to the
//! webhook and published on the [`ProcessBoard`].

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::channel::oneshot;
use slog::{error, info, warn, Logger};
use tokio::io::AsyncBufReadExt;

use super::board::ProcessBoard;
use super::keeper::{self, KeeperLine, KeeperSpec};
use super::output_log::OutputLog;
use super::procfs::{self, ProcessTable};
use super::restart::{self, Intensity};
use crate::liveness::alerter::{AlertName, Alerter, Fire, Resolve};
use crate::liveness::webhook::{DeliverProcess, Webhook};
use crate::model::process::{
    signal_name, ExitReason, LastExit, ProcessEvent, ProcessEventKind, ProcessSpec, ProcessState, ProcessView,
    RestartPolicy,
};
use crate::registry::RegistrySnapshot;
use crate::store::{AppendProcessEvent, FileMetadataStore};

/// After `stop_timeout_s`, the keeper has this long to SIGKILL the tree before heartbeatd
/// tells it to kill at once, and as long again before heartbeatd kills the keeper itself.
const KEEPER_MARGIN: Duration = Duration::from_secs(2);
/// Resource use is read at most this often per agent.
const LIMIT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// A reported pid is checked against the tree at most this often.
const PID_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What every process actor shares: where outputs go, where events go.
#[derive(Clone)]
pub struct SupervisionContext {
    /// `data_dir/logs`.
    pub logs_dir: PathBuf,
    pub store: Addr<FileMetadataStore>,
    /// The webhook, and whether a URL is set.
    pub webhook: Option<(Addr<Webhook>, Arc<AtomicBool>)>,
    pub board: ProcessBoard,
    /// Fires `HeartbeatAgentFatal` (when `alertmanager_url` is set).
    pub alerter: Option<Addr<Alerter>>,
    /// The agent type of each agent, for alert labels: read from the registry's snapshot.
    pub registry: RegistrySnapshot,
}

/// What happens once the running tree has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// What `restart` and the restart intensity say.
    FollowPolicy,
    /// Stay `stopped`.
    Stop,
    /// Start again at once (a manual restart or a change of settings).
    StartAgain,
    /// Stay `stopped` and end the actor (deleted, or heartbeatd is stopping).
    Remove,
}

/// One run of the agent: its keeper and what is known of it.
struct Run {
    generation: u64,
    keeper: i32,
    agent_pid: Option<i64>,
    started_at: DateTime<Utc>,
    started: Instant,
    /// heartbeatd is ending this run, and why.
    ending: Option<ExitReason>,
    then: Then,
    /// What the keeper reported about the end.
    exit: Option<KeeperLine>,
    failed_to_start: Option<String>,
    escalation: Option<SpawnHandle>,
    /// The once-a-second limit check of this run (cancelled when it ends).
    limit_check: Option<SpawnHandle>,
    /// The tree's CPU ticks at the last sample, and when.
    last_cpu: Option<(u64, Instant)>,
    over_cpu_since: Option<Instant>,
    over_memory_since: Option<Instant>,
    /// The last reported pid checked against the tree, and when.
    checked_pid: Option<(i64, Instant)>,
}

/// One supervised agent.
pub struct AgentProcess {
    id: String,
    spec: ProcessSpec,
    cx: SupervisionContext,
    state: ProcessState,
    run: Option<Run>,
    generation: u64,
    /// Automatic and manual restarts since heartbeatd started.
    restarts: u64,
    intensity: Intensity,
    /// Backoff level: restarts since the agent was last up for `healthy_after`.
    backoff_level: u32,
    last_exit: Option<LastExit>,
    /// The pending start (backoff, fatal retry).
    timer: Option<SpawnHandle>,
    /// Answered once the tree has ended (a stop or a retirement).
    waiters: Vec<oneshot::Sender<()>>,
    /// Answered once the keeper of a new run has said whether the command started (a start
    /// or a restart), so the answer carries its pid.
    start_waiters: Vec<oneshot::Sender<()>>,
    /// The pid of the last run's agent, for the events that follow its end.
    last_pid: Option<i64>,
    pid_mismatch: Option<i64>,
    mismatch_warned: bool,
    log: Logger,
}

impl AgentProcess {
    pub fn new(id: String, spec: ProcessSpec, cx: SupervisionContext, log: Logger) -> Self {
        Self {
            id,
            spec,
            cx,
            state: ProcessState::Stopped,
            run: None,
            generation: 0,
            restarts: 0,
            intensity: Intensity::default(),
            backoff_level: 0,
            last_exit: None,
            timer: None,
            waiters: Vec::new(),
            start_waiters: Vec::new(),
            last_pid: None,
            pid_mismatch: None,
            mismatch_warned: false,
            log,
        }
    }

    fn view(&self) -> ProcessView {
        ProcessView {
            state: self.state,
            pid: self.run.as_ref().and_then(|r| r.agent_pid),
            started_at: self.run.as_ref().map(|r| r.started_at),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            reported_pid_mismatch: self.pid_mismatch,
        }
    }

    fn publish(&self) {
        self.cx.board.publish(&self.id, self.view());
    }

    /// Moves to `to`: logged, recorded, posted, published.
    fn set_state(&mut self, to: ProcessState, exit: Option<LastExit>) {
        let from = self.state;
        self.state = to;
        self.publish();
        if from == to && exit.is_none() {
            return;
        }
        let pid = self.run.as_ref().and_then(|r| r.agent_pid).or(self.last_pid);
        match &exit {
            Some(e) => info!(self.log, "agent process state changed"; "agent_id" => &self.id, "from" => from.name(),
                "to" => to.name(), "pid" => pid, "exit_code" => e.code, "exit_signal" => e.signal.as_deref(),
                "reason" => e.reason.name(), "restarts" => self.restarts),
            None => info!(self.log, "agent process state changed"; "agent_id" => &self.id, "from" => from.name(),
                "to" => to.name(), "pid" => pid, "restarts" => self.restarts),
        }
        let event = ProcessEvent {
            kind: ProcessEventKind::Process,
            from,
            to,
            at: Utc::now(),
            pid,
            exit,
            restarts: self.restarts,
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

    fn cancel_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
    }

    /// Starts a new run now.
    fn start(&mut self, ctx: &mut Context<Self>) {
        self.cancel_timer(ctx);
        self.generation += 1;
        let generation = self.generation;
        let log_path = self.cx.logs_dir.join(format!("{}.log", self.id));
        // The keeper opens the output file itself. Opening it here first creates it (0600, in
        // a 0700 logs/) in heartbeatd's process, where a refusal (a link planted at that name)
        // is logged as an ERROR saying what to do. The keeper then refuses it too and discards
        // the output; the agent still runs. Any other failure is the keeper's to report.
        let _ = OutputLog::open(&log_path, self.spec.log_max_bytes, self.spec.log_backups);
        let spec = KeeperSpec {
            agent_id: self.id.clone(),
            command: self.spec.command.clone(),
            working_dir: self.spec.working_dir.clone(),
            env: self.spec.env.clone(),
            stop_signal: self.spec.stop_signal,
            stop_timeout_ms: self.spec.stop_timeout.as_millis() as u64,
            log_path,
            log_max_bytes: self.spec.log_max_bytes,
            log_backups: self.spec.log_backups,
            parent_pid: std::process::id() as i32,
        };
        let spawned = match keeper::spawn_keeper(&spec) {
            Ok(spawned) => spawned,
            Err(e) => {
                error!(self.log, "could not start the agent's keeper (heartbeatd's own binary in keeper mode)";
                    "agent_id" => &self.id, "error" => %e,
                    "what_to_do" => "check that heartbeatd's binary is still in place and that the process limit (ulimit -u) is not reached");
                let exit = LastExit {
                    code: Some(126),
                    signal: None,
                    at: Utc::now(),
                    reason: ExitReason::Exited,
                };
                self.after_exit(exit, ExitReason::Exited, Then::FollowPolicy, ctx);
                return;
            }
        };
        self.run = Some(Run {
            generation,
            keeper: spawned.pid,
            agent_pid: None,
            started_at: Utc::now(),
            started: Instant::now(),
            ending: None,
            then: Then::FollowPolicy,
            exit: None,
            failed_to_start: None,
            escalation: None,
            limit_check: None,
            last_cpu: None,
            over_cpu_since: None,
            over_memory_since: None,
            checked_pid: None,
        });
        self.pid_mismatch = None;
        self.last_pid = None;
        self.set_state(ProcessState::Starting, None);
        // The keeper's reports, read off this actor's thread without blocking it.
        let addr = ctx.address();
        let reports = spawned.reports;
        actix::spawn(async move {
            let lines = std::os::fd::OwnedFd::from(reports);
            if let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(lines) {
                let mut lines = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(line) = KeeperLine::parse(&line) {
                        addr.do_send(KeeperReported { generation, line });
                    }
                }
            }
            addr.do_send(KeeperEnded { generation });
        });
        ctx.run_later(self.spec.start_wait, move |act, _| {
            if act.state == ProcessState::Starting && act.generation == generation {
                act.set_state(ProcessState::Running, None);
            }
        });
        if self.spec.has_limits() {
            let check = ctx.run_interval(LIMIT_SAMPLE_INTERVAL, |act, ctx| act.check_limits(ctx));
            if let Some(run) = &mut self.run {
                run.limit_check = Some(check);
            }
        }
    }

    /// Ends the running tree (the keeper does it: stop signal, SIGKILL after stop_timeout);
    /// `then` says what follows.
    fn stop(&mut self, reason: ExitReason, then: Then, ctx: &mut Context<Self>) {
        let Some(run) = &mut self.run else { return };
        run.then = then;
        if run.ending.is_some() {
            return; // already stopping; only what follows changes
        }
        run.ending = Some(reason);
        let (keeper, generation) = (run.keeper, run.generation);
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(keeper, keeper::STOP) };
        let escalate_after = self.spec.stop_timeout + KEEPER_MARGIN;
        run.escalation = Some(ctx.run_later(escalate_after, move |act, ctx| {
            if act.generation != generation || act.run.is_none() {
                return;
            }
            warn!(act.log, "the agent's tree did not end within stop_timeout_s; killing it"; "agent_id" => &act.id,
                "stop_timeout_s" => act.spec.stop_timeout.as_secs());
            // SAFETY: as above.
            unsafe { libc::kill(keeper, keeper::KILL_NOW) };
            ctx.run_later(KEEPER_MARGIN, move |act, _| {
                if act.generation == generation && act.run.is_some() {
                    error!(act.log, "the agent's keeper does not answer; killing it"; "agent_id" => &act.id, "keeper_pid" => keeper);
                    // SAFETY: as above.
                    unsafe { libc::kill(keeper, libc::SIGKILL) };
                }
            });
        }));
        self.set_state(ProcessState::Stopping, None);
    }

    /// The run has ended: record how, then follow `then`.
    fn run_ended(&mut self, ctx: &mut Context<Self>) {
        let Some(run) = self.run.take() else { return };
        self.answer_start_waiters();
        for handle in [run.escalation, run.limit_check].into_iter().flatten() {
            ctx.cancel_future(handle);
        }
        let reason = run.ending.unwrap_or(ExitReason::Exited);
        let (code, signal) = match run.exit {
            Some(KeeperLine::ExitCode(code)) => (Some(code), None),
            Some(KeeperLine::ExitSignal(n)) => (None, Some(signal_name(n).map_or(n.to_string(), str::to_owned))),
            // The keeper itself was killed: its agent got SIGKILL (PR_SET_PDEATHSIG).
            _ => {
                let orphans = super::reaper::sweep_orphans();
                error!(self.log, "the agent's keeper was killed; its tree was killed with it";
                    "agent_id" => &self.id, "keeper_pid" => run.keeper, "orphans_killed" => orphans,
                    "what_to_do" => "do not signal `heartbeatd keep` processes; use heartbeatd ctl stop");
                (None, Some("SIGKILL".to_owned()))
            }
        };
        if let Some(reason) = &run.failed_to_start {
            warn!(self.log, "the agent's command could not be started"; "agent_id" => &self.id, "error" => reason,
                "what_to_do" => "check command and working_dir; the agent's log file has the same line");
        }
        if run.started.elapsed() >= self.spec.healthy_after {
            self.backoff_level = 0;
        }
        let exit = LastExit {
            code,
            signal,
            at: Utc::now(),
            reason,
        };
        self.after_exit(exit, reason, run.then, ctx);
    }

    fn after_exit(&mut self, exit: LastExit, reason: ExitReason, then: Then, ctx: &mut Context<Self>) {
        self.last_exit = Some(exit.clone());
        match then {
            Then::Stop => self.set_state(ProcessState::Stopped, Some(exit)),
            Then::Remove => {
                self.set_state(ProcessState::Stopped, Some(exit));
                self.cx.board.remove(&self.id);
                self.answer_waiters();
                ctx.stop();
                return;
            }
            Then::StartAgain => {
                // Those who asked for the restart hear once the new run has its pid.
                let waiting = std::mem::take(&mut self.waiters);
                self.start_waiters.extend(waiting);
                self.restarts += 1;
                self.cx.board.count_restart(&self.id, ExitReason::Manual);
                self.backoff_level = 0;
                self.intensity.reset();
                self.start(ctx);
            }
            Then::FollowPolicy => {
                let wanted = match reason {
                    ExitReason::Exited => match self.spec.restart {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => exit.failed(),
                        RestartPolicy::Never => false,
                    },
                    // heartbeatd ended it in order to restart it.
                    _ => true,
                };
                if !wanted {
                    self.set_state(ProcessState::Exited, Some(exit));
                } else if self
                    .intensity
                    .too_many(Instant::now(), self.spec.restart_window, self.spec.max_restarts)
                {
                    self.set_state(ProcessState::Fatal, Some(exit));
                    error!(self.log, "the agent restarted too often and is left alone (fatal)"; "agent_id" => &self.id,
                        "max_restarts" => self.spec.max_restarts, "restart_window_s" => self.spec.restart_window.as_secs(),
                        "fatal_retry_s" => self.spec.fatal_retry.map(|d| d.as_secs()),
                        "what_to_do" => "read its output (heartbeatd ctl tail <id>), fix the cause, then heartbeatd ctl start <id>");
                    if let Some(retry) = self.spec.fatal_retry {
                        self.timer = Some(ctx.run_later(retry, |act, ctx| {
                            act.timer = None;
                            if act.state == ProcessState::Fatal {
                                info!(act.log, "trying a fatal agent again (fatal_retry_s)"; "agent_id" => &act.id);
                                act.intensity.reset();
                                act.backoff_level = 0;
                                act.start(ctx);
                            }
                        }));
                    }
                } else {
                    let wait = restart::backoff(
                        self.spec.backoff,
                        self.spec.backoff_max,
                        self.backoff_level,
                        restart::jitter(),
                    );
                    self.backoff_level = self.backoff_level.saturating_add(1);
                    self.restarts += 1;
                    self.cx.board.count_restart(&self.id, reason);
                    self.set_state(ProcessState::Backoff, Some(exit));
                    self.timer = Some(ctx.run_later(wait, |act, ctx| {
                        act.timer = None;
                        if act.state == ProcessState::Backoff {
                            act.start(ctx);
                        }
                    }));
                }
            }
        }
        self.answer_waiters();
    }

    fn answer_waiters(&mut self) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn answer_start_waiters(&mut self) {
        for waiter in self.start_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Reads the tree's CPU and memory (one `/proc` scan shared by every agent on this
    /// thread, at most once per second) and restarts it once a limit held for `limit_for_s`.
    fn check_limits(&mut self, ctx: &mut Context<Self>) {
        let spec = &self.spec;
        let Some(run) = self.run.as_mut().filter(|r| r.ending.is_none()) else {
            return;
        };
        let tree = shared_scan().descendants(run.keeper);
        let now = Instant::now();
        let ticks: u64 = tree.iter().map(|p| p.cpu_ticks).sum();
        let memory: u64 = tree.iter().map(|p| p.rss_pages).sum::<u64>() * procfs::page_size();
        let cpu_percent = run.last_cpu.map(|(before, at)| {
            let seconds = now.saturating_duration_since(at).as_secs_f64().max(0.001);
            ticks.saturating_sub(before) as f64 / procfs::clock_ticks_per_second() as f64 / seconds * 100.0
        });
        run.last_cpu = Some((ticks, now));
        let over = |since: &mut Option<Instant>, is_over: bool| -> bool {
            if !is_over {
                *since = None;
                return false;
            }
            now.saturating_duration_since(*since.get_or_insert(now)) >= spec.limit_for
        };
        let cpu_over = over(
            &mut run.over_cpu_since,
            matches!((spec.max_cpu_percent, cpu_percent), (Some(max), Some(used)) if used > f64::from(max)),
        );
        let memory_over = over(
            &mut run.over_memory_since,
            spec.max_memory_bytes.is_some_and(|max| memory > max),
        );
        let reason = if memory_over {
            ExitReason::OverMemory
        } else if cpu_over {
            ExitReason::OverCpu
        } else {
            return;
        };
        warn!(self.log, "the agent's tree stayed over its limit; restarting it"; "agent_id" => &self.id,
            "reason" => reason.name(), "memory_bytes" => memory, "max_memory_bytes" => spec.max_memory_bytes,
            "cpu_percent" => cpu_percent.map(|c| c.round() as u64), "max_cpu_percent" => spec.max_cpu_percent,
            "limit_for_s" => spec.limit_for.as_secs());
        self.stop(reason, Then::FollowPolicy, ctx);
    }

    /// Checks a reported pid against the tree (at most once per second per agent).
    fn check_reported_pid(&mut self, pid: i64) {
        let Some(run) = self.run.as_mut() else { return };
        if run.agent_pid == Some(pid) {
            self.pid_mismatch = None;
            return;
        }
        let now = Instant::now();
        if let Some((checked, at)) = run.checked_pid {
            if checked == pid || now.saturating_duration_since(at) < PID_CHECK_INTERVAL {
                return;
            }
        }
        run.checked_pid = Some((pid, now));
        let in_tree = i32::try_from(pid).is_ok_and(|p| p > 0 && procfs::is_in_tree(p, run.keeper));
        let (agent_pid, was) = (run.agent_pid, self.pid_mismatch);
        self.pid_mismatch = (!in_tree).then_some(pid);
        if !in_tree && !self.mismatch_warned {
            self.mismatch_warned = true;
            warn!(self.log, "the agent reports a pid that is not in the process tree heartbeatd runs for it (logged once per agent)";
                "agent_id" => &self.id, "reported_pid" => pid, "supervised_pid" => agent_pid,
                "what_to_do" => "check that the heartbeats come from the supervised program and not from another copy of it (or from inside a PID namespace)");
        }
        if was != self.pid_mismatch {
            self.publish();
        }
    }
}

thread_local! {
    /// The last `/proc` scan on this thread and when it was made: every agent's limit check
    /// within the same second shares it.
    static LAST_SCAN: RefCell<Option<(Instant, Rc<ProcessTable>)>> = const { RefCell::new(None) };
}

fn shared_scan() -> Rc<ProcessTable> {
    LAST_SCAN.with(|cell| {
        let mut cached = cell.borrow_mut();
        if let Some((at, table)) = cached.as_ref() {
            if at.elapsed() < LIMIT_SAMPLE_INTERVAL / 2 {
                return Rc::clone(table);
            }
        }
        let table = Rc::new(ProcessTable::scan());
        *cached = Some((Instant::now(), Rc::clone(&table)));
        table
    })
}

impl Actor for AgentProcess {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.spec.autostart {
            self.start(ctx);
        } else {
            self.publish();
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

    fn handle(&mut self, msg: KeeperReported, _: &mut Context<Self>) {
        let Some(run) = self.run.as_mut().filter(|r| r.generation == msg.generation) else {
            return;
        };
        match msg.line {
            KeeperLine::Started(pid) => {
                run.agent_pid = Some(pid);
                self.last_pid = Some(pid);
                self.publish();
                self.answer_start_waiters();
            }
            KeeperLine::Failed(reason) => {
                run.failed_to_start = Some(reason);
                self.answer_start_waiters();
            }
            exit => run.exit = Some(exit),
        }
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

    fn handle(&mut self, msg: KeeperEnded, ctx: &mut Context<Self>) {
        if self.run.as_ref().is_some_and(|r| r.generation == msg.generation) {
            self.run_ended(ctx);
        }
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

/// Does `Action` and answers with the process as it is then.
#[derive(Message)]
#[rtype(result = "ProcessView")]
pub struct Control(pub Action);

impl Handler<Control> for AgentProcess {
    type Result = ResponseActFuture<Self, ProcessView>;

    fn handle(&mut self, Control(action): Control, ctx: &mut Context<Self>) -> Self::Result {
        use ProcessState::*;
        let mut wait = false;
        match (action, self.state) {
            (Action::Start, Stopped | Exited | Fatal | Backoff) => {
                self.intensity.reset();
                self.backoff_level = 0;
                self.start(ctx);
            }
            (Action::Start | Action::Restart, Stopping) => {
                if let Some(run) = &mut self.run {
                    run.then = Then::StartAgain;
                }
                wait = true;
            }
            (Action::Start, Starting | Running) => {}
            (Action::Stop, Starting | Running) => {
                self.stop(ExitReason::Manual, Then::Stop, ctx);
                wait = true;
            }
            (Action::Stop, Stopping) => {
                if let Some(run) = &mut self.run {
                    run.then = Then::Stop;
                }
                wait = true;
            }
            (Action::Stop, Backoff | Fatal | Exited) => {
                self.cancel_timer(ctx);
                self.set_state(Stopped, None);
            }
            (Action::Stop, Stopped) => {}
            (Action::Restart, Starting | Running) => {
                self.stop(ExitReason::Manual, Then::StartAgain, ctx);
                wait = true;
            }
            (Action::Restart, Stopped | Exited | Fatal | Backoff) => {
                self.intensity.reset();
                self.backoff_level = 0;
                self.start(ctx);
            }
        }
        let started = matches!(action, Action::Start | Action::Restart)
            && !wait
            && self.state == Starting
            && self.run.as_ref().is_some_and(|r| r.agent_pid.is_none());
        let done = if wait || started {
            let (tx, rx) = oneshot::channel();
            if wait {
                self.waiters.push(tx);
            } else {
                self.start_waiters.push(tx);
            }
            Some(rx)
        } else {
            None
        };
        Box::pin(
            async move {
                if let Some(done) = done {
                    let _ = done.await;
                }
            }
            .into_actor(self)
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

    fn handle(&mut self, Heard { pid }: Heard, _: &mut Context<Self>) {
        if self.run.as_ref().is_some_and(|r| r.ending.is_none()) {
            if self.state == ProcessState::Starting {
                self.set_state(ProcessState::Running, None);
            }
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
        let running = matches!(self.state, ProcessState::Running | ProcessState::Starting);
        if running && self.run.as_ref().is_some_and(|r| r.ending.is_none()) {
            warn!(self.log, "the agent went silent (liveness: down); restarting it"; "agent_id" => &self.id);
            self.stop(ExitReason::Silent, Then::FollowPolicy, ctx);
            return true;
        }
        matches!(self.state, ProcessState::Stopping | ProcessState::Backoff)
    }
}

/// New settings (a PATCH): a running agent is restarted with them.
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
        if matches!(self.state, ProcessState::Running | ProcessState::Starting) {
            info!(self.log, "the agent's settings changed; restarting it with them"; "agent_id" => &self.id);
            self.stop(ExitReason::Manual, Then::StartAgain, ctx);
        }
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
        self.cancel_timer(ctx);
        if self.run.is_none() {
            self.cx.board.remove(&self.id);
            ctx.stop();
            return Box::pin(fut::ready(()));
        }
        self.stop(ExitReason::Manual, Then::Remove, ctx);
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
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

    fn handle(&mut self, _: KillNow, _: &mut Context<Self>) {
        if let Some(run) = &self.run {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(run.keeper, keeper::KILL_NOW) };
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // The actor can only go with its tree gone (Retire) or with heartbeatd itself; in the
        // second case the keeper sees heartbeatd die and ends the tree.
        if let Some(run) = &self.run {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(run.keeper, keeper::KILL_NOW) };
        }
    }
}
