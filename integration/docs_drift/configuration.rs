//! `docs/configuration.md` (and the supervision keys in `docs/supervision.md`) against the
//! `Settings` and `AgentInfo` types: every key, its environment variable, its default and its
//! bounds.

use heartbeatd::settings::{self, Overrides, Settings, ENV_KEYS};
use heartbeatd_actors::model::agent::AgentInfo;

use super::markdown::{code_spans, table_rows, Page};

/// The keys a type takes, read from serde's refusal of an unknown one ("expected one of …").
fn keys_of(refusal: String) -> Vec<String> {
    let list = refusal
        .split("expected one of")
        .nth(1)
        .unwrap_or_else(|| panic!("not a list of keys: {refusal}"));
    code_spans(list)
}

fn settings_keys() -> Vec<String> {
    keys_of(toml::from_str::<Settings>("no_such_key_ = 1").unwrap_err().to_string())
}

fn agent_keys() -> Vec<String> {
    keys_of(
        serde_json::from_str::<AgentInfo>(r#"{"id": "a", "no_such_key_": 1}"#)
            .unwrap_err()
            .to_string(),
    )
}

/// The keys documented in the first column of `text`'s tables (`[[agents]]` as `agents`).
fn documented_keys(text: &str) -> Vec<(String, Vec<String>)> {
    table_rows(text)
        .into_iter()
        .flat_map(|row| {
            code_spans(&row[0])
                .into_iter()
                .map(|k| k.trim_start_matches("[[").trim_end_matches("]]").to_owned())
                .map(move |k| (k, row.clone()))
        })
        .collect()
}

#[test]
fn every_configuration_key_its_variable_and_its_default_are_documented() {
    let configuration = Page::read("docs/configuration.md");
    let supervision = Page::read("docs/supervision.md");
    let keys_table = configuration.section("keys");
    let documented = documented_keys(&keys_table);
    let settings = settings_keys();
    let agent = agent_keys();
    assert!(
        settings.len() >= 35 && settings.contains(&"grace_s".to_owned()),
        "{settings:?}"
    );
    assert!(agent.contains(&"command".to_owned()), "{agent:?}");

    for key in &settings {
        assert!(
            documented.iter().any(|(k, _)| k == key),
            "docs/configuration.md#keys has no row for `{key}`"
        );
    }
    let agent_documented = [documented_keys(&configuration.text), documented_keys(&supervision.text)].concat();
    for key in &agent {
        assert!(
            agent_documented.iter().any(|(k, _)| k == key),
            "no row for the agent key `{key}` in docs/configuration.md or docs/supervision.md"
        );
    }
    for (key, _) in &documented {
        assert!(
            settings.contains(key),
            "docs/configuration.md#keys documents `{key}`, which the code does not take"
        );
    }
    for key in ENV_KEYS {
        let variable = format!("HEARTBEATD_{}", key.to_uppercase());
        assert!(
            configuration.text.contains(&variable),
            "docs/configuration.md does not name {variable}"
        );
    }

    // A default given as one value must be the code's.
    let defaults = serde_json::to_value(
        settings::load(None, Vec::new(), &Overrides::default())
            .unwrap()
            .settings,
    )
    .unwrap();
    let mut compared = 0;
    for (key, row) in &documented {
        let spans = code_spans(&row[1]);
        let (Some(default), [value]) = (defaults.get(key), spans.as_slice()) else {
            continue;
        };
        let code = match default {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        assert_eq!(value, &code, "docs/configuration.md: the default of `{key}`");
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} defaults compared");
}

/// Whether the settings take `value` for `key` (given as its environment variable, so every
/// scalar key can be tried alone).
fn accepts(key: &str, value: &str) -> bool {
    let env = vec![(format!("HEARTBEATD_{}", key.to_uppercase()), value.to_owned())];
    settings::load(None, env, &Overrides::default()).is_ok()
}

/// The smallest and largest whole number the settings take for `key`, found by bisection;
/// `None` for a key that is not a number.
fn bounds(key: &str) -> Option<(u64, u64)> {
    if accepts(key, "abc") {
        return None;
    }
    let start = [1u64, 0, 10, 1000].into_iter().find(|v| accepts(key, &v.to_string()))?;
    let (mut refused, mut taken) = (0u64, start);
    let min = if accepts(key, "0") {
        0
    } else {
        while taken - refused > 1 {
            let mid = refused + (taken - refused) / 2;
            if accepts(key, &mid.to_string()) {
                taken = mid;
            } else {
                refused = mid;
            }
        }
        taken
    };
    let (mut taken, mut refused) = (start, 1u64 << 62);
    assert!(!accepts(key, &refused.to_string()), "{key} takes any number");
    while refused - taken > 1 {
        let mid = taken + (refused - taken) / 2;
        if accepts(key, &mid.to_string()) {
            taken = mid;
        } else {
            refused = mid;
        }
    }
    Some((min, taken))
}

/// The first two whole numbers written in `cell` (`1–604800 (7 days)` gives 1 and 604800).
fn documented_bounds(cell: &str) -> Option<(u64, u64)> {
    let numbers: Vec<u64> = cell
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .filter_map(|n| n.parse().ok())
        .collect();
    (numbers.len() >= 2).then(|| (numbers[0], numbers[1]))
}

#[test]
fn every_numeric_key_has_the_bounds_the_code_enforces() {
    let configuration = Page::read("docs/configuration.md");
    let documented = documented_keys(&configuration.section("keys"));
    let mut compared = 0;
    for key in ENV_KEYS {
        let Some(code) = bounds(key) else { continue };
        let (_, row) = documented
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("docs/configuration.md#keys has no row for `{key}`"));
        assert_eq!(
            documented_bounds(&row[2]),
            Some(code),
            "docs/configuration.md#keys: the bounds of `{key}` (the code takes {}–{})",
            code.0,
            code.1
        );
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} numeric keys found");
}

#[test]
fn the_reload_table_names_exactly_the_keys_a_sighup_applies() {
    let section = Page::read("docs/operations.md").section("reloading-sighup");
    let documented: Vec<String> = documented_keys(&section).into_iter().map(|(k, _)| k).collect();
    for key in heartbeatd::reload::RELOADABLE_KEYS {
        assert!(
            documented.iter().any(|k| k == key),
            "docs/operations.md#reloading-sighup does not say what SIGHUP does to `{key}`"
        );
    }
    for key in &documented {
        assert!(
            heartbeatd::reload::RELOADABLE_KEYS.contains(&key.as_str()),
            "docs/operations.md#reloading-sighup says SIGHUP applies `{key}`, which it does not"
        );
    }
}
