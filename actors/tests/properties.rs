//! Property tests of the file formats and of the liveness deadline tracker, with arbitrary
//! inputs (proptest): what is written reads back the same; arbitrary or torn bytes never
//! panic a reader; the tracker agrees with a plain model under any sequence of operations.

use std::collections::HashMap;
use std::fs;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use heartbeatd_actors::events_log::{EventRecord, EventsLog};
use heartbeatd_actors::history_log::HistoryLog;
use heartbeatd_actors::journal::{Journal, JournalRecord};
use heartbeatd_actors::liveness::DeadlineTracker;
use heartbeatd_actors::model::agent::ResourceSample;
use heartbeatd_actors::model::heartbeat::ReportedStatus;
use heartbeatd_actors::model::liveness::{AgentStatus, Timing};
use proptest::prelude::*;

/// Any time the journal can hold (nanoseconds since 1970 in an i64).
fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    any::<i64>().prop_map(DateTime::from_timestamp_nanos)
}

fn any_status() -> impl Strategy<Value = Option<ReportedStatus>> {
    prop_oneof![
        Just(None),
        Just(Some(ReportedStatus::Running)),
        Just(Some(ReportedStatus::Stopped)),
        Just(Some(ReportedStatus::Error)),
    ]
}

fn any_record() -> impl Strategy<Value = JournalRecord> {
    (
        "[A-Za-z0-9._-]{1,128}",
        any::<u64>(),
        any_time(),
        any_time(),
        0.0f64..=100.0,
        any::<u64>(),
        1i64..,
        any_status(),
    )
        .prop_map(
            |(agent_id, seq, timestamp, received_at, cpu, memory, pid, status)| JournalRecord {
                agent_id,
                seq,
                timestamp,
                received_at,
                cpu,
                memory,
                pid,
                status,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn journal_records_round_trip(batches in prop::collection::vec(prop::collection::vec(any_record(), 0..20), 1..5)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path().to_owned(), 0).unwrap();
        for batch in &batches {
            journal.append(batch).unwrap();
        }
        let (_, replay) = Journal::open(dir.path().to_owned(), 0).unwrap();
        let written: Vec<JournalRecord> = batches.concat();
        prop_assert_eq!(replay.records, written);
        prop_assert_eq!(replay.damaged_lines, 0);
    }

    #[test]
    fn a_journal_reader_never_panics_on_arbitrary_or_torn_bytes(
        records in prop::collection::vec(any_record(), 1..10),
        garbage in prop::collection::vec(any::<u8>(), 0..512),
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path().to_owned(), 0).unwrap();
        journal.append(&records).unwrap();
        let segment = fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        let mut bytes = fs::read(&segment).unwrap();
        bytes.truncate(cut.index(bytes.len() + 1));
        bytes.extend_from_slice(&garbage);
        fs::write(&segment, &bytes).unwrap();
        let (_, replay) = Journal::open(dir.path().to_owned(), 0).unwrap();
        // Whatever survived is a prefix of what was written, in order.
        prop_assert!(replay.records.len() <= records.len());
        prop_assert_eq!(&replay.records[..], &records[..replay.records.len()]);
    }

    #[test]
    fn history_records_round_trip_and_survive_garbage(
        samples in prop::collection::vec((any_time(), 0.0f64..=100.0, any::<u64>()), 1..40),
        garbage in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(dir.path().to_owned()).unwrap();
        let samples: Vec<ResourceSample> = samples
            .into_iter()
            .enumerate()
            .map(|(i, (time, cpu, memory))| ResourceSample { seq: i as u64 + 1, time, cpu, memory })
            .collect();
        log.append("a", &samples).unwrap();
        prop_assert_eq!(&log.read("a").unwrap().samples, &samples);
        // Garbage after the records: they still read back, the rest counts as damage.
        let mut bytes = fs::read(log.path("a")).unwrap();
        bytes.extend_from_slice(&garbage);
        fs::write(log.path("a"), &bytes).unwrap();
        let read = log.read("a").unwrap();
        prop_assert!(read.samples.len() >= samples.len());
        prop_assert_eq!(&read.samples[..samples.len()], &samples[..]);
    }

    #[test]
    fn events_round_trip_and_a_reader_never_panics(
        events in prop::collection::vec((0usize..5, 0usize..5, any_time(), prop::option::of(any_time()), any_status()), 1..30),
        garbage in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = EventsLog::open(dir.path().to_owned()).unwrap();
        let records: Vec<EventRecord> = events
            .into_iter()
            .map(|(from, to, at, last_seen, reported_status)| EventRecord {
                from: AgentStatus::ALL[from],
                to: AgentStatus::ALL[to],
                at,
                last_seen,
                reported_status,
            })
            .collect();
        log.append("a", &records).unwrap();
        let mut newest_first = records.clone();
        newest_first.reverse();
        prop_assert_eq!(log.read("a", usize::MAX).unwrap(), newest_first);
        let mut bytes = fs::read(log.path("a")).unwrap();
        bytes.extend_from_slice(&garbage);
        fs::write(log.path("a"), &bytes).unwrap();
        let read = log.read("a", usize::MAX).unwrap();
        prop_assert!(read.len() <= records.len() + 1);
    }
}

/// One operation on the tracker, `after_ms` after the previous one.
#[derive(Debug, Clone)]
enum Op {
    Heartbeat(usize),
    Pause(usize),
    Resume(usize),
    Delete(usize),
    Tick,
}

fn any_op() -> impl Strategy<Value = (Op, u64)> {
    let agent = 0usize..4;
    let op = prop_oneof![
        4 => agent.clone().prop_map(Op::Heartbeat),
        1 => agent.clone().prop_map(Op::Pause),
        1 => agent.clone().prop_map(Op::Resume),
        1 => agent.prop_map(Op::Delete),
        4 => Just(Op::Tick),
    ];
    (op, 0u64..4000)
}

/// The plain model: what each agent's state must be.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    /// Tracked and counting from `since` (ms).
    Watched {
        since: u64,
        late: bool,
        down: bool,
    },
    Paused,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_deadline_tracker_agrees_with_a_model(ops in prop::collection::vec(any_op(), 1..80)) {
        // Agent i has interval i+1 s and grace 1 s: late at i+1.5 s, down at i+2 s.
        let timing = |i: usize| Timing { interval: Duration::from_secs(i as u64 + 1), grace: Duration::from_secs(1) };
        let start = Instant::now();
        let wall0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut tracker = DeadlineTracker::default();
        let mut model: HashMap<usize, Model> = HashMap::new();
        let mut ever_seen = [false; 4];
        let mut now_ms = 0u64;
        for (op, after_ms) in ops {
            now_ms += after_ms;
            let now = start + Duration::from_millis(now_ms);
            let wall = wall0 + chrono::Duration::milliseconds(now_ms as i64);
            match op {
                Op::Heartbeat(i) => {
                    tracker.seen(&i.to_string(), timing(i), now, wall, None);
                    ever_seen[i] = true;
                    if model.get(&i) != Some(&Model::Paused) {
                        model.insert(i, Model::Watched { since: now_ms, late: false, down: false });
                    }
                }
                Op::Pause(i) => {
                    tracker.pause(&i.to_string(), wall);
                    model.insert(i, Model::Paused);
                }
                Op::Resume(i) => {
                    tracker.resume(&i.to_string(), timing(i), now, wall, ever_seen[i]);
                    if model.get(&i) == Some(&Model::Paused) {
                        if ever_seen[i] {
                            model.insert(i, Model::Watched { since: now_ms, late: false, down: false });
                        } else {
                            model.remove(&i);
                        }
                    }
                }
                Op::Delete(i) => {
                    tracker.forget(&i.to_string());
                    model.remove(&i);
                    ever_seen[i] = false;
                }
                Op::Tick => {
                    tracker.tick(now, wall);
                    for (i, m) in model.iter_mut() {
                        if let Model::Watched { since, late, down } = m {
                            let t = timing(*i);
                            let elapsed = Duration::from_millis(now_ms - *since);
                            *down |= elapsed >= t.interval + t.grace;
                            *late |= elapsed >= t.interval + t.grace / 2;
                        }
                    }
                }
            }
            let mut expected_counts: HashMap<AgentStatus, u64> = HashMap::new();
            for i in 0..4 {
                let expected = model.get(&i).map(|m| match m {
                    Model::Paused => AgentStatus::Paused,
                    Model::Watched { down: true, .. } => AgentStatus::Down,
                    Model::Watched { late: true, .. } => AgentStatus::Late,
                    Model::Watched { .. } => AgentStatus::Up,
                });
                if let Some(status) = expected {
                    *expected_counts.entry(status).or_default() += 1;
                }
                let got = tracker.status(&i.to_string()).map(|(s, _)| s);
                prop_assert_eq!(got, expected, "agent {} at {} ms", i, now_ms);
            }
            for status in AgentStatus::ALL {
                prop_assert_eq!(
                    tracker.counts().get(&status).copied().unwrap_or(0),
                    expected_counts.get(&status).copied().unwrap_or(0),
                    "count of {:?}", status
                );
            }
        }
    }
}
