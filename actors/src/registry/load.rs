//! Loading the registry at start-up: `registry.json` read (moved aside if it does not parse),
//! saved timings out of bounds clamped, `registry.log` applied on top (damaged lines skipped),
//! the configuration's agents applied, and the result written back whole.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::persist::LogEntry;
use super::{config_owned, AgentMap, AgentSet, Registry, RegistryError, REGISTRY_FILE, REGISTRY_LOG};
use crate::data_dir;
use crate::model::agent::{is_valid_agent_id, AgentInfo};

/// The content of `registry.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct RegistryFile {
    format_version: u32,
    agents: Vec<AgentInfo>,
    /// The ids the configuration file declared when it was last applied: the file's agents.
    /// (Files written before this rule have `imported_from_config` instead: read as none
    /// owned, so nothing is removed at the first start with the rule.)
    #[serde(default)]
    config_owned: BTreeSet<String>,
}

/// What loading the registry found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RegistryLoad {
    /// Agents read from `registry.json`.
    pub from_file: usize,
    /// What the configuration file's agents changed.
    pub config: config_owned::ConfigChanges,
    /// Set when `registry.json` did not parse and was moved aside to this path.
    pub moved_aside: Option<PathBuf>,
    /// Changes read from `registry.log` (left by the previous run), and its damaged lines.
    pub log_entries: usize,
    pub log_damaged: usize,
    /// Agents whose saved timing was out of bounds (written by an older version), with what
    /// was clamped: loaded with the nearest bound, to be logged as a warning.
    pub clamped: Vec<(String, Vec<String>)>,
}

impl Registry {
    /// Loads `dir/registry.json` (if any), applies the configuration's agents (see
    /// [`config_owned`]), and saves the result.
    pub fn load(
        dir: &Path,
        config_agents: impl IntoIterator<Item = AgentInfo>,
    ) -> Result<(Self, RegistryLoad), RegistryError> {
        let path = dir.join(REGISTRY_FILE);
        let mut report = RegistryLoad::default();
        let file = match data_dir::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<RegistryFile>(&bytes) {
                Ok(file) => file,
                Err(_) => {
                    let aside = dir.join(format!(
                        "{REGISTRY_FILE}.corrupt-{}",
                        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
                    ));
                    fs::rename(&path, &aside).map_err(|e| RegistryError::save_failed(&path, e))?;
                    report.moved_aside = Some(aside);
                    RegistryFile::default()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => RegistryFile::default(),
            Err(e) => {
                return Err(RegistryError::ReadFailed {
                    path,
                    source: Arc::new(e),
                })
            }
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
        apply_change_log(dir, &mut map, &mut report)?;
        let (owned, changes) = config_owned::apply(&mut map, &file.config_owned, config_agents.into_iter().collect());
        report.config = changes;
        let mut registry = Self::with_parts(AgentSet::default(), owned, Some(dir.to_owned()));
        registry.compact(&map)?;
        registry.published.store(Arc::new(AgentSet::new(map)));
        Ok((registry, report))
    }
}

/// Applies `dir/registry.log`, if any, to `map`; a damaged line (a write cut short) is skipped.
fn apply_change_log(dir: &Path, map: &mut AgentMap, report: &mut RegistryLoad) -> Result<(), RegistryError> {
    let path = dir.join(REGISTRY_LOG);
    let bytes = match data_dir::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(RegistryError::ReadFailed {
                path,
                source: Arc::new(e),
            })
        }
    };
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<LogEntry>(line) {
            Ok(LogEntry::Put(mut info)) if is_valid_agent_id(&info.id) => {
                info.clamp_timing();
                map.insert(info.id.clone(), Arc::new(*info));
                report.log_entries += 1;
            }
            Ok(LogEntry::Del(id)) => {
                map.remove(&id);
                report.log_entries += 1;
            }
            Ok(LogEntry::Put(_)) | Err(_) => report.log_damaged += 1,
        }
    }
    Ok(())
}

pub(super) fn build_map(agents: impl IntoIterator<Item = AgentInfo>) -> Result<AgentMap, RegistryError> {
    let mut map = AgentMap::new();
    for info in agents {
        if !is_valid_agent_id(&info.id) {
            return Err(RegistryError::InvalidId(info.id));
        }
        if map.contains_key(&info.id) {
            return Err(RegistryError::Duplicate(info.id));
        }
        map.insert(info.id.clone(), Arc::new(info));
    }
    Ok(map)
}
