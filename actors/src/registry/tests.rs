//! The Registry actor's tests: changes, the file and its log, auto-registration, limits.
use super::*;
use std::fs::OpenOptions;

fn info(id: &str) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: format!("{id} name"),
        agent_type: "custom".into(),
        ..Default::default()
    }
}

#[test]
fn new_refuses_duplicates_and_invalid_ids() {
    assert!(matches!(
        Registry::new([info("a"), info("a")]).err(),
        Some(RegistryError::Duplicate(id)) if id == "a"
    ));
    assert!(matches!(
        Registry::new([info("a/b")]).err(),
        Some(RegistryError::InvalidId(id)) if id == "a/b"
    ));
}

#[actix_rt::test]
async fn changes_are_visible_in_the_snapshot_once_answered() {
    let registry = Registry::new([info("a")]).unwrap();
    let snapshot = registry.snapshot();
    let addr = registry.start();

    assert!(snapshot.contains("a"));
    assert!(!snapshot.contains("b"));

    addr.send(Register(vec![info("b")])).await.unwrap().unwrap();
    assert!(snapshot.contains("b"));
    assert_eq!(addr.send(Count).await.unwrap(), 2);
    assert!(addr.send(Exists("b".into())).await.unwrap());

    let removed = addr.send(Unregister("a".into())).await.unwrap().unwrap();
    assert_eq!(removed, info("a"));
    assert!(!snapshot.contains("a"));
    let ids: Vec<_> = addr.send(List).await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, ["b"]);
    assert!(matches!(
        addr.send(Unregister("a".into())).await.unwrap(),
        Err(RegistryError::NotFound(id)) if id == "a"
    ));
}

#[actix_rt::test]
async fn a_batch_registers_all_or_none() {
    let registry = Registry::new([info("a")]).unwrap();
    let snapshot = registry.snapshot();
    let addr = registry.start();

    let bad = addr.send(Register(vec![info("b"), info("c d")])).await.unwrap();
    assert!(
        matches!(bad, Err(RegistryError::InvalidEntry { index: 1, .. })),
        "{bad:?}"
    );
    let dup = addr.send(Register(vec![info("b"), info("a")])).await.unwrap();
    assert!(matches!(dup, Err(RegistryError::Duplicate(id)) if id == "a"));
    let twice = addr.send(Register(vec![info("b"), info("b")])).await.unwrap();
    assert!(matches!(twice, Err(RegistryError::Duplicate(id)) if id == "b"));
    assert!(!snapshot.contains("b"), "nothing of a refused batch is registered");

    addr.send(Register(vec![info("b"), info("c")])).await.unwrap().unwrap();
    assert_eq!(snapshot.len(), 3);
}

#[actix_rt::test]
async fn the_file_owns_its_agents_and_the_api_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, report) = Registry::load(dir.path(), [info("from-config"), info("also-config")]).unwrap();
    assert_eq!(report.config.added, ["from-config", "also-config"]);
    let addr = registry.start();
    // The API may not change or delete the file's agents, and keeps its own.
    assert!(matches!(
        addr.send(Unregister("from-config".into())).await.unwrap(),
        Err(RegistryError::ConfigOwned(id)) if id == "from-config"
    ));
    let renamed = UpdateInfo {
        id: "also-config".into(),
        change: AgentChange::of(serde_json::json!({"name": "renamed"})),
    };
    assert!(matches!(
        addr.send(renamed).await.unwrap(),
        Err(RegistryError::ConfigOwned(_))
    ));
    addr.send(Register(vec![info("from-api")])).await.unwrap().unwrap();

    // Restart with an edited file: one agent changed, one gone, one new.
    let edited = AgentInfo {
        name: "edited".into(),
        ..info("also-config")
    };
    let (again, report) = Registry::load(dir.path(), [edited, info("new")]).unwrap();
    let snapshot = again.snapshot();
    assert_eq!(report.config.added, ["new"]);
    assert_eq!(
        report.config.changed,
        [("also-config".to_owned(), vec!["name".to_owned()])]
    );
    assert_eq!(
        report.config.removed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["from-config"]
    );
    assert!(!snapshot.contains("from-config"), "left the file: removed");
    assert!(snapshot.contains("from-api") && snapshot.contains("new"));
    assert_eq!(snapshot.get("also-config").unwrap().name, "edited", "the file's record");
    assert_eq!(report.log_entries, 1, "the API's registration came from registry.log");
}

#[actix_rt::test]
async fn timing_out_of_bounds_is_refused_and_an_old_file_is_clamped() {
    let registry = Registry::new([info("a")]).unwrap();
    let addr = registry.start();
    let huge = UpdateInfo {
        id: "a".into(),
        change: AgentChange::of(serde_json::json!({"heartbeat_interval_s": i64::MAX as u64})),
    };
    assert!(
        matches!(addr.send(huge).await.unwrap(), Err(RegistryError::Invalid(m)) if m.starts_with("heartbeat_interval_s"))
    );
    let zero_grace = AgentInfo {
        grace_s: Some(0),
        ..info("b")
    };
    let refused = addr.send(Register(vec![info("c"), zero_grace])).await.unwrap();
    assert!(
        matches!(&refused, Err(RegistryError::InvalidEntry { index: 1, reason }) if reason.starts_with("grace_s")),
        "{refused:?}"
    );

    // A file written before the bounds existed loads, clamped, and says so.
    let dir = tempfile::tempdir().unwrap();
    let old = serde_json::json!({"format_version": 1, "imported_from_config": [],
        "agents": [{"id": "old", "heartbeat_interval_s": 9223372036854775807u64, "grace_s": 0}]});
    fs::write(dir.path().join(REGISTRY_FILE), old.to_string()).unwrap();
    let (loaded, report) = Registry::load(dir.path(), []).unwrap();
    let old = loaded.snapshot().get("old").unwrap();
    assert_eq!(
        (old.heartbeat_interval_s, old.grace_s),
        (Some(crate::model::agent::MAX_TIMING_S), Some(1))
    );
    assert_eq!(report.clamped.len(), 1, "{report:?}");
}

#[actix_rt::test]
async fn a_change_appends_one_line_and_the_log_is_compacted_when_long() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::load(dir.path(), [info("a")]).unwrap();
    let addr = registry.start();
    let json_len = fs::metadata(dir.path().join(REGISTRY_FILE)).unwrap().len();
    for i in 0..100 {
        addr.send(Register(vec![info(&format!("n{i:03}"))]))
            .await
            .unwrap()
            .unwrap();
    }
    let log = fs::read_to_string(dir.path().join(REGISTRY_LOG)).unwrap();
    assert_eq!(log.lines().count(), 100, "one line per registration");
    assert_eq!(
        fs::metadata(dir.path().join(REGISTRY_FILE)).unwrap().len(),
        json_len,
        "registry.json is not rewritten per change"
    );
    // A torn last line (a crash mid-append) is skipped at load.
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join(REGISTRY_LOG))
        .unwrap();
    file.write_all(b"{\"put\":{\"id\":\"tor").unwrap();
    drop(file);
    let (again, report) = Registry::load(dir.path(), [info("a")]).unwrap();
    assert_eq!(again.snapshot().len(), 101);
    assert_eq!((report.log_entries, report.log_damaged), (100, 1));
    assert!(!dir.path().join(REGISTRY_LOG).exists(), "compacted at load");

    // Past 1024 lines (and the registry's size) the next change compacts.
    let addr = again.start();
    for i in 0..1100 {
        addr.send(UpdateInfo {
            id: "n000".into(),
            change: AgentChange::of(serde_json::json!({"name": format!("name {i}")})),
        })
        .await
        .unwrap()
        .unwrap();
    }
    let lines = fs::read_to_string(dir.path().join(REGISTRY_LOG))
        .unwrap_or_default()
        .lines()
        .count();
    assert!(lines < 1024, "{lines} lines: not compacted");
    let (third, _) = Registry::load(dir.path(), [info("a")]).unwrap();
    assert_eq!(third.snapshot().get("n000").unwrap().name, "name 1099");
}

#[actix_rt::test]
async fn auto_registrations_are_batched_and_stop_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::load(dir.path(), [info("a")]).unwrap();
    let snapshot = registry.snapshot();
    let addr = registry.with_auto_register_limit(50).start();
    let requests: Vec<_> = (0..80)
        .map(|i| addr.send(AutoRegister(format!("auto-{}", i % 70))))
        .collect();
    let answers = futures::future::join_all(requests).await;
    let ok = answers.iter().filter(|a| matches!(a, Ok(Ok(())))).count();
    let full = answers
        .iter()
        .filter(|a| matches!(a, Ok(Err(RegistryError::Full(50)))))
        .count();
    assert_eq!(snapshot.len(), 50, "the limit counts every registered agent");
    assert_eq!(ok + full, 80);
    assert!(full >= 20, "{full}");
    let log = fs::read_to_string(dir.path().join(REGISTRY_LOG)).unwrap();
    assert_eq!(log.lines().count(), 49, "one line per new agent, none twice");
    assert!(
        addr.send(AutoRegister("a".into())).await.unwrap().is_ok(),
        "known: fine"
    );
}

#[actix_rt::test]
async fn a_removed_registry_file_is_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::load(dir.path(), [info("a")]).unwrap();
    let addr = registry.start();
    addr.send(Register(vec![info("from-api")])).await.unwrap().unwrap();
    // The watch is on before the removal (the actor started it when it started).
    actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
    fs::remove_dir_all(dir.path()).unwrap();
    let deadline = std::time::Instant::now() + file_watch::FILE_CHECK_DELAY * 10;
    while !dir.path().join(REGISTRY_FILE).exists() && std::time::Instant::now() < deadline {
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (again, _) = Registry::load(dir.path(), []).unwrap();
    assert!(again.snapshot().contains("from-api"), "written again from memory");
}

#[test]
fn a_damaged_registry_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(REGISTRY_FILE), b"{\"format_version\":1,\"agen").unwrap();
    let (registry, report) = Registry::load(dir.path(), [info("a")]).unwrap();
    assert!(report.moved_aside.as_ref().is_some_and(|p| p.exists()), "{report:?}");
    assert!(registry.snapshot().contains("a"));
}

fn typed(id: &str, agent_type: &str) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        agent_type: agent_type.into(),
        ..Default::default()
    }
}

#[test]
fn a_listing_walks_at_most_its_budget_and_says_where_to_go_on() {
    let set = AgentSet::new(build_map((0..100).map(|i| typed(&format!("a{i:03}"), "web"))).unwrap());
    let nomatch = CandidateFilter {
        agent_type: Some("nomatch"),
        ..Default::default()
    };
    // No match among 100: a budget of 30 looks at 30 and says where to go on…
    let first = set.candidates(&nomatch, 2, 30);
    assert_eq!(first.ids, Vec::<String>::new());
    assert_eq!(first.resume_after.as_deref(), Some("a029"));
    // …and the walk ends after 100 / 30 calls, with nothing left.
    let mut after = first.resume_after;
    let mut calls = 1;
    while let Some(a) = after {
        let next = set.candidates(
            &CandidateFilter {
                after: Some(&a),
                ..nomatch
            },
            2,
            30,
        );
        assert!(next.ids.is_empty());
        after = next.resume_after;
        calls += 1;
    }
    assert_eq!(calls, 4);

    // Enough found: it stops there.
    let web = set.candidates(
        &CandidateFilter {
            agent_type: Some("web"),
            after: Some("a010"),
            ..Default::default()
        },
        3,
        30,
    );
    assert_eq!(web.ids, ["a011", "a012", "a013"]);
    assert_eq!(web.resume_after.as_deref(), Some("a013"));
}

#[test]
fn a_prefix_is_found_by_binary_search_not_by_a_walk() {
    let set = AgentSet::new(build_map((0..1000).map(|i| typed(&format!("a{i:04}"), "web"))).unwrap());
    // A budget of 1: reaching "a0990" by walking from the start would spend it 990 times over.
    let found = set.candidates(
        &CandidateFilter {
            prefix: "a099",
            ..Default::default()
        },
        1,
        1,
    );
    assert_eq!(found.ids, ["a0990"]);
    assert_eq!(found.resume_after.as_deref(), Some("a0990"));
    // The run ends where the prefix does: nothing left after the last one.
    let last = set.candidates(
        &CandidateFilter {
            prefix: "a099",
            after: Some("a0998"),
            ..Default::default()
        },
        5,
        5,
    );
    assert_eq!(last.ids, ["a0999"]);
    assert_eq!(last.resume_after, None);
    assert!(set
        .candidates(
            &CandidateFilter {
                prefix: "zzz",
                ..Default::default()
            },
            5,
            5
        )
        .ids
        .is_empty());
}
