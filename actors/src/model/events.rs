//! One line of an agent's events log (`events/<id>.log`, `GET /agents/{id}/events`): a
//! liveness transition or a change of its process state. It joins the two kinds, so it
//! imports both `liveness` and `process`, and neither imports it.

use serde::{Deserialize, Serialize};

use crate::model::liveness::EventRecord;
use crate::model::process::ProcessEvent;

/// One line of `events/<id>.log`: a liveness transition or, for a supervised agent, a change
/// of its process state (marked `"kind": "process"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AgentEvent {
    Process(ProcessEvent),
    Liveness(EventRecord),
}
