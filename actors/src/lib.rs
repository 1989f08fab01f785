//! The actors of heartbeatd, and the data they pass between them.
//!
//! Each actor owns its state; nothing else touches it. The flow of one heartbeat:
//!
//! ```text
//!  HTTP handler ──try_acquire──▶ IngressQueue (bounded in-flight count)
//!       │ try_send(ProcessHeartbeat + QueuePermit)
//!       ▼
//!  HeartbeatWorker × workers (SyncArbiter threads)
//!       │ send(UpdateHeartbeat), blocks until the update is on disk
//!       ▼
//!  Manager ──▶ Registry (who may report)      ──▶ Stats (counters)
//!       └────▶ FileMetadataStore (agents/<id>.json, atomic writes)
//! ```
//!
//! | actor | module | owns |
//! |---|---|---|
//! | [`worker::HeartbeatWorker`] | `worker` | nothing: one thread of the pool; times the manager update |
//! | [`manager::Manager`] | `manager` | every agent's metadata and history in memory; the addresses of Registry and Store |
//! | [`registry::Registry`] | `registry` | the set of agents allowed to report; publishes a read-only [`registry::RegistrySnapshot`] |
//! | [`store::FileMetadataStore`] | `store` | the files under `data_dir/agents/` |
//! | [`stats::Stats`] | `stats` | the counters behind `GET /heartbeat/stats` |
//!
//! [`queue::IngressQueue`] is not an actor: it is the lock-free in-flight count that makes the
//! SyncArbiter's unbounded mailbox a bounded queue (actix's `try_send` never reports Full for it).

pub mod agent;
pub mod atomic_file;
pub mod heartbeat;
pub mod history_log;
pub mod journal;
pub mod liveness;
pub mod manager;
pub mod queue;
pub mod ratelimit;
pub mod registry;
pub mod stats;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod worker;
