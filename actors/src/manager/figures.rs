//! The per-agent figures `/metrics` exports, read from the Manager's state: a scrape of 10k
//! agents must not cost what 10k admin views do.
//!
//! The scrape loads the registry snapshot itself and asks the Manager (figures) and Liveness
//! (states) at the same time, each for the same first `limit` ids; both answer in that order,
//! without ids, so no id is copied and the two lookups run on two threads.

use std::sync::Arc;

use actix::prelude::*;

use super::Manager;
use crate::model::agent::AgentFigures;
use crate::registry::AgentSet;

/// The figures of the first `limit` agents of `agents` (by id), in that order.
#[derive(Message)]
#[rtype(result = "Vec<AgentFigures>")]
pub struct GetAgentFigures {
    /// The registry as the scrape loaded it.
    pub agents: Arc<AgentSet>,
    /// `metrics_agent_limit`: agents past it get no per-agent series.
    pub limit: usize,
}

impl Handler<GetAgentFigures> for Manager {
    type Result = MessageResult<GetAgentFigures>;

    fn handle(&mut self, msg: GetAgentFigures, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            msg.agents
                .ids_after(None)
                .iter()
                .take(msg.limit)
                .map(|id| {
                    let state = self.agents.get(id).map(|entry| &entry.state);
                    AgentFigures {
                        last_seen: state.and_then(|s| s.last_seen),
                        last_cpu: state.and_then(|s| s.last_cpu),
                        last_memory: state.and_then(|s| s.last_memory),
                    }
                })
                .collect(),
        )
    }
}
