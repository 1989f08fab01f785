//! The [`KeeperSpec`] as text, the way [`SPEC_ENV`](crate::SPEC_ENV) carries it to the
//! keeper: no serde in the keeper. One `<key> <value>` line per field, the command one `arg`
//! line per word, the environment one `env <name> <value>` line per variable, every value
//! escaped so it holds no space or newline (`\\`, `\s`, `\n`). An unknown, repeated or
//! missing key makes the whole spec invalid: the keeper and heartbeatd are shipped together,
//! and a keeper that half-understood its spec would run the agent differently from what
//! heartbeatd asked. The adoption keys (`adopt_timeout_ms`, `adopt_socket`,
//! `adopt_started_at_ms`, `adopt_settings_digest`) are optional, all four or none: without
//! them the keeper is not adoptable (`adopt_timeout_s = 0`, or a spec of a heartbeatd from
//! before adoption), and ends its tree with heartbeatd as it always did.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::protocol::KeeperSpec;
use crate::rendezvous::AdoptionSpec;

impl KeeperSpec {
    /// The spec as text.
    pub fn encode(&self) -> OsString {
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
        if let Some(adoption) = &self.adoption {
            line("adopt_timeout_ms", &[adoption.timeout_ms.to_string().as_bytes()]);
            line("adopt_socket", &[adoption.socket.as_os_str().as_bytes()]);
            line("adopt_started_at_ms", &[adoption.started_at_ms.to_string().as_bytes()]);
            line("adopt_settings_digest", &[adoption.settings_digest.as_bytes()]);
        }
        OsString::from_vec(out)
    }

    /// Reads a spec written by [`encode`](Self::encode); `None` for anything else (an unknown
    /// or repeated key, a missing one, a bad number or escape, no command).
    pub fn decode(text: &[u8]) -> Option<Self> {
        let mut agent_id = None;
        let mut command = Vec::new();
        let mut working_dir = None;
        let mut env = BTreeMap::new();
        let (mut stop_signal, mut stop_timeout_ms, mut log_path) = (None, None, None);
        let (mut log_max_bytes, mut log_backups, mut max_processes, mut parent_pid) = (None, None, None, None);
        let (mut adopt_timeout_ms, mut adopt_socket, mut adopt_started_at_ms, mut adopt_digest) =
            (None, None, None, None);
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
                b"adopt_timeout_ms" => set(&mut adopt_timeout_ms, one()?.parse::<u64>().ok()?)?,
                b"adopt_socket" => match fields.as_slice() {
                    [path] => set(&mut adopt_socket, PathBuf::from(OsString::from_vec(path.clone())))?,
                    _ => return None,
                },
                b"adopt_started_at_ms" => set(&mut adopt_started_at_ms, one()?.parse::<i64>().ok()?)?,
                b"adopt_settings_digest" => set(&mut adopt_digest, one()?)?,
                _ => return None,
            }
        }
        if command.is_empty() {
            return None;
        }
        let adoption = match (adopt_timeout_ms, adopt_socket, adopt_started_at_ms, adopt_digest) {
            (None, None, None, None) => None,
            (Some(timeout_ms), Some(socket), Some(started_at_ms), Some(settings_digest)) => Some(AdoptionSpec {
                timeout_ms,
                socket,
                started_at_ms,
                settings_digest,
            }),
            _ => return None, // half an adoption: not what heartbeatd wrote
        };
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
            adoption,
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

#[cfg(test)]
mod tests {
    use super::*;

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
            adoption: Some(AdoptionSpec {
                timeout_ms: 60_000,
                socket: PathBuf::from("/var/lib/my heartbeatd/run/web-1.sock"),
                started_at_ms: -5,
                settings_digest: "0123456789abcdef".into(),
            }),
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
            adoption: None,
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
            with("adopt_timeout_ms 1"),
            with("adopt_started_at_ms x"),
            with("stop_timeout_ms 99999999999999999999999"),
            without("agent_id"),
            without("arg"),
            without("log_path"),
            without("parent_pid"),
            without("adopt_socket"),
            without("adopt_settings_digest"),
            String::new(),
            "garbage".into(),
        ] {
            assert_eq!(KeeperSpec::decode(bad.as_bytes()), None, "{bad:?}");
        }
        assert!(KeeperSpec::decode(&good).is_some());
    }
}
