//! Supervised processes as data: their settings ([`spec`]: bounds, defaults, signals), the
//! process states, why a process ended, and what the API shows ([`ProcessView`]). A leaf of
//! the model: it imports no other model module (the agent's record imports it, and reads its
//! supervision keys into a [`ProcessSpec`] in `model::agent`).

mod spec;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use spec::*;

/// A supervised process's state, with supervisord's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    /// Not running, and not to be started until asked (`autostart = false`, or stopped).
    Stopped,
    /// Started; `running` at its first heartbeat or after `start_wait_s`.
    Starting,
    Running,
    /// Ended; waiting for its next start.
    Backoff,
    /// Asked to stop; waiting for the tree to end.
    Stopping,
    /// Ended on its own and the restart policy says not to start it again.
    Exited,
    /// Restarted too often (`max_restarts` within `restart_window_s`); left alone.
    Fatal,
}

impl ProcessState {
    pub const ALL: [ProcessState; 7] = [
        Self::Stopped,
        Self::Starting,
        Self::Running,
        Self::Backoff,
        Self::Stopping,
        Self::Exited,
        Self::Fatal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Backoff => "backoff",
            Self::Stopping => "stopping",
            Self::Exited => "exited",
            Self::Fatal => "fatal",
        }
    }
}

/// Why a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// It ended by itself.
    Exited,
    /// heartbeatd ended it: liveness said `down`.
    Silent,
    /// heartbeatd ended it: its tree's CPU stayed over `max_cpu_percent`.
    OverCpu,
    /// heartbeatd ended it: its tree's memory stayed over `max_memory_bytes`.
    OverMemory,
    /// Its keeper killed it: its tree had more processes than `max_processes`.
    OverProcesses,
    /// Someone asked: stop or restart over the API or `heartbeatd ctl`, a change of its
    /// settings, its deletion, or heartbeatd's own stop.
    Manual,
}

impl ExitReason {
    pub const ALL: [ExitReason; 6] = [
        Self::Exited,
        Self::Silent,
        Self::OverCpu,
        Self::OverMemory,
        Self::OverProcesses,
        Self::Manual,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Exited => "exited",
            Self::Silent => "silent",
            Self::OverCpu => "over_cpu",
            Self::OverMemory => "over_memory",
            Self::OverProcesses => "over_processes",
            Self::Manual => "manual",
        }
    }
}

/// How a process ended: its exit code, or the signal that ended it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal's name (`SIGKILL`), or its number for one without a name here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    pub at: DateTime<Utc>,
    pub reason: ExitReason,
}

impl LastExit {
    /// Whether it counts as a failure for `restart = "on-failure"`.
    pub fn failed(&self) -> bool {
        self.code != Some(0)
    }
}

/// What a supervised agent's process tree uses, as heartbeatd measured it (the tree under its
/// keeper: the program and every descendant; see `supervision::usage` for when it is
/// measured).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// CPU in cores (1.0: one core busy) between the measurement before this one (or the
    /// run's start) and this one, counting the tree's processes that have already ended.
    pub cpu_ratio: f64,
    /// Memory in bytes: the proportional set size (PSS) summed over the tree, so pages shared
    /// within it count once (RSS for a process whose PSS cannot be read).
    pub memory_bytes: u64,
    /// Processes in the tree.
    pub processes: u32,
    /// When it was measured.
    pub at: DateTime<Utc>,
}

/// A supervised agent's process, as `GET /agents/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessView {
    pub state: ProcessState,
    /// The agent's process (the leader of its process group).
    pub pid: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
    /// Restarts since heartbeatd started (any reason but a manual start).
    pub restarts: u64,
    pub last_exit: Option<LastExit>,
    /// A pid the agent reported that is not in its process tree (warned about once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_pid_mismatch: Option<i64>,
    /// What its tree uses; `null` while it has no tree or before it is first measured.
    #[serde(default)]
    pub usage: Option<ProcessUsage>,
}

/// Marks a process event in `events/<id>.log` and in webhook deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessEventKind {
    Process,
}

/// A change of process state, as the events log keeps it and the webhook posts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEvent {
    /// Always `process` (liveness events have no `kind`).
    pub kind: ProcessEventKind,
    pub from: ProcessState,
    pub to: ProcessState,
    pub at: DateTime<Utc>,
    pub pid: Option<i64>,
    /// How the process ended, on a change that follows its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<LastExit>,
    pub restarts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_are_read_with_or_without_sig() {
        assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("sigkill"), Some(libc::SIGKILL));
        assert_eq!(signal_number("SIGSTOP"), None);
        assert_eq!(signal_name(libc::SIGKILL), Some("SIGKILL"));
    }
}
