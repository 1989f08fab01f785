//! The Registry actor: owns the set of agents allowed to report, and `data_dir/registry.json`.
//!
//! Every change is saved (atomically) and then published as a new immutable
//! [`RegistrySnapshot`] map, so the heartbeat hot path checks `agent_id` with one atomic load
//! and no message round-trip, and a change is visible to readers by the time its message has
//! been answered. A change that cannot be saved is not published.
//!
//! Agents from the config's `[[agents]]` are imported once: at start-up an id the registry has
//! never imported is added; after that the API's changes win (an agent deleted through the API
//! stays deleted, a renamed one keeps its new name).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::prelude::*;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::agent::{is_valid_agent_id, AgentInfo};
use crate::atomic_file::write_atomically;

type AgentMap = HashMap<String, AgentInfo>;

/// The published registry: agents by id, and their ids in order (for paging without sorting
/// 100k ids per request; rebuilt only when the registry changes).
#[derive(Debug, Default)]
pub struct AgentSet {
    by_id: AgentMap,
    sorted_ids: Vec<String>,
}

impl AgentSet {
    fn new(by_id: AgentMap) -> Self {
        let mut sorted_ids: Vec<String> = by_id.keys().cloned().collect();
        sorted_ids.sort_unstable();
        Self { by_id, sorted_ids }
    }

    pub fn get(&self, id: &str) -> Option<&AgentInfo> {
        self.by_id.get(id)
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
        self.by_id.values()
    }

    /// Ids sorted, starting after `after` (all when `None`).
    pub fn ids_after(&self, after: Option<&str>) -> &[String] {
        let start = after.map_or(0, |after| self.sorted_ids.partition_point(|id| id.as_str() <= after));
        &self.sorted_ids[start..]
    }
}

/// The registry's file name under `data_dir`.
pub const REGISTRY_FILE: &str = "registry.json";

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

/// Why a registry change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("agent id {0:?} is invalid: use 1 to 128 characters from A-Z a-z 0-9 . _ -")]
    InvalidId(String),
    #[error("agent {0:?} is already registered")]
    Duplicate(String),
    #[error("agent {0:?} is not registered")]
    NotFound(String),
    /// Entry `index` of a batch is bad; nothing of the batch was registered.
    #[error("entry {index}: {reason}")]
    InvalidEntry { index: usize, reason: String },
    /// A change that breaks the agent rules ([`AgentInfo::validate`]); names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("could not save the registry: {0}")]
    Save(String),
}

/// The content of `registry.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    format_version: u32,
    agents: Vec<AgentInfo>,
    /// Config agents imported once; not imported again (so API deletions stick).
    imported_from_config: BTreeSet<String>,
}

/// What loading the registry found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RegistryLoad {
    /// Agents read from `registry.json`.
    pub from_file: usize,
    /// Config agents added now (first start, or new in the config).
    pub imported: usize,
    /// Set when `registry.json` did not parse and was moved aside to this path.
    pub moved_aside: Option<PathBuf>,
    /// Agents whose saved timing was out of bounds (written by an older version), with what
    /// was clamped: loaded with the nearest bound, to be logged as a warning.
    pub clamped: Vec<(String, Vec<String>)>,
}

/// Owns the agent set; the only writer of the snapshot and of `registry.json`.
///
/// The published map is the only copy: a change builds the next map from it and publishes
/// that (changes are rare admin operations; 100k agents are not worth keeping twice).
pub struct Registry {
    published: Arc<ArcSwap<AgentSet>>,
    imported_from_config: BTreeSet<String>,
    /// `None`: in memory only (tests).
    dir: Option<PathBuf>,
}

impl Registry {
    /// An in-memory registry holding `agents`. Fails on an invalid or duplicate id.
    pub fn new(agents: impl IntoIterator<Item = AgentInfo>) -> Result<Self, RegistryError> {
        Ok(Self {
            published: Arc::new(ArcSwap::from_pointee(AgentSet::new(build_map(agents)?))),
            imported_from_config: BTreeSet::new(),
            dir: None,
        })
    }

    /// Loads `dir/registry.json` (if any), imports the config agents it has never imported,
    /// and saves the result.
    pub fn load(
        dir: &Path,
        config_agents: impl IntoIterator<Item = AgentInfo>,
    ) -> Result<(Self, RegistryLoad), RegistryError> {
        let path = dir.join(REGISTRY_FILE);
        let mut report = RegistryLoad::default();
        let file = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<RegistryFile>(&bytes) {
                Ok(file) => file,
                Err(_) => {
                    let aside = dir.join(format!(
                        "{REGISTRY_FILE}.corrupt-{}",
                        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
                    ));
                    fs::rename(&path, &aside).map_err(|e| RegistryError::Save(format!("{}: {e}", path.display())))?;
                    report.moved_aside = Some(aside);
                    RegistryFile::default()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => RegistryFile::default(),
            Err(e) => return Err(RegistryError::Save(format!("cannot read {}: {e}", path.display()))),
        };
        report.from_file = file.agents.len();
        let mut agents = file.agents;
        for info in &mut agents {
            let changes = info.clamp_timing();
            if !changes.is_empty() {
                report.clamped.push((info.id.clone(), changes));
            }
        }
        let mut map = build_map(agents)?;
        let mut imported = file.imported_from_config;
        for info in config_agents {
            if imported.insert(info.id.clone()) && !map.contains_key(&info.id) {
                map.insert(info.id.clone(), info);
                report.imported += 1;
            }
        }
        let registry = Self {
            published: Arc::new(ArcSwap::from_pointee(AgentSet::default())),
            imported_from_config: imported,
            dir: Some(dir.to_owned()),
        };
        registry.save(&map)?;
        registry.published.store(Arc::new(AgentSet::new(map)));
        Ok((registry, report))
    }

    /// The read side, for the HTTP layer and the Manager.
    pub fn snapshot(&self) -> RegistrySnapshot {
        RegistrySnapshot {
            current: Arc::clone(&self.published),
        }
    }

    fn agents(&self) -> Arc<AgentSet> {
        self.published.load_full()
    }

    fn save(&self, map: &AgentMap) -> Result<(), RegistryError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut agents: Vec<&AgentInfo> = map.values().collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        #[derive(Serialize)]
        struct Out<'a> {
            format_version: u32,
            agents: Vec<&'a AgentInfo>,
            imported_from_config: &'a BTreeSet<String>,
        }
        let bytes = serde_json::to_vec(&Out {
            format_version: 1,
            agents,
            imported_from_config: &self.imported_from_config,
        })
        .map_err(|e| RegistryError::Save(e.to_string()))?;
        fs::create_dir_all(dir).map_err(|e| RegistryError::Save(format!("{}: {e}", dir.display())))?;
        write_atomically(dir, REGISTRY_FILE, &bytes)
            .map_err(|e| RegistryError::Save(format!("{}: {e}", dir.join(REGISTRY_FILE).display())))
    }

    /// Saves and publishes the current map changed by `change`; nothing changes on error.
    fn change<T>(&self, change: impl FnOnce(&mut AgentMap) -> T) -> Result<T, RegistryError> {
        let mut next = self.agents().by_id.clone();
        let result = change(&mut next);
        self.save(&next)?;
        self.published.store(Arc::new(AgentSet::new(next)));
        Ok(result)
    }
}

fn build_map(agents: impl IntoIterator<Item = AgentInfo>) -> Result<AgentMap, RegistryError> {
    let mut map = AgentMap::new();
    for info in agents {
        if !is_valid_agent_id(&info.id) {
            return Err(RegistryError::InvalidId(info.id));
        }
        if map.contains_key(&info.id) {
            return Err(RegistryError::Duplicate(info.id));
        }
        map.insert(info.id.clone(), info);
    }
    Ok(map)
}

impl Actor for Registry {
    type Context = Context<Self>;
}

/// Adds agents, all or none. Answered after the snapshot shows them.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct Register(pub Vec<AgentInfo>);

impl Handler<Register> for Registry {
    type Result = Result<(), RegistryError>;

    fn handle(&mut self, Register(batch): Register, _: &mut Context<Self>) -> Self::Result {
        let current = self.agents();
        let mut seen = BTreeSet::new();
        for (index, info) in batch.iter().enumerate() {
            if !is_valid_agent_id(&info.id) {
                let reason = RegistryError::InvalidId(info.id.clone()).to_string();
                return Err(RegistryError::InvalidEntry { index, reason });
            }
            if let Err(reason) = info.validate_details() {
                return Err(RegistryError::InvalidEntry { index, reason });
            }
            if current.contains_key(&info.id) || !seen.insert(info.id.as_str()) {
                return Err(RegistryError::Duplicate(info.id.clone()));
            }
        }
        self.change(|agents| {
            for info in batch {
                agents.insert(info.id.clone(), info);
            }
        })
    }
}

/// Changes an agent's name, type and/or timing.
#[derive(Message, Default)]
#[rtype(result = "Result<AgentInfo, RegistryError>")]
pub struct UpdateInfo {
    pub id: String,
    pub name: Option<String>,
    pub agent_type: Option<String>,
    pub heartbeat_interval_s: Option<u64>,
    pub grace_s: Option<u64>,
}

impl Handler<UpdateInfo> for Registry {
    type Result = Result<AgentInfo, RegistryError>;

    fn handle(&mut self, msg: UpdateInfo, _: &mut Context<Self>) -> Self::Result {
        let Some(mut info) = self.agents().get(&msg.id).cloned() else {
            return Err(RegistryError::NotFound(msg.id));
        };
        if let Some(name) = msg.name {
            info.name = name;
        }
        if let Some(agent_type) = msg.agent_type {
            info.agent_type = agent_type;
        }
        if msg.heartbeat_interval_s.is_some() {
            info.heartbeat_interval_s = msg.heartbeat_interval_s;
        }
        if msg.grace_s.is_some() {
            info.grace_s = msg.grace_s;
        }
        info.validate_details().map_err(RegistryError::Invalid)?;
        let updated = info.clone();
        self.change(|agents| agents.insert(info.id.clone(), info))?;
        Ok(updated)
    }
}

/// Removes one agent. Answered after the snapshot no longer shows it.
#[derive(Message)]
#[rtype(result = "Result<AgentInfo, RegistryError>")]
pub struct Unregister(pub String);

impl Handler<Unregister> for Registry {
    type Result = Result<AgentInfo, RegistryError>;

    fn handle(&mut self, Unregister(id): Unregister, _: &mut Context<Self>) -> Self::Result {
        if !self.agents().contains_key(&id) {
            return Err(RegistryError::NotFound(id));
        }
        Ok(self
            .change(|agents| agents.remove(&id))?
            .expect("present: checked above"))
    }
}

/// Every registered agent, sorted by id.
#[derive(Message)]
#[rtype(result = "Vec<AgentInfo>")]
pub struct List;

impl Handler<List> for Registry {
    type Result = MessageResult<List>;

    fn handle(&mut self, _: List, _: &mut Context<Self>) -> Self::Result {
        let mut all: Vec<_> = self.agents().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        MessageResult(all)
    }
}

/// How many agents are registered.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Count;

impl Handler<Count> for Registry {
    type Result = usize;

    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize {
        self.agents().len()
    }
}

/// Whether one agent is registered. Hot paths use [`RegistrySnapshot::contains`] instead.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Exists(pub String);

impl Handler<Exists> for Registry {
    type Result = bool;

    fn handle(&mut self, Exists(id): Exists, _: &mut Context<Self>) -> bool {
        self.agents().contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> AgentInfo {
        AgentInfo {
            id: id.into(),
            name: format!("{id} name"),
            agent_type: "custom".into(),
            ..Default::default()
        }
    }

    #[test]
    fn new_refuses_duplicates_and_invalid_ids() {
        assert_eq!(
            Registry::new([info("a"), info("a")]).err(),
            Some(RegistryError::Duplicate("a".into()))
        );
        assert_eq!(
            Registry::new([info("a/b")]).err(),
            Some(RegistryError::InvalidId("a/b".into()))
        );
    }

    #[actix_rt::test]
    async fn changes_are_visible_in_the_snapshot_once_answered() {
        let registry = Registry::new([info("a")]).unwrap();
        let snapshot = registry.snapshot();
        let addr = registry.start();

        assert!(snapshot.contains("a"));
        assert!(!snapshot.contains("b"));

        addr.send(Register(vec![info("b")])).await.unwrap().unwrap();
        assert!(snapshot.contains("b"));
        assert_eq!(addr.send(Count).await.unwrap(), 2);
        assert!(addr.send(Exists("b".into())).await.unwrap());

        let removed = addr.send(Unregister("a".into())).await.unwrap().unwrap();
        assert_eq!(removed, info("a"));
        assert!(!snapshot.contains("a"));
        let ids: Vec<_> = addr.send(List).await.unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(ids, ["b"]);
        assert_eq!(
            addr.send(Unregister("a".into())).await.unwrap(),
            Err(RegistryError::NotFound("a".into()))
        );
    }

    #[actix_rt::test]
    async fn a_batch_registers_all_or_none() {
        let registry = Registry::new([info("a")]).unwrap();
        let snapshot = registry.snapshot();
        let addr = registry.start();

        let bad = addr.send(Register(vec![info("b"), info("c d")])).await.unwrap();
        assert!(
            matches!(bad, Err(RegistryError::InvalidEntry { index: 1, .. })),
            "{bad:?}"
        );
        let dup = addr.send(Register(vec![info("b"), info("a")])).await.unwrap();
        assert_eq!(dup, Err(RegistryError::Duplicate("a".into())));
        let twice = addr.send(Register(vec![info("b"), info("b")])).await.unwrap();
        assert_eq!(twice, Err(RegistryError::Duplicate("b".into())));
        assert!(!snapshot.contains("b"), "nothing of a refused batch is registered");

        addr.send(Register(vec![info("b"), info("c")])).await.unwrap().unwrap();
        assert_eq!(snapshot.len(), 3);
    }

    #[actix_rt::test]
    async fn the_file_keeps_api_changes_and_config_agents_are_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, report) = Registry::load(dir.path(), [info("from-config"), info("also-config")]).unwrap();
        assert_eq!(report.imported, 2);
        let addr = registry.start();
        addr.send(Unregister("from-config".into())).await.unwrap().unwrap();
        addr.send(Register(vec![info("from-api")])).await.unwrap().unwrap();
        let renamed = UpdateInfo {
            id: "also-config".into(),
            name: Some("renamed".into()),
            ..UpdateInfo::default()
        };
        addr.send(renamed).await.unwrap().unwrap();

        // Restart with the same config plus a new agent.
        let (again, report) =
            Registry::load(dir.path(), [info("from-config"), info("also-config"), info("new")]).unwrap();
        let snapshot = again.snapshot();
        assert_eq!(
            report,
            RegistryLoad {
                from_file: 2,
                imported: 1,
                moved_aside: None,
                clamped: Vec::new(),
            }
        );
        assert!(
            !snapshot.contains("from-config"),
            "deleted through the API: stays deleted"
        );
        assert!(snapshot.contains("from-api") && snapshot.contains("new"));
        assert_eq!(
            snapshot.get("also-config").unwrap().name,
            "renamed",
            "the API's change wins"
        );
    }

    #[actix_rt::test]
    async fn timing_out_of_bounds_is_refused_and_an_old_file_is_clamped() {
        let registry = Registry::new([info("a")]).unwrap();
        let addr = registry.start();
        let huge = UpdateInfo {
            id: "a".into(),
            heartbeat_interval_s: Some(i64::MAX as u64),
            ..UpdateInfo::default()
        };
        assert!(
            matches!(addr.send(huge).await.unwrap(), Err(RegistryError::Invalid(m)) if m.starts_with("heartbeat_interval_s"))
        );
        let zero_grace = AgentInfo {
            grace_s: Some(0),
            ..info("b")
        };
        let refused = addr.send(Register(vec![info("c"), zero_grace])).await.unwrap();
        assert!(
            matches!(&refused, Err(RegistryError::InvalidEntry { index: 1, reason }) if reason.starts_with("grace_s")),
            "{refused:?}"
        );

        // A file written before the bounds existed loads, clamped, and says so.
        let dir = tempfile::tempdir().unwrap();
        let old = serde_json::json!({"format_version": 1, "imported_from_config": [],
            "agents": [{"id": "old", "heartbeat_interval_s": 9223372036854775807u64, "grace_s": 0}]});
        fs::write(dir.path().join(REGISTRY_FILE), old.to_string()).unwrap();
        let (loaded, report) = Registry::load(dir.path(), []).unwrap();
        let old = loaded.snapshot().get("old").unwrap();
        assert_eq!(
            (old.heartbeat_interval_s, old.grace_s),
            (Some(crate::agent::MAX_TIMING_S), Some(1))
        );
        assert_eq!(report.clamped.len(), 1, "{report:?}");
    }

    #[test]
    fn a_damaged_registry_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(REGISTRY_FILE), b"{\"format_version\":1,\"agen").unwrap();
        let (registry, report) = Registry::load(dir.path(), [info("a")]).unwrap();
        assert!(report.moved_aside.as_ref().is_some_and(|p| p.exists()), "{report:?}");
        assert!(registry.snapshot().contains("a"));
    }
}
