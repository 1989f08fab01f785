//! The supervised agents' endpoints: `POST /agents/{id}/start`, `/stop` and `/restart`, and
//! `GET /agents/{id}/log` (their output, by byte offset). All are admin calls (see
//! [`super::auth`]): an agent's output may hold what only operators should read.

use actix_web::{web, HttpResponse};
use heartbeatd_actors::manager::{ControlAgent, ControlError, GetAgentView};
use heartbeatd_actors::model::agent::is_valid_agent_id;
use heartbeatd_actors::model::process::MAX_LOG_BACKUPS;
use heartbeatd_actors::supervision::output_read::{self, FileId, Start};
use heartbeatd_actors::supervision::process::Action;
use serde::Deserialize;
use slog::info;

use super::agents::{encode_off_thread, unavailable, AdminApi, AgentsError};
use super::auth::Admin;

/// The most text one `GET /agents/{id}/log` answer carries, counted as JSON carries it.
pub const MAX_LOG_LENGTH: usize = 1 << 20;
/// Without `length`.
pub const DEFAULT_LOG_LENGTH: usize = 64 << 10;
/// The most lines `lines=N` asks for.
pub const MAX_LOG_LINES: usize = 10_000;
/// Without `offset` or `lines`: the last this many lines.
pub const DEFAULT_LOG_LINES: usize = 100;

async fn control(api: web::Data<AdminApi>, id: String, action: Action) -> Result<HttpResponse, AgentsError> {
    let view = api
        .manager
        .send(ControlAgent { id: id.clone(), action })
        .await
        .map_err(unavailable)??;
    info!(api.log, "agent process control through the API"; "agent_id" => id, "action" => format!("{action:?}").to_lowercase(),
        "state" => heartbeatd_actors::log_text::Present(view.process.as_ref().map(|p| p.state.name())));
    Ok(HttpResponse::Ok().json(view))
}

/// `POST /agents/{id}/start`: starts it (if it is not running); answers once started.
pub async fn start(_: Admin, api: web::Data<AdminApi>, id: web::Path<String>) -> Result<HttpResponse, AgentsError> {
    control(api, id.into_inner(), Action::Start).await
}

/// `POST /agents/{id}/stop`: stops it; answers once its whole tree is gone.
pub async fn stop(_: Admin, api: web::Data<AdminApi>, id: web::Path<String>) -> Result<HttpResponse, AgentsError> {
    control(api, id.into_inner(), Action::Stop).await
}

/// `POST /agents/{id}/restart`: stops it (if running) and starts it again.
pub async fn restart(_: Admin, api: web::Data<AdminApi>, id: web::Path<String>) -> Result<HttpResponse, AgentsError> {
    control(api, id.into_inner(), Action::Restart).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Read from this byte of `file` (default: the current file).
    offset: Option<u64>,
    /// The file an earlier answer named (`next_file`).
    file: Option<String>,
    /// The most text to return (escaped as JSON), 1 to [`MAX_LOG_LENGTH`].
    length: Option<usize>,
    /// The last N lines (of those within `length`); not with `offset`.
    lines: Option<usize>,
}

/// `GET /agents/{id}/log[?offset=N&file=F][&length=L][&lines=N]`: `{agent_id, file, offset,
/// data, next_file, next_offset, size[, skipped]}`. Without `offset`, the last `lines`
/// (default 100) lines. Pass `next_file` and `next_offset` back to follow the output: every
/// byte comes once, across rotations.
pub async fn log(
    _: Admin,
    api: web::Data<AdminApi>,
    id: web::Path<String>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, AgentsError> {
    let id = id.into_inner();
    let query = query.into_inner();
    let length = query.length.unwrap_or(DEFAULT_LOG_LENGTH);
    if length == 0 || length > MAX_LOG_LENGTH {
        return Err(AgentsError::BadRequest(format!(
            "length: must be between 1 and {MAX_LOG_LENGTH}, got {length}"
        )));
    }
    let start = match (query.offset, query.lines) {
        (Some(_), Some(_)) => {
            return Err(AgentsError::BadRequest(
                "offset and lines: give one (offset to follow, lines for the end)".into(),
            ))
        }
        (Some(offset), None) => {
            let file =
                match query.file.as_deref() {
                    None => None,
                    Some(text) => Some(FileId::parse(text).ok_or_else(|| {
                        AgentsError::BadRequest(format!("file: {text:?} is not a file an answer named"))
                    })?),
                };
            Start::At { file, offset }
        }
        (None, lines) => {
            let lines = lines.unwrap_or(DEFAULT_LOG_LINES);
            if lines == 0 || lines > MAX_LOG_LINES {
                return Err(AgentsError::BadRequest(format!(
                    "lines: must be between 1 and {MAX_LOG_LINES}, got {lines}"
                )));
            }
            Start::Tail { lines }
        }
    };
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
        return Err(AgentsError::Control(ControlError::NotSupervised(id)));
    }
    // The rotations are searched until the first missing one.
    let backups = MAX_LOG_BACKUPS;
    // What is held at once, at most: the raw bytes read and their text while reading (each at
    // most `length`: the text is bounded as escaped JSON), then the text and its encoding
    // (`length` and a frame well under a kilobyte).
    let reservation = api.costly.reserve(2 * length + 1024)?;
    let path = api.logs_dir.join(format!("{id}.log"));
    let chunk = web::block(move || output_read::read(&path, backups, start, length))
        .await
        .map_err(|_| AgentsError::Unavailable("could not read the log".into()))?
        .map_err(|e| AgentsError::Unavailable(format!("could not read the agent's log: {e}")))?;
    /// The answer, encoded straight from the chunk (no copy of its text).
    #[derive(serde::Serialize)]
    struct LogAnswer {
        agent_id: String,
        log: Option<output_read::Chunk>,
    }
    let json = encode_off_thread(LogAnswer {
        agent_id: id,
        log: chunk,
    })
    .await?;
    Ok(reservation.json_answer(json))
}
