//! The way in: from an accepted HTTP request to the Manager.
//!
//! ```text
//!  HTTP handler ──queue.try_acquire()──▶ handoff (per-thread batch + merged permit)
//!       └──try_send(ProcessHeartbeats)──▶ HeartbeatWorker × workers (SyncArbiter) ──▶ Manager
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`queue`] | [`queue::IngressQueue`]: the bounded in-flight count that makes the SyncArbiter's unbounded mailbox a bounded queue (actix's `try_send` never reports Full for it) |
//! | [`handoff`] | per-HTTP-thread batching of accepted heartbeats, flushed after one yield |
//! | [`worker`] | the worker pool: applies a batch through the Manager, counts it for Stats |
//! | [`pipeline_metrics`] | queue-wait and processing histograms for `/metrics` |

pub mod handoff;
pub mod pipeline_metrics;
pub mod queue;
pub mod worker;
