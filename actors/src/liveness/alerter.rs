//! The Alerter actor: pushes alerts to Alertmanager's v2 API (`POST /api/v2/alerts`) when
//! `alertmanager_url` is set.
//!
//! - An agent entering `down` fires `HeartbeatAgentDown`; a supervised agent entering `fatal`
//!   fires `HeartbeatAgentFatal`. Labels: `alertname`, `agent_id`, `agent_type`, `instance`
//!   (heartbeatd's `instance_name`) and `severity`; annotations give the last seen time and
//!   the reported status.
//! - Every firing alert is sent again every `alert_resend_s`, with `endsAt` four of those
//!   ahead, so Alertmanager never resolves it between two sends. Recovery sends it once more
//!   with `endsAt` = now, which resolves it.
//! - Deliveries go to every URL (an Alertmanager cluster deduplicates), asynchronously, each
//!   retried like the webhook's and bounded in number: they never slow ingest.
//! - The firing set is kept in `data_dir/alerts.json` (written atomically, at most every
//!   0.5 s while it changes),
//!   so after a restart the alerts still firing are sent again at once, and Liveness starts
//!   their agents `down`, not `up`: an agent that recovered resolves its alert with its first
//!   heartbeat, and nothing is re-fired for agents that are fine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slog::{error, info, warn, Logger};

use crate::atomic_file::write_atomically;
use crate::liveness::delivery::{post_json, Retries};
use crate::log_gate::LogGate;

/// The file that keeps the firing alerts across restarts.
pub const FIRING_FILE: &str = "alerts.json";
/// Deliveries waiting or in flight, at most (past it new ones are dropped and counted).
const MAX_PENDING: usize = 1000;
const RETRIES: Retries = Retries {
    tries: 4,
    first_backoff: Duration::from_millis(200),
    max_backoff: Duration::from_secs(2),
};
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most alerts in one request (a big fleet going down at once is sent in pieces).
const BATCH: usize = 1000;
/// Fires and resolves are sent at most this often: a fleet going down at once is sent in
/// requests of [`BATCH`] alerts, not one request per agent (which the [`MAX_PENDING`] cap
/// would cut short).
const SEND_DELAY: Duration = Duration::from_millis(100);
/// `alerts.json` is written at most this often: a fleet going down at once costs one synced
/// write, not one per agent, on the thread the Manager shares.
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

#[derive(Serialize)]
struct Posted<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: DateTime<Utc>,
    #[serde(rename = "endsAt")]
    ends_at: DateTime<Utc>,
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

/// Reads the firing alerts kept by the last run; a damaged file counts as none (the alerts
/// are then fired again when their agents go down again).
pub fn load_firing(data_dir: &Path) -> BTreeMap<String, Alert> {
    crate::data_dir::read(&data_dir.join(FIRING_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The agents whose `HeartbeatAgentDown` was firing when the last run ended.
pub fn down_before(firing: &BTreeMap<String, Alert>) -> Vec<String> {
    firing
        .values()
        .filter(|a| a.labels.get("alertname").map(String::as_str) == Some("HeartbeatAgentDown"))
        .filter_map(|a| a.labels.get("agent_id").cloned())
        .collect()
}

/// Pushes alerts to Alertmanager.
pub struct Alerter {
    policy: AlerterPolicy,
    firing: Firing,
    client: Option<awc::Client>,
    pending: Arc<AtomicUsize>,
    failures: Arc<AtomicU64>,
    failure_log: Arc<Mutex<LogGate>>,
    /// A save of `alerts.json` is scheduled.
    save_pending: bool,
    /// Fires and resolves not sent yet, by alert key: the newest change of an alert wins, and
    /// an alert fired and resolved before it was sent is never sent.
    outbox: BTreeMap<String, Change>,
    log: Logger,
}

/// A change of an alert waiting to be sent.
enum Change {
    Fired(Alert),
    Resolved(Alert),
}

impl Alerter {
    /// `firing`: what [`load_firing`] found; `failures` is shared with `/metrics`.
    pub fn new(policy: AlerterPolicy, firing: Firing, failures: Arc<AtomicU64>, log: Logger) -> Self {
        Self {
            policy,
            firing,
            client: None,
            pending: Arc::new(AtomicUsize::new(0)),
            failures,
            failure_log: Arc::new(Mutex::new(LogGate::new(Duration::from_secs(10)))),
            save_pending: false,
            outbox: BTreeMap::new(),
            log,
        }
    }

    /// Queues a change; the outbox is sent [`SEND_DELAY`] after its first change.
    fn queue(&mut self, key: String, change: Change, ctx: &mut Context<Self>) {
        if self.outbox.is_empty() {
            ctx.run_later(SEND_DELAY, |act, ctx| act.send_outbox(ctx));
        }
        match change {
            // Fired and resolved before anything was sent: Alertmanager never needs to know.
            Change::Resolved(_) if matches!(self.outbox.get(&key), Some(Change::Fired(_))) => {
                self.outbox.remove(&key);
            }
            change => {
                self.outbox.insert(key, change);
            }
        }
    }

    fn send_outbox(&mut self, ctx: &mut Context<Self>) {
        let (mut fired, mut resolved) = (Vec::new(), Vec::new());
        for change in std::mem::take(&mut self.outbox).into_values() {
            match change {
                Change::Fired(alert) => fired.push(alert),
                Change::Resolved(alert) => resolved.push(alert),
            }
        }
        if !fired.is_empty() {
            let ends_at = self.ends_at();
            self.send(fired, ends_at, ctx);
        }
        if !resolved.is_empty() {
            self.send(resolved, Utc::now(), ctx);
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
        let bytes = serde_json::to_vec(&self.firing).unwrap_or_default();
        if let Err(e) = write_atomically(&self.policy.data_dir, FIRING_FILE, &bytes) {
            error!(self.log, "could not save the firing alerts; after a restart they are fired again only when their agents go down again";
                "path" => %self.policy.data_dir.join(FIRING_FILE).display(), "error" => %e);
        }
    }

    /// Sends `alerts` to every Alertmanager, with `ends_at`.
    fn send(&self, alerts: Vec<Alert>, ends_at: DateTime<Utc>, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else { return };
        for chunk in alerts.chunks(BATCH) {
            let posted: Vec<Posted> = chunk
                .iter()
                .map(|a| Posted {
                    labels: &a.labels,
                    annotations: &a.annotations,
                    starts_at: a.starts_at,
                    ends_at,
                })
                .collect();
            let body = serde_json::to_vec(&posted).unwrap_or_default();
            for url in &self.policy.urls {
                if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    self.failed("too many deliveries waiting; dropped");
                    continue;
                }
                let (client, body, url) = (client.clone(), body.clone(), format!("{url}/api/v2/alerts"));
                let (pending, failures, gate, log) = (
                    Arc::clone(&self.pending),
                    Arc::clone(&self.failures),
                    Arc::clone(&self.failure_log),
                    self.log.clone(),
                );
                ctx.spawn(fut::wrap_future(async move {
                    let delivered = post_json(&client, &url, &body, RETRIES).await;
                    pending.fetch_sub(1, Ordering::AcqRel);
                    let Err(last_error) = delivered else { return };
                    failures.fetch_add(1, Ordering::Relaxed);
                    if let Ok(Some(not_logged)) = gate.lock().map(|mut g| g.check(Instant::now())) {
                        warn!(log, "alert delivery to Alertmanager failed"; "url" => &url, "reason" => &last_error,
                            "failures_not_logged" => not_logged,
                            "what_to_do" => "check that alertmanager_url is reachable; firing alerts are sent again every alert_resend_s");
                    }
                }));
            }
        }
    }

    fn failed(&self, reason: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(Some(not_logged)) = self.failure_log.lock().map(|mut g| g.check(Instant::now())) {
            warn!(self.log, "alert delivery to Alertmanager failed"; "reason" => reason, "failures_not_logged" => not_logged);
        }
    }

    fn ends_at(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.policy.resend * 4).unwrap_or(chrono::Duration::hours(1))
    }

    fn resend_all(&mut self, ctx: &mut Context<Self>) {
        if !self.firing.is_empty() {
            let alerts = self.firing.values().cloned().collect();
            let ends_at = self.ends_at();
            self.send(alerts, ends_at, ctx);
        }
    }
}

impl Actor for Alerter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.client = Some(awc::Client::builder().timeout(TIMEOUT).finish());
        if !self.firing.is_empty() {
            info!(self.log, "sending again the alerts still firing when heartbeatd last stopped";
                "alerts" => self.firing.len());
            self.resend_all(ctx);
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
        if self.firing.contains_key(&key) {
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
        self.firing.insert(key.clone(), alert.clone());
        self.schedule_save(ctx);
        self.queue(key, Change::Fired(alert), ctx);
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
        if let Some(alert) = self.firing.remove(&key) {
            self.schedule_save(ctx);
            self.queue(key, Change::Resolved(alert), ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firing_file_round_trips_and_names_the_agents_that_were_down() {
        let dir = tempfile::tempdir().unwrap();
        let mut firing = Firing::new();
        for (name, id) in [
            (AlertName::HeartbeatAgentDown, "a"),
            (AlertName::HeartbeatAgentFatal, "b"),
        ] {
            let labels = [("alertname", name.name()), ("agent_id", id)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            firing.insert(
                key(name, id),
                Alert {
                    labels,
                    annotations: BTreeMap::new(),
                    starts_at: Utc::now(),
                },
            );
        }
        write_atomically(dir.path(), FIRING_FILE, &serde_json::to_vec(&firing).unwrap()).unwrap();
        let loaded = load_firing(dir.path());
        assert_eq!(loaded, firing);
        assert_eq!(down_before(&loaded), ["a"]);
        std::fs::write(dir.path().join(FIRING_FILE), b"{torn").unwrap();
        assert!(load_firing(dir.path()).is_empty(), "a damaged file counts as none");
    }

    /// A stand-in Alertmanager: answers 200 to every request, counting the requests and the
    /// alerts by `endsAt` (in the future: firing; else resolved).
    #[derive(Default)]
    struct Received {
        requests: AtomicUsize,
        firing: Mutex<std::collections::HashSet<String>>,
        resolved: Mutex<std::collections::HashSet<String>>,
    }

    fn stand_in_alertmanager() -> (u16, Arc<Received>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Received::default());
        let shared = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let received = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut length = 0usize;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).unwrap();
                        received.requests.fetch_add(1, Ordering::SeqCst);
                        let alerts: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                        for alert in alerts {
                            let id = alert["labels"]["agent_id"].as_str().unwrap_or_default().to_owned();
                            let ends: DateTime<Utc> = alert["endsAt"].as_str().unwrap().parse().unwrap();
                            let set = if ends > Utc::now() {
                                &received.firing
                            } else {
                                &received.resolved
                            };
                            set.lock().unwrap().insert(id);
                        }
                        writer
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .unwrap();
                    }
                });
            }
        });
        (port, received)
    }

    fn fire(id: &str) -> Fire {
        Fire {
            name: AlertName::HeartbeatAgentDown,
            agent_id: id.to_owned(),
            agent_type: String::new(),
            last_seen: None,
            reported_status: None,
            detail: None,
        }
    }

    /// A fleet going down at once: 3 000 fires reach Alertmanager in a few requests of up to
    /// BATCH alerts, none dropped (one request each would pass MAX_PENDING and drop most).
    /// Fired and resolved within one send window: never sent.
    #[actix_rt::test]
    async fn a_fleet_going_down_at_once_is_sent_in_batches_and_nothing_is_dropped() {
        let (port, received) = stand_in_alertmanager();
        let dir = tempfile::tempdir().unwrap();
        let failures = Arc::new(AtomicU64::new(0));
        let policy = AlerterPolicy {
            urls: vec![format!("http://127.0.0.1:{port}")],
            resend: Duration::from_secs(3600),
            instance: "test".to_owned(),
            data_dir: dir.path().to_owned(),
        };
        let alerter = Alerter::new(
            policy,
            Firing::new(),
            Arc::clone(&failures),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .start();

        for n in 0..3000 {
            alerter.send(fire(&format!("agent-{n:04}"))).await.unwrap();
        }
        alerter.send(fire("blip")).await.unwrap();
        alerter
            .send(Resolve {
                name: AlertName::HeartbeatAgentDown,
                agent_id: "blip".to_owned(),
            })
            .await
            .unwrap();

        let deadline = Instant::now() + Duration::from_secs(20);
        while received.firing.lock().unwrap().len() < 3000 && Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(received.firing.lock().unwrap().len(), 3000, "every alert arrived");
        assert_eq!(failures.load(Ordering::SeqCst), 0, "none dropped or failed");
        let requests = received.requests.load(Ordering::SeqCst);
        assert!(requests <= 10, "{requests} requests for 3000 alerts");
        assert!(!received.firing.lock().unwrap().contains("blip"));
        assert!(
            received.resolved.lock().unwrap().is_empty(),
            "blip was never sent, so never resolved"
        );
    }
}
