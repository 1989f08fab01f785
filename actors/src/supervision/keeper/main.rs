//! The keeper: a small process between heartbeatd and each supervised agent, so that no
//! process of an agent's tree outlives heartbeatd, even after a SIGKILL of heartbeatd.
//!
//! ```text
//! heartbeatd ──spawns──▶ heartbeatd keep <id>   (its own binary in a hidden mode)
//!                          │ subreaper of the tree, PR_SET_PDEATHSIG = SIGUSR2
//!                          └──▶ the agent's command (own process group, PDEATHSIG = SIGKILL)
//!                                 └──▶ … its children, also those that call setsid()
//! ```
//!
//! Why a keeper (in the style of s6-supervise and `tini -s`) and not a PID namespace: in a
//! namespace the agent would be pid 1, which ignores signals it has no handler for (a plain
//! program could not be stopped with SIGTERM) and reports pid 1 in its heartbeats; creating
//! one also needs privileges or user namespaces that many hosts disable.
//!
//! What the keeper does:
//! - it is the subreaper of the tree (`PR_SET_CHILD_SUBREAPER`): a grandchild whose parent
//!   died, or that left the group with `setsid`, is re-parented to it, so the tree is always
//!   "the keeper's descendants", found by walking `/proc`;
//! - it copies the agent's stdout and stderr into [`OutputLog`], whole lines, rotated;
//! - SIGTERM from heartbeatd: `stop_signal` to the agent's group and every descendant, then
//!   SIGKILL to every descendant after `stop_timeout`;
//! - SIGUSR1 from heartbeatd: SIGKILL to every descendant now;
//! - heartbeatd died (its PDEATHSIG, SIGUSR2, or its pid is no longer the parent): the stop
//!   signal, then SIGKILL after at most one second;
//! - when the agent's own process ends, what is left of its tree is stopped the same way: the
//!   tree lives and dies with the agent (run programs in the foreground, as under supervisord);
//! - it reaps every child; it exits once no descendant is left.
//!
//! What it does not cover: a process that leaves the tree entirely (double-forks *and* is
//! re-parented above the keeper, which a subreaper prevents, or is started through another
//! daemon such as `systemd-run` or `at`) is not the agent's any more. A SIGKILL of the
//! keeper itself (not of heartbeatd) ends the agent (its PDEATHSIG) and leaves its
//! grandchildren to heartbeatd, which is a subreaper too and ends them when it finds them.
//!
//! The protocol, on the keeper's stdout (a pipe to heartbeatd), one line each:
//! `started <pid>` | `failed <reason>`, then `exit code <n>` | `exit signal <n>`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::supervision::output_log::OutputLog;
use crate::supervision::procfs;

/// The environment variable that carries the [`KeeperSpec`] (JSON) to the keeper; removed
/// before the agent starts.
pub const SPEC_ENV: &str = "HEARTBEATD_KEEPER_SPEC";
/// The subcommand that runs the keeper.
pub const SUBCOMMAND: &str = "keep";
/// Signal from heartbeatd: stop the tree gracefully.
pub const STOP: i32 = libc::SIGTERM;
/// Signal from heartbeatd: kill the tree now.
pub const KILL_NOW: i32 = libc::SIGUSR1;
/// The keeper's parent-death signal.
const PARENT_DIED: i32 = libc::SIGUSR2;
/// How long the tree gets to stop after heartbeatd died.
const ORPHANED_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// What a keeper runs, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// heartbeatd's pid: if the keeper's parent is not this one, heartbeatd is gone.
    pub parent_pid: i32,
}

/// What a keeper reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeeperLine {
    Started(i64),
    Failed(String),
    ExitCode(i32),
    ExitSignal(i32),
}

impl KeeperLine {
    pub fn parse(line: &str) -> Option<Self> {
        let (word, rest) = line.trim_end().split_once(' ')?;
        match word {
            "started" => rest.parse().ok().map(Self::Started),
            "failed" => Some(Self::Failed(rest.to_owned())),
            "exit" => match rest.split_once(' ')? {
                ("code", n) => n.parse().ok().map(Self::ExitCode),
                ("signal", n) => n.parse().ok().map(Self::ExitSignal),
                _ => None,
            },
            _ => None,
        }
    }
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset takes valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Sends `signal` to every descendant of the keeper, the agent's group first; returns how
/// many processes are left in the tree.
fn signal_tree(me: i32, agent_pgid: Option<i32>, signal: i32) -> usize {
    if let Some(pgid) = agent_pgid {
        // SAFETY: kill has no memory preconditions; a gone group is ESRCH.
        unsafe { libc::kill(-pgid, signal) };
    }
    let tree = procfs::descendants(me);
    for pid in &tree {
        // SAFETY: as above.
        unsafe { libc::kill(*pid, signal) };
    }
    tree.len()
}

/// Reaps every child that has ended; returns the agent's wait status if it was among them.
fn reap(agent: i32) -> Option<i32> {
    let mut agent_status = None;
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return agent_status;
        }
        if pid == agent {
            agent_status = Some(status);
        }
    }
}

/// The stop in progress, if any.
struct Stopping {
    deadline: Instant,
    killed: bool,
}

/// Runs the keeper: the `heartbeatd keep <id>` entry point. Never starts a runtime.
pub fn run() -> ExitCode {
    let spec: KeeperSpec = match std::env::var(SPEC_ENV).map(|text| serde_json::from_str(&text)) {
        Ok(Ok(spec)) => spec,
        _ => {
            eprintln!("heartbeatd keep: this mode is started by heartbeatd itself, not by hand");
            return ExitCode::from(2);
        }
    };
    std::env::remove_var(SPEC_ENV);
    // SAFETY: prctl with these options takes integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DIED, 0, 0, 0);
    }
    // SAFETY: getppid/getpid cannot fail.
    let (parent, me) = unsafe { (libc::getppid(), libc::getpid()) };
    if parent != spec.parent_pid {
        return ExitCode::from(3); // heartbeatd died before we could watch it
    }
    let watched = [
        libc::SIGCHLD,
        STOP,
        KILL_NOW,
        PARENT_DIED,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
    ];
    let set = sigset(&watched);
    // SAFETY: set is initialised; the mask is restored for the agent in pre_exec.
    let signal_fd = unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if signal_fd < 0 {
        say(&format!("failed signalfd: {}", io::Error::last_os_error()));
        return ExitCode::from(1);
    }
    // SAFETY: signalfd returned a new descriptor that we own.
    let signal_fd = unsafe { OwnedFd::from_raw_fd(signal_fd) };

    let mut log = match OutputLog::open(&spec.log_path, spec.log_max_bytes, spec.log_backups) {
        Ok(log) => Some(log),
        Err(e) => {
            eprintln!(
                "heartbeatd keep {}: cannot open {}: {e}; the agent's output is discarded",
                spec.agent_id,
                spec.log_path.display()
            );
            None
        }
    };
    let (output_read, output_write) = match pipe() {
        Ok(ends) => ends,
        Err(e) => {
            say(&format!("failed pipe: {e}"));
            return ExitCode::from(1);
        }
    };
    let agent = match spawn(&spec, &output_write) {
        Ok(pid) => pid,
        Err(e) => {
            let reason = match &spec.working_dir {
                Some(dir) if !std::path::Path::new(dir).is_dir() => {
                    format!(
                        "cannot start {:?}: working_dir {dir:?} is not a directory",
                        spec.command[0]
                    )
                }
                _ => format!("cannot start {:?}: {e}", spec.command[0]),
            };
            if let Some(log) = &mut log {
                let _ = log.note(&reason);
            }
            say(&format!("failed {reason}"));
            say(&format!(
                "exit code {}",
                if e.kind() == io::ErrorKind::NotFound { 127 } else { 126 }
            ));
            return ExitCode::SUCCESS;
        }
    };
    drop(output_write);
    say(&format!("started {agent}"));

    let mut output = Some(std::fs::File::from(output_read));
    let mut agent_status: Option<i32> = None;
    let mut stopping: Option<Stopping> = None;
    let stop_timeout = Duration::from_millis(spec.stop_timeout_ms);
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        // Done: the agent has ended and nothing of its tree is left.
        if agent_status.is_some() {
            let left = procfs::descendants(me).len();
            if left == 0 {
                break;
            }
            if stopping.is_none() {
                // The agent ended by itself but left processes behind: they go with it.
                signal_tree(me, Some(agent), spec.stop_signal);
                stopping = Some(Stopping {
                    deadline: Instant::now() + stop_timeout,
                    killed: false,
                });
            }
        }
        if let Some(stop) = &mut stopping {
            if !stop.killed && Instant::now() >= stop.deadline {
                signal_tree(me, Some(agent), libc::SIGKILL);
                stop.killed = true;
            } else if stop.killed {
                signal_tree(me, Some(agent), libc::SIGKILL);
            }
        }
        // While stopping, look at the tree again every 50 ms (a grandchild's end sends no
        // SIGCHLD to us); otherwise sleep until a signal or output.
        let timeout_ms = if stopping.is_some() || agent_status.is_some() {
            50
        } else {
            -1
        };
        let mut fds = vec![libc::pollfd {
            fd: signal_fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(out) = &output {
            fds.push(libc::pollfd {
                fd: out.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: fds points to fds.len() valid pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            continue; // EINTR
        }
        if fds.len() > 1 && fds[1].revents != 0 {
            if let Some(out) = &mut output {
                match out.read(&mut buffer) {
                    Ok(0) | Err(_) => output = None,
                    Ok(n) => {
                        if let Some(log) = &mut log {
                            log.write_or_count(&buffer[..n]);
                        }
                    }
                }
            }
        }
        if fds[0].revents != 0 {
            for signal in read_signals(&signal_fd) {
                match signal {
                    libc::SIGCHLD => {}
                    STOP if stopping.is_none() => {
                        signal_tree(me, Some(agent), spec.stop_signal);
                        stopping = Some(Stopping {
                            deadline: Instant::now() + stop_timeout,
                            killed: false,
                        });
                    }
                    KILL_NOW => {
                        signal_tree(me, Some(agent), libc::SIGKILL);
                        stopping = Some(Stopping {
                            deadline: Instant::now(),
                            killed: true,
                        });
                    }
                    PARENT_DIED => {
                        let deadline = Instant::now() + stop_timeout.min(ORPHANED_STOP_TIMEOUT);
                        match &mut stopping {
                            Some(stop) => stop.deadline = stop.deadline.min(deadline),
                            None => {
                                signal_tree(me, Some(agent), spec.stop_signal);
                                stopping = Some(Stopping {
                                    deadline,
                                    killed: false,
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(status) = reap(agent) {
            agent_status = Some(status);
        }
        // heartbeatd gone without the signal (it died before prctl took effect).
        // SAFETY: getppid cannot fail.
        if stopping.is_none() && unsafe { libc::getppid() } != spec.parent_pid {
            signal_tree(me, Some(agent), spec.stop_signal);
            stopping = Some(Stopping {
                deadline: Instant::now() + ORPHANED_STOP_TIMEOUT,
                killed: false,
            });
        }
    }
    // The tree is gone: whatever is still in the pipe is the last of its output.
    if let Some(mut out) = output {
        let _ = set_nonblocking(&out);
        while let Ok(n) = out.read(&mut buffer) {
            if n == 0 {
                break;
            }
            if let Some(log) = &mut log {
                log.write_or_count(&buffer[..n]);
            }
        }
    }
    if let Some(log) = &mut log {
        let _ = log.finish();
    }
    let status = agent_status.unwrap_or(0);
    if libc::WIFSIGNALED(status) {
        say(&format!("exit signal {}", libc::WTERMSIG(status)));
    } else {
        say(&format!("exit code {}", libc::WEXITSTATUS(status)));
    }
    ExitCode::SUCCESS
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors that we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(file: &std::fs::File) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn read_signals(fd: &OwnedFd) -> Vec<i32> {
    let mut signals = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = unsafe { libc::read(fd.as_raw_fd(), &mut info as *mut _ as *mut libc::c_void, size) };
        if n as usize != size {
            return signals;
        }
        signals.push(info.ssi_signo as i32);
    }
}

/// A keeper just started, seen from heartbeatd.
pub struct SpawnedKeeper {
    pub pid: i32,
    /// The protocol lines ([`KeeperLine`]); end of file when the keeper has exited.
    pub reports: std::process::ChildStdout,
}

/// Starts a keeper for `spec` (heartbeatd's side): heartbeatd's own binary, in its own
/// process group (a Ctrl-C on heartbeatd's terminal reaches heartbeatd only, which stops
/// the agents itself), reaped by [`super::reaper`].
pub fn spawn_keeper(spec: &KeeperSpec) -> io::Result<SpawnedKeeper> {
    let json = serde_json::to_string(spec).map_err(io::Error::other)?;
    let mut child = super::reaper::spawn_keeper(|| {
        Command::new("/proc/self/exe")
            .arg0("heartbeatd")
            .arg(SUBCOMMAND)
            .arg(&spec.agent_id)
            .env(SPEC_ENV, json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
    })?;
    let reports = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no pipe from the keeper"))?;
    Ok(SpawnedKeeper {
        pid: child.id() as i32,
        reports,
    })
}

/// Starts the agent: its own process group, the keeper's signal mask undone, killed if the
/// keeper dies, stdin from /dev/null, stdout and stderr into the output pipe.
fn spawn(spec: &KeeperSpec, output: &OwnedFd) -> io::Result<i32> {
    let mut command = Command::new(&spec.command[0]);
    // heartbeatd's own settings (HEARTBEATD_ADMIN_TOKEN among them) are not the agent's.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HEARTBEATD_") {
            command.env_remove(name);
        }
    }
    command
        .args(&spec.command[1..])
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(output.try_clone()?))
        .stderr(Stdio::from(output.try_clone()?))
        .process_group(0);
    if let Some(dir) = &spec.working_dir {
        command.current_dir(dir);
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let empty = sigset(&[]);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
    let child = command.spawn()?;
    Ok(child.id() as i32)
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
        assert_eq!(KeeperLine::parse("garbage"), None);
    }
}
