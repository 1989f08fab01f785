//! Webhooks against a real local HTTP receiver: every transition once; failures counted.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{heartbeat, Daemon};

/// A minimal HTTP server that answers 200 to every request and keeps the JSON bodies.
pub(crate) struct Receiver {
    pub(crate) port: u16,
    pub(crate) bodies: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, stopping) = (Arc::clone(&bodies), Arc::clone(&stop));
        thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                // One request per connection (we answer Connection: close).
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let body = loop {
                    let Ok(n) = stream.read(&mut buf) else { break None };
                    if n == 0 {
                        break None;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    let Some(head_end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + length {
                        break Some(request[head_end + 4..head_end + 4 + length].to_vec());
                    }
                };
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                if let Some(body) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                    kept.lock().unwrap().push(body);
                }
            }
        });
        Self { port, bodies, stop }
    }

    pub(crate) fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const PULSE: &str = "heartbeat_interval_s = 3600\n[[agents]]\nid = \"pulse\"\nheartbeat_interval_s = 1\ngrace_s = 1\n";

fn wait_until(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn the_receiver_sees_each_transition_exactly_once() {
    // Arrange
    let receiver = Receiver::start();
    let daemon = Daemon::start(&format!(
        "webhook_url = \"http://127.0.0.1:{}/hook\"\n{PULSE}",
        receiver.port
    ));
    let status = || {
        daemon.request("GET", "/agents/pulse", None).body["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // Act: new -> up -> late -> down -> up.
    assert_eq!(daemon.post_heartbeat(&heartbeat("pulse", 1)).status, 200);
    wait_until("down", Duration::from_secs(6), || status() == "down");
    assert_eq!(daemon.post_heartbeat(&heartbeat("pulse", 2)).status, 200);
    wait_until("four deliveries", Duration::from_secs(10), || {
        receiver.bodies().len() >= 4
    });
    thread::sleep(Duration::from_millis(500)); // room for a duplicate to show up

    // Assert
    let mut bodies = receiver.bodies();
    bodies.sort_by(|a, b| a["at"].as_str().cmp(&b["at"].as_str()));
    let steps: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| (b["from"].as_str().unwrap(), b["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [("new", "up"), ("up", "late"), ("late", "down"), ("down", "up")],
        "{bodies:?}"
    );
    for body in &bodies {
        assert_eq!(body["agent_id"], "pulse");
        for key in ["at", "last_seen", "reported_status"] {
            assert!(body.get(key).is_some(), "{key} in {body}");
        }
    }
    assert_eq!(bodies[3]["reported_status"], "running");
    assert_eq!(daemon.stats()["webhook_failures"], 0);
}

#[test]
fn failed_deliveries_are_counted_and_logged() {
    // Arrange: nothing listens on the webhook port.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "webhook_url = \"http://127.0.0.1:{closed}/hook\"\nwebhook_retries = 1\nwebhook_timeout_ms = 200\n{PULSE}"
    );
    let daemon = Daemon::start(&config);

    // Act: one transition (new -> up).
    assert_eq!(daemon.post_heartbeat(&heartbeat("pulse", 1)).status, 200);

    // Assert: counted once (after its retry), logged, exposed; ingest unaffected.
    wait_until("a counted failure", Duration::from_secs(10), || {
        daemon.stats()["webhook_failures"] == 1
    });
    assert!(daemon.log().contains("webhook delivery failed"), "{}", daemon.log());
    let metrics = daemon.request("GET", "/metrics", None).body;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains("heartbeatd_webhook_failures_total 1"),
        "{metrics}"
    );
    assert_eq!(daemon.post_heartbeat(&heartbeat("pulse", 2)).status, 200);
}
