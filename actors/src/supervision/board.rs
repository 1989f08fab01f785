//! The process board: each supervised agent's [`ProcessView`] and restart counts, written by
//! its [`AgentProcess`](super::process::AgentProcess) (each writes only its own entry) and
//! read by the admin API's views and `/metrics`, which never wait on an actor for them. It
//! also holds each running tree's [`Meter`]: readers measure a tree's use through it
//! ([`ProcessBoard::measure`], the policy in [`super::usage`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use chrono::Utc;

use super::limits::Usage;
use super::usage::{self, Meter};
use crate::model::process::{ExitReason, ProcessState, ProcessUsage, ProcessView};

/// One agent's entry.
#[derive(Debug, Clone)]
pub struct BoardEntry {
    pub view: ProcessView,
    /// Restarts by [`ExitReason`] (in [`ExitReason::ALL`] order), since heartbeatd started.
    pub restarts_by_reason: [u64; ExitReason::ALL.len()],
}

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ProcessBoard {
    entries: Arc<RwLock<BTreeMap<String, BoardEntry>>>,
    /// The meter of each agent whose tree is there to measure (from its keeper's start to
    /// the end of the run).
    meters: Arc<RwLock<HashMap<String, Meter>>>,
}

impl ProcessBoard {
    pub fn publish(&self, id: &str, view: ProcessView) {
        if let Ok(mut entries) = self.entries.write() {
            match entries.get_mut(id) {
                Some(entry) => entry.view = view,
                None => {
                    entries.insert(
                        id.to_owned(),
                        BoardEntry {
                            view,
                            restarts_by_reason: [0; ExitReason::ALL.len()],
                        },
                    );
                }
            }
        }
    }

    pub fn count_restart(&self, id: &str, reason: ExitReason) {
        if let Ok(mut entries) = self.entries.write() {
            if let Some(entry) = entries.get_mut(id) {
                let index = ExitReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
                entry.restarts_by_reason[index] += 1;
            }
        }
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(id);
        }
        self.untrack(id);
    }

    /// The agent's view, with its tree's last measured use (not measured now).
    pub fn view(&self, id: &str) -> Option<ProcessView> {
        let mut view = self.entries.read().ok()?.get(id).map(|e| e.view.clone())?;
        view.usage = self.last_usage(id);
        Some(view)
    }

    /// A run of the agent started under `keeper`: its tree is there to measure.
    pub fn track(&self, id: &str, keeper: i32) {
        if let Ok(mut meters) = self.meters.write() {
            meters.insert(id.to_owned(), Meter::new(keeper, Instant::now()));
        }
    }

    /// The run ended: nothing to measure until the next one.
    pub fn untrack(&self, id: &str) {
        if let Ok(mut meters) = self.meters.write() {
            meters.remove(id);
        }
    }

    /// The run's keeper reported the CPU ticks of the processes it reaped so far.
    pub fn reaped_cpu(&self, id: &str, ticks: u64) {
        if let Ok(mut meters) = self.meters.write() {
            if let Some(meter) = meters.get_mut(id) {
                meter.reaped_cpu_ticks = meter.reaped_cpu_ticks.max(ticks);
            }
        }
    }

    /// A sample its process actor took (an agent with limits, every second): readers get it
    /// instead of measuring.
    pub fn record(&self, id: &str, sample: Usage) {
        if let Ok(mut meters) = self.meters.write() {
            if let Some(meter) = meters.get_mut(id) {
                meter.record(sample, Instant::now(), Utc::now());
            }
        }
    }

    /// The agent's last measured use, however old; `None` without a run or a measurement.
    pub fn last_usage(&self, id: &str) -> Option<ProcessUsage> {
        self.meters.read().ok()?.get(id).and_then(Meter::last)
    }

    /// The use of each of these agents' trees, in the order given: measured now where the
    /// last figure is older than [`usage::FRESH_FOR`], the last figure otherwise; `None` for
    /// one with no tree. Blocking (reads `/proc`): call it off the actors' threads.
    pub fn measure(&self, ids: &[String]) -> Vec<Option<ProcessUsage>> {
        let now = Instant::now();
        // Which to measure, claimed under the lock; the reading itself is done without it.
        let mut due: Vec<(usize, i32, Instant, u64)> = Vec::new();
        if let Ok(mut meters) = self.meters.write() {
            for (index, id) in ids.iter().enumerate() {
                if let Some(meter) = meters.get_mut(id) {
                    if meter.claim(now) {
                        due.push((index, meter.keeper, meter.started, meter.reaped_cpu_ticks));
                    }
                }
            }
        }
        if !due.is_empty() {
            let keepers: Vec<(i32, u64)> = due.iter().map(|&(_, keeper, _, reaped)| (keeper, reaped)).collect();
            let samples = usage::measure_trees(&keepers);
            let (at, wall) = (Instant::now(), Utc::now());
            if let Ok(mut meters) = self.meters.write() {
                for ((index, _, started, _), sample) in due.into_iter().zip(samples) {
                    // Only into the run it was taken of (the agent may have restarted since).
                    if let Some(meter) = meters.get_mut(&ids[index]).filter(|m| m.started == started) {
                        meter.record(sample, at, wall);
                    }
                }
            }
        }
        ids.iter().map(|id| self.last_usage(id)).collect()
    }

    /// The process state and restarts of each of `ids` (`None` for one not on the board),
    /// under one read of the board: what a sorted listing orders by, without cloning views.
    pub fn states_of<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Vec<Option<(ProcessState, u64)>> {
        match self.entries.read() {
            Ok(entries) => ids
                .map(|id| entries.get(id).map(|e| (e.view.state, e.view.restarts)))
                .collect(),
            Err(_) => ids.map(|_| None).collect(),
        }
    }

    /// Every entry, by agent id.
    pub fn entries(&self) -> Vec<(String, BoardEntry)> {
        self.entries
            .read()
            .map(|e| e.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Supervised processes per state, in [`ProcessState::ALL`] order.
    pub fn per_state(&self) -> [u64; 7] {
        let mut counts = [0; 7];
        if let Ok(entries) = self.entries.read() {
            for entry in entries.values() {
                let index = ProcessState::ALL
                    .iter()
                    .position(|s| *s == entry.view.state)
                    .unwrap_or(0);
                counts[index] += 1;
            }
        }
        counts
    }
}
