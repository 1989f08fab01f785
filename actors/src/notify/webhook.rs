//! The Webhook actor: POSTs each liveness transition to `webhook_url` as
//! `{agent_id, from, to, at, last_seen, reported_status}`, and each change of a supervised
//! agent's process state as `{agent_id, kind: "process", from, to, at, pid, exit, restarts}`.
//!
//! Delivery is asynchronous: Liveness hands a transition over and goes on; each delivery runs
//! as a task of this actor's own, retried with exponential backoff (0.2 s doubling) up to
//! `webhook_retries` times. A delivery that fails every try is counted and logged at most once
//! per 10 s. At most [`MAX_PENDING`] deliveries wait at a time; past that (a receiver down for
//! long) new ones are dropped and counted as failures, so memory stays bounded.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use slog::{warn, Logger};

use crate::log_gate::LogGate;
use crate::model::heartbeat::ReportedStatus;
use crate::model::liveness::{AgentStatus, Transition};
use crate::model::process::ProcessEvent;
use crate::notify::delivery::{post_json, Retries};

/// Deliveries waiting or in flight, at most.
pub const MAX_PENDING: usize = 10_000;
/// First wait before a retry; doubles each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct WebhookPolicy {
    pub url: String,
    /// Per try.
    pub timeout: Duration,
    /// Tries after the first.
    pub retries: u32,
}

/// The body of a delivery.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    agent_id: &'a str,
    from: AgentStatus,
    to: AgentStatus,
    at: DateTime<Utc>,
    last_seen: Option<DateTime<Utc>>,
    reported_status: Option<ReportedStatus>,
}

/// Delivers transitions.
pub struct Webhook {
    /// `None`: no `webhook_url` is set; transitions are not delivered. Changed by
    /// [`Reconfigure`] (a SIGHUP reload).
    policy: Option<WebhookPolicy>,
    /// Shared with Liveness: whether a URL is set, so no transition is sent here for nothing.
    enabled: Arc<AtomicBool>,
    client: Option<awc::Client>,
    pending: Arc<AtomicUsize>,
    failures: Arc<AtomicU64>,
    failure_log: Arc<Mutex<LogGate>>,
    log: Logger,
}

impl Webhook {
    /// Build it on the arbiter it runs on (its HTTP client is not `Send`); `failures` is
    /// shared with Stats.
    /// `enabled` is set here and at every [`Reconfigure`] to whether a URL is set; Liveness
    /// reads it before sending a transition.
    pub fn new(policy: Option<WebhookPolicy>, enabled: Arc<AtomicBool>, failures: Arc<AtomicU64>, log: Logger) -> Self {
        enabled.store(policy.is_some(), Ordering::Relaxed);
        Self {
            enabled,
            policy,
            client: None,
            pending: Arc::new(AtomicUsize::new(0)),
            failures,
            failure_log: Arc::new(Mutex::new(LogGate::new(Duration::from_secs(10)))),
            log,
        }
    }
}

impl Actor for Webhook {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.build_client();
    }
}

impl Webhook {
    /// awc's client belongs to the thread that uses it: made on the actor's arbiter.
    fn build_client(&mut self) {
        self.client = self
            .policy
            .as_ref()
            .map(|p| awc::Client::builder().timeout(p.timeout).finish());
    }
}

/// Replaces the delivery settings (a SIGHUP reload); deliveries already running finish with
/// the old ones.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub Option<WebhookPolicy>);

impl Handler<Reconfigure> for Webhook {
    type Result = ();

    fn handle(&mut self, Reconfigure(policy): Reconfigure, _: &mut Context<Self>) {
        self.enabled.store(policy.is_some(), Ordering::Relaxed);
        self.policy = policy;
        self.build_client();
    }
}

/// One transition to deliver.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Transition);

impl Handler<Deliver> for Webhook {
    type Result = ();

    fn handle(&mut self, Deliver(t): Deliver, ctx: &mut Context<Self>) {
        let body = serde_json::to_vec(&Payload {
            agent_id: &t.agent_id,
            from: t.from,
            to: t.to,
            at: t.at,
            last_seen: t.last_seen,
            reported_status: t.reported_status,
        })
        .unwrap_or_default();
        self.deliver(t.agent_id, t.to.name(), body, ctx);
    }
}

/// One change of a supervised agent's process state to deliver (`"kind": "process"`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverProcess {
    pub agent_id: String,
    pub event: ProcessEvent,
}

#[derive(Serialize)]
struct ProcessPayload<'a> {
    agent_id: &'a str,
    #[serde(flatten)]
    event: &'a ProcessEvent,
}

impl Handler<DeliverProcess> for Webhook {
    type Result = ();

    fn handle(&mut self, msg: DeliverProcess, ctx: &mut Context<Self>) {
        let body = serde_json::to_vec(&ProcessPayload {
            agent_id: &msg.agent_id,
            event: &msg.event,
        })
        .unwrap_or_default();
        self.deliver(msg.agent_id, msg.event.to.name(), body, ctx);
    }
}

impl Webhook {
    /// Posts `body` with retries, off the caller's path; counts and logs (rate-limited) a
    /// delivery that failed every try or found too many waiting.
    fn deliver(&mut self, agent_id: String, to: &'static str, body: Vec<u8>, ctx: &mut Context<Self>) {
        let failed = move |failures: &AtomicU64, gate: &Mutex<LogGate>, log: &Logger, reason: &str| {
            failures.fetch_add(1, Ordering::Relaxed);
            if let Ok(Some(not_logged)) = gate.lock().map(|mut g| g.check(Instant::now())) {
                warn!(log, "webhook delivery failed"; "agent_id" => &agent_id, "to" => to,
                    "reason" => reason, "failures_not_logged" => not_logged,
                    "what_to_do" => "check that webhook_url is reachable and answers 2xx");
            }
        };
        let Some(policy) = &self.policy else { return };
        let (url, tries) = (policy.url.clone(), policy.retries + 1);
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            failed(
                &self.failures,
                &self.failure_log,
                &self.log,
                "too many deliveries waiting; dropped",
            );
            return;
        }
        let Some(client) = self.client.clone() else {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        let (pending, failures, gate, log) = (
            Arc::clone(&self.pending),
            Arc::clone(&self.failures),
            Arc::clone(&self.failure_log),
            self.log.clone(),
        );
        let retries = Retries {
            tries,
            first_backoff: FIRST_BACKOFF,
            max_backoff: MAX_BACKOFF,
        };
        ctx.spawn(fut::wrap_future(async move {
            let delivered = post_json(&client, &url, &body, retries).await;
            pending.fetch_sub(1, Ordering::AcqRel);
            if let Err(last_error) = delivered {
                failed(&failures, &gate, &log, &last_error);
            }
        }));
    }
}
