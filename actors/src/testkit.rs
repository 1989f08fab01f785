//! The real actors wired together for tests (this crate's and the HTTP layer's): store in a
//! temp directory, a registry with one agent `a`, stats, manager, worker pool. Built with
//! `cfg(test)` or the `testkit` feature only.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::Logger;

use crate::counters::IngressCounters;
use crate::ingest::pipeline_metrics::PipelineMetrics;
use crate::ingest::queue::IngressQueue;
use crate::ingest::worker::WorkerPool;
use crate::manager::{Manager, ManagerPolicy};
use crate::model::agent::AgentInfo;
use crate::registry::{Registry, RegistrySnapshot};
use crate::stats::Stats;
use crate::store::FileMetadataStore;

/// The actors of one test; the temp directory lives as long as this.
pub struct TestActors {
    pub store: Addr<FileMetadataStore>,
    pub registry: RegistrySnapshot,
    pub queue: Arc<IngressQueue>,
    pub counters: Arc<IngressCounters>,
    pub stats: Addr<Stats>,
    pub manager: Addr<Manager>,
    pub pool: WorkerPool,
    pub log: Logger,
    pub dir: tempfile::TempDir,
}

/// Starts the actors: `workers` threads behind a queue of `queue_capacity`, write-through.
/// Call from inside an actix system (`#[actix_rt::test]`).
pub fn start(workers: usize, queue_capacity: usize) -> TestActors {
    let log = Logger::root(slog::Discard, slog::o!());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut opened = FileMetadataStore::open(dir.path(), log.clone()).expect("store opens");
    let loaded = opened.load_all().expect("store loads");
    let journal = opened.start_journal_writer();
    let store = opened.start();
    let agent = AgentInfo {
        id: "a".into(),
        name: String::new(),
        agent_type: String::new(),
        ..Default::default()
    };
    let registry = Registry::new([agent]).expect("valid agent");
    let view = registry.snapshot();
    let queue = IngressQueue::new(queue_capacity);
    let counters = IngressCounters::new();
    let stats = Stats::new(workers, Arc::clone(&counters), Arc::clone(&queue), view.clone()).start();
    let policy = ManagerPolicy {
        history_len: 1440,
        flush_interval: Duration::ZERO,
        checkpoint_interval: Duration::from_secs(3600),
        max_clock_skew: Duration::from_secs(300),
    };
    let manager = Manager::new(
        policy,
        loaded,
        registry.start(),
        view.clone(),
        store.clone(),
        journal,
        log.clone(),
    )
    .start();
    let pool = WorkerPool::start(
        workers,
        manager.clone(),
        stats.clone(),
        PipelineMetrics::new(),
        log.clone(),
    );
    TestActors {
        store,
        registry: view,
        queue,
        counters,
        stats,
        manager,
        pool,
        log,
        dir,
    }
}
