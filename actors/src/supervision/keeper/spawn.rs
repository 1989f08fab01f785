//! heartbeatd's side: which program runs as a keeper, starting one, and the pipe its
//! [`KeeperLine`]s come back on.
//!
//! The keeper is `heartbeatd-keep`, found next to heartbeatd's own executable
//! (`<dir of current_exe>/heartbeatd-keep`, installed together). Where it is missing or
//! cannot be run, heartbeatd runs its own binary in keeper mode (`/proc/self/exe keep <id>`):
//! the same code, so supervision works the same, at a higher memory cost per agent (each
//! keeper then maps, and relocates, all of heartbeatd). The choice is made again at each
//! start, so a keeper installed (or removed) later is picked up without a restart.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(doc)]
use super::KeeperLine;
use super::{KeeperSpec, KEEPER_BINARY, SPEC_ENV, SUBCOMMAND};

/// A keeper just started, seen from heartbeatd.
pub struct SpawnedKeeper {
    pub pid: i32,
    /// The protocol lines ([`KeeperLine`]); end of file when the keeper has exited.
    pub reports: std::process::ChildStdout,
    /// Set when `heartbeatd-keep` could not be run and heartbeatd's own binary was started
    /// instead: why, for the first such start of this process only (logged once).
    pub first_fallback: Option<(PathBuf, io::Error)>,
}

/// The program a keeper would be started as now, and whether it is the lean one.
#[derive(Debug)]
pub enum KeeperProgram {
    /// `heartbeatd-keep`, next to heartbeatd's executable.
    Own(PathBuf),
    /// heartbeatd's own binary in keeper mode: `expected` (where `heartbeatd-keep` was looked
    /// for) is missing or not a file heartbeatd runs ([`runnable`]), for the reason given.
    Fallback { expected: PathBuf, why: io::Error },
}

/// Where `heartbeatd-keep` is expected: beside heartbeatd's own executable. After an
/// upgrade replaced that file, `current_exe` names it with a " (deleted)" suffix; its
/// directory is still the one the new files were installed in.
pub fn keeper_path() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| io::Error::other("heartbeatd's own path has no directory"))?;
    Ok(dir.join(KEEPER_BINARY))
}

/// The program a keeper started now would be (`check-config` and start-up say which).
pub fn keeper_program() -> KeeperProgram {
    let expected = match keeper_path() {
        Ok(path) => path,
        Err(why) => {
            return KeeperProgram::Fallback {
                expected: PathBuf::from(KEEPER_BINARY),
                why,
            }
        }
    };
    match runnable(&expected) {
        Ok(()) => KeeperProgram::Own(expected),
        Err(why) => KeeperProgram::Fallback { expected, why },
    }
}

/// A regular file heartbeatd may run as its keepers (often as root): executable, owned by
/// root or heartbeatd's own user, and writable by no one else, as heartbeatd's own binary
/// would be installed; otherwise someone else could choose what runs every agent. The exec
/// itself is the final word (a file on a `noexec` mount passes here and fails there, and is
/// then fallen back from too).
fn runnable(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let refused = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    if !meta.is_file() {
        return refused("not a regular file".into());
    }
    if meta.mode() & 0o111 == 0 {
        return refused("not executable".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return refused(format!(
            "owned by uid {}, neither root nor heartbeatd's user",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refused(format!("writable by others (mode {:o})", meta.mode() & 0o7777));
    }
    Ok(())
}

/// Starts a keeper for `spec`: `heartbeatd-keep` if it can be run, heartbeatd's own binary
/// in keeper mode otherwise. In its own process group (a Ctrl-C on heartbeatd's terminal
/// reaches heartbeatd only, which stops the agents itself), reaped by
/// [`crate::supervision::reaper`].
pub fn spawn_keeper(spec: &KeeperSpec) -> io::Result<SpawnedKeeper> {
    let text = spec.to_env();
    let (mut child, first_fallback) = match keeper_path().and_then(|path| runnable(&path).map(|()| path)) {
        Ok(path) => match crate::supervision::reaper::spawn_keeper(|| own(&path, spec, &text).spawn()) {
            Ok(child) => (child, None),
            Err(e) if cannot_run(&e) => {
                let child = crate::supervision::reaper::spawn_keeper(|| fallback(spec, &text).spawn())?;
                (child, first_time().then_some((path, e)))
            }
            Err(e) => return Err(e),
        },
        Err(e) => {
            let child = crate::supervision::reaper::spawn_keeper(|| fallback(spec, &text).spawn())?;
            let expected = keeper_path().unwrap_or_else(|_| PathBuf::from(KEEPER_BINARY));
            (child, first_time().then_some((expected, e)))
        }
    };
    let reports = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no pipe from the keeper"))?;
    Ok(SpawnedKeeper {
        pid: child.id() as i32,
        reports,
        first_fallback,
    })
}

/// `heartbeatd-keep`, its argv[0] `heartbeatd-keep <id>`: `ps` and `pgrep -f` name the agent,
/// `/proc/PID/comm` is `heartbeatd-keep`.
fn own(path: &PathBuf, spec: &KeeperSpec, text: &OsString) -> Command {
    let mut command = Command::new(path);
    command.arg0(format!("{KEEPER_BINARY} {}", spec.agent_id));
    prepared(command, text)
}

/// heartbeatd's own binary (through `/proc/self/exe`: the file at heartbeatd's path may have
/// been replaced by an upgrade since it started) in keeper mode.
fn fallback(spec: &KeeperSpec, text: &OsString) -> Command {
    let mut command = Command::new("/proc/self/exe");
    command.arg0("heartbeatd").arg(SUBCOMMAND).arg(&spec.agent_id);
    prepared(command, text)
}

fn prepared(mut command: Command, text: &OsString) -> Command {
    command
        .env(SPEC_ENV, text)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    command
}

/// An error that says the program itself cannot be run (missing, not executable, not a
/// program for this machine), rather than that no process can be started at all.
fn cannot_run(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::EACCES | libc::ENOEXEC | libc::ENOTDIR | libc::ELOOP | libc::EPERM)
    )
}

/// True the first time it is called in this process.
fn first_time() -> bool {
    static FELL_BACK: AtomicBool = AtomicBool::new(false);
    !FELL_BACK.swap(true, Ordering::Relaxed)
}
