//! `POST /upgrade` starts an in-place upgrade (see [`crate::upgrade`]) and answers once the
//! new process is prepared to take over (202, with its pid) or with why this one keeps
//! serving. `GET /upgrade` names the process serving now, so that `heartbeatd ctl upgrade`
//! can tell when the new one answers.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::auth::Admin;
use super::ApiResponse;
use crate::upgrade::{NotQueued, UpgradeRequests};

/// The longest `POST /upgrade` waits for its answer: the new process's preparation (60 s at
/// most, then it is killed) and a margin.
const ANSWER_WITHIN: Duration = Duration::from_secs(90);

/// What the endpoints need.
pub struct UpgradeApi {
    pub requests: UpgradeRequests,
    /// When this process started serving.
    pub started_at: DateTime<Utc>,
}

/// `GET /upgrade`: the process serving, and `POST /upgrade`'s success answer.
#[derive(Debug, Serialize)]
struct ProcessAnswer {
    success: bool,
    message: String,
    timestamp: String,
    /// The process serving now (`GET`), or the new one taking over (`POST`).
    pid: u32,
    /// The version of the binary serving now.
    version: &'static str,
    /// When the process serving now started (`GET` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
}

/// Why `POST /upgrade` started no new process.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeApiError {
    #[error("an upgrade starts heartbeatd's binary, so over TCP it needs the admin_token, even on loopback; use `heartbeatd ctl upgrade` (the control socket) or SIGUSR2")]
    NeedsToken,
    #[error("an upgrade is already being tried; wait for its answer")]
    Busy,
    #[error("heartbeatd is stopping or handing over")]
    Stopping,
    #[error("upgrade failed, the running heartbeatd keeps serving: {0}")]
    Failed(String),
    #[error("no answer from the upgrade within {} s; see heartbeatd's log", ANSWER_WITHIN.as_secs())]
    NoAnswer,
}

impl ResponseError for UpgradeApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NeedsToken => StatusCode::FORBIDDEN,
            Self::Busy => StatusCode::CONFLICT,
            Self::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            Self::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NoAnswer => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        ApiResponse::error(self.status_code(), self.to_string())
    }
}

/// `POST /upgrade` (admin, and allowed to run programs): 202 with the new process's pid once
/// it is prepared; this process then hands over and exits.
pub async fn start(admin: Admin, api: web::Data<UpgradeApi>) -> Result<HttpResponse, UpgradeApiError> {
    if !admin.0.may_run_programs {
        return Err(UpgradeApiError::NeedsToken);
    }
    let answer = api.requests.ask().map_err(|e| match e {
        NotQueued::Busy => UpgradeApiError::Busy,
        NotQueued::Stopping => UpgradeApiError::Stopping,
    })?;
    let pid = match actix_rt::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(Ok(pid))) => pid,
        Ok(Ok(Err(why))) => return Err(UpgradeApiError::Failed(why)),
        Ok(Err(_canceled)) => return Err(UpgradeApiError::Stopping),
        Err(_elapsed) => return Err(UpgradeApiError::NoAnswer),
    };
    Ok(HttpResponse::Accepted().json(ProcessAnswer {
        success: true,
        message: format!("the new heartbeatd (pid {pid}) is prepared; this one hands over and exits"),
        timestamp: now(),
        pid,
        version: env!("CARGO_PKG_VERSION"),
        started_at: None,
    }))
}

/// `GET /upgrade`: the process serving now.
pub async fn serving(api: web::Data<UpgradeApi>) -> HttpResponse {
    HttpResponse::Ok().json(ProcessAnswer {
        success: true,
        message: "serving".into(),
        timestamp: now(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION"),
        started_at: Some(api.started_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
    })
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}
