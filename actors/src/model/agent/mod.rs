//! An agent's identity (what the registry knows: [`AgentInfo`], its id, timing and label
//! rules), a change to it ([`change`]), its supervision keys read as a program
//! ([`supervision`]), and its state, history samples and views ([`state`]).
//!
//! The top of the model: it imports `heartbeat`, `liveness` and `process`; none of them
//! imports it.

mod change;
mod state;
mod supervision;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::process::RestartPolicy;

pub use change::AgentChange;
pub use state::{AgentFigures, AgentState, AgentView, ResourceSample, MIN_VIEW_JSON_BYTES, STATE_FORMAT_VERSION};
pub use supervision::{validate_process, SUPERVISION_KEYS};

/// The longest agent id accepted, in bytes.
pub const MAX_AGENT_ID_LEN: usize = 128;

/// True when `id` matches `[A-Za-z0-9._-]{1,128}` and is not `.` or `..`.
///
/// The id names files under `data_dir`, so this rule is what keeps ids from escaping it.
pub fn is_valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_AGENT_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The shortest `heartbeat_interval_s` and `grace_s` accepted, in seconds.
pub const MIN_TIMING_S: u64 = 1;
/// The longest `heartbeat_interval_s` and `grace_s` accepted: 7 days. Deadlines are computed
/// as instants and durations; unbounded values overflowed them (a panic in Liveness).
pub const MAX_TIMING_S: u64 = 7 * 24 * 3600;
/// The longest agent `name` and `type` accepted, in bytes: they are stored in every state file
/// and registry save, and shown in every listing.
pub const MAX_LABEL_LEN: usize = 256;

/// Checks one timing value (`heartbeat_interval_s` or `grace_s`) against the bounds.
pub fn check_timing(key: &str, value: u64) -> Result<(), String> {
    if (MIN_TIMING_S..=MAX_TIMING_S).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{key}: must be between {MIN_TIMING_S} and {MAX_TIMING_S} (7 days), got {value}"
        ))
    }
}

/// What the registry knows about an agent: who it is, not how it is doing. The one record of
/// an agent wherever it comes from or goes to: a config file's `[[agents]]` entry, a
/// `POST /agents` entry, a line of `registry.json`. Unknown fields are refused (a typo in a
/// config or a request is an error, not a silent default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Free text, e.g. `filebeat` or `custom`.
    #[serde(default, rename = "type")]
    pub agent_type: String,
    /// Its own heartbeat interval; `None`: `heartbeat_interval_s` of the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_s: Option<u64>,
    /// Its own grace; `None`: `grace_s` of the config (default twice the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_s: Option<u64>,

    // Supervision (see `model::process`): set `command` and heartbeatd runs the agent.
    // `None` everywhere below means the default of `ProcessSpec`.
    /// argv of the agent's program, run without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Added to heartbeatd's environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_backoff_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_backoff_max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_after_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_window_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fatal_retry_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_on_silence: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_for_s: Option<u64>,
    /// More processes than this in the tree and its keeper kills it (`over_processes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_wait_s: Option<u64>,
    /// Runs in a row that may fail before they are `running`, before the agent is `fatal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_retries: Option<u32>,
    /// `false`: the program sends no heartbeats; its liveness follows its process (`up` while
    /// it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeats: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_backups: Option<u32>,
}

impl AgentInfo {
    /// The rules every registered agent follows, whichever way it came in (config file, API,
    /// `auto_register`): a valid id, timing within bounds, labels of bounded length. The
    /// message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !is_valid_agent_id(&self.id) {
            return Err(format!(
                "id: {:?} is not a valid agent id (1 to {MAX_AGENT_ID_LEN} characters from A-Z a-z 0-9 . _ -)",
                crate::log_text::clip(&self.id)
            ));
        }
        self.validate_details()
    }

    /// [`AgentInfo::validate`] without the id (for a change to an existing agent).
    pub fn validate_details(&self) -> Result<(), String> {
        for (key, value) in [
            ("heartbeat_interval_s", self.heartbeat_interval_s),
            ("grace_s", self.grace_s),
        ] {
            if let Some(value) = value {
                check_timing(key, value)?;
            }
        }
        for (key, value) in [("name", &self.name), ("type", &self.agent_type)] {
            if value.len() > MAX_LABEL_LEN {
                return Err(format!("{key}: at most {MAX_LABEL_LEN} bytes, got {}", value.len()));
            }
        }
        validate_process(self)
    }

    /// Brings out-of-bounds timing (saved by an older version) back within bounds; returns
    /// what was changed, for a warning.
    pub fn clamp_timing(&mut self) -> Vec<String> {
        let mut clamped = Vec::new();
        for (key, value) in [
            ("heartbeat_interval_s", &mut self.heartbeat_interval_s),
            ("grace_s", &mut self.grace_s),
        ] {
            if let Some(v) = value {
                let bounded = (*v).clamp(MIN_TIMING_S, MAX_TIMING_S);
                if bounded != *v {
                    clamped.push(format!("{key}: {v} -> {bounded}"));
                    *v = bounded;
                }
            }
        }
        clamped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_and_labels_are_bounded() {
        let info = |interval: Option<u64>, grace: Option<u64>, name: &str| AgentInfo {
            id: "a".into(),
            name: name.into(),
            heartbeat_interval_s: interval,
            grace_s: grace,
            ..Default::default()
        };
        let cases: Vec<(AgentInfo, Result<(), &str>)> = vec![
            (info(None, None, ""), Ok(())),
            (info(Some(1), Some(MAX_TIMING_S), ""), Ok(())),
            (
                info(Some(0), None, ""),
                Err("heartbeat_interval_s: must be between 1 and 604800 (7 days), got 0"),
            ),
            (
                info(Some(i64::MAX as u64), None, ""),
                Err("heartbeat_interval_s: must be between 1 and 604800 (7 days), got 9223372036854775807"),
            ),
            (
                info(None, Some(MAX_TIMING_S + 1), ""),
                Err("grace_s: must be between 1 and 604800 (7 days), got 604801"),
            ),
            (
                info(None, None, &"n".repeat(257)),
                Err("name: at most 256 bytes, got 257"),
            ),
        ];
        for (agent, expected) in cases {
            assert_eq!(agent.validate(), expected.map_err(str::to_owned), "{agent:?}");
        }
        let mut old = info(Some(u64::MAX), Some(0), "");
        assert_eq!(old.clamp_timing().len(), 2);
        assert_eq!((old.heartbeat_interval_s, old.grace_s), (Some(MAX_TIMING_S), Some(1)));
        assert!(old.validate().is_ok());
    }

    #[test]
    fn agent_id_rule_matches_the_documented_pattern() {
        for ok in ["a", "agent-1", "web_01.prod", &"x".repeat(128)] {
            assert!(is_valid_agent_id(ok), "{ok:?} should be valid");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(!is_valid_agent_id(bad), "{bad:?} should be invalid");
        }
    }
}
