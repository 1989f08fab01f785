//! The supervision state machine: every decision about one supervised agent, as a pure
//! function `(state, event) → (new state, effects)`, with no process, no timer and no clock of
//! its own. [`AgentProcess`](super::process::AgentProcess) feeds it events (an operator's
//! request, the keeper's reports, timers, liveness, limits) and carries out the effects it
//! returns (launch a keeper, signal it, arm a timer, say what changed).
//!
//! Each [`State`] carries its own data (a run exists only while one does), as watchexec's
//! supervisor does; [`Machine::step`] writes every (state, event) pair out, as s6-supervise's
//! action table does: an event a state ignores is listed as ignored, never left to a
//! catch-all.
//!
//! ```text
//!            start                 first heartbeat / start_wait_s
//! stopped ──────────▶ starting ───────────────────────────────▶ running
//!    ▲                  │  ▲                                      │
//!    │ stop             │  └──── backoff ◀── ended (policy) ◀─────┤ exit, silent,
//!    │                  │           │                             │ over_cpu, over_memory
//!    └── stopping ◀─────┴───────────┼──── stop / restart ◀────────┘
//!                                   └──▶ fatal (too many, or could not start)
//!                                            └── fatal_retry_s ──▶ starting
//!                        exited: ended and the policy says no restart
//! ```
//!
//! Two rules bound restarts whatever the configuration says:
//! - a run that fails before it is `running` is a failed start (supervisord's
//!   `startretries`): after `start_retries` of them in a row the agent is `fatal`, so a
//!   program that can never start is given up on within seconds, not after `max_restarts`;
//! - at most [`START_LIMIT_BURST`] starts within [`START_LIMIT_INTERVAL`] (systemd's
//!   `StartLimitBurst`): a crash loop with no backoff cannot restart hundreds of times a
//!   second and starve the host.

#[cfg(test)]
mod tests;
mod vocabulary;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::restart::{self, Intensity};
use crate::model::process::{signal_name, ExitReason, LastExit, ProcessSpec, ProcessState, RestartPolicy};
pub use vocabulary::*;

/// After `stop_timeout_s`, the keeper has this long to SIGKILL the tree before heartbeatd
/// tells it to kill at once, and as long again before heartbeatd kills the keeper itself.
pub const KEEPER_MARGIN: Duration = Duration::from_secs(2);
/// At most this many starts within [`START_LIMIT_INTERVAL`], whatever the backoff says.
pub const START_LIMIT_BURST: usize = 10;
pub const START_LIMIT_INTERVAL: Duration = Duration::from_secs(10);

/// The state's name without its data: what the action table is indexed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Stopped,
    Starting,
    Running,
    Stopping,
    Backoff,
    Exited,
    Fatal,
    Removed,
}

/// One agent's supervision: its state and the counts its rules need.
#[derive(Debug)]
pub struct Machine {
    state: State,
    generation: u64,
    /// Names the restart timer in force; older ones are stale.
    token: u64,
    /// Automatic and manual restarts since heartbeatd started.
    restarts: u64,
    intensity: Intensity,
    /// Backoff level: restarts since the agent was last up for `healthy_after`.
    backoff_level: u32,
    /// Runs in a row that failed before they were `running`.
    start_failures: u32,
    /// The latest starts, for the start limit.
    recent_starts: VecDeque<Instant>,
    last_exit: Option<LastExit>,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

/// What a step knows of the outside: the settings, and the time.
pub struct Now<'a> {
    pub spec: &'a ProcessSpec,
    pub at: Instant,
    pub wall: DateTime<Utc>,
    /// In `[0, 1)`, for the backoff's jitter.
    pub jitter: f64,
}

impl Machine {
    pub fn new() -> Self {
        Self {
            state: State::Stopped,
            generation: 0,
            token: 0,
            restarts: 0,
            intensity: Intensity::default(),
            backoff_level: 0,
            start_failures: 0,
            recent_starts: VecDeque::new(),
            last_exit: None,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    pub fn last_exit(&self) -> Option<&LastExit> {
        self.last_exit.as_ref()
    }

    /// Whether a silence should be checked again: yes while a silence restart is under way
    /// (stopping, backoff), no once the agent is stopped, `fatal` or running again.
    pub fn wants_silence_recheck(&self) -> bool {
        matches!(self.state, State::Stopping { .. } | State::Backoff { .. })
    }

    fn phase(&self) -> Phase {
        match self.state {
            State::Stopped => Phase::Stopped,
            State::Starting(_) => Phase::Starting,
            State::Running(_) => Phase::Running,
            State::Stopping { .. } => Phase::Stopping,
            State::Backoff { .. } => Phase::Backoff,
            State::Exited => Phase::Exited,
            State::Fatal { .. } => Phase::Fatal,
            State::Removed => Phase::Removed,
        }
    }

    /// Applies `event`; the effects to carry out, in order. The table: every state against
    /// every event.
    pub fn step(&mut self, event: Event, now: &Now<'_>) -> Vec<Effect> {
        use Event as E;
        use Phase as P;
        let mut fx = Vec::new();
        let fx_ = &mut fx;
        match (self.phase(), event) {
            // ── nothing runs: stopped, backoff, exited, fatal ─────────────────────────────
            (P::Stopped | P::Backoff | P::Exited | P::Fatal, E::Start | E::Restart) => {
                self.reset_counts();
                self.launch(now, None, fx_);
            }
            (P::Stopped, E::Stop) => {}
            (
                P::Stopped,
                E::Adopted {
                    keeper,
                    pid,
                    started_at,
                },
            ) => self.adopt(keeper, pid, started_at, now, fx_),
            // Only a new actor, still `stopped`, adopts.
            (P::Starting | P::Running | P::Stopping | P::Backoff | P::Exited | P::Fatal, E::Adopted { .. }) => {}
            (P::Backoff | P::Exited | P::Fatal, E::Stop) => self.set(State::Stopped, None, fx_),
            (P::Stopped | P::Backoff | P::Exited | P::Fatal, E::Retire) => {
                self.set(State::Removed, None, fx_);
                fx_.push(Effect::Answer(Waiters::Stop));
                fx_.push(Effect::Remove);
            }
            (P::Backoff, E::Timer(Timer::Restart { token })) => {
                if matches!(self.state, State::Backoff { token: t } if t == token) {
                    self.launch(now, None, fx_);
                }
            }
            (P::Fatal, E::Timer(Timer::Restart { token })) => {
                if matches!(self.state, State::Fatal { token: Some(t) } if t == token) {
                    fx_.push(Effect::Note(Note::FatalRetry));
                    self.reset_counts();
                    self.launch(now, None, fx_);
                }
            }
            (
                P::Stopped | P::Backoff | P::Exited | P::Fatal,
                E::Timer(Timer::StartWait { .. } | Timer::Escalate { .. }),
            ) => {}
            (
                P::Stopped | P::Backoff | P::Exited | P::Fatal,
                E::Reconfigured
                | E::Launched { .. }
                | E::LaunchFailed
                | E::AgentStarted { .. }
                | E::CommandFailed { .. }
                | E::AgentExited(_)
                | E::Ended { .. }
                | E::Heard
                | E::Silent
                | E::OverLimit(_)
                | E::KillNow,
            ) => {}
            (P::Stopped | P::Exited, E::Timer(Timer::Restart { .. })) => {}

            // ── a run is under way: starting, running ─────────────────────────────────────
            (P::Starting | P::Running, E::Start) => {}
            (P::Starting | P::Running, E::Stop) => self.stop(ExitReason::Manual, Then::Stop, now, fx_),
            (P::Starting | P::Running, E::Restart) => self.stop(ExitReason::Manual, Then::StartAgain, now, fx_),
            (P::Starting | P::Running, E::Retire) => self.stop(ExitReason::Manual, Then::Remove, now, fx_),
            (P::Starting | P::Running, E::Reconfigured) => {
                fx_.push(Effect::Note(Note::RestartingForSettings));
                self.stop(ExitReason::Manual, Then::StartAgain, now, fx_);
            }
            (P::Starting | P::Running, E::Silent) => {
                if now.spec.restart_on_silence {
                    fx_.push(Effect::Note(Note::RestartingForSilence));
                    self.stop(ExitReason::Silent, Then::FollowPolicy, now, fx_);
                }
            }
            (P::Starting | P::Running, E::OverLimit(reason)) => self.stop(reason, Then::FollowPolicy, now, fx_),
            (P::Starting, E::Heard) => self.now_running(fx_),
            (P::Starting, E::Timer(Timer::StartWait { generation })) => {
                if self.run_is(generation) {
                    self.now_running(fx_);
                }
            }
            (P::Running, E::Heard | E::Timer(Timer::StartWait { .. })) => {}
            (P::Starting | P::Running, E::Timer(Timer::Restart { .. } | Timer::Escalate { .. })) => {}
            (P::Starting | P::Running, E::Ended { generation }) => {
                if self.run_is(generation) {
                    let was_starting = self.phase() == P::Starting;
                    self.ended(ExitReason::Exited, Then::FollowPolicy, was_starting, now, fx_);
                }
            }
            (P::Starting, E::LaunchFailed) => {
                fx_.push(Effect::Note(Note::LaunchFailed));
                if let Some(run) = self.state.run_mut() {
                    // As a shell counts a command it cannot execute.
                    run.exit = Some(Exit::Code(126));
                }
                self.ended(ExitReason::Exited, Then::FollowPolicy, true, now, fx_);
            }
            (P::Running, E::LaunchFailed) => {}
            (P::Starting | P::Running, E::KillNow) => fx_.push(Effect::KillTree),

            // ── what the keeper says, whatever the run is doing ───────────────────────────
            (P::Starting | P::Running | P::Stopping, E::Launched { keeper }) => {
                if let Some(run) = self.state.run_mut() {
                    run.keeper = Some(keeper);
                }
            }
            (P::Starting | P::Running | P::Stopping, E::AgentStarted { pid }) => {
                if let Some(run) = self.state.run_mut() {
                    run.agent_pid = Some(pid);
                }
                fx_.push(Effect::Publish);
                fx_.push(Effect::Answer(Waiters::Start));
            }
            (P::Starting | P::Running | P::Stopping, E::CommandFailed { reason }) => {
                if let Some(run) = self.state.run_mut() {
                    run.failed_to_start = Some(reason);
                }
                fx_.push(Effect::Answer(Waiters::Start));
            }
            (P::Starting | P::Running | P::Stopping, E::AgentExited(exit)) => {
                if let Some(run) = self.state.run_mut() {
                    run.exit = Some(exit);
                }
            }

            // ── stopping: the run is being ended; only what follows can change ────────────
            (P::Stopping, E::Start | E::Restart) => self.then(Then::StartAgain),
            (P::Stopping, E::Stop) => self.then(Then::Stop),
            (P::Stopping, E::Retire) => self.then(Then::Remove),
            (P::Stopping, E::Ended { generation }) => {
                if let State::Stopping { run, reason, then } = &self.state {
                    if run.generation == generation {
                        let (reason, then) = (*reason, *then);
                        self.ended(reason, then, false, now, fx_);
                    }
                }
            }
            (P::Stopping, E::Timer(Timer::Escalate { generation, step })) => {
                if self.run_is(generation) {
                    match step {
                        Escalation::KillTree => {
                            fx_.push(Effect::Note(Note::StopOverdue));
                            fx_.push(Effect::KillTree);
                            fx_.push(Effect::Arm(
                                Timer::Escalate {
                                    generation,
                                    step: Escalation::KillKeeper,
                                },
                                KEEPER_MARGIN,
                            ));
                        }
                        Escalation::KillKeeper => {
                            fx_.push(Effect::Note(Note::KeeperUnresponsive));
                            fx_.push(Effect::KillKeeper);
                        }
                    }
                }
            }
            (P::Stopping, E::KillNow) => fx_.push(Effect::KillTree),
            (
                P::Stopping,
                E::Reconfigured
                | E::LaunchFailed
                | E::Heard
                | E::Silent
                | E::OverLimit(_)
                | E::Timer(Timer::StartWait { .. } | Timer::Restart { .. }),
            ) => {}

            // ── removed: the actor is ending; nothing more happens ────────────────────────
            (P::Removed, _) => {}
        }
        fx
    }

    /// Whether the current run is `generation`.
    fn run_is(&self, generation: u64) -> bool {
        self.state.run().is_some_and(|r| r.generation == generation)
    }

    fn reset_counts(&mut self) {
        self.intensity.reset();
        self.backoff_level = 0;
        self.start_failures = 0;
    }

    /// Moves to `to`, saying so.
    fn set(&mut self, to: State, exit: Option<LastExit>, fx: &mut Vec<Effect>) {
        let from = self.state.name();
        self.state = to;
        fx.push(Effect::Changed {
            from,
            to: self.state.name(),
            exit,
        });
    }

    /// Changes what follows the stop under way.
    fn then(&mut self, next: Then) {
        if let State::Stopping { then, .. } = &mut self.state {
            *then = next;
        }
    }

    /// `starting` → `running` (its first heartbeat, or `start_wait_s` passed).
    fn now_running(&mut self, fx: &mut Vec<Effect>) {
        if let State::Starting(run) = &self.state {
            let run = run.clone();
            self.start_failures = 0;
            self.set(State::Running(run), None, fx);
        }
    }

    /// A new run: its keeper is launched, `start_wait_s` is timed. `exit`: how the run
    /// before it ended, when it follows at once (a restart).
    fn launch(&mut self, now: &Now<'_>, exit: Option<LastExit>, fx: &mut Vec<Effect>) {
        self.generation += 1;
        let generation = self.generation;
        self.recent_starts.push_back(now.at);
        while self.recent_starts.len() > START_LIMIT_BURST {
            self.recent_starts.pop_front();
        }
        let run = Run {
            generation,
            keeper: None,
            agent_pid: None,
            started_at: now.wall,
            started: now.at,
            failed_to_start: None,
            exit: None,
        };
        fx.push(Effect::Launch { generation });
        self.set(State::Starting(run), exit, fx);
        fx.push(Effect::Arm(Timer::StartWait { generation }, now.spec.start_wait));
    }

    /// A run that the previous heartbeatd started, taken over as it is: `running`, with its
    /// keeper and pid; counted as neither a start nor a restart.
    fn adopt(&mut self, keeper: i32, pid: i64, started_at: DateTime<Utc>, now: &Now<'_>, fx: &mut Vec<Effect>) {
        self.generation += 1;
        let run = Run {
            generation: self.generation,
            keeper: Some(keeper),
            agent_pid: Some(pid),
            started_at,
            started: now.at,
            failed_to_start: None,
            exit: None,
        };
        self.set(State::Running(run), None, fx);
    }

    /// Ends the run (the keeper does it: stop signal, SIGKILL after `stop_timeout_s`); `then`
    /// says what follows.
    fn stop(&mut self, reason: ExitReason, then: Then, now: &Now<'_>, fx: &mut Vec<Effect>) {
        let from = self.state.name();
        let run = match std::mem::replace(&mut self.state, State::Stopped) {
            State::Starting(run) | State::Running(run) => run,
            other => {
                self.state = other;
                return;
            }
        };
        let generation = run.generation;
        self.state = State::Stopping { run, reason, then };
        fx.push(Effect::StopTree);
        fx.push(Effect::Arm(
            Timer::Escalate {
                generation,
                step: Escalation::KillTree,
            },
            now.spec.stop_timeout + KEEPER_MARGIN,
        ));
        fx.push(Effect::Changed {
            from,
            to: ProcessState::Stopping,
            exit: None,
        });
    }

    /// The run has ended (`reason`: why; `was_starting`: it never reached `running`): record
    /// how, then follow `then`.
    fn ended(&mut self, reason: ExitReason, then: Then, was_starting: bool, now: &Now<'_>, fx: &mut Vec<Effect>) {
        let Some(run) = self.state.run().cloned() else { return };
        fx.push(Effect::Answer(Waiters::Start));
        let (code, signal) = match run.exit {
            Some(Exit::Code(code)) => (Some(code), None),
            Some(Exit::Signal(n)) => (None, Some(signal_name(n).map_or(n.to_string(), str::to_owned))),
            // The keeper itself was killed: its agent got SIGKILL (its death signal).
            None => {
                fx.push(Effect::Note(Note::KeeperKilled));
                (None, Some("SIGKILL".to_owned()))
            }
        };
        if let Some(reason) = &run.failed_to_start {
            fx.push(Effect::Note(Note::CommandFailed(reason.clone())));
        }
        if now.at.saturating_duration_since(run.started) >= now.spec.healthy_after {
            self.backoff_level = 0;
        }
        let exit = LastExit {
            code,
            signal,
            at: now.wall,
            reason,
        };
        self.last_exit = Some(exit.clone());
        match then {
            Then::Stop => {
                self.set(State::Stopped, Some(exit), fx);
                fx.push(Effect::Answer(Waiters::Stop));
            }
            Then::Remove => {
                self.set(State::Removed, Some(exit), fx);
                fx.push(Effect::Answer(Waiters::Stop));
                fx.push(Effect::Remove);
            }
            Then::StartAgain => {
                // Those who asked hear once the new run has its pid.
                fx.push(Effect::StopWaitersWaitForStart);
                self.restarts += 1;
                fx.push(Effect::CountRestart(ExitReason::Manual));
                self.reset_counts();
                self.launch(now, Some(exit), fx);
            }
            Then::FollowPolicy => {
                self.follow_policy(exit, reason, was_starting, now, fx);
                fx.push(Effect::Answer(Waiters::Stop));
            }
        }
    }

    /// After a run that ended by itself, or that heartbeatd ended to restart it: restart it
    /// (after a backoff), leave it `exited`, or give up (`fatal`).
    fn follow_policy(
        &mut self,
        exit: LastExit,
        reason: ExitReason,
        was_starting: bool,
        now: &Now<'_>,
        fx: &mut Vec<Effect>,
    ) {
        let spec = now.spec;
        let wanted = match reason {
            ExitReason::Exited => match spec.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => exit.failed(),
                RestartPolicy::Never => false,
            },
            // heartbeatd ended it in order to restart it.
            _ => true,
        };
        if !wanted {
            self.set(State::Exited, Some(exit), fx);
            return;
        }
        // A program that ends with a failure before it is running could not start.
        if was_starting && reason == ExitReason::Exited && exit.failed() {
            self.start_failures = self.start_failures.saturating_add(1);
            if self.start_failures > spec.start_retries {
                fx.push(Effect::Note(Note::CouldNotStart {
                    failures: self.start_failures,
                }));
                self.give_up(exit, now, fx);
                return;
            }
            fx.push(Effect::Note(Note::StartFailed {
                failures: self.start_failures,
                allowed: spec.start_retries,
            }));
        }
        if self.intensity.too_many(now.at, spec.restart_window, spec.max_restarts) {
            fx.push(Effect::Note(Note::TooManyRestarts));
            self.give_up(exit, now, fx);
            return;
        }
        let backoff = restart::backoff(spec.backoff, spec.backoff_max, self.backoff_level, now.jitter);
        let limit = self.start_limit_wait(now.at);
        if limit > backoff {
            fx.push(Effect::Note(Note::StartLimited { wait: limit }));
        }
        self.backoff_level = self.backoff_level.saturating_add(1);
        self.restarts += 1;
        fx.push(Effect::CountRestart(reason));
        self.token += 1;
        let token = self.token;
        self.set(State::Backoff { token }, Some(exit), fx);
        fx.push(Effect::Arm(Timer::Restart { token }, backoff.max(limit)));
    }

    /// `fatal`, with a retry after `fatal_retry_s` if set.
    fn give_up(&mut self, exit: LastExit, now: &Now<'_>, fx: &mut Vec<Effect>) {
        let token = now.spec.fatal_retry.map(|_| {
            self.token += 1;
            self.token
        });
        self.set(State::Fatal { token }, Some(exit), fx);
        if let (Some(token), Some(retry)) = (token, now.spec.fatal_retry) {
            fx.push(Effect::Arm(Timer::Restart { token }, retry));
        }
    }

    /// How long the next start must wait so that no more than [`START_LIMIT_BURST`] starts
    /// fall within [`START_LIMIT_INTERVAL`].
    fn start_limit_wait(&self, now: Instant) -> Duration {
        if self.recent_starts.len() < START_LIMIT_BURST {
            return Duration::ZERO;
        }
        let oldest = self.recent_starts[self.recent_starts.len() - START_LIMIT_BURST];
        (oldest + START_LIMIT_INTERVAL).saturating_duration_since(now)
    }
}
