//! Plain data shared by the actors. Nothing here imports an actor: every actor may import
//! from here, and nothing here changes when an actor does.
//!
//! The modules depend in one direction: `heartbeat` ← `liveness`; `process` (a leaf);
//! `events` ← `liveness`, `process`; `agent` ← `heartbeat`, `liveness`, `process`. None
//! imports `agent` or `events`.
//!
//! | module | what |
//! |---|---|
//! | [`agent`] | an agent: who it is ([`agent::AgentInfo`], one record for config, registry and API), its rules (id, timing and label bounds), its state, history samples, the API's view |
//! | [`events`] | one line of an agent's events log: a liveness transition or a process change |
//! | [`heartbeat`] | a validated heartbeat, and the status an agent reports about itself |
//! | [`liveness`] | liveness states, transitions and timing |
//! | [`ordering`] | the orders of a sorted agent listing, and the worst-first severity ranking |
//! | [`process`] | supervised processes: the keys an agent with a `command` adds, their bounds and defaults, process states, exit reasons, the API's view |

pub mod agent;
pub mod events;
pub mod heartbeat;
pub mod liveness;
pub mod ordering;
pub mod process;
