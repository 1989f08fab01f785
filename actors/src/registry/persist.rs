//! Saving the registry: one synced line per change appended to `registry.log`, and
//! compaction, which rewrites `registry.json` whole and removes the log (when the log has
//! grown as long as the registry, after a failed append, and when `registry.json` vanished).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use slog::warn;

use super::{AgentMap, Registry, RegistryError, REGISTRY_FILE, REGISTRY_LOG};
use crate::atomic_file::{sync_dir, write_atomically};
use crate::data_dir;
use crate::model::agent::AgentInfo;

/// One line of `registry.log`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum LogEntry {
    /// The agent, as it is now (added or changed).
    Put(Box<AgentInfo>),
    /// The agent was removed.
    Del(String),
}

impl Registry {
    /// Writes the whole set to `registry.json` and removes `registry.log`.
    pub(super) fn compact(&mut self, map: &AgentMap) -> Result<(), RegistryError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut agents: Vec<&AgentInfo> = map.values().map(|info| &**info).collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        #[derive(Serialize)]
        struct Out<'a> {
            format_version: u32,
            agents: Vec<&'a AgentInfo>,
            config_owned: &'a BTreeSet<String>,
        }
        let bytes = serde_json::to_vec(&Out {
            format_version: 1,
            agents,
            config_owned: &self.config_owned,
        })
        .map_err(|e| RegistryError::save_failed(&dir.join(REGISTRY_FILE), io::Error::other(e)))?;
        let save_error = |path: &Path, e: io::Error| RegistryError::save_failed(path, e);
        data_dir::create_data_dir(dir).map_err(|e| save_error(dir, e))?;
        write_atomically(dir, REGISTRY_FILE, &bytes).map_err(|e| save_error(&dir.join(REGISTRY_FILE), e))?;
        self.change_log = None;
        let log_path = dir.join(REGISTRY_LOG);
        match fs::remove_file(&log_path) {
            Ok(()) => sync_dir(dir).map_err(|e| save_error(dir, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(save_error(&log_path, e)),
        }
        self.change_log_lines = 0;
        self.compaction_due = false;
        Ok(())
    }

    /// Saves `entries` (the change that turned the published set into `next`): one appended
    /// and synced line each, or a compaction when the log is due for one.
    pub(super) fn save(&mut self, entries: &[LogEntry], next: &AgentMap) -> Result<(), RegistryError> {
        let Some(dir) = self.dir.clone() else { return Ok(()) };
        if self.compaction_due || self.change_log_lines + entries.len() > next.len().max(1024) {
            return self.compact(next);
        }
        let mut buf = Vec::with_capacity(entries.len() * 96);
        for entry in entries {
            serde_json::to_writer(&mut buf, entry)
                .map_err(|e| RegistryError::save_failed(&dir.join(REGISTRY_LOG), io::Error::other(e)))?;
            buf.push(b'\n');
        }
        let path = dir.join(REGISTRY_LOG);
        let result = (|| {
            if self.change_log.is_none() {
                let file = data_dir::open_append(&path)?;
                sync_dir(&dir)?;
                self.change_log = Some(file);
            }
            let file = self.change_log.as_mut().expect("opened above");
            file.write_all(&buf)?;
            file.sync_data()
        })();
        match result {
            Ok(()) => {
                self.change_log_lines += entries.len();
                Ok(())
            }
            Err(e) => {
                // Never append after a failed write or sync: the next save rewrites the file.
                self.change_log = None;
                self.compaction_due = true;
                Err(RegistryError::save_failed(&path, e))
            }
        }
    }

    /// Writes `registry.json` again if it vanished.
    pub(super) fn check_file(&mut self) {
        let Some(dir) = self.dir.clone() else { return };
        if fs::symlink_metadata(dir.join(REGISTRY_FILE)).is_ok() {
            return;
        }
        let current = self.agents();
        match self.compact(&current.by_id) {
            Ok(()) => warn!(self.log, "registry.json was missing (was data_dir removed?); written again from memory";
                "path" => %dir.join(REGISTRY_FILE).display(), "agents" => current.len()),
            Err(e) => {
                warn!(self.log, "registry.json is missing and could not be written again; trying again every second while data_dir is missing, else at the next change";
                "error" => %e, "what_to_do" => "check that data_dir exists and is writable")
            }
        }
    }
}
