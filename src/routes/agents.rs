//! The admin API: `/agents`, `/agents/{id}`, `/agents/{id}/history`.
//!
//! Reads are open. Mutations (`POST`, `PATCH`, `DELETE`) need `Authorization: Bearer <token>`
//! when `admin_token` is set (missing: 401, wrong: 403). Without a token they are allowed only
//! when heartbeatd listens on a loopback address; otherwise they are refused with 403, since
//! anyone who can reach the port could change the registry.

use actix::Addr;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use heartbeatd_actors::manager::{
    ControlError, DeleteAgent, GetAgentView, GetEvents, GetHistory, ListAgents, Manager, RegisterAgents,
    SetAgentPaused, UpdateAgent,
};
use heartbeatd_actors::model::agent::{AgentChange, AgentInfo};
use heartbeatd_actors::model::liveness::AgentStatus;
use heartbeatd_actors::registry::RegistryError;
use serde::{Deserialize, Serialize};
use slog::{info, Logger};

use super::body::{read_limited, BodyError};
use super::ApiResponse;

/// The largest admin request body: a bulk `POST /agents` of 10,000 agents is about 2 MB.
/// Bodies are read only after the token is checked.
pub const ADMIN_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// `GET /agents` returns at most this many agents per page.
pub const MAX_PAGE: usize = 10_000;
/// `GET /agents` without `limit`.
pub const DEFAULT_PAGE: usize = 1_000;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    #[error("{0}")]
    BadRequest(String),
    #[error("agent {0:?} is not registered")]
    NotFound(String),
    #[error("agent {0:?} is already registered")]
    Conflict(String),
    #[error("this call changes the registry and needs Authorization: Bearer <admin_token>")]
    MissingToken,
    #[error("the admin token is wrong")]
    WrongToken,
    #[error("changing the registry is refused: heartbeatd listens beyond loopback and no admin_token is set")]
    NoTokenConfigured,
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("setting command, working_dir or env over HTTP runs programs as heartbeatd's user, so it needs an admin_token to be set, even on loopback; set admin_token, or put the agent in the config file's [[agents]]")]
    CommandNeedsToken,
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl ResponseError for AgentsError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::MissingToken => StatusCode::UNAUTHORIZED,
            Self::WrongToken | Self::NoTokenConfigured | Self::CommandNeedsToken => StatusCode::FORBIDDEN,
            Self::Control(ControlError::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::Control(ControlError::NotSupervised(_)) => StatusCode::CONFLICT,
            Self::Control(ControlError::NotRunning) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Body(BodyError::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body(BodyError::TooSlow(_)) => StatusCode::REQUEST_TIMEOUT,
            Self::Body(BodyError::Read(_)) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = ApiResponse::error(self.status_code(), self.to_string());
        if matches!(self, Self::MissingToken) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<RegistryError> for AgentsError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Duplicate(id) => Self::Conflict(id),
            RegistryError::NotFound(id) => Self::NotFound(id),
            RegistryError::InvalidId(_) | RegistryError::InvalidEntry { .. } | RegistryError::Invalid(_) => {
                Self::BadRequest(e.to_string())
            }
            RegistryError::SaveFailed { .. }
            | RegistryError::ReadFailed { .. }
            | RegistryError::NotRunning
            | RegistryError::Full(_) => Self::Unavailable(e.to_string()),
            // Deleted between the change and the answer: as if it had never been there.
            RegistryError::Vanished(id) => Self::NotFound(id),
        }
    }
}

pub(crate) fn unavailable(_: actix::MailboxError) -> AgentsError {
    AgentsError::Unavailable("the manager is not running".into())
}

/// Who may change the registry.
#[derive(Clone)]
pub struct AdminAuth {
    /// Never logged or printed. Replaced by a SIGHUP reload; shared by the HTTP threads.
    token: std::sync::Arc<arc_swap::ArcSwapOption<String>>,
    /// Without a token, allow mutations only on a loopback listener.
    loopback_only: bool,
}

impl AdminAuth {
    pub fn new(token: Option<String>, listens_on_loopback: bool) -> Self {
        Self {
            token: std::sync::Arc::new(arc_swap::ArcSwapOption::from_pointee(token.filter(|t| !t.is_empty()))),
            loopback_only: listens_on_loopback,
        }
    }

    /// Replaces the token (SIGHUP); every HTTP thread sees the new one at its next request.
    pub fn set_token(&self, token: Option<String>) {
        self.token
            .store(token.filter(|t| !t.is_empty()).map(std::sync::Arc::new));
    }

    /// Whether an admin_token is set.
    fn has_token(&self) -> bool {
        self.token.load().is_some()
    }

    /// Refuses a change that would make heartbeatd run a program unless a token is set: on
    /// loopback without a token, any local user could otherwise run programs as heartbeatd.
    fn check_may_run_programs(&self, sets_program: bool) -> Result<(), AgentsError> {
        if sets_program && !self.has_token() {
            return Err(AgentsError::CommandNeedsToken);
        }
        Ok(())
    }

    pub(crate) fn check(&self, req: &HttpRequest) -> Result<(), AgentsError> {
        let current = self.token.load();
        let Some(expected) = current.as_deref() else {
            return if self.loopback_only {
                Ok(())
            } else {
                Err(AgentsError::NoTokenConfigured)
            };
        };
        let given = bearer_token(req).ok_or(AgentsError::MissingToken)?;
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(AgentsError::WrongToken)
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 7235), so `bearer` and `BEARER` work too.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Compares without stopping at the first difference, so the time taken does not tell an
/// attacker how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Everything the admin handlers need.
pub struct AdminApi {
    pub manager: Addr<Manager>,
    pub auth: AdminAuth,
    pub log: Logger,
    /// A whole request body must arrive within this long (`request_timeout_s`).
    pub request_timeout: std::time::Duration,
    /// `data_dir/logs`: supervised agents' output.
    pub logs_dir: std::path::PathBuf,
}

impl AdminApi {
    /// Checks the token, and only then reads the body (at most [`ADMIN_BODY_LIMIT`]): an
    /// unauthenticated client must not be able to make heartbeatd buffer anything.
    async fn authorized_body(&self, req: &HttpRequest, payload: web::Payload) -> Result<web::BytesMut, AgentsError> {
        self.auth.check(req)?;
        Ok(read_limited(req, payload, ADMIN_BODY_LIMIT, self.request_timeout).await?)
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    agent_type: Option<String>,
    status: Option<String>,
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /agents[?type=T][&status=S][&prefix=P][&limit=N][&after=ID]`
pub async fn list(api: web::Data<AdminApi>, query: web::Query<ListQuery>) -> Result<HttpResponse, AgentsError> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(AgentsError::BadRequest(format!(
            "limit: must be between 1 and {MAX_PAGE}, got {limit}"
        )));
    }
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(AgentStatus::parse(text).ok_or_else(|| {
            AgentsError::BadRequest(format!("status: {text:?} is not one of new, up, late, down, paused"))
        })?),
    };
    let page = api
        .manager
        .send(ListAgents {
            agent_type: query.agent_type,
            prefix: query.prefix.filter(|p| !p.is_empty()),
            status,
            after: query.after,
            limit,
        })
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /agents/{id}`
pub async fn get(api: web::Data<AdminApi>, id: web::Path<String>) -> Result<HttpResponse, AgentsError> {
    let id = id.into_inner();
    let view = api.manager.send(GetAgentView(id.clone())).await.map_err(unavailable)?;
    view.map(|v| HttpResponse::Ok().json(v))
        .ok_or(AgentsError::NotFound(id))
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

/// One history point as the API shows it.
#[derive(Serialize)]
struct HistoryPoint {
    time: chrono::DateTime<chrono::Utc>,
    cpu: f64,
    memory: u64,
}

/// `GET /agents/{id}/history[?limit=N]`: newest first, at most `history_len`.
pub async fn history(
    api: web::Data<AdminApi>,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AgentsError> {
    let id = id.into_inner();
    let limit = query.limit.unwrap_or(usize::MAX);
    if limit == 0 {
        return Err(AgentsError::BadRequest("limit: must be at least 1".into()));
    }
    let samples = api
        .manager
        .send(GetHistory { id: id.clone(), limit })
        .await
        .map_err(unavailable)?
        .map_err(|e| AgentsError::Unavailable(e.to_string()))?
        .ok_or(AgentsError::NotFound(id.clone()))?;
    let points: Vec<_> = samples
        .into_iter()
        .map(|s| HistoryPoint {
            time: s.time,
            cpu: s.cpu,
            memory: s.memory,
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "agent_id": id, "history": points })))
}

/// `GET /agents/{id}/events[?limit=N]`: its liveness transitions, newest first (default 100,
/// at most the 1000 kept).
pub async fn events(
    api: web::Data<AdminApi>,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AgentsError> {
    let id = id.into_inner();
    let limit = query.limit.unwrap_or(100);
    if limit == 0 {
        return Err(AgentsError::BadRequest("limit: must be at least 1".into()));
    }
    let events = api
        .manager
        .send(GetEvents { id: id.clone(), limit })
        .await
        .map_err(unavailable)?
        .map_err(|e| AgentsError::Unavailable(e.to_string()))?
        .ok_or(AgentsError::NotFound(id.clone()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "agent_id": id, "events": events })))
}

/// `POST /agents` with one agent (an object) or many (an array): all or none.
pub async fn register(
    req: HttpRequest,
    api: web::Data<AdminApi>,
    payload: web::Payload,
) -> Result<HttpResponse, AgentsError> {
    let body = api.authorized_body(&req, payload).await?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| AgentsError::BadRequest(format!("invalid JSON format: {e}")))?;
    let (entries, single) = match value {
        serde_json::Value::Array(items) => (items, false),
        object @ serde_json::Value::Object(_) => (vec![object], true),
        _ => {
            return Err(AgentsError::BadRequest(
                "expected an agent object or an array of them".into(),
            ))
        }
    };
    if entries.is_empty() {
        return Err(AgentsError::BadRequest("the array is empty".into()));
    }
    let mut batch = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let agent: AgentInfo = serde_path_to_error::deserialize(entry).map_err(|e| {
            let at = if single {
                String::new()
            } else {
                format!("entry {index}: ")
            };
            let path = e.path().to_string();
            let message = e.inner().to_string();
            if path == "." || message.starts_with("unknown field") {
                AgentsError::BadRequest(format!("{at}{message}"))
            } else {
                AgentsError::BadRequest(format!("{at}{path}: {message}"))
            }
        })?;
        batch.push(agent);
    }
    let sets_program = batch
        .iter()
        .any(|a| a.command.is_some() || a.working_dir.is_some() || a.env.is_some());
    api.auth.check_may_run_programs(sets_program)?;
    let count = batch.len();
    let views = api.manager.send(RegisterAgents(batch)).await.map_err(unavailable)??;
    info!(api.log, "agents registered through the API"; "count" => count);
    Ok(if single {
        HttpResponse::Created().json(&views[0])
    } else {
        HttpResponse::Created().json(serde_json::json!({ "registered": views }))
    })
}

/// `PATCH /agents/{id}`: a merge patch of the agent's record (name, type, timing, supervision).
pub async fn update(
    req: HttpRequest,
    api: web::Data<AdminApi>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AgentsError> {
    let body = api.authorized_body(&req, payload).await?;
    let change: AgentChange =
        serde_json::from_slice(&body).map_err(|e| AgentsError::BadRequest(format!("invalid JSON format: {e}")))?;
    api.auth
        .check_may_run_programs(change.touches(&["command", "working_dir", "env"]))?;
    let view = api
        .manager
        .send(UpdateAgent {
            id: id.into_inner(),
            change,
        })
        .await
        .map_err(unavailable)??;
    Ok(HttpResponse::Ok().json(view))
}

/// `DELETE /agents/{id}`: unregister and remove its files.
pub async fn delete(
    req: HttpRequest,
    api: web::Data<AdminApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, AgentsError> {
    api.auth.check(&req)?;
    let id = id.into_inner();
    api.manager.send(DeleteAgent(id.clone())).await.map_err(unavailable)??;
    info!(api.log, "agent unregistered through the API"; "agent_id" => id);
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /agents/{id}/pause`: no liveness transitions until resumed.
pub async fn pause(
    req: HttpRequest,
    api: web::Data<AdminApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, AgentsError> {
    set_paused(req, api, id.into_inner(), true).await
}

/// `POST /agents/{id}/resume`: `up` again, with a full interval + grace from now.
pub async fn resume(
    req: HttpRequest,
    api: web::Data<AdminApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, AgentsError> {
    set_paused(req, api, id.into_inner(), false).await
}

async fn set_paused(
    req: HttpRequest,
    api: web::Data<AdminApi>,
    id: String,
    paused: bool,
) -> Result<HttpResponse, AgentsError> {
    api.auth.check(&req)?;
    let view = api
        .manager
        .send(SetAgentPaused { id: id.clone(), paused })
        .await
        .map_err(unavailable)?
        .ok_or(AgentsError::NotFound(id.clone()))?;
    info!(api.log, "agent liveness {}", if paused { "paused" } else { "resumed" }; "agent_id" => id);
    Ok(HttpResponse::Ok().json(view))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn with_auth(value: Option<&str>) -> HttpRequest {
        let mut req = TestRequest::post();
        if let Some(v) = value {
            req = req.insert_header((header::AUTHORIZATION, v));
        }
        req.to_http_request()
    }

    #[test]
    fn the_auth_matrix() {
        let token = AdminAuth::new(Some("s3cret".into()), false);
        assert!(matches!(token.check(&with_auth(None)), Err(AgentsError::MissingToken)));
        assert!(matches!(
            token.check(&with_auth(Some("Bearer nope"))),
            Err(AgentsError::WrongToken)
        ));
        assert!(matches!(
            token.check(&with_auth(Some("Basic s3cret"))),
            Err(AgentsError::MissingToken)
        ));
        assert!(token.check(&with_auth(Some("Bearer s3cret"))).is_ok());

        let open_on_loopback = AdminAuth::new(None, true);
        assert!(open_on_loopback.check(&with_auth(None)).is_ok());
        let refused_elsewhere = AdminAuth::new(None, false);
        assert!(matches!(
            refused_elsewhere.check(&with_auth(None)),
            Err(AgentsError::NoTokenConfigured)
        ));
        assert!(matches!(
            AdminAuth::new(Some(String::new()), false).check(&with_auth(None)),
            Err(AgentsError::NoTokenConfigured)
        ));
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
