//! The deadline tracker against a plain model (proptest): states and per-state counts agree
//! under any sequence of heartbeat, pause, resume, delete and tick, with any timing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::DateTime;
use proptest::prelude::*;

use super::tracker::DeadlineTracker;
use crate::model::liveness::{AgentStatus, Timing};

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
