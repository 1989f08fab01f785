//! heartbeatd's side of adoption: at start-up, before any agent starts, it looks at every
//! socket under `data_dir/run/`, checks that a keeper left running by the previous heartbeatd
//! of this `data_dir` is at the other end, and takes it over (see
//! [`super::keeper::rendezvous`] for the words, [`super::keeper::adopt`] for the keeper).
//!
//! A socket is a keeper's when all of these hold, else it is refused (logged, and its file
//! removed):
//! - something listens on it (else it is stale: a keeper killed with SIGKILL leaves its file);
//! - the process at the other end (`SO_PEERCRED`) is heartbeatd's own user, and its name
//!   (`/proc/PID/comm`) is a keeper's;
//! - it says a keeper's hello in time, naming itself (its pid and its start time, which a
//!   reused pid does not share) and, while the agent runs, an agent that is its child;
//! - it answers `adopted` to `adopt`.
//!
//! The adopted keepers are not heartbeatd's children: their end is learned from the socket
//! (the exit line, then its end of file), and the reaper's sweep leaves them alone.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use slog::{info, warn, Logger};

use super::keeper::rendezvous::{self, read_line, Hello, ADOPT, ADOPTED, BUSY, PROCESS_NAME, RUN_DIR};
use super::keeper::STOP;
use super::{procfs, reaper};

/// How long a socket's listener has to say hello, and to answer `adopt`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a keeper that says `busy` is asked again: the previous heartbeatd released the
/// `data_dir` lock, so it is exiting; the keeper notices within moments.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(3);
const BUSY_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Sockets are looked at on this many threads at most.
const SCAN_THREADS: usize = 16;

/// A keeper taken over: what it said, and the socket its reports now come on.
#[derive(Debug)]
pub struct Adoptable {
    pub hello: Hello,
    pub stream: UnixStream,
}

/// Why a socket is not adopted.
#[derive(Debug)]
enum NotAdopted {
    /// Nothing listens on it any more.
    Stale(String),
    /// Something listens that is not a keeper of this `data_dir`.
    Foreign(String),
    /// A keeper (by its user and name) that cannot be adopted (another protocol version, a
    /// hello that does not hold): it is stopped, so that its agent does not run twice.
    Unusable { keeper: i32, reason: String },
    /// A keeper still linked to another heartbeatd.
    Busy,
    /// Not a socket at all: left in place.
    NotASocket,
}

/// Adopts every keeper waiting under `data_dir/run/`, by agent id; refuses (logs and removes)
/// what is not one. Blocks: at most [`ANSWER_TIMEOUT`] per socket that does not answer, shared
/// among [`SCAN_THREADS`] threads.
pub fn find_keepers(data_dir: &Path, log: &Logger) -> HashMap<String, Adoptable> {
    let run = data_dir.join(RUN_DIR);
    let mut found: HashMap<String, Adoptable> = HashMap::new();
    let entries = match std::fs::read_dir(&run) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return found,
        Err(e) => {
            warn!(log, "cannot list data_dir/run: no keeper left running by the previous heartbeatd is adopted";
                "path" => %run.display(), "error" => %e,
                "what_to_do" => "check the permissions of data_dir/run (heartbeatd's user, 0700); agents still running from before are stopped by their keepers after adopt_timeout_s");
            return found;
        }
    };
    let mut busy: Vec<PathBuf> = Vec::new();
    let paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    for (path, adopted) in adopt_all(paths) {
        match adopted {
            Ok(keeper) => take(keeper, &mut found, log),
            Err(NotAdopted::Busy) => busy.push(path),
            Err(refused) => refuse(&path, refused, log),
        }
    }
    let deadline = Instant::now() + BUSY_RETRY_FOR;
    while !busy.is_empty() && Instant::now() < deadline {
        std::thread::sleep(BUSY_RETRY_PAUSE);
        for (path, adopted) in adopt_all(std::mem::take(&mut busy)) {
            match adopted {
                Ok(keeper) => take(keeper, &mut found, log),
                Err(NotAdopted::Busy) => busy.push(path),
                Err(refused) => refuse(&path, refused, log),
            }
        }
    }
    for path in busy {
        warn!(log, "a keeper in data_dir/run is still linked to another heartbeatd; it is not adopted";
            "path" => %path.display(),
            "what_to_do" => "check that no other heartbeatd runs on this data_dir (ps -C heartbeatd-keep -o pid,ppid,args); that keeper stops its agent when its heartbeatd ends");
    }
    if !found.is_empty() {
        info!(log, "adopting the keepers left running by the previous heartbeatd: their agents keep running";
            "keepers" => found.len());
    }
    found
}

/// Ends an adopted keeper whose agent is no longer supervised (deleted, or its `command`
/// removed, while heartbeatd was away): its tree is stopped as for a stop, and the socket is
/// held until the keeper has ended, so that it does not wait to be adopted again.
pub fn stop_unwanted(keeper: Adoptable, log: &Logger) {
    let Adoptable { hello, mut stream } = keeper;
    info!(log, "stopping an agent left running by the previous heartbeatd: it is no longer supervised";
        "agent_id" => &hello.agent_id, "pid" => hello.agent_pid);
    reaper::adopted(hello.keeper_pid);
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(hello.keeper_pid, STOP) };
    let held = std::thread::Builder::new()
        .name("unwanted-keeper".into())
        .spawn(move || {
            let _ = stream.set_read_timeout(None);
            let _ = io::copy(&mut stream, &mut io::sink());
            reaper::no_longer_adopted(hello.keeper_pid);
        });
    if held.is_err() {
        // No thread: the keeper stops its tree all the same, then waits adopt_timeout_s.
        reaper::no_longer_adopted(hello.keeper_pid);
    }
}

fn take(keeper: Adoptable, found: &mut HashMap<String, Adoptable>, log: &Logger) {
    if found.contains_key(&keeper.hello.agent_id) {
        warn!(log, "two keepers run the same agent; the second is stopped";
            "agent_id" => &keeper.hello.agent_id, "keeper_pid" => keeper.hello.keeper_pid,
            "what_to_do" => "nothing: one copy of the agent keeps running");
        stop_unwanted(keeper, log);
        return;
    }
    found.insert(keeper.hello.agent_id.clone(), keeper);
}

fn refuse(path: &Path, refused: NotAdopted, log: &Logger) {
    let (reason, stopped) = match refused {
        NotAdopted::Stale(reason) | NotAdopted::Foreign(reason) => (reason, false),
        NotAdopted::Unusable { keeper, reason } => {
            // SAFETY: kill has no memory preconditions.
            (reason, unsafe { libc::kill(keeper, STOP) } == 0)
        }
        NotAdopted::NotASocket => {
            warn!(log, "data_dir/run holds something that is not a socket; it is left alone";
                "path" => %path.display(), "what_to_do" => "remove it: heartbeatd only keeps keepers' sockets there");
            return;
        }
        NotAdopted::Busy => return,
    };
    let removed = std::fs::remove_file(path).is_ok();
    warn!(log, "refused a socket in data_dir/run: it is not a keeper waiting to be adopted";
        "path" => %path.display(), "reason" => reason, "removed" => removed, "keeper_stopped" => stopped,
        "what_to_do" => "nothing after a keeper or heartbeatd was killed (its socket was stale); otherwise find the process that listens there (ss -xlp) and stop it");
}

/// [`adopt`] for each path, on up to [`SCAN_THREADS`] threads: a socket whose listener does
/// not answer costs [`ANSWER_TIMEOUT`] to its own thread's share only.
fn adopt_all(paths: Vec<PathBuf>) -> Vec<(PathBuf, Result<Adoptable, NotAdopted>)> {
    let share = paths.len().div_ceil(SCAN_THREADS).max(1);
    std::thread::scope(|scope| {
        let threads: Vec<_> = paths
            .chunks(share)
            .map(|paths| scope.spawn(move || paths.iter().map(|p| (p.clone(), adopt(p))).collect::<Vec<_>>()))
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect()
    })
}

/// Connects to `path`, checks who answers, and adopts it.
fn adopt(path: &Path) -> Result<Adoptable, NotAdopted> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| NotAdopted::Stale(e.to_string()))?;
    if !meta.file_type().is_socket() {
        return Err(NotAdopted::NotASocket);
    }
    let mut stream =
        UnixStream::connect(path).map_err(|e| NotAdopted::Stale(format!("nothing listens on it ({e})")))?;
    let timeouts = stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(ANSWER_TIMEOUT)));
    timeouts.map_err(|e| NotAdopted::Stale(e.to_string()))?;
    let (pid, uid) = peer(&stream).map_err(|e| NotAdopted::Foreign(format!("cannot tell who listens: {e}")))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if uid != me {
        return Err(NotAdopted::Foreign(format!(
            "the process listening (pid {pid}) is uid {uid}, not heartbeatd's ({me})"
        )));
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != PROCESS_NAME {
        return Err(NotAdopted::Foreign(format!(
            "the process listening (pid {pid}, {:?}) is not a keeper",
            crate::log_text::clip(comm.trim_end())
        )));
    }
    let unusable = |reason| NotAdopted::Unusable { keeper: pid, reason };
    let hello = read_line(&mut stream)
        .and_then(|line| Hello::parse(&line))
        .ok_or_else(|| {
            unusable(format!(
                "the keeper listening (pid {pid}) did not say this version's hello"
            ))
        })?;
    verify(&hello, pid).map_err(unusable)?;
    stream
        .write_all(format!("{ADOPT}\n").as_bytes())
        .map_err(|e| NotAdopted::Stale(e.to_string()))?;
    match read_line(&mut stream).as_deref() {
        Some(ADOPTED) => {}
        Some(BUSY) => return Err(NotAdopted::Busy),
        _ => return Err(unusable(format!("the keeper (pid {pid}) did not answer adopt"))),
    }
    let _ = stream.set_read_timeout(None);
    Ok(Adoptable { hello, stream })
}

/// Whether `hello` is the keeper `pid`'s own, and its agent its child.
fn verify(hello: &Hello, pid: i32) -> Result<(), String> {
    if hello.keeper_pid != pid {
        return Err(format!(
            "its hello names pid {}, but pid {pid} listens",
            hello.keeper_pid
        ));
    }
    if rendezvous::start_ticks(pid) != Some(hello.keeper_start_ticks) {
        return Err(format!("its hello's start time is not that of pid {pid}"));
    }
    if hello.agent_running && procfs::read_stat(hello.agent_pid).is_none_or(|s| s.ppid != pid) {
        return Err(format!("the agent it names (pid {}) is not its child", hello.agent_pid));
    }
    Ok(())
}

/// The pid and uid of the process at the other end of `stream`.
fn peer(stream: &UnixStream) -> io::Result<(i32, u32)> {
    let cred = crate::peer_cred::peer_cred(stream)?;
    if cred.pid <= 0 {
        return Err(io::Error::other("no process at the other end"));
    }
    Ok((cred.pid, cred.uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    #[test]
    fn a_stale_socket_and_a_foreign_listener_are_refused_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join(RUN_DIR);
        std::fs::create_dir(&run).unwrap();
        // Stale: bound, then its listener gone.
        drop(UnixListener::bind(run.join("stale.sock")).unwrap());
        // Foreign: this test process listens, and is not a keeper.
        let foreign = UnixListener::bind(run.join("foreign.sock")).unwrap();
        std::fs::write(run.join("note.txt"), b"x").unwrap();

        let found = find_keepers(dir.path(), &log());

        assert!(found.is_empty());
        assert!(!run.join("stale.sock").exists());
        assert!(!run.join("foreign.sock").exists());
        assert!(run.join("note.txt").exists(), "not a socket: left alone");
        drop(foreign);
    }

    #[test]
    fn a_hello_that_does_not_name_its_process_is_refused() {
        let me = std::process::id() as i32;
        let hello = Hello {
            keeper_pid: me,
            keeper_start_ticks: rendezvous::start_ticks(me).unwrap(),
            agent_pid: me,
            agent_running: false,
            started_at_ms: 0,
            settings_digest: "0".repeat(16),
            agent_id: "a".into(),
        };
        assert_eq!(verify(&hello, me), Ok(()));
        assert!(verify(&hello, me + 1).is_err(), "another pid");
        let reused = Hello {
            keeper_start_ticks: hello.keeper_start_ticks + 1,
            ..hello.clone()
        };
        assert!(verify(&reused, me).is_err(), "another start time");
        let running = Hello {
            agent_running: true,
            ..hello
        };
        assert!(verify(&running, me).is_err(), "an agent that is not its child");
    }

    #[test]
    fn the_keeper_reads_agent_ids_in_a_hello_as_heartbeatd_accepts_them() {
        // The keeper crate cannot depend on this one: it has its own copy of the rule.
        use crate::model::agent::{is_valid_agent_id, MAX_AGENT_ID_LEN};
        assert_eq!(rendezvous::MAX_AGENT_ID_LEN, MAX_AGENT_ID_LEN);
        let long = "a".repeat(MAX_AGENT_ID_LEN);
        let longer = "a".repeat(MAX_AGENT_ID_LEN + 1);
        for id in [
            "a",
            "web-1.a_b",
            ".",
            "..",
            "",
            "a/b",
            "a b",
            "é",
            long.as_str(),
            longer.as_str(),
        ] {
            assert_eq!(rendezvous::is_valid_agent_id(id), is_valid_agent_id(id), "{id:?}");
        }
    }
}
