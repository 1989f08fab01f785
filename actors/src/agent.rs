//! An agent's identity (what the registry knows) and its metadata (what the Manager keeps and
//! the Store persists).

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::heartbeat::{Heartbeat, ReportedStatus};

/// The longest agent id accepted, in bytes.
pub const MAX_AGENT_ID_LEN: usize = 128;

/// True when `id` matches `[A-Za-z0-9._-]{1,128}`.
///
/// The id names a file under `data_dir/agents/`, so this rule is what keeps ids from escaping
/// that directory; `.` and `..` are refused for the same reason.
pub fn is_valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_AGENT_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What the registry knows about an agent: who it is, not how it is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Free text, e.g. `filebeat` or `custom`.
    #[serde(default, rename = "type")]
    pub agent_type: String,
}

/// One point of resource-usage history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResourceSample {
    /// The agent's timestamp for this heartbeat.
    pub time: DateTime<Utc>,
    pub cpu: f64,
    pub memory: u64,
}

/// The version of the on-disk format of [`AgentMetadata`]; bumped on incompatible changes.
pub const METADATA_FORMAT_VERSION: u32 = 1;

/// Everything heartbeatd keeps about one agent: the content of `agents/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentMetadata {
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
    /// Oldest first, at most `history_len` points.
    #[serde(default)]
    pub history: VecDeque<ResourceSample>,
}

impl AgentMetadata {
    /// Fresh metadata for a registered agent that has never reported.
    pub fn new(info: &AgentInfo) -> Self {
        Self {
            format_version: METADATA_FORMAT_VERSION,
            id: info.id.clone(),
            name: info.name.clone(),
            agent_type: info.agent_type.clone(),
            status: None,
            pid: None,
            last_heartbeat: None,
            last_seen: None,
            heartbeat_count: 0,
            history: VecDeque::new(),
        }
    }

    /// Applies one heartbeat; the history keeps the newest `history_len` points.
    pub fn record(&mut self, hb: &Heartbeat, history_len: usize) {
        self.last_heartbeat = Some(hb.timestamp);
        self.last_seen = Some(hb.received_at);
        self.pid = Some(hb.pid);
        if hb.status.is_some() {
            self.status = hb.status;
        }
        self.heartbeat_count += 1;
        while self.history.len() >= history_len.max(1) {
            self.history.pop_front();
        }
        self.history.push_back(ResourceSample {
            time: hb.timestamp,
            cpu: hb.cpu,
            memory: hb.memory,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(n: u64) -> Heartbeat {
        let at = DateTime::from_timestamp(1_700_000_000 + n as i64, 0).unwrap();
        Heartbeat {
            agent_id: "a".into(),
            timestamp: at,
            received_at: at,
            pid: 42,
            cpu: n as f64 % 100.0,
            memory: n,
            status: Some(ReportedStatus::Running),
        }
    }

    #[test]
    fn history_keeps_the_newest_history_len_points() {
        let mut meta = AgentMetadata::new(&AgentInfo {
            id: "a".into(),
            name: String::new(),
            agent_type: String::new(),
        });
        for n in 0..25 {
            meta.record(&heartbeat(n), 10);
        }
        assert_eq!(meta.history.len(), 10);
        assert_eq!(meta.history.front().unwrap().memory, 15);
        assert_eq!(meta.history.back().unwrap().memory, 24);
        assert_eq!(meta.heartbeat_count, 25);
        assert_eq!(meta.last_heartbeat, Some(heartbeat(24).timestamp));
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
