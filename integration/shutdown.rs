//! Graceful stop: every heartbeat answered 200 is processed and on disk before exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use crate::daemon::{heartbeat, history_on_disk, http, Daemon};

const AGENT_COUNT: usize = 10;

fn agents_config(queue_capacity: usize) -> String {
    let mut text = format!("workers = 4\nqueue_capacity = {queue_capacity}\n");
    for i in 0..AGENT_COUNT {
        text.push_str(&format!("[[agents]]\nid = \"burst-{i}\"\n"));
    }
    text
}

/// Sends heartbeats from 8 threads until `target` were answered 200; returns how many 503s
/// were seen on the way.
fn burst(port: u16, target: u64) -> u64 {
    let accepted = AtomicU64::new(0);
    let full = AtomicU64::new(0);
    thread::scope(|s| {
        for t in 0..8 {
            let (accepted, full) = (&accepted, &full);
            s.spawn(move || {
                let mut n = 0u64;
                while accepted.load(Ordering::SeqCst) < target {
                    let id = format!("burst-{}", (t + n as usize) % AGENT_COUNT);
                    // Reserve a slot first so that no more than `target` are sent.
                    if accepted.fetch_add(1, Ordering::SeqCst) >= target {
                        accepted.fetch_sub(1, Ordering::SeqCst);
                        break;
                    }
                    let reply = http(port, "POST", "/heartbeat", Some(&heartbeat(&id, n).to_string())).expect("answer");
                    match reply.status {
                        200 => {}
                        503 => {
                            assert_eq!(reply.header("retry-after"), Some("1"), "{reply:?}");
                            assert_eq!(reply.body["message"], "worker pool is full, please retry later");
                            full.fetch_add(1, Ordering::SeqCst);
                            accepted.fetch_sub(1, Ordering::SeqCst);
                        }
                        other => panic!("unexpected {other}: {reply:?}"),
                    }
                    n += 1;
                }
            });
        }
    });
    assert_eq!(accepted.load(Ordering::SeqCst), target);
    full.load(Ordering::SeqCst)
}

fn history_points_on_disk(daemon: &Daemon) -> u64 {
    (0..AGENT_COUNT)
        .map(|i| history_on_disk(&daemon.data_dir(), &format!("burst-{i}")).len() as u64)
        .sum()
}

fn stop_right_after_a_burst_loses_nothing(signal: &str, heartbeats: u64) {
    // Arrange
    let mut daemon = Daemon::start(&agents_config(2000));

    // Act: a burst of accepted heartbeats, then the signal at once.
    let rejected = burst(daemon.port, heartbeats);
    let status = daemon.stop_with(signal);

    // Assert
    let log = daemon.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(rejected, 0, "the queue was sized for the whole burst");
    assert_eq!(
        history_points_on_disk(&daemon),
        heartbeats,
        "every accepted heartbeat is on disk:\n{log}"
    );
    assert!(
        log.contains("every accepted heartbeat is processed and on disk"),
        "{log}"
    );
    let drained_line = log.lines().find(|l| l.contains("drained")).unwrap_or_default();
    println!("{signal}: {drained_line}");
}

#[test]
fn sigterm_right_after_1000_accepted_heartbeats_loses_none() {
    stop_right_after_a_burst_loses_nothing("TERM", 1000);
}

#[test]
fn sigint_is_graceful_too() {
    stop_right_after_a_burst_loses_nothing("INT", 300);
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_loses_nothing_accepted() {
    // Arrange: a queue of 2 in front of 1 worker that waits for the disk (write-through), so
    // slots stay taken long enough for concurrent requests to find the queue full.
    let mut daemon = Daemon::start(&format!(
        "workers = 1\nflush_interval_ms = 0\n{}",
        agents_config(2).split_once('\n').unwrap().1
    ));

    // Act: far more concurrent heartbeats than the queue holds.
    let rejected = burst(daemon.port, 300);

    // Assert
    assert!(rejected > 0, "some requests must have found the queue full");
    let stats = daemon.wait_processed(300);
    assert_eq!(stats["total_received"], 300);
    assert_eq!(stats["total_rejected"], rejected);
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
    assert_eq!(history_points_on_disk(&daemon), 300);
    let log = daemon.log();
    let warnings = log.matches("worker queue is full").count();
    assert!(
        warnings >= 1 && (warnings as u64) < rejected,
        "one warning per episode, not per request ({warnings} for {rejected}):\n{log}"
    );
}
