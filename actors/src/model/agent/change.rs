//! A change to an agent's record: [`AgentChange`], a JSON merge patch (RFC 7396).

use serde::Deserialize;

use super::{AgentInfo, SUPERVISION_KEYS};

/// A change to a registered agent: the `PATCH /agents/{id}` body, and what the Manager and
/// the Registry pass on. A JSON merge patch (RFC 7396) on the agent's record: a key sets
/// that field, `null` sets it back to its default (`"command": null` ends supervision), a
/// missing key leaves it as it is. The result must be a valid record: an unknown key or a
/// wrong type is refused, naming the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct AgentChange(pub serde_json::Map<String, serde_json::Value>);

impl AgentChange {
    /// A change of the given fields (for tests and callers in code).
    pub fn of(fields: serde_json::Value) -> Self {
        match fields {
            serde_json::Value::Object(map) => Self(map),
            _ => Self::default(),
        }
    }

    /// Whether it touches any of `keys`.
    pub fn touches(&self, keys: &[&str]) -> bool {
        keys.iter().any(|k| self.0.contains_key(*k))
    }

    /// `info` with the change applied (the bounds not yet checked: see [`AgentInfo::validate`]).
    pub fn applied_to(&self, info: &AgentInfo) -> Result<AgentInfo, String> {
        if let Some(id) = self.0.get("id") {
            if id.as_str() != Some(info.id.as_str()) {
                return Err("id: an agent's id cannot change (delete it and register the new id)".into());
            }
        }
        let serde_json::Value::Object(mut record) = serde_json::to_value(info).map_err(|e| e.to_string())? else {
            return Err("the record is not an object".into());
        };
        // `"command": null` ends supervision: the supervision settings go with it (those the
        // same patch sets are kept, and refused as settings without a command).
        if self.0.get("command").is_some_and(serde_json::Value::is_null) {
            for key in SUPERVISION_KEYS {
                if !self.0.contains_key(key) {
                    record.remove(key);
                }
            }
        }
        for (key, value) in &self.0 {
            merge_patch(record.entry(key.clone()).or_insert(serde_json::Value::Null), value);
            if value.is_null() {
                record.remove(key);
            }
        }
        serde_path_to_error::deserialize(serde_json::Value::Object(record)).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            if path == "." || message.starts_with("unknown field") {
                message
            } else {
                format!("{path}: {message}")
            }
        })
    }
}

/// RFC 7396: an object patch merges into an object, key by key (`null` removes a key); any
/// other value replaces the target. So `{"env": {"A": "1"}}` adds or changes `A` and keeps
/// the other variables, and `{"env": {"B": null}}` removes `B`.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    let Some(fields) = target.as_object_mut() else { return };
    for (key, value) in changes {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(serde_json::Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::agent::validate_process;
    use crate::model::process::RestartPolicy;

    #[test]
    fn a_patch_merges_env_and_command_null_ends_supervision_with_its_settings() {
        let info = AgentInfo {
            id: "a".into(),
            command: Some(vec!["/bin/x".into()]),
            env: Some([("A".to_owned(), "1".to_owned()), ("B".to_owned(), "2".to_owned())].into()),
            restart: Some(RestartPolicy::Always),
            ..Default::default()
        };
        // RFC 7396: A changes, B goes, C comes; the others stay.
        let patched = AgentChange::of(serde_json::json!({"env": {"A": "9", "B": null, "C": "3"}}))
            .applied_to(&info)
            .unwrap();
        assert_eq!(
            patched.env,
            Some([("A".to_owned(), "9".to_owned()), ("C".to_owned(), "3".to_owned())].into())
        );
        assert_eq!(patched.command, info.command);
        // `command: null` alone ends supervision, and its settings go with it.
        let plain = AgentChange::of(serde_json::json!({"command": null}))
            .applied_to(&info)
            .unwrap();
        assert_eq!((&plain.command, &plain.env, plain.restart), (&None, &None, None));
        assert!(plain.validate().is_ok());
        assert!(validate_process(&plain).is_ok());
        // …but a setting sent with it is kept, and refused as one without a command.
        let odd = AgentChange::of(serde_json::json!({"command": null, "restart": "never"}))
            .applied_to(&info)
            .unwrap();
        assert!(validate_process(&odd).unwrap_err().contains("restart"));
    }
}
