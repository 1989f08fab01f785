//! `GET /healthz` (the process runs) and `GET /readyz` (it accepts heartbeats), for
//! orchestrators and load balancers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use heartbeatd_actors::counters::ManagerCounters;

use super::ApiResponse;

/// What readiness depends on.
pub struct Readiness {
    /// Set when shutdown begins.
    pub stopping: Arc<AtomicBool>,
    /// The Manager's: whether writes to `data_dir` fail.
    pub counters: Arc<ManagerCounters>,
}

/// 200 while the process runs.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(ApiResponse::new(true, "alive"))
}

/// 200 when heartbeats are accepted; 503 with the reason while draining or while the store
/// fails. (While starting, heartbeatd does not listen yet.)
pub async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    if readiness.stopping.load(Ordering::Acquire) {
        return ApiResponse::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: draining, heartbeatd is stopping",
        );
    }
    if readiness.counters.backlog_full() {
        return ApiResponse::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: writes to data_dir are failing and the heartbeats waiting in memory reached their bound: new heartbeats get 503 (see the log)",
        );
    }
    if readiness.counters.store_failing() {
        return ApiResponse::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: writes to data_dir are failing (heartbeats are kept in memory; see the log)",
        );
    }
    HttpResponse::Ok().json(ApiResponse::new(true, "ready"))
}
