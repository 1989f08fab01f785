//! `heartbeatd ctl`: a supervisorctl-style client of the admin API.
//!
//! ```text
//! heartbeatd [--config FILE] ctl [--url URL] [--token T] [--ca FILE] status [ID] | start ID | stop ID | restart ID | pause ID | resume ID | tail ID [-n N] [-f] | upgrade
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
//! | [`control`] | start, stop, restart (waiting as supervisorctl does), pause, resume |
//! | [`status`] | the list, and one agent in detail |
//! | [`tail`] | `tail -f` by byte offset |
//! | [`upgrade`] | the in-place upgrade, waited for until the new process serves |

pub mod control;
pub mod status;
pub mod tail;
pub mod tls;
pub mod transport;
pub mod upgrade;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::settings::Overrides;
use transport::{Target, Where};

/// Exit code: the daemon refused the call or found no such agent.
pub(crate) const EXIT_REFUSED: u8 = 1;
/// Exit code: a usage error.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: the daemon cannot be reached (or its certificate is not trusted).
pub(crate) const EXIT_UNREACHABLE: u8 = 3;

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
    #[arg(long, env = "HEARTBEATD_CA", value_hint = clap::ValueHint::FilePath)]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// One row per agent (id, process state, pid, uptime, liveness, last heartbeat, restarts,
    /// why it last ended); with an ID, that agent in detail, with its last output.
    Status {
        /// The agent to show in detail.
        id: Option<String>,
    },
    /// Start a supervised agent; waits until it is running, or says why it is not (exit 1).
    Start {
        /// The agent's id.
        id: String,
    },
    /// Stop a supervised agent (waits until its processes are gone).
    Stop {
        /// The agent's id.
        id: String,
    },
    /// Restart a supervised agent; waits until it is running again.
    Restart {
        /// The agent's id.
        id: String,
    },
    /// Pause an agent's liveness: no late, down or alert until resumed.
    Pause {
        /// The agent's id.
        id: String,
    },
    /// Resume an agent's liveness, with a full interval + grace from now.
    Resume {
        /// The agent's id.
        id: String,
    },
    /// Print the end of a supervised agent's output.
    Tail {
        /// The agent's id.
        id: String,
        /// Lines to print.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new output as it is written, until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Replace the running heartbeatd with the binary now at its path (after a package
    /// upgrade), restarting no agent and refusing no connection; waits until the new one
    /// serves. If the new binary cannot take over, the old one keeps serving (exit 1).
    Upgrade,
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
    let (whom, printable_message) = (printable(whom), |m: &str| printable(m).into_owned());
    match error {
        CtlError::Usage(message) => {
            eprintln!("heartbeatd ctl: {}", printable_message(&message));
            ExitCode::from(EXIT_USAGE)
        }
        CtlError::Unreachable(message) => {
            eprintln!("heartbeatd ctl: cannot reach {whom}: {}", printable_message(&message));
            ExitCode::from(EXIT_UNREACHABLE)
        }
        CtlError::Refused(message) => {
            eprintln!("heartbeatd ctl: {}", printable_message(&message));
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

/// `text` as ctl may print it to a terminal: every control character but newline and tab
/// shown as an escape (`\x1b`), so no answer (an agent's output, a name, a message) can move
/// the cursor, retitle the window or clear the screen.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let shown_as_is = |c: char| !c.is_control() || c == '\n' || c == '\t';
    if text.chars().all(shown_as_is) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if shown_as_is(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    std::borrow::Cow::Owned(out)
}

fn execute(args: &CtlArgs, target: &Target) -> Result<(), CtlError> {
    match &args.command {
        CtlCommand::Status { id: None } => status::list(target),
        CtlCommand::Status { id: Some(id) } => {
            check_id(id)?;
            status::detail(target, id)
        }
        CtlCommand::Start { id } => control::run(target, checked(id)?, control::Action::Start),
        CtlCommand::Stop { id } => control::run(target, checked(id)?, control::Action::Stop),
        CtlCommand::Restart { id } => control::run(target, checked(id)?, control::Action::Restart),
        CtlCommand::Pause { id } => control::run(target, checked(id)?, control::Action::Pause),
        CtlCommand::Resume { id } => control::run(target, checked(id)?, control::Action::Resume),
        CtlCommand::Upgrade => upgrade::run(target),
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

fn checked(id: &str) -> Result<&str, CtlError> {
    check_id(id).map(|()| id)
}
