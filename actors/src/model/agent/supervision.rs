//! An agent's supervision keys read as a program to run: the rules they follow (bounded,
//! consistent, set only with a `command`) and the [`ProcessSpec`] they make with every
//! default applied.

use std::time::Duration;

use super::AgentInfo;
use crate::model::process::{
    signal_number, ProcessSpec, LOG_MAX_BYTES_RANGE, MAX_ARG_LEN, MAX_BACKOFF_MS, MAX_COMMAND_AND_ENV_BYTES,
    MAX_COMMAND_ARGS, MAX_CPU_PERCENT, MAX_ENV_VARS, MAX_LOG_BACKUPS, MAX_MAX_PROCESSES, MAX_MAX_RESTARTS,
    MAX_PERIOD_S, MAX_START_RETRIES, MAX_STOP_TIMEOUT_S, STOP_SIGNALS,
};

impl AgentInfo {
    /// Whether heartbeatd runs this agent's process.
    pub fn is_supervised(&self) -> bool {
        self.command.is_some()
    }

    /// The agent's supervision settings with defaults applied; `None` without `command`.
    /// Call on a validated record (the bounds are checked by [`validate_process`]).
    pub fn process_spec(&self) -> Option<ProcessSpec> {
        let command = self.command.clone()?;
        let backoff_ms = self.restart_backoff_ms.unwrap_or(1000);
        Some(ProcessSpec {
            command,
            working_dir: self.working_dir.clone(),
            env: self.env.clone().unwrap_or_default(),
            autostart: self.autostart.unwrap_or(true),
            restart: self.restart.unwrap_or_default(),
            backoff: Duration::from_millis(backoff_ms),
            backoff_max: Duration::from_millis(self.restart_backoff_max_ms.unwrap_or(60_000).max(backoff_ms)),
            healthy_after: Duration::from_secs(self.healthy_after_s.unwrap_or(300)),
            max_restarts: self.max_restarts.unwrap_or(5),
            restart_window: Duration::from_secs(self.restart_window_s.unwrap_or(60)),
            fatal_retry: self.fatal_retry_s.map(Duration::from_secs),
            restart_on_silence: self.restart_on_silence.unwrap_or(true),
            max_cpu_percent: self.max_cpu_percent,
            max_memory_bytes: self.max_memory_bytes,
            limit_for: Duration::from_secs(self.limit_for_s.unwrap_or(60)),
            max_processes: self.max_processes,
            stop_signal: self
                .stop_signal
                .as_deref()
                .and_then(signal_number)
                .unwrap_or(libc::SIGTERM),
            stop_timeout: Duration::from_secs(self.stop_timeout_s.unwrap_or(10)),
            start_wait: Duration::from_secs(self.start_wait_s.unwrap_or(1)),
            start_retries: self.start_retries.unwrap_or(3),
            log_max_bytes: self.log_max_bytes.unwrap_or(10 << 20),
            log_backups: self.log_backups.unwrap_or(5),
        })
    }
}

/// Every supervision key but `command`: they only apply with one.
pub const SUPERVISION_KEYS: [&str; 22] = [
    "heartbeats",
    "working_dir",
    "env",
    "autostart",
    "restart",
    "restart_backoff_ms",
    "restart_backoff_max_ms",
    "healthy_after_s",
    "max_restarts",
    "restart_window_s",
    "fatal_retry_s",
    "restart_on_silence",
    "max_cpu_percent",
    "max_memory_bytes",
    "limit_for_s",
    "max_processes",
    "stop_signal",
    "stop_timeout_s",
    "start_wait_s",
    "start_retries",
    "log_max_bytes",
    "log_backups",
];

/// The supervision keys set without a `command` (they would silently do nothing).
fn keys_set_without_command(info: &AgentInfo) -> Vec<&'static str> {
    let set = [
        ("working_dir", info.working_dir.is_some()),
        ("env", info.env.is_some()),
        ("autostart", info.autostart.is_some()),
        ("restart", info.restart.is_some()),
        ("restart_backoff_ms", info.restart_backoff_ms.is_some()),
        ("restart_backoff_max_ms", info.restart_backoff_max_ms.is_some()),
        ("healthy_after_s", info.healthy_after_s.is_some()),
        ("max_restarts", info.max_restarts.is_some()),
        ("restart_window_s", info.restart_window_s.is_some()),
        ("fatal_retry_s", info.fatal_retry_s.is_some()),
        ("restart_on_silence", info.restart_on_silence.is_some()),
        ("max_cpu_percent", info.max_cpu_percent.is_some()),
        ("max_memory_bytes", info.max_memory_bytes.is_some()),
        ("limit_for_s", info.limit_for_s.is_some()),
        ("max_processes", info.max_processes.is_some()),
        ("stop_signal", info.stop_signal.is_some()),
        ("stop_timeout_s", info.stop_timeout_s.is_some()),
        ("start_wait_s", info.start_wait_s.is_some()),
        ("start_retries", info.start_retries.is_some()),
        ("heartbeats", info.heartbeats.is_some()),
        ("log_max_bytes", info.log_max_bytes.is_some()),
        ("log_backups", info.log_backups.is_some()),
    ];
    set.into_iter()
        .filter(|(_, is_set)| *is_set)
        .map(|(key, _)| key)
        .collect()
}

fn check_text(key: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_ARG_LEN {
        return Err(format!("{key}: at most {MAX_ARG_LEN} bytes, got {}", value.len()));
    }
    if value.contains('\0') {
        return Err(format!("{key}: must not contain a NUL byte"));
    }
    Ok(())
}

fn check_range(key: &str, value: Option<u64>, min: u64, max: u64) -> Result<(), String> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(format!("{key}: must be between {min} and {max}, got {v}")),
        _ => Ok(()),
    }
}

/// The supervision rules: the keys are bounded, consistent, and only set with a `command`.
/// The message names the key.
pub fn validate_process(info: &AgentInfo) -> Result<(), String> {
    let Some(command) = &info.command else {
        return match keys_set_without_command(info).first() {
            Some(key) => Err(format!("{key}: only applies to an agent with a command")),
            None => Ok(()),
        };
    };
    if command.is_empty() || command[0].is_empty() {
        return Err("command: must name a program (a non-empty array of strings, run without a shell)".into());
    }
    if command.len() > MAX_COMMAND_ARGS {
        return Err(format!(
            "command: at most {MAX_COMMAND_ARGS} arguments, got {}",
            command.len()
        ));
    }
    for (i, arg) in command.iter().enumerate() {
        check_text(&format!("command[{i}]"), arg)?;
    }
    if let Some(dir) = &info.working_dir {
        check_text("working_dir", dir)?;
        if dir.is_empty() {
            return Err("working_dir: must not be empty (leave it out for heartbeatd's own)".into());
        }
    }
    if let Some(env) = &info.env {
        if env.len() > MAX_ENV_VARS {
            return Err(format!("env: at most {MAX_ENV_VARS} variables, got {}", env.len()));
        }
        for (name, value) in env {
            if name.is_empty() || name.contains('=') || name.contains('\0') || name.len() > 256 {
                return Err(format!(
                    "env: {:?} is not a variable name (1 to 256 bytes, no '=' or NUL)",
                    crate::log_text::clip(name)
                ));
            }
            check_text(&format!("env.{name}"), value)?;
        }
    }
    let exec_bytes = serde_json::to_string(command).map_or(usize::MAX, |t| t.len())
        + serde_json::to_string(&info.env).map_or(usize::MAX, |t| t.len());
    if exec_bytes > MAX_COMMAND_AND_ENV_BYTES {
        return Err(format!(
            "command and env: at most {MAX_COMMAND_AND_ENV_BYTES} bytes together (as JSON: what the program is started with), got {exec_bytes}"
        ));
    }
    check_range("restart_backoff_ms", info.restart_backoff_ms, 0, MAX_BACKOFF_MS)?;
    check_range("restart_backoff_max_ms", info.restart_backoff_max_ms, 0, MAX_BACKOFF_MS)?;
    let (floor, ceiling) = (
        info.restart_backoff_ms.unwrap_or(1000),
        info.restart_backoff_max_ms.unwrap_or(60_000),
    );
    if ceiling < floor {
        return Err(format!(
            "restart_backoff_max_ms: must be at least restart_backoff_ms ({floor}), got {ceiling}"
        ));
    }
    for (key, value) in [
        ("healthy_after_s", info.healthy_after_s),
        ("restart_window_s", info.restart_window_s),
        ("fatal_retry_s", info.fatal_retry_s),
        ("limit_for_s", info.limit_for_s),
    ] {
        check_range(key, value, 1, MAX_PERIOD_S)?;
    }
    check_range("stop_timeout_s", info.stop_timeout_s, 1, MAX_STOP_TIMEOUT_S)?;
    check_range("start_wait_s", info.start_wait_s, 0, MAX_STOP_TIMEOUT_S)?;
    check_range(
        "start_retries",
        info.start_retries.map(u64::from),
        0,
        MAX_START_RETRIES.into(),
    )?;
    check_range(
        "max_restarts",
        info.max_restarts.map(u64::from),
        0,
        MAX_MAX_RESTARTS.into(),
    )?;
    check_range(
        "max_cpu_percent",
        info.max_cpu_percent.map(u64::from),
        1,
        MAX_CPU_PERCENT.into(),
    )?;
    check_range("max_memory_bytes", info.max_memory_bytes, 1 << 20, 1 << 50)?;
    check_range(
        "max_processes",
        info.max_processes.map(u64::from),
        1,
        MAX_MAX_PROCESSES.into(),
    )?;
    check_range(
        "log_max_bytes",
        info.log_max_bytes,
        LOG_MAX_BYTES_RANGE.0,
        LOG_MAX_BYTES_RANGE.1,
    )?;
    check_range(
        "log_backups",
        info.log_backups.map(u64::from),
        0,
        MAX_LOG_BACKUPS.into(),
    )?;
    if let Some(name) = &info.stop_signal {
        if signal_number(name).is_none() {
            let known: Vec<_> = STOP_SIGNALS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "stop_signal: {:?} is not one of {}",
                crate::log_text::clip(name),
                known.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::process::RestartPolicy;

    fn supervised(command: &[&str]) -> AgentInfo {
        AgentInfo {
            id: "a".into(),
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let spec = supervised(&["/bin/true"]).process_spec().unwrap();
        assert!(spec.autostart && spec.restart_on_silence);
        assert_eq!(spec.restart, RestartPolicy::OnFailure);
        assert_eq!(
            (spec.backoff, spec.backoff_max),
            (Duration::from_secs(1), Duration::from_secs(60))
        );
        assert_eq!((spec.max_restarts, spec.restart_window), (5, Duration::from_secs(60)));
        assert_eq!(spec.healthy_after, Duration::from_secs(300));
        assert_eq!(
            (spec.stop_signal, spec.stop_timeout),
            (libc::SIGTERM, Duration::from_secs(10))
        );
        assert_eq!((spec.log_max_bytes, spec.log_backups), (10 << 20, 5));
        assert_eq!(spec.fatal_retry, None);
        assert!(AgentInfo::default().process_spec().is_none());
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        let cases: Vec<(AgentInfo, &str)> = vec![
            (supervised(&[]), "command"),
            (supervised(&[""]), "command"),
            (supervised(&["a\0b"]), "command[0]"),
            (
                AgentInfo {
                    restart_backoff_ms: Some(5000),
                    restart_backoff_max_ms: Some(1000),
                    ..supervised(&["x"])
                },
                "restart_backoff_max_ms",
            ),
            (
                AgentInfo {
                    stop_signal: Some("SIGFOO".into()),
                    ..supervised(&["x"])
                },
                "stop_signal",
            ),
            (
                AgentInfo {
                    stop_timeout_s: Some(u64::MAX),
                    ..supervised(&["x"])
                },
                "stop_timeout_s",
            ),
            (
                AgentInfo {
                    restart_backoff_ms: Some(u64::MAX),
                    ..supervised(&["x"])
                },
                "restart_backoff_ms",
            ),
            (
                AgentInfo {
                    log_max_bytes: Some(10),
                    ..supervised(&["x"])
                },
                "log_max_bytes",
            ),
            (
                AgentInfo {
                    env: Some([("A=B".to_string(), "x".to_string())].into()),
                    ..supervised(&["x"])
                },
                "env",
            ),
            (
                AgentInfo {
                    max_restarts: Some(3),
                    ..AgentInfo::default()
                },
                "max_restarts",
            ),
            (
                AgentInfo {
                    max_processes: Some(0),
                    ..supervised(&["x"])
                },
                "max_processes",
            ),
            (
                AgentInfo {
                    max_processes: Some(MAX_MAX_PROCESSES + 1),
                    ..supervised(&["x"])
                },
                "max_processes",
            ),
            (
                AgentInfo {
                    max_processes: Some(10),
                    ..AgentInfo::default()
                },
                "max_processes",
            ),
        ];
        for (info, key) in cases {
            let error = validate_process(&info).expect_err(key);
            assert!(error.starts_with(key), "{key}: {error}");
        }
        assert!(validate_process(&supervised(&["/bin/sleep", "1"])).is_ok());
        let bounded = AgentInfo {
            max_processes: Some(MAX_MAX_PROCESSES),
            ..supervised(&["/bin/sleep", "1"])
        };
        assert!(validate_process(&bounded).is_ok());
        assert_eq!(bounded.process_spec().unwrap().max_processes, Some(MAX_MAX_PROCESSES));
    }

    #[test]
    fn command_and_env_together_are_bounded_by_what_exec_takes() {
        let big = |args: usize, env: usize| AgentInfo {
            id: "a".into(),
            command: Some(vec!["x".repeat(4096); args]),
            env: Some((0..env).map(|i| (format!("V{i}"), "y".repeat(4096))).collect()),
            ..Default::default()
        };
        // Each within its own bound (256 arguments, 256 variables, 4 KiB each) …
        let error = validate_process(&big(200, 0)).unwrap_err();
        assert!(error.starts_with("command and env: at most 65536 bytes"), "{error}");
        assert!(validate_process(&big(8, 7)).is_ok());
        assert!(validate_process(&big(8, 8)).is_err(), "env counts too");
    }
}
