//! The process board: each supervised agent's [`ProcessView`] and restart counts, written by
//! its [`AgentProcess`](super::process::AgentProcess) (each writes only its own entry) and
//! read by the admin API's views and `/metrics`, which never wait on an actor for them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::model::process::{ExitReason, ProcessState, ProcessView};

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
    }

    pub fn view(&self, id: &str) -> Option<ProcessView> {
        self.entries.read().ok()?.get(id).map(|e| e.view.clone())
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
