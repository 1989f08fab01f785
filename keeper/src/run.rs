//! The keeper's own side: `heartbeatd-keep <id>` (or `heartbeatd keep <id>`, the fallback).
//! [`run`] reads as the story it is (as tini's `main` does); each step is a small function
//! below it. No runtime, no threads: one loop around `poll` on a signalfd, the output pipe
//! and (with adoption) its socket.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::adopt::{self, Rendezvous};
use crate::output::OutputCopy;
use crate::output_log::OutputLog;
use crate::procfs;
use crate::protocol::{KeeperLine, KeeperSpec, KILL_NOW, STOP};
use crate::tree::{self, ProcessLimit, Reaper};

/// The keeper's parent-death signal.
const PARENT_DIED: i32 = libc::SIGUSR2;
/// The signals the keeper takes through its signalfd.
const WATCHED: [i32; 7] = [
    libc::SIGCHLD,
    STOP,
    KILL_NOW,
    PARENT_DIED,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
];
/// How long the tree gets to stop after heartbeatd died.
const ORPHANED_STOP_TIMEOUT: Duration = Duration::from_secs(1);
/// While a tree is being stopped, it is looked at this often (a grandchild's end sends the
/// keeper no SIGCHLD).
const STOP_POLL: Duration = Duration::from_millis(50);
/// With `max_processes`, the tree is checked this often. A fork bomb fills a per-user process
/// limit within milliseconds, whatever this is; what it bounds is how long the bomb holds
/// the slots (other agents of the same user, and heartbeatd itself if it is that user, cannot
/// fork meanwhile), and how far it gets where no limit applies (root): at the 10–40k forks a
/// second of a small host, a few thousand processes, far from `pid_max`. A check reads
/// `/proc/loadavg`, and walks the tree (up to `max_processes` + 1 processes) only when enough
/// pids were handed out since the last walk ([`ProcessLimit`]).
pub const COUNT_INTERVAL: Duration = Duration::from_millis(50);
/// The CPU of reaped processes is reported at most this often.
pub const CPU_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the keeper: the entry point of `heartbeatd-keep` (and of `heartbeatd keep <id>`).
/// Never starts a runtime.
pub fn run() -> ExitCode {
    adopt::name_this_process();
    let Some(spec) = KeeperSpec::from_env() else {
        eprintln!("heartbeatd-keep: started by heartbeatd itself, not by hand (no valid spec in its environment)");
        return ExitCode::from(2);
    };
    if !become_the_trees_subreaper(&spec) {
        return ExitCode::from(3); // heartbeatd died before we could watch it
    }
    let signals = match watch_signals() {
        Ok(fd) => fd,
        Err(e) => return give_up(format!("signalfd: {e}")),
    };
    let log = open_output_file(&spec);
    let (pipe_out, pipe_in) = match pipe() {
        Ok(ends) => ends,
        Err(e) => return give_up(format!("pipe: {e}")),
    };
    let mut output = OutputCopy::new(pipe_out, log);
    let agent = match start_agent(&spec, &pipe_in) {
        Ok(pid) => pid,
        Err(e) => {
            report_failed_start(&spec, &e, &mut output);
            return ExitCode::SUCCESS;
        }
    };
    drop(pipe_in);
    say(&KeeperLine::Started(i64::from(agent)));
    let rendezvous = Rendezvous::open(&spec, agent);
    let status = Keeper::new(spec, agent, signals, output, rendezvous).watch_until_the_tree_is_gone();
    report_exit(status);
    ExitCode::SUCCESS
}

/// Subreaper of the tree, told when heartbeatd dies; `false` if heartbeatd is already gone.
fn become_the_trees_subreaper(spec: &KeeperSpec) -> bool {
    // SAFETY: prctl with these options takes integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DIED, 0, 0, 0);
    }
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() == spec.parent_pid }
}

/// Blocks [`WATCHED`] and returns a signalfd that reads them (the mask is undone for the
/// agent in [`start_agent`]).
fn watch_signals() -> io::Result<OwnedFd> {
    let set = sigset(&WATCHED);
    // SAFETY: set is initialised.
    let fd = unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The agent's output file; `None` (the output is discarded) when it cannot be opened.
fn open_output_file(spec: &KeeperSpec) -> Option<OutputLog> {
    match OutputLog::open(&spec.log_path, spec.log_max_bytes, spec.log_backups) {
        Ok(log) => Some(log),
        Err(e) => {
            eprintln!(
                "heartbeatd-keep {}: cannot open {}: {e}; the agent's output is discarded",
                spec.agent_id,
                spec.log_path.display()
            );
            None
        }
    }
}

/// Starts the agent: its own process group, the keeper's signal mask undone, killed if the
/// keeper dies, stdin from /dev/null, stdout and stderr into the output pipe.
fn start_agent(spec: &KeeperSpec, output: &OwnedFd) -> io::Result<i32> {
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

/// The command could not be started: said in its output file and to heartbeatd, with the
/// exit code a shell gives (127 not found, 126 not executable).
fn report_failed_start(spec: &KeeperSpec, e: &io::Error, output: &mut OutputCopy) {
    let reason = match &spec.working_dir {
        Some(dir) if !std::path::Path::new(dir).is_dir() => {
            format!(
                "cannot start {:?}: working_dir {dir:?} is not a directory",
                spec.command[0]
            )
        }
        _ => format!("cannot start {:?}: {e}", spec.command[0]),
    };
    output.note(&reason);
    say(&KeeperLine::Failed(reason));
    say(&KeeperLine::ExitCode(if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    }));
}

/// How the agent's own process ended (its wait status), to heartbeatd.
fn report_exit(status: i32) {
    if libc::WIFSIGNALED(status) {
        say(&KeeperLine::ExitSignal(libc::WTERMSIG(status)));
    } else {
        say(&KeeperLine::ExitCode(libc::WEXITSTATUS(status)));
    }
}

/// A setup step failed before the agent could start: said to heartbeatd, exit 1.
fn give_up(reason: String) -> ExitCode {
    say(&KeeperLine::Failed(reason));
    ExitCode::from(1)
}

fn say(line: &KeeperLine) {
    if adopt::say(&line.to_string()) {
        return;
    }
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The stop in progress, if any.
struct Stopping {
    deadline: Instant,
    killed: bool,
}

/// The keeper while the agent runs: its tree, its output, its signals.
struct Keeper {
    spec: KeeperSpec,
    me: i32,
    agent: i32,
    signals: OwnedFd,
    output: OutputCopy,
    reaper: Reaper,
    /// The agent's wait status, once it has ended.
    agent_status: Option<i32>,
    stopping: Option<Stopping>,
    /// The reaped CPU last reported, and when.
    cpu_said: (u64, Option<Instant>),
    /// `max_processes`, and when the tree is next checked against it.
    process_limit: Option<ProcessLimit>,
    next_count: Instant,
    /// With `adopt_timeout_s`: the socket a new heartbeatd adopts the tree on, and the link.
    rendezvous: Option<Rendezvous>,
}

impl Keeper {
    fn new(spec: KeeperSpec, agent: i32, signals: OwnedFd, output: OutputCopy, rendezvous: Option<Rendezvous>) -> Self {
        Self {
            process_limit: spec.max_processes.map(ProcessLimit::new),
            spec,
            // SAFETY: getpid cannot fail.
            me: unsafe { libc::getpid() },
            agent,
            signals,
            output,
            reaper: Reaper::new(agent),
            agent_status: None,
            stopping: None,
            cpu_said: (0, None),
            next_count: Instant::now(),
            rendezvous,
        }
    }

    /// The loop: until the agent has ended and nothing of its tree is left. Returns the
    /// agent's wait status.
    fn watch_until_the_tree_is_gone(mut self) -> i32 {
        while !self.tree_is_gone() {
            self.press_the_stop();
            let (signalled, output_ready) = self.wait_for_something();
            let now = Instant::now();
            if output_ready {
                self.output.copy();
            }
            if signalled {
                self.obey_signals(now);
            }
            self.reap_children();
            self.enforce_max_processes(now);
            self.report_reaped_cpu(now);
            self.output.flush_if_due(now);
            self.notice_if_heartbeatd_is_gone(now);
            if self.rendezvous.as_mut().is_some_and(|r| r.gives_up(now)) {
                self.heartbeatd_is_gone(now); // adopt_timeout_s passed: as without adoption
            }
        }
        self.output.finish();
        if let Some(rendezvous) = &mut self.rendezvous {
            rendezvous.wait_to_report();
        }
        self.agent_status.unwrap_or(0)
    }

    /// Whether the agent has ended and nothing of its tree is left; an agent that ended by
    /// itself but left processes behind has them stopped with it.
    fn tree_is_gone(&mut self) -> bool {
        if self.agent_status.is_none() {
            return false;
        }
        if procfs::descendants(self.me).is_empty() {
            return true;
        }
        if self.stopping.is_none() {
            self.stop_gracefully(Instant::now() + self.stop_timeout());
        }
        false
    }

    fn stop_timeout(&self) -> Duration {
        Duration::from_millis(self.spec.stop_timeout_ms)
    }

    /// The stop signal to the tree; SIGKILL once `deadline` passes.
    fn stop_gracefully(&mut self, deadline: Instant) {
        tree::signal_tree(self.me, self.agent, self.spec.stop_signal);
        self.stopping = Some(Stopping {
            deadline,
            killed: false,
        });
    }

    /// SIGKILL to the tree now, and again at each look until it is gone.
    fn kill_now(&mut self) {
        tree::signal_tree(self.me, self.agent, libc::SIGKILL);
        self.stopping = Some(Stopping {
            deadline: Instant::now(),
            killed: true,
        });
    }

    /// A stop past its deadline becomes a kill; a kill is repeated for what is left.
    fn press_the_stop(&mut self) {
        if let Some(stop) = &self.stopping {
            if stop.killed || Instant::now() >= stop.deadline {
                self.kill_now();
            }
        }
    }

    /// Sleeps in `poll` until a signal, output, or the next thing due; which of the first two
    /// are ready.
    fn wait_for_something(&mut self) -> (bool, bool) {
        let now = Instant::now();
        let mut fds = vec![libc::pollfd {
            fd: self.signals.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let output = self.output.readable_fd(now);
        if let Some(fd) = output {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let own = fds.len();
        if let Some(rendezvous) = &self.rendezvous {
            fds.extend(rendezvous.poll_fds());
        }
        let timeout = match self.next_due(now) {
            None => -1,
            Some(due) => {
                let wait = due.saturating_duration_since(now);
                // Rounded up, so a wait is never a busy loop of zero-length polls.
                wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        };
        // SAFETY: fds points to fds.len() valid pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready <= 0 {
            return (false, false); // timeout, or EINTR
        }
        if let Some(rendezvous) = &mut self.rendezvous {
            rendezvous.after_poll(&fds[own..], self.agent_status.is_none(), Instant::now());
        }
        (fds[0].revents != 0, output.is_some() && fds[1].revents != 0)
    }

    /// The earliest thing due: a look at a tree being stopped, a flush, the output budget's
    /// next window, a count of the tree, a CPU report.
    fn next_due(&self, now: Instant) -> Option<Instant> {
        let stopping = (self.stopping.is_some() || self.agent_status.is_some()).then(|| now + STOP_POLL);
        let count = self
            .process_limit
            .as_ref()
            .filter(|_| !self.stopping.as_ref().is_some_and(|s| s.killed))
            .map(|_| self.next_count);
        let cpu = (self.reaper.cpu_ticks() != self.cpu_said.0)
            .then(|| self.cpu_said.1.map_or(now, |at| at + CPU_REPORT_INTERVAL));
        let adoption = self.rendezvous.as_ref().and_then(Rendezvous::due);
        [stopping, self.output.deadline(), count, cpu, adoption]
            .into_iter()
            .flatten()
            .min()
    }

    /// heartbeatd's signals: stop, kill now, or heartbeatd died.
    fn obey_signals(&mut self, now: Instant) {
        for signal in read_signals(&self.signals) {
            match signal {
                STOP if self.stopping.is_none() => self.stop_gracefully(now + self.stop_timeout()),
                KILL_NOW => self.kill_now(),
                PARENT_DIED => match &mut self.rendezvous {
                    Some(rendezvous) => rendezvous.parent_may_be_gone(now),
                    None => self.heartbeatd_is_gone(now),
                },
                _ => {} // SIGCHLD (reaped below), or a stray terminal signal
            }
        }
    }

    /// Stops the tree within [`ORPHANED_STOP_TIMEOUT`] at most.
    fn heartbeatd_is_gone(&mut self, now: Instant) {
        let deadline = now + self.stop_timeout().min(ORPHANED_STOP_TIMEOUT);
        match &mut self.stopping {
            Some(stop) => stop.deadline = stop.deadline.min(deadline),
            None => self.stop_gracefully(deadline),
        }
    }

    /// heartbeatd gone without the signal (it died before prctl took effect).
    fn notice_if_heartbeatd_is_gone(&mut self, now: Instant) {
        if let Some(rendezvous) = &mut self.rendezvous {
            return rendezvous.parent_may_be_gone(now);
        }
        // SAFETY: getppid cannot fail.
        if self.stopping.is_none() && unsafe { libc::getppid() } != self.spec.parent_pid {
            self.heartbeatd_is_gone(now);
        }
    }

    fn reap_children(&mut self) {
        if let Some(status) = self.reaper.reap() {
            self.agent_status = Some(status);
        }
    }

    /// With `max_processes`: a tree with more processes is killed at once (a fork bomb does
    /// not stop politely), and heartbeatd told why first.
    fn enforce_max_processes(&mut self, now: Instant) {
        let (Some(limit), Some(max)) = (&mut self.process_limit, self.spec.max_processes) else {
            return;
        };
        if now < self.next_count || self.stopping.as_ref().is_some_and(|s| s.killed) {
            return;
        }
        self.next_count = now + COUNT_INTERVAL;
        if let Some(count) = limit.over(self.me) {
            say(&KeeperLine::OverProcesses {
                count: count as u64,
                max,
            });
            self.kill_now();
        }
    }

    /// The CPU of reaped processes, when it changed, at most every [`CPU_REPORT_INTERVAL`].
    fn report_reaped_cpu(&mut self, now: Instant) {
        let ticks = self.reaper.cpu_ticks();
        let due = self.cpu_said.1.is_none_or(|at| now >= at + CPU_REPORT_INTERVAL);
        if ticks != self.cpu_said.0 && due {
            say(&KeeperLine::ReapedCpu(ticks));
            self.cpu_said = (ticks, Some(now));
        }
    }
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

fn read_signals(fd: &OwnedFd) -> Vec<i32> {
    let mut signals = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: info has room for `size` bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), &mut info as *mut _ as *mut libc::c_void, size) };
        if n as usize != size {
            return signals;
        }
        signals.push(info.ssi_signo as i32);
    }
}
