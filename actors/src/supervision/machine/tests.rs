//! The machine without processes or time: a driver plays the actor's part (it launches
//! "keepers" by answering `Launch` with `Launched`, and fires timers when its clock passes
//! them), and each test tells a story of events.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::*;
use crate::model::agent::AgentInfo;
use crate::model::process::{ExitReason, ProcessSpec, ProcessState};

const S: Duration = Duration::from_secs(1);

fn spec(tune: impl FnOnce(&mut AgentInfo)) -> ProcessSpec {
    let mut info = AgentInfo {
        id: "a".into(),
        command: Some(vec!["/bin/true".into()]),
        ..Default::default()
    };
    tune(&mut info);
    info.process_spec().unwrap()
}

/// Plays the actor: a clock, the armed timers, the launched keepers.
struct Driver {
    machine: Machine,
    spec: ProcessSpec,
    now: Instant,
    timers: Vec<(Instant, Timer)>,
    /// Every effect so far.
    log: Vec<Effect>,
    /// The states entered so far, with when.
    states: Vec<(Duration, ProcessState)>,
    t0: Instant,
}

impl Driver {
    fn new(spec: ProcessSpec) -> Self {
        let now = Instant::now();
        Self {
            machine: Machine::new(),
            spec,
            now,
            timers: Vec::new(),
            log: Vec::new(),
            states: Vec::new(),
            t0: now,
        }
    }

    fn feed(&mut self, event: Event) -> Vec<Effect> {
        let now = Now {
            spec: &self.spec,
            at: self.now,
            wall: Utc::now(),
            jitter: 0.0,
        };
        let effects = self.machine.step(event, &now);
        let mut all = effects.clone();
        for effect in &effects {
            match effect {
                Effect::Arm(timer, after) => self.timers.push((self.now + *after, *timer)),
                Effect::Changed { to, .. } => self.states.push((self.now - self.t0, *to)),
                Effect::Launch { generation } => {
                    let keeper = 1000 + *generation as i32;
                    all.extend(self.feed(Event::Launched { keeper }));
                }
                _ => {}
            }
        }
        self.log.extend(effects);
        all
    }

    /// Moves the clock on by `by`, firing the timers that come due, in order.
    fn wait(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            self.timers.sort_by_key(|(at, _)| *at);
            match self.timers.first() {
                Some((at, _)) if *at <= until => {
                    let (at, timer) = self.timers.remove(0);
                    self.now = self.now.max(at);
                    self.feed(Event::Timer(timer));
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn generation(&self) -> u64 {
        self.machine.state().run().map(|r| r.generation).unwrap()
    }

    /// The agent's process ends with `exit` and its keeper with it.
    fn exits(&mut self, exit: Exit) -> Vec<Effect> {
        let generation = self.generation();
        let mut fx = self.feed(Event::AgentExited(exit));
        fx.extend(self.feed(Event::Ended { generation }));
        fx
    }

    fn state(&self) -> ProcessState {
        self.machine.state().name()
    }
}

#[test]
fn a_start_launches_a_keeper_and_is_running_at_the_first_heartbeat_or_after_start_wait() {
    let mut d = Driver::new(spec(|_| {}));
    let fx = d.feed(Event::Start);
    assert!(fx.contains(&Effect::Launch { generation: 1 }), "{fx:?}");
    assert_eq!(d.state(), ProcessState::Starting);
    assert_eq!(d.machine.state().run().unwrap().keeper, Some(1001));
    let fx = d.feed(Event::AgentStarted { pid: 42 });
    assert_eq!(fx, [Effect::Publish, Effect::Answer(Waiters::Start)]);
    d.feed(Event::Heard);
    assert_eq!(d.state(), ProcessState::Running);

    // Without a heartbeat: running once start_wait_s (1 s) has passed.
    let mut quiet = Driver::new(spec(|_| {}));
    quiet.feed(Event::Start);
    quiet.wait(S / 2);
    assert_eq!(quiet.state(), ProcessState::Starting);
    quiet.wait(S);
    assert_eq!(quiet.state(), ProcessState::Running);
}

#[test]
fn a_crash_of_a_running_program_backs_off_doubling_then_restarts() {
    let mut d = Driver::new(spec(|_| {}));
    d.feed(Event::Start);
    d.feed(Event::Heard);
    for (n, wait) in [(1, S), (2, 2 * S), (3, 4 * S)] {
        d.feed(Event::Heard);
        d.exits(Exit::Signal(libc::SIGSEGV));
        assert_eq!(d.state(), ProcessState::Backoff);
        assert_eq!(d.machine.restarts(), n);
        assert_eq!(d.machine.last_exit().unwrap().signal.as_deref(), Some("SIGSEGV"));
        d.wait(wait - Duration::from_millis(1));
        assert_eq!(d.state(), ProcessState::Backoff, "not before the backoff");
        d.wait(Duration::from_millis(1));
        assert_eq!(d.state(), ProcessState::Starting);
        d.feed(Event::Heard);
    }
    assert!(d.log.contains(&Effect::CountRestart(ExitReason::Exited)));
}

#[test]
fn a_program_that_can_never_start_is_fatal_within_ten_seconds_on_the_defaults() {
    // `sh -c 'exit 3'`: every run ends with a failure before it is running.
    let mut d = Driver::new(spec(|_| {}));
    d.feed(Event::Start);
    let mut notes = Vec::new();
    while d.state() != ProcessState::Fatal {
        assert!(d.now - d.t0 < 30 * S, "never fatal: {:?}", d.states);
        if d.state() == ProcessState::Starting {
            let fx = d.exits(Exit::Code(3));
            notes.extend(fx.into_iter().filter(|e| matches!(e, Effect::Note(_))));
        } else {
            d.wait(Duration::from_millis(10));
        }
    }
    let took = d.now - d.t0;
    assert!(took <= 10 * S, "fatal after {took:?}");
    assert!(took >= 7 * S, "the backoffs were waited: {took:?}");
    assert_eq!(
        notes.last(),
        Some(&Effect::Note(Note::CouldNotStart { failures: 4 })),
        "{notes:?}"
    );
    assert!(notes.contains(&Effect::Note(Note::StartFailed {
        failures: 1,
        allowed: 3
    })));
    let launches = d.log.iter().filter(|e| matches!(e, Effect::Launch { .. })).count();
    assert_eq!(launches, 4, "one start and three retries");
}

#[test]
fn a_program_that_ran_is_not_given_up_on_for_failing_starts_but_for_too_many_restarts() {
    // It reaches running each time, then crashes: start_retries never applies; after more
    // than max_restarts (5) within 60 s it is fatal.
    let mut d = Driver::new(spec(|i| i.restart_backoff_ms = Some(100)));
    d.feed(Event::Start);
    let mut runs = 0;
    while d.state() != ProcessState::Fatal {
        assert!(runs < 20, "never fatal");
        d.feed(Event::Heard);
        assert_eq!(d.state(), ProcessState::Running);
        d.exits(Exit::Code(1));
        runs += 1;
        d.wait(10 * S);
    }
    assert_eq!(runs, 6);
    assert!(d.log.contains(&Effect::Note(Note::TooManyRestarts)));
    assert!(!d
        .log
        .iter()
        .any(|e| matches!(e, Effect::Note(Note::StartFailed { .. }))));
}

#[test]
fn a_clean_exit_before_running_follows_the_policy_and_is_no_failed_start() {
    let mut d = Driver::new(spec(|_| {}));
    d.feed(Event::Start);
    d.exits(Exit::Code(0));
    assert_eq!(d.state(), ProcessState::Exited, "on-failure: exit 0 stays exited");
    assert!(!d
        .log
        .iter()
        .any(|e| matches!(e, Effect::Note(Note::StartFailed { .. }))));
}

#[test]
fn without_backoff_restarts_are_held_to_ten_in_ten_seconds() {
    let mut d = Driver::new(spec(|i| {
        i.restart_backoff_ms = Some(0);
        i.restart_backoff_max_ms = Some(0);
        i.max_restarts = Some(10_000);
        i.restart = Some(crate::model::process::RestartPolicy::Always);
    }));
    d.feed(Event::Start);
    let mut launches_at = Vec::new();
    for _ in 0..40 {
        d.feed(Event::Heard);
        launches_at.push(d.now);
        d.exits(Exit::Code(1));
        // The restart comes when its timer says.
        let due = d.timers.iter().map(|(at, _)| *at).max().unwrap();
        d.wait(due.saturating_duration_since(d.now));
    }
    for window in launches_at.windows(START_LIMIT_BURST + 1) {
        let span = *window.last().unwrap() - window[0];
        assert!(span >= START_LIMIT_INTERVAL, "11 starts within {span:?}");
    }
    assert!(d
        .log
        .iter()
        .any(|e| matches!(e, Effect::Note(Note::StartLimited { .. }))));
}

#[test]
fn a_stop_signals_the_keeper_presses_it_when_overdue_and_ends_stopped() {
    let mut d = Driver::new(spec(|i| i.stop_timeout_s = Some(3)));
    d.feed(Event::Start);
    d.feed(Event::Heard);
    let fx = d.feed(Event::Stop);
    assert_eq!(fx[0], Effect::StopTree);
    assert_eq!(d.state(), ProcessState::Stopping);
    // Overdue: stop_timeout + margin, then the margin again.
    d.wait(3 * S + KEEPER_MARGIN);
    assert!(d.log.contains(&Effect::KillTree));
    assert!(d.log.contains(&Effect::Note(Note::StopOverdue)));
    d.wait(KEEPER_MARGIN);
    assert!(d.log.contains(&Effect::KillKeeper));
    // The keeper was killed: no exit line from it.
    let generation = d.generation();
    let fx = d.feed(Event::Ended { generation });
    assert!(fx.contains(&Effect::Note(Note::KeeperKilled)), "{fx:?}");
    assert!(fx.contains(&Effect::Answer(Waiters::Stop)));
    assert_eq!(d.state(), ProcessState::Stopped);
    assert_eq!(d.machine.last_exit().unwrap().reason, ExitReason::Manual);
    // Nothing starts it again.
    d.wait(3600 * S);
    assert_eq!(d.state(), ProcessState::Stopped);
}

#[test]
fn a_restart_carries_the_exit_into_the_new_start_and_its_callers_wait_for_the_pid() {
    let mut d = Driver::new(spec(|_| {}));
    d.feed(Event::Start);
    d.feed(Event::Heard);
    d.feed(Event::Restart);
    let fx = d.exits(Exit::Signal(libc::SIGTERM));
    assert!(fx.contains(&Effect::StopWaitersWaitForStart));
    assert!(fx.contains(&Effect::Launch { generation: 2 }));
    let changed = fx.iter().find_map(|e| match e {
        Effect::Changed { from, to, exit } => Some((*from, *to, exit.clone())),
        _ => None,
    });
    let (from, to, exit) = changed.unwrap();
    assert_eq!((from, to), (ProcessState::Stopping, ProcessState::Starting));
    assert_eq!(exit.unwrap().signal.as_deref(), Some("SIGTERM"));
    assert_eq!(d.machine.restarts(), 1);
}

#[test]
fn silence_restarts_only_when_asked_and_says_whether_to_check_again() {
    let mut d = Driver::new(spec(|_| {}));
    d.feed(Event::Start);
    d.feed(Event::Heard);
    d.feed(Event::Silent);
    assert_eq!(d.state(), ProcessState::Stopping);
    assert!(d.machine.wants_silence_recheck());
    d.exits(Exit::Signal(libc::SIGTERM));
    assert_eq!(d.state(), ProcessState::Backoff);
    assert!(d.machine.wants_silence_recheck());
    assert_eq!(d.machine.last_exit().unwrap().reason, ExitReason::Silent);

    let mut deaf = Driver::new(spec(|i| i.restart_on_silence = Some(false)));
    deaf.feed(Event::Start);
    deaf.feed(Event::Heard);
    assert!(deaf.feed(Event::Silent).is_empty());
    assert_eq!(deaf.state(), ProcessState::Running);
    assert!(!deaf.machine.wants_silence_recheck());
}

#[test]
fn stale_timers_and_reports_of_an_old_run_change_nothing() {
    let mut d = Driver::new(spec(|_| {}));
    d.feed(Event::Start);
    d.exits(Exit::Code(1)); // a failed start: backoff
    assert_eq!(d.state(), ProcessState::Backoff);
    d.feed(Event::Start); // an operator starts it now
    assert_eq!(d.generation(), 2);
    // The old backoff timer, the old run's start wait and end: ignored.
    assert!(d.feed(Event::Timer(Timer::Restart { token: 1 })).is_empty());
    assert!(d.feed(Event::Ended { generation: 1 }).is_empty());
    assert!(d.feed(Event::Timer(Timer::StartWait { generation: 1 })).is_empty());
    assert_eq!(d.state(), ProcessState::Starting);
}

#[test]
fn a_fatal_agent_is_tried_again_after_fatal_retry_s() {
    let mut d = Driver::new(spec(|i| {
        i.fatal_retry_s = Some(30);
        i.start_retries = Some(0);
    }));
    d.feed(Event::Start);
    d.exits(Exit::Code(1));
    assert_eq!(d.state(), ProcessState::Fatal);
    d.wait(29 * S);
    assert_eq!(d.state(), ProcessState::Fatal);
    d.wait(S);
    assert_eq!(d.state(), ProcessState::Starting);
    assert!(d.log.contains(&Effect::Note(Note::FatalRetry)));
}

#[test]
fn retiring_ends_the_tree_first_and_then_the_actor() {
    let mut idle = Driver::new(spec(|_| {}));
    let fx = idle.feed(Event::Retire);
    assert!(fx.contains(&Effect::Remove));

    let mut d = Driver::new(spec(|_| {}));
    d.feed(Event::Start);
    let fx = d.feed(Event::Retire);
    assert!(!fx.contains(&Effect::Remove), "not before the tree is gone");
    d.feed(Event::Start); // a start meanwhile does not undo a retirement … unless asked last
    d.feed(Event::Retire);
    let fx = d.exits(Exit::Signal(libc::SIGTERM));
    assert!(fx.contains(&Effect::Remove));
    assert!(d.feed(Event::Start).is_empty(), "removed: nothing more happens");
}

#[test]
fn a_launch_that_fails_counts_as_a_failed_start_with_code_126() {
    let mut d = Driver::new(spec(|_| {}));
    let now = Now {
        spec: &d.spec,
        at: d.now,
        wall: Utc::now(),
        jitter: 0.0,
    };
    // Launch without the driver's automatic Launched: the spawn fails.
    let fx = d.machine.step(Event::Start, &now);
    assert!(fx.contains(&Effect::Launch { generation: 1 }));
    let fx = d.machine.step(Event::LaunchFailed, &now);
    assert!(fx.contains(&Effect::Note(Note::LaunchFailed)));
    assert_eq!(d.machine.state().name(), ProcessState::Backoff);
    assert_eq!(d.machine.last_exit().unwrap().code, Some(126));
}

#[test]
fn every_event_in_every_state_is_handled_without_panicking() {
    let events = |generation: u64| {
        vec![
            Event::Start,
            Event::Stop,
            Event::Restart,
            Event::Retire,
            Event::Reconfigured,
            Event::Launched { keeper: 7 },
            Event::LaunchFailed,
            Event::AgentStarted { pid: 7 },
            Event::CommandFailed { reason: "x".into() },
            Event::AgentExited(Exit::Code(1)),
            Event::Ended { generation },
            Event::Heard,
            Event::Silent,
            Event::OverLimit(ExitReason::OverMemory),
            Event::Timer(Timer::StartWait { generation }),
            Event::Timer(Timer::Restart { token: 1 }),
            Event::Timer(Timer::Escalate {
                generation,
                step: Escalation::KillTree,
            }),
            Event::KillNow,
        ]
    };
    // Reach each state, then send every event.
    type Setup = fn(&mut Driver);
    let setups: [(ProcessState, Setup); 7] = [
        (ProcessState::Stopped, |_| {}),
        (ProcessState::Starting, |d| {
            d.feed(Event::Start);
        }),
        (ProcessState::Running, |d| {
            d.feed(Event::Start);
            d.feed(Event::Heard);
        }),
        (ProcessState::Stopping, |d| {
            d.feed(Event::Start);
            d.feed(Event::Stop);
        }),
        (ProcessState::Backoff, |d| {
            d.feed(Event::Start);
            d.feed(Event::Heard);
            d.exits(Exit::Code(1));
        }),
        (ProcessState::Exited, |d| {
            d.feed(Event::Start);
            d.exits(Exit::Code(0));
        }),
        (ProcessState::Fatal, |d| {
            d.feed(Event::Start);
            d.feed(Event::Heard);
            d.spec.max_restarts = 0;
            d.exits(Exit::Code(1));
        }),
    ];
    for (state, setup) in setups {
        for event in events(1) {
            let mut d = Driver::new(spec(|_| {}));
            setup(&mut d);
            assert_eq!(d.state(), state, "set-up of {state:?}");
            d.feed(event.clone());
            // A run exists exactly in the states that have one.
            let has_run = d.machine.state().run().is_some();
            let running_state = matches!(
                d.state(),
                ProcessState::Starting | ProcessState::Running | ProcessState::Stopping
            );
            assert_eq!(has_run, running_state, "{state:?} + {event:?}");
        }
    }
}

#[test]
fn an_adopted_run_is_running_at_once_with_its_pid_and_counts_no_start_or_restart() {
    let mut d = Driver::new(spec(|i| i.restart = Some(crate::model::process::RestartPolicy::Always)));
    let started_at = Utc::now() - chrono::Duration::seconds(300);

    let fx = d.feed(Event::Adopted {
        keeper: 77,
        pid: 78,
        started_at,
    });

    assert!(!fx.iter().any(|e| matches!(e, Effect::Launch { .. })), "{fx:?}");
    let run = d.machine.state().run().cloned().expect("a run");
    assert_eq!(d.machine.state().name(), ProcessState::Running);
    assert_eq!(
        (run.keeper, run.agent_pid, run.started_at),
        (Some(77), Some(78), started_at)
    );
    assert_eq!(d.machine.restarts(), 0);
    // A second adoption, or one once running, changes nothing.
    assert!(d
        .feed(Event::Adopted {
            keeper: 1,
            pid: 2,
            started_at
        })
        .is_empty());
    // Its exit during the gap is then followed by the policy: a restart.
    d.feed(Event::AgentExited(Exit::Signal(9)));
    d.feed(Event::Ended {
        generation: run.generation,
    });
    assert_eq!(d.machine.restarts(), 1);
    assert_eq!(
        d.machine.last_exit().and_then(|e| e.signal.clone()).as_deref(),
        Some("SIGKILL")
    );
}
