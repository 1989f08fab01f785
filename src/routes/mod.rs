//! The HTTP endpoints. Every answer, success or error, has the seed's body shape
//! `{success, message, timestamp}` ([`ApiResponse`]); each endpoint has its own error enum
//! that maps to a status code.
//!
//! | route | module |
//! |---|---|
//! | `POST /heartbeat` | [`heartbeat`] (request parsing in [`crate::heartbeat_request`]); accepted heartbeats go to the pool through `heartbeatd_actors::ingest` |
//! | `GET /heartbeat/stats` | [`stats`] |
//! | `GET /agents?sort=…` (worst first, by a column; process and reported-status filters) | [`sorted_list`] |
//! | `/agents`, `/agents/{id}`, `/agents/{id}/history`, `/agents/{id}/pause`, `/resume` (admin API) | [`agents`] |
//! | `POST /agents/{id}/start`, `/stop`, `/restart`, `GET /agents/{id}/log` (supervised agents) | [`process`] |
//! | `GET`/`HEAD /` (the status page) | [`status_page`] |
//! | `GET`/`HEAD /healthz`, `/readyz` | [`health`] |
//! | `POST /upgrade` (in-place upgrade), `GET /upgrade` (the process serving) | [`upgrade`] |
//! | `GET /metrics` (Prometheus; at most 10 answered per second, else 429) | [`metrics`] |
//! | anything else (404), wrong method (405) | [`fallback`] |
//! | a body over its limit (413) or too slow (408), for every endpoint | [`body`] |
//! | who may call what: Host, cross-site, content type, tokens (before any handler) | [`auth`] |
//! | answers that grow with the fleet: bounded, built off the HTTP threads, limited together (429) | [`costly`] |
//!
//! [`app`] puts them together: the same application serves every listener.

pub mod agents;
pub mod auth;
pub mod body;
pub mod costly;
pub mod fallback;
pub mod health;
pub mod heartbeat;
pub mod metrics;
pub mod process;
pub mod sorted_list;
pub mod stats;
pub mod status_page;
pub mod upgrade;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Addr;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::{header, ConnectionType};
use actix_web::{web, App, HttpResponse};
use chrono::{SecondsFormat, Utc};
use futures::future::{ready, Either};
use heartbeatd_actors::stats::Stats;
use serde::Serialize;

use auth::{Gate, Transport};

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

/// What the endpoints share: one per daemon, cloned into every HTTP thread's application.
#[derive(Clone)]
pub struct AppState {
    pub gate: Gate,
    pub ingress: web::Data<heartbeat::HeartbeatIngress>,
    pub stats: web::Data<Addr<Stats>>,
    pub admin: web::Data<agents::AdminApi>,
    pub readiness: web::Data<health::Readiness>,
    pub metrics: web::Data<metrics::MetricsEndpoint>,
    /// Set during an upgrade's hand-over: every answer carries `Connection: close` (see
    /// [`crate::server::hand_over`]).
    pub closing: Arc<AtomicBool>,
    pub upgrade: web::Data<upgrade::UpgradeApi>,
}

/// The application behind a listener: every route, behind the gate.
pub fn app(
    state: &AppState,
    transport: Transport,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let gate = state.gate.clone();
    let closing = Arc::clone(&state.closing);
    App::new()
        .app_data(state.ingress.clone())
        .app_data(state.stats.clone())
        .app_data(state.admin.clone())
        .app_data(state.readiness.clone())
        .app_data(state.metrics.clone())
        .app_data(state.upgrade.clone())
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| agents::AgentsError::BadRequest(format!("invalid query: {e}")).into()),
        )
        .app_data(web::PayloadConfig::new(agents::ADMIN_BODY_LIMIT))
        // Every request passes the gate before its handler runs and before its body is read.
        .wrap_fn(move |req, service| match gate.admit(&req, transport) {
            Ok(()) => Either::Left(service.call(req)),
            Err(refused) => Either::Right(ready(Err(refused.into()))),
        })
        .wrap_fn(move |req, service| {
            let (answer, closing) = (service.call(req), Arc::clone(&closing));
            async move {
                let mut answer = answer.await?;
                // No answer may be shown inside another site's frame (clickjacking, or a page
                // framing `/metrics` to make heartbeatd build it again and again).
                let headers = answer.response_mut().headers_mut();
                headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
                if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
                    headers.insert(
                        header::CONTENT_SECURITY_POLICY,
                        header::HeaderValue::from_static("frame-ancestors 'none'"),
                    );
                }
                if closing.load(Ordering::Acquire) {
                    answer
                        .response_mut()
                        .head_mut()
                        .set_connection_type(ConnectionType::Close);
                }
                Ok(answer)
            }
        })
        .service(
            // HEAD too: load balancers and uptime checkers use it.
            web::resource("/")
                .route(web::get().to(status_page::status_page))
                .route(web::head().to(status_page::status_page))
                .default_service(web::to(fallback::expected_get)),
        )
        .route("/metrics", web::get().to(metrics::metrics))
        .service(
            web::resource("/upgrade")
                .route(web::post().to(upgrade::start))
                .route(web::get().to(upgrade::serving))
                .default_service(web::to(fallback::expected_get_or_post)),
        )
        .service(
            web::resource("/healthz")
                .route(web::get().to(health::healthz))
                .route(web::head().to(health::healthz)),
        )
        .service(
            web::resource("/readyz")
                .route(web::get().to(health::readyz))
                .route(web::head().to(health::readyz)),
        )
        .service(
            web::resource("/heartbeat")
                .route(web::post().to(heartbeat::post_heartbeat))
                .default_service(web::to(fallback::expected_post)),
        )
        .service(
            web::resource("/heartbeat/stats")
                .route(web::get().to(stats::get_stats))
                .default_service(web::to(fallback::expected_get)),
        )
        .service(
            web::resource("/agents")
                .route(web::get().to(agents::list))
                .route(web::post().to(agents::register))
                .default_service(web::to(fallback::expected_get_or_post)),
        )
        .service(
            web::resource("/agents/{id}")
                .route(web::get().to(agents::get))
                .route(web::patch().to(agents::update))
                .route(web::delete().to(agents::delete))
                .default_service(web::to(fallback::expected_get_patch_or_delete)),
        )
        .service(
            web::resource("/agents/{id}/pause")
                .route(web::post().to(agents::pause))
                .default_service(web::to(fallback::expected_post)),
        )
        .service(
            web::resource("/agents/{id}/resume")
                .route(web::post().to(agents::resume))
                .default_service(web::to(fallback::expected_post)),
        )
        .service(
            web::resource("/agents/{id}/events")
                .route(web::get().to(agents::events))
                .default_service(web::to(fallback::expected_get)),
        )
        .service(
            web::resource("/agents/{id}/start")
                .route(web::post().to(process::start))
                .default_service(web::to(fallback::expected_post)),
        )
        .service(
            web::resource("/agents/{id}/stop")
                .route(web::post().to(process::stop))
                .default_service(web::to(fallback::expected_post)),
        )
        .service(
            web::resource("/agents/{id}/restart")
                .route(web::post().to(process::restart))
                .default_service(web::to(fallback::expected_post)),
        )
        .service(
            web::resource("/agents/{id}/log")
                .route(web::get().to(process::log))
                .default_service(web::to(fallback::expected_get)),
        )
        .service(
            web::resource("/agents/{id}/history")
                .route(web::get().to(agents::history))
                .default_service(web::to(fallback::expected_get)),
        )
        .default_service(web::to(fallback::not_found))
}
