//! Answers for requests no endpoint takes: unknown paths (404) and wrong methods (405, with an
//! `Allow` header), in the common JSON error shape.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};

use super::ApiResponse;

/// 404 for any path heartbeatd does not serve.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiResponse::error(
        StatusCode::NOT_FOUND,
        format!("not found: {} {}", req.method(), req.path()),
    )
}

/// 405 for `/heartbeat` with a method other than POST (the original's wording).
pub async fn expected_post() -> HttpResponse {
    method_not_allowed("POST")
}

/// 405 for `/heartbeat/stats` and `/agents/{id}/history` with a method other than GET (the
/// original's wording).
pub async fn expected_get() -> HttpResponse {
    method_not_allowed("GET")
}

/// 405 for `/agents`.
pub async fn expected_get_or_post() -> HttpResponse {
    method_not_allowed("GET, POST")
}

/// 405 for `/agents/{id}`.
pub async fn expected_get_patch_or_delete() -> HttpResponse {
    method_not_allowed("GET, PATCH, DELETE")
}

/// 405 with `Allow: <allowed>` and the message `method not allowed, expected <allowed>`.
fn method_not_allowed(allowed: &'static str) -> HttpResponse {
    let mut response = ApiResponse::error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed, expected {allowed}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
    response
}
