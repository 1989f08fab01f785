//! The Stats actor: owns the counters behind `GET /heartbeat/stats`.
//!
//! The seed's five fields keep their meaning and JSON types: `total_received` and
//! `last_received_time` move when a valid heartbeat is accepted; `total_processed` and
//! `average_latency` (integer nanoseconds of the manager update) when a worker finishes one;
//! `total_errors` when processing fails.

use crate::model::process::ProcessState;
use crate::supervision::board::ProcessBoard;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use crate::counters::{IngressCounters, ManagerCounters, StatusCounts};
use crate::ingest::queue::IngressQueue;
use crate::model::liveness::AgentStatus;
use crate::registry::RegistrySnapshot;

/// The answer to `GET /heartbeat/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsReport {
    pub total_received: u64,
    pub total_processed: u64,
    pub total_errors: u64,
    /// RFC 3339; `0001-01-01T00:00:00Z` before the first heartbeat, as Go encodes a zero time.
    #[serde(serialize_with = "go_time")]
    pub last_received_time: Option<DateTime<Utc>>,
    /// Nanoseconds, as Go's `time.Duration` encodes.
    pub average_latency: u64,
    /// Requests to `POST /heartbeat` answered with anything but 200.
    pub total_rejected: u64,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub workers: usize,
    pub agents_registered: usize,
    pub uptime_seconds: u64,
    /// Heartbeats whose journal record is synced since start: each one counted here is on
    /// disk after a `kill -9` and restart.
    pub total_synced: u64,
    /// Failed writes to `data_dir` since start (retried from memory; see the logs).
    pub store_errors: u64,
    /// Heartbeats accepted and held in memory, not yet synced (grows while the disk fails, up
    /// to its bound; then heartbeats get 503).
    pub heartbeats_unsynced: u64,
    /// Damaged records found since start (set aside; see the logs).
    pub damaged_records: u64,
    /// Agents whose clock was off by more than `max_clock_skew_s` (each warned once).
    pub clock_skewed_agents: u64,
    /// Registered agents by liveness state.
    pub agents_by_status: BTreeMap<&'static str, u64>,
    /// Webhook deliveries that failed every try, or were dropped.
    pub webhook_failures: u64,
    /// Supervised agents by process state (all zero without supervised agents).
    pub processes_by_state: BTreeMap<&'static str, u64>,
}

fn go_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => s.serialize_str("0001-01-01T00:00:00Z"),
    }
}

/// Owns the processing counters; reads the ingress counts, queue depth and agent count from
/// their owners' shared views.
pub struct Stats {
    started: Instant,
    workers: usize,
    ingress: Arc<IngressCounters>,
    queue: Arc<IngressQueue>,
    registry: RegistrySnapshot,
    store: Arc<ManagerCounters>,
    statuses: Arc<StatusCounts>,
    webhook_failures: Arc<AtomicU64>,
    processes: ProcessBoard,
    total_processed: u64,
    total_errors: u64,
    total_latency: Duration,
}

impl Stats {
    pub fn new(
        workers: usize,
        ingress: Arc<IngressCounters>,
        queue: Arc<IngressQueue>,
        registry: RegistrySnapshot,
    ) -> Self {
        Self {
            started: Instant::now(),
            workers,
            ingress,
            queue,
            registry,
            store: ManagerCounters::new(),
            statuses: StatusCounts::new(),
            webhook_failures: Arc::default(),
            processes: ProcessBoard::default(),
            total_processed: 0,
            total_errors: 0,
            total_latency: Duration::ZERO,
        }
    }
}

impl Stats {
    /// Reports the Manager's counters.
    pub fn with_manager_counters(mut self, store: Arc<ManagerCounters>) -> Self {
        self.store = store;
        self
    }

    /// Reports the Webhook actor's failures.
    pub fn with_webhook_failures(mut self, failures: Arc<AtomicU64>) -> Self {
        self.webhook_failures = failures;
        self
    }

    /// Reports the supervised agents' process states.
    pub fn with_process_board(mut self, processes: ProcessBoard) -> Self {
        self.processes = processes;
        self
    }

    /// Reports the Liveness actor's per-state counts.
    pub fn with_status_counts(mut self, statuses: Arc<StatusCounts>) -> Self {
        self.statuses = statuses;
        self
    }
}

impl Actor for Stats {
    type Context = Context<Self>;
}

/// A worker finished a batch: `succeeded` heartbeats applied, each having waited `latency` for
/// the manager update; `failed` not applied.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HeartbeatsProcessed {
    pub succeeded: u64,
    pub failed: u64,
    pub latency: Duration,
}

impl Handler<HeartbeatsProcessed> for Stats {
    type Result = ();

    fn handle(&mut self, msg: HeartbeatsProcessed, _: &mut Context<Self>) {
        self.total_processed += msg.succeeded;
        self.total_errors += msg.failed;
        self.total_latency += msg.latency * msg.succeeded as u32;
    }
}

/// Asks for the current figures.
#[derive(Message)]
#[rtype(result = "StatsReport")]
pub struct GetStats;

impl Handler<GetStats> for Stats {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let average_latency = match self.total_processed {
            0 => 0,
            n => (self.total_latency.as_nanos() / u128::from(n)) as u64,
        };
        // Every registered agent is in exactly one state: those Liveness has not heard of
        // (registered, never seen) are `new`, so the states always add up to the registered.
        let registered = self.registry.len() as u64;
        let mut by_status: Vec<(&'static str, u64)> = AgentStatus::ALL
            .iter()
            .map(|s| (s.name(), self.statuses.get(*s)))
            .collect();
        let seen: u64 = by_status
            .iter()
            .filter(|(name, _)| *name != "new")
            .map(|(_, n)| n)
            .sum();
        for (name, n) in &mut by_status {
            if *name == "new" {
                *n = registered.saturating_sub(seen);
            }
        }
        MessageResult(StatsReport {
            total_received: self.ingress.received.load(Ordering::Relaxed),
            total_processed: self.total_processed,
            total_errors: self.total_errors,
            last_received_time: self.ingress.last_received(),
            average_latency,
            total_rejected: self.ingress.rejected_total(),
            queue_depth: self.queue.depth(),
            queue_capacity: self.queue.capacity(),
            workers: self.workers,
            agents_registered: self.registry.len(),
            uptime_seconds: self.started.elapsed().as_secs(),
            total_synced: self.store.heartbeats_synced(),
            store_errors: self.store.store_errors(),
            heartbeats_unsynced: self.store.unsynced(),
            damaged_records: self.store.damaged_records(),
            clock_skewed_agents: self.store.skewed_agents(),
            agents_by_status: by_status.into_iter().collect(),
            webhook_failures: self.webhook_failures.load(Ordering::Relaxed),
            processes_by_state: ProcessState::ALL
                .iter()
                .map(|s| s.name())
                .zip(self.processes.per_state())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::RejectReason;
    use crate::registry::Registry;

    #[actix_rt::test]
    async fn counts_and_averages_like_the_seed() {
        let registry = Registry::new([]).unwrap();
        let ingress = IngressCounters::new();
        let stats = Stats::new(3, ingress.clone(), IngressQueue::new(30), registry.snapshot()).start();

        let empty = stats.send(GetStats).await.unwrap();
        let json = serde_json::to_value(&empty).unwrap();
        assert_eq!(json["last_received_time"], "0001-01-01T00:00:00Z");
        assert_eq!(json["average_latency"], 0);

        let at = DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z").unwrap().to_utc();
        ingress.accepted(at);
        ingress.accepted(at - chrono::Duration::seconds(5));
        ingress.rejected(RejectReason::QueueFull);
        stats.do_send(HeartbeatsProcessed {
            succeeded: 1,
            failed: 0,
            latency: Duration::from_micros(10),
        });
        stats.do_send(HeartbeatsProcessed {
            succeeded: 3,
            failed: 1,
            latency: Duration::from_micros(30),
        });
        let report = stats.send(GetStats).await.unwrap();

        assert_eq!(report.total_received, 2);
        assert_eq!(report.total_processed, 4);
        assert_eq!(report.total_errors, 1);
        assert_eq!(report.total_rejected, 1);
        assert_eq!(report.average_latency, 25_000, "(10 + 3 × 30) / 4 µs");
        assert_eq!(report.workers, 3);
        assert_eq!(report.queue_capacity, 30);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["last_received_time"], "2026-11-24T06:00:00Z",
            "keeps the latest time"
        );
    }
}
