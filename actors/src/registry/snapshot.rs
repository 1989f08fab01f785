//! The registry's read side: the published [`AgentSet`] (agents by id, and their ids sorted
//! for paging), the [`RegistrySnapshot`] handle the HTTP layer and the actors read it through
//! with one atomic load, and the candidate walk a listing pages with.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Registry;
use crate::model::agent::AgentInfo;

/// Each agent boxed: the map is cloned for every published change, and a table of 100k
/// 400-byte entries (sized to the next power of two) would cost more than the agents.
pub(super) type AgentMap = HashMap<String, Arc<AgentInfo>>;

/// The published registry: agents by id, and their ids in order (for paging without sorting
/// 100k ids per request; rebuilt only when the registry changes).
#[derive(Debug, Default)]
pub struct AgentSet {
    pub(super) by_id: AgentMap,
    sorted_ids: Vec<String>,
}

impl AgentSet {
    pub(super) fn new(by_id: AgentMap) -> Self {
        let mut sorted_ids: Vec<String> = by_id.keys().cloned().collect();
        sorted_ids.sort_unstable();
        Self { by_id, sorted_ids }
    }

    pub fn get(&self, id: &str) -> Option<&AgentInfo> {
        self.by_id.get(id).map(|info| &**info)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every agent, by id.
    pub fn values(&self) -> impl Iterator<Item = &AgentInfo> {
        self.by_id.values().map(|info| &**info)
    }

    /// Ids sorted, starting after `after` (all when `None`).
    pub fn ids_after(&self, after: Option<&str>) -> &[String] {
        let start = after.map_or(0, |after| self.sorted_ids.partition_point(|id| id.as_str() <= after));
        &self.sorted_ids[start..]
    }

    /// The ids after `after` that start with `prefix` and are of `agent_type`, in order: at most
    /// `want` of them, from at most `scan_budget` ids looked at. The run of ids with the prefix
    /// is found by binary search; only the type is checked id by id, so one call costs at most
    /// `scan_budget` lookups however large the registry (a `?type=nomatch` on a million agents
    /// is a page that ends early, not a walk of the million).
    pub fn candidates(&self, filter: &CandidateFilter<'_>, want: usize, scan_budget: usize) -> Candidates {
        let after_start = filter
            .after
            .map_or(0, |after| self.sorted_ids.partition_point(|id| id.as_str() <= after));
        let prefix_start = self.sorted_ids.partition_point(|id| id.as_str() < filter.prefix);
        let start = after_start.max(prefix_start);
        let mut ids = Vec::new();
        for (looked, id) in self.sorted_ids[start..].iter().enumerate() {
            if !id.starts_with(filter.prefix) {
                break;
            }
            if looked > 0 && (ids.len() >= want || looked >= scan_budget) {
                // Stopped with ids left: the next call goes on after the last one looked at.
                let resume_after = self.sorted_ids[start + looked - 1].clone();
                return Candidates {
                    ids,
                    resume_after: Some(resume_after),
                };
            }
            let of_type = filter
                .agent_type
                .is_none_or(|t| self.by_id.get(id).is_some_and(|info| info.agent_type == t));
            if of_type {
                ids.push(id.clone());
            }
        }
        Candidates {
            ids,
            resume_after: None,
        }
    }
}

/// What a listing keeps: ids after `after`, starting with `prefix` (`""`: all), of
/// `agent_type` (`None`: any).
#[derive(Debug, Default, Clone, Copy)]
pub struct CandidateFilter<'a> {
    pub after: Option<&'a str>,
    pub prefix: &'a str,
    pub agent_type: Option<&'a str>,
}

/// The ids a listing found, and where the next call goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    pub ids: Vec<String>,
    /// `Some(id)`: the walk stopped (enough found, or its budget spent) with ids left after
    /// `id`; `None`: none is left.
    pub resume_after: Option<String>,
}

/// A read-only view of the registry, cheap to clone and to query from any thread.
#[derive(Debug, Clone)]
pub struct RegistrySnapshot {
    current: Arc<ArcSwap<AgentSet>>,
}

impl RegistrySnapshot {
    pub fn contains(&self, id: &str) -> bool {
        self.current.load().contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<AgentInfo> {
        self.current.load().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole set as it is now (it never changes; a change publishes a new one).
    pub fn load(&self) -> Arc<AgentSet> {
        self.current.load_full()
    }
}

impl Registry {
    /// The read side, for the HTTP layer and the Manager.
    pub fn snapshot(&self) -> RegistrySnapshot {
        RegistrySnapshot {
            current: Arc::clone(&self.published),
        }
    }
}
