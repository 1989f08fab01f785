//! Typed settings, layered: built-in defaults → TOML file → `HEARTBEATD_<KEY>` environment
//! variables → command-line flags. Anything wrong is a [`SettingsError`] that names the key
//! and where it came from; the daemon then exits 2 without starting.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use heartbeatd_actors::model::agent::{check_timing, AgentInfo};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override keys.
pub const ENV_PREFIX: &str = "HEARTBEATD_";
/// `HEARTBEATD_*` variables that are not configuration keys but `heartbeatd ctl`'s (an
/// operator may export them in the shell that also starts the daemon): not warned about.
const CTL_ENV: [&str; 2] = ["HEARTBEATD_URL", "HEARTBEATD_CA"];

/// The keys an environment variable may set (every scalar key; `agents` only comes from files).
pub const ENV_KEYS: [&str; 36] = [
    "http_port",
    "http_bind",
    "workers",
    "queue_capacity",
    "data_dir",
    "history_len",
    "log_level",
    "log_format",
    "shutdown_timeout_s",
    "adopt_timeout_s",
    "http_workers",
    "flush_interval_ms",
    "checkpoint_interval_s",
    "auto_register",
    "admin_token",
    "heartbeat_interval_s",
    "grace_s",
    "max_clock_skew_s",
    "metrics_agent_limit",
    "webhook_url",
    "webhook_timeout_ms",
    "webhook_retries",
    "request_timeout_s",
    "max_connections",
    "auto_register_limit",
    "ingest_token",
    "tls_cert",
    "tls_key",
    "alertmanager_url",
    "alert_resend_s",
    "instance_name",
    "allowed_hosts",
    "loopback_admin",
    "control_socket",
    "send_timeout_s",
    "max_agents",
];

/// The daemon's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TCP port of the HTTP server; 0 starts no HTTP server (as in the original).
    #[serde(default)]
    pub http_port: u16,
    /// IP address the HTTP server binds to (checked by [`Settings::bind_ip`]).
    #[serde(default = "default_http_bind")]
    pub http_bind: String,
    /// Threads of the actix-web server that parse and validate requests.
    #[serde(default = "default_http_workers")]
    pub http_workers: usize,
    /// Threads of the heartbeat worker pool.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Heartbeats accepted but not yet processed, at most; beyond it `POST /heartbeat`
    /// answers 503. Default `workers × 1000` (10,000): about 0.1 s of heartbeats at full
    /// speed, room for many of the HTTP layer's batches (up to 256 each), so short stalls of
    /// the Manager on a busy host do not turn into 503s (measured: `workers × 10` answered 61 %
    /// of heartbeats with 503 at 64 connections, `workers × 100` 0.7 % under wrk, this 0).
    #[serde(default)]
    pub queue_capacity: Option<usize>,
    /// Where everything is kept: the registry, the journal, the agents' state and history
    /// files, their events (see the Store).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Resource-history points kept per agent.
    #[serde(default = "default_history_len")]
    pub history_len: usize,
    /// Changed agent state and new history are written at most this often; 0 writes through
    /// (a heartbeat is on disk before it counts as processed). After `kill -9`, at most this
    /// long of heartbeats is lost; a graceful stop loses none.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Per-agent state and history files are brought up to date from memory this often (and at
    /// shutdown); the journal in between holds what they lack. Longer means less writing and
    /// a longer replay after a crash.
    #[serde(default = "default_checkpoint_interval_s")]
    pub checkpoint_interval_s: u64,
    #[serde(default)]
    pub log_level: LogLevel,
    #[serde(default)]
    pub log_format: LogFormat,
    /// How long a graceful stop may take before heartbeatd gives up and exits 1.
    #[serde(default = "default_shutdown_timeout_s")]
    pub shutdown_timeout_s: u64,
    /// How long supervised agents keep running without heartbeatd (a crash, a kill, an
    /// upgrade), waiting for the next one to adopt them; 0: they end with heartbeatd.
    #[serde(default = "default_adopt_timeout_s")]
    pub adopt_timeout_s: u64,
    /// How often agents are expected to report (agents may set their own).
    #[serde(default = "default_heartbeat_interval_s")]
    pub heartbeat_interval_s: u64,
    /// Grace after the interval: late at interval + grace / 2, down at interval + grace.
    /// Default: twice the interval.
    #[serde(default)]
    pub grace_s: Option<u64>,
    /// An agent whose clock is off by more than this is warned about once.
    #[serde(default = "default_max_clock_skew_s")]
    pub max_clock_skew_s: u64,
    /// Per-agent series in `GET /metrics` stop at this many agents (by id); past it a warning
    /// is logged once.
    #[serde(default = "default_metrics_agent_limit")]
    pub metrics_agent_limit: usize,
    /// Each liveness transition is POSTed here (plain `http://`), when set.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Timeout of one webhook try.
    #[serde(default = "default_webhook_timeout_ms")]
    pub webhook_timeout_ms: u64,
    /// Tries after the first, with exponential backoff.
    #[serde(default = "default_webhook_retries")]
    pub webhook_retries: u32,
    /// Alertmanager's base URL(s), plain `http://`, comma-separated for a cluster (every one
    /// gets every alert); unset: no alerts are pushed.
    #[serde(default)]
    pub alertmanager_url: Option<String>,
    /// Firing alerts are sent again this often (Alertmanager resolves an alert that is not
    /// re-sent before its `endsAt`, which is four of these ahead).
    #[serde(default = "default_alert_resend_s")]
    pub alert_resend_s: u64,
    /// This heartbeatd's name in alert labels (`instance`); default: the host name.
    #[serde(default)]
    pub instance_name: Option<String>,
    /// A valid heartbeat from an unknown, well-formed agent id registers that agent.
    #[serde(default)]
    pub auto_register: bool,
    /// Bearer token for the admin API's changes. Never logged; `check-config` prints it
    /// redacted.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// A whole request (headers and body) must arrive within this long; slower clients get
    /// 408 and their connection is closed.
    #[serde(default = "default_request_timeout_s")]
    pub request_timeout_s: u64,
    /// A connection whose client reads nothing of its answer for this long is closed, and the
    /// memory held for the answer returned (nginx's `send_timeout`: between two writes).
    #[serde(default = "default_send_timeout_s")]
    pub send_timeout_s: u64,
    /// Names a request's `Host` may carry besides `localhost`, IP addresses and this machine's
    /// host name (`*.example.com` for every subdomain, `*` for any): anything else gets 421,
    /// which ends DNS rebinding. A TOML array, or comma-separated in the environment.
    #[serde(default)]
    pub allowed_hosts: HostList,
    /// Without an `admin_token`, changes over TCP are refused; `true` allows them from a
    /// loopback listener (any local user could then stop and start agents). The control
    /// socket needs no token either way.
    #[serde(default)]
    pub loopback_admin: bool,
    /// The control socket `heartbeatd ctl` uses (mode 0600, no token needed): default
    /// `<data_dir>/heartbeatd.sock`; `""` for none.
    #[serde(default)]
    pub control_socket: Option<String>,
    /// Agents registered, at most, whatever registers them (config, API, `auto_register`).
    #[serde(default = "default_max_agents")]
    pub max_agents: usize,
    /// Open HTTP connections, at most (shared by the HTTP worker threads); further
    /// connections wait in the listen backlog. Needs about as many file descriptors.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// With `auto_register`, unknown agents are registered only while fewer than this many
    /// agents are registered; past it their heartbeats get 429.
    #[serde(default = "default_auto_register_limit")]
    pub auto_register_limit: usize,
    /// When set, `POST /heartbeat` needs `Authorization: Bearer <ingest_token>` (401 without).
    /// Never logged; `check-config` prints it redacted.
    #[serde(default)]
    pub ingest_token: Option<String>,
    /// PEM certificate chain and private key: with both set, heartbeatd serves HTTPS only
    /// (rustls). Both are read again on SIGHUP.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The agents to register; the file owns them (see docs/configuration.md, "Agents").
    #[serde(default)]
    pub agents: Vec<AgentInfo>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    Critical,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal or journald.
    #[default]
    Term,
    /// One JSON object per line, for log shippers.
    Json,
}

impl TryFrom<String> for LogLevel {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        Ok(match value.as_str() {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" => Self::Error,
            "critical" => Self::Critical,
            _ => {
                return Err(format!(
                    "log_level: {value:?} is not one of trace, debug, info, warn, error, critical"
                ))
            }
        })
    }
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "term" => Ok(Self::Term),
            "json" => Ok(Self::Json),
            _ => Err(format!("log_format: {value:?} is not one of term, json")),
        }
    }
}

fn default_http_bind() -> String {
    Ipv4Addr::LOCALHOST.to_string()
}
fn default_http_workers() -> usize {
    1
}
fn default_workers() -> usize {
    10
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_history_len() -> usize {
    1440
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_webhook_timeout_ms() -> u64 {
    2000
}
fn default_alert_resend_s() -> u64 {
    60
}

fn default_webhook_retries() -> u32 {
    3
}
fn default_metrics_agent_limit() -> usize {
    10_000
}
fn default_heartbeat_interval_s() -> u64 {
    10
}
fn default_max_clock_skew_s() -> u64 {
    300
}
fn default_checkpoint_interval_s() -> u64 {
    60
}
fn default_shutdown_timeout_s() -> u64 {
    30
}
fn default_adopt_timeout_s() -> u64 {
    60
}
fn default_request_timeout_s() -> u64 {
    10
}
fn default_max_connections() -> usize {
    10_000
}
fn default_auto_register_limit() -> usize {
    10_000
}
fn default_send_timeout_s() -> u64 {
    10
}
fn default_max_agents() -> usize {
    1_000_000
}

/// `allowed_hosts`: a TOML array of names, or one comma-separated string (as an environment
/// variable can only give).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HostList(pub Vec<String>);

impl<'de> Deserialize<'de> for HostList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<String>),
            Text(String),
        }
        Ok(Self(match Form::deserialize(deserializer)? {
            Form::List(names) => names,
            Form::Text(text) => text
                .split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
        }))
    }
}

impl Settings {
    /// The effective queue capacity.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity.unwrap_or(self.workers.saturating_mul(1000))
    }

    /// The settings with every default filled in and the admin token redacted, as
    /// `check-config` prints them. `grace_s` stays unset when it is: its default is each
    /// agent's own interval doubled, not one number ([`Settings::effective_toml`] says so).
    pub fn effective(&self) -> Self {
        Self {
            queue_capacity: Some(self.queue_capacity()),
            instance_name: Some(self.instance()),
            admin_token: self.admin_token.as_ref().map(|_| "<redacted>".to_owned()),
            ingest_token: self.ingest_token.as_ref().map(|_| "<redacted>".to_owned()),
            control_socket: Some(
                self.control_socket_path()
                    .map_or_else(String::new, |p| p.display().to_string()),
            ),
            ..self.clone()
        }
    }

    /// What `check-config` prints: [`Settings::effective`] as TOML, after comment lines that
    /// name the keys left unset (which TOML cannot show) and what an unset `grace_s` means.
    pub fn effective_toml(&self) -> Result<String, String> {
        let effective = self.effective();
        let mut text = String::new();
        if effective.grace_s.is_none() {
            text.push_str(&format!(
                "# grace_s is not set: each agent's grace is twice its own heartbeat_interval_s ({} s for heartbeat_interval_s = {})\n",
                effective.heartbeat_interval_s.saturating_mul(2),
                effective.heartbeat_interval_s
            ));
        }
        // The keys serde writes as null are the optional ones left unset.
        let unset: Vec<String> = match serde_json::to_value(&effective).map_err(|e| e.to_string())? {
            serde_json::Value::Object(keys) => keys
                .into_iter()
                .filter(|(key, value)| value.is_null() && key != "grace_s")
                .map(|(key, _)| key)
                .collect(),
            _ => Vec::new(),
        };
        if !unset.is_empty() {
            text.push_str(&format!("# not set: {}\n", unset.join(", ")));
        }
        text.push_str(&toml::to_string_pretty(&effective).map_err(|e| e.to_string())?);
        Ok(text)
    }

    /// The Alertmanager base URLs (empty: alerting is off).
    pub fn alertmanager_urls(&self) -> Vec<String> {
        self.alertmanager_url
            .iter()
            .flat_map(|urls| urls.split(','))
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// `instance_name`, or the host name (`/proc/sys/kernel/hostname`), or `heartbeatd`.
    pub fn instance(&self) -> String {
        self.instance_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "heartbeatd".to_owned())
        })
    }

    /// The control socket's path, if there is one.
    pub fn control_socket_path(&self) -> Option<PathBuf> {
        match self.control_socket.as_deref() {
            None => Some(self.data_dir.join("heartbeatd.sock")),
            Some("") => None,
            Some(path) => Some(PathBuf::from(path)),
        }
    }

    /// The bind address; validated at load, so a loaded `Settings` always has one.
    pub fn bind_ip(&self) -> Result<IpAddr, String> {
        self.http_bind.parse().map_err(|_| {
            format!(
                "http_bind: {:?} is not an IP address (e.g. 127.0.0.1, 0.0.0.0 or ::1)",
                self.http_bind
            )
        })
    }

    /// (key, value, min, max) of every numeric key but the agent timing (bounded by
    /// [`check_timing`]) and `http_port` (its type bounds it).
    fn numeric_bounds(&self) -> [(&'static str, u64, u64, u64); 19] {
        const DAY_S: u64 = 86_400;
        let n = |v: usize| v as u64;
        [
            ("workers", n(self.workers), 1, 1024),
            ("http_workers", n(self.http_workers), 1, 256),
            ("queue_capacity", n(self.queue_capacity()), 1, 10_000_000),
            ("history_len", n(self.history_len), 1, 1_000_000),
            ("flush_interval_ms", self.flush_interval_ms, 0, 60_000),
            ("checkpoint_interval_s", self.checkpoint_interval_s, 1, DAY_S),
            ("shutdown_timeout_s", self.shutdown_timeout_s, 1, DAY_S),
            ("adopt_timeout_s", self.adopt_timeout_s, 0, DAY_S),
            ("request_timeout_s", self.request_timeout_s, 1, 3600),
            ("send_timeout_s", self.send_timeout_s, 1, 3600),
            ("max_agents", n(self.max_agents), 1, 10_000_000),
            ("max_connections", n(self.max_connections), 1, 1_000_000),
            ("max_clock_skew_s", self.max_clock_skew_s, 1, 7 * DAY_S),
            ("metrics_agent_limit", n(self.metrics_agent_limit), 0, 10_000_000),
            ("webhook_timeout_ms", self.webhook_timeout_ms, 1, 600_000),
            ("webhook_retries", u64::from(self.webhook_retries), 0, 20),
            ("alert_resend_s", self.alert_resend_s, 1, 3600),
            ("auto_register_limit", n(self.auto_register_limit), 0, 10_000_000),
            (
                "heartbeat_interval_s",
                self.heartbeat_interval_s,
                1,
                heartbeatd_actors::model::agent::MAX_TIMING_S,
            ),
        ]
    }

    fn validate(&self) -> Result<(), String> {
        // Every number a config supplies reaches a thread count, an allocation, an interval
        // or a deadline (`Instant + Duration` panics on overflow): each has bounds.
        for (key, value, min, max) in self.numeric_bounds() {
            if !(min..=max).contains(&value) {
                return Err(format!("{key}: must be between {min} and {max}, got {value}"));
            }
        }
        self.bind_ip()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key: set both (HTTPS) or neither (plain HTTP)".into());
        }

        if let Some(url) = &self.webhook_url {
            if !url.starts_with("http://") {
                return Err(format!("webhook_url: {url:?} must be a plain http:// URL"));
            }
        }
        if let Some(urls) = &self.alertmanager_url {
            let urls: Vec<&str> = urls.split(',').map(str::trim).collect();
            if urls.len() > 16 {
                return Err(format!("alertmanager_url: at most 16 URLs, got {}", urls.len()));
            }
            for url in urls {
                if !url.starts_with("http://") || url.len() <= "http://".len() || url.len() > 2048 {
                    return Err(format!(
                        "alertmanager_url: {:?} must be a plain http:// URL (several: comma-separated)",
                        url.chars().take(100).collect::<String>()
                    ));
                }
            }
        }
        if self.allowed_hosts.0.len() > 256 {
            return Err(format!(
                "allowed_hosts: at most 256 names, got {}",
                self.allowed_hosts.0.len()
            ));
        }
        for name in &self.allowed_hosts.0 {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._*:[]".contains(&b));
            if !valid {
                return Err(format!(
                    "allowed_hosts: {:?} is not a host name (letters, digits, '-', '.', and '*.' in front for subdomains)",
                    name.chars().take(100).collect::<String>()
                ));
            }
        }
        if let Some(path) = self.control_socket.as_deref().filter(|p| !p.is_empty()) {
            if !path.starts_with('/') {
                return Err(format!(
                    "control_socket: {path:?} must be an absolute path (or \"\" for none)"
                ));
            }
        }
        if self.agents.len() > self.max_agents {
            return Err(format!(
                "agents: {} agents are configured but max_agents is {}",
                self.agents.len(),
                self.max_agents
            ));
        }
        if let Some(name) = &self.instance_name {
            if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
                return Err("instance_name: 1 to 256 bytes, no control characters".into());
            }
        }
        check_timing("heartbeat_interval_s", self.heartbeat_interval_s)?;
        if let Some(grace) = self.grace_s {
            check_timing("grace_s", grace)?;
        }
        let mut seen = HashSet::new();
        for (i, agent) in self.agents.iter().enumerate() {
            agent.validate().map_err(|reason| format!("agents[{i}].{reason}"))?;
            if !seen.insert(agent.id.as_str()) {
                return Err(format!("agents[{i}].id: duplicate agent id {:?}", agent.id));
            }
        }
        Ok(())
    }
}

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

/// Checks an environment value against the type of its key, taken from [`Settings`] itself
/// (no second list of types to keep in step): the value must deserialize strictly as that
/// key, either as a TOML literal (`4`, `true`) or as a string (`/var/lib/heartbeatd`). So
/// `HEARTBEATD_WORKERS=1.5` and `HEARTBEATD_AUTO_REGISTER=yes` are refused, not converted.
fn check_env_type(key: &str, value: &str) -> Result<(), String> {
    let as_key = |v: toml::Value| {
        let mut table = toml::Table::new();
        table.insert(key.to_owned(), v);
        toml::Value::Table(table).try_into::<Settings>().map(drop)
    };
    let literal = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    if literal.is_some_and(|v| as_key(v).is_ok()) {
        return Ok(());
    }
    as_key(toml::Value::String(value.to_owned())).map_err(|e| e.message().trim().to_owned())
}

/// The config crate appends the file path to some messages; ours already leads with it.
fn clean_config_message(message: &str) -> String {
    match message.find(" in ") {
        Some(at) if message[at..].contains('/') || message[at..].contains(".toml") => message[..at].to_owned(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_config(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn load_text(text: &str) -> Result<Loaded, SettingsError> {
        let file = write_config(text);
        load(Some(file.path()), Vec::new(), &Overrides::default())
    }

    #[test]
    fn defaults_match_the_documentation() {
        let s = load(None, Vec::new(), &Overrides::default()).unwrap().settings;
        assert_eq!(s.http_port, 0);
        assert_eq!(s.http_bind, "127.0.0.1");
        assert_eq!(s.workers, 10);
        assert_eq!(s.queue_capacity(), 10_000);
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.history_len, 1440);
        assert_eq!(s.flush_interval_ms, 1000);
        assert_eq!(s.checkpoint_interval_s, 60);
        assert_eq!(s.log_level, LogLevel::Info);
        assert_eq!(s.log_format, LogFormat::Term);
        assert_eq!(s.shutdown_timeout_s, 30);
        assert_eq!(s.adopt_timeout_s, 60);
        assert_eq!(s.http_workers, 1);
        assert!(s.agents.is_empty());
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let file = write_config("http_port = 1000\nworkers = 4\ndata_dir = \"/from/file\"\n");
        let env = vec![
            ("HEARTBEATD_HTTP_PORT".to_owned(), "2000".to_owned()),
            ("HEARTBEATD_WORKERS".to_owned(), "6".to_owned()),
            ("HEARTBEATD_NO_SUCH_KEY".to_owned(), "x".to_owned()),
            ("HEARTBEATD_URL".to_owned(), "http://ctl-only".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let overrides = Overrides {
            http_port: Some(3000),
            data_dir: None,
        };
        let loaded = load(Some(file.path()), env, &overrides).unwrap();
        assert_eq!(loaded.settings.http_port, 3000, "flag wins over env and file");
        assert_eq!(loaded.settings.workers, 6, "env wins over file");
        assert_eq!(loaded.settings.queue_capacity(), 6000, "capacity follows workers");
        assert_eq!(loaded.settings.data_dir, PathBuf::from("/from/file"));
        assert_eq!(
            loaded.ignored_env,
            ["HEARTBEATD_NO_SUCH_KEY"],
            "ctl's variables are not warned about"
        );
    }

    #[test]
    fn agents_are_read_from_the_file() {
        let s = load_text("[[agents]]\nid = \"a-1\"\nname = \"A\"\ntype = \"filebeat\"\n\n[[agents]]\nid = \"b\"\n")
            .unwrap()
            .settings;
        assert_eq!(s.agents.len(), 2);
        assert_eq!(s.agents[0].agent_type, "filebeat");
        assert_eq!(s.agents[1].name, "");
    }

    #[test]
    fn bad_configurations_name_the_key() {
        let cases = [
            ("htp_port = 1", "htp_port"),
            ("workers = \"ten\"", "workers"),
            ("workers = 0", "workers"),
            ("queue_capacity = 0", "queue_capacity"),
            ("history_len = 0", "history_len"),
            ("http_port = 70000", "http_port"),
            ("http_bind = \"not-an-ip\"", "http_bind"),
            ("log_level = \"loud\"", "log_level"),
            ("log_format = \"xml\"", "log_format"),
            ("shutdown_timeout_s = 0", "shutdown_timeout_s"),
            ("adopt_timeout_s = 86401", "adopt_timeout_s"),
            ("checkpoint_interval_s = 0", "checkpoint_interval_s"),
            ("[[agents]]\nid = \"a\"\n[[agents]]\nid = \"a\"", "agents[1].id"),
            ("[[agents]]\nid = \"a/b\"", "agents[0].id"),
            ("[[agents]]\nid = \"\"", "agents[0].id"),
            ("[[agents]]\nname = \"no id\"", "id"),
            ("[[agents]]\nid = \"a\"\ncolour = \"red\"", "colour"),
            ("http_port = ", "http_port"),
            ("auto_register = \"yes\"", "auto_register"),
            ("workers = 1.5", "workers"),
            (
                "[[agents]]\nid = \"a\"\nheartbeat_interval_s = 2.5",
                "agents[0].heartbeat_interval_s",
            ),
        ];
        for (text, key) in cases {
            let err = load_text(text)
                .err()
                .unwrap_or_else(|| panic!("{text:?} must be refused"));
            let message = err.to_string();
            assert!(message.contains(key), "{text:?}: {message:?} does not name {key}");
            assert!(
                message.contains(".toml"),
                "{text:?}: {message:?} does not name the file"
            );
        }
    }

    #[test]
    fn every_number_is_bounded_and_the_error_names_the_key() {
        let defaults = load(None, Vec::new(), &Overrides::default()).unwrap().settings;
        for (key, _, min, max) in defaults.numeric_bounds() {
            let mut values = vec![max + 1, u64::MAX >> 1];
            if min > 0 {
                values.push(min - 1);
            }
            for value in values {
                let text = format!("{key} = {value}");
                let message = load_text(&text)
                    .err()
                    .unwrap_or_else(|| panic!("{text} must be refused"))
                    .to_string();
                assert!(message.contains(key), "{text}: {message}");
            }
            for value in [min, max] {
                // queue_capacity's default follows workers; the rest stand alone.
                let text = format!("{key} = {value}");
                assert!(load_text(&text).is_ok(), "{text} must be accepted");
            }
        }
    }

    #[test]
    fn a_syntax_error_never_quotes_the_line() {
        let message = load_text("workers = 2\nadmin_token = \"hunter2-secret\nx = 1\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("line 2") && message.contains("admin_token"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn environment_values_are_typed_strictly() {
        for (name, value) in [
            ("HEARTBEATD_WORKERS", "1.5"),
            ("HEARTBEATD_AUTO_REGISTER", "yes"),
            ("HEARTBEATD_HTTP_PORT", "80a"),
        ] {
            let env = vec![(name.to_owned(), value.to_owned())];
            let message = load(None, env, &Overrides::default()).err().unwrap().to_string();
            assert!(message.contains(name), "{message}");
        }
        let env = vec![("HEARTBEATD_AUTO_REGISTER".to_owned(), "true".to_owned())];
        assert!(load(None, env, &Overrides::default()).unwrap().settings.auto_register);
        // Strings that look like other types stay strings where the key is a string.
        let env: Vec<(String, String)> = [
            ("HEARTBEATD_ADMIN_TOKEN", "12345"),
            ("HEARTBEATD_HTTP_BIND", "0.0.0.0"),
            ("HEARTBEATD_DATA_DIR", "/var/lib/heartbeatd"),
            ("HEARTBEATD_GRACE_S", "5"),
            ("HEARTBEATD_LOG_LEVEL", "debug"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let s = load(None, env, &Overrides::default()).unwrap().settings;
        assert_eq!(s.admin_token.as_deref(), Some("12345"));
        assert_eq!(s.http_bind, "0.0.0.0");
        assert_eq!(s.grace_s, Some(5));
        let bad_level = vec![("HEARTBEATD_LOG_LEVEL".to_owned(), "loud".to_owned())];
        let message = load(None, bad_level, &Overrides::default()).err().unwrap().to_string();
        assert!(message.contains("log_level"), "{message}");
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let env = vec![("HEARTBEATD_WORKERS".to_owned(), "many".to_owned())];
        let err = load(None, env, &Overrides::default()).err().unwrap();
        let message = err.to_string();
        assert!(
            message.contains("HEARTBEATD_WORKERS") && message.contains("workers"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = load(Some(Path::new("/no/such/file.toml")), Vec::new(), &Overrides::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("/no/such/file.toml"), "{err}");
    }
}
