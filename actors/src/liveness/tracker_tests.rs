//! Unit tests of tracker.

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn timing() -> Timing {
    Timing {
        interval: 10 * SECOND,
        grace: 20 * SECOND,
    }
}

#[test]
fn a_program_stopped_on_purpose_is_stopped_never_down_and_judged_again_when_it_runs() {
    let (mut tracker, t0, wall) = (DeadlineTracker::default(), Instant::now(), Utc::now());
    tracker.seen("a", timing(), t0, wall, None);
    let stopped = tracker
        .process_phase("a", ProcessPhase::Stopped, true, timing(), t0 + SECOND, wall)
        .unwrap();
    assert_eq!((stopped.from, stopped.to), (AgentStatus::Up, AgentStatus::Stopped));
    assert!(tracker.tick(t0 + 3600 * SECOND, wall).is_empty(), "never late or down");
    assert_eq!(tracker.counts()[&AgentStatus::Stopped], 1);
    // A heartbeat while stopped changes nothing; running again: up, judged from then.
    assert!(tracker.seen("a", timing(), t0 + 3600 * SECOND, wall, None).is_none());
    let t1 = t0 + 4000 * SECOND;
    let back = tracker
        .process_phase("a", ProcessPhase::Transient, true, timing(), t1, wall)
        .unwrap();
    assert_eq!((back.from, back.to), (AgentStatus::Stopped, AgentStatus::Up));
    assert_eq!(tracker.tick(t1 + 30 * SECOND, wall).len(), 2, "late, then down");
    // A paused agent stays paused.
    tracker.pause("a", wall);
    assert!(tracker
        .process_phase("a", ProcessPhase::Stopped, true, timing(), t1, wall)
        .is_none());
    assert_eq!(tracker.status("a").unwrap().0, AgentStatus::Paused);
}

#[test]
fn an_agent_without_heartbeats_is_up_while_its_program_runs_and_judged_once_it_does_not() {
    let (mut tracker, t0, wall) = (DeadlineTracker::default(), Instant::now(), Utc::now());
    let up = tracker
        .process_phase("q", ProcessPhase::Running, false, timing(), t0, wall)
        .unwrap();
    assert_eq!((up.from, up.to), (AgentStatus::New, AgentStatus::Up));
    assert!(
        tracker.tick(t0 + 3600 * SECOND, wall).is_empty(),
        "held up while running"
    );
    // It crashed: judged from now, late and down if it does not run again in time.
    let t1 = t0 + 3600 * SECOND;
    assert!(tracker
        .process_phase("q", ProcessPhase::Transient, false, timing(), t1, wall)
        .is_none());
    assert!(tracker.tick(t1 + 19 * SECOND, wall).is_empty());
    assert_eq!(tracker.tick(t1 + 30 * SECOND, wall).len(), 2);
    // Running again: up, held.
    let back = tracker
        .process_phase("q", ProcessPhase::Running, false, timing(), t1 + 31 * SECOND, wall)
        .unwrap();
    assert_eq!((back.from, back.to), (AgentStatus::Down, AgentStatus::Up));
    assert!(tracker.tick(t1 + 9999 * SECOND, wall).is_empty());
}

#[test]
fn an_agent_goes_up_late_down_and_up_again() {
    let mut tracker = DeadlineTracker::default();
    let t0 = Instant::now();
    let wall = Utc::now();
    assert_eq!(tracker.status("a"), None, "new: never seen");

    let up = tracker.seen("a", timing(), t0, wall, None).unwrap();
    assert_eq!((up.from, up.to), (AgentStatus::New, AgentStatus::Up));
    assert!(
        tracker.tick(t0 + 19 * SECOND, wall).is_empty(),
        "late after 10 + 20/2 s"
    );
    let late = tracker.tick(t0 + 20 * SECOND, wall);
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].to, AgentStatus::Late);
    assert!(tracker.tick(t0 + 29 * SECOND, wall).is_empty());
    assert_eq!(tracker.tick(t0 + 30 * SECOND, wall)[0].to, AgentStatus::Down);
    let back = tracker.seen("a", timing(), t0 + 31 * SECOND, wall, None).unwrap();
    assert_eq!((back.from, back.to), (AgentStatus::Down, AgentStatus::Up));
    assert!(
        tracker.tick(t0 + 50 * SECOND, wall).is_empty(),
        "deadlines moved with the heartbeat"
    );
}

#[test]
fn a_recheck_reports_a_down_agent_still_silent_once_and_a_heartbeat_cancels_it() {
    let (mut tracker, t0, wall) = (DeadlineTracker::default(), Instant::now(), Utc::now());
    tracker.seen("a", timing(), t0, wall, None);
    let down_at = t0 + timing().down_after();
    assert_eq!(
        tracker.tick(down_at, wall).last().map(|t| t.to),
        Some(AgentStatus::Down)
    );
    assert!(!tracker.recheck_down("nobody", down_at));

    // Still silent one interval + grace later: reported once, no transition.
    assert!(tracker.recheck_down("a", down_at));
    assert!(tracker.tick(down_at + timing().down_after() / 2, wall).is_empty());
    assert!(tracker.take_still_down().is_empty(), "not yet");
    assert!(tracker.tick(down_at + timing().down_after(), wall).is_empty());
    assert_eq!(tracker.take_still_down(), ["a"]);
    assert!(tracker.tick(down_at + timing().down_after() * 3, wall).is_empty());
    assert!(tracker.take_still_down().is_empty(), "once per recheck");

    // A heartbeat before the recheck's deadline cancels it.
    assert!(tracker.recheck_down("a", down_at));
    tracker.seen("a", timing(), down_at + Duration::from_secs(1), wall, None);
    tracker.tick(down_at + timing().down_after() + Duration::from_millis(1), wall);
    assert!(tracker.take_still_down().is_empty());
    assert!(!tracker.recheck_down("a", down_at), "only a down agent is rechecked");
}

#[test]
fn paused_agents_make_no_transitions() {
    let mut tracker = DeadlineTracker::default();
    let t0 = Instant::now();
    let wall = Utc::now();
    tracker.seen("a", timing(), t0, wall, None);
    assert_eq!(tracker.pause("a", wall).unwrap().to, AgentStatus::Paused);
    assert!(tracker.tick(t0 + 100 * SECOND, wall).is_empty());
    assert!(tracker.seen("a", timing(), t0 + 101 * SECOND, wall, None).is_none());
    let resumed = tracker.resume("a", timing(), t0 + 102 * SECOND, wall, true).unwrap();
    assert_eq!(resumed.to, AgentStatus::Up);
    assert!(
        tracker.tick(t0 + 121 * SECOND, wall).is_empty(),
        "a full interval + grace from the resume"
    );
    assert_eq!(tracker.tick(t0 + 122 * SECOND, wall)[0].to, AgentStatus::Late);
}

#[test]
fn a_restart_gives_every_agent_a_full_interval_and_grace() {
    let mut tracker = DeadlineTracker::default();
    let start = Instant::now();
    tracker.start_up("a", timing(), start, Utc::now());
    assert_eq!(tracker.status("a").unwrap().0, AgentStatus::Up);
    assert!(tracker.tick(start + 19 * SECOND, Utc::now()).is_empty());
    assert_eq!(tracker.tick(start + 20 * SECOND, Utc::now())[0].to, AgentStatus::Late);
}

/// 100k agents with random heartbeats, ticked at random times, against a model that
/// derives the status from the time since the last heartbeat.
#[test]
fn the_heap_agrees_with_a_simple_model_on_100k_agents() {
    const AGENTS: usize = 100_000;
    let mut tracker = DeadlineTracker::default();
    let t0 = Instant::now();
    let wall = Utc::now();
    let timing = Timing {
        interval: 10 * SECOND,
        grace: 10 * SECOND,
    };
    // A small deterministic generator (no dependency for one test).
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let ids: Vec<String> = (0..AGENTS).map(|i| format!("a{i}")).collect();
    let mut last_seen: Vec<Option<Duration>> = vec![None; AGENTS];
    let mut now = Duration::ZERO;
    for _step in 0..200 {
        // Time moves on by up to 2 s; some agents report.
        now += Duration::from_millis(next(2000));
        for _ in 0..next(3000) {
            let i = next(AGENTS as u64) as usize;
            tracker.seen(&ids[i], timing, t0 + now, wall, None);
            last_seen[i] = Some(now);
        }
        tracker.tick(t0 + now, wall);
        for _ in 0..50 {
            let i = next(AGENTS as u64) as usize;
            let expected = match last_seen[i] {
                None => None,
                Some(seen) if now - seen >= timing.down_after() => Some(AgentStatus::Down),
                Some(seen) if now - seen >= timing.late_after() => Some(AgentStatus::Late),
                Some(_) => Some(AgentStatus::Up),
            };
            assert_eq!(
                tracker.status(&ids[i]).map(|(s, _)| s),
                expected,
                "agent {i} at {now:?}"
            );
        }
    }
    let counts = tracker.counts();
    let mut model_counts: HashMap<AgentStatus, u64> = HashMap::new();
    for seen in last_seen.iter().flatten() {
        let status = if now - *seen >= timing.down_after() {
            AgentStatus::Down
        } else if now - *seen >= timing.late_after() {
            AgentStatus::Late
        } else {
            AgentStatus::Up
        };
        *model_counts.entry(status).or_default() += 1;
    }
    for status in [AgentStatus::Up, AgentStatus::Late, AgentStatus::Down] {
        assert_eq!(
            counts[&status],
            model_counts.get(&status).copied().unwrap_or(0),
            "{status:?}"
        );
    }
    assert!(counts.get(&AgentStatus::Down).copied().unwrap_or(0) > 0, "{counts:?}");
    assert!(counts.get(&AgentStatus::Up).copied().unwrap_or(0) > 0, "{counts:?}");
}
