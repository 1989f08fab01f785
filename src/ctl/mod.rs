//! `heartbeatd ctl`: a supervisorctl-style client of the admin API.
//!
//! ```text
//! heartbeatd [--config FILE] ctl [--url URL] [--token T] [--ca FILE] status | start ID | stop ID | restart ID | tail ID [-n N] [-f]
//! ```
//!
//! It finds the daemon as [`transport`] says: the control socket named by the daemon's own
//! configuration (no token needed), or its TCP address with its `admin_token`.
//!
//! Exit codes: 0 done; 1 refused or not found (the daemon's message is printed); 2 usage;
//! 3 the daemon cannot be reached (or its certificate is not trusted).
//!
//! | file | role |
//! |---|---|
//! | `mod.rs` | the commands and their exit codes |
//! | [`transport`] | finding the daemon; one HTTP exchange over the socket, TCP or TLS |
//! | [`tls`] | trusting `--ca` or the system's certificates |
//! | [`tail`] | `tail -f` by byte offset |

pub mod tail;
pub mod tls;
pub mod transport;

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::settings::Overrides;
use transport::{Target, Where};

const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// heartbeatd's address, e.g. http://127.0.0.1:8080 (default: found from the daemon's
    /// configuration, --config).
    #[arg(long, env = "HEARTBEATD_URL")]
    pub url: Option<String>,
    /// The admin token for TCP (default: $HEARTBEATD_ADMIN_TOKEN, then the configuration's
    /// admin_token; the control socket needs none).
    #[arg(long, env = "HEARTBEATD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificates to trust for an https:// URL, e.g. heartbeatd's own self-signed
    /// tls_cert (default: the configuration's tls_cert, else the system's).
    #[arg(long, env = "HEARTBEATD_CA")]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// One row per agent: id, process state, pid, uptime, liveness, last heartbeat, restarts.
    Status,
    /// Start a supervised agent.
    Start { id: String },
    /// Stop a supervised agent (waits until its processes are gone).
    Stop { id: String },
    /// Restart a supervised agent.
    Restart { id: String },
    /// Print the end of a supervised agent's output.
    Tail {
        id: String,
        /// Lines to print.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new output as it is written, until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
    },
}

/// Why a call failed.
#[derive(Debug)]
pub enum CtlError {
    Usage(String),
    Unreachable(String),
    Refused(String),
}

/// Runs the client with the daemon's configuration file and command-line overrides (to find
/// it); returns the exit code.
pub fn run(args: CtlArgs, config: Option<PathBuf>, overrides: Overrides) -> ExitCode {
    let at = Where {
        url: args.url.as_deref(),
        token: args.token.as_deref(),
        ca: args.ca.as_deref(),
        config: config.as_deref(),
        overrides: &overrides,
    };
    let target = match Target::resolve(&at) {
        Ok(target) => target,
        Err(e) => return exit(e, "heartbeatd"),
    };
    match execute(&args, &target) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit(e, &target.describe()),
    }
}

fn exit(error: CtlError, whom: &str) -> ExitCode {
    match error {
        CtlError::Usage(message) => {
            eprintln!("heartbeatd ctl: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        CtlError::Unreachable(message) => {
            eprintln!("heartbeatd ctl: cannot reach {whom}: {message}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
        CtlError::Refused(message) => {
            eprintln!("heartbeatd ctl: {message}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

fn execute(args: &CtlArgs, target: &Target) -> Result<(), CtlError> {
    match &args.command {
        CtlCommand::Status => status(target),
        CtlCommand::Start { id } => control(target, id, "start"),
        CtlCommand::Stop { id } => control(target, id, "stop"),
        CtlCommand::Restart { id } => control(target, id, "restart"),
        CtlCommand::Tail { id, lines, follow } => {
            check_id(id)?;
            tail::run(target, id, *lines, *follow)
        }
    }
}

fn check_id(id: &str) -> Result<(), CtlError> {
    if heartbeatd_actors::model::agent::is_valid_agent_id(id) {
        Ok(())
    } else {
        Err(CtlError::Usage(format!("{id:?} is not an agent id")))
    }
}

fn control(target: &Target, id: &str, action: &str) -> Result<(), CtlError> {
    check_id(id)?;
    let view = target.call_ok("POST", &format!("/agents/{id}/{action}"))?;
    let process = &view["process"];
    println!(
        "{id}: {} (pid {})",
        process["state"].as_str().unwrap_or("-"),
        process["pid"].as_i64().map_or("-".into(), |p| p.to_string())
    );
    Ok(())
}

fn status(target: &Target) -> Result<(), CtlError> {
    let mut agents = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(id) => format!("/agents?limit=10000&after={id}"),
            None => "/agents?limit=10000".to_owned(),
        };
        let page = target.call_ok("GET", &path)?;
        let items = page["agents"].as_array().cloned().unwrap_or_default();
        agents.extend(items);
        match page["next_after"].as_str() {
            Some(next) if !next.is_empty() => after = Some(next.to_owned()),
            _ => break,
        }
    }
    print!("{}", status_table(&agents, Utc::now()));
    Ok(())
}

/// The rows of `ctl status`, aligned.
pub fn status_table(agents: &[Value], now: DateTime<Utc>) -> String {
    let ago = |at: Option<&str>| -> String {
        at.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| human((now - t.with_timezone(&Utc)).num_seconds().max(0) as u64))
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = vec![[
        "ID".to_owned(),
        "PROCESS".into(),
        "PID".into(),
        "UPTIME".into(),
        "LIVENESS".into(),
        "LAST HEARTBEAT".into(),
        "RESTARTS".into(),
    ]];
    for agent in agents {
        let process = &agent["process"];
        let running = matches!(process["state"].as_str(), Some("running" | "starting"));
        rows.push([
            agent["id"].as_str().unwrap_or("?").to_owned(),
            process["state"].as_str().unwrap_or("-").to_owned(),
            process["pid"].as_i64().map_or("-".into(), |p| p.to_string()),
            if running {
                ago(process["started_at"].as_str())
            } else {
                "-".into()
            },
            agent["status"].as_str().unwrap_or("-").to_owned(),
            match agent["last_seen"].as_str() {
                Some(_) => format!("{} ago", ago(agent["last_seen"].as_str())),
                None => "never".into(),
            },
            process["restarts"].as_u64().map_or("-".into(), |r| r.to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `3d4h`, `2h5m`, `4m10s`, `12s`.
fn human(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rows_are_aligned_and_say_dash_for_what_is_not_there() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let agents = vec![
            serde_json::json!({"id": "web", "status": "up", "last_seen": "2026-01-01T00:09:58Z",
                "process": {"state": "running", "pid": 4242, "started_at": "2026-01-01T00:00:00Z", "restarts": 3}}),
            serde_json::json!({"id": "passive-agent-1", "status": "new", "last_seen": null}),
        ];
        let table = status_table(&agents, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("web              running  4242  10m0s   up"),
            "{table}"
        );
        assert!(lines[1].ends_with("2s ago          3"), "{table}");
        assert!(lines[2].contains("never"), "{table}");
        let column = lines[0].find("PROCESS").unwrap();
        assert_eq!(&lines[2][column..column + 1], "-");
    }
}
