//! The agents the configuration file declares: the file owns them, as supervisord's config
//! owns its programs (`supervisorctl reread` + `update`). At start-up and on SIGHUP, every
//! `[[agents]]` entry replaces the registered record of its id (a new id is added), and an id
//! the file declared last time but no longer does is removed. Agents registered through the
//! API (or by `auto_register`) are the API's: the file never touches them, and the API may not
//! change or delete the file's (409: edit the file and send SIGHUP).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::AgentMap;
use crate::model::agent::AgentInfo;

/// What applying the configuration changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigChanges {
    /// Ids the file declares that were not registered.
    pub added: Vec<String>,
    /// Ids whose record changed, with the keys that changed.
    pub changed: Vec<(String, Vec<String>)>,
    /// The records of the ids the file no longer declares (they were removed).
    pub removed: Vec<AgentInfo>,
    /// Ids registered through the API that the file now declares (the file takes them over).
    pub taken_over: Vec<String>,
}

impl ConfigChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Applies the file's agents `config` to `map`, where `owned` are the ids the file declared
/// last time. Answers the ids the file owns now, and what changed.
pub fn apply(
    map: &mut AgentMap,
    owned: &BTreeSet<String>,
    config: Vec<AgentInfo>,
) -> (BTreeSet<String>, ConfigChanges) {
    let mut changes = ConfigChanges::default();
    let now_owned: BTreeSet<String> = config.iter().map(|info| info.id.clone()).collect();
    for info in config {
        match map.get(&info.id) {
            None => changes.added.push(info.id.clone()),
            Some(current) if **current == info => continue,
            Some(current) => {
                if !owned.contains(&info.id) {
                    changes.taken_over.push(info.id.clone());
                }
                changes.changed.push((info.id.clone(), changed_keys(current, &info)));
            }
        }
        map.insert(info.id.clone(), Arc::new(info));
    }
    for id in owned.difference(&now_owned) {
        if let Some(gone) = map.remove(id) {
            changes.removed.push(Arc::unwrap_or_clone(gone));
        }
    }
    (now_owned, changes)
}

/// The keys whose values differ between two records of one agent.
pub fn changed_keys(before: &AgentInfo, after: &AgentInfo) -> Vec<String> {
    let as_map = |info: &AgentInfo| match serde_json::to_value(info) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (as_map(before), as_map(after));
    let mut keys: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, command: Option<&str>) -> AgentInfo {
        AgentInfo {
            id: id.into(),
            command: command.map(|c| vec![c.to_owned()]),
            ..Default::default()
        }
    }

    fn map(agents: &[AgentInfo]) -> AgentMap {
        agents.iter().map(|a| (a.id.clone(), Arc::new(a.clone()))).collect()
    }

    #[test]
    fn the_file_adds_changes_and_removes_its_own_agents_and_leaves_the_apis_alone() {
        let mut agents = map(&[
            info("kept", Some("/a")),
            info("edited", Some("/old")),
            info("dropped", None),
            info("from-api", None),
        ]);
        let owned: BTreeSet<String> = ["kept", "edited", "dropped"].map(String::from).into();
        let config = vec![
            info("kept", Some("/a")),
            info("edited", Some("/new")),
            info("fresh", None),
        ];

        let (now_owned, changes) = apply(&mut agents, &owned, config);

        assert_eq!(now_owned, ["edited", "fresh", "kept"].map(String::from).into());
        assert_eq!(changes.added, ["fresh"]);
        assert_eq!(changes.changed, [("edited".to_owned(), vec!["command".to_owned()])]);
        assert_eq!(
            changes.removed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["dropped"]
        );
        assert!(agents.contains_key("from-api"), "the API's agents are not the file's");
        assert_eq!(agents["edited"].command, Some(vec!["/new".to_owned()]));
        assert!(!agents.contains_key("dropped"));
        assert!(changes.taken_over.is_empty());

        // An id registered through the API that the file now declares: the file takes it.
        let (_, again) = apply(&mut agents, &now_owned, vec![info("from-api", Some("/x"))]);
        assert_eq!(again.taken_over, ["from-api"]);
    }
}
