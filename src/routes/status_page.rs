//! `GET /`: the status page for the person on call. One self-contained HTML file (no external
//! assets, works offline, well under 100 KB) that reads only the JSON API; see
//! `status_page.html`.

use actix_web::http::header;
use actix_web::HttpResponse;

/// The page, compiled into the binary.
pub const PAGE: &str = include_str!("status_page.html");

pub async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Everything it needs is inline; nothing else may load or run.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ))
        .body(PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_small() {
        assert!(PAGE.len() <= 100 * 1024, "{} bytes", PAGE.len());
        for external in ["http://", "https://", "src=\"//", "@import"] {
            let allowed = PAGE.matches("http://www.w3.org/2000/svg").count();
            let found = PAGE.matches(external).count();
            assert!(
                found == 0 || (external == "http://" && found == allowed),
                "{external} in the page"
            );
        }
        assert!(!PAGE.contains(".innerHTML"), "agent data is set as text only");
    }
}
