//! SIGHUP: reload what can change safely while heartbeatd runs, and say what cannot.
//!
//! The configuration is read again exactly as at start-up (the same file, the current
//! `HEARTBEATD_*` environment, the same command-line flags). An invalid configuration changes
//! nothing: the error is logged and the running configuration stays. Otherwise:
//!
//! | key | on reload |
//! |---|---|
//! | `log_level` | applied at once |
//! | `[[agents]]` | the file owns the agents it declares: new ones are registered (and started), changed ones take the file's record (restarted only if their supervision settings changed), ones that left the file are stopped and removed; one line per agent says what changed |
//! | `webhook_url`, `webhook_timeout_ms`, `webhook_retries` | applied to the next delivery |
//! | `admin_token`, `ingest_token`, `allowed_hosts`, `loopback_admin` | applied to the next request |
//! | `tls_cert`, `tls_key` | the files are read again and used for new connections (unless unreadable or not a matching pair: the old pair stays) |
//! | anything else | logged as needing a restart, not applied |

use std::path::PathBuf;
use std::time::Duration;

use actix::Addr;
use heartbeatd_actors::manager::{Manager, SyncConfigAgents};
use heartbeatd_actors::notify::webhook::{Reconfigure, Webhook, WebhookPolicy};
use heartbeatd_actors::registry::config_owned::ConfigChanges;
use slog::{error, info, warn, Logger};

use crate::routes::auth::{Gate, GateSettings, HostRules};
use crate::settings::{self, Overrides, Settings};
use crate::telemetry::LevelHandle;
use crate::tls::{TlsError, TlsReloader};

/// Where the configuration came from, to read it again the same way.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    pub config: Option<PathBuf>,
    pub overrides: Overrides,
    pub level: LevelHandle,
}

/// The keys a reload applies; every other key needs a restart.
pub const RELOADABLE_KEYS: [&str; 11] = [
    "log_level",
    "agents",
    "webhook_url",
    "webhook_timeout_ms",
    "webhook_retries",
    "admin_token",
    "ingest_token",
    "allowed_hosts",
    "loopback_admin",
    "tls_cert",
    "tls_key",
];

/// What a reload changes, and the settings it last applied.
pub struct Reloader {
    pub source: ReloadSource,
    /// As last applied (with the `[[agents]]` list of the file).
    pub current: Settings,
    /// Who may call what (tokens, hosts, loopback rule).
    pub gate: Gate,
    pub webhook: Addr<Webhook>,
    pub manager: Addr<Manager>,
    pub tls: Option<TlsReloader>,
    pub log: Logger,
}

/// What the gate applies, from `s`.
pub fn gate_settings(s: &Settings) -> GateSettings {
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    GateSettings {
        admin_token: s.admin_token.clone(),
        ingest_token: s.ingest_token.clone(),
        allowed_hosts: HostRules::new(&s.allowed_hosts.0, host_name.as_deref().map(str::trim)),
        loopback_admin: s.loopback_admin,
        listens_on_loopback: s.bind_ip().is_ok_and(|ip| ip.is_loopback()),
    }
}

/// The webhook settings of `s`, if a URL is set.
pub fn webhook_policy(s: &Settings) -> Option<WebhookPolicy> {
    s.webhook_url.as_ref().map(|url| WebhookPolicy {
        url: url.clone(),
        timeout: Duration::from_millis(s.webhook_timeout_ms),
        retries: s.webhook_retries,
    })
}

impl Reloader {
    /// Reads the configuration again and applies what can be applied (see the module doc).
    pub async fn reload(&mut self) {
        let loaded = settings::load(self.source.config.as_deref(), std::env::vars(), &self.source.overrides);
        let mut new = match loaded {
            Ok(loaded) => loaded.settings,
            Err(e) => {
                error!(self.log, "SIGHUP: the configuration is invalid; nothing was changed";
                    "error" => %e, "what_to_do" => "fix the file (check it with `heartbeatd check-config FILE`) and send SIGHUP again");
                return;
            }
        };
        let old = &self.current;
        let mut applied: Vec<&str> = Vec::new();
        if new.log_level != old.log_level {
            self.source.level.set(new.log_level);
            info!(self.log, "SIGHUP: log_level changed"; "from" => ?old.log_level, "to" => ?new.log_level);
            applied.push("log_level");
        }
        if webhook_policy(&new).map(|p| (p.url, p.timeout, p.retries))
            != webhook_policy(old).map(|p| (p.url, p.timeout, p.retries))
        {
            self.webhook.do_send(Reconfigure(webhook_policy(&new)));
            info!(self.log, "SIGHUP: webhook settings changed";
                "webhook_url" => new.webhook_url.as_deref().unwrap_or("(none)"),
                "webhook_timeout_ms" => new.webhook_timeout_ms, "webhook_retries" => new.webhook_retries);
            applied.push("webhook");
        }
        let gate_keys = [
            ("admin_token", new.admin_token != old.admin_token),
            ("ingest_token", new.ingest_token != old.ingest_token),
            ("allowed_hosts", new.allowed_hosts != old.allowed_hosts),
            ("loopback_admin", new.loopback_admin != old.loopback_admin),
        ];
        let changed: Vec<&str> = gate_keys.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect();
        if !changed.is_empty() {
            // The listener stays where it is: judge loopback by the running address.
            self.gate.reload(GateSettings {
                listens_on_loopback: old.bind_ip().is_ok_and(|ip| ip.is_loopback()),
                ..gate_settings(&new)
            });
            info!(self.log, "SIGHUP: access rules changed"; "keys" => changed.join(", "),
                "admin_token_set" => new.admin_token.is_some(), "ingest_token_set" => new.ingest_token.is_some());
            applied.extend(changed);
        }
        if let Some(tls) = &self.tls {
            match tls.reload(&new) {
                Ok(()) => {
                    info!(self.log, "SIGHUP: TLS certificate and key read again"; "tls_cert" => ?new.tls_cert);
                    applied.push("tls");
                }
                Err(e @ TlsError::Mismatch { .. }) => {
                    error!(self.log, "SIGHUP: the TLS certificate and key do not belong together; the old ones stay in use";
                        "error" => %e, "tls_cert" => ?new.tls_cert, "tls_key" => ?new.tls_key,
                        "what_to_do" => "put the key the certificate was issued for in tls_key (or the certificate of that key in tls_cert), check with `heartbeatd check-config FILE`, and send SIGHUP again")
                }
                Err(e) => {
                    error!(self.log, "SIGHUP: could not read the TLS certificate or key; the old ones stay in use";
                        "error" => %e, "tls_cert" => ?new.tls_cert, "tls_key" => ?new.tls_key,
                        "what_to_do" => "fix tls_cert / tls_key and send SIGHUP again")
                }
            }
        }
        let agents = std::mem::take(&mut new.agents);
        match self.manager.send(SyncConfigAgents(agents)).await {
            Ok(Ok(changes)) if !changes.is_empty() => {
                log_config_changes(&self.log, &changes);
                applied.push("agents");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                error!(self.log, "SIGHUP: could not apply the configuration's agents; nothing of them changed"; "error" => %e,
                "what_to_do" => "fix the file (check it with `heartbeatd check-config FILE`) and send SIGHUP again")
            }
            Err(_) => error!(self.log, "SIGHUP: the manager is not running"),
        }
        let restart = keys_needing_restart(old, &new);
        if !restart.is_empty() {
            warn!(self.log, "SIGHUP: these keys changed but take effect only after a restart; the running values stay";
                "keys" => restart.join(", "));
        }
        info!(self.log, "SIGHUP: configuration reloaded";
            "applied" => if applied.is_empty() { "nothing changed".to_owned() } else { applied.join(", ") });
        // The agent list went to the Registry (imports go by its record of what was
        // imported); 100k entries are not worth keeping twice.
        self.current = new;
    }
}

/// At most this many agents are named one line each; the rest are counted.
const NAMED_AGENTS: usize = 20;

/// One line per agent the configuration added, changed or removed (at start-up or on SIGHUP).
pub fn log_config_changes(log: &Logger, changes: &ConfigChanges) {
    let mut named = 0;
    let mut name = |line: &dyn Fn()| {
        named += 1;
        if named <= NAMED_AGENTS {
            line();
        }
    };
    for id in &changes.added {
        name(&|| info!(log, "agent added from the configuration"; "agent_id" => id));
    }
    for (id, keys) in &changes.changed {
        name(
            &|| info!(log, "agent changed in the configuration; applying it"; "agent_id" => id, "keys" => keys.join(", ")),
        );
    }
    for gone in &changes.removed {
        name(
            &|| info!(log, "agent removed: it left the configuration (its program is stopped)"; "agent_id" => &gone.id),
        );
    }
    for id in &changes.taken_over {
        warn!(log, "an agent registered through the API is declared in the configuration file, which owns it from now on";
            "agent_id" => id, "what_to_do" => "change it in the file from now on (the API refuses to)");
    }
    if named > NAMED_AGENTS {
        info!(log, "agents of the configuration applied";
            "added" => changes.added.len(), "changed" => changes.changed.len(), "removed" => changes.removed.len(),
            "not_named_above" => named - NAMED_AGENTS);
    }
}

/// The keys whose values differ between `old` and `new`, among those a reload does not apply.
pub fn keys_needing_restart(old: &Settings, new: &Settings) -> Vec<String> {
    let table = |s: &Settings| -> toml::Table { toml::Table::try_from(s).unwrap_or_default() };
    let (old, new) = (table(old), table(new));
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| !RELOADABLE_KEYS.contains(&k.as_str()))
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_a_reload_cannot_apply_are_listed() {
        let old = settings::load(None, Vec::<(String, String)>::new(), &Overrides::default())
            .unwrap()
            .settings;
        let mut new = old.clone();
        new.log_level = settings::LogLevel::Debug;
        new.admin_token = Some("t".into());
        new.webhook_url = Some("http://127.0.0.1:1/".into());
        assert!(keys_needing_restart(&old, &new).is_empty());
        new.workers = 3;
        new.http_port = 9999;
        assert_eq!(keys_needing_restart(&old, &new), ["http_port", "workers"]);
    }
}
