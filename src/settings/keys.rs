//! The configuration keys: [`Settings`], one field per key with its default and what it
//! means, and the types of the keys that are not plain numbers or strings.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use heartbeatd_actors::model::agent::AgentInfo;
use serde::{Deserialize, Serialize};

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
