//! The Alerter against stand-in Alertmanagers: batches for a fleet, a bounded backlog while
//! one blackholes its requests, and the newest state of every alert once it answers.

use super::*;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

#[test]
fn the_firing_file_round_trips_and_names_the_agents_that_were_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut firing = Firing::new();
    for (name, id) in [
        (AlertName::HeartbeatAgentDown, "a"),
        (AlertName::HeartbeatAgentFatal, "b"),
    ] {
        let labels = [("alertname", name.name()), ("agent_id", id)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        firing.insert(
            key(name, id),
            Alert {
                labels,
                annotations: BTreeMap::new(),
                starts_at: Utc::now(),
            },
        );
    }
    write_atomically(dir.path(), FIRING_FILE, &serde_json::to_vec(&firing).unwrap()).unwrap();
    let (loaded, damaged) = load_firing(dir.path());
    assert_eq!((&loaded, damaged), (&firing, None));
    assert_eq!(down_before(&loaded), ["a"]);
    // At start, a fatal alert ends (its program starts afresh), and so do those of agents no
    // longer registered.
    let mut ended = ended_while_away(&loaded, |id| id != "gone");
    ended.sort();
    let names: Vec<(AlertName, &str)> = ended.iter().map(|(n, id)| (*n, id.as_str())).collect();
    assert!(names.contains(&(AlertName::HeartbeatAgentFatal, "b")), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|(n, id)| *n == AlertName::HeartbeatAgentDown && *id == "a"),
        "{names:?}"
    );
    std::fs::write(dir.path().join(FIRING_FILE), b"{torn").unwrap();
    let (none, damaged) = load_firing(dir.path());
    assert!(none.is_empty(), "a damaged file counts as none");
    let aside = damaged.expect("the damage is reported");
    assert!(
        aside.display().to_string().contains("alerts.json.corrupt-"),
        "{}",
        aside.display()
    );
    assert_eq!(std::fs::read(&aside).unwrap(), b"{torn", "moved aside, not lost");
}

/// A stand-in Alertmanager: answers 200 to every request, counting the requests and the
/// alerts by `endsAt` (in the future: firing; else resolved). While `blackhole` is set it
/// accepts connections and never answers; a request sent meanwhile is lost (dropped unread
/// once the blackhole ends), as over a network that blackholes packets.
#[derive(Default)]
struct Received {
    requests: AtomicUsize,
    firing: Mutex<std::collections::HashSet<String>>,
    resolved: Mutex<std::collections::HashSet<String>>,
    /// The newest state received of each agent's alert: true while firing.
    newest: Mutex<std::collections::HashMap<String, bool>>,
    blackhole: std::sync::atomic::AtomicBool,
    /// Connections accepted into the blackhole.
    blackholed: AtomicUsize,
}

fn stand_in_alertmanager() -> (u16, Arc<Received>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Received::default());
    let shared = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let received = Arc::clone(&shared);
            std::thread::spawn(move || {
                if received.blackhole.load(Ordering::SeqCst) {
                    received.blackholed.fetch_add(1, Ordering::SeqCst);
                    while received.blackhole.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    return;
                }
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    received.requests.fetch_add(1, Ordering::SeqCst);
                    let alerts: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                    for alert in alerts {
                        let id = alert["labels"]["agent_id"].as_str().unwrap_or_default().to_owned();
                        let ends: DateTime<Utc> = alert["endsAt"].as_str().unwrap().parse().unwrap();
                        let firing = ends > Utc::now();
                        let set = if firing { &received.firing } else { &received.resolved };
                        set.lock().unwrap().insert(id.clone());
                        received.newest.lock().unwrap().insert(id, firing);
                    }
                    writer
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (port, received)
}

fn fire(id: &str) -> Fire {
    Fire {
        name: AlertName::HeartbeatAgentDown,
        agent_id: id.to_owned(),
        agent_type: String::new(),
        last_seen: None,
        reported_status: None,
        detail: None,
    }
}

/// A fleet going down at once: 3 000 fires reach Alertmanager in a few requests of up to
/// BATCH alerts, none dropped.
/// Fired and resolved within one send window: never sent.
#[actix_rt::test]
async fn a_fleet_going_down_at_once_is_sent_in_batches_and_nothing_is_dropped() {
    let (port, received) = stand_in_alertmanager();
    let dir = tempfile::tempdir().unwrap();
    let failures = Arc::new(AtomicU64::new(0));
    let policy = AlerterPolicy {
        urls: vec![format!("http://127.0.0.1:{port}")],
        resend: Duration::from_secs(3600),
        instance: "test".to_owned(),
        data_dir: dir.path().to_owned(),
    };
    let alerter = Alerter::new(
        policy,
        Firing::new(),
        Arc::clone(&failures),
        slog::Logger::root(slog::Discard, slog::o!()),
    )
    .start();

    for n in 0..3000 {
        alerter.send(fire(&format!("agent-{n:04}"))).await.unwrap();
    }
    alerter.send(fire("blip")).await.unwrap();
    alerter
        .send(Resolve {
            name: AlertName::HeartbeatAgentDown,
            agent_id: "blip".to_owned(),
        })
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    while received.firing.lock().unwrap().len() < 3000 && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received.firing.lock().unwrap().len(), 3000, "every alert arrived");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "none dropped or failed");
    let requests = received.requests.load(Ordering::SeqCst);
    assert!(requests <= 10, "{requests} requests for 3000 alerts");
    assert!(!received.firing.lock().unwrap().contains("blip"));
    assert!(
        received.resolved.lock().unwrap().is_empty(),
        "blip was never sent, so never resolved"
    );
}

fn resolve(id: &str) -> Resolve {
    Resolve {
        name: AlertName::HeartbeatAgentDown,
        agent_id: id.to_owned(),
    }
}

/// Two Alertmanagers blackhole every request while 3 000 agents go down, 1 000 of them
/// recover and 500 of those go down again, and the alerts are resent every 0.5 s: the
/// backlog stays one entry per alert, one request per URL of bounded bytes. Once they
/// answer, each gets every agent's newest state.
#[actix_rt::test]
async fn a_blackholed_alertmanager_costs_a_bounded_backlog_and_gets_the_newest_state_once_back() {
    let (ports, stand_ins): (Vec<u16>, Vec<Arc<Received>>) = (0..2).map(|_| stand_in_alertmanager()).unzip();
    for stand_in in &stand_ins {
        stand_in.blackhole.store(true, Ordering::SeqCst);
    }
    let dir = tempfile::tempdir().unwrap();
    let failures = Arc::new(AtomicU64::new(0));
    let policy = AlerterPolicy {
        urls: ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect(),
        resend: Duration::from_millis(500),
        instance: "test".to_owned(),
        data_dir: dir.path().to_owned(),
    };
    let alerter = Alerter::new(
        policy,
        Firing::new(),
        Arc::clone(&failures),
        slog::Logger::root(slog::Discard, slog::o!()),
    )
    .with_timeout(Duration::from_millis(100))
    .start();
    let id = |n: usize| format!("agent-{n:04}");

    // Act 1: the fleet's changes while both blackhole; many resends pass.
    for n in 0..3000 {
        alerter.send(fire(&id(n))).await.unwrap();
    }
    let mut most = BacklogFigures::default();
    let mut watch = |figures: BacklogFigures| {
        most.alerts_kept = most.alerts_kept.max(figures.alerts_kept);
        most.most_waiting = most.most_waiting.max(figures.most_waiting);
        most.bytes_in_flight = most.bytes_in_flight.max(figures.bytes_in_flight);
        most.requests_in_flight = most.requests_in_flight.max(figures.requests_in_flight);
    };
    // Every fire has gone out in a request (into the blackhole), so the resolves must be told.
    let deadline = Instant::now() + Duration::from_secs(30);
    while alerter.send(BacklogNow).await.unwrap().untold > 0 {
        assert!(Instant::now() < deadline, "fires never sent");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    for n in 0..1000 {
        alerter.send(resolve(&id(n))).await.unwrap();
    }
    for n in 500..1000 {
        alerter.send(fire(&id(n))).await.unwrap();
    }
    let failed_before = failures.load(Ordering::SeqCst);
    while failures.load(Ordering::SeqCst) < failed_before + 10 {
        watch(alerter.send(BacklogNow).await.unwrap());
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }

    // Assert 1: bounded by the alerts, not by the time away or the resends.
    assert_eq!(most.alerts_kept, 3000, "{most:?}");
    assert!(most.most_waiting <= 3000, "each alert waits once per URL: {most:?}");
    assert!(most.requests_in_flight <= 2, "one request per URL: {most:?}");
    assert!(most.bytes_in_flight <= REQUEST_BYTES, "{most:?}");
    assert!(stand_ins.iter().all(|s| s.requests.load(Ordering::SeqCst) == 0));

    // Act 2: the Alertmanagers answer again.
    for stand_in in &stand_ins {
        stand_in.blackhole.store(false, Ordering::SeqCst);
    }

    // Assert 2: each has every agent's newest state: 0..500 resolved, the others firing.
    let expected: std::collections::HashMap<String, bool> = (0..3000).map(|n| (id(n), n >= 500)).collect();
    let wrong = || -> Vec<usize> {
        stand_ins
            .iter()
            .map(|s| {
                let newest = s.newest.lock().unwrap();
                expected.iter().filter(|(k, v)| newest.get(*k) != Some(v)).count()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while wrong().iter().any(|n| *n > 0) {
        assert!(
            Instant::now() < deadline,
            "agents without their newest state, per URL: {:?}",
            wrong()
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let mut settled = alerter.send(BacklogNow).await.unwrap();
    while settled.alerts_kept != 2500 || settled.requests_in_flight > 0 {
        assert!(Instant::now() < deadline, "resolves never forgotten: {settled:?}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        settled = alerter.send(BacklogNow).await.unwrap();
    }
    assert_eq!(settled.firing, 2500, "the told resolves are forgotten: {settled:?}");
}
