//! Supervision: heartbeatd runs the agents that have a `command`, restarts them when they
//! die, go silent or overrun their resources, and leaves no process of theirs behind.
//!
//! | module | what |
//! |---|---|
//! | [`machine`] | the state machine: every decision as (state, event) → (state, effects), without processes or time |
//! | [`limits`] | sampling a tree's CPU and memory (how they are counted), and whether a limit held for `limit_for_s` |
//! | [`process`] | [`process::AgentProcess`], one actor per supervised agent (owned by the Manager): its state machine, backoff, restart intensity, limits, stop |
//! | [`restart`] | the restart rules as plain functions: backoff with jitter, the intensity window |
//! | [`adoption`] | at start-up, taking over the keepers the previous heartbeatd left running (`adopt_timeout_s`): connecting, checking the peer, the handshake (the keeper's side is heartbeatd-keep's) |
//! | [`keeper`] | the keeper process between heartbeatd and each agent's tree: heartbeatd's side (the keeper itself is the heartbeatd-keep crate) |
//! | [`reaper`] | heartbeatd as a child subreaper, and the thread that reaps its children |
//! | [`procfs`] | reading `/proc`: process trees, CPU ticks, resident and proportional memory (heartbeatd-keep's) |
//! | [`output_log`] | `data_dir/logs/<id>.log`: whole lines, buffered, rotated, opened again when removed (heartbeatd-keep's) |
//! | [`output_read`] | reading an output file by byte offset, across rotations |
//! | [`board`] | each supervised agent's process view and restart counts, for the API and `/metrics` |
//! | [`usage`] | measured use of each tree for the API and `/metrics`: when it is measured (every second with limits, on read without), CPU as a rate |

pub mod adoption;
pub mod board;
pub mod keeper;
pub mod limits;
pub mod machine;
pub mod output_read;
pub mod process;
pub mod reaper;
pub mod restart;
pub mod usage;

pub use heartbeatd_keep::{output_log, procfs};
