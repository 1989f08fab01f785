//! heartbeatd as a parent: it becomes a child subreaper, and one thread reaps every child
//! that ends, so no zombie is ever left.
//!
//! heartbeatd's children are keepers (see [`super::keeper`]; keepers adopted from a previous
//! heartbeatd are not its children, and are never swept) and, during an upgrade, the new
//! heartbeatd ([`spawn_watched`]). Each keeper reports how its agent ended over its stdout, so
//! its exit status reaped here is not needed; a watched child's status is handed to whoever
//! started it. Being a
//! subreaper means that if a keeper itself is killed, what is left of its tree is re-parented
//! to heartbeatd instead of init; [`sweep_orphans`] ends such processes.
//!
//! The thread blocks in `waitpid(-1)`; with no child at all it sleeps until
//! [`spawn_keeper`], so an idle heartbeatd without supervised agents never wakes up for it.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread;

struct Spawned {
    count: Mutex<u64>,
    changed: Condvar,
    /// The keepers heartbeatd started and has not reaped yet: how a keeper is told from
    /// anything else re-parented to heartbeatd (its command line could be imitated by any
    /// process of an agent's tree).
    keepers: Mutex<HashSet<i32>>,
    /// Children started with [`spawn_watched`], and where their exit status goes.
    watched: Mutex<HashMap<i32, mpsc::Sender<i32>>>,
    /// Keepers adopted from a previous heartbeatd ([`adopted`]): not children (their parent
    /// is init or a subreaper above), but never to be swept should one be re-parented here.
    adopted: Mutex<HashSet<i32>>,
}

fn spawned() -> &'static Spawned {
    static SPAWNED: OnceLock<Spawned> = OnceLock::new();
    SPAWNED.get_or_init(|| Spawned {
        count: Mutex::new(0),
        changed: Condvar::new(),
        keepers: Mutex::new(HashSet::new()),
        watched: Mutex::new(HashMap::new()),
        adopted: Mutex::new(HashSet::new()),
    })
}

/// Makes this process a child subreaper and starts the reaping thread (once).
pub fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        // SAFETY: prctl with this option takes integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        thread::Builder::new()
            .name("reaper".into())
            .spawn(reap_forever)
            .expect("a thread for reaping children");
    });
}

/// Starts a keeper with `spawn`, records it as one, and wakes the reaping thread. The record
/// is made before the reaping thread can see the keeper end (it waits for the same lock), so
/// a keeper that ends at once is never left recorded.
pub fn spawn_keeper(
    spawn: impl FnOnce() -> std::io::Result<std::process::Child>,
) -> std::io::Result<std::process::Child> {
    let spawned = spawned();
    let child = {
        let mut keepers = spawned.keepers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let child = spawn()?;
        keepers.insert(child.id() as i32);
        child
    };
    if let Ok(mut count) = spawned.count.lock() {
        *count += 1;
        spawned.changed.notify_all();
    }
    Ok(child)
}

/// Starts a child that is not a keeper (the new heartbeatd of an upgrade) with `spawn`; its
/// raw wait status arrives on the returned channel when it ends. [`start`] must have been
/// called: the reaping thread then owns every child's exit, so `Child::wait` must not be used.
pub fn spawn_watched(
    spawn: impl FnOnce() -> std::io::Result<std::process::Child>,
) -> std::io::Result<(std::process::Child, mpsc::Receiver<i32>)> {
    let spawned = spawned();
    let (sender, receiver) = mpsc::channel();
    let child = {
        let mut watched = spawned.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let child = spawn()?;
        watched.insert(child.id() as i32, sender);
        child
    };
    if let Ok(mut count) = spawned.count.lock() {
        *count += 1;
        spawned.changed.notify_all();
    }
    Ok((child, receiver))
}

fn reap_forever() {
    let spawned = spawned();
    loop {
        let seen = spawned.count.lock().map(|c| *c).unwrap_or(0);
        // Which child ended, without reaping it yet: a child std is starting (spawn_watched
        // holds `watched` meanwhile) whose exec failed is reaped by std itself, which panics
        // if it finds it already gone. So the reaping waits for a spawn under way to end.
        // SAFETY: info is a valid out-pointer; zeroed is a valid siginfo_t.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let peeked = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if peeked == 0 {
            // SAFETY: waitid filled info for an exited child.
            let pid = unsafe { info.si_pid() };
            let mut watched = spawned.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut status = 0;
            // SAFETY: status is a valid out-pointer.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
                continue; // std reaped it (its exec failed), or it is not ended after all
            }
            let watcher = watched.remove(&pid);
            drop(watched);
            if let Ok(mut keepers) = spawned.keepers.lock() {
                keepers.remove(&pid);
            }
            if let Some(watcher) = watcher {
                let _ = watcher.send(status);
            }
            continue;
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // No child: wait for the next spawn.
        if let Ok(count) = spawned.count.lock() {
            let _unused = spawned.changed.wait_while(count, |c| *c == seen);
        }
    }
}

/// Ends processes re-parented to heartbeatd that are not its own children (the remains of a
/// tree whose keeper was killed), with their descendants; returns how many were signalled.
pub fn sweep_orphans() -> usize {
    let me = std::process::id() as i32;
    let table = super::procfs::ProcessTable::scan();
    let mut ended = 0;
    for child in table.descendants(me) {
        if child.ppid == me && !is_own_child(child.pid) {
            for p in std::iter::once(child).chain(table.descendants(child.pid)) {
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(p.pid, libc::SIGKILL) };
                ended += 1;
            }
        }
    }
    ended
}

/// Sweeps orphans now and a few times over the next two seconds, then hands `report` the
/// total. Why more than once: when a keeper is killed, its agent dies of its death signal a
/// moment later, and only then are the agent's own children (those that left its group)
/// re-parented to heartbeatd; one sweep at once would miss them.
pub fn sweep_orphans_for_a_while(report: impl FnOnce(usize) + Send + 'static) {
    const PAUSES_MS: [u64; 6] = [0, 10, 50, 200, 700, 1000];
    let sweep = move || {
        let mut total = 0;
        for pause in PAUSES_MS {
            std::thread::sleep(std::time::Duration::from_millis(pause));
            total += sweep_orphans();
        }
        report(total);
    };
    if std::thread::Builder::new()
        .name("orphan-sweep".into())
        .spawn(sweep)
        .is_err()
    {
        // No thread to be had: one sweep now is better than none.
        sweep_orphans();
    }
}

/// Records `keeper` as adopted: [`sweep_orphans`] leaves it and its tree alone until
/// [`no_longer_adopted`].
pub fn adopted(keeper: i32) {
    spawned()
        .adopted
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(keeper);
}

/// The adopted `keeper` has ended (its socket closed).
pub fn no_longer_adopted(keeper: i32) {
    spawned()
        .adopted
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(&keeper);
}

/// Whether `pid` is a keeper heartbeatd started (and has not reaped) or adopted, or a watched
/// child it started.
fn is_own_child(pid: i32) -> bool {
    let spawned = spawned();
    spawned.keepers.lock().is_ok_and(|keepers| keepers.contains(&pid))
        || spawned.adopted.lock().is_ok_and(|adopted| adopted.contains(&pid))
        || spawned.watched.lock().is_ok_and(|watched| watched.contains_key(&pid))
}
