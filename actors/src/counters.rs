//! Counters shared between an owner that writes them and Stats (and `/metrics`, `/readyz`)
//! that read them: relaxed atomics, so the hot paths never send a message to be counted.
//!
//! | counters | written by | read by |
//! |---|---|---|
//! | [`IngressCounters`] | the HTTP layer, per request | Stats, `/metrics` |
//! | [`ManagerCounters`] | the Manager | Stats, `/readyz`, `/metrics` |
//! | [`StatusCounts`] | Liveness, on each transition | Stats, `/metrics` |

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::model::liveness::{AgentStatus, STATUS_COUNT};

/// Why a `POST /heartbeat` was not accepted (the `reason` label of the rejected counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Unreadable or invalid body.
    Invalid,
    UnknownAgent,
    QueueFull,
    Stopping,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [Self::Invalid, Self::UnknownAgent, Self::QueueFull, Self::Stopping];

    pub fn label(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::UnknownAgent => "unknown_agent",
            Self::QueueFull => "queue_full",
            Self::Stopping => "stopping",
        }
    }
}

/// The counts the HTTP layer keeps: one relaxed atomic add per request instead of a message
/// (a message per request would wake the Stats actor's thread 100k times a second). The HTTP
/// layer writes them; Stats only reads them.
#[derive(Debug, Default)]
pub struct IngressCounters {
    pub(crate) received: AtomicU64,
    /// By [`RejectReason`].
    rejected: [AtomicU64; 4],
    /// Nanoseconds since the Unix epoch of the latest accepted heartbeat; 0 for none.
    last_received_ns: AtomicI64,
}

impl IngressCounters {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A valid heartbeat was accepted into the worker queue (answered 200) at `at`.
    pub fn accepted(&self, at: DateTime<Utc>) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if let Some(ns) = at.timestamp_nanos_opt() {
            self.last_received_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// A request to `POST /heartbeat` was answered with an error status.
    pub fn rejected(&self, reason: RejectReason) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests rejected for `reason`.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn rejected_total(&self) -> u64 {
        RejectReason::ALL.iter().map(|r| self.rejected_for(*r)).sum()
    }

    pub(crate) fn last_received(&self) -> Option<DateTime<Utc>> {
        match self.last_received_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(DateTime::from_timestamp_nanos(ns)),
        }
    }
}

/// What the Manager counts for Stats and `/readyz`: written by the Manager only.
#[derive(Debug, Default)]
pub struct ManagerCounters {
    /// Failed journal appends and checkpoints (each retried from memory).
    store_errors: AtomicU64,
    /// Damaged records found: unparseable state files and journal or history lines.
    damaged_records: AtomicU64,
    /// Set while writes to `data_dir` fail (cleared by the next write that works).
    store_failing: std::sync::atomic::AtomicBool,
    /// Agents whose clock was found off by more than `max_clock_skew_s`.
    skewed_agents: AtomicU64,
    /// Heartbeats whose journal record is written and synced (`fdatasync` returned). The
    /// durability promise is stated in it: every heartbeat counted here before a `kill -9` is
    /// on disk after the restart. Counted after the sync, never before.
    synced: AtomicU64,
    /// Heartbeats accepted whose journal record is held in memory, not yet synced: a few
    /// flush intervals' worth, or all since the disk began to fail.
    unsynced: AtomicU64,
    /// See [`ManagerCounters::backlog_full`]; fixed at start ([`MAX_UNSYNCED_ENV`] in tests).
    max_unsynced: AtomicU64,
}

/// While writes to `data_dir` fail, at most this many heartbeats are held in memory (about
/// 170 bytes each: some 45 MB); past it heartbeats get 503 until the disk works again, rather
/// than grow memory until the OOM killer takes everything not yet synced.
pub const MAX_UNSYNCED_WHILE_FAILING: u64 = 262_144;
/// A test hook: a smaller [`MAX_UNSYNCED_WHILE_FAILING`], so a test reaches it with a few
/// heartbeats.
pub const MAX_UNSYNCED_ENV: &str = "HEARTBEATD_TEST_MAX_UNSYNCED";

impl ManagerCounters {
    pub fn new() -> Arc<Self> {
        let max = std::env::var(MAX_UNSYNCED_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(MAX_UNSYNCED_WHILE_FAILING);
        Arc::new(Self {
            max_unsynced: AtomicU64::new(max),
            ..Self::default()
        })
    }

    /// Heartbeats held in memory, not yet synced (the Manager sets it after each change).
    pub fn set_unsynced(&self, records: u64) {
        self.unsynced.store(records, Ordering::Relaxed);
    }

    pub fn unsynced(&self) -> u64 {
        self.unsynced.load(Ordering::Relaxed)
    }

    /// Writes to `data_dir` fail and [`MAX_UNSYNCED_WHILE_FAILING`] heartbeats wait in memory:
    /// new heartbeats are refused (503) until the disk works again. Every heartbeat already
    /// answered 200 stays held and is written then.
    pub fn backlog_full(&self) -> bool {
        self.store_failing() && self.unsynced() >= self.max_unsynced.load(Ordering::Relaxed)
    }

    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
        self.store_failing.store(true, Ordering::Relaxed);
    }

    pub fn store_ok(&self) {
        self.store_failing.store(false, Ordering::Relaxed);
    }

    /// Whether the last write to `data_dir` failed.
    pub fn store_failing(&self) -> bool {
        self.store_failing.load(Ordering::Relaxed)
    }

    pub fn skewed_agent(&self) {
        self.skewed_agents.fetch_add(1, Ordering::Relaxed);
    }

    pub fn skewed_agents(&self) -> u64 {
        self.skewed_agents.load(Ordering::Relaxed)
    }

    pub fn damaged(&self, records: u64) {
        self.damaged_records.fetch_add(records, Ordering::Relaxed);
    }

    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::Relaxed)
    }

    pub fn damaged_records(&self) -> u64 {
        self.damaged_records.load(Ordering::Relaxed)
    }

    /// `heartbeats` more journal records are synced.
    pub fn synced(&self, heartbeats: u64) {
        self.synced.fetch_add(heartbeats, Ordering::Relaxed);
    }

    /// Heartbeats synced to the journal since start.
    pub fn heartbeats_synced(&self) -> u64 {
        self.synced.load(Ordering::Relaxed)
    }
}

/// Per-state agent counts, published for Stats (written by Liveness only).
#[derive(Debug, Default)]
pub struct StatusCounts {
    counts: [AtomicU64; STATUS_COUNT],
}

impl StatusCounts {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Count of `status`.
    pub fn get(&self, status: AgentStatus) -> u64 {
        self.counts[status as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn store(&self, status: AgentStatus, value: u64) {
        self.counts[status as usize].store(value, Ordering::Relaxed);
    }
}

/// Each agent's liveness transitions since heartbeatd started, by the state entered (written by
/// Liveness only, read by `/metrics` for `heartbeatd_agent_transitions_total`, which the
/// shipped `HeartbeatAgentFlapping` alert counts over 15 minutes). Bounded by the registered
/// agents: a deleted agent's counts go with it.
#[derive(Debug, Default)]
pub struct TransitionCounts {
    by_agent: std::sync::Mutex<std::collections::HashMap<String, [u64; STATUS_COUNT]>>,
}

impl TransitionCounts {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn count(&self, agent_id: &str, to: AgentStatus) {
        if let Ok(mut by_agent) = self.by_agent.lock() {
            match by_agent.get_mut(agent_id) {
                Some(counts) => counts[to as usize] += 1,
                None => {
                    let mut counts = [0; STATUS_COUNT];
                    counts[to as usize] = 1;
                    by_agent.insert(agent_id.to_owned(), counts);
                }
            }
        }
    }

    pub(crate) fn forget(&self, agent_id: &str) {
        if let Ok(mut by_agent) = self.by_agent.lock() {
            by_agent.remove(agent_id);
        }
    }

    /// The agent's counts, by [`AgentStatus`] (in `AgentStatus::ALL` order); `None` if it never
    /// changed state.
    pub fn of(&self, agent_id: &str) -> Option<[u64; STATUS_COUNT]> {
        self.by_agent.lock().ok()?.get(agent_id).copied()
    }

    /// [`of`](Self::of) for each of `agent_ids`, under one lock (a scrape reads 10k at once).
    pub fn of_each<'a>(&self, agent_ids: impl Iterator<Item = &'a str>) -> Vec<Option<[u64; STATUS_COUNT]>> {
        match self.by_agent.lock() {
            Ok(by_agent) => agent_ids.map(|id| by_agent.get(id).copied()).collect(),
            Err(_) => agent_ids.map(|_| None).collect(),
        }
    }
}
