//! The Alerter actor: pushes alerts to Alertmanager's v2 API (`POST /api/v2/alerts`) when
//! `alertmanager_url` is set.
//!
//! - An agent entering `down` fires `HeartbeatAgentDown`; a supervised agent entering `fatal`
//!   fires `HeartbeatAgentFatal`. Labels: `alertname`, `agent_id`, `agent_type`, `instance`
//!   (heartbeatd's `instance_name`) and `severity`; annotations give the last seen time and
//!   the reported status.
//! - Every firing alert is sent again every `alert_resend_s`, with `endsAt` four of those
//!   ahead, so Alertmanager never resolves it between two sends. Recovery sends it once more
//!   with `endsAt` = the time it was resolved, which resolves it.
//! - Deliveries go to every URL (an Alertmanager cluster deduplicates), asynchronously. What
//!   is still to be sent is an [`alert_backlog`](super::alert_backlog): the newest state of
//!   each alert and, per URL, which alerts that URL has yet to be told. Each URL has at most
//!   one request in flight, of at most [`BATCH`] alerts and its share of [`REQUEST_BYTES`];
//!   a failed request puts its alerts back (their newest state goes next, after a backoff).
//!   So an Alertmanager that blackholes its requests costs one entry per alert and one
//!   request, not a queue of every resend, and once it answers it gets every alert's newest
//!   state.
//! - The actor runs on an arbiter of its own (see [`Alerter::start_on_own_thread`]): building
//!   requests for a large fleet never delays the Manager or the HTTP threads.
//! - The firing set is kept in `data_dir/alerts.json` (written atomically, at most every
//!   0.5 s while it changes),
//!   so after a restart the alerts still firing are sent again at once, and Liveness starts
//!   their agents `down`, not `up`: an agent that recovered resolves its alert with its first
//!   heartbeat, and nothing is re-fired for agents that are fine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slog::{error, info, warn, Logger};

use crate::atomic_file::write_atomically;
use crate::log_gate::LogGate;
use crate::notify::alert_backlog::Backlog;
pub use crate::notify::alert_backlog::BacklogFigures;
use crate::notify::delivery::{post_json, Retries};

/// The file that keeps the firing alerts across restarts.
pub const FIRING_FILE: &str = "alerts.json";
/// One try per request: a failed request's alerts wait again in the backlog and go with
/// their newest state after [`FIRST_BACKOFF`] (doubling up to [`MAX_BACKOFF`]), instead of
/// a request retrying a state that may be stale by then.
const ONE_TRY: Retries = Retries {
    tries: 1,
    first_backoff: Duration::ZERO,
    max_backoff: Duration::ZERO,
};
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most alerts in one request (a big fleet going down at once is sent in pieces).
const BATCH: usize = 1000;
/// The request bodies in flight, all URLs together, are at most this many bytes: each URL's
/// request gets an equal share (at least one alert goes in any request).
pub const REQUEST_BYTES: usize = 4 << 20;
/// Fires and resolves are gathered this long before an idle URL is sent them: a fleet going
/// down at once is sent in requests of [`BATCH`] alerts, not one request per agent.
const SEND_DELAY: Duration = Duration::from_millis(100);
/// `alerts.json` is written at most this often: a fleet going down at once costs one synced
/// write, not one per agent.
const SAVE_DELAY: Duration = Duration::from_millis(500);

/// Where and how alerts go.
#[derive(Debug, Clone)]
pub struct AlerterPolicy {
    /// Alertmanager base URLs (`http://host:9093`).
    pub urls: Vec<String>,
    pub resend: Duration,
    /// The `instance` label.
    pub instance: String,
    pub data_dir: PathBuf,
}

/// One alert, as Alertmanager's API takes it (without `endsAt`, set at each send).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: DateTime<Utc>,
}

/// The alerts an agent can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlertName {
    HeartbeatAgentDown,
    HeartbeatAgentFatal,
}

impl AlertName {
    fn severity(self) -> &'static str {
        match self {
            Self::HeartbeatAgentDown => "warning",
            Self::HeartbeatAgentFatal => "critical",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::HeartbeatAgentDown => "HeartbeatAgentDown",
            Self::HeartbeatAgentFatal => "HeartbeatAgentFatal",
        }
    }
}

/// The firing alerts, keyed by (alert, agent id): what `alerts.json` holds.
type Firing = BTreeMap<String, Alert>;

fn key(name: AlertName, agent_id: &str) -> String {
    format!("{}/{agent_id}", name.name())
}

/// Reads the firing alerts kept by the last run. A damaged file counts as none (the alerts
/// are fired again when their agents go down again): it is moved aside, and the second value
/// says where, for the log.
pub fn load_firing(data_dir: &Path) -> (BTreeMap<String, Alert>, Option<PathBuf>) {
    let path = data_dir.join(FIRING_FILE);
    let Ok(bytes) = crate::data_dir::read(&path) else {
        return (BTreeMap::new(), None);
    };
    match serde_json::from_slice(&bytes) {
        Ok(firing) => (firing, None),
        Err(_) => {
            let aside = data_dir.join(format!("{FIRING_FILE}.corrupt-{}", Utc::now().format("%Y%m%dT%H%M%SZ")));
            let moved = std::fs::rename(&path, &aside).is_ok();
            (BTreeMap::new(), Some(if moved { aside } else { path }))
        }
    }
}

/// The alerts of the last run that ended while heartbeatd was away, to be resolved at start:
/// every `HeartbeatAgentFatal` (its program starts afresh now, and fires again if it gives up
/// again), and every alert of an agent no longer registered.
pub fn ended_while_away(
    firing: &BTreeMap<String, Alert>,
    registered: impl Fn(&str) -> bool,
) -> Vec<(AlertName, String)> {
    firing
        .values()
        .filter_map(|alert| {
            let name = match alert.labels.get("alertname").map(String::as_str) {
                Some("HeartbeatAgentDown") => AlertName::HeartbeatAgentDown,
                Some("HeartbeatAgentFatal") => AlertName::HeartbeatAgentFatal,
                _ => return None,
            };
            let id = alert.labels.get("agent_id")?;
            (name == AlertName::HeartbeatAgentFatal || !registered(id)).then(|| (name, id.clone()))
        })
        .collect()
}

/// The agents whose `HeartbeatAgentDown` was firing when the last run ended.
pub fn down_before(firing: &BTreeMap<String, Alert>) -> Vec<String> {
    firing
        .values()
        .filter(|a| a.labels.get("alertname").map(String::as_str) == Some("HeartbeatAgentDown"))
        .filter_map(|a| a.labels.get("agent_id").cloned())
        .collect()
}

/// One Alertmanager URL and the pace of its requests.
struct Lane {
    url: String,
    /// A send is scheduled (after [`SEND_DELAY`] or a backoff): no second one.
    scheduled: bool,
    /// The wait after the next failure.
    backoff: Duration,
}

/// Pushes alerts to Alertmanager.
pub struct Alerter {
    policy: AlerterPolicy,
    /// The newest state of every alert, and what each URL has yet to be told.
    backlog: Backlog,
    lanes: Vec<Lane>,
    /// Each URL's share of [`REQUEST_BYTES`].
    request_bytes: usize,
    timeout: Duration,
    client: Option<awc::Client>,
    failures: Arc<AtomicU64>,
    failure_log: LogGate,
    /// A save of `alerts.json` is scheduled.
    save_pending: bool,
    log: Logger,
}

impl Alerter {
    /// `firing`: what [`load_firing`] found; `failures` is shared with `/metrics`.
    pub fn new(policy: AlerterPolicy, firing: Firing, failures: Arc<AtomicU64>, log: Logger) -> Self {
        let lanes: Vec<Lane> = policy
            .urls
            .iter()
            .map(|url| Lane {
                url: format!("{url}/api/v2/alerts"),
                scheduled: false,
                backoff: FIRST_BACKOFF,
            })
            .collect();
        Self {
            backlog: Backlog::new(lanes.len(), firing),
            request_bytes: REQUEST_BYTES / lanes.len().max(1),
            lanes,
            policy,
            timeout: TIMEOUT,
            client: None,
            failures,
            failure_log: LogGate::new(Duration::from_secs(10)),
            save_pending: false,
            log,
        }
    }

    /// Starts an Alerter ([`Alerter::new`]'s arguments) on an arbiter (a thread) of its own,
    /// so that building and sending requests never takes time from the actors that take
    /// heartbeats.
    pub fn start_on_own_thread(
        policy: AlerterPolicy,
        firing: Firing,
        failures: Arc<AtomicU64>,
        log: Logger,
    ) -> Addr<Self> {
        // The arbiter's thread runs until the process exits; the handle is all we keep.
        Self::start_in_arbiter(&Arbiter::new().handle(), move |_| {
            Self::new(policy, firing, failures, log)
        })
    }

    /// A shorter request timeout (tests of a blackholed Alertmanager).
    #[cfg(test)]
    fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Every lane that is idle, has alerts waiting and no send scheduled sends after
    /// [`SEND_DELAY`] (gathering the changes of that moment into one request).
    fn wake(&mut self, ctx: &mut Context<Self>) {
        for lane in 0..self.lanes.len() {
            if !self.lanes[lane].scheduled && !self.backlog.is_busy(lane) && self.backlog.has_waiting(lane) {
                self.schedule(lane, SEND_DELAY, ctx);
            }
        }
    }

    fn schedule(&mut self, lane: usize, after: Duration, ctx: &mut Context<Self>) {
        self.lanes[lane].scheduled = true;
        ctx.run_later(after, move |act, ctx| {
            act.lanes[lane].scheduled = false;
            act.send(lane, ctx);
        });
    }

    /// Sends the lane's next request, if it is idle and has alerts waiting.
    fn send(&mut self, lane: usize, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else { return };
        let ends_at = self.ends_at();
        let Some(body) = self.backlog.take(lane, ends_at, BATCH, self.request_bytes) else {
            return;
        };
        let url = self.lanes[lane].url.clone();
        let request = async move { post_json(&client, &url, &body, ONE_TRY).await };
        ctx.spawn(fut::wrap_future(request).map(move |result, act: &mut Self, ctx| act.answered(lane, result, ctx)));
    }

    fn answered(&mut self, lane: usize, result: Result<(), String>, ctx: &mut Context<Self>) {
        match result {
            Ok(()) => {
                self.backlog.delivered(lane);
                self.lanes[lane].backoff = FIRST_BACKOFF;
                // A full request's worth waiting goes at once; less is gathered a moment
                // longer, so that changes trickling in do not go one small request each.
                if !self.lanes[lane].scheduled {
                    if self.backlog.waiting(lane) >= BATCH {
                        self.send(lane, ctx);
                    } else if self.backlog.has_waiting(lane) {
                        self.schedule(lane, SEND_DELAY, ctx);
                    }
                }
            }
            Err(reason) => {
                self.backlog.failed(lane);
                self.failures.fetch_add(1, Ordering::Relaxed);
                if let Some(not_logged) = self.failure_log.check(Instant::now()) {
                    warn!(self.log, "alert delivery to Alertmanager failed; the alerts' newest state is sent again";
                        "url" => &self.lanes[lane].url, "reason" => &reason, "failures_not_logged" => not_logged,
                        "what_to_do" => "check that alertmanager_url is reachable");
                }
                let backoff = self.lanes[lane].backoff;
                self.lanes[lane].backoff = (backoff * 2).min(MAX_BACKOFF);
                if !self.lanes[lane].scheduled {
                    self.schedule(lane, backoff, ctx);
                }
            }
        }
    }

    /// Saves the firing set soon (once for all changes within [`SAVE_DELAY`]).
    fn schedule_save(&mut self, ctx: &mut Context<Self>) {
        if !self.save_pending {
            self.save_pending = true;
            ctx.run_later(SAVE_DELAY, |act, _| {
                if act.save_pending {
                    act.save_pending = false;
                    act.save();
                }
            });
        }
    }

    fn save(&self) {
        let firing: BTreeMap<&str, &Alert> = self.backlog.firing().collect();
        let bytes = serde_json::to_vec(&firing).unwrap_or_default();
        if let Err(e) = write_atomically(&self.policy.data_dir, FIRING_FILE, &bytes) {
            error!(self.log, "could not save the firing alerts; after a restart they are fired again only when their agents go down again";
                "path" => %self.policy.data_dir.join(FIRING_FILE).display(), "error" => %e);
        }
    }

    fn ends_at(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.policy.resend * 4).unwrap_or(chrono::Duration::hours(1))
    }

    fn resend_all(&mut self, ctx: &mut Context<Self>) {
        self.backlog.resend();
        self.wake(ctx);
    }
}

impl Actor for Alerter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.client = Some(awc::Client::builder().timeout(self.timeout).finish());
        let firing = self.backlog.figures().firing;
        if firing > 0 {
            info!(self.log, "sending again the alerts still firing when heartbeatd last stopped";
                "alerts" => firing);
            self.wake(ctx);
        }
        ctx.run_interval(self.policy.resend, |act, ctx| act.resend_all(ctx));
    }
}

/// Writes a save still waiting now (heartbeatd is stopping; its process exits without
/// dropping the actors).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaveNow;

impl Handler<SaveNow> for Alerter {
    type Result = ();

    fn handle(&mut self, _: SaveNow, _: &mut Context<Self>) {
        if self.save_pending {
            self.save_pending = false;
            self.save();
        }
    }
}

/// Fires an alert for an agent (once; a second `Fire` of the same alert changes nothing).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fire {
    pub name: AlertName,
    pub agent_id: String,
    pub agent_type: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub reported_status: Option<String>,
    /// For `HeartbeatAgentFatal`: how the process last ended.
    pub detail: Option<String>,
}

impl Handler<Fire> for Alerter {
    type Result = ();

    fn handle(&mut self, msg: Fire, ctx: &mut Context<Self>) {
        let key = key(msg.name, &msg.agent_id);
        if self.backlog.is_firing(&key) {
            return;
        }
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_owned(), msg.name.name().to_owned());
        labels.insert("agent_id".to_owned(), msg.agent_id.clone());
        labels.insert("agent_type".to_owned(), msg.agent_type);
        labels.insert("instance".to_owned(), self.policy.instance.clone());
        labels.insert("severity".to_owned(), msg.name.severity().to_owned());
        let mut annotations = BTreeMap::new();
        let last_seen = msg.last_seen.map_or("never".to_owned(), |t| t.to_rfc3339());
        let reported = msg.reported_status.unwrap_or_else(|| "none".to_owned());
        annotations.insert("last_seen".to_owned(), last_seen.clone());
        annotations.insert("reported_status".to_owned(), reported.clone());
        let summary = match msg.name {
            AlertName::HeartbeatAgentDown => format!(
                "agent {} on {} is down: no heartbeat since {last_seen} (last reported status: {reported})",
                msg.agent_id, self.policy.instance
            ),
            AlertName::HeartbeatAgentFatal => format!(
                "agent {} on {} restarted too often and is no longer started ({})",
                msg.agent_id,
                self.policy.instance,
                msg.detail.as_deref().unwrap_or("see heartbeatd ctl tail")
            ),
        };
        annotations.insert("summary".to_owned(), summary);
        let alert = Alert {
            labels,
            annotations,
            starts_at: Utc::now(),
        };
        self.backlog.fire(&key, alert);
        self.schedule_save(ctx);
        self.wake(ctx);
    }
}

/// Resolves an agent's alert, if it is firing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resolve {
    pub name: AlertName,
    pub agent_id: String,
}

impl Handler<Resolve> for Alerter {
    type Result = ();

    fn handle(&mut self, msg: Resolve, ctx: &mut Context<Self>) {
        let key = key(msg.name, &msg.agent_id);
        if self.backlog.resolve(&key, Utc::now()) {
            self.schedule_save(ctx);
            self.wake(ctx);
        }
    }
}

/// What the backlog holds now.
#[derive(Message)]
#[rtype(result = "BacklogFigures")]
pub struct BacklogNow;

impl Handler<BacklogNow> for Alerter {
    type Result = MessageResult<BacklogNow>;

    fn handle(&mut self, _: BacklogNow, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.backlog.figures())
    }
}

#[cfg(test)]
#[path = "alerter_tests.rs"]
mod tests;
