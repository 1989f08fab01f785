//! The environment layer: which `HEARTBEATD_<KEY>` variables set which keys, and how a
//! value is typed (strictly, as the key's own type).

use super::Settings;

/// Prefix of the environment variables that override keys.
pub const ENV_PREFIX: &str = "HEARTBEATD_";
/// `HEARTBEATD_*` variables that are not configuration keys but `heartbeatd ctl`'s (an
/// operator may export them in the shell that also starts the daemon): not warned about.
pub(super) const CTL_ENV: [&str; 2] = ["HEARTBEATD_URL", "HEARTBEATD_CA"];

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

/// Checks an environment value against the type of its key, taken from [`Settings`] itself
/// (no second list of types to keep in step): the value must deserialize strictly as that
/// key, either as a TOML literal (`4`, `true`) or as a string (`/var/lib/heartbeatd`). So
/// `HEARTBEATD_WORKERS=1.5` and `HEARTBEATD_AUTO_REGISTER=yes` are refused, not converted.
pub(super) fn check_env_type(key: &str, value: &str) -> Result<(), String> {
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
