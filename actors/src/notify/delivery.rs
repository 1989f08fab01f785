//! One JSON POST with retries, shared by the Webhook and the Alerter: each try waits for a
//! 2xx; between tries the wait doubles from `first_backoff` up to `max_backoff`.

use std::time::Duration;

/// How to retry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retries {
    /// Tries in all (at least one is made).
    pub tries: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

/// POSTs `body` to `url` until it is answered 2xx or the tries run out; the last error.
pub(crate) async fn post_json(client: &awc::Client, url: &str, body: &[u8], retries: Retries) -> Result<(), String> {
    let mut last_error = String::new();
    let mut backoff = retries.first_backoff;
    for attempt in 0..retries.tries.max(1) {
        if attempt > 0 {
            actix::clock::sleep(backoff).await;
            backoff = (backoff * 2).min(retries.max_backoff);
        }
        match client
            .post(url)
            .insert_header(("Content-Type", "application/json"))
            .send_body(body.to_vec())
            .await
        {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => last_error = format!("answered {}", response.status()),
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(last_error)
}
