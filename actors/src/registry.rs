//! The Registry actor: owns the set of agents allowed to report.
//!
//! Every change publishes a new immutable [`RegistrySnapshot`] map, so the heartbeat hot path
//! checks `agent_id` with one atomic load and no message round-trip. A change is visible to
//! readers by the time its message has been answered.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use arc_swap::ArcSwap;

use crate::agent::{is_valid_agent_id, AgentInfo};

type AgentMap = HashMap<String, AgentInfo>;

/// A read-only view of the registry, cheap to clone and to query from any thread.
#[derive(Debug, Clone)]
pub struct RegistrySnapshot {
    current: Arc<ArcSwap<AgentMap>>,
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
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("agent id {0:?} is invalid: use 1 to 128 characters from A-Z a-z 0-9 . _ -")]
    InvalidId(String),
    #[error("agent {0:?} is already registered")]
    Duplicate(String),
    #[error("agent {0:?} is not registered")]
    NotFound(String),
}

/// Owns the agent set; the only writer of the snapshot.
///
/// The published map is the only copy: a change builds the next map from it and publishes
/// that (changes are rare admin operations; 100k agents are not worth keeping twice).
pub struct Registry {
    published: Arc<ArcSwap<AgentMap>>,
}

impl Registry {
    /// A registry holding `agents`. Fails on an invalid or duplicate id, naming it.
    pub fn new(agents: impl IntoIterator<Item = AgentInfo>) -> Result<Self, RegistryError> {
        let mut map = AgentMap::new();
        for info in agents {
            if !is_valid_agent_id(&info.id) {
                return Err(RegistryError::InvalidId(info.id));
            }
            if map.contains_key(&info.id) {
                return Err(RegistryError::Duplicate(info.id));
            }
            map.insert(info.id.clone(), info);
        }
        Ok(Self {
            published: Arc::new(ArcSwap::from_pointee(map)),
        })
    }

    /// The read side, for the HTTP layer and the Manager.
    pub fn snapshot(&self) -> RegistrySnapshot {
        RegistrySnapshot {
            current: Arc::clone(&self.published),
        }
    }

    fn agents(&self) -> Arc<AgentMap> {
        self.published.load_full()
    }

    /// Publishes the current map changed by `change`.
    fn change<T>(&self, change: impl FnOnce(&mut AgentMap) -> T) -> T {
        let mut next = AgentMap::clone(&self.agents());
        let result = change(&mut next);
        self.published.store(Arc::new(next));
        result
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

/// Adds one agent. Answered after the snapshot shows it.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct Register(pub AgentInfo);

impl Handler<Register> for Registry {
    type Result = Result<(), RegistryError>;

    fn handle(&mut self, Register(info): Register, _: &mut Context<Self>) -> Self::Result {
        if !is_valid_agent_id(&info.id) {
            return Err(RegistryError::InvalidId(info.id));
        }
        if self.agents().contains_key(&info.id) {
            return Err(RegistryError::Duplicate(info.id));
        }
        self.change(|agents| agents.insert(info.id.clone(), info));
        Ok(())
    }
}

/// Removes one agent. Answered after the snapshot no longer shows it.
#[derive(Message)]
#[rtype(result = "Result<AgentInfo, RegistryError>")]
pub struct Unregister(pub String);

impl Handler<Unregister> for Registry {
    type Result = Result<AgentInfo, RegistryError>;

    fn handle(&mut self, Unregister(id): Unregister, _: &mut Context<Self>) -> Self::Result {
        if !self.agents().contains_key(&id) {
            return Err(RegistryError::NotFound(id));
        }
        Ok(self
            .change(|agents| agents.remove(&id))
            .expect("present: checked above"))
    }
}

/// Every registered agent, sorted by id.
#[derive(Message)]
#[rtype(result = "Vec<AgentInfo>")]
pub struct List;

impl Handler<List> for Registry {
    type Result = MessageResult<List>;

    fn handle(&mut self, _: List, _: &mut Context<Self>) -> Self::Result {
        let mut all: Vec<_> = self.agents().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        MessageResult(all)
    }
}

/// How many agents are registered.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Count;

impl Handler<Count> for Registry {
    type Result = usize;

    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize {
        self.agents().len()
    }
}

/// Whether one agent is registered. Hot paths use [`RegistrySnapshot::contains`] instead.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Exists(pub String);

impl Handler<Exists> for Registry {
    type Result = bool;

    fn handle(&mut self, Exists(id): Exists, _: &mut Context<Self>) -> bool {
        self.agents().contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> AgentInfo {
        AgentInfo {
            id: id.into(),
            name: format!("{id} name"),
            agent_type: "custom".into(),
        }
    }

    #[test]
    fn new_refuses_duplicates_and_invalid_ids() {
        assert_eq!(
            Registry::new([info("a"), info("a")]).err(),
            Some(RegistryError::Duplicate("a".into()))
        );
        assert_eq!(
            Registry::new([info("a/b")]).err(),
            Some(RegistryError::InvalidId("a/b".into()))
        );
    }

    #[actix_rt::test]
    async fn changes_are_visible_in_the_snapshot_once_answered() {
        let registry = Registry::new([info("a")]).unwrap();
        let snapshot = registry.snapshot();
        let addr = registry.start();

        assert!(snapshot.contains("a"));
        assert!(!snapshot.contains("b"));

        addr.send(Register(info("b"))).await.unwrap().unwrap();
        assert!(snapshot.contains("b"));
        assert_eq!(addr.send(Count).await.unwrap(), 2);
        assert!(addr.send(Exists("b".into())).await.unwrap());
        assert_eq!(
            addr.send(Register(info("b"))).await.unwrap(),
            Err(RegistryError::Duplicate("b".into()))
        );

        let removed = addr.send(Unregister("a".into())).await.unwrap().unwrap();
        assert_eq!(removed, info("a"));
        assert!(!snapshot.contains("a"));
        let ids: Vec<_> = addr.send(List).await.unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(ids, ["b"]);
        assert_eq!(
            addr.send(Unregister("a".into())).await.unwrap(),
            Err(RegistryError::NotFound("a".into()))
        );
    }
}
