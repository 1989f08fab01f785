//! Property tests of the store's file formats (proptest): what is written reads back the
//! same; arbitrary or torn bytes never panic a reader, nor cost a record written before them.

use std::fs;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::events_log::{AgentEvent, EventRecord, EventsLog};
use super::history_log::HistoryLog;
use super::journal::{Journal, JournalRecord};
use crate::model::agent::ResourceSample;
use crate::model::heartbeat::ReportedStatus;
use crate::model::liveness::AgentStatus;

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
        let records: Vec<AgentEvent> = events
            .into_iter()
            .map(|(from, to, at, last_seen, reported_status)| {
                AgentEvent::Liveness(EventRecord {
                    from: AgentStatus::ALL[from],
                    to: AgentStatus::ALL[to],
                    at,
                    last_seen,
                    reported_status,
                })
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
