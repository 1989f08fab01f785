//! `GET /heartbeat/stats`: the Stats actor's report as JSON.

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use heartbeatd_actors::stats::{GetStats, Stats};

use super::ApiResponse;

/// Why the stats could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("statistics are unavailable: the stats actor is not running")]
    Unavailable,
}

impl ResponseError for StatsError {
    fn status_code(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    fn error_response(&self) -> HttpResponse {
        ApiResponse::error(self.status_code(), self.to_string())
    }
}

pub async fn get_stats(stats: web::Data<Addr<Stats>>) -> Result<HttpResponse, StatsError> {
    let report = stats.send(GetStats).await.map_err(|_| StatsError::Unavailable)?;
    Ok(HttpResponse::Ok().json(report))
}
