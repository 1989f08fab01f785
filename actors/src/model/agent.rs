//! An agent's identity (what the registry knows), its state (what the Manager keeps in memory
//! and the Store snapshots to `agents/<id>.json`), and its resource samples (what the Store
//! appends to `history/<id>.log`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::heartbeat::{Heartbeat, ReportedStatus};
use crate::model::liveness::AgentStatus;
use crate::model::process::{validate_process, ProcessView, RestartPolicy};

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

/// A change to a registered agent: the `PATCH /agents/{id}` body, and what the Manager and
/// the Registry pass on. A JSON merge patch (RFC 7396) on the agent's record: a key sets
/// that field, `null` sets it back to its default (`"command": null` ends supervision), a
/// missing key leaves it as it is. The result must be a valid record: an unknown key or a
/// wrong type is refused, naming the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct AgentChange(pub serde_json::Map<String, serde_json::Value>);

impl AgentChange {
    /// A change of the given fields (for tests and callers in code).
    pub fn of(fields: serde_json::Value) -> Self {
        match fields {
            serde_json::Value::Object(map) => Self(map),
            _ => Self::default(),
        }
    }

    /// Whether it touches any of `keys`.
    pub fn touches(&self, keys: &[&str]) -> bool {
        keys.iter().any(|k| self.0.contains_key(*k))
    }

    /// `info` with the change applied (the bounds not yet checked: see [`AgentInfo::validate`]).
    pub fn applied_to(&self, info: &AgentInfo) -> Result<AgentInfo, String> {
        if let Some(id) = self.0.get("id") {
            if id.as_str() != Some(info.id.as_str()) {
                return Err("id: an agent's id cannot change (delete it and register the new id)".into());
            }
        }
        let serde_json::Value::Object(mut record) = serde_json::to_value(info).map_err(|e| e.to_string())? else {
            return Err("the record is not an object".into());
        };
        // `"command": null` ends supervision: the supervision settings go with it (those the
        // same patch sets are kept, and refused as settings without a command).
        if self.0.get("command").is_some_and(serde_json::Value::is_null) {
            for key in crate::model::process::SUPERVISION_KEYS {
                if !self.0.contains_key(key) {
                    record.remove(key);
                }
            }
        }
        for (key, value) in &self.0 {
            merge_patch(record.entry(key.clone()).or_insert(serde_json::Value::Null), value);
            if value.is_null() {
                record.remove(key);
            }
        }
        serde_path_to_error::deserialize(serde_json::Value::Object(record)).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            if path == "." || message.starts_with("unknown field") {
                message
            } else {
                format!("{path}: {message}")
            }
        })
    }
}

/// RFC 7396: an object patch merges into an object, key by key (`null` removes a key); any
/// other value replaces the target. So `{"env": {"A": "1"}}` adds or changes `A` and keeps
/// the other variables, and `{"env": {"B": null}}` removes `B`.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    let Some(fields) = target.as_object_mut() else { return };
    for (key, value) in changes {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(serde_json::Value::Null), value);
        }
    }
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

/// One point of resource-usage history: one line of `history/<id>.log`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    /// The agent's heartbeat number (1, 2, …). Reads drop a record whose number is not above
    /// the one before it, so an append retried after a failed flush is never counted twice.
    #[serde(rename = "n")]
    pub seq: u64,
    /// The agent's timestamp for this heartbeat.
    #[serde(rename = "t")]
    pub time: DateTime<Utc>,
    #[serde(rename = "c")]
    pub cpu: f64,
    #[serde(rename = "m")]
    pub memory: u64,
}

/// The version of the on-disk format of [`AgentState`]; bumped on incompatible changes.
pub const STATE_FORMAT_VERSION: u32 = 2;

/// An agent's state without its history: the content of `agents/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub format_version: u32,
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub agent_type: String,
    /// The status the agent last reported about itself, if it ever did.
    #[serde(default)]
    pub status: Option<ReportedStatus>,
    #[serde(default)]
    pub pid: Option<i64>,
    /// The agent's timestamp of its last heartbeat.
    #[serde(default)]
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// The server's receive time of the last heartbeat.
    #[serde(default)]
    pub last_seen: Option<DateTime<Utc>>,
    /// Heartbeats processed for this agent, over its whole life.
    #[serde(default)]
    pub heartbeat_count: u64,
    /// Records in `history/<id>.log` (as of this snapshot); drives compaction.
    #[serde(default)]
    pub history_records: u64,
    /// Server receive time minus the agent's timestamp, at its last heartbeat.
    #[serde(default)]
    pub clock_skew_ms: Option<i64>,
    /// CPU percent and memory bytes of its last heartbeat.
    #[serde(default)]
    pub last_cpu: Option<f64>,
    #[serde(default)]
    pub last_memory: Option<u64>,
}

impl AgentState {
    /// Fresh state for a registered agent that has never reported.
    pub fn new(info: &AgentInfo) -> Self {
        Self {
            format_version: STATE_FORMAT_VERSION,
            id: info.id.clone(),
            name: info.name.clone(),
            agent_type: info.agent_type.clone(),
            status: None,
            pid: None,
            last_heartbeat: None,
            last_seen: None,
            heartbeat_count: 0,
            history_records: 0,
            clock_skew_ms: None,
            last_cpu: None,
            last_memory: None,
        }
    }

    /// Applies one heartbeat and returns the history sample it produces.
    ///
    /// Heartbeats of one agent can reach the Manager out of order (they travel through
    /// parallel workers), so the `last_*` fields take a heartbeat only when it was received
    /// no earlier than the one they hold: an older one is counted and kept in the history,
    /// but never makes the agent look as it was before.
    pub fn record(&mut self, hb: &Heartbeat) -> ResourceSample {
        self.heartbeat_count += 1;
        if self.last_seen.is_none_or(|last| hb.received_at >= last) {
            self.last_heartbeat = Some(hb.timestamp);
            self.last_seen = Some(hb.received_at);
            self.pid = Some(hb.pid);
            if hb.status.is_some() {
                self.status = hb.status;
            }
            self.clock_skew_ms = Some((hb.received_at - hb.timestamp).num_milliseconds());
            self.last_cpu = Some(hb.cpu);
            self.last_memory = Some(hb.memory);
        }
        ResourceSample {
            seq: self.heartbeat_count,
            time: hb.timestamp,
            cpu: hb.cpu,
            memory: hb.memory,
        }
    }
}

/// The figures of one agent that `/metrics` exports per agent, besides its liveness: what a
/// scrape of 10k agents needs and nothing more (an [`AgentView`] clones names, commands and
/// process views). The id is the caller's: figures come in the order asked.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AgentFigures {
    /// The server's receive time of its last heartbeat.
    pub last_seen: Option<DateTime<Utc>>,
    pub last_cpu: Option<f64>,
    pub last_memory: Option<u64>,
}

/// An agent as the admin API shows it: registry facts joined with the live state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub agent_type: String,
    /// What the agent last said about itself (`running`, `stopped`, `error`), if anything.
    pub reported_status: Option<ReportedStatus>,
    pub pid: Option<i64>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub heartbeat_count: u64,
    /// Liveness, judged on the server's clock.
    pub status: AgentStatus,
    /// Since when it is in that status (`null`: new since before this start).
    pub status_since: Option<DateTime<Utc>>,
    /// Server receive time minus the agent's timestamp at its last heartbeat.
    pub clock_skew_ms: Option<i64>,
    pub heartbeat_interval_s: Option<u64>,
    pub grace_s: Option<u64>,
    /// CPU percent and memory bytes of its last heartbeat.
    pub last_cpu: Option<f64>,
    pub last_memory: Option<u64>,
    /// The command heartbeatd runs for it, if it supervises it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Its process, if heartbeatd supervises it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessView>,
}

impl AgentView {
    pub fn new(info: &AgentInfo, state: Option<&AgentState>) -> Self {
        Self {
            id: info.id.clone(),
            name: info.name.clone(),
            agent_type: info.agent_type.clone(),
            reported_status: state.and_then(|s| s.status),
            pid: state.and_then(|s| s.pid),
            last_heartbeat: state.and_then(|s| s.last_heartbeat),
            last_seen: state.and_then(|s| s.last_seen),
            heartbeat_count: state.map_or(0, |s| s.heartbeat_count),
            status: AgentStatus::New,
            status_since: None,
            clock_skew_ms: state.and_then(|s| s.clock_skew_ms),
            heartbeat_interval_s: info.heartbeat_interval_s,
            grace_s: info.grace_s,
            last_cpu: state.and_then(|s| s.last_cpu),
            last_memory: state.and_then(|s| s.last_memory),
            command: info.command.clone(),
            process: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_a_heartbeat_numbers_its_sample() {
        let mut state = AgentState::new(&AgentInfo {
            id: "a".into(),
            name: String::new(),
            agent_type: String::new(),
            ..Default::default()
        });
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let hb = Heartbeat {
            agent_id: "a".into(),
            timestamp: at,
            received_at: at + chrono::Duration::seconds(1),
            pid: 42,
            cpu: 1.5,
            memory: 7,
            status: Some(ReportedStatus::Running),
        };
        let first = state.record(&hb);
        let second = state.record(&Heartbeat {
            status: None,
            ..hb.clone()
        });
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(state.heartbeat_count, 2);
        assert_eq!(
            state.status,
            Some(ReportedStatus::Running),
            "a missing status keeps the last one"
        );
        assert_eq!(state.last_seen, Some(hb.received_at));
        assert_eq!(state.last_heartbeat, Some(at));
    }

    #[test]
    fn a_heartbeat_received_earlier_than_the_last_one_is_counted_but_does_not_roll_state_back() {
        let mut state = AgentState::new(&AgentInfo {
            id: "a".into(),
            ..Default::default()
        });
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let newer = Heartbeat {
            agent_id: "a".into(),
            timestamp: at,
            received_at: at,
            pid: 2,
            cpu: 2.0,
            memory: 2,
            status: Some(ReportedStatus::Running),
        };
        let older = Heartbeat {
            timestamp: at - chrono::Duration::seconds(1),
            received_at: at - chrono::Duration::seconds(1),
            pid: 1,
            cpu: 1.0,
            memory: 1,
            status: Some(ReportedStatus::Stopped),
            ..newer.clone()
        };
        state.record(&newer);
        let sample = state.record(&older);
        assert_eq!((state.heartbeat_count, sample.memory), (2, 1));
        assert_eq!(state.last_seen, Some(newer.received_at));
        assert_eq!((state.pid, state.last_memory), (Some(2), Some(2)));
        assert_eq!(state.status, Some(ReportedStatus::Running));
    }

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

    #[test]
    fn a_patch_merges_env_and_command_null_ends_supervision_with_its_settings() {
        let info = AgentInfo {
            id: "a".into(),
            command: Some(vec!["/bin/x".into()]),
            env: Some([("A".to_owned(), "1".to_owned()), ("B".to_owned(), "2".to_owned())].into()),
            restart: Some(crate::model::process::RestartPolicy::Always),
            ..Default::default()
        };
        // RFC 7396: A changes, B goes, C comes; the others stay.
        let patched = AgentChange::of(serde_json::json!({"env": {"A": "9", "B": null, "C": "3"}}))
            .applied_to(&info)
            .unwrap();
        assert_eq!(
            patched.env,
            Some([("A".to_owned(), "9".to_owned()), ("C".to_owned(), "3".to_owned())].into())
        );
        assert_eq!(patched.command, info.command);
        // `command: null` alone ends supervision, and its settings go with it.
        let plain = AgentChange::of(serde_json::json!({"command": null}))
            .applied_to(&info)
            .unwrap();
        assert_eq!((&plain.command, &plain.env, plain.restart), (&None, &None, None));
        assert!(plain.validate().is_ok());
        assert!(crate::model::process::validate_process(&plain).is_ok());
        // …but a setting sent with it is kept, and refused as one without a command.
        let odd = AgentChange::of(serde_json::json!({"command": null, "restart": "never"}))
            .applied_to(&info)
            .unwrap();
        assert!(crate::model::process::validate_process(&odd)
            .unwrap_err()
            .contains("restart"));
    }
}
