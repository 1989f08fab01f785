//! The machine's words: its states (each with its own data), the events it takes, the
//! effects it asks for, the timers it arms and the notes it logs.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::model::process::{ExitReason, LastExit, ProcessState};

/// One run of the agent: its keeper and what is known of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub generation: u64,
    /// The keeper's pid, once launched.
    pub keeper: Option<i32>,
    /// The agent's own pid, once the keeper said it started.
    pub agent_pid: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub started: Instant,
    /// The command could not be executed (the keeper said why).
    pub failed_to_start: Option<String>,
    /// How the agent's process ended, as the keeper said.
    pub exit: Option<Exit>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// What follows the end of a run heartbeatd is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// What `restart` and the restart intensity say.
    FollowPolicy,
    /// Stay `stopped`.
    Stop,
    /// Start again at once (a manual restart or a change of settings).
    StartAgain,
    /// Stay `stopped` and end the actor (deleted, or heartbeatd is stopping).
    Remove,
}

/// The state, with the data only that state has.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Stopped,
    Starting(Run),
    Running(Run),
    Stopping {
        run: Run,
        reason: ExitReason,
        then: Then,
    },
    /// Waiting for the restart timer `token`.
    Backoff {
        token: u64,
    },
    Exited,
    /// Left alone; `token` is the `fatal_retry_s` timer, if one is armed.
    Fatal {
        token: Option<u64>,
    },
    /// The actor is to end.
    Removed,
}

impl State {
    /// The state's name as the API shows it (`Removed` shows as `stopped`).
    pub fn name(&self) -> ProcessState {
        match self {
            Self::Stopped | Self::Removed => ProcessState::Stopped,
            Self::Starting(_) => ProcessState::Starting,
            Self::Running(_) => ProcessState::Running,
            Self::Stopping { .. } => ProcessState::Stopping,
            Self::Backoff { .. } => ProcessState::Backoff,
            Self::Exited => ProcessState::Exited,
            Self::Fatal { .. } => ProcessState::Fatal,
        }
    }

    /// The current run, if one exists.
    pub fn run(&self) -> Option<&Run> {
        match self {
            Self::Starting(run) | Self::Running(run) | Self::Stopping { run, .. } => Some(run),
            _ => None,
        }
    }

    pub(super) fn run_mut(&mut self) -> Option<&mut Run> {
        match self {
            Self::Starting(run) | Self::Running(run) | Self::Stopping { run, .. } => Some(run),
            _ => None,
        }
    }
}

/// A timer the machine asked for; it comes back as [`Event::Timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// `start_wait_s` of run `generation` is over.
    StartWait { generation: u64 },
    /// A restart (backoff or `fatal_retry_s`) is due.
    Restart { token: u64 },
    /// The stop of run `generation` is overdue.
    Escalate { generation: u64, step: Escalation },
}

/// How a stop that takes too long is pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escalation {
    /// Tell the keeper to SIGKILL the tree now.
    KillTree,
    /// SIGKILL the keeper itself.
    KillKeeper,
}

/// Everything that can happen to a supervised agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An operator: start it if it is not running.
    Start,
    /// An operator: stop it; nothing starts it again until a start.
    Stop,
    /// An operator: stop it (if running) and start it again.
    Restart,
    /// Deleted, or heartbeatd is stopping: end the tree and the actor.
    Retire,
    /// Its settings changed (the new ones are already in place): a running agent restarts.
    Reconfigured,
    /// The keeper was spawned.
    Launched {
        keeper: i32,
    },
    /// The keeper could not be spawned.
    LaunchFailed,
    /// The keeper started the command.
    AgentStarted {
        pid: i64,
    },
    /// The keeper could not execute the command.
    CommandFailed {
        reason: String,
    },
    /// The keeper saw the agent's process end.
    AgentExited(Exit),
    /// The keeper of run `generation` is gone (its pipe closed).
    Ended {
        generation: u64,
    },
    /// A keeper left running by the previous heartbeatd was adopted: its agent runs as
    /// `pid` since `started_at`; no start, no restart.
    Adopted {
        keeper: i32,
        pid: i64,
        started_at: DateTime<Utc>,
    },
    /// A heartbeat of the agent arrived.
    Heard,
    /// Liveness says it is `down`.
    Silent,
    /// A limit held for `limit_for_s` (CPU, memory), or the keeper is killing a tree that
    /// had more processes than `max_processes`.
    OverLimit(ExitReason),
    Timer(Timer),
    /// heartbeatd's stop is out of time: kill the tree at once.
    KillNow,
}

/// Which waiting callers to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiters {
    /// Those waiting for the tree to end (a stop, a retirement).
    Stop,
    /// Those waiting for a new run's pid (a start, a restart).
    Start,
}

/// Something worth a log line that is not a change of state.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// The keeper could not be spawned.
    LaunchFailed,
    /// The command could not be executed.
    CommandFailed(String),
    /// The keeper was killed: its tree was killed with it; orphans must be swept.
    KeeperKilled,
    /// The run failed before it was `running`: attempt `failures` of `allowed + 1`.
    StartFailed { failures: u32, allowed: u32 },
    /// Given up: the program could not start `failures` times in a row.
    CouldNotStart { failures: u32 },
    /// Given up: more than `max_restarts` within `restart_window_s`.
    TooManyRestarts,
    /// A restart waits for the start limit rather than the backoff.
    StartLimited { wait: Duration },
    /// `fatal_retry_s` passed: trying again.
    FatalRetry,
    /// The stop took longer than `stop_timeout_s`.
    StopOverdue,
    /// The keeper does not answer.
    KeeperUnresponsive,
    /// Settings changed: restarting with them.
    RestartingForSettings,
    /// Liveness said `down`: restarting.
    RestartingForSilence,
}

/// What the machine asks its actor to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Spawn a keeper for run `generation` with the current settings; answer with
    /// [`Event::Launched`] or [`Event::LaunchFailed`].
    Launch {
        generation: u64,
    },
    /// Ask the keeper to stop the tree (its stop signal, SIGKILL after `stop_timeout_s`).
    StopTree,
    /// Tell the keeper to SIGKILL the tree now.
    KillTree,
    /// SIGKILL the keeper.
    KillKeeper,
    Arm(Timer, Duration),
    /// The state changed (log it, record it, post it, publish it).
    Changed {
        from: ProcessState,
        to: ProcessState,
        exit: Option<LastExit>,
    },
    /// The view changed without a change of state (the pid is known).
    Publish,
    CountRestart(ExitReason),
    Answer(Waiters),
    /// A restart's callers hear once the new run has its pid.
    StopWaitersWaitForStart,
    Note(Note),
    /// End the actor.
    Remove,
}
