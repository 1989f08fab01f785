//! The Registry actor: owns the set of agents allowed to report, and `data_dir/registry.json`.
//!
//! Every change is saved and then published as a new immutable [`RegistrySnapshot`] map, so
//! the heartbeat hot path checks `agent_id` with one atomic load and no message round-trip,
//! and a change is visible to readers by the time its message has been answered. A change
//! that cannot be saved is not published.
//!
//! Saving writes the same whatever the registry holds (publishing does not: the set readers
//! see is copied and its ids sorted again, O(agents) per change; 140 ms at 192k agents on the
//! release build, so bulk registrations batch): a change appends one line per agent to
//! `registry.log` and syncs it; `registry.json` (the whole set) is rewritten only when the log
//! has grown as long as the registry (and at start-up), after which the log is removed. Load
//! applies the log on top of the file; its entries set absolute values, so a log left by a
//! crash during compaction applies harmlessly twice. (Rewriting the whole file per change cost
//! 4.36 GB of writes for 7.4k `auto_register` ids.)
//!
//! `auto_register` registrations arrive one id at a time and are applied in batches
//! ([`AutoRegister`]): one log write and one publish for all that arrive within
//! [`AUTO_REGISTER_WINDOW`], and none past `auto_register_limit` agents.
//!
//! If `registry.json` disappears (an operator removed `data_dir`), it is written again about
//! a second later ([`file_watch`]: an inotify watch, not a poll).
//!
//! The agents the config's `[[agents]]` declares are the file's ([`config_owned`]): at start-up
//! and on SIGHUP their records are the file's, and an agent that left the file is removed; the
//! API may not change or delete them. Agents registered through the API stay the API's.
//!
//! | file | role |
//! |---|---|
//! | `mod.rs` | the Registry actor, its file and log, its messages |
//! | [`config_owned`] | which agents the configuration owns, and applying it |
//! | [`file_watch`] | noticing that `registry.json` was removed |

pub mod config_owned;
pub mod file_watch;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use slog::{info, warn, Logger};

use actix::prelude::*;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::atomic_file::{sync_dir, write_atomically};
use crate::data_dir;
use crate::model::agent::{is_valid_agent_id, AgentChange, AgentInfo};

/// Each agent boxed: the map is cloned for every published change, and a table of 100k
/// 400-byte entries (sized to the next power of two) would cost more than the agents.
type AgentMap = HashMap<String, Arc<AgentInfo>>;

/// The published registry: agents by id, and their ids in order (for paging without sorting
/// 100k ids per request; rebuilt only when the registry changes).
#[derive(Debug, Default)]
pub struct AgentSet {
    by_id: AgentMap,
    sorted_ids: Vec<String>,
}

impl AgentSet {
    fn new(by_id: AgentMap) -> Self {
        let mut sorted_ids: Vec<String> = by_id.keys().cloned().collect();
        sorted_ids.sort_unstable();
        Self { by_id, sorted_ids }
    }

    pub fn get(&self, id: &str) -> Option<&AgentInfo> {
        self.by_id.get(id).map(|info| &**info)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every agent, by id.
    pub fn values(&self) -> impl Iterator<Item = &AgentInfo> {
        self.by_id.values().map(|info| &**info)
    }

    /// Ids sorted, starting after `after` (all when `None`).
    pub fn ids_after(&self, after: Option<&str>) -> &[String] {
        let start = after.map_or(0, |after| self.sorted_ids.partition_point(|id| id.as_str() <= after));
        &self.sorted_ids[start..]
    }

    /// The ids after `after` that start with `prefix` and are of `agent_type`, in order: at most
    /// `want` of them, from at most `scan_budget` ids looked at. The run of ids with the prefix
    /// is found by binary search; only the type is checked id by id, so one call costs at most
    /// `scan_budget` lookups however large the registry (a `?type=nomatch` on a million agents
    /// is a page that ends early, not a walk of the million).
    pub fn candidates(&self, filter: &CandidateFilter<'_>, want: usize, scan_budget: usize) -> Candidates {
        let after_start = filter
            .after
            .map_or(0, |after| self.sorted_ids.partition_point(|id| id.as_str() <= after));
        let prefix_start = self.sorted_ids.partition_point(|id| id.as_str() < filter.prefix);
        let start = after_start.max(prefix_start);
        let mut ids = Vec::new();
        for (looked, id) in self.sorted_ids[start..].iter().enumerate() {
            if !id.starts_with(filter.prefix) {
                break;
            }
            if looked > 0 && (ids.len() >= want || looked >= scan_budget) {
                // Stopped with ids left: the next call goes on after the last one looked at.
                let resume_after = self.sorted_ids[start + looked - 1].clone();
                return Candidates {
                    ids,
                    resume_after: Some(resume_after),
                };
            }
            let of_type = filter
                .agent_type
                .is_none_or(|t| self.by_id.get(id).is_some_and(|info| info.agent_type == t));
            if of_type {
                ids.push(id.clone());
            }
        }
        Candidates {
            ids,
            resume_after: None,
        }
    }
}

/// What a listing keeps: ids after `after`, starting with `prefix` (`""`: all), of
/// `agent_type` (`None`: any).
#[derive(Debug, Default, Clone, Copy)]
pub struct CandidateFilter<'a> {
    pub after: Option<&'a str>,
    pub prefix: &'a str,
    pub agent_type: Option<&'a str>,
}

/// The ids a listing found, and where the next call goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    pub ids: Vec<String>,
    /// `Some(id)`: the walk stopped (enough found, or its budget spent) with ids left after
    /// `id`; `None`: none is left.
    pub resume_after: Option<String>,
}

/// The registry's file name under `data_dir`.
pub const REGISTRY_FILE: &str = "registry.json";
/// Changes since `registry.json` was written, one JSON line each.
pub const REGISTRY_LOG: &str = "registry.log";
/// `auto_register` ids arriving within this window share one log write and one publish.
pub const AUTO_REGISTER_WINDOW: Duration = Duration::from_millis(2);

/// One line of `registry.log`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogEntry {
    /// The agent, as it is now (added or changed).
    Put(Box<AgentInfo>),
    /// The agent was removed.
    Del(String),
}

/// A read-only view of the registry, cheap to clone and to query from any thread.
#[derive(Debug, Clone)]
pub struct RegistrySnapshot {
    current: Arc<ArcSwap<AgentSet>>,
}

impl RegistrySnapshot {
    pub fn contains(&self, id: &str) -> bool {
        self.current.load().contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<AgentInfo> {
        self.current.load().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole set as it is now (it never changes; a change publishes a new one).
    pub fn load(&self) -> Arc<AgentSet> {
        self.current.load_full()
    }
}

/// Why a registry change was refused, or could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("agent id {0:?} is invalid: use 1 to 128 characters from A-Z a-z 0-9 . _ -")]
    InvalidId(String),
    #[error("agent {0:?} is already registered")]
    Duplicate(String),
    #[error("agent {0:?} is not registered")]
    NotFound(String),
    /// Entry `index` of a batch is bad; nothing of the batch was registered.
    #[error("entry {index}: {reason}")]
    InvalidEntry { index: usize, reason: String },
    /// A change that breaks the agent rules ([`AgentInfo::validate`]); names the field.
    #[error("{0}")]
    Invalid(String),
    /// Writing `registry.json` or `registry.log` failed; nothing of the change was published.
    #[error("could not save the registry to {path}: {source}")]
    SaveFailed {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// The registry file exists but could not be read at start-up.
    #[error("could not read the registry at {path}: {source}")]
    ReadFailed {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// The Registry actor is gone (heartbeatd is stopping).
    #[error("the registry is not running")]
    NotRunning,
    /// The agent was changed, then unregistered before its new view could be read.
    #[error("agent {0:?} was unregistered meanwhile")]
    Vanished(String),
    /// `auto_register` refused a new agent: the registry holds `auto_register_limit` agents.
    #[error("auto_register_limit reached: {0} agents are registered; register more through the admin API")]
    Full(usize),
    /// The configuration file declares this agent: the API may not change or delete it.
    #[error("agent {0:?} is declared in the configuration file, which owns it: change it there and reload (SIGHUP, or systemctl reload heartbeatd)")]
    ConfigOwned(String),
    /// A registration would take the registry past `max_agents`.
    #[error("max_agents is {max}: {registered} agents are registered and {adding} more would pass it; delete agents, or raise max_agents")]
    AtCapacity {
        max: usize,
        registered: usize,
        adding: usize,
    },
}

/// The content of `registry.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    format_version: u32,
    agents: Vec<AgentInfo>,
    /// The ids the configuration file declared when it was last applied: the file's agents.
    /// (Files written before this rule have `imported_from_config` instead: read as none
    /// owned, so nothing is removed at the first start with the rule.)
    #[serde(default)]
    config_owned: BTreeSet<String>,
}

/// What loading the registry found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RegistryLoad {
    /// Agents read from `registry.json`.
    pub from_file: usize,
    /// What the configuration file's agents changed.
    pub config: config_owned::ConfigChanges,
    /// Set when `registry.json` did not parse and was moved aside to this path.
    pub moved_aside: Option<PathBuf>,
    /// Changes read from `registry.log` (left by the previous run), and its damaged lines.
    pub log_entries: usize,
    pub log_damaged: usize,
    /// Agents whose saved timing was out of bounds (written by an older version), with what
    /// was clamped: loaded with the nearest bound, to be logged as a warning.
    pub clamped: Vec<(String, Vec<String>)>,
}

/// Owns the agent set; the only writer of the snapshot and of `registry.json`.
///
/// The published map is the only copy: a change builds the next map from it and publishes
/// that (changes are rare admin operations; 100k agents are not worth keeping twice).
pub struct Registry {
    published: Arc<ArcSwap<AgentSet>>,
    /// The ids the configuration file declares (see [`config_owned`]).
    config_owned: BTreeSet<String>,
    /// `None`: in memory only (tests).
    dir: Option<PathBuf>,
    /// `registry.log`, open for appending; `None` until the first change after a compaction.
    change_log: Option<File>,
    /// Lines in `registry.log`; a compaction is due once it reaches the registry's size.
    change_log_lines: usize,
    /// After a failed append the log may end in a torn line: the next save is a compaction.
    compaction_due: bool,
    /// `auto_register` stops adding agents once this many are registered.
    auto_register_limit: usize,
    /// No registration, whatever its way in, takes the registry past this (`max_agents`).
    max_agents: usize,
    /// `auto_register` ids waiting for the next batch, with whoever waits for each.
    pending_auto: Vec<(String, oneshot::Sender<Result<(), RegistryError>>)>,
    /// A check of `registry.json` is scheduled ([`file_watch::CheckFileSoon`]).
    file_check_pending: bool,
    log: Logger,
}

impl RegistryError {
    fn save_failed(path: &Path, e: io::Error) -> Self {
        Self::SaveFailed {
            path: path.to_owned(),
            source: Arc::new(e),
        }
    }
}

impl Registry {
    /// An in-memory registry holding `agents`. Fails on an invalid or duplicate id.
    pub fn new(agents: impl IntoIterator<Item = AgentInfo>) -> Result<Self, RegistryError> {
        Ok(Self::with_parts(
            AgentSet::new(build_map(agents)?),
            BTreeSet::new(),
            None,
        ))
    }

    fn with_parts(set: AgentSet, config_owned: BTreeSet<String>, dir: Option<PathBuf>) -> Self {
        Self {
            published: Arc::new(ArcSwap::from_pointee(set)),
            config_owned,
            dir,
            change_log: None,
            change_log_lines: 0,
            compaction_due: false,
            auto_register_limit: usize::MAX,
            max_agents: usize::MAX,
            pending_auto: Vec::new(),
            file_check_pending: false,
            log: Logger::root(slog::Discard, slog::o!()),
        }
    }

    /// Where the registry logs what it repairs.
    pub fn with_logger(mut self, log: Logger) -> Self {
        self.log = log;
        self
    }

    /// `auto_register` registers new agents only while fewer than `limit` are registered.
    pub fn with_auto_register_limit(mut self, limit: usize) -> Self {
        self.auto_register_limit = limit;
        self
    }

    /// No registration takes the registry past `max` agents.
    pub fn with_max_agents(mut self, max: usize) -> Self {
        self.max_agents = max;
        self
    }

    /// Refuses `adding` more agents when that would pass `max_agents`.
    fn check_room(&self, registered: usize, adding: usize) -> Result<(), RegistryError> {
        if registered.saturating_add(adding) > self.max_agents {
            return Err(RegistryError::AtCapacity {
                max: self.max_agents,
                registered,
                adding,
            });
        }
        Ok(())
    }

    /// Loads `dir/registry.json` (if any), applies the configuration's agents (see
    /// [`config_owned`]), and saves the result.
    pub fn load(
        dir: &Path,
        config_agents: impl IntoIterator<Item = AgentInfo>,
    ) -> Result<(Self, RegistryLoad), RegistryError> {
        let path = dir.join(REGISTRY_FILE);
        let mut report = RegistryLoad::default();
        let file = match data_dir::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<RegistryFile>(&bytes) {
                Ok(file) => file,
                Err(_) => {
                    let aside = dir.join(format!(
                        "{REGISTRY_FILE}.corrupt-{}",
                        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
                    ));
                    fs::rename(&path, &aside).map_err(|e| RegistryError::save_failed(&path, e))?;
                    report.moved_aside = Some(aside);
                    RegistryFile::default()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => RegistryFile::default(),
            Err(e) => {
                return Err(RegistryError::ReadFailed {
                    path,
                    source: Arc::new(e),
                })
            }
        };
        report.from_file = file.agents.len();
        let mut agents = file.agents;
        for info in &mut agents {
            let changes = info.clamp_timing();
            if !changes.is_empty() {
                report.clamped.push((info.id.clone(), changes));
            }
        }
        let mut map = build_map(agents)?;
        apply_change_log(dir, &mut map, &mut report)?;
        let (owned, changes) = config_owned::apply(&mut map, &file.config_owned, config_agents.into_iter().collect());
        report.config = changes;
        let mut registry = Self::with_parts(AgentSet::default(), owned, Some(dir.to_owned()));
        registry.compact(&map)?;
        registry.published.store(Arc::new(AgentSet::new(map)));
        Ok((registry, report))
    }

    /// The read side, for the HTTP layer and the Manager.
    pub fn snapshot(&self) -> RegistrySnapshot {
        RegistrySnapshot {
            current: Arc::clone(&self.published),
        }
    }

    fn agents(&self) -> Arc<AgentSet> {
        self.published.load_full()
    }

    /// Writes the whole set to `registry.json` and removes `registry.log`.
    fn compact(&mut self, map: &AgentMap) -> Result<(), RegistryError> {
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
    fn save(&mut self, entries: &[LogEntry], next: &AgentMap) -> Result<(), RegistryError> {
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

    /// Saves and publishes the current map changed by `change`, which lists what it changed;
    /// nothing changes on error.
    fn change<T>(&mut self, change: impl FnOnce(&mut AgentMap) -> (T, Vec<LogEntry>)) -> Result<T, RegistryError> {
        let mut next = self.agents().by_id.clone();
        let (result, entries) = change(&mut next);
        self.save(&entries, &next)?;
        self.published.store(Arc::new(AgentSet::new(next)));
        Ok(result)
    }

    /// Registers the `auto_register` ids that arrived in the last window: one save, one
    /// publish; ids past the limit are refused.
    fn apply_pending_auto(&mut self) {
        let pending = std::mem::take(&mut self.pending_auto);
        if pending.is_empty() {
            return;
        }
        let current = self.agents();
        let mut room = self
            .auto_register_limit
            .min(self.max_agents)
            .saturating_sub(current.len());
        let mut added = HashSet::new();
        let mut batch = Vec::new();
        let mut answers = Vec::with_capacity(pending.len());
        for (id, waiter) in pending {
            let fits = current.contains_key(&id) || added.contains(&id) || room > 0;
            if fits && !current.contains_key(&id) && added.insert(id.clone()) {
                room -= 1;
                batch.push(AgentInfo {
                    id: id.clone(),
                    ..AgentInfo::default()
                });
            }
            answers.push((waiter, fits));
        }
        let count = batch.len();
        let saved = self.change(|agents| ((), put_all(agents, batch)));
        if count > 0 && saved.is_ok() {
            info!(self.log, "agents registered by their first heartbeat (auto_register)"; "count" => count);
        }
        let limit = self.auto_register_limit.min(self.max_agents);
        for (waiter, fits) in answers {
            let answer = match (&saved, fits) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), true) => Ok(()),
                (Ok(()), false) => Err(RegistryError::Full(limit)),
            };
            let _ = waiter.send(answer);
        }
    }

    /// Writes `registry.json` again if it vanished.
    fn check_file(&mut self) {
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

/// Adds (or replaces) `batch` in `agents`; the log entries that record it.
fn put_all(agents: &mut AgentMap, batch: Vec<AgentInfo>) -> Vec<LogEntry> {
    batch
        .into_iter()
        .map(|info| {
            agents.insert(info.id.clone(), Arc::new(info.clone()));
            LogEntry::Put(Box::new(info))
        })
        .collect()
}

/// Applies `dir/registry.log`, if any, to `map`; a damaged line (a write cut short) is skipped.
fn apply_change_log(dir: &Path, map: &mut AgentMap, report: &mut RegistryLoad) -> Result<(), RegistryError> {
    let path = dir.join(REGISTRY_LOG);
    let bytes = match data_dir::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(RegistryError::ReadFailed {
                path,
                source: Arc::new(e),
            })
        }
    };
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<LogEntry>(line) {
            Ok(LogEntry::Put(mut info)) if is_valid_agent_id(&info.id) => {
                info.clamp_timing();
                map.insert(info.id.clone(), Arc::new(*info));
                report.log_entries += 1;
            }
            Ok(LogEntry::Del(id)) => {
                map.remove(&id);
                report.log_entries += 1;
            }
            Ok(LogEntry::Put(_)) | Err(_) => report.log_damaged += 1,
        }
    }
    Ok(())
}

fn build_map(agents: impl IntoIterator<Item = AgentInfo>) -> Result<AgentMap, RegistryError> {
    let mut map = AgentMap::new();
    for info in agents {
        if !is_valid_agent_id(&info.id) {
            return Err(RegistryError::InvalidId(info.id));
        }
        if map.contains_key(&info.id) {
            return Err(RegistryError::Duplicate(info.id));
        }
        map.insert(info.id.clone(), Arc::new(info));
    }
    Ok(map)
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(dir) = self.dir.clone() {
            if let Err(e) = file_watch::start(dir, ctx.address()) {
                warn!(self.log, "could not watch data_dir for a removed registry.json; it is written again only at the next change";
                    "error" => %e, "what_to_do" => "nothing, unless data_dir may be removed while heartbeatd runs");
            }
        }
    }
}

impl Handler<file_watch::CheckFileSoon> for Registry {
    type Result = ();

    fn handle(&mut self, _: file_watch::CheckFileSoon, ctx: &mut Context<Self>) {
        if !self.file_check_pending {
            self.file_check_pending = true;
            ctx.run_later(file_watch::FILE_CHECK_DELAY, |act, _| {
                act.file_check_pending = false;
                act.check_file();
            });
        }
    }
}

/// Adds agents, all or none. Answered after the snapshot shows them.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct Register(pub Vec<AgentInfo>);

impl Handler<Register> for Registry {
    type Result = Result<(), RegistryError>;

    fn handle(&mut self, Register(batch): Register, _: &mut Context<Self>) -> Self::Result {
        let current = self.agents();
        let mut seen = BTreeSet::new();
        for (index, info) in batch.iter().enumerate() {
            if !is_valid_agent_id(&info.id) {
                let reason = RegistryError::InvalidId(info.id.clone()).to_string();
                return Err(RegistryError::InvalidEntry { index, reason });
            }
            if let Err(reason) = info.validate_details() {
                return Err(RegistryError::InvalidEntry { index, reason });
            }
            if current.contains_key(&info.id) || !seen.insert(info.id.as_str()) {
                return Err(RegistryError::Duplicate(info.id.clone()));
            }
        }
        self.check_room(current.len(), batch.len())?;
        self.change(|agents| ((), put_all(agents, batch)))
    }
}

/// Registers one agent by its first heartbeat (`auto_register`): answered once it is saved
/// and published, together with the others of its [`AUTO_REGISTER_WINDOW`]. `Ok` if it is
/// registered already; [`RegistryError::Full`] past `auto_register_limit`.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct AutoRegister(pub String);

impl Handler<AutoRegister> for Registry {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, AutoRegister(id): AutoRegister, ctx: &mut Context<Self>) -> Self::Result {
        if self.agents().contains_key(&id) {
            return Box::pin(async { Ok(()) });
        }
        if !is_valid_agent_id(&id) {
            return Box::pin(async move { Err(RegistryError::InvalidId(id)) });
        }
        let (tx, rx) = oneshot::channel();
        if self.pending_auto.is_empty() {
            ctx.run_later(AUTO_REGISTER_WINDOW, |act, _| act.apply_pending_auto());
        }
        self.pending_auto.push((id, tx));
        Box::pin(async move { rx.await.unwrap_or(Err(RegistryError::NotRunning)) })
    }
}

/// Changes an agent's record (a merge patch, see [`AgentChange`]); answers the agent as it is now.
#[derive(Message, Default)]
#[rtype(result = "Result<AgentInfo, RegistryError>")]
pub struct UpdateInfo {
    pub id: String,
    pub change: AgentChange,
}

impl Handler<UpdateInfo> for Registry {
    type Result = Result<AgentInfo, RegistryError>;

    fn handle(&mut self, msg: UpdateInfo, _: &mut Context<Self>) -> Self::Result {
        if self.config_owned.contains(&msg.id) {
            return Err(RegistryError::ConfigOwned(msg.id));
        }
        let Some(info) = self.agents().get(&msg.id).map(|current| msg.change.applied_to(current)) else {
            return Err(RegistryError::NotFound(msg.id));
        };
        let info = info.map_err(RegistryError::Invalid)?;
        info.validate_details().map_err(RegistryError::Invalid)?;
        let updated = info.clone();
        self.change(|agents| {
            agents.insert(info.id.clone(), Arc::new(info.clone()));
            ((), vec![LogEntry::Put(Box::new(info))])
        })?;
        Ok(updated)
    }
}

/// Applies `[[agents]]` of a reloaded configuration (SIGHUP), as at start-up (see
/// [`config_owned`]); answers what changed. Entries are validated like every registration
/// (the settings did that already); nothing changes on error.
#[derive(Message)]
#[rtype(result = "Result<config_owned::ConfigChanges, RegistryError>")]
pub struct SyncConfigAgents(pub Vec<AgentInfo>);

impl Handler<SyncConfigAgents> for Registry {
    type Result = Result<config_owned::ConfigChanges, RegistryError>;

    fn handle(&mut self, SyncConfigAgents(agents): SyncConfigAgents, _: &mut Context<Self>) -> Self::Result {
        for info in &agents {
            info.validate().map_err(RegistryError::Invalid)?;
        }
        let current = self.agents();
        let mut next = current.by_id.clone();
        let (owned, changes) = config_owned::apply(&mut next, &self.config_owned, agents);
        if changes.is_empty() && owned == self.config_owned {
            return Ok(changes);
        }
        let added = next.len().saturating_sub(current.len());
        if added > 0 {
            self.check_room(current.len(), added)?;
        }
        let before = std::mem::replace(&mut self.config_owned, owned);
        // The owned set lives in registry.json only: write it whole.
        if let Err(e) = self.compact(&next) {
            self.config_owned = before;
            return Err(e);
        }
        self.published.store(Arc::new(AgentSet::new(next)));
        Ok(changes)
    }
}

/// Removes one agent. Answered after the snapshot no longer shows it.
#[derive(Message)]
#[rtype(result = "Result<AgentInfo, RegistryError>")]
pub struct Unregister(pub String);

impl Handler<Unregister> for Registry {
    type Result = Result<AgentInfo, RegistryError>;

    fn handle(&mut self, Unregister(id): Unregister, _: &mut Context<Self>) -> Self::Result {
        if self.config_owned.contains(&id) {
            return Err(RegistryError::ConfigOwned(id));
        }
        if !self.agents().contains_key(&id) {
            return Err(RegistryError::NotFound(id));
        }
        Ok(self
            .change(|agents| (agents.remove(&id), vec![LogEntry::Del(id.clone())]))?
            .map(Arc::unwrap_or_clone)
            .expect("present: checked above"))
    }
}

/// Every registered agent, sorted by id.
#[cfg(any(test, feature = "testkit"))]
#[derive(Message)]
#[rtype(result = "Vec<AgentInfo>")]
pub struct List;

#[cfg(any(test, feature = "testkit"))]
impl Handler<List> for Registry {
    type Result = MessageResult<List>;

    fn handle(&mut self, _: List, _: &mut Context<Self>) -> Self::Result {
        let mut all: Vec<_> = self.agents().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        MessageResult(all)
    }
}

/// How many agents are registered.
#[cfg(any(test, feature = "testkit"))]
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Count;

#[cfg(any(test, feature = "testkit"))]
impl Handler<Count> for Registry {
    type Result = usize;

    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize {
        self.agents().len()
    }
}

/// Whether one agent is registered. Hot paths use [`RegistrySnapshot::contains`] instead.
#[cfg(any(test, feature = "testkit"))]
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Exists(pub String);

#[cfg(any(test, feature = "testkit"))]
impl Handler<Exists> for Registry {
    type Result = bool;

    fn handle(&mut self, Exists(id): Exists, _: &mut Context<Self>) -> bool {
        self.agents().contains_key(&id)
    }
}

#[cfg(test)]
mod tests;
