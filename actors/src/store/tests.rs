//! The Store's tests: checkpoints and reloads, journal replay, compaction, damaged files,
//! failed writes, and the messages.

use super::*;
use crate::model::agent::{AgentInfo, ResourceSample};
use crate::model::heartbeat::Heartbeat;
use crate::store::journal::JournalRecord;

fn quiet() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

/// An agent that has sent `heartbeats` heartbeats, and the samples they produced.
fn agent(id: &str, heartbeats: u64) -> (AgentState, Vec<ResourceSample>) {
    let mut state = AgentState::new(&AgentInfo {
        id: id.into(),
        name: "n".into(),
        agent_type: "custom".into(),
        ..Default::default()
    });
    let samples = (0..heartbeats)
        .map(|n| {
            let at = chrono::DateTime::from_timestamp(1_700_000_000 + n as i64, 0).unwrap();
            state.record(&Heartbeat {
                agent_id: id.into(),
                timestamp: at,
                received_at: at,
                pid: 7,
                cpu: 12.5,
                memory: n,
                status: None,
            })
        })
        .collect();
    (state, samples)
}

fn lower_open_files_limit(soft: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_cur.min(soft);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

fn delta(id: &str, heartbeats: u64) -> AgentDelta {
    let (state, samples) = agent(id, heartbeats);
    AgentDelta {
        state,
        samples,
        compact_to: None,
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_persisted_batch_reloads_with_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
    // More agents than are synced one by one, so the syncfs path runs; and more files than
    // the descriptor limit, which a batch must not need. (Lowered for this process: other
    // tests here hold a handful of files at most.)
    lower_open_files_limit(512);
    let deltas: Vec<_> = (0..1500).map(|i| delta(&format!("a{i:04}"), 3)).collect();
    let report = store.checkpoint(&deltas, 0).unwrap();
    assert_eq!((report.agents, report.records), (1500, 4500));

    let mut reopened = FileMetadataStore::open(dir.path(), quiet()).unwrap();
    let loaded = reopened.load_all().unwrap();
    assert_eq!(loaded.agents.len(), 1500);
    assert_eq!(loaded.agents[0], deltas[0].state);
    let history = reopened.read_history("a0000", 1440).unwrap();
    assert_eq!(history.samples, deltas[0].samples);
    assert_eq!(
        reopened.read_history("a0000", 2).unwrap().samples,
        deltas[0].samples[1..]
    );
    // And the small path: a batch synced file by file.
    store.checkpoint(&[delta("small", 2)], 0).unwrap();
    assert_eq!(reopened.read_history("small", 10).unwrap().samples.len(), 2);
    assert_eq!(reopened.get("zzz").unwrap(), None);
}

#[test]
fn the_journal_is_replayed_until_a_checkpoint_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
    let mut journal = store.take_journal().unwrap();
    let record = |n: u64| JournalRecord {
        agent_id: "a".into(),
        seq: n,
        timestamp: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        received_at: chrono::DateTime::from_timestamp(1_700_000_001, 0).unwrap(),
        cpu: 1.0,
        memory: n,
        pid: 9,
        status: None,
    };
    journal.append(&[record(1), record(2)]).unwrap();
    drop((store, journal)); // as after a crash: no checkpoint

    let mut reopened = FileMetadataStore::open(dir.path(), quiet()).unwrap();
    let loaded = reopened.load_all().unwrap();
    assert!(loaded.agents.is_empty());
    assert_eq!(loaded.replay.records, [record(1), record(2)]);

    // A checkpoint covers them: the next start replays nothing.
    let mut journal = reopened.take_journal().unwrap();
    let journal_from = journal.rotate();
    reopened.checkpoint(&[delta("a", 2)], journal_from).unwrap();
    journal.append(&[record(3)]).unwrap();
    drop((reopened, journal));
    let mut third = FileMetadataStore::open(dir.path(), quiet()).unwrap();
    let loaded = third.load_all().unwrap();
    assert_eq!(loaded.agents.len(), 1);
    assert_eq!(loaded.replay.records, [record(3)]);
    let segments = fs::read_dir(dir.path().join("journal")).unwrap().count();
    assert_eq!(segments, 1, "covered segments are removed");
}

#[test]
fn compaction_keeps_the_newest_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
    let mut d = delta("a", 25);
    d.compact_to = Some(10);
    store.checkpoint(&[d], 0).unwrap();
    let seqs: Vec<_> = store
        .read_history("a", 100)
        .unwrap()
        .samples
        .iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(seqs, (16..=25).collect::<Vec<_>>());
}

#[test]
fn corrupt_state_files_are_moved_aside_and_temp_files_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
    store.checkpoint(&[delta("good", 2)], 0).unwrap();
    let agents = store.agents_dir().to_owned();
    fs::write(agents.join("torn.json"), b"{\"format_version\":2,\"id\":\"to").unwrap();
    fs::write(
        agents.join("other.json"),
        serde_json::to_vec(&agent("good", 1).0).unwrap(),
    )
    .unwrap();
    fs::write(agents.join(".good.json.tmp-abc"), b"partial").unwrap();
    fs::write(dir.path().join("history").join(".good.log.tmp-abc"), b"partial").unwrap();

    let loaded = store.load_all().unwrap();

    assert_eq!(
        loaded.agents.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["good"]
    );
    assert_eq!(loaded.corrupt_files, 2);
    assert_eq!(loaded.temp_files_removed, 2);
    let names = names(&agents);
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[0], "good.json");
    assert!(names[1].starts_with("other.json.corrupt-"), "{names:?}");
    assert!(names[2].starts_with("torn.json.corrupt-"), "{names:?}");
    assert_eq!(self::names(&dir.path().join("history")), ["good.log"]);
}

#[test]
fn open_reports_an_unwritable_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    let err = FileMetadataStore::open(&file, quiet()).err().expect("must fail");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn a_failed_persist_leaves_no_temp_file_and_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = FileMetadataStore::open(dir.path(), quiet()).unwrap();
    store.checkpoint(&[delta("a", 1)], 0).unwrap();
    // A directory where b's history log should go makes the append fail.
    fs::create_dir(dir.path().join("history").join("b.log")).unwrap();
    assert!(store.checkpoint(&[delta("a", 2), delta("b", 1)], 0).is_err());
    assert_eq!(store.get("a").unwrap().unwrap().heartbeat_count, 1, "old state kept");
    assert_eq!(names(store.agents_dir()), ["a.json"]);
}

#[actix_rt::test]
async fn messages_get_save_update_delete_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let addr = FileMetadataStore::open(dir.path(), quiet()).unwrap().start();

    let checkpoint = Checkpoint {
        deltas: vec![delta("a", 2)],
        journal_from: 0,
    };
    addr.send(checkpoint).await.unwrap().unwrap();
    addr.send(Save(agent("b", 0).0)).await.unwrap().unwrap();
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
    assert_eq!(
        addr.send(Get("a".into())).await.unwrap().unwrap().unwrap().name,
        "renamed"
    );
    let history = addr
        .send(ReadHistory {
            id: "a".into(),
            limit: 10,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(history.samples.len(), 2);

    assert!(addr.send(Delete("a".into())).await.unwrap().unwrap());
    assert!(!addr.send(Delete("a".into())).await.unwrap().unwrap());
    assert!(addr.send(Get("a".into())).await.unwrap().unwrap().is_none());
    assert!(addr
        .send(ReadHistory {
            id: "a".into(),
            limit: 10
        })
        .await
        .unwrap()
        .unwrap()
        .samples
        .is_empty());
    addr.send(Flush).await.unwrap().unwrap();
}
