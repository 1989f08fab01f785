//! Unit tests of the Manager.

use super::*;
use chrono::Utc;

fn quiet() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

fn heartbeat(id: &str, memory: u64) -> Heartbeat {
    Heartbeat {
        agent_id: id.into(),
        timestamp: Utc::now(),
        received_at: Utc::now(),
        pid: 1,
        cpu: 1.0,
        memory,
        status: None,
    }
}

async fn update(manager: &Addr<Manager>, batch: &[Heartbeat]) -> BatchOutcome {
    manager.send(UpdateHeartbeats(batch.to_vec())).await.unwrap().unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);

fn start(dir: &std::path::Path, flush_interval: Duration) -> (Addr<Manager>, Addr<FileMetadataStore>) {
    let mut opened = FileMetadataStore::open(dir, quiet()).unwrap();
    let loaded = opened.load_all().unwrap();
    let journal = opened.start_journal_writer();
    let store = opened.start();
    let registry = Registry::new([AgentInfo {
        id: "a".into(),
        name: "A".into(),
        agent_type: "custom".into(),
        ..Default::default()
    }])
    .unwrap();
    let view = registry.snapshot();
    let policy = ManagerPolicy {
        history_len: 3,
        flush_interval,
        checkpoint_interval: HOUR,
        max_clock_skew: HOUR,
    };
    let manager = Manager::new(policy, loaded, registry.start(), view, store.clone(), journal, quiet()).start();
    (manager, store)
}

/// The Manager's answer to `GetHistory` for agent `a`.
async fn history(manager: &Addr<Manager>, limit: usize) -> Vec<ResourceSample> {
    let id = "a".to_owned();
    manager.send(GetHistory { id, limit }).await.unwrap().unwrap().unwrap()
}

/// Agent `a`'s history as the Store reads it from disk.
async fn on_disk(store: &Addr<FileMetadataStore>) -> Vec<ResourceSample> {
    let id = "a".to_owned();
    store
        .send(store::ReadHistory { id, limit: 100 })
        .await
        .unwrap()
        .unwrap()
        .samples
}

fn memories(samples: &[ResourceSample]) -> Vec<u64> {
    samples.iter().map(|s| s.memory).collect()
}

#[actix_rt::test]
async fn write_through_updates_survive_a_crash_once_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, _) = start(dir.path(), Duration::ZERO);
    for memory in 0..5 {
        update(&manager, &[heartbeat("a", memory)]).await;
    }
    let outcome = update(&manager, &[heartbeat("ghost", 0), heartbeat("a", 5)]).await;
    assert_eq!(outcome.applied, 1);
    assert_eq!(outcome.unknown_agents, ["ghost"]);
    // "Crash": no flush, no checkpoint; start again on the same directory.
    drop(manager);

    let (restarted, _) = start(dir.path(), Duration::ZERO);
    let state = restarted.send(GetAgent("a".into())).await.unwrap().unwrap();
    assert_eq!(state.heartbeat_count, 6, "replayed from the journal");
    let history = history(&restarted, 100).await;
    assert_eq!(memories(&history), [5, 4, 3], "newest first, at most history_len = 3");
}

#[actix_rt::test]
async fn flush_checkpoints_and_a_restart_needs_no_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, store) = start(dir.path(), HOUR);

    for memory in 0..8 {
        update(&manager, &[heartbeat("a", memory)]).await;
    }
    assert!(
        store.send(store::Get("a".into())).await.unwrap().unwrap().is_none(),
        "nothing written yet"
    );
    assert_eq!(manager.send(Flush).await.unwrap().unwrap(), 0);

    let state = store.send(store::Get("a".into())).await.unwrap().unwrap().unwrap();
    assert_eq!(state.heartbeat_count, 8);
    assert_eq!(state.name, "A");
    let on_disk = on_disk(&store).await;
    assert!(on_disk.len() <= 6, "compacted back once over 2 × history_len");
    assert_eq!(memories(&on_disk).last(), Some(&7));

    let mut reopened = FileMetadataStore::open(dir.path(), quiet()).unwrap();
    assert!(
        reopened.load_all().unwrap().replay.records.is_empty(),
        "the checkpoint covers the journal"
    );
}

#[actix_rt::test]
async fn a_fast_agent_keeps_at_most_twice_history_len_samples_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, store) = start(dir.path(), HOUR);
    for memory in 0..100 {
        update(&manager, &[heartbeat("a", memory)]).await;
    }
    let newest = history(&manager, 10).await;
    assert_eq!(memories(&newest), [99, 98, 97], "history_len = 3, newest first");
    assert_eq!(manager.send(Flush).await.unwrap().unwrap(), 0);
    let on_disk = on_disk(&store).await;
    assert!(on_disk.len() <= 6, "{} written for 100 heartbeats", on_disk.len());
    assert_eq!(memories(&on_disk).last(), Some(&99));
    let state = store.send(store::Get("a".into())).await.unwrap().unwrap().unwrap();
    assert_eq!(state.heartbeat_count, 100, "every heartbeat counted");
}

/// Heartbeats `memory` received `offset_ms` after a fixed instant.
fn received(memory: u64, offset_ms: i64) -> Heartbeat {
    let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap() + chrono::Duration::milliseconds(offset_ms);
    Heartbeat {
        timestamp: at,
        received_at: at,
        ..heartbeat("a", memory)
    }
}

fn seqs(samples: &[ResourceSample]) -> Vec<u64> {
    samples.iter().map(|s| s.seq).collect()
}

#[actix_rt::test]
async fn heartbeats_that_arrive_out_of_order_are_kept_in_receive_order_also_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, store) = start(dir.path(), Duration::ZERO);
    // Received 0, 1, 2, but processed 2, 0, 1 (as two workers can deliver them).
    update(&manager, &[received(2, 20)]).await;
    update(&manager, &[received(0, 0), received(1, 10)]).await;

    let mut newest_first = history(&manager, 3).await;
    newest_first.reverse();
    assert_eq!(memories(&newest_first), [0, 1, 2]);
    assert_eq!(seqs(&newest_first), [1, 2, 3]);
    let state = manager.send(GetAgent("a".into())).await.unwrap().unwrap();
    assert_eq!(state.last_memory, Some(2), "the newest received stays the last");

    // "Crash" before any checkpoint: the journal replays to the same order.
    drop(manager);
    let (restarted, _) = start(dir.path(), Duration::ZERO);
    let mut replayed = history(&restarted, 3).await;
    replayed.reverse();
    assert_eq!(memories(&replayed), [0, 1, 2]);
    let state = restarted.send(GetAgent("a".into())).await.unwrap().unwrap();
    assert_eq!((state.heartbeat_count, state.last_memory), (3, Some(2)));

    // And the history file gets them in that order.
    update(&restarted, &[received(3, 30)]).await;
    assert_eq!(restarted.send(Flush).await.unwrap().unwrap(), 0);
    drop(store);
    let reopened = FileMetadataStore::open(dir.path(), quiet()).unwrap().start();
    assert_eq!(memories(&on_disk(&reopened).await), [0, 1, 2, 3]);
}

#[actix_rt::test]
async fn a_failed_checkpoint_keeps_the_data_and_a_later_one_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, store) = start(dir.path(), HOUR);
    // Make the history append fail: a directory where the log file should be.
    let blocker = dir.path().join("history").join("a.log");
    std::fs::create_dir_all(&blocker).unwrap();

    update(&manager, &[heartbeat("a", 1), heartbeat("a", 2)]).await;
    assert!(manager.send(Flush).await.unwrap().is_err());

    std::fs::remove_dir(&blocker).unwrap();
    update(&manager, &[heartbeat("a", 3)]).await;
    assert_eq!(manager.send(Flush).await.unwrap().unwrap(), 0);
    let on_disk = on_disk(&store).await;
    assert_eq!(memories(&on_disk), [1, 2, 3], "nothing lost, nothing twice, in order");
}
