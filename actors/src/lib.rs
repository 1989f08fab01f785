//! The actors of heartbeatd, and the data they pass between them.
//!
//! Each actor owns its state; nothing else touches it. The flow of heartbeats:
//!
//! ```text
//!  HTTP handler ──try_acquire──▶ ingest::queue (bounded in-flight count)
//!       │ ingest::handoff: per-thread batch, try_send(ProcessHeartbeats + merged permit)
//!       ▼
//!  HeartbeatWorker × workers (SyncArbiter threads)
//!       │ send(UpdateHeartbeats), waits until applied (write-through: journaled)
//!       ▼
//!  Manager ──▶ Registry (who may report: registry.json + registry.log)
//!       ├────▶ Liveness (new/up/late/down/paused) ──▶ Webhook (webhook_url)
//!       │                                         └──▶ Store (events/)
//!       ├────▶ JournalWriter (journal/: one append + fdatasync per flush, own thread)
//!       ├────▶ FileMetadataStore (checkpoints: agents/, history/, events/; own thread)
//!       └────▶ AgentProcess × agents with a `command` ──spawns──▶ keeper ──▶ the agent's tree
//!                 (told of heartbeats and of `down`; events to the Store and the Webhook)
//!  Stats ◀── counters written by the HTTP layer, the Manager and Liveness
//! ```
//!
//! | actor | module | owns |
//! |---|---|---|
//! | [`ingest::worker::HeartbeatWorker`] | `ingest/worker.rs` | nothing: one thread of the pool; times the manager update |
//! | [`manager::Manager`] (the seed's MultiAgentManager) | `manager/` | every agent's state in memory, samples and journal records not yet written; the addresses of Registry, Liveness, JournalWriter and Store |
//! | [`registry::Registry`] (AgentRegistry) | `registry.rs` | every rule about who may report, `registry.json` and `registry.log`; publishes a read-only [`registry::RegistrySnapshot`] |
//! | [`liveness::Liveness`] | `liveness/` | each agent's liveness state and deadline ([`liveness::tracker`]) |
//! | [`notify::webhook::Webhook`] | `notify/webhook.rs` | the deliveries to `webhook_url` in flight |
//! | [`notify::alerter::Alerter`] | `notify/alerter.rs` | the alerts pushed to `alertmanager_url`: the newest state of each, what each URL has yet to hear, `alerts.json` |
//! | [`store::journal_writer::JournalWriter`] | `store/journal_writer.rs` | the journal segment being appended to; a thread of its own so flushes never wait behind a checkpoint |
//! | [`store::FileMetadataStore`] (FileMetadataStore; now the checkpoint store, not the only writer) | `store/` | everything under `data_dir` but the registry files and the open journal segment: checkpoints, state files, history logs, events |
//! | [`stats::Stats`] | `stats.rs` | the processing counters behind `GET /heartbeat/stats` |
//! | [`supervision::process::AgentProcess`] (AgentInstance + MultiHealthChecker) | `supervision/process.rs` | one supervised agent: its running tree (through its keeper), process state, backoff, restart intensity, limits; owned by the Manager |
//!
//! Not actors: [`model`], plain data shared by all; [`counters`], atomics each written by one
//! owner and read by Stats; [`ingest::queue::IngressQueue`], the lock-free in-flight count that
//! makes the SyncArbiter's unbounded mailbox a bounded queue (actix's `try_send` never
//! reports Full for it); [`supervision`]'s keeper (a process, not an actor), reaper thread,
//! `/proc` reader, output files and restart rules; `atomic_file`, crash-safe file replacement for the Store and the
//! Registry; [`data_dir`], how every file under `data_dir` is opened and created (no link
//! followed, private modes, the start-up audit of ownership and permissions); [`log_gate`] and
//! [`log_text`], logging that no client can flood or forge.
//!
//! **The dependency rule.** `model` imports nothing of this crate but itself (and
//! [`log_text`]). [`data_dir`] imports only [`log_gate`]. The file formats (`store::journal`,
//! `store::history_log`, `store::events_log`, `atomic_file`) import only `model` and
//! [`data_dir`], and are private to the crate.
//! Actors import `model`, the formats, `counters`, and the messages of the actors they send
//! to; no module imports a type from a module that imports it back. `src/` (the HTTP layer)
//! imports actors and `model`, never a file format.

pub(crate) mod atomic_file;
pub mod counters;
pub mod data_dir;
pub mod ingest;
pub mod liveness;
pub mod log_gate;
pub mod log_text;
pub mod manager;
pub mod model;
pub mod notify;
pub mod peer_cred;
pub mod registry;
pub(crate) mod single_thread;
pub mod stats;
pub mod store;
pub mod supervision;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
