//! `GET /`: the status page for the person on call. One self-contained HTML file (no external
//! assets, works offline, at most 100 KB) that reads only the JSON API from its own origin:
//! the fleet worst first (`GET /agents?sort=…`), and one agent's history chart, events,
//! process and output; see `status_page.html`.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::HttpResponse;

/// The page, compiled into the binary.
pub const PAGE: &str = include_str!("status_page.html");

/// The page's one script: what is between its `<script>` and `</script>`.
fn script(page: &str) -> &str {
    let start = page.find("<script>").map_or(0, |i| i + "<script>".len());
    let end = page.rfind("</script>").unwrap_or(start).max(start);
    &page[start..end]
}

/// Standard base64 with padding, as CSP hashes are written.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Everything the page needs is inline; nothing else may load, and no script may run but the
/// page's own (named by its hash): even markup that got into the page by mistake could not
/// run a script or an inline event handler.
fn policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        let hash = ring::digest::digest(&ring::digest::SHA256, script(PAGE).as_bytes());
        format!(
            "default-src 'none'; script-src 'sha256-{}'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            base64(hash.as_ref())
        )
    })
}

pub async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, policy()))
        .body(PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_small() {
        assert!(PAGE.len() <= 100 * 1024, "{} bytes", PAGE.len());
        assert_eq!(
            PAGE.matches("<script").count(),
            1,
            "one script, the one the policy names"
        );
        for external in ["http://", "https://", "src=\"//", "@import"] {
            let allowed = PAGE.matches("http://www.w3.org/2000/svg").count();
            let found = PAGE.matches(external).count();
            assert!(
                found == 0 || (external == "http://" && found == allowed),
                "{external} in the page"
            );
        }
        // No inline event handler in the markup (the policy would refuse it anyway): every
        // handler is set by the script.
        let markup = PAGE.replace(script(PAGE), "");
        let lower = markup.to_ascii_lowercase();
        let handler = lower.match_indices(" on").find(|(at, _)| {
            let rest = &lower[at + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            name_len > 0 && rest[name_len..].trim_start().starts_with('=')
        });
        assert_eq!(handler.map(|(at, _)| &markup[at..at + 30]), None, "an inline handler");
        // Agent data and the URL reach the page as text only: nothing in it parses HTML or
        // runs a string.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!PAGE.contains(sink), "{sink} in the page");
        }
    }

    #[test]
    fn the_policy_names_the_pages_script_by_its_hash() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // `printf 'x' | sha256sum | xxd -r -p | base64`
        let hash = ring::digest::digest(&ring::digest::SHA256, b"x");
        assert_eq!(base64(hash.as_ref()), "LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE=");
        assert!(script(PAGE).trim_start().starts_with("\"use strict\";"));
        assert!(script(PAGE).trim_end().ends_with("setInterval(showAge, 1000);"));
        assert!(policy().contains("script-src 'sha256-") && !policy().contains("script-src 'unsafe-inline'"));
    }
}
