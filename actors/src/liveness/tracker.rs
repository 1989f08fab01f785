//! The deadline tracker: each agent's liveness state and its next deadline, with an explicit
//! clock so it can be tested against a model. Pure data structure; the actor around it is in
//! the parent module.
//!
//! Deadlines sit in a min-heap: a tick pops only the deadlines that have passed, so its cost
//! follows the agents changing state, not the number of agents. A heartbeat pushes a new
//! entry and bumps the agent's generation; the old entry is dropped when it surfaces.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::model::heartbeat::ReportedStatus;
use crate::model::liveness::{AgentStatus, Timing, Transition, STATUS_COUNT};

#[derive(Debug, Clone)]
struct Tracked {
    status: AgentStatus,
    since: DateTime<Utc>,
    /// Deadlines are measured from here: the last heartbeat, start-up, or a resume.
    reference: Instant,
    generation: u64,
    timing: Timing,
    last_seen: Option<DateTime<Utc>>,
    reported_status: Option<ReportedStatus>,
    /// A `down` agent whose deadline asks whether it is still silent ([`DeadlineTracker::recheck_down`]).
    recheck: bool,
    /// An agent that sends no heartbeats, kept `up` while its program runs: no deadline.
    held: bool,
}

/// What heartbeatd's supervision says of an agent's program, for its liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessPhase {
    /// It runs.
    Running,
    /// It is starting, stopping or waiting to be restarted: judged as usual from now.
    Transient,
    /// It does not run, on purpose (stopped, exited as its policy says, or `fatal`).
    Stopped,
}

/// The deadline structure, with an explicit clock so it can be tested against a model.
#[derive(Debug, Default)]
pub struct DeadlineTracker {
    /// By id. The id is shared with the agent's deadline entries: a fleet at 10k heartbeats/s
    /// keeps hundreds of thousands of entries, and a copy of the id in each cost ~20 MiB.
    agents: HashMap<Arc<str>, Tracked>,
    /// Tracked agents per state, kept up to date on every change (counting them on demand
    /// would cost a pass over every agent).
    by_status: [u64; STATUS_COUNT],
    /// (when, generation, id): the agent's next deadline, if its generation still matches.
    deadlines: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    next_generation: u64,
    /// `down` agents whose recheck deadline passed without a heartbeat, for the next
    /// [`take_still_down`](Self::take_still_down).
    still_down: Vec<String>,
}

impl DeadlineTracker {
    /// The agent's status and since when; `new` for an agent it has not heard of.
    pub fn status(&self, id: &str) -> Option<(AgentStatus, DateTime<Utc>)> {
        self.agents.get(id).map(|t| (t.status, t.since))
    }

    /// Starts tracking an agent seen before our start: `up`, with a full interval + grace
    /// from `now`.
    pub fn start_up(&mut self, id: &str, timing: Timing, now: Instant, wall: DateTime<Utc>) {
        self.set(id, AgentStatus::Up, timing, now, wall);
    }

    /// An agent that was `down` when heartbeatd last stopped (its alert still firing): it
    /// starts `down`, and its next heartbeat makes it `up` (and resolves the alert).
    pub fn start_down(&mut self, id: &str, timing: Timing, now: Instant, wall: DateTime<Utc>) {
        self.set(id, AgentStatus::Down, timing, now, wall);
    }

    /// A heartbeat received at `now` (`wall` on the server's clock). Returns the transition,
    /// if any.
    pub fn seen(
        &mut self,
        id: &str,
        timing: Timing,
        now: Instant,
        wall: DateTime<Utc>,
        reported: Option<ReportedStatus>,
    ) -> Option<Transition> {
        let previous = self.agents.get(id).map(|t| t.status).unwrap_or(AgentStatus::New);
        let before = self.agents.get(id).and_then(|t| t.last_seen);
        let held = self.agents.get(id).is_some_and(|t| t.held);
        let transition = match previous {
            AgentStatus::Paused | AgentStatus::Stopped => {
                if let Some(t) = self.agents.get_mut(id) {
                    t.reference = now;
                }
                None
            }
            // Up while its program runs, whatever it sends.
            AgentStatus::Up if held => None,
            // Stays up: only its deadline moves.
            AgentStatus::Up => {
                self.schedule(id, timing, now);
                None
            }
            _ => {
                self.set(id, AgentStatus::Up, timing, now, wall);
                Some(Transition {
                    agent_id: id.to_owned(),
                    from: previous,
                    to: AgentStatus::Up,
                    at: wall,
                    last_seen: before,
                    reported_status: reported,
                })
            }
        };
        if let Some(t) = self.agents.get_mut(id) {
            t.last_seen = Some(wall);
            if reported.is_some() {
                t.reported_status = reported;
            }
        }
        transition
    }

    /// Pauses an agent: no transitions until it is resumed.
    pub fn pause(&mut self, id: &str, wall: DateTime<Utc>) -> Option<Transition> {
        let by_status = &mut self.by_status;
        let entry = self.agents.entry(Arc::from(id)).or_insert_with(|| {
            by_status[AgentStatus::New as usize] += 1;
            Tracked {
                status: AgentStatus::New,
                since: wall,
                reference: Instant::now(),
                generation: 0,
                timing: Timing {
                    interval: Duration::ZERO,
                    grace: Duration::ZERO,
                },
                last_seen: None,
                reported_status: None,
                recheck: false,
                held: false,
            }
        });
        if entry.status == AgentStatus::Paused {
            return None;
        }
        let from = entry.status;
        by_status[from as usize] -= 1;
        by_status[AgentStatus::Paused as usize] += 1;
        entry.status = AgentStatus::Paused;
        entry.since = wall;
        entry.generation = u64::MAX; // no scheduled deadline matches
        Some(Transition {
            agent_id: id.to_owned(),
            from,
            to: AgentStatus::Paused,
            at: wall,
            last_seen: entry.last_seen,
            reported_status: entry.reported_status,
        })
    }

    /// Resumes a paused agent as `up` with a full interval + grace from `now` (or `new` if
    /// it was never seen).
    pub fn resume(
        &mut self,
        id: &str,
        timing: Timing,
        now: Instant,
        wall: DateTime<Utc>,
        ever_seen: bool,
    ) -> Option<Transition> {
        if self.agents.get(id).map(|t| t.status) != Some(AgentStatus::Paused) {
            return None;
        }
        let to = if ever_seen { AgentStatus::Up } else { AgentStatus::New };
        let (last_seen, reported_status) = self
            .agents
            .get(id)
            .map_or((None, None), |t| (t.last_seen, t.reported_status));
        if ever_seen {
            self.set(id, to, timing, now, wall);
        } else {
            self.forget(id);
        }
        Some(Transition {
            agent_id: id.to_owned(),
            from: AgentStatus::Paused,
            to,
            at: wall,
            last_seen,
            reported_status,
        })
    }

    /// What supervision says of the agent's program (see [`ProcessPhase`]); `heartbeats`:
    /// whether the agent sends heartbeats (with `heartbeats = false` it is `up` while its
    /// program runs). A paused agent stays paused. Returns the transition, if any.
    pub fn process_phase(
        &mut self,
        id: &str,
        phase: ProcessPhase,
        heartbeats: bool,
        timing: Timing,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Option<Transition> {
        let tracked = self.agents.get(id);
        let from = tracked.map_or(AgentStatus::New, |t| t.status);
        let (held, ever_seen) = tracked.map_or((false, false), |t| (t.held, t.last_seen.is_some()));
        if from == AgentStatus::Paused {
            return None;
        }
        let to = match (phase, heartbeats) {
            (ProcessPhase::Stopped, _) => AgentStatus::Stopped,
            (ProcessPhase::Running, false) => AgentStatus::Up,
            // Judged as usual: leaving `stopped`, it is `up` from now (`new` if never seen).
            (_, _) if from == AgentStatus::Stopped => {
                if ever_seen || !heartbeats {
                    AgentStatus::Up
                } else {
                    AgentStatus::New
                }
            }
            (ProcessPhase::Transient, false) if held => AgentStatus::Up,
            (ProcessPhase::Running | ProcessPhase::Transient, _) => return None,
        };
        match to {
            AgentStatus::Stopped => self.set_without_deadline(id, to, timing, now, wall, false),
            AgentStatus::Up if phase == ProcessPhase::Running && !heartbeats => {
                self.set_without_deadline(id, to, timing, now, wall, true)
            }
            AgentStatus::New => self.forget(id),
            // Up, judged from now.
            _ => {
                self.set(id, to, timing, now, wall);
                if let Some(t) = self.agents.get_mut(id) {
                    t.held = false;
                }
            }
        }
        (from != to).then(|| {
            let tracked = self.agents.get(id);
            Transition {
                agent_id: id.to_owned(),
                from,
                to,
                at: wall,
                last_seen: tracked.and_then(|t| t.last_seen),
                reported_status: tracked.and_then(|t| t.reported_status),
            }
        })
    }

    /// `status` with no deadline (stopped, or held up); `held` as given.
    fn set_without_deadline(
        &mut self,
        id: &str,
        status: AgentStatus,
        timing: Timing,
        now: Instant,
        wall: DateTime<Utc>,
        held: bool,
    ) {
        let unchanged = self
            .agents
            .get(id)
            .is_some_and(|t| t.status == status && t.held == held);
        if !unchanged {
            self.set(id, status, timing, now, wall);
        }
        if let Some(t) = self.agents.get_mut(id) {
            t.held = held;
            t.generation = u64::MAX; // no scheduled deadline matches
        }
    }

    pub fn forget(&mut self, id: &str) {
        if let Some(t) = self.agents.remove(id) {
            self.by_status[t.status as usize] -= 1;
        }
    }

    /// Asks again, one interval + grace from `now`, whether a `down` agent is still silent
    /// (heartbeatd restarted it for its silence: a restarted program that never reports must
    /// be restarted again, though it makes no new transition). Does nothing unless it is
    /// `down`; a heartbeat cancels it.
    pub fn recheck_down(&mut self, id: &str, now: Instant) -> bool {
        let Some(tracked) = self.agents.get(id) else {
            return false;
        };
        if tracked.status != AgentStatus::Down {
            return false;
        }
        let timing = tracked.timing;
        self.schedule_at(id, timing, now, now + timing.down_after());
        if let Some(t) = self.agents.get_mut(id) {
            t.recheck = true;
        }
        true
    }

    /// The `down` agents whose recheck found them still silent since the last call.
    pub fn take_still_down(&mut self) -> Vec<String> {
        std::mem::take(&mut self.still_down)
    }

    /// The earliest deadline waiting, if any (it may belong to an agent heard from since: then
    /// it passes without a transition).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((when, _, _))| *when)
    }

    /// Applies every deadline that has passed by `now`; returns the transitions, oldest first.
    pub fn tick(&mut self, now: Instant, wall: DateTime<Utc>) -> Vec<Transition> {
        let mut transitions = Vec::new();
        while let Some(Reverse((when, generation, _))) = self.deadlines.peek() {
            if *when > now {
                break;
            }
            let (_, generation) = (*when, *generation);
            let Reverse((_, _, id)) = self.deadlines.pop().expect("peeked");
            let Some(tracked) = self.agents.get_mut(&*id) else {
                continue;
            };
            if tracked.generation != generation {
                continue; // superseded by a later heartbeat, a pause or a resume
            }
            let (to, next) = match tracked.status {
                AgentStatus::Up => (AgentStatus::Late, Some(tracked.reference + tracked.timing.down_after())),
                AgentStatus::Late => (AgentStatus::Down, None),
                // A recheck: still down, no transition.
                AgentStatus::Down if tracked.recheck => {
                    tracked.recheck = false;
                    self.still_down.push(id.to_string());
                    continue;
                }
                _ => continue,
            };
            let from = tracked.status;
            tracked.status = to;
            tracked.since = wall;
            self.by_status[from as usize] -= 1;
            self.by_status[to as usize] += 1;
            if let Some(next) = next {
                self.deadlines.push(Reverse((next, generation, id.clone())));
            }
            transitions.push(Transition {
                last_seen: tracked.last_seen,
                reported_status: tracked.reported_status,
                agent_id: id.to_string(),
                from,
                to,
                at: wall,
            });
        }
        transitions
    }

    fn set(&mut self, id: &str, status: AgentStatus, timing: Timing, now: Instant, wall: DateTime<Utc>) {
        match self.agents.get_mut(id) {
            Some(entry) => {
                self.by_status[entry.status as usize] -= 1;
                entry.status = status;
                entry.since = wall;
                entry.recheck = false;
            }
            None => {
                let entry = Tracked {
                    status,
                    since: wall,
                    reference: now,
                    generation: 0,
                    timing,
                    last_seen: None,
                    reported_status: None,
                    recheck: false,
                    held: false,
                };
                self.agents.insert(Arc::from(id), entry);
            }
        }
        self.by_status[status as usize] += 1;
        self.schedule(id, timing, now);
    }

    fn schedule(&mut self, id: &str, timing: Timing, now: Instant) {
        self.schedule_at(id, timing, now, now + timing.late_after());
    }

    /// Measures the agent's deadlines from `now`, the next one at `when`.
    fn schedule_at(&mut self, id: &str, timing: Timing, now: Instant, when: Instant) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let key = match self.agents.get_key_value(id) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(id),
        };
        if let Some(t) = self.agents.get_mut(id) {
            t.reference = now;
            t.timing = timing;
            t.generation = generation;
        }
        self.deadlines.push(Reverse((when, generation, key)));
    }

    /// How many tracked agents are in each state (registered agents never seen are not
    /// tracked). Constant time.
    pub fn counts(&self) -> HashMap<AgentStatus, u64> {
        AgentStatus::ALL
            .iter()
            .map(|s| (*s, self.by_status[*s as usize]))
            .collect()
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
