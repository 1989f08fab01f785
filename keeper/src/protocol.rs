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
//! The spec is text, not JSON, so that the keeper needs no serde: one `<key> <value>` line
//! per field, the command one `arg` line per word, the environment one `env <name> <value>`
//! line per variable, every value escaped so it holds no space or newline (`\\`, `\s`,
//! `\n`). An unknown key or a missing one makes the whole spec invalid: the keeper and
//! heartbeatd are shipped together, and a keeper that half-understood its spec would run
//! the agent differently from what heartbeatd asked.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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
}

impl KeeperSpec {
    /// The spec heartbeatd put in [`SPEC_ENV`], which is then removed from the environment
    /// (the agent does not inherit it); `None` when there is none (started by hand) or it is
    /// not a valid spec.
    pub fn from_env() -> Option<Self> {
        let text = std::env::var_os(SPEC_ENV)?;
        std::env::remove_var(SPEC_ENV);
        Self::decode(text.as_bytes())
    }

    /// The spec as [`SPEC_ENV`] carries it.
    pub fn to_env(&self) -> OsString {
        let mut out = Vec::new();
        let mut line = |key: &str, fields: &[&[u8]]| {
            out.extend_from_slice(key.as_bytes());
            for field in fields {
                out.push(b' ');
                escape_into(field, &mut out);
            }
            out.push(b'\n');
        };
        line("agent_id", &[self.agent_id.as_bytes()]);
        for word in &self.command {
            line("arg", &[word.as_bytes()]);
        }
        if let Some(dir) = &self.working_dir {
            line("working_dir", &[dir.as_bytes()]);
        }
        for (name, value) in &self.env {
            line("env", &[name.as_bytes(), value.as_bytes()]);
        }
        line("stop_signal", &[self.stop_signal.to_string().as_bytes()]);
        line("stop_timeout_ms", &[self.stop_timeout_ms.to_string().as_bytes()]);
        line("log_path", &[self.log_path.as_os_str().as_bytes()]);
        line("log_max_bytes", &[self.log_max_bytes.to_string().as_bytes()]);
        line("log_backups", &[self.log_backups.to_string().as_bytes()]);
        if let Some(max) = self.max_processes {
            line("max_processes", &[max.to_string().as_bytes()]);
        }
        line("parent_pid", &[self.parent_pid.to_string().as_bytes()]);
        OsString::from_vec(out)
    }

    /// Reads a spec written by [`to_env`](Self::to_env); `None` for anything else (an unknown
    /// or repeated key, a missing one, a bad number or escape, no command).
    pub fn decode(text: &[u8]) -> Option<Self> {
        let mut agent_id = None;
        let mut command = Vec::new();
        let mut working_dir = None;
        let mut env = BTreeMap::new();
        let (mut stop_signal, mut stop_timeout_ms, mut log_path) = (None, None, None);
        let (mut log_max_bytes, mut log_backups, mut max_processes, mut parent_pid) = (None, None, None, None);
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let mut words = line.split(|b| *b == b' ');
            let key = words.next()?;
            let mut fields = Vec::new();
            for word in words {
                fields.push(unescape(word)?);
            }
            let one = || -> Option<String> {
                match fields.as_slice() {
                    [field] => String::from_utf8(field.clone()).ok(),
                    _ => None,
                }
            };
            match key {
                b"agent_id" => set(&mut agent_id, one()?)?,
                b"arg" => command.push(one()?),
                b"working_dir" => set(&mut working_dir, one()?)?,
                b"env" => {
                    let [name, value] = fields.as_slice() else { return None };
                    let name = String::from_utf8(name.clone()).ok()?;
                    if env.insert(name, String::from_utf8(value.clone()).ok()?).is_some() {
                        return None;
                    }
                }
                b"stop_signal" => set(&mut stop_signal, one()?.parse::<i32>().ok()?)?,
                b"stop_timeout_ms" => set(&mut stop_timeout_ms, one()?.parse::<u64>().ok()?)?,
                b"log_path" => match fields.as_slice() {
                    [path] => set(&mut log_path, PathBuf::from(OsString::from_vec(path.clone())))?,
                    _ => return None,
                },
                b"log_max_bytes" => set(&mut log_max_bytes, one()?.parse::<u64>().ok()?)?,
                b"log_backups" => set(&mut log_backups, one()?.parse::<u32>().ok()?)?,
                b"max_processes" => set(&mut max_processes, one()?.parse::<u32>().ok()?)?,
                b"parent_pid" => set(&mut parent_pid, one()?.parse::<i32>().ok()?)?,
                _ => return None,
            }
        }
        if command.is_empty() {
            return None;
        }
        Some(Self {
            agent_id: agent_id?,
            command,
            working_dir,
            env,
            stop_signal: stop_signal?,
            stop_timeout_ms: stop_timeout_ms?,
            log_path: log_path?,
            log_max_bytes: log_max_bytes?,
            log_backups: log_backups?,
            max_processes,
            parent_pid: parent_pid?,
        })
    }
}

/// Sets a field read once; `None` if it was already set (a repeated key).
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot.replace(value) {
        None => Some(()),
        Some(_) => None,
    }
}

/// `\` → `\\`, space → `\s`, newline → `\n`: the value holds no separator any more.
fn escape_into(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b' ' => out.extend_from_slice(b"\\s"),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

/// The value [`escape_into`] escaped; `None` for an escape it does not write.
fn unescape(word: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(word.len());
    let mut bytes = word.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next()? {
            b'\\' => b'\\',
            b's' => b' ',
            b'n' => b'\n',
            _ => return None,
        });
    }
    Some(out)
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

    fn spec() -> KeeperSpec {
        KeeperSpec {
            agent_id: "web-1".into(),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo a  b\\n\\s \nc\\".into(),
                String::new(),
            ],
            working_dir: Some("/srv/my app".into()),
            env: BTreeMap::from([
                ("A".into(), "x=y z".into()),
                ("EMPTY".into(), String::new()),
                ("MULTI".into(), "1\n2".into()),
            ]),
            stop_signal: 15,
            stop_timeout_ms: 10_000,
            log_path: PathBuf::from("/var/lib/heartbeatd/logs/web-1.log"),
            log_max_bytes: u64::MAX,
            log_backups: 3,
            max_processes: Some(512),
            parent_pid: 4242,
        }
    }

    #[test]
    fn a_spec_reads_back_as_written_whatever_its_words_hold() {
        let spec = spec();
        let text = spec.to_env();
        assert_eq!(KeeperSpec::decode(text.as_bytes()), Some(spec.clone()));
        let plain = KeeperSpec {
            working_dir: None,
            max_processes: None,
            env: BTreeMap::new(),
            ..spec
        };
        assert_eq!(KeeperSpec::decode(plain.to_env().as_bytes()), Some(plain));
    }

    #[test]
    fn a_spec_with_an_unknown_repeated_missing_or_bad_field_is_refused() {
        let good = spec().to_env().into_vec();
        let text = String::from_utf8(good.clone()).unwrap();
        let with = |extra: &str| format!("{text}{extra}\n");
        let without = |key: &str| {
            text.lines()
                .filter(|l| !l.starts_with(&format!("{key} ")))
                .collect::<Vec<_>>()
                .join("\n")
        };
        for bad in [
            with("colour red"),
            with("agent_id again"),
            with("parent_pid 1"),
            with("env A other"),
            with("env ONLY_A_NAME"),
            with("stop_signal x"),
            with("arg bad\\qescape"),
            with("arg trailing\\"),
            with("log_backups -1"),
            with("stop_timeout_ms 99999999999999999999999"),
            without("agent_id"),
            without("arg"),
            without("log_path"),
            without("parent_pid"),
            String::new(),
            "garbage".into(),
        ] {
            assert_eq!(KeeperSpec::decode(bad.as_bytes()), None, "{bad:?}");
        }
        assert!(KeeperSpec::decode(&good).is_some());
    }
}
