//! What a keeper and a new heartbeatd say to each other at adoption, and nothing else: both
//! sides use these words, so they cannot drift apart.
//!
//! A keeper started with an [`AdoptionSpec`] listens on a Unix socket under `data_dir/run/`
//! ([`socket_path`]). A new heartbeatd on the same `data_dir` connects to it at start-up:
//!
//! ```text
//! keeper     → hello 1 <keeper pid> <keeper start ticks> <agent pid> running|ended <started_at ms> <digest> <agent id>
//! heartbeatd → adopt
//! keeper     → adopted            (then the usual report lines: cpu, over, exit …)
//!            | busy               (heartbeatd that started it is still there: try again)
//! ```
//!
//! The keeper's start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot) ties
//! the hello to the process at the other end of the socket: a pid reused by another process
//! has another start time. The digest is that of the spec the keeper runs
//! ([`settings_digest`]): a new heartbeatd whose config changed meanwhile restarts the agent
//! with the new one, as for any changed spec.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::protocol::KeeperSpec;

/// The version of the words below; a hello of another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;
/// The keeper's name in `/proc/PID/comm` (15 bytes: what `comm` holds at most), whichever
/// program runs it (`heartbeatd-keep`, or heartbeatd's own binary as the fallback): the name
/// a new heartbeatd checks its peer by.
pub const PROCESS_NAME: &str = crate::protocol::KEEPER_BINARY;
/// The longest agent id (heartbeatd's `MAX_AGENT_ID_LEN`; a test there checks they agree).
pub const MAX_AGENT_ID_LEN: usize = 128;
/// What heartbeatd asks.
pub const ADOPT: &str = "adopt";
/// The keeper's answers.
pub const ADOPTED: &str = "adopted";
pub const BUSY: &str = "busy";
/// No line of the handshake is longer (an agent id is at most 128 bytes): a peer that sends
/// more is not a keeper.
pub const MAX_LINE: usize = 512;
/// The longest socket path `bind` takes: `sun_path` is 108 bytes with its final NUL.
pub const MAX_SOCKET_PATH: usize = 107;
/// The subdirectory of `data_dir` the sockets are in.
pub const RUN_DIR: &str = "run";

/// How a keeper waits to be adopted; absent (`adopt_timeout_s = 0`), the keeper ends its
/// tree when heartbeatd goes, as it always did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptionSpec {
    /// `adopt_timeout_s`: how long the tree keeps running without heartbeatd.
    pub timeout_ms: u64,
    /// Where the keeper listens ([`socket_path`]).
    pub socket: PathBuf,
    /// When heartbeatd started this run (the `started_at` a new heartbeatd shows).
    pub started_at_ms: i64,
    /// [`settings_digest`] of the spec this keeper runs.
    pub settings_digest: String,
}

/// Where the keeper of `agent_id` listens: `run/<id>.sock`, or `run/<hash>.sock` when that
/// is longer than `bind` takes; `None` when even that is (a `data_dir` path of ~80 bytes):
/// the agent then cannot be adopted.
pub fn socket_path(data_dir: &Path, agent_id: &str) -> Option<PathBuf> {
    let run = data_dir.join(RUN_DIR);
    let plain = run.join(format!("{agent_id}.sock"));
    if plain.as_os_str().len() <= MAX_SOCKET_PATH {
        return Some(plain);
    }
    let hashed = run.join(format!("{:016x}.sock", fnv1a(agent_id.as_bytes())));
    (hashed.as_os_str().len() <= MAX_SOCKET_PATH).then_some(hashed)
}

/// A digest of what a keeper runs (the command, its environment, its output file, how it is
/// stopped): equal digests, nothing to restart for. heartbeatd's pid and the adoption
/// settings are left out (they change with every heartbeatd, not with the agent's settings).
/// Taken over the spec's text ([`crate::spec_text`]), whose lines are written in one order.
pub fn settings_digest(spec: &KeeperSpec) -> String {
    let mut bare = spec.clone();
    bare.parent_pid = 0;
    bare.adoption = None;
    format!(
        "{:016x}",
        fnv1a(std::os::unix::ffi::OsStrExt::as_bytes(bare.encode().as_os_str()))
    )
}

/// An agent id as heartbeatd accepts one (its `is_valid_agent_id`; a test there checks they
/// agree): 1 to [`MAX_AGENT_ID_LEN`] bytes of `[A-Za-z0-9._-]`, not `.` or `..` (it names
/// files).
pub fn is_valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_AGENT_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// FNV-1a, 64 bits: stable across releases and platforms (a digest written by one heartbeatd
/// is compared by the next), unlike the standard library's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The keeper's first line to whoever connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub keeper_pid: i32,
    /// The keeper's start time, in clock ticks since boot.
    pub keeper_start_ticks: u64,
    pub agent_pid: i32,
    /// `false` once the agent's own process has ended (its exit follows the adoption).
    pub agent_running: bool,
    pub started_at_ms: i64,
    pub settings_digest: String,
    pub agent_id: String,
}

impl Hello {
    /// Reads a hello line (its newline, if any, ignored); `None` for anything else, another
    /// version included.
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.len() > MAX_LINE {
            return None;
        }
        let mut words = line.split(' ');
        if words.next()? != "hello" || words.next()?.parse::<u32>().ok()? != PROTOCOL_VERSION {
            return None;
        }
        let hello = Self {
            keeper_pid: words.next()?.parse().ok().filter(|p| *p > 0)?,
            keeper_start_ticks: words.next()?.parse().ok()?,
            agent_pid: words.next()?.parse().ok().filter(|p| *p > 0)?,
            agent_running: match words.next()? {
                "running" => true,
                "ended" => false,
                _ => return None,
            },
            started_at_ms: words.next()?.parse().ok()?,
            settings_digest: words
                .next()
                .filter(|d| d.len() == 16 && d.bytes().all(|b| b.is_ascii_hexdigit()))?
                .to_owned(),
            agent_id: words.next().filter(|id| is_valid_agent_id(id))?.to_owned(),
        };
        words.next().is_none().then_some(hello)
    }
}

/// The line as the keeper writes it (without its newline).
impl fmt::Display for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hello {PROTOCOL_VERSION} {} {} {} {} {} {} {}",
            self.keeper_pid,
            self.keeper_start_ticks,
            self.agent_pid,
            if self.agent_running { "running" } else { "ended" },
            self.started_at_ms,
            self.settings_digest,
            self.agent_id
        )
    }
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`);
/// `None` once it is gone.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the name: state is field 3, so field 22 is the 20th word.
    stat.rsplit_once(')')?.1.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// One line of at most [`MAX_LINE`] bytes (without its newline); `None` on a timeout, an
/// end of file or a longer line.
pub fn read_line(stream: &mut impl std::io::Read) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() <= MAX_LINE {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            keeper_pid: 41,
            keeper_start_ticks: 123_456,
            agent_pid: 42,
            agent_running: true,
            started_at_ms: 1_700_000_000_000,
            settings_digest: "00112233aabbccdd".into(),
            agent_id: "web-1.a_b".into(),
        }
    }

    #[test]
    fn a_hello_reads_back_as_written() {
        let mut ended = hello();
        ended.agent_running = false;
        for hello in [hello(), ended] {
            assert_eq!(Hello::parse(&format!("{hello}\n")), Some(hello));
        }
    }

    #[test]
    fn a_hello_of_another_version_or_shape_is_refused() {
        let good = hello().to_string();
        let bad = [
            good.replacen("hello 1", "hello 2", 1),
            good.replacen("hello", "helo", 1),
            good.replacen(" 41 ", " -41 ", 1),
            good.replacen(" 42 ", " 0 ", 1),
            good.replacen("running", "sleeping", 1),
            good.replacen("00112233aabbccdd", "xyz", 1),
            good.replace("web-1.a_b", "../etc"),
            format!("{good} extra"),
            format!("{good}{}", "x".repeat(MAX_LINE)),
            String::new(),
        ];
        for line in bad {
            assert_eq!(Hello::parse(&line), None, "{line}");
        }
    }

    #[test]
    fn a_socket_path_fits_sun_path_or_is_hashed_or_is_none() {
        let short = socket_path(Path::new("/var/lib/heartbeatd"), "web-1").unwrap();
        assert_eq!(short, Path::new("/var/lib/heartbeatd/run/web-1.sock"));
        let long_id = "a".repeat(128);
        let hashed = socket_path(Path::new("/var/lib/heartbeatd"), &long_id).unwrap();
        assert!(hashed.as_os_str().len() <= MAX_SOCKET_PATH, "{hashed:?}");
        assert_ne!(
            hashed,
            socket_path(Path::new("/var/lib/heartbeatd"), &"b".repeat(128)).unwrap()
        );
        assert_eq!(socket_path(&Path::new("/").join("d".repeat(90)), &long_id), None);
    }

    #[test]
    fn this_process_has_a_start_time_and_fnv_is_the_published_one() {
        assert!(start_ticks(std::process::id() as i32).is_some());
        assert_eq!(start_ticks(i32::MAX), None);
        // The FNV-1a test vector for "a".
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
