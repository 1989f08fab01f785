//! What heartbeatd and a keeper say to each other, and nothing else: both sides use these
//! words, so they cannot drift apart.
//!
//! - heartbeatd → keeper: the [`KeeperSpec`] (a few lines of text in [`SPEC_ENV`], read once
//!   at the start), then signals: [`STOP`] (stop the tree gracefully) and [`KILL_NOW`]
//!   (SIGKILL it now).
//! - keeper → heartbeatd: one [`KeeperLine`] per line on the keeper's stdout (a pipe):
//!
//! ```text
//! started <pid>                 the agent's command runs as <pid>
//! failed <reason>               it could not be started (then its exit line)
//! cpu <ticks>                   CPU used so far by the tree's processes the keeper reaped
//!                               (cumulative, clock ticks; at most about once a second)
//! over processes <n> <max>      the tree had <n> processes, more than max_processes: the
//!                               keeper is killing it (once per run)
//! exit code <n> | exit signal <n>   how the agent's own process ended; the tree is gone
//! ```
//!
//! The spec is a few lines of text, not JSON, so that the keeper needs no serde (see
//! [`spec_text`](crate::spec_text)).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The environment variable that carries the [`KeeperSpec`] to the keeper; removed before
/// the agent starts.
pub const SPEC_ENV: &str = "HEARTBEATD_KEEPER_SPEC";
/// The keeper's own program, installed next to heartbeatd's (`<dir of heartbeatd>/heartbeatd-keep`).
/// Also its argv[0] prefix (`heartbeatd-keep <id>`) and its `/proc/PID/comm` (15 bytes, the
/// most `comm` holds).
pub const KEEPER_BINARY: &str = "heartbeatd-keep";
/// The subcommand of heartbeatd's own binary that runs the keeper when [`KEEPER_BINARY`] is
/// missing (the fallback).
pub const SUBCOMMAND: &str = "keep";
/// Signal from heartbeatd: stop the tree gracefully.
pub const STOP: i32 = libc::SIGTERM;
/// Signal from heartbeatd: kill the tree now.
pub const KILL_NOW: i32 = libc::SIGUSR1;
/// A `failed` reason is cut to this many bytes: a line heartbeatd reads must stay short.
const MAX_REASON: usize = 4096;

/// What a keeper runs, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperSpec {
    pub agent_id: String,
    pub command: Vec<String>,
    pub working_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub stop_signal: i32,
    pub stop_timeout_ms: u64,
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    pub log_backups: u32,
    /// `max_processes`: more processes than this in the tree and the keeper kills it.
    pub max_processes: Option<u32>,
    /// heartbeatd's pid: if the keeper's parent is not this one, heartbeatd is gone.
    pub parent_pid: i32,
    /// How the tree outlives heartbeatd and waits to be adopted; `None`: it does not.
    pub adoption: Option<crate::rendezvous::AdoptionSpec>,
}

impl KeeperSpec {
    /// The spec heartbeatd put in [`SPEC_ENV`], which is then removed from the environment
    /// (the agent does not inherit it); `None` when there is none (started by hand) or it is
    /// not a valid spec.
    pub fn from_env() -> Option<Self> {
        let spec = Self::decode(std::env::var_os(SPEC_ENV)?.as_bytes());
        std::env::remove_var(SPEC_ENV);
        spec
    }

    /// The spec as [`SPEC_ENV`] carries it ([`spec_text`](crate::spec_text)).
    pub fn to_env(&self) -> OsString {
        self.encode()
    }
}

/// What a keeper reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeeperLine {
    Started(i64),
    Failed(String),
    /// CPU ticks used so far by every process of the tree the keeper reaped (with what they
    /// had reaped themselves): what `/proc` no longer shows.
    ReapedCpu(u64),
    /// The tree had `count` processes, more than `max`; the keeper is killing it.
    OverProcesses {
        count: u64,
        max: u32,
    },
    ExitCode(i32),
    ExitSignal(i32),
}

impl KeeperLine {
    /// Reads one line (its newline, if any, ignored); `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let (word, rest) = line.trim_end_matches(['\n', '\r']).split_once(' ')?;
        match word {
            "started" => rest.parse().ok().map(Self::Started),
            "failed" => Some(Self::Failed(clip(rest).to_owned())),
            "cpu" => rest.parse().ok().map(Self::ReapedCpu),
            "over" => {
                let numbers = rest.strip_prefix("processes ")?;
                let (count, max) = numbers.split_once(' ')?;
                Some(Self::OverProcesses {
                    count: count.parse().ok()?,
                    max: max.parse().ok()?,
                })
            }
            "exit" => match rest.split_once(' ')? {
                ("code", n) => n.parse().ok().map(Self::ExitCode),
                ("signal", n) => n.parse().ok().map(Self::ExitSignal),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The line as the keeper writes it (without its newline): one line, whatever a reason holds.
impl fmt::Display for KeeperLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Started(pid) => write!(f, "started {pid}"),
            Self::Failed(reason) => write!(f, "failed {}", clip(reason).replace(['\n', '\r'], " ")),
            Self::ReapedCpu(ticks) => write!(f, "cpu {ticks}"),
            Self::OverProcesses { count, max } => write!(f, "over processes {count} {max}"),
            Self::ExitCode(code) => write!(f, "exit code {code}"),
            Self::ExitSignal(signal) => write!(f, "exit signal {signal}"),
        }
    }
}

/// At most [`MAX_REASON`] bytes of `text`, cut on a character boundary.
fn clip(text: &str) -> &str {
    let mut end = text.len().min(MAX_REASON);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_lines_parse() {
        assert_eq!(KeeperLine::parse("started 42\n"), Some(KeeperLine::Started(42)));
        assert_eq!(KeeperLine::parse("exit code 3"), Some(KeeperLine::ExitCode(3)));
        assert_eq!(KeeperLine::parse("exit signal 9"), Some(KeeperLine::ExitSignal(9)));
        assert_eq!(
            KeeperLine::parse("failed cannot start \"x\": No such file"),
            Some(KeeperLine::Failed("cannot start \"x\": No such file".into()))
        );
        assert_eq!(KeeperLine::parse("cpu 1234"), Some(KeeperLine::ReapedCpu(1234)));
        assert_eq!(
            KeeperLine::parse("over processes 513 512"),
            Some(KeeperLine::OverProcesses { count: 513, max: 512 })
        );
        for bad in [
            "garbage",
            "cpu -1",
            "cpu 1 2",
            "over processes 5",
            "over threads 5 4",
            "over processes x 4",
            "exit code",
            "exit status 3",
        ] {
            assert_eq!(KeeperLine::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_line_reads_back_as_written_and_stays_one_line() {
        let lines = [
            KeeperLine::Started(7),
            KeeperLine::Failed("cannot start \"x\": gone".into()),
            KeeperLine::ReapedCpu(u64::MAX),
            KeeperLine::OverProcesses {
                count: 100_001,
                max: 100_000,
            },
            KeeperLine::ExitCode(-1),
            KeeperLine::ExitSignal(9),
        ];
        for line in lines {
            assert_eq!(KeeperLine::parse(&line.to_string()), Some(line));
        }
        // A reason with newlines (a working_dir may hold one) stays one line, and is bounded.
        let text = KeeperLine::Failed(format!("a\nb\r{}", "é".repeat(5000))).to_string();
        assert!(!text.contains('\n') && !text.contains('\r'));
        let Some(KeeperLine::Failed(reason)) = KeeperLine::parse(&text) else {
            panic!("{text}")
        };
        assert!(
            reason.starts_with("a b ") && reason.len() <= MAX_REASON,
            "{}",
            reason.len()
        );
    }
}
