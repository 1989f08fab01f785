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
//! | `mod.rs` | the Registry actor, its errors, its messages |
//! | `snapshot.rs` | the read view: [`AgentSet`], [`RegistrySnapshot`], listing candidates |
//! | `load.rs` | loading at start-up: `registry.json`, then `registry.log`, repairs |
//! | `persist.rs` | saving: appending to `registry.log`, compacting into `registry.json` |
//! | [`config_owned`] | which agents the configuration owns, and applying it |
//! | [`file_watch`] | noticing that `registry.json` was removed |

pub mod config_owned;
pub mod file_watch;
mod load;
mod persist;
mod snapshot;

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use slog::{info, warn, Logger};

use actix::prelude::*;
use arc_swap::ArcSwap;

use crate::model::agent::{is_valid_agent_id, AgentChange, AgentInfo};
use load::build_map;
pub use load::RegistryLoad;
use persist::LogEntry;
use snapshot::AgentMap;
pub use snapshot::{AgentSet, CandidateFilter, Candidates, RegistrySnapshot};

/// The registry's file name under `data_dir`.
pub const REGISTRY_FILE: &str = "registry.json";
/// Changes since `registry.json` was written, one JSON line each.
pub const REGISTRY_LOG: &str = "registry.log";
/// `auto_register` ids arriving within this window share one log write and one publish.
pub const AUTO_REGISTER_WINDOW: Duration = Duration::from_millis(2);

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

    fn agents(&self) -> Arc<AgentSet> {
        self.published.load_full()
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
