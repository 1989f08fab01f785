//! `heartbeatd ctl upgrade`: replaces the running heartbeatd with the binary now at its path,
//! without restarting an agent or refusing a connection (see [`crate::upgrade`]). Prints the
//! new process once it serves; exit 1 with the reason if the new binary could not take over
//! (the old one keeps serving).

use std::time::{Duration, Instant};

use super::transport::Target;
use super::CtlError;

/// How long the new process may take, after it said it is prepared, to serve: the old one's
/// drain (`shutdown_timeout_s`, 30 s by default) and the new one's load of the state.
const SERVING_WITHIN: Duration = Duration::from_secs(600);
/// How often `GET /upgrade` is asked meanwhile.
const POLL_EVERY: Duration = Duration::from_millis(50);

pub fn run(target: &Target) -> Result<(), CtlError> {
    let before = target.call_ok("GET", "/upgrade")?;
    let old_pid = before["pid"].as_u64().unwrap_or_default();
    let old_version = super::printable(before["version"].as_str().unwrap_or("?")).into_owned();
    let asked = Instant::now();
    eprintln!("upgrading heartbeatd (pid {old_pid}, version {old_version}) …");
    let answer = target.call_ok("POST", "/upgrade")?;
    let new_pid = answer["pid"].as_u64().unwrap_or_default();
    eprintln!("the new heartbeatd (pid {new_pid}) is prepared; the old one is draining …");
    let deadline = Instant::now() + SERVING_WITHIN;
    loop {
        // While neither process accepts, the request waits in the socket's queue; an error
        // here is the moment one closed and the other has not opened yet.
        if let Ok(now) = target.call_ok("GET", "/upgrade") {
            if now["pid"].as_u64() == Some(new_pid) {
                println!(
                    "upgraded: pid {old_pid} → {new_pid}, version {old_version} → {}, serving {} ms after the request",
                    super::printable(now["version"].as_str().unwrap_or("?")),
                    asked.elapsed().as_millis()
                );
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(CtlError::Refused(format!(
                "the new heartbeatd (pid {new_pid}) was not serving within {} s; see its log",
                SERVING_WITHIN.as_secs()
            )));
        }
        std::thread::sleep(POLL_EVERY);
    }
}
