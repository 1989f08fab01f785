//! The Store actor (FileMetadataStore): one JSON file per agent, `data_dir/agents/<id>.json`.
//!
//! It runs on its own thread (a one-thread SyncArbiter) because every write blocks on fsync.
//! One thread also means writes for an agent land in the order the Manager sent them, so an
//! older state can never overwrite a newer one (the original's ten workers raced here).
//!
//! Messages: [`LoadAll`] at start-up, then [`Get`], [`Save`], [`Update`], [`Delete`], [`Flush`].

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use actix::prelude::*;
use chrono::Utc;
use slog::{error, info, Logger};

use crate::agent::AgentMetadata;
use crate::atomic_file::{is_temp_file, sync_dir, write_atomically};

/// A store operation failed; says which file and why.
#[derive(Debug, thiserror::Error)]
#[error("could not {action} {path}: {source}")]
pub struct StoreError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl StoreError {
    fn new(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Owns `data_dir/agents/`.
#[derive(Clone)]
pub struct FileMetadataStore {
    agents_dir: PathBuf,
    log: Logger,
}

impl FileMetadataStore {
    /// Opens (creating if needed) `data_dir/agents` and proves it is writable with a probe
    /// write, so an unusable data directory is reported at start-up, not at the first heartbeat.
    pub fn open(data_dir: &Path, log: Logger) -> Result<Self, StoreError> {
        let agents_dir = data_dir.join("agents");
        fs::create_dir_all(&agents_dir).map_err(|e| StoreError::new("create", &agents_dir, e))?;
        let probe = ".write-probe";
        write_atomically(&agents_dir, probe, b"probe")
            .and_then(|()| fs::remove_file(agents_dir.join(probe)))
            .map_err(|e| StoreError::new("write to", &agents_dir, e))?;
        Ok(Self { agents_dir, log })
    }

    pub fn agents_dir(&self) -> &Path {
        &self.agents_dir
    }

    fn file_name(id: &str) -> String {
        format!("{id}.json")
    }

    fn path(&self, id: &str) -> PathBuf {
        self.agents_dir.join(Self::file_name(id))
    }

    /// Reads every agent file; moves unparseable ones aside and removes leftover temp files.
    pub fn load_all(&self) -> Result<LoadedAgents, StoreError> {
        let dir = &self.agents_dir;
        let mut loaded = LoadedAgents::default();
        let entries = fs::read_dir(dir).map_err(|e| StoreError::new("list", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::new("list", dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if is_temp_file(&name) {
                info!(self.log, "removing a temp file left by an interrupted write"; "path" => %path.display());
                fs::remove_file(&path).map_err(|e| StoreError::new("remove", &path, e))?;
                loaded.temp_files_removed += 1;
                continue;
            }
            if path.extension() != Some(OsStr::new("json")) {
                continue;
            }
            match self.read(&path) {
                Ok(meta) if Some(meta.id.as_str()) == path.file_stem().and_then(OsStr::to_str) => {
                    loaded.agents.push(meta)
                }
                Ok(meta) => {
                    let reason = format!("it holds agent {:?}", meta.id);
                    self.set_aside(&path, &reason)?;
                    loaded.corrupt_files += 1;
                }
                Err(ReadError::Parse(reason)) => {
                    self.set_aside(&path, &reason)?;
                    loaded.corrupt_files += 1;
                }
                Err(ReadError::Io(e)) => return Err(StoreError::new("read", &path, e)),
            }
        }
        loaded.agents.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(loaded)
    }

    fn read(&self, path: &Path) -> Result<AgentMetadata, ReadError> {
        let bytes = fs::read(path).map_err(ReadError::Io)?;
        serde_json::from_slice(&bytes).map_err(|e| ReadError::Parse(e.to_string()))
    }

    /// Renames a damaged file to `<name>.corrupt-<time>` so it is kept for inspection and no
    /// longer loaded.
    fn set_aside(&self, path: &Path, reason: &str) -> Result<(), StoreError> {
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{stamp}"));
        let aside = PathBuf::from(aside);
        fs::rename(path, &aside).map_err(|e| StoreError::new("move aside", path, e))?;
        error!(self.log, "agent file is damaged and was moved aside; the agent starts without its saved state";
            "path" => %path.display(), "moved_to" => %aside.display(), "reason" => reason,
            "what_to_do" => "inspect or delete the moved file; restore a backup as <id>.json while heartbeatd is stopped");
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<AgentMetadata>, StoreError> {
        let path = self.path(id);
        match self.read(&path) {
            Ok(meta) => Ok(Some(meta)),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(ReadError::Io(e)) => Err(StoreError::new("read", &path, e)),
            Err(ReadError::Parse(reason)) => Err(StoreError::new(
                "parse",
                &path,
                io::Error::new(io::ErrorKind::InvalidData, reason),
            )),
        }
    }

    pub fn save(&self, meta: &AgentMetadata) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(meta)
            .map_err(|e| StoreError::new("encode", self.path(&meta.id), e.into()))?;
        write_atomically(&self.agents_dir, &Self::file_name(&meta.id), &bytes)
            .map_err(|e| StoreError::new("write", self.path(&meta.id), e))
    }

    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.agents_dir)
                    .map_err(|e| StoreError::new("sync", &self.agents_dir, e))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::new("remove", &path, e)),
        }
    }
}

enum ReadError {
    Io(io::Error),
    Parse(String),
}

impl Actor for FileMetadataStore {
    type Context = SyncContext<Self>;

    fn started(&mut self, _: &mut SyncContext<Self>) {
        slog::debug!(self.log, "store started"; "dir" => %self.agents_dir.display());
    }
}

/// What [`LoadAll`] found on disk.
#[derive(Debug, Default)]
pub struct LoadedAgents {
    pub agents: Vec<AgentMetadata>,
    /// Files that did not parse and were moved aside.
    pub corrupt_files: usize,
    /// Temp files of interrupted writes that were removed.
    pub temp_files_removed: usize,
}

/// Reads every agent file at start-up.
#[derive(Message)]
#[rtype(result = "Result<LoadedAgents, StoreError>")]
pub struct LoadAll;

impl Handler<LoadAll> for FileMetadataStore {
    type Result = Result<LoadedAgents, StoreError>;

    fn handle(&mut self, _: LoadAll, _: &mut SyncContext<Self>) -> Self::Result {
        self.load_all()
    }
}

/// Reads one agent's file; `None` if it has none.
#[derive(Message)]
#[rtype(result = "Result<Option<AgentMetadata>, StoreError>")]
pub struct Get(pub String);

impl Handler<Get> for FileMetadataStore {
    type Result = Result<Option<AgentMetadata>, StoreError>;

    fn handle(&mut self, Get(id): Get, _: &mut SyncContext<Self>) -> Self::Result {
        self.get(&id)
    }
}

/// Replaces one agent's file, atomically and durably. Answered once it is on disk.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Save(pub AgentMetadata);

impl Handler<Save> for FileMetadataStore {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, Save(meta): Save, _: &mut SyncContext<Self>) -> Self::Result {
        self.save(&meta)
    }
}

/// Read-modify-write of one agent's file, in one step of the store's thread.
#[derive(Message)]
#[rtype(result = "Result<Option<AgentMetadata>, StoreError>")]
pub struct Update {
    pub id: String,
    /// Applied to the stored metadata; not called when the agent has no file.
    pub change: Box<dyn FnOnce(&mut AgentMetadata) + Send>,
}

impl Handler<Update> for FileMetadataStore {
    type Result = Result<Option<AgentMetadata>, StoreError>;

    fn handle(&mut self, Update { id, change }: Update, _: &mut SyncContext<Self>) -> Self::Result {
        let Some(mut meta) = self.get(&id)? else {
            return Ok(None);
        };
        change(&mut meta);
        self.save(&meta)?;
        Ok(Some(meta))
    }
}

/// Removes one agent's file; `false` if it had none.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Delete(pub String);

impl Handler<Delete> for FileMetadataStore {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, Delete(id): Delete, _: &mut SyncContext<Self>) -> Self::Result {
        self.delete(&id)
    }
}

/// Makes everything written so far durable. Every [`Save`] is already durable when answered;
/// this is the last step of shutdown and also proves the directory is still reachable.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Flush;

impl Handler<Flush> for FileMetadataStore {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: Flush, _: &mut SyncContext<Self>) -> Self::Result {
        sync_dir(&self.agents_dir).map_err(|e| StoreError::new("sync", &self.agents_dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentInfo;
    use crate::heartbeat::Heartbeat;

    fn quiet() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    fn meta(id: &str, heartbeats: u64) -> AgentMetadata {
        let mut meta = AgentMetadata::new(&AgentInfo {
            id: id.into(),
            name: "n".into(),
            agent_type: "custom".into(),
        });
        for n in 0..heartbeats {
            let at = chrono::DateTime::from_timestamp(1_700_000_000 + n as i64, 0).unwrap();
            meta.record(
                &Heartbeat {
                    agent_id: id.into(),
                    timestamp: at,
                    received_at: at,
                    pid: 7,
                    cpu: 12.5,
                    memory: n,
                    status: None,
                },
                1440,
            );
        }
        meta
    }

    #[test]
    fn save_then_reload_gives_back_the_same_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        let a = meta("a", 3);
        store.save(&a).unwrap();
        store.save(&meta("b", 1)).unwrap();

        let reopened = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        let loaded = reopened.load_all().unwrap();
        assert_eq!(loaded.agents.len(), 2);
        assert_eq!(loaded.agents[0], a);
        assert_eq!(reopened.get("a").unwrap(), Some(a));
        assert_eq!(reopened.get("zzz").unwrap(), None);
    }

    #[test]
    fn corrupt_files_are_moved_aside_and_temp_files_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
        store.save(&meta("good", 2)).unwrap();
        let agents = store.agents_dir().to_owned();
        fs::write(
            agents.join("torn.json"),
            b"{\"format_version\":1,\"id\":\"to",
        )
        .unwrap();
        fs::write(
            agents.join("other.json"),
            serde_json::to_vec(&meta("good", 1)).unwrap(),
        )
        .unwrap();
        fs::write(agents.join(".good.json.tmp-abc"), b"partial").unwrap();

        let loaded = store.load_all().unwrap();

        assert_eq!(
            loaded
                .agents
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
            ["good"]
        );
        assert_eq!(loaded.corrupt_files, 2);
        assert_eq!(loaded.temp_files_removed, 1);
        let mut names: Vec<_> = fs::read_dir(&agents)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "good.json");
        assert!(names[1].starts_with("other.json.corrupt-"), "{names:?}");
        assert!(names[2].starts_with("torn.json.corrupt-"), "{names:?}");
    }

    #[test]
    fn open_reports_an_unwritable_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let err = FileMetadataStore::open(&file, quiet())
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    #[actix_rt::test]
    async fn messages_get_save_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let addr = SyncArbiter::start(1, move || FileMetadataStore::open(&path, quiet()).unwrap());

        addr.send(Save(meta("a", 1))).await.unwrap().unwrap();
        let updated = addr
            .send(Update {
                id: "a".into(),
                change: Box::new(|m| m.name = "renamed".into()),
            })
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(updated.name, "renamed");
        let got = addr.send(Get("a".into())).await.unwrap().unwrap().unwrap();
        assert_eq!(got.name, "renamed");
        assert_eq!(got.history.len(), 1);
        let missing = addr
            .send(Update {
                id: "nope".into(),
                change: Box::new(|_| panic!("must not be called")),
            })
            .await
            .unwrap()
            .unwrap();
        assert!(missing.is_none());

        assert!(addr.send(Delete("a".into())).await.unwrap().unwrap());
        assert!(!addr.send(Delete("a".into())).await.unwrap().unwrap());
        assert!(addr.send(Get("a".into())).await.unwrap().unwrap().is_none());
        addr.send(Flush).await.unwrap().unwrap();
    }
}
