//! `POST /heartbeat`: read at most 64 KiB, parse as JSON whatever the Content-Type says,
//! validate, take a slot in the bounded queue, hand the heartbeat to the worker pool, answer
//! 200 "heartbeat received". The 200 means queued (as in the original); the drain at shutdown
//! makes sure everything queued is processed and on disk before exit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Addr, WeakAddr};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use heartbeatd_actors::counters::{IngressCounters, ManagerCounters, RejectReason};
use heartbeatd_actors::ingest::queue::IngressQueue;
use heartbeatd_actors::ingest::worker::HeartbeatWorker;
use heartbeatd_actors::log_gate::LogGate;
use heartbeatd_actors::log_text::clip;
use heartbeatd_actors::manager::{AutoRegisterAgent, Manager};
use heartbeatd_actors::model::agent::is_valid_agent_id;
use heartbeatd_actors::registry::RegistryError;
use heartbeatd_actors::registry::RegistrySnapshot;
use slog::{debug, warn, Logger};

use super::body::{read_limited, BodyError};
use super::ApiResponse;
use crate::heartbeat_request::{self, RequestError, TimestampSource};
use heartbeatd_actors::ingest::handoff;

/// The largest body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// At most one "unparseable timestamp" warning, and one "queue full" warning, per this long;
/// each says how many were not logged. Under overload either would otherwise log per request.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Why a heartbeat was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Invalid(#[from] RequestError),
    #[error("worker pool is full, please retry later")]
    QueueFull,
    #[error("heartbeat receiver is stopped")]
    Stopped,
    /// Writes to `data_dir` fail and the heartbeats held in memory reached their bound.
    #[error("writes to data_dir are failing and the heartbeats waiting in memory reached their bound; retry later")]
    BacklogFull,
    /// `auto_register` could not register the agent (the registry could not be saved).
    #[error("could not register the agent: {0}")]
    Registration(String),
    /// `auto_register` is at `auto_register_limit`.
    #[error(
        "agent is not registered and auto_register_limit ({0} agents) is reached; register it through the admin API"
    )]
    RegistryFull(usize),
}

impl HeartbeatError {
    /// The `reason` label of `heartbeatd_heartbeats_rejected_total`.
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::Invalid(RequestError::UnknownAgent(_)) => RejectReason::UnknownAgent,
            Self::Body(_) | Self::Invalid(_) | Self::Registration(_) => RejectReason::Invalid,
            Self::RegistryFull(_) => RejectReason::UnknownAgent,
            // Back-pressure like a full queue: the agent should retry later.
            Self::QueueFull | Self::BacklogFull => RejectReason::QueueFull,
            Self::Stopped => RejectReason::Stopping,
        }
    }
}

impl ResponseError for HeartbeatError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Body(BodyError::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body(BodyError::TooSlow(_)) => StatusCode::REQUEST_TIMEOUT,
            Self::Body(BodyError::Read(_)) | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::QueueFull | Self::Stopped | Self::Registration(_) | Self::BacklogFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RegistryFull(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = ApiResponse::error(self.status_code(), self.to_string());
        if matches!(self, Self::BacklogFull) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("10"));
        }
        if matches!(self, Self::QueueFull) {
            // Congestion is short-lived: tell agents to come back in a second.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if matches!(self, Self::RegistryFull(_)) {
            // Only an operator can make room: no point in coming back soon.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("300"));
        }
        response
    }
}

/// Everything the handler needs; one per server, shared by its HTTP worker threads.
pub struct HeartbeatIngress {
    pub queue: Arc<IngressQueue>,
    /// Weak, so that only the pool's own handle keeps the worker threads alive and closing it
    /// at shutdown ends them deterministically; a failed upgrade means "stopped".
    pub workers: WeakAddr<HeartbeatWorker>,
    pub registry: RegistrySnapshot,
    /// Received and rejected counts; Stats reads them.
    pub counters: Arc<IngressCounters>,
    /// Set when shutdown begins; from then on heartbeats get 503 "stopped".
    pub stopping: Arc<AtomicBool>,
    /// `auto_register`: where unknown, well-formed agents get registered.
    pub auto_register: Option<Addr<Manager>>,
    /// `auto_register_limit`: past it, unknown agents get 429 without a message to anyone.
    pub auto_register_limit: usize,
    /// The "limit reached" warning is logged once per run.
    limit_warned: AtomicBool,
    /// The Manager's counters: while the disk fails and the heartbeats held in memory reach
    /// their bound, new ones are refused (before anything is answered 200).
    pub store_backlog: Option<Arc<ManagerCounters>>,
    pub log: Logger,
    /// The whole body must arrive within this long (`request_timeout_s`); else 408.
    pub request_timeout: Duration,
    timestamp_warnings: Mutex<LogGate>,
    queue_full_warnings: Mutex<LogGate>,
    /// Invalid requests are logged at most once per [`WARNING_INTERVAL`]: one client sending
    /// garbage must not be able to fill the disk with log lines.
    invalid_warnings: Mutex<LogGate>,
}

impl HeartbeatIngress {
    pub fn new(
        queue: Arc<IngressQueue>,
        workers: WeakAddr<HeartbeatWorker>,
        registry: RegistrySnapshot,
        counters: Arc<IngressCounters>,
        stopping: Arc<AtomicBool>,
        auto_register: Option<Addr<Manager>>,
        log: Logger,
    ) -> Self {
        Self {
            queue,
            workers,
            registry,
            counters,
            stopping,
            auto_register,
            log,
            auto_register_limit: usize::MAX,
            limit_warned: AtomicBool::new(false),
            store_backlog: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            timestamp_warnings: Mutex::new(LogGate::new(WARNING_INTERVAL)),
            queue_full_warnings: Mutex::new(LogGate::new(WARNING_INTERVAL)),
            invalid_warnings: Mutex::new(LogGate::new(WARNING_INTERVAL)),
        }
    }

    /// Sets `auto_register_limit`.
    pub fn with_auto_register_limit(mut self, limit: usize) -> Self {
        self.auto_register_limit = limit;
        self
    }

    /// Refuses heartbeats while [`ManagerCounters::backlog_full`].
    pub fn with_store_backlog(mut self, counters: Arc<ManagerCounters>) -> Self {
        self.store_backlog = Some(counters);
        self
    }

    /// Sets the deadline for receiving a whole body.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Logs a refused request, at most once per [`WARNING_INTERVAL`], with the agent's id
    /// (if any) and the reason cut to a loggable length. `agent_id` is only looked for when
    /// the line is written: under a flood of bad bodies, the others are not parsed twice.
    fn warn_invalid(&self, agent_id: impl FnOnce() -> String, reason: &dyn std::fmt::Display) {
        // try_lock: under a flood, rejections must not queue up behind each other here.
        if let Ok(Some(not_logged)) = self.invalid_warnings.try_lock().map(|mut g| g.check(Instant::now())) {
            warn!(self.log, "invalid heartbeat request (logged at most once per 10 s)";
                "agent_id" => %clip(&agent_id()), "reason" => %clip(&reason.to_string()),
                "similar_warnings_not_logged" => not_logged);
        }
    }
}

/// The built-in `request_timeout_s`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn post_heartbeat(
    req: HttpRequest,
    payload: web::Payload,
    ingress: web::Data<HeartbeatIngress>,
) -> Result<HttpResponse, HeartbeatError> {
    let result = accept(&req, payload, &ingress).await;
    if let Err(e) = &result {
        ingress.counters.rejected(e.reason());
    }
    result
}

async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    ingress: &HeartbeatIngress,
) -> Result<HttpResponse, HeartbeatError> {
    let log = &ingress.log;
    if ingress.stopping.load(Ordering::Acquire) {
        debug!(log, "heartbeat refused: shutting down");
        return Err(HeartbeatError::Stopped);
    }
    if ingress.store_backlog.as_ref().is_some_and(|c| c.backlog_full()) {
        debug!(
            log,
            "heartbeat refused: the disk fails and the backlog in memory is full"
        );
        return Err(HeartbeatError::BacklogFull);
    }
    let body = read_limited(req, payload, MAX_BODY_BYTES, ingress.request_timeout)
        .await
        .inspect_err(|e| ingress.warn_invalid(String::new, e))?;

    let now = Utc::now();
    // With auto_register, a well-formed unknown id passes here and is registered below.
    let may_report =
        |id: &str| ingress.registry.contains(id) || (ingress.auto_register.is_some() && is_valid_agent_id(id));
    let valid = heartbeat_request::parse(&body, may_report, now).map_err(|e| {
        ingress.warn_invalid(|| heartbeat_request::agent_id_hint(&body).unwrap_or_default(), &e);
        HeartbeatError::Invalid(e)
    })?;
    let heartbeat = valid.heartbeat;
    if let Some(manager) = ingress
        .auto_register
        .as_ref()
        .filter(|_| !ingress.registry.contains(&heartbeat.agent_id))
    {
        auto_register(ingress, manager, &heartbeat.agent_id).await?;
    }
    if let TimestampSource::Unparseable(text) | TimestampSource::OutOfRange(text) = &valid.timestamp_source {
        let gate = ingress.timestamp_warnings.lock().map(|mut g| g.check(Instant::now()));
        if let Ok(Some(suppressed)) = gate {
            let problem = match valid.timestamp_source {
                TimestampSource::OutOfRange(_) => {
                    "heartbeat timestamp is outside 1677-09-21 .. 2262-04-11 (an unset clock?); using the server's time"
                }
                _ => "heartbeat timestamp is not RFC 3339; using the server's time",
            };
            warn!(log, "{}", problem;
                "agent_id" => %clip(&heartbeat.agent_id), "timestamp" => %clip(text), "similar_warnings_not_logged" => suppressed,
                "what_to_do" => "make the agent send its current time, e.g. 2026-11-24T06:00:00Z (check its clock and NTP)");
        }
    }

    let Some(permit) = ingress.queue.try_acquire() else {
        // try_lock: under overload, rejections must not queue up behind each other here.
        if let Ok(Some(not_logged)) = ingress
            .queue_full_warnings
            .try_lock()
            .map(|mut g| g.check(Instant::now()))
        {
            warn!(log, "worker queue is full; answering 503 with Retry-After (logged at most once per 10 s)";
                "agent_id" => &heartbeat.agent_id, "capacity" => ingress.queue.capacity(),
                "rejections_not_logged" => not_logged,
                "what_to_do" => "raise workers or queue_capacity, or lower the agents' heartbeat rate");
        }
        return Err(HeartbeatError::QueueFull);
    };
    debug!(log, "heartbeat queued"; "agent_id" => &heartbeat.agent_id);
    handoff::hand_off(&ingress.workers, heartbeat, permit).map_err(|_| HeartbeatError::Stopped)?;
    ingress.counters.accepted(now);
    Ok(HttpResponse::Ok().json(ApiResponse::new(true, "heartbeat received")))
}

/// Registers an unknown agent on its first heartbeat (`auto_register = true`). Another
/// request may have registered it meanwhile; that is fine. Past `auto_register_limit` the
/// answer is 429, decided here without a message while the registry is visibly full.
async fn auto_register(ingress: &HeartbeatIngress, manager: &Addr<Manager>, id: &str) -> Result<(), HeartbeatError> {
    let limit = ingress.auto_register_limit;
    let result = if ingress.registry.len() >= limit {
        Err(RegistryError::Full(limit))
    } else {
        manager
            .send(AutoRegisterAgent(id.to_owned()))
            .await
            .map_err(|_| HeartbeatError::Stopped)?
    };
    match result {
        Ok(()) | Err(RegistryError::Duplicate(_)) => Ok(()),
        Err(RegistryError::Full(limit)) => {
            if !ingress.limit_warned.swap(true, Ordering::Relaxed) {
                warn!(ingress.log, "auto_register_limit reached: heartbeats of unknown agents get 429 (logged once)";
                    "auto_register_limit" => limit, "agent_id" => %clip(id),
                    "what_to_do" => "check for a flood of made-up agent ids; raise auto_register_limit or register agents through the admin API");
            }
            Err(HeartbeatError::RegistryFull(limit))
        }
        Err(e) => Err(HeartbeatError::Registration(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use actix_web::{test, App};
    use heartbeatd_actors::stats::GetStats;
    use heartbeatd_actors::store;
    use heartbeatd_actors::testkit::{self, TestActors};
    use serde_json::{json, Value};

    use super::*;

    struct Fixture {
        ingress: web::Data<HeartbeatIngress>,
        actors: TestActors,
    }

    /// The real actors with one worker and a queue of `capacity`.
    fn fixture(capacity: usize) -> Fixture {
        let actors = testkit::start(1, capacity);
        let ingress = web::Data::new(HeartbeatIngress::new(
            actors.queue.clone(),
            actors.pool.weak_addr(),
            actors.registry.clone(),
            actors.counters.clone(),
            Arc::new(AtomicBool::new(false)),
            None,
            actors.log.clone(),
        ));
        Fixture { ingress, actors }
    }

    async fn post(f: &Fixture) -> (StatusCode, Option<String>, Value) {
        let app = test::init_service(
            App::new()
                .app_data(f.ingress.clone())
                .route("/heartbeat", web::post().to(post_heartbeat)),
        )
        .await;
        let req = test::TestRequest::post()
            .uri("/heartbeat")
            .set_payload(json!({"agent_id": "a", "pid": 1, "cpu": 1.0, "memory": 1}).to_string())
            .to_request();
        let resp = test::call_service(&app, req).await;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = test::read_body_json(resp).await;
        (status, retry_after, body)
    }

    async fn wait_processed(f: &Fixture, n: u64) {
        for _ in 0..1000 {
            if f.actors.stats.send(GetStats).await.unwrap().total_processed >= n {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{n} heartbeats were not processed");
    }

    #[actix_rt::test]
    async fn a_full_queue_answers_503_with_retry_after_until_the_worker_is_free() {
        // Arrange: one heartbeat so the agent has a file, then block the store's only thread.
        let f = fixture(1);
        assert_eq!(post(&f).await.0, StatusCode::OK);
        wait_processed(&f, 1).await;
        let (release, blocked) = mpsc::channel::<()>();
        let blocker = f.actors.store.send(store::Update {
            id: "a".into(),
            change: Box::new(move |_| {
                let _ = blocked.recv();
            }),
        });

        // Act: the next heartbeat takes the only slot and its worker blocks on the store ...
        let (first, _, _) = post(&f).await;
        let (second, retry_after, body) = post(&f).await;

        // Assert
        assert_eq!(first, StatusCode::OK);
        assert_eq!(second, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["message"], "worker pool is full, please retry later");
        assert_eq!(body["success"], false);
        assert_eq!(f.ingress.queue.depth(), 1);

        // ... and once the worker is free again, the queue has room.
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        wait_processed(&f, 2).await;
        assert_eq!(post(&f).await.0, StatusCode::OK);
        wait_processed(&f, 3).await;
        let report = f.actors.stats.send(GetStats).await.unwrap();
        assert_eq!((report.total_received, report.total_rejected), (3, 1));
    }

    #[actix_rt::test]
    async fn once_stopping_heartbeats_get_503_stopped() {
        let f = fixture(10);
        f.ingress.stopping.store(true, Ordering::Release);
        let (status, retry_after, body) = post(&f).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after, None);
        assert_eq!(body["message"], "heartbeat receiver is stopped");
        assert_eq!(f.ingress.queue.depth(), 0, "nothing was queued");
    }
}
