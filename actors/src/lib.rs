//! The actors of heartbeatd, and the data they pass between them.
//!
//! Each actor owns its state; nothing else touches it. The flow of heartbeats:
//!
//! ```text
//!  HTTP handler ──try_acquire──▶ IngressQueue (bounded in-flight count)
//!       │ per-thread batch: try_send(ProcessHeartbeats + merged QueuePermit)
//!       ▼
//!  HeartbeatWorker × workers (SyncArbiter threads)
//!       │ send(UpdateHeartbeats), blocks until applied (write-through: journaled)
//!       ▼
//!  Manager ──▶ Registry (who may report; registry.json)      ──▶ Stats (counters)
//!       ├────▶ Liveness (new/up/late/down/paused deadlines)
//!       ├────▶ JournalWriter (journal/: one append + fdatasync per flush, own thread)
//!       └────▶ FileMetadataStore (checkpoints: agents/, history/, events/)
//! ```
//!
//! | actor | module | owns |
//! |---|---|---|
//! | [`worker::HeartbeatWorker`] | `worker` | nothing: one thread of the pool; times the manager update |
//! | [`manager::Manager`] | `manager` | every agent's state in memory, samples and journal records not yet written; the addresses of Registry, Liveness and Store |
//! | [`registry::Registry`] | `registry` | the set of agents allowed to report and `registry.json`; publishes a read-only [`registry::RegistrySnapshot`] |
//! | [`liveness::Liveness`] | `liveness` | each agent's liveness state and deadline |
//! | [`journal_writer::JournalWriter`] | `journal_writer` | the journal segment being appended to ([`journal`]); a thread of its own so flushes never wait behind a checkpoint |
//! | [`store::FileMetadataStore`] | `store` | everything under `data_dir` but `registry.json` and the open journal segment: checkpoints, state files, history logs ([`history_log`]), events |
//! | [`stats::Stats`] | `stats` | the processing counters behind `GET /heartbeat/stats` |
//!
//! Not actors: [`queue::IngressQueue`], the lock-free in-flight count that makes the
//! SyncArbiter's unbounded mailbox a bounded queue (actix's `try_send` never reports Full for
//! it); [`stats::IngressCounters`], [`stats::ManagerCounters`] and [`liveness::StatusCounts`],
//! atomics each written by one owner and read by Stats; [`atomic_file`], crash-safe writes.

pub mod atomic_file;
pub mod counters;
pub mod ingest;
pub mod liveness;
pub mod log_gate;
pub mod log_text;
pub mod manager;
pub mod model;
pub mod registry;
pub mod single_thread;
pub mod stats;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
