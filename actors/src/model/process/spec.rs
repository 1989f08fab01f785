//! A supervised program's settings as data: the restart policy, the bounds every
//! supervision key is checked against, the stop signals, and [`ProcessSpec`], the settings
//! with every default applied that a process actor runs by.
//!
//! Every value here comes from a config file or an admin request, so every one is bounded
//! before it reaches a timer, an allocation, `execve` or a file name.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What happens when a supervised process exits on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Start it again whatever its exit.
    Always,
    /// Start it again after a non-zero exit or a signal; a clean exit (0) leaves it `exited`.
    #[default]
    OnFailure,
    /// Never start it again by itself.
    Never,
}

/// The most arguments a `command` may have.
pub const MAX_COMMAND_ARGS: usize = 256;
/// The most entries an `env` table may have.
pub const MAX_ENV_VARS: usize = 256;
/// The longest argument, environment value or path accepted, in bytes.
pub const MAX_ARG_LEN: usize = 4096;
/// The most bytes `command` and `env` may take together, as JSON: what reaches `execve` (for
/// the keeper and for the program) stays well within its limits (one string at most
/// 128 KiB, all of them at most a quarter of the stack limit, usually 2 MiB).
pub const MAX_COMMAND_AND_ENV_BYTES: usize = 64 << 10;
/// The longest backoff accepted, in milliseconds: one hour.
pub const MAX_BACKOFF_MS: u64 = 3_600_000;
/// Seconds-valued keys are bounded to 1 s … 7 days, like the liveness timing.
pub const MAX_PERIOD_S: u64 = 7 * 24 * 3600;
/// The longest `stop_timeout_s` and `start_wait_s` accepted: one hour.
pub const MAX_STOP_TIMEOUT_S: u64 = 3600;
/// The smallest and largest `log_max_bytes` accepted: 4 KiB … 16 GiB.
pub const LOG_MAX_BYTES_RANGE: (u64, u64) = (4096, 16 << 30);
/// The most `log_backups` kept.
pub const MAX_LOG_BACKUPS: u32 = 100;
/// The highest `start_retries` accepted.
pub const MAX_START_RETRIES: u32 = 100;
/// The highest `max_restarts` accepted.
pub const MAX_MAX_RESTARTS: u32 = 10_000;
/// The highest `max_cpu_percent` accepted: 1024 cores' worth.
pub const MAX_CPU_PERCENT: u32 = 102_400;
/// The highest `max_processes` accepted: as many as a keeper counts in one walk of its tree.
pub const MAX_MAX_PROCESSES: u32 = 100_000;

/// The signals `stop_signal` may name, with or without `SIG`.
pub const STOP_SIGNALS: [(&str, i32); 7] = [
    ("TERM", libc::SIGTERM),
    ("INT", libc::SIGINT),
    ("HUP", libc::SIGHUP),
    ("QUIT", libc::SIGQUIT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
];

/// The number of a `stop_signal` name (`TERM`, `SIGTERM`, `term`, …).
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    STOP_SIGNALS.iter().find(|(n, _)| *n == bare).map(|(_, number)| *number)
}

/// The name of a signal number, for logs and the API (`SIGKILL`); `None` for one we do not name.
pub fn signal_name(number: i32) -> Option<&'static str> {
    Some(match number {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// An agent's supervision settings with every default applied: what its process actor runs by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// argv, run without a shell; never empty.
    pub command: Vec<String>,
    pub working_dir: Option<String>,
    /// Added to heartbeatd's own environment.
    pub env: BTreeMap<String, String>,
    /// Started when heartbeatd starts (or when the agent is registered).
    pub autostart: bool,
    pub restart: RestartPolicy,
    /// The first wait before a restart; doubles (with jitter) up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Up this long without a restart: the backoff starts again from `backoff`.
    pub healthy_after: Duration,
    /// More restarts than this within `restart_window` → `fatal`.
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// A `fatal` agent is started again after this long; `None`: it stays `fatal`.
    pub fatal_retry: Option<Duration>,
    /// Restart when liveness says `down`.
    pub restart_on_silence: bool,
    /// Restart when the tree's CPU (percent of one core) stays above this for `limit_for`.
    pub max_cpu_percent: Option<u32>,
    /// Restart when the tree's memory (PSS summed over the tree) stays above this for
    /// `limit_for`.
    pub max_memory_bytes: Option<u64>,
    pub limit_for: Duration,
    /// More processes than this in the tree and its keeper kills it at once (systemd's
    /// `TasksMax`, counted in processes).
    pub max_processes: Option<u32>,
    /// Sent to the whole tree to stop it.
    pub stop_signal: i32,
    /// SIGKILL after this long.
    pub stop_timeout: Duration,
    /// `starting` becomes `running` after this long without a heartbeat.
    pub start_wait: Duration,
    /// Runs in a row that may fail before they are `running` (supervisord's `startretries`);
    /// one more is `fatal`.
    pub start_retries: u32,
    /// `data_dir/logs/<id>.log` rotates past this size.
    pub log_max_bytes: u64,
    pub log_backups: u32,
}

impl ProcessSpec {
    /// Whether resource use must be watched.
    pub fn has_limits(&self) -> bool {
        self.max_cpu_percent.is_some() || self.max_memory_bytes.is_some()
    }
}
