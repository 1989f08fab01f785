//! What the code reads off the keys: values derived from them (the effective queue
//! capacity, the control socket's path, the Alertmanager URLs, the instance name), and the
//! effective configuration `check-config` prints.

use std::net::IpAddr;
use std::path::PathBuf;

use super::Settings;

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
}
