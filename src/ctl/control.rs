//! `heartbeatd ctl start|stop|restart|pause|resume ID`. A start answers once the program is
//! running (its first heartbeat, or `start_wait_s`), or says why it is not, as supervisorctl
//! does (`ERROR (spawn error)`), with exit code 1. A stop that takes a while says that it is
//! waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::transport::Target;
use super::CtlError;

/// After this long without an answer, a stop says it is waiting.
const SAY_WAITING_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Pause,
    Resume,
}

impl Action {
    fn path(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }
}

pub fn run(target: &Target, id: &str, action: Action) -> Result<(), CtlError> {
    let answered = Arc::new(AtomicBool::new(false));
    if action == Action::Stop {
        let (answered, id) = (Arc::clone(&answered), id.to_owned());
        std::thread::spawn(move || {
            std::thread::sleep(SAY_WAITING_AFTER);
            if !answered.load(Ordering::Acquire) {
                eprintln!("{id}: stopping, waiting for its processes to end (SIGKILL after its stop_timeout_s) …");
            }
        });
    }
    let result = target.call_ok("POST", &format!("/agents/{id}/{}", action.path()));
    answered.store(true, Ordering::Release);
    let view = result?;
    let (line, ok) = outcome(id, action, &view);
    if ok {
        println!("{}", super::printable(&line));
        Ok(())
    } else {
        Err(CtlError::Refused(line))
    }
}

/// The line to print, and whether the action did what was asked.
pub fn outcome(id: &str, action: Action, view: &Value) -> (String, bool) {
    if matches!(action, Action::Pause | Action::Resume) {
        return (
            format!("{id}: liveness {}", view["status"].as_str().unwrap_or("-")),
            true,
        );
    }
    let process = &view["process"];
    let state = process["state"].as_str().unwrap_or("-");
    let pid = process["pid"]
        .as_i64()
        .map_or_else(String::new, |p| format!(" (pid {p})"));
    let starts = matches!(action, Action::Start | Action::Restart);
    match state {
        "running" => (format!("{id}: running{pid}"), true),
        "starting" if starts => (
            format!("{id}: starting{pid}, not yet running (no heartbeat yet, start_wait_s not over)"),
            true,
        ),
        "backoff" | "fatal" | "exited" | "stopped" if starts => {
            let exit = &process["last_exit"];
            let how = match (exit["code"].as_i64(), exit["signal"].as_str()) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(signal)) => format!("ended by {signal}"),
                _ => "ended".to_owned(),
            };
            let reason = exit["reason"].as_str().unwrap_or("-");
            (
                format!(
                    "{id}: ERROR (spawn error): {how} before it was running (reason {reason}); now {state}. See heartbeatd ctl tail {id}"
                ),
                false,
            )
        }
        _ => (format!("{id}: {state}{pid}"), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_that_failed_is_an_error_and_a_running_one_is_not() {
        let failed = serde_json::json!({"process": {"state": "backoff", "pid": null,
            "last_exit": {"code": 3, "reason": "exited"}}});
        let (line, ok) = outcome("web", Action::Start, &failed);
        assert!(!ok);
        assert!(line.contains("ERROR (spawn error): exited with code 3"), "{line}");
        let running = serde_json::json!({"process": {"state": "running", "pid": 42}});
        assert_eq!(
            outcome("web", Action::Restart, &running),
            ("web: running (pid 42)".into(), true)
        );
        let stopped = serde_json::json!({"process": {"state": "stopped", "pid": null}});
        assert_eq!(outcome("web", Action::Stop, &stopped), ("web: stopped".into(), true));
        let paused = serde_json::json!({"status": "paused"});
        assert_eq!(
            outcome("web", Action::Pause, &paused),
            ("web: liveness paused".into(), true)
        );
    }
}
