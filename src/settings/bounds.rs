//! The bounds of every key: a loaded [`Settings`] holds no value that could overflow a
//! deadline, exhaust memory or name something that cannot exist. The message names the key.

use std::collections::HashSet;

use heartbeatd_actors::model::agent::check_timing;

use super::Settings;

impl Settings {
    /// (key, value, min, max) of every numeric key but the agent timing (bounded by
    /// [`check_timing`]) and `http_port` (its type bounds it).
    pub(super) fn numeric_bounds(&self) -> [(&'static str, u64, u64, u64); 19] {
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

    pub(super) fn validate(&self) -> Result<(), String> {
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
