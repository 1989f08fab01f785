//! An agent's state (what the Manager keeps in memory and the Store snapshots to
//! `agents/<id>.json`), its resource samples (what the Store appends to `history/<id>.log`),
//! and the views of it that the admin API and `/metrics` show.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AgentInfo;
use crate::model::heartbeat::{Heartbeat, ReportedStatus};
use crate::model::liveness::AgentStatus;
use crate::model::process::ProcessView;

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

    /// At least how many bytes of JSON the view of `info` takes (every string as written, each
    /// at least once; the fields every view has): a page stops building views once these pass
    /// its bytes, since no more could fit.
    pub fn json_bytes_at_least(info: &AgentInfo) -> usize {
        let command = info
            .command
            .as_ref()
            .map_or(0, |argv| argv.iter().map(|arg| arg.len() + 3).sum::<usize>() + 12);
        MIN_VIEW_JSON_BYTES + info.id.len() + info.name.len() + info.agent_type.len() + command
    }

    /// The memory the built view holds (what a page charges to the budget for it).
    pub fn memory_bytes(&self) -> usize {
        let command = self.command.as_ref().map_or(0, |argv| {
            argv.capacity() * std::mem::size_of::<String>() + argv.iter().map(String::capacity).sum::<usize>()
        });
        let process = self.process.as_ref().map_or(0, |p| {
            p.last_exit
                .as_ref()
                .and_then(|e| e.signal.as_ref())
                .map_or(0, String::capacity)
        });
        std::mem::size_of::<Self>()
            + self.id.capacity()
            + self.name.capacity()
            + self.agent_type.capacity()
            + command
            + process
    }
}

/// The fewest bytes the JSON of a view takes: one with empty name and type, never seen, is
/// about 300 bytes (the field names and nulls).
pub const MIN_VIEW_JSON_BYTES: usize = 250;

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
}
