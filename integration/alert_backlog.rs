//! Alerts while Alertmanager refuses them: nothing is given up. A stand-in Alertmanager
//! answers 503 for a while and then 200; once it answers, it holds every agent's newest state.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{heartbeat, Daemon};

/// What the stand-in saw: each alert received (true: firing, by `endsAt` in the future), in
/// order, and whether it was refused.
#[derive(Default)]
pub(crate) struct Seen {
    /// (agent_id, firing, refused, alertname)
    alerts: Vec<(String, bool, bool, String)>,
}

impl Seen {
    fn refused(&self, agent: &str, firing: bool) -> usize {
        self.alerts
            .iter()
            .filter(|(a, f, refused, _)| a == agent && *f == firing && *refused)
            .count()
    }

    /// The newest state accepted of each agent's alert.
    fn newest(&self) -> HashMap<String, bool> {
        self.alerts
            .iter()
            .filter(|(_, _, refused, _)| !refused)
            .map(|(a, f, _, _)| (a.clone(), *f))
            .collect()
    }

    /// The newest state accepted of alert `name` of `agent`, if it was ever received.
    pub(crate) fn newest_of(&self, name: &str, agent: &str) -> Option<bool> {
        self.alerts
            .iter()
            .rev()
            .find(|(a, _, refused, n)| a == agent && n == name && !refused)
            .map(|(_, firing, _, _)| *firing)
    }
}

/// A stand-in Alertmanager: refuses (503) while `refusing`, else answers 200.
pub(crate) struct StandIn {
    pub(crate) port: u16,
    pub(crate) refusing: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl StandIn {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let refusing = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (Arc::clone(&refusing), Arc::clone(&seen), Arc::clone(&stop));
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let Some(body) = read_request(&mut stream) else {
                    continue;
                };
                let refused = r.load(Ordering::SeqCst);
                let alerts: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
                let mut seen = s.lock().unwrap();
                for alert in alerts {
                    let ends: chrono::DateTime<chrono::Utc> =
                        alert["endsAt"].as_str().unwrap_or("").parse().unwrap_or_default();
                    let agent = alert["labels"]["agent_id"].as_str().unwrap_or("").to_owned();
                    let name = alert["labels"]["alertname"].as_str().unwrap_or("").to_owned();
                    seen.alerts.push((agent, ends > chrono::Utc::now(), refused, name));
                }
                drop(seen);
                let status = if refused { "503 Service Unavailable" } else { "200 OK" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Self {
            port,
            refusing,
            seen,
            stop,
        }
    }

    /// A look at what it saw so far.
    pub(crate) fn seen<T>(&self, look: impl Fn(&Seen) -> T) -> T {
        look(&self.seen.lock().unwrap())
    }

    pub(crate) fn eventually(&self, what: &str, check: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check(&self.seen.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "never: {what}; seen {:?}",
                self.seen.lock().unwrap().alerts
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request's body (one request per connection: we answer Connection: close).
fn read_request(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut request = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
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
            return Some(request[head_end + 4..head_end + 4 + length].to_vec());
        }
    }
}

#[test]
fn a_resolve_refused_for_a_while_still_reaches_alertmanager_once_it_answers() {
    // Arrange: two agents go down while Alertmanager refuses every request.
    let am = StandIn::start();
    let mut daemon = Daemon::start(&format!(
        "alertmanager_url = \"http://127.0.0.1:{}\"\nalert_resend_s = 3600\n\
         [[agents]]\nid = \"stays-down\"\nheartbeat_interval_s = 1\ngrace_s = 1\n\
         [[agents]]\nid = \"recovers\"\nheartbeat_interval_s = 1\ngrace_s = 1\n",
        am.port
    ));
    for id in ["stays-down", "recovers"] {
        assert_eq!(daemon.post_heartbeat(&heartbeat(id, 1)).status, 200);
    }
    am.eventually("both fires refused", |s| {
        s.refused("stays-down", true) > 0 && s.refused("recovers", true) > 0
    });

    // Act: one recovers (a pause leaves `down` for good), and its resolve is refused 4 times
    // (all the tries heartbeatd once gave a request before dropping it).
    let paused = daemon.admin("POST", "/agents/recovers/pause", None);
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    am.eventually("the resolve refused 4 times", |s| s.refused("recovers", false) >= 4);
    am.refusing.store(false, Ordering::SeqCst);

    // Assert: Alertmanager gets each agent's newest state: firing, and resolved.
    am.eventually("the newest state of both", |s| {
        s.newest().get("recovers") == Some(&false) && s.newest().get("stays-down") == Some(&true)
    });
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    let log = daemon.log();
    assert!(log.contains("alert delivery to Alertmanager failed"), "{log}");
}
