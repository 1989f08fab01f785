//! Liveness as data: the states an agent can be in, a change of state, and the timing that
//! decides when it happens. Shared by Liveness (which decides), the Store (which records
//! transitions), the Webhook (which posts them) and the API (which shows them).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::heartbeat::ReportedStatus;

/// How many liveness states there are.
pub const STATUS_COUNT: usize = 6;

/// An agent's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    New,
    Up,
    Late,
    Down,
    /// An operator paused it: no transitions until resumed.
    Paused,
    /// heartbeatd does not run its program on purpose (stopped by an operator, exited as its
    /// restart policy says, or `fatal`, which has its own alert): not judged, never `down`.
    Stopped,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; STATUS_COUNT] =
        [Self::New, Self::Up, Self::Late, Self::Down, Self::Paused, Self::Stopped];

    pub fn name(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Up => "up",
            Self::Late => "late",
            Self::Down => "down",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }
}

/// One change of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub agent_id: String,
    pub from: AgentStatus,
    pub to: AgentStatus,
    pub at: DateTime<Utc>,
    /// The server's receive time of the agent's last heartbeat.
    pub last_seen: Option<DateTime<Utc>>,
    /// What the agent last reported about itself.
    pub reported_status: Option<ReportedStatus>,
}

/// An agent's timing: when it counts as late and as down after its last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub grace: Duration,
}

impl Timing {
    pub fn late_after(self) -> Duration {
        self.interval + self.grace / 2
    }

    pub fn down_after(self) -> Duration {
        self.interval + self.grace
    }
}

/// One transition as `events/<id>.log` keeps it and `GET /agents/{id}/events` serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub from: AgentStatus,
    pub to: AgentStatus,
    pub at: DateTime<Utc>,
    /// The server's receive time of the agent's last heartbeat before the transition.
    pub last_seen: Option<DateTime<Utc>>,
    /// The status the agent last reported about itself.
    pub reported_status: Option<ReportedStatus>,
}
