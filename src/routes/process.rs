//! The supervised agents' endpoints: `POST /agents/{id}/start`, `/stop` and `/restart`
//! (admin token rules as for every change) and `GET /agents/{id}/log?tail=N` (their output).

use actix_web::{web, HttpRequest, HttpResponse};
use heartbeatd_actors::manager::{ControlAgent, GetAgentView};
use heartbeatd_actors::model::agent::is_valid_agent_id;
use heartbeatd_actors::supervision::output_log;
use heartbeatd_actors::supervision::process::Action;
use serde::Deserialize;
use slog::info;

use super::agents::{unavailable, AdminApi, AgentsError};

/// The most lines `GET /agents/{id}/log` returns.
pub const MAX_TAIL: usize = 10_000;
/// The most bytes read from the end of a log file for a tail (a line of output is cut at
/// 64 KiB, so 10 000 of them could be more; such a tail is shorter).
const TAIL_READ_BYTES: u64 = 8 << 20;

async fn control(
    req: HttpRequest,
    api: web::Data<AdminApi>,
    id: String,
    action: Action,
) -> Result<HttpResponse, AgentsError> {
    api.auth.check(&req)?;
    let view = api
        .manager
        .send(ControlAgent { id: id.clone(), action })
        .await
        .map_err(unavailable)??;
    info!(api.log, "agent process control through the API"; "agent_id" => id, "action" => format!("{action:?}").to_lowercase(),
        "state" => view.process.as_ref().map(|p| p.state.name()));
    Ok(HttpResponse::Ok().json(view))
}

/// `POST /agents/{id}/start`: starts it (if it is not running); answers once started.
pub async fn start(
    req: HttpRequest,
    api: web::Data<AdminApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, AgentsError> {
    control(req, api, id.into_inner(), Action::Start).await
}

/// `POST /agents/{id}/stop`: stops it; answers once its whole tree is gone.
pub async fn stop(
    req: HttpRequest,
    api: web::Data<AdminApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, AgentsError> {
    control(req, api, id.into_inner(), Action::Stop).await
}

/// `POST /agents/{id}/restart`: stops it (if running) and starts it again.
pub async fn restart(
    req: HttpRequest,
    api: web::Data<AdminApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, AgentsError> {
    control(req, api, id.into_inner(), Action::Restart).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    tail: Option<usize>,
}

/// `GET /agents/{id}/log?tail=N`: the last N lines (default 100, at most [`MAX_TAIL`]) of
/// the agent's output, as `{agent_id, lines: [...]}`.
/// An agent's output may hold what only operators should read, so this read follows the
/// token rules of a change.
pub async fn log(
    req: HttpRequest,
    api: web::Data<AdminApi>,
    id: web::Path<String>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, AgentsError> {
    api.auth.check(&req)?;
    let id = id.into_inner();
    let tail = query.tail.unwrap_or(100);
    if tail == 0 || tail > MAX_TAIL {
        return Err(AgentsError::BadRequest(format!(
            "tail: must be between 1 and {MAX_TAIL}, got {tail}"
        )));
    }
    if !is_valid_agent_id(&id) {
        return Err(AgentsError::NotFound(id));
    }
    let view = api
        .manager
        .send(GetAgentView(id.clone()))
        .await
        .map_err(unavailable)?
        .ok_or_else(|| AgentsError::NotFound(id.clone()))?;
    if view.command.is_none() {
        return Err(AgentsError::Control(
            heartbeatd_actors::manager::ControlError::NotSupervised(id),
        ));
    }
    let path = api.logs_dir.join(format!("{id}.log"));
    let lines = web::block(move || output_log::tail(&path, tail, TAIL_READ_BYTES))
        .await
        .map_err(|_| AgentsError::Unavailable("could not read the log".into()))?;
    let lines = match lines {
        Ok(lines) => lines,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(AgentsError::Unavailable(format!("could not read the agent's log: {e}"))),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({ "agent_id": id, "lines": lines })))
}
