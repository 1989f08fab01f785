//! The HTTP endpoints. Every answer, success or error, has the seed's body shape
//! `{success, message, timestamp}` ([`ApiResponse`]); each endpoint has its own error enum
//! that maps to a status code.
//!
//! | route | module |
//! |---|---|
//! | `POST /heartbeat` | [`heartbeat`] (request parsing in [`crate::heartbeat_request`]); accepted heartbeats go to the pool through `heartbeatd_actors::ingest` |
//! | `GET /heartbeat/stats` | [`stats`] |
//! | `/agents`, `/agents/{id}`, `/agents/{id}/history`, `/agents/{id}/pause`, `/resume` (admin API) | [`agents`] |
//! | `POST /agents/{id}/start`, `/stop`, `/restart`, `GET /agents/{id}/log` (supervised agents) | [`process`] |
//! | `GET`/`HEAD /` (the status page) | [`status_page`] |
//! | `GET`/`HEAD /healthz`, `/readyz` | [`health`] |
//! | `GET /metrics` (Prometheus; at most 10 answered per second, else 429) | [`metrics`] |
//! | anything else (404), wrong method (405) | [`fallback`] |
//! | a body over its limit (413) or too slow (408), for every endpoint | [`body`] |

pub mod agents;
pub mod body;
pub mod fallback;
pub mod health;
pub mod heartbeat;
pub mod metrics;
pub mod process;
pub mod stats;
pub mod status_page;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;

/// The body of every answer of `POST /heartbeat` and of every error.
#[derive(Debug, Serialize)]
pub struct ApiResponse {
    pub success: bool,
    pub message: String,
    /// Server time, RFC 3339.
    pub timestamp: String,
}

impl ApiResponse {
    pub fn new(success: bool, message: impl Into<String>) -> Self {
        Self {
            success,
            message: message.into(),
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    }

    /// An error answer with `status`.
    pub fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
        HttpResponse::build(status).json(Self::new(false, message))
    }
}
