//! The Liveness actor: who is alive, judged on the daemon's own clock.
//!
//! States: `new` (registered, never seen), `up`, `late` (no heartbeat for interval + half the
//! grace), `down` (interval + grace), `paused` (set through the API; no transitions). The next
//! heartbeat brings `late` or `down` back to `up`. After heartbeatd itself restarts, every
//! agent seen before starts `up` with a full interval + grace from start-up: our restart must
//! not page anyone.
//!
//! | module | what |
//! |---|---|
//! | this one | the Liveness actor: applies heartbeats, pauses and deletions to the tracker, ticks it, reports transitions |
//! | [`tracker`] | [`DeadlineTracker`]: states and deadlines in a heap, with an explicit clock |
//!
//! Transitions are posted and pushed by the actors of [`crate::notify`].

#[cfg(test)]
mod properties;
pub mod tracker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use slog::{debug, info, warn, Logger};

use crate::counters::{StatusCounts, TransitionCounts};
use crate::model::agent::{AgentInfo, MAX_TIMING_S, MIN_TIMING_S};
use crate::model::heartbeat::ReportedStatus;
use crate::model::liveness::{AgentStatus, Timing, Transition};
use crate::notify::alerter::{AlertName, Alerter, Fire, Resolve};
use crate::notify::webhook::{Deliver, Webhook};
use crate::registry::{AgentSet, RegistrySnapshot};
use crate::store::{AppendEvents, FileMetadataStore};
pub use tracker::DeadlineTracker;

/// How often the actor looks for passed deadlines: the resolution of `late` and `down`.
pub const TICK: Duration = Duration::from_millis(250);

/// Defaults for agents that do not set their own timing.
#[derive(Debug, Clone, Copy)]
pub struct LivenessPolicy {
    pub interval: Duration,
    /// `None`: twice the interval.
    pub grace: Option<Duration>,
}

/// The actor around the tracker.
pub struct Liveness {
    policy: LivenessPolicy,
    tracker: DeadlineTracker,
    registry: RegistrySnapshot,
    counts: Arc<StatusCounts>,
    /// Where transitions are recorded (`events/<id>.log`).
    events: Option<Addr<FileMetadataStore>>,
    /// Where transitions are posted (`webhook_url`), and whether a URL is set now.
    webhook: Option<(Addr<Webhook>, Arc<AtomicBool>)>,
    /// The timer set for the earliest deadline, and when it fires: armed only while some
    /// agent has a deadline, so a heartbeatd whose agents send no heartbeats never wakes up
    /// for liveness.
    timer: Option<(Instant, SpawnHandle)>,
    /// Told of every agent that goes `down` (the Manager, which restarts supervised agents).
    down_listener: Option<Recipient<WentDown>>,
    /// Transitions per agent, shared with `/metrics`.
    transitions: Arc<TransitionCounts>,
    /// Fires and resolves `HeartbeatAgentDown` (when `alertmanager_url` is set).
    alerter: Option<Addr<Alerter>>,
    log: Logger,
}

impl Liveness {
    /// `seen_before`: agents with a `last_seen` from the previous run; they start `up` with a
    /// full interval + grace from now.
    pub fn new(
        policy: LivenessPolicy,
        registry: RegistrySnapshot,
        seen_before: impl IntoIterator<Item = String>,
        log: Logger,
    ) -> Self {
        let mut liveness = Self {
            policy,
            tracker: DeadlineTracker::default(),
            registry,
            counts: StatusCounts::new(),
            events: None,
            webhook: None,
            down_listener: None,
            transitions: TransitionCounts::new(),
            alerter: None,
            timer: None,
            log,
        };
        let (now, wall) = (Instant::now(), Utc::now());
        for id in seen_before {
            let timing = liveness.timing(&id);
            liveness.tracker.start_up(&id, timing, now, wall);
        }
        liveness.publish_counts();
        liveness
    }

    /// Records transitions through `store` (its `events/` log).
    pub fn with_events(mut self, store: Addr<FileMetadataStore>) -> Self {
        self.events = Some(store);
        self
    }

    /// Fires `HeartbeatAgentDown` through `alerter` when an agent goes `down`, and resolves it
    /// when it leaves `down`; the agents in `down_before` (their alert was still firing when
    /// heartbeatd last stopped) start `down` instead of `up`.
    pub fn with_alerter(mut self, alerter: Addr<Alerter>, down_before: Vec<String>) -> Self {
        let (now, wall) = (Instant::now(), Utc::now());
        let registered = self.registry.load();
        for id in down_before.iter().filter(|id| registered.contains_key(id)) {
            let timing = self.timing_of(registered.get(id));
            self.tracker.start_down(id, timing, now, wall);
        }
        drop(registered);
        self.alerter = Some(alerter);
        self.publish_counts();
        self
    }

    /// Posts transitions to `webhook` while `enabled` (the Webhook keeps it up to date).
    pub fn with_webhook(mut self, webhook: Addr<Webhook>, enabled: Arc<AtomicBool>) -> Self {
        self.webhook = Some((webhook, enabled));
        self
    }

    /// Logs the transitions, posts them to the webhook and records them on disk.
    fn report(&self, transitions: Vec<Transition>) {
        for t in &transitions {
            self.log_transition(t);
            self.transitions.count(&t.agent_id, t.to);
            if let (Some(listener), AgentStatus::Down) = (&self.down_listener, t.to) {
                listener.do_send(WentDown(t.agent_id.clone()));
            }
            if let Some(alerter) = &self.alerter {
                if t.to == AgentStatus::Down {
                    let agent_type = self.registry.get(&t.agent_id).map(|i| i.agent_type).unwrap_or_default();
                    alerter.do_send(Fire {
                        name: AlertName::HeartbeatAgentDown,
                        agent_id: t.agent_id.clone(),
                        agent_type,
                        last_seen: t.last_seen,
                        reported_status: t.reported_status.map(|s| s.as_str().to_owned()),
                        detail: None,
                    });
                } else if t.from == AgentStatus::Down {
                    alerter.do_send(Resolve {
                        name: AlertName::HeartbeatAgentDown,
                        agent_id: t.agent_id.clone(),
                    });
                }
            }
            if let Some((webhook, _)) = self.webhook.as_ref().filter(|(_, on)| on.load(Ordering::Relaxed)) {
                webhook.do_send(Deliver(t.clone()));
            }
        }
        if let (Some(store), false) = (&self.events, transitions.is_empty()) {
            store.do_send(AppendEvents(transitions));
        }
    }

    /// The shared per-state counts (for Stats).
    pub fn counts(&self) -> Arc<StatusCounts> {
        Arc::clone(&self.counts)
    }

    /// The shared per-agent transition counts (for `/metrics`).
    pub fn transition_counts(&self) -> Arc<TransitionCounts> {
        Arc::clone(&self.transitions)
    }

    /// The agent's timing: its own settings, else the defaults.
    fn timing(&self, id: &str) -> Timing {
        self.timing_of(self.registry.load().get(id))
    }

    /// Like [`Liveness::timing`], from an already loaded registry entry.
    fn timing_of(&self, info: Option<&AgentInfo>) -> Timing {
        // Bounded again here (the Registry and the settings refuse values out of bounds): an
        // unbounded value would overflow `Instant + Duration` and panic this actor.
        let bounded = |s: u64| Duration::from_secs(s.clamp(MIN_TIMING_S, MAX_TIMING_S));
        let interval = info
            .and_then(|i| i.heartbeat_interval_s)
            .map_or(self.policy.interval, bounded)
            .min(bounded(MAX_TIMING_S));
        let grace = info
            .and_then(|i| i.grace_s)
            .map(bounded)
            .or(self.policy.grace)
            .unwrap_or(interval * 2)
            .min(bounded(MAX_TIMING_S) * 2);
        Timing { interval, grace }
    }

    fn publish_counts(&mut self) {
        let counts = self.tracker.counts();
        let tracked: u64 = counts.values().sum();
        for status in AgentStatus::ALL {
            let n = counts.get(&status).copied().unwrap_or(0);
            // Registered agents the tracker has not heard of are new.
            let n = if status == AgentStatus::New {
                n + (self.registry.len() as u64).saturating_sub(tracked)
            } else {
                n
            };
            self.counts.store(status, n);
        }
    }

    fn log_transition(&self, t: &Transition) {
        match (t.from, t.to) {
            (_, AgentStatus::Late | AgentStatus::Down) => warn!(self.log, "agent went silent";
                "agent_id" => &t.agent_id, "from" => t.from.name(), "to" => t.to.name()),
            // An agent's first heartbeat: not news, and 100k of them after a fleet is registered.
            (AgentStatus::New, AgentStatus::Up) => debug!(self.log, "agent reported for the first time";
                "agent_id" => &t.agent_id),
            _ => info!(self.log, "agent status changed";
                "agent_id" => &t.agent_id, "from" => t.from.name(), "to" => t.to.name()),
        }
    }
}

impl Actor for Liveness {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.arm(ctx);
    }
}

impl Liveness {
    /// Sets the timer for the earliest deadline, unless one is set for that time or sooner.
    /// Called after anything that may add a deadline.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(next) = self.tracker.next_deadline() else {
            return;
        };
        // Deadlines closer together than TICK share one wake-up.
        let fire_at = next + TICK;
        if let Some((armed_for, handle)) = self.timer {
            // Never moved later: a stream of heartbeats would otherwise keep pushing a passed
            // deadline away and nobody would ever become late.
            if armed_for <= fire_at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(fire_at.saturating_duration_since(Instant::now()), |act, ctx| {
            act.timer = None;
            act.apply_passed_deadlines();
            act.arm(ctx);
        });
        self.timer = Some((fire_at, handle));
    }

    /// Applies every deadline that has passed.
    fn apply_passed_deadlines(&mut self) {
        let mut transitions = self.tracker.tick(Instant::now(), Utc::now());
        // An agent unregistered while its deadline was pending is no longer watched (the
        // Manager also says Forget; this covers a message still on its way).
        let registered = self.registry.load();
        transitions.retain(|t| {
            let keep = registered.contains_key(&t.agent_id);
            if !keep {
                self.tracker.forget(&t.agent_id);
            }
            keep
        });
        if !transitions.is_empty() {
            self.publish_counts();
            self.report(transitions);
        }
        for id in self.tracker.take_still_down() {
            if let (Some(listener), true) = (&self.down_listener, registered.contains_key(&id)) {
                listener.do_send(WentDown(id));
            }
        }
    }
}

/// Asks again, one interval + grace from now, whether a `down` agent is still silent, and
/// says [`WentDown`] again if it is (no transition: it never left `down`). The Manager asks
/// when it restarts a supervised agent for its silence, so a restarted program that never
/// reports is restarted again (and, past `max_restarts`, becomes `fatal`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecheckSilence(pub String);

impl Handler<RecheckSilence> for Liveness {
    type Result = ();

    fn handle(&mut self, RecheckSilence(id): RecheckSilence, ctx: &mut Context<Self>) {
        self.tracker.recheck_down(&id, Instant::now());
        self.arm(ctx);
    }
}

/// An agent went `down`, or is still `down` when rechecked (sent to the listener set with
/// [`WatchDown`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WentDown(pub String);

/// Sets who is told when an agent goes `down`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchDown(pub Recipient<WentDown>);

impl Handler<WatchDown> for Liveness {
    type Result = ();

    fn handle(&mut self, WatchDown(listener): WatchDown, _: &mut Context<Self>) {
        self.down_listener = Some(listener);
    }
}

/// Heartbeats received (id, server receive time, reported status), from the Manager, one
/// message per batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Seen(pub Vec<(String, DateTime<Utc>, Option<ReportedStatus>)>);

impl Handler<Seen> for Liveness {
    type Result = ();

    fn handle(&mut self, Seen(batch): Seen, ctx: &mut Context<Self>) {
        let (now, wall) = (Instant::now(), Utc::now());
        let mut transitions = Vec::new();
        let registered = self.registry.load();
        for (id, received_at, reported) in batch {
            // Deadlines count from the receive time, not from when this message arrives.
            let lag = (wall - received_at).to_std().unwrap_or_default();
            let at = now.checked_sub(lag).unwrap_or(now);
            let timing = self.timing_of(registered.get(&id));
            transitions.extend(self.tracker.seen(&id, timing, at, received_at, reported));
        }
        if !transitions.is_empty() {
            self.publish_counts();
            self.report(transitions);
        }
        self.arm(ctx);
    }
}

/// Pauses (`true`) or resumes (`false`) an agent. Answers its status afterwards.
#[derive(Message)]
#[rtype(result = "(AgentStatus, DateTime<Utc>)")]
pub struct SetPaused {
    pub id: String,
    pub paused: bool,
    /// Whether the agent ever sent a heartbeat (a resumed agent that never did is `new`).
    pub ever_seen: bool,
}

impl Handler<SetPaused> for Liveness {
    type Result = MessageResult<SetPaused>;

    fn handle(&mut self, msg: SetPaused, ctx: &mut Context<Self>) -> Self::Result {
        let (now, wall) = (Instant::now(), Utc::now());
        let transition = if msg.paused {
            self.tracker.pause(&msg.id, wall)
        } else {
            let timing = self.timing(&msg.id);
            self.tracker.resume(&msg.id, timing, now, wall, msg.ever_seen)
        };
        if let Some(t) = transition {
            self.publish_counts();
            self.report(vec![t]);
        }
        self.arm(ctx);
        MessageResult(self.tracker.status(&msg.id).unwrap_or((AgentStatus::New, wall)))
    }
}

/// What supervision says of a supervised agent's program: a program stopped on purpose is
/// `stopped` (never `down`, no alert); with `heartbeats = false` the agent is `up` while its
/// program runs, and judged from its last moment running once it does not.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProcessChanged {
    pub id: String,
    pub phase: tracker::ProcessPhase,
}

impl Handler<ProcessChanged> for Liveness {
    type Result = ();

    fn handle(&mut self, ProcessChanged { id, phase }: ProcessChanged, ctx: &mut Context<Self>) {
        let (now, wall) = (Instant::now(), Utc::now());
        let registered = self.registry.load();
        let Some(info) = registered.get(&id) else { return };
        let heartbeats = info.heartbeats.unwrap_or(true);
        let timing = self.timing_of(Some(info));
        drop(registered);
        if let Some(t) = self.tracker.process_phase(&id, phase, heartbeats, timing, now, wall) {
            self.publish_counts();
            self.report(vec![t]);
        }
        self.arm(ctx);
    }
}

/// The agent was unregistered.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub String);

impl Handler<Forget> for Liveness {
    type Result = ();

    fn handle(&mut self, Forget(id): Forget, _: &mut Context<Self>) {
        self.tracker.forget(&id);
        self.transitions.forget(&id);
        if let Some(alerter) = &self.alerter {
            alerter.do_send(Resolve {
                name: AlertName::HeartbeatAgentDown,
                agent_id: id.clone(),
            });
        }
        self.publish_counts();
    }
}

/// The status of each of these agents (`new` for one never seen), in order.
#[derive(Message)]
#[rtype(result = "Vec<(AgentStatus, Option<DateTime<Utc>>)>")]
pub struct Statuses(pub Vec<String>);

impl Handler<Statuses> for Liveness {
    type Result = MessageResult<Statuses>;

    fn handle(&mut self, Statuses(ids): Statuses, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            ids.iter()
                .map(|id| match self.tracker.status(id) {
                    Some((status, since)) => (status, Some(since)),
                    None => (AgentStatus::New, None),
                })
                .collect(),
        )
    }
}

/// The liveness of the first `limit` agents of `agents` (by id), in that order (`new` for one
/// never seen): the `/metrics` path, asked at the same time as the Manager's figures.
#[derive(Message)]
#[rtype(result = "Vec<AgentStatus>")]
pub struct StatusesInOrder {
    /// The registry as the scrape loaded it.
    pub agents: Arc<AgentSet>,
    /// `metrics_agent_limit`.
    pub limit: usize,
}

impl Handler<StatusesInOrder> for Liveness {
    type Result = MessageResult<StatusesInOrder>;

    fn handle(&mut self, msg: StatusesInOrder, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            msg.agents
                .ids_after(None)
                .iter()
                .take(msg.limit)
                .map(|id| self.tracker.status(id).map_or(AgentStatus::New, |(status, _)| status))
                .collect(),
        )
    }
}

/// The status and since-when of `count` agents of `agents` (by id) from the `from`-th, in
/// that order (`new`, `None` for one never seen): the sorted listing asks a chunk at a time,
/// without copying ids.
#[derive(Message)]
#[rtype(result = "Vec<(AgentStatus, Option<DateTime<Utc>>)>")]
pub struct StatusesAt {
    /// The registry as the listing loaded it.
    pub agents: Arc<AgentSet>,
    pub from: usize,
    pub count: usize,
}

impl Handler<StatusesAt> for Liveness {
    type Result = MessageResult<StatusesAt>;

    fn handle(&mut self, msg: StatusesAt, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            msg.agents
                .ids_after(None)
                .get(msg.from..)
                .unwrap_or_default()
                .iter()
                .take(msg.count)
                .map(|id| match self.tracker.status(id) {
                    Some((status, since)) => (status, Some(since)),
                    None => (AgentStatus::New, None),
                })
                .collect(),
        )
    }
}

/// Whether each agent is in `status`: the filter behind `GET /agents?status=`.
#[derive(Message)]
#[rtype(result = "Vec<bool>")]
pub struct InStatus {
    pub ids: Vec<String>,
    pub status: AgentStatus,
}

impl Handler<InStatus> for Liveness {
    type Result = MessageResult<InStatus>;

    fn handle(&mut self, msg: InStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            msg.ids
                .iter()
                .map(|id| self.tracker.status(id).map_or(AgentStatus::New, |(s, _)| s) == msg.status)
                .collect(),
        )
    }
}
