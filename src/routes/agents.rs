//! The admin API: `/agents`, `/agents/{id}`, `/agents/{id}/history`, `/events`, `/pause`,
//! `/resume`.
//!
//! Who may call what is the gate's ([`super::auth`]), decided before any body is read; the
//! handlers that change something take its [`Admin`] proof. Reads whose answers grow with the
//! fleet (pages, histories, events) are costly reads ([`super::costly`]): bounded in bytes,
//! encoded off the HTTP threads, and limited together.

use std::sync::Arc;

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use heartbeatd_actors::manager::{
    AgentPage, ControlError, DeleteAgent, GetAgentView, GetEvents, GetHistory, ListAgents, Manager, RegisterAgents,
    SetAgentPaused, UpdateAgent,
};
use heartbeatd_actors::model::agent::{AgentChange, AgentInfo, AgentView, MIN_VIEW_JSON_BYTES};
use heartbeatd_actors::model::liveness::AgentStatus;
use heartbeatd_actors::registry::{CandidateFilter, RegistryError, RegistrySnapshot};
use serde::{Deserialize, Serialize};
use slog::{info, Logger};

use super::auth::{Admin, ProgramsNeedToken};
use super::body::{read_limited, BodyError};
use super::costly::{Busy, CostlyReads};
use super::sorted_list::{list_sorted, SortedQuery};
use super::ApiResponse;

/// The largest admin request body: a bulk `POST /agents` of [`MAX_BULK`] agents is about
/// 2 MB. Bodies are read only after the gate let the call through.
pub const ADMIN_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Agents one `POST /agents` may register.
pub const MAX_BULK: usize = 10_000;

/// `GET /agents` returns at most this many agents per page…
pub const MAX_PAGE: usize = 10_000;
/// …and at most this many bytes (a page ends early rather than pass it; one agent larger than
/// this still makes a page of its own).
pub const PAGE_BYTES: usize = 256 << 10;
/// The most agents a page can hold ([`PAGE_BYTES`] over the smallest view's JSON): no more
/// candidates than this are asked for.
const MAX_VIEWS: usize = PAGE_BYTES / MIN_VIEW_JSON_BYTES;
/// What a page reserves before anything is built: its encoding. The candidates and then the
/// views are charged as they are really built ([`Reservation::resize_to`]).
const PAGE_RESERVATION: usize = PAGE_BYTES + 1024;
/// A filtered listing (`type`, `status`) looks at most at this many ids per call; a page that
/// spent it ends early with `next_after` where it stopped. So a filter that matches nothing
/// costs a bounded walk per call, off the Manager's thread, however large the registry.
pub const LIST_SCAN_BUDGET: usize = 8192;
/// `GET /agents` without `limit`.
pub const DEFAULT_PAGE: usize = 1_000;
/// `GET /agents/{id}/history` returns at most this many points (about 300 KB).
pub const MAX_HISTORY_POINTS: usize = 5_000;
/// The most an events answer can be: 1000 events kept, each well under 512 bytes.
const EVENTS_BYTES: usize = 512 << 10;
/// The most a history point takes in JSON.
const HISTORY_POINT_BYTES: usize = 96;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    #[error("{0}")]
    BadRequest(String),
    #[error("agent {0:?} is not registered")]
    NotFound(String),
    #[error("agent {0:?} is already registered")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    CommandNeedsToken(#[from] ProgramsNeedToken),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Busy(#[from] Busy),
    /// `max_agents` is reached.
    #[error("{0}")]
    Full(String),
    /// The configuration file owns the agent.
    #[error("{0}")]
    ConfigOwned(String),
}

impl ResponseError for AgentsError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::CommandNeedsToken(_) => StatusCode::FORBIDDEN,
            Self::Busy(e) => e.status_code(),
            Self::Full(_) | Self::ConfigOwned(_) => StatusCode::CONFLICT,
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
        match self {
            Self::Busy(busy) => busy.error_response(),
            _ => ApiResponse::error(self.status_code(), self.to_string()),
        }
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
            RegistryError::Full(_) | RegistryError::AtCapacity { .. } => Self::Full(e.to_string()),
            RegistryError::ConfigOwned(_) => Self::ConfigOwned(e.to_string()),
            RegistryError::SaveFailed { .. } | RegistryError::ReadFailed { .. } | RegistryError::NotRunning => {
                Self::Unavailable(e.to_string())
            }
            // Deleted between the change and the answer: as if it had never been there.
            RegistryError::Vanished(id) => Self::NotFound(id),
        }
    }
}

pub(crate) fn unavailable(_: actix::MailboxError) -> AgentsError {
    AgentsError::Unavailable("the manager is not running".into())
}

/// Everything the admin handlers need.
pub struct AdminApi {
    pub manager: Addr<Manager>,
    pub log: Logger,
    /// The byte budget of costly reads.
    pub costly: Arc<CostlyReads>,
    /// A whole request body must arrive within this long (`request_timeout_s`).
    pub request_timeout: std::time::Duration,
    /// `data_dir/logs`: supervised agents' output.
    pub logs_dir: std::path::PathBuf,
    /// The registry as published: listings find their candidates here, off the Manager.
    pub registry: RegistrySnapshot,
}

impl AdminApi {
    /// Reads an admin call's body (at most [`ADMIN_BODY_LIMIT`]); the [`Admin`] proof says the
    /// gate let the call through, so no unauthenticated client can make heartbeatd buffer
    /// anything.
    async fn body(&self, _: &Admin, req: &HttpRequest, payload: web::Payload) -> Result<web::BytesMut, AgentsError> {
        Ok(read_limited(req, payload, ADMIN_BODY_LIMIT, self.request_timeout).await?)
    }
}

/// Encodes `value` on the blocking pool (a large answer must not hold up the HTTP thread and
/// the heartbeats behind it).
pub(crate) async fn encode_off_thread<T: Serialize + Send + 'static>(value: T) -> Result<Bytes, AgentsError> {
    web::block(move || serde_json::to_vec(&value).map(Bytes::from))
        .await
        .map_err(|_| AgentsError::Unavailable("could not encode the answer".into()))?
        .map_err(|e| AgentsError::Unavailable(format!("could not encode the answer: {e}")))
}

/// `{"agents": [...], "next_after": ...}`, ended early when the next agent would take the page
/// past `max_bytes` (then `next_after` is the last agent on it).
pub fn encode_page(page: AgentPage, max_bytes: usize) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(max_bytes.min(64 << 10));
    out.extend_from_slice(b"{\"agents\":[");
    let mut next_after = page.next_after;
    for (i, agent) in page.agents.iter().enumerate() {
        let json = serde_json::to_vec(agent)?;
        if i > 0 && out.len() + json.len() + 2 > max_bytes {
            next_after = Some(page.agents[i - 1].id.clone());
            break;
        }
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&json);
    }
    out.extend_from_slice(b"],\"next_after\":");
    serde_json::to_writer(&mut out, &next_after)?;
    out.push(b'}');
    Ok(out)
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    agent_type: Option<String>,
    status: Option<String>,
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
    /// The sorted listing's ([`super::sorted_list`]).
    sort: Option<String>,
    process: Option<String>,
    reported: Option<String>,
    offset: Option<usize>,
}

/// `GET /agents[?type=T][&status=S][&prefix=P][&limit=N][&after=ID]`, or the sorted listing
/// (`sort`, `process`, `reported`, `offset`, several `status` values).
///
/// The candidates are found in the registry's snapshot on the blocking pool (the prefix by
/// binary search, the type id by id within [`LIST_SCAN_BUDGET`]); the Manager only filters
/// them by status and builds the views that can fit. Each step is charged to the costly-read
/// budget as it is really built.
pub async fn list(api: web::Data<AdminApi>, query: web::Query<ListQuery>) -> Result<HttpResponse, AgentsError> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(AgentsError::BadRequest(format!(
            "limit: must be between 1 and {MAX_PAGE}, got {limit}"
        )));
    }
    let after = query.after;
    let sorted = SortedQuery {
        agent_type: query.agent_type,
        prefix: query.prefix,
        status: query.status,
        process: query.process,
        reported: query.reported,
        sort: query.sort,
        offset: query.offset,
        // The Manager builds no view that could not fit the page's bytes.
        limit: limit.min(MAX_VIEWS),
    };
    if sorted.wanted() {
        if after.is_some() {
            return Err(AgentsError::BadRequest(
                "after: pages the listing by id; a sorted or process-filtered listing pages with offset".into(),
            ));
        }
        return list_sorted(api, sorted).await;
    }
    let query = sorted;
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(AgentStatus::parse(text).ok_or_else(|| {
            AgentsError::BadRequest(format!(
                "status: {text:?} is not one of new, up, late, down, paused, stopped"
            ))
        })?),
    };
    let mut reservation = api.costly.reserve(PAGE_RESERVATION)?;
    // The Manager builds no view that could not fit the page's bytes.
    let limit = limit.min(MAX_VIEWS);
    // With a status filter every candidate within the budget is kept, since Liveness drops some.
    let want = if status.is_some() { LIST_SCAN_BUDGET } else { limit + 1 };
    let registered = api.registry.load();
    let candidates = web::block(move || {
        registered.candidates(
            &CandidateFilter {
                after: after.as_deref(),
                prefix: query.prefix.as_deref().unwrap_or(""),
                agent_type: query.agent_type.as_deref(),
            },
            want,
            LIST_SCAN_BUDGET,
        )
    })
    .await
    .map_err(|_| AgentsError::Unavailable("could not list the agents".into()))?;
    let ids_bytes: usize = candidates
        .ids
        .iter()
        .map(|id| id.capacity() + std::mem::size_of::<String>())
        .sum();
    reservation.resize_to(PAGE_RESERVATION + ids_bytes)?;
    let page = api
        .manager
        .send(ListAgents {
            candidates,
            status,
            limit,
            max_bytes: PAGE_BYTES,
        })
        .await
        .map_err(unavailable)?;
    // What is held now: the views, and the encoding to come (at most a page, or the one view
    // larger than a page, each byte escaped into at most 6).
    let views_bytes: usize = page.agents.iter().map(AgentView::memory_bytes).sum();
    let first_bytes = page.agents.first().map_or(0, AgentView::memory_bytes);
    reservation.resize_to(views_bytes + PAGE_RESERVATION.max(6 * first_bytes))?;
    let json = web::block(move || encode_page(page, PAGE_BYTES))
        .await
        .map_err(|_| AgentsError::Unavailable("could not encode the page".into()))?
        .map_err(|e| AgentsError::Unavailable(format!("could not encode the page: {e}")))?;
    Ok(reservation.json_answer(Bytes::from(json)))
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
    let limit = query.limit.unwrap_or(MAX_HISTORY_POINTS);
    if limit == 0 || limit > MAX_HISTORY_POINTS {
        return Err(AgentsError::BadRequest(format!(
            "limit: must be between 1 and {MAX_HISTORY_POINTS}, got {limit}"
        )));
    }
    let reservation = api.costly.reserve(limit * HISTORY_POINT_BYTES + 1024)?;
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
    let json = encode_off_thread(serde_json::json!({ "agent_id": id, "history": points })).await?;
    Ok(reservation.json_answer(json))
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
    let reservation = api.costly.reserve(EVENTS_BYTES)?;
    let events = api
        .manager
        .send(GetEvents { id: id.clone(), limit })
        .await
        .map_err(unavailable)?
        .map_err(|e| AgentsError::Unavailable(e.to_string()))?
        .ok_or(AgentsError::NotFound(id.clone()))?;
    let json = encode_off_thread(serde_json::json!({ "agent_id": id, "events": events })).await?;
    Ok(reservation.json_answer(json))
}

/// `POST /agents` with one agent (an object) or many (an array): all or none.
pub async fn register(
    admin: Admin,
    req: HttpRequest,
    api: web::Data<AdminApi>,
    payload: web::Payload,
) -> Result<HttpResponse, AgentsError> {
    let body = api.body(&admin, &req, payload).await?;
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
    if entries.len() > MAX_BULK {
        return Err(AgentsError::BadRequest(format!(
            "at most {MAX_BULK} agents per request, got {}; send them in several",
            entries.len()
        )));
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
    admin.check_may_run_programs(sets_program)?;
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
    admin: Admin,
    req: HttpRequest,
    api: web::Data<AdminApi>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AgentsError> {
    let body = api.body(&admin, &req, payload).await?;
    let change: AgentChange =
        serde_json::from_slice(&body).map_err(|e| AgentsError::BadRequest(format!("invalid JSON format: {e}")))?;
    admin.check_may_run_programs(change.touches(&["command", "working_dir", "env"]))?;
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
pub async fn delete(_: Admin, api: web::Data<AdminApi>, id: web::Path<String>) -> Result<HttpResponse, AgentsError> {
    let id = id.into_inner();
    api.manager.send(DeleteAgent(id.clone())).await.map_err(unavailable)??;
    info!(api.log, "agent unregistered through the API"; "agent_id" => id);
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /agents/{id}/pause`: no liveness transitions until resumed.
pub async fn pause(_: Admin, api: web::Data<AdminApi>, id: web::Path<String>) -> Result<HttpResponse, AgentsError> {
    set_paused(api, id.into_inner(), true).await
}

/// `POST /agents/{id}/resume`: `up` again, with a full interval + grace from now.
pub async fn resume(_: Admin, api: web::Data<AdminApi>, id: web::Path<String>) -> Result<HttpResponse, AgentsError> {
    set_paused(api, id.into_inner(), false).await
}

async fn set_paused(api: web::Data<AdminApi>, id: String, paused: bool) -> Result<HttpResponse, AgentsError> {
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

    fn view(id: &str, name_len: usize) -> AgentView {
        let info = AgentInfo {
            id: id.to_owned(),
            name: "n".repeat(name_len),
            ..Default::default()
        };
        AgentView::new(&info, None)
    }

    #[test]
    fn a_page_ends_before_it_passes_its_bytes_and_says_where_to_go_on() {
        let agents: Vec<AgentView> = (0..100).map(|i| view(&format!("a{i:03}"), 200)).collect();
        let page = AgentPage {
            agents,
            next_after: None,
        };
        let json: serde_json::Value = serde_json::from_slice(&encode_page(page, 4096).unwrap()).unwrap();
        let shown = json["agents"].as_array().unwrap();
        assert!(!shown.is_empty() && shown.len() < 100);
        assert!(serde_json::to_vec(&json).unwrap().len() <= 4096);
        assert_eq!(json["next_after"], shown.last().unwrap()["id"]);

        // One agent larger than the limit still makes a page.
        let big = AgentPage {
            agents: vec![view("big", 10_000), view("next", 1)],
            next_after: None,
        };
        let json: serde_json::Value = serde_json::from_slice(&encode_page(big, 4096).unwrap()).unwrap();
        assert_eq!(json["agents"].as_array().unwrap().len(), 1);
        assert_eq!(json["next_after"], "big");
    }
}
