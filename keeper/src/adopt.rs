//! The keeper's side of adoption: its tree outlives heartbeatd for `adopt_timeout_s`, and a
//! new heartbeatd on the same `data_dir` takes it over (see [`crate::rendezvous`]).
//!
//! The keeper is linked to one heartbeatd at a time ([`Link`]):
//! - the one that started it, through its stdout pipe: that link is lost when the pipe's
//!   reader is gone (`POLLERR` on the write end: heartbeatd exited, however it died) or when
//!   the keeper's parent changed;
//! - the one that adopted it, through the accepted socket: lost at its end of file.
//!
//! Linked, report lines go to that heartbeatd. Orphaned, the tree runs on, its output is
//! still written to the log file, report lines are dropped (the CPU line is cumulative; the
//! agent's exit is kept by the keeper and said after an adoption), and the keeper answers on
//! its socket. Past the timeout it gives up: no more adoption, and the tree is stopped as when
//! heartbeatd dies without adoption.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::KeeperSpec;
use crate::rendezvous::{self, read_line, Hello, ADOPT, ADOPTED, BUSY, PROCESS_NAME};

/// How long a peer has to say `adopt` once the keeper said hello, and to read what the
/// keeper writes: the keeper copies no output meanwhile.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where report lines go: the adopting heartbeatd's socket, or nowhere while orphaned.
/// `None` in this static: stdout, as without adoption.
static ROUTE: Mutex<Option<Route>> = Mutex::new(None);

enum Route {
    Adopter(UnixStream),
    Nowhere,
}

/// Writes `line` to the heartbeatd that adopted this keeper, or drops it while none has;
/// `false` when the line is for stdout (the heartbeatd that started the keeper).
pub fn say(line: &str) -> bool {
    let mut route = ROUTE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match route.as_mut() {
        None => false,
        Some(Route::Nowhere) => true,
        Some(Route::Adopter(stream)) => {
            // A failed write means the adopter is gone: the poll on the socket says so next.
            let _ = stream.write_all(format!("{line}\n").as_bytes());
            true
        }
    }
}

fn route(to: Route) {
    *ROUTE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(to);
}

/// Shows the keeper as `heartbeatd-keep` in `/proc/PID/comm` (`ps`, `top`, `pgrep`), which
/// would otherwise show the name of the file it was executed from (`exe`).
pub fn name_this_process() {
    let mut name = [0u8; 16];
    name[..PROCESS_NAME.len()].copy_from_slice(PROCESS_NAME.as_bytes());
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// Which heartbeatd the keeper reports to.
#[derive(Debug)]
enum Link {
    /// The one that started it (stdout).
    Parent,
    /// One that adopted it: the socket's descriptor (the stream is in [`ROUTE`]).
    Adopted(RawFd),
    /// None since it was lost; adoption is possible until then.
    Orphaned { until: Instant },
    /// The timeout passed: the tree is being stopped, and nobody adopts it any more.
    GivenUp,
}

/// The keeper's socket and link.
pub struct Rendezvous {
    listener: Option<UnixListener>,
    path: PathBuf,
    /// The socket file's device and inode: it is removed at the end only if still this one.
    bound: (u64, u64),
    timeout: Duration,
    parent_pid: i32,
    link: Link,
    hello: Hello,
}

impl Rendezvous {
    /// Listens on the spec's socket; `None` without adoption, or when the socket cannot be
    /// made (said on stderr: the tree then ends with heartbeatd, as without adoption).
    pub fn open(spec: &KeeperSpec, agent_pid: i32) -> Option<Self> {
        let adoption = spec.adoption.as_ref()?;
        let me = std::process::id() as i32;
        let listen = || -> io::Result<(UnixListener, (u64, u64))> {
            // A socket left by a keeper of this agent that was killed: heartbeatd looked at
            // every socket before it started this keeper, so no live keeper answers on it.
            match std::fs::symlink_metadata(&adoption.socket) {
                Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(&adoption.socket)?,
                Ok(_) => return Err(io::Error::other("something that is not a socket is at that path")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let listener = UnixListener::bind(&adoption.socket)?;
            std::fs::set_permissions(&adoption.socket, std::fs::Permissions::from_mode(0o600))?;
            listener.set_nonblocking(true)?;
            let meta = std::fs::symlink_metadata(&adoption.socket)?;
            Ok((listener, (meta.dev(), meta.ino())))
        };
        match listen() {
            Ok((listener, bound)) => Some(Self {
                listener: Some(listener),
                path: adoption.socket.clone(),
                bound,
                timeout: Duration::from_millis(adoption.timeout_ms),
                parent_pid: spec.parent_pid,
                link: Link::Parent,
                hello: Hello {
                    keeper_pid: me,
                    keeper_start_ticks: rendezvous::start_ticks(me).unwrap_or(0),
                    agent_pid,
                    agent_running: true,
                    started_at_ms: adoption.started_at_ms,
                    settings_digest: adoption.settings_digest.clone(),
                    agent_id: spec.agent_id.clone(),
                },
            }),
            Err(e) => {
                eprintln!(
                    "heartbeatd keep {}: cannot listen on {}: {e}; this agent cannot be adopted, its tree ends with heartbeatd",
                    spec.agent_id,
                    adoption.socket.display()
                );
                None
            }
        }
    }

    /// What to poll: the socket (a new heartbeatd), and the link (its loss).
    pub fn poll_fds(&self) -> Vec<libc::pollfd> {
        let fd = |fd, events| libc::pollfd { fd, events, revents: 0 };
        let mut fds = Vec::with_capacity(2);
        if let Some(listener) = &self.listener {
            fds.push(fd(listener.as_raw_fd(), libc::POLLIN));
        }
        match self.link {
            // No event asked: the write end of a pipe reports POLLERR once no reader is left.
            Link::Parent => fds.push(fd(libc::STDOUT_FILENO, 0)),
            Link::Adopted(socket) => fds.push(fd(socket, libc::POLLIN)),
            Link::Orphaned { .. } | Link::GivenUp => {}
        }
        fds
    }

    /// Acts on what [`Self::poll_fds`] reported; `agent_running`: for a hello.
    pub fn after_poll(&mut self, fds: &[libc::pollfd], agent_running: bool, now: Instant) {
        for polled in fds {
            if polled.revents == 0 {
                continue;
            }
            let listening = self.listener.as_ref().is_some_and(|l| l.as_raw_fd() == polled.fd);
            if listening {
                self.answer_callers(agent_running, now);
            } else {
                self.check_link(now);
            }
        }
    }

    /// heartbeatd's death signal came, or the loop looks: lost if the parent changed (the
    /// signal also comes when only heartbeatd's thread that started the keeper ended).
    pub fn parent_may_be_gone(&mut self, now: Instant) {
        // SAFETY: getppid cannot fail.
        if matches!(self.link, Link::Parent) && unsafe { libc::getppid() } != self.parent_pid {
            self.lost(now);
        }
    }

    /// When the wait for an adopter ends, while one goes on.
    pub fn due(&self) -> Option<Instant> {
        match self.link {
            Link::Orphaned { until } => Some(until),
            _ => None,
        }
    }

    /// Whether the wait ended unadopted just now: the caller stops the tree.
    pub fn gives_up(&mut self, now: Instant) -> bool {
        match self.link {
            Link::Orphaned { until } if now >= until => {
                self.link = Link::GivenUp;
                self.listener = None;
                self.remove_socket_file();
                true
            }
            _ => false,
        }
    }

    /// The tree is gone: with no heartbeatd to tell, waits for one (until the timeout) so
    /// that the agent's exit is said to someone.
    pub fn wait_to_report(&mut self) {
        self.check_link(Instant::now());
        while let Link::Orphaned { until } = self.link {
            let now = Instant::now();
            if self.gives_up(now) {
                return;
            }
            let mut fds = self.poll_fds();
            let wait = until
                .saturating_duration_since(now)
                .as_millis()
                .clamp(1, i32::MAX as u128) as i32;
            // SAFETY: fds points to fds.len() valid pollfd structs.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
            if ready > 0 {
                self.after_poll(&fds, false, Instant::now());
            }
        }
    }

    /// Whether a heartbeatd is still there to report to (the link is checked now).
    fn linked(&mut self, now: Instant) -> bool {
        self.parent_may_be_gone(now);
        self.check_link(now);
        matches!(self.link, Link::Parent | Link::Adopted(_))
    }

    /// Looks at the link without waiting: lost once its other end is gone.
    fn check_link(&mut self, now: Instant) {
        let fd = match self.link {
            Link::Parent => libc::STDOUT_FILENO,
            Link::Adopted(fd) => fd,
            Link::Orphaned { .. } | Link::GivenUp => return,
        };
        let events = if fd == libc::STDOUT_FILENO { 0 } else { libc::POLLIN };
        let mut polled = libc::pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd; a zero timeout does not wait.
        if unsafe { libc::poll(&mut polled, 1, 0) } <= 0 {
            return;
        }
        let gone = if fd == libc::STDOUT_FILENO {
            polled.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
        } else {
            // The adopter sends nothing after `adopt`: anything readable is drained, and an
            // end of file (or an error) is its end.
            let mut buffer = [0u8; 256];
            // SAFETY: buffer has room for its length; the socket is non-blocking.
            let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
            n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock)
        };
        if gone {
            self.lost(now);
        }
    }

    /// The link is lost: orphaned, for `adopt_timeout_s`.
    fn lost(&mut self, now: Instant) {
        if matches!(self.link, Link::Parent | Link::Adopted(_)) {
            route(Route::Nowhere);
            self.link = Link::Orphaned {
                until: now + self.timeout,
            };
        }
    }

    /// Answers everyone waiting on the socket.
    fn answer_callers(&mut self, agent_running: bool, now: Instant) {
        loop {
            let Some(listener) = &self.listener else { return };
            match listener.accept() {
                Ok((caller, _)) => self.handshake(caller, agent_running, now),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // WouldBlock: nobody else is waiting
            }
        }
    }

    /// Hello, then `adopt` → `adopted` (or `busy` while a heartbeatd is still linked).
    /// Anything else, or nothing within [`HANDSHAKE_TIMEOUT`], and the caller is dropped.
    fn handshake(&mut self, mut caller: UnixStream, agent_running: bool, now: Instant) {
        let setup = caller
            .set_nonblocking(false)
            .and_then(|()| caller.set_read_timeout(Some(HANDSHAKE_TIMEOUT)))
            .and_then(|()| caller.set_write_timeout(Some(HANDSHAKE_TIMEOUT)));
        self.hello.agent_running = agent_running;
        if setup.is_err() || caller.write_all(format!("{}\n", self.hello).as_bytes()).is_err() {
            return;
        }
        if read_line(&mut caller).as_deref() != Some(ADOPT) {
            return;
        }
        if self.linked(now) {
            let _ = caller.write_all(format!("{BUSY}\n").as_bytes());
            return;
        }
        if caller.write_all(format!("{ADOPTED}\n").as_bytes()).is_err() || caller.set_nonblocking(true).is_err() {
            return;
        }
        self.link = Link::Adopted(caller.as_raw_fd());
        route(Route::Adopter(caller));
    }

    fn remove_socket_file(&self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.bound) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        self.remove_socket_file();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn spec(socket: PathBuf, parent_pid: i32) -> KeeperSpec {
        KeeperSpec {
            agent_id: "a-1".into(),
            command: vec!["/bin/true".into()],
            working_dir: None,
            env: Default::default(),
            stop_signal: libc::SIGTERM,
            stop_timeout_ms: 1000,
            log_path: PathBuf::from("/dev/null"),
            log_max_bytes: 0,
            log_backups: 0,
            max_processes: None,
            parent_pid,
            adoption: Some(rendezvous::AdoptionSpec {
                timeout_ms: 60_000,
                socket,
                started_at_ms: 5,
                settings_digest: "0123456789abcdef".into(),
            }),
        }
    }

    /// Connects, reads the hello, says `adopt`; the keeper's side is served meanwhile.
    fn ask(rendezvous: &mut Rendezvous, path: &std::path::Path) -> (Hello, UnixStream, Option<String>) {
        let path = path.to_owned();
        let caller = std::thread::spawn(move || {
            let mut stream = UnixStream::connect(path).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let hello = Hello::parse(&read_line(&mut stream).unwrap()).unwrap();
            stream.write_all(b"adopt\n").unwrap();
            let answer = read_line(&mut stream);
            (hello, stream, answer)
        });
        while !caller.is_finished() {
            let mut fds = rendezvous.poll_fds();
            // SAFETY: fds points to fds.len() valid pollfd structs.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10) };
            rendezvous.after_poll(&fds, true, Instant::now());
        }
        caller.join().unwrap()
    }

    #[test]
    fn busy_while_linked_adopted_once_orphaned_and_the_socket_goes_when_it_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a-1.sock");
        // SAFETY: getppid cannot fail.
        let parent = unsafe { libc::getppid() };
        let mut rendezvous = Rendezvous::open(&spec(path.clone(), parent), 4242).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // Its parent (this test's) is alive: a caller is told to wait.
        let (hello, _, answer) = ask(&mut rendezvous, &path);
        assert_eq!(answer.as_deref(), Some(BUSY));
        assert_eq!(
            (hello.agent_pid, hello.started_at_ms, hello.agent_id.as_str()),
            (4242, 5, "a-1")
        );
        assert_eq!(hello.keeper_pid, std::process::id() as i32);

        // The parent is gone: orphaned, adopted by the next caller, lines go to it.
        rendezvous.parent_pid = -1;
        let now = Instant::now();
        rendezvous.parent_may_be_gone(now);
        assert_eq!(rendezvous.due(), Some(now + Duration::from_secs(60)));
        let (_, mut adopter, answer) = ask(&mut rendezvous, &path);
        assert_eq!(answer.as_deref(), Some(ADOPTED));
        assert!(say("exit code 3"));
        let mut line = [0u8; 12];
        adopter.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"exit code 3\n");

        // The adopter goes: orphaned again; past the timeout it gives up, socket removed.
        drop(adopter);
        rendezvous.check_link(now);
        let until = rendezvous.due().expect("waiting again");
        assert!(!rendezvous.gives_up(until - Duration::from_millis(1)));
        assert!(rendezvous.gives_up(until));
        assert!(!path.exists());
        assert!(say("dropped while nobody is there"));
    }
}
