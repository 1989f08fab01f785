//! `heartbeatd-load`: simulates a fleet of agents against a heartbeat receiver, like
//! redis-benchmark does for Redis, and reports throughput and latency.
//!
//! It must cost less per request than the server it measures, so each connection keeps one
//! keep-alive TCP stream, sends pre-serialised request bytes, and parses only the status line
//! and `Content-Length` of the answer.
//!
//! | module | role |
//! |---|---|
//! | [`args`] | command-line flags |
//! | [`client`] | one keep-alive HTTP/1.1 connection |
//! | [`pacing`] | the schedule for `--rate` (latency counted from the scheduled time) |
//! | [`histogram`] | HDR latency histogram and percentiles |
//! | [`report`] | status counts, the table and the JSON report |
//! | [`run`] | connections, warm-up, measurement |

pub mod args;
pub mod client;
pub mod histogram;
pub mod pacing;
pub mod report;
pub mod run;

/// The id of the `n`-th simulated agent (1-based): `load-000001`, …
pub fn agent_id(n: usize) -> String {
    format!("load-{n:06}")
}

/// The `[[agents]]` entries that register `count` simulated agents in a heartbeatd config.
pub fn agents_config(count: usize) -> String {
    let mut text = String::with_capacity(count * 40);
    for n in 1..=count {
        text.push_str("[[agents]]\nid = \"");
        text.push_str(&agent_id(n));
        text.push_str("\"\ntype = \"load\"\n\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_and_config_entries() {
        assert_eq!(agent_id(1), "load-000001");
        assert_eq!(agent_id(123_456), "load-123456");
        let config = agents_config(2);
        assert_eq!(config.matches("[[agents]]").count(), 2);
        assert!(config.contains("id = \"load-000002\""));
    }
}
