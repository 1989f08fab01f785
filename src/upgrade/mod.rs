//! In-place upgrade: `heartbeatd ctl upgrade` (or SIGUSR2, as nginx) replaces the running
//! heartbeatd with the binary now at its path, refusing no connection and losing nothing
//! accepted. The story, in the old process ([`successor`]) and the new one ([`predecessor`]):
//!
//! 1. The old one starts the binary at the path it was started from, with the same arguments,
//!    handing over its listening sockets (`HEARTBEATD_LISTEN_FDS`, see
//!    [`crate::server::inherited`]) and the write end of a pipe (`HEARTBEATD_UPGRADE_FROM`).
//! 2. The new one loads its configuration, its TLS pair and checks `data_dir`, everything it
//!    can do without the `data_dir` lock, then writes `prepared` on the pipe and waits for the
//!    lock. If it fails before that (a broken binary, a bad config), the old one reads that
//!    from the pipe's end or the child's exit, says why, and keeps serving: nothing changed.
//! 3. Once told `prepared`, the old one tells systemd the new main pid (`MAINPID=`), stops
//!    accepting (connections wait in the kernel's queue of the shared socket), answers the
//!    requests on its open connections with `Connection: close`, then drains as a stop does:
//!    every accepted heartbeat processed and on disk. It leaves the control socket's file in
//!    place (the new one serves it) and exits 0, which releases the lock.
//! 4. The new one takes the lock, loads the state, adopts the keepers the old one left
//!    running (when it said `adopts` after `prepared` and `adopt_timeout_s` is set, the old
//!    one released its agents instead of stopping them), accepts the waiting connections,
//!    and tells systemd `READY=1`.
//!
//! The gap between 3 and 4 is a drain and a start: connections made meanwhile are queued by
//! the kernel, not refused.

pub mod predecessor;
pub mod successor;

/// The variable that tells a new heartbeatd it was started by an upgrade: `PID:FD`, the old
/// process's pid and the descriptor of the pipe to report on.
pub const FROM_VARIABLE: &str = "HEARTBEATD_UPGRADE_FROM";
/// What the new process writes on the pipe once it is prepared.
const PREPARED: &[u8] = b"prepared\n";
/// Written after [`PREPARED`] by a new process that adopts the keepers its predecessor leaves
/// running (see `heartbeatd_actors::supervision::adoption`). An older heartbeatd reads only
/// `PREPARED` and ignores it; a predecessor that does not read it from its successor (an
/// older version, in a downgrade) stops the agents instead of leaving them to nobody.
const ADOPTS: &[u8] = b"adopts\n";

use std::sync::{Arc, Mutex};

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

/// Upgrades asked for over the API and not yet started, besides the one the single sender
/// may always place (futures' channel gives each sender one slot): one waits at most, and an
/// operator who asks again meanwhile is told so.
const QUEUED_REQUESTS: usize = 0;

/// Where the answer to an upgrade asked for over the API goes: the new process's pid, or why
/// this one keeps serving.
pub type UpgradeReply = oneshot::Sender<Result<u32, String>>;

/// The API's side: asks the serving loop for an upgrade.
#[derive(Clone)]
pub struct UpgradeRequests(Arc<Mutex<mpsc::Sender<UpgradeReply>>>);

/// The serving loop's side.
pub struct UpgradeRequestQueue(mpsc::Receiver<UpgradeReply>);

/// Why an upgrade asked for over the API was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQueued {
    /// One is already being tried.
    Busy,
    /// heartbeatd is stopping or handing over.
    Stopping,
}

/// A new pair of ends.
pub fn requests() -> (UpgradeRequests, UpgradeRequestQueue) {
    let (sender, receiver) = mpsc::channel(QUEUED_REQUESTS);
    (
        UpgradeRequests(Arc::new(Mutex::new(sender))),
        UpgradeRequestQueue(receiver),
    )
}

impl UpgradeRequests {
    /// Asks for an upgrade; the answer arrives on the returned receiver.
    pub fn ask(&self) -> Result<oneshot::Receiver<Result<u32, String>>, NotQueued> {
        let (reply, answer) = oneshot::channel();
        let mut sender = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match sender.try_send(reply) {
            Ok(()) => Ok(answer),
            Err(e) if e.is_full() => Err(NotQueued::Busy),
            Err(_) => Err(NotQueued::Stopping),
        }
    }
}

impl UpgradeRequestQueue {
    /// The next request; never ends once the queue is closed (the loop has other things to
    /// wait for).
    pub async fn next(&mut self) -> UpgradeReply {
        match self.0.next().await {
            Some(reply) => reply,
            None => futures::future::pending().await,
        }
    }

    /// Refuses every later request (dropping queued ones answers them "canceled").
    pub fn close(&mut self) {
        self.0.close();
    }
}
