//! Loading: the file, then the environment, then the command line, into one validated
//! [`Settings`]; what went wrong as a [`SettingsError`] naming the key and where it came from.

use std::path::{Path, PathBuf};

use heartbeatd_actors::model::agent::AgentInfo;

use super::env::{check_env_type, CTL_ENV, ENV_KEYS, ENV_PREFIX};
use super::Settings;

/// Values given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub http_port: Option<u16>,
    pub data_dir: Option<PathBuf>,
}

/// A configuration that cannot be used. Printed as is; exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("configuration error in {origin}: {message}")]
pub struct SettingsError {
    /// The file, or "built-in defaults" when no file was given; env overrides are named too.
    pub origin: String,
    pub message: String,
}

/// Settings plus what the loader noticed but did not refuse.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    /// `HEARTBEATD_*` variables that name no key; logged as warnings once logging is up.
    pub ignored_env: Vec<String>,
    /// `HEARTBEATD_*` variables that were applied.
    pub applied_env: Vec<String>,
}

/// Builds the settings from `file` (if any), the given environment, and `overrides`.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Loaded, SettingsError> {
    let mut origin = match file {
        Some(path) => path.display().to_string(),
        None => "built-in defaults".to_owned(),
    };
    let fail = |origin: &str, message: String| SettingsError {
        origin: origin.to_owned(),
        message,
    };

    let mut builder = config::Config::builder();
    let mut file_agents = Vec::new();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(fail(&origin, "the file does not exist or is not a regular file".into()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(&origin, format!("cannot read it: {e}")))?;
        // `[[agents]]` is read straight into typed entries: the config crate's value tree
        // costs over 2 KB per entry, 230 MB at start-up for a 100k-agent fleet.
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(&origin, syntax_error(&text, &e)))?;
        drop(text);
        if let Some(agents) = table.remove("agents") {
            file_agents = serde_path_to_error::deserialize::<_, Vec<AgentInfo>>(agents)
                .map_err(|e| fail(&origin, format!("agents{}: {}", e.path(), e.inner().message())))?;
        }
        // Types are checked strictly here, before the config crate (which would turn
        // `auto_register = "yes"` into true and `workers = 1.5` into 2).
        if let Err(e) = serde_path_to_error::deserialize::<_, Settings>(toml::Value::Table(table.clone())) {
            return Err(fail(&origin, format!("{}: {}", e.path(), e.inner().message())));
        }
        let rest = toml::to_string(&table).map_err(|e| fail(&origin, e.to_string()))?;
        builder = builder.add_source(config::File::from_str(&rest, config::FileFormat::Toml));
    }

    let mut applied_env = Vec::new();
    let mut ignored_env = Vec::new();
    let mut env: Vec<_> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    env.sort();
    for (name, value) in env {
        let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
        if ENV_KEYS.contains(&key.as_str()) {
            check_env_type(&key, &value).map_err(|reason| fail(&origin, format!("{name}: {key}: {reason}")))?;
            builder = builder
                .set_override(key.as_str(), value)
                .map_err(|e| fail(&origin, e.to_string()))?;
            applied_env.push(name);
        } else if !CTL_ENV.contains(&name.as_str()) {
            ignored_env.push(name);
        }
    }
    if let Some(port) = overrides.http_port {
        builder = builder
            .set_override("http_port", i64::from(port))
            .map_err(|e| fail(&origin, e.to_string()))?;
    }
    if let Some(dir) = &overrides.data_dir {
        builder = builder
            .set_override("data_dir", dir.display().to_string())
            .map_err(|e| fail(&origin, e.to_string()))?;
    }
    if !applied_env.is_empty() {
        origin = format!("{origin} (with {})", applied_env.join(", "));
    }

    let mut settings: Settings = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| fail(&origin, clean_config_message(&e.to_string())))?;
    settings.agents = file_agents;
    settings.validate().map_err(|m| fail(&origin, m))?;
    Ok(Loaded {
        settings,
        ignored_env,
        applied_env,
    })
}

/// A TOML syntax error by line and column, naming the key of the line when it has one, but
/// never quoting the line: it may hold a token.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return format!("TOML syntax error: {}", e.message().trim());
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    let key = line_text
        .split_once('=')
        .map(|(key, _)| key.trim())
        .filter(|key| !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)))
        .map(|key| format!(" (key {key})"))
        .unwrap_or_default();
    format!(
        "TOML syntax error at line {line}, column {column}{key}: {}",
        e.message().trim().replace('\n', "; ")
    )
}

/// The config crate appends the file path to some messages; ours already leads with it.
fn clean_config_message(message: &str) -> String {
    match message.find(" in ") {
        Some(at) if message[at..].contains('/') || message[at..].contains(".toml") => message[..at].to_owned(),
        _ => message.to_owned(),
    }
}
