//! A heartbeat that passed validation, as it travels from the HTTP layer to the Manager.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The process state an agent reports about itself (`status` in the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportedStatus {
    Running,
    Stopped,
    Error,
}

impl ReportedStatus {
    /// The accepted wire values, in the order the validation message lists them.
    pub const WIRE_VALUES: [&'static str; 3] = ["running", "stopped", "error"];

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        Self::WIRE_VALUES[self as usize]
    }

    /// Parses the wire value; `None` for anything else.
    pub fn from_wire(value: &str) -> Option<Self> {
        match value {
            "running" => Some(Self::Running),
            "stopped" => Some(Self::Stopped),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// One validated heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub agent_id: String,
    /// The agent's own clock (or the server's, when the agent sent none or an unparseable one).
    pub timestamp: DateTime<Utc>,
    /// When heartbeatd accepted it: the server's clock, never the agent's.
    pub received_at: DateTime<Utc>,
    pub pid: i64,
    /// Percent of one machine, 0 ≤ cpu ≤ 100.
    pub cpu: f64,
    /// Bytes.
    pub memory: u64,
    pub status: Option<ReportedStatus>,
}
