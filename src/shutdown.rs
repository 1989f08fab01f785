//! Signals and the graceful drain.
//!
//! SIGHUP reloads the configuration (see [`crate::reload`]) and never stops heartbeatd.
//! SIGUSR2 (or `POST /upgrade`, `heartbeatd ctl upgrade`) starts an upgrade (see
//! [`crate::upgrade`]): if the new process is prepared, this one hands over and then drains
//! as below; if not, it says why and keeps serving.
//!
//! SIGTERM and SIGINT both stop gracefully, in this order:
//! 1. new heartbeats get 503 "heartbeat receiver is stopped";
//! 2. the HTTP server stops (open requests finish, for at most 5 s);
//! 3. the queue drains: every heartbeat that was answered 200 is processed and saved;
//! 4. the pool's address is dropped and the worker threads are waited for;
//!    meanwhile, from step 2 on, every supervised agent is stopped, all in parallel (its
//!    stop signal, then SIGKILL after its `stop_timeout_s`), and waited for (in a hand-over
//!    with `adopt_timeout_s` set, they are left running instead: the new heartbeatd adopts
//!    their keepers);
//! 5. the Manager flushes every changed agent (state and history) to disk, and the Alerter
//!    its firing alerts.
//!
//! In a hand-over, step 1 comes after step 2, and step 2 is [`crate::server::hand_over`]:
//! no new connection is accepted (the new process will), and open ones are answered with
//! `Connection: close` for a moment, so no heartbeat is refused.
//!
//! Steps 2–5 share one deadline, `shutdown_timeout_s`; past it heartbeatd says what is left
//! and exits 1. A second signal during the drain exits at once (exit 1), for an operator who
//! chooses speed over the queue.

use std::io;
use std::time::{Duration, Instant};

use actix_rt::signal::unix::{signal, Signal, SignalKind};
use futures::future::{self, Either, OptionFuture};
use heartbeatd_actors::manager;
use heartbeatd_actors::stats::{GetStats, Stats};
use slog::{error, info, warn, Logger};

use actix::{Addr, Arbiter};
use actix_web::dev::Server;
use heartbeatd_actors::ingest::queue::IngressQueue;
use heartbeatd_actors::ingest::worker::WorkerPool;
use heartbeatd_actors::manager::Manager;
use heartbeatd_actors::notify::alerter::{Alerter, SaveNow};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::reload::Reloader;
use crate::server::{self, ConnectionCounters};
use crate::systemd::Notifier;
use crate::upgrade::successor::{HandedSockets, Launch, Successor};
use crate::upgrade::{self, UpgradeReply, UpgradeRequestQueue};

/// How often the drain looks at the queue depth.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// The signals heartbeatd handles: stop (SIGTERM, SIGINT), reload (SIGHUP) and upgrade
/// (SIGUSR2).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

/// A signal that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Stop(&'static str),
    Reload,
    Upgrade,
}

impl Signals {
    /// Installs the handlers; from here on SIGHUP no longer kills the process.
    pub fn install() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Waits for the next signal.
    pub async fn next(&mut self) -> Received {
        let term = Box::pin(self.term.recv());
        let int = Box::pin(self.int.recv());
        let hup = Box::pin(self.hup.recv());
        let usr2 = Box::pin(self.usr2.recv());
        match future::select(future::select(term, int), future::select(hup, usr2)).await {
            Either::Left((Either::Left(_), _)) => Received::Stop("SIGTERM"),
            Either::Left((Either::Right(_), _)) => Received::Stop("SIGINT"),
            Either::Right((Either::Left(_), _)) => Received::Reload,
            Either::Right((Either::Right(_), _)) => Received::Upgrade,
        }
    }

    /// Waits for the next SIGTERM or SIGINT and names it (a SIGHUP or SIGUSR2 meanwhile is
    /// ignored).
    pub async fn recv(&mut self) -> &'static str {
        loop {
            if let Received::Stop(name) = self.next().await {
                return name;
            }
        }
    }
}

/// How the daemon ended; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Everything accepted was processed and is on disk: exit 0.
    Clean,
    /// The deadline passed, the flush failed, or the HTTP server failed: exit 1.
    Incomplete,
}

impl DrainOutcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Clean => 0,
            Self::Incomplete => 1,
        }
    }
}

/// Serves until a stop signal (or an HTTP server failure), then drains.
/// What the drain needs of a built daemon: handed over by `Application`, so this module does
/// not know how the daemon is built.
pub struct Running {
    /// `shutdown_timeout_s`: the deadline of steps 2 to 5.
    pub shutdown_timeout: Duration,
    pub log: Logger,
    /// `None` with `http_port = 0`.
    pub server: Option<Server>,
    pub signals: Signals,
    pub pool: WorkerPool,
    pub manager: Addr<Manager>,
    /// Where the Manager, Liveness and the Webhook run; stopped last.
    pub manager_arbiter: Arbiter,
    pub stats: Addr<Stats>,
    pub queue: Arc<IngressQueue>,
    /// Set at the first stop signal: from then on heartbeats get 503 "stopped".
    pub stopping: Arc<AtomicBool>,
    pub reloader: Reloader,
    /// Told to write its firing alerts before the arbiter stops (`alertmanager_url` set).
    pub alerter: Option<Addr<Alerter>>,
    /// Open connections, and the flag that closes them, for a hand-over.
    pub connections: ConnectionCounters,
    /// What an upgrade starts, and the sockets it hands over.
    pub upgrade: Upgrades,
    /// The TCP socket came from systemd (`heartbeatd.socket`), which keeps it open after this
    /// process ends: connections then wait for the next heartbeatd, so a stop hands them
    /// over as an upgrade does instead of answering 503.
    pub socket_outlives_process: bool,
    /// `adopt_timeout_s` is set: in a hand-over, supervised agents are left running for the
    /// new heartbeatd to adopt instead of being stopped.
    pub agents_outlive_process: bool,
}

/// How an upgrade is started: the binary, the sockets, and requests from the API.
pub struct Upgrades {
    pub launch: Option<Launch>,
    pub sockets: HandedSockets,
    pub requests: UpgradeRequestQueue,
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    pub outcome: DrainOutcome,
    /// A new heartbeatd took over: the control socket's file is its now.
    pub handed_over: bool,
}

/// What ended the serving loop.
enum StopKind {
    Signal(&'static str),
    ServerFailed,
    HandOver(Successor),
}

/// What the serving loop waits for.
enum Event {
    Signal(Received),
    UpgradeAsked(UpgradeReply),
    ServerEnded(String),
}

pub async fn run(running: Running) -> Stopped {
    let Running {
        shutdown_timeout,
        log,
        server,
        mut signals,
        pool,
        manager,
        manager_arbiter,
        stats,
        queue,
        stopping,
        mut reloader,
        alerter,
        connections,
        mut upgrade,
        socket_outlives_process,
        agents_outlive_process,
    } = running;
    let shutdown_timeout_s = shutdown_timeout.as_secs();
    let server_handle = server.as_ref().map(|s| s.handle());
    let mut server_task = server.map(actix_rt::spawn);

    let systemd = Notifier::from_env();
    if let Err(e) = systemd.notify("READY=1") {
        warn!(log, "could not tell systemd we are ready"; "error" => %e);
    }
    let watchdog = systemd.watchdog_interval().map(|every| {
        let (systemd, log) = (systemd.clone(), log.clone());
        actix_rt::spawn(async move {
            let mut ticks = actix_rt::time::interval(every);
            loop {
                ticks.tick().await;
                if let Err(e) = systemd.notify("WATCHDOG=1") {
                    warn!(log, "could not send the watchdog keep-alive to systemd"; "error" => %e);
                }
            }
        })
    });

    let stop = loop {
        let event = {
            let signal = Box::pin(signals.next());
            let asked = Box::pin(upgrade.requests.next());
            let waiting = future::select(signal, asked);
            match server_task.as_mut() {
                None => match waiting.await {
                    Either::Left((received, _)) => Event::Signal(received),
                    Either::Right((reply, _)) => Event::UpgradeAsked(reply),
                },
                Some(task) => match future::select(waiting, task).await {
                    Either::Left((Either::Left((received, _)), _)) => Event::Signal(received),
                    Either::Left((Either::Right((reply, _)), _)) => Event::UpgradeAsked(reply),
                    Either::Right((result, _)) => Event::ServerEnded(format!("{:?}", result.map(|r| r.err()))),
                },
            }
        };
        match event {
            Event::Signal(Received::Stop(name)) => break StopKind::Signal(name),
            Event::Signal(Received::Reload) => {
                info!(log, "SIGHUP: reloading the configuration");
                reloader.reload().await;
            }
            Event::Signal(Received::Upgrade) => {
                info!(log, "SIGUSR2: upgrading in place");
                match upgrade_unless_stopped(&upgrade, &log, None, &mut signals).await {
                    Upgraded::Prepared(successor) => break StopKind::HandOver(successor),
                    Upgraded::StopInstead(name) => break StopKind::Signal(name),
                    Upgraded::Failed => {}
                }
            }
            Event::UpgradeAsked(reply) => {
                info!(log, "upgrade asked for over the API: upgrading in place");
                match upgrade_unless_stopped(&upgrade, &log, Some(reply), &mut signals).await {
                    Upgraded::Prepared(successor) => break StopKind::HandOver(successor),
                    Upgraded::StopInstead(name) => break StopKind::Signal(name),
                    Upgraded::Failed => {}
                }
            }
            Event::ServerEnded(result) => {
                error!(log, "the HTTP server stopped on its own; shutting down"; "result" => result);
                server_task = None;
                break StopKind::ServerFailed;
            }
        }
    };
    let server_failed = matches!(stop, StopKind::ServerFailed);
    let handing_to = match stop {
        StopKind::HandOver(successor) => Some(successor),
        _ => None,
    };
    let signal_name = match stop {
        StopKind::Signal(name) => name,
        StopKind::ServerFailed => "none (HTTP server failure)",
        StopKind::HandOver(_) => "none (upgrade)",
    };
    // No more upgrade requests: those still queued are told so.
    upgrade.requests.close();

    let started = Instant::now();
    let deadline = started + shutdown_timeout;
    // Connections move on to the next heartbeatd (an upgrade's, or the one systemd starts on
    // the socket it holds) rather than being answered 503.
    let connections_move_on = handing_to.is_some() || socket_outlives_process;
    match handing_to {
        None if socket_outlives_process => {
            let _ = systemd.notify("STOPPING=1");
            info!(log, "stopping gracefully: the listening socket is systemd's, so new connections wait there for the next heartbeatd; open ones are closed after their next answer, queued heartbeats are finished";
                "signal" => signal_name, "queued" => queue.depth(), "shutdown_timeout_s" => shutdown_timeout_s,
                "to_exit_at_once" => "send the signal again");
        }
        None => {
            stopping.store(true, std::sync::atomic::Ordering::Release);
            // The watchdog keeps running through the drain: a long drain is not a hang.
            let _ = systemd.notify("STOPPING=1");
            info!(log, "stopping gracefully: new heartbeats get 503, queued ones are finished";
                "signal" => signal_name, "queued" => queue.depth(), "shutdown_timeout_s" => shutdown_timeout_s,
                "to_exit_at_once" => "send the signal again");
        }
        Some(successor) => {
            // systemd follows the new process from here on; this one's exit is not the
            // service's end.
            if let Err(e) = systemd.notify(&format!("MAINPID={}", successor.pid)) {
                warn!(log, "could not tell systemd the new main pid"; "error" => %e,
                    "what_to_do" => "if heartbeatd runs under systemd, check NotifyAccess= in its unit");
            }
            if let Some(watchdog) = watchdog.as_ref() {
                watchdog.abort();
            }
            info!(log, "handing over to the new heartbeatd: no new connection is accepted here (they wait for it), open ones are closed after their next answer, then queued heartbeats are finished";
                "new_pid" => successor.pid, "queued" => queue.depth(), "shutdown_timeout_s" => shutdown_timeout_s);
        }
    }
    let finished_before = finished(&stats).await;
    let force_log = log.clone();
    let force = actix_rt::spawn(async move {
        let name = signals.recv().await;
        // The async logger may not get to write this before exit, so say it directly too.
        eprintln!("heartbeatd: second stop signal ({name}): exiting now without finishing the queue");
        slog::crit!(force_log, "second stop signal: exiting now without finishing the queue"; "signal" => name);
        std::process::exit(1);
    });

    // Supervised agents stop in parallel with the drain (each: its stop signal, SIGKILL after
    // its stop_timeout_s), all before the final checkpoint; a second left for the flush.
    let retire_within = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(Duration::from_secs(1));
    // In a hand-over with adopt_timeout_s set, they are left running: the new heartbeatd
    // adopts their keepers (same pids, no restart).
    let keep_agents = handing_to.is_some_and(|s| s.adopts) && agents_outlive_process;
    let releasing = keep_agents.then(|| manager.send(manager::ReleaseAll));
    let retiring = (!keep_agents).then(|| {
        manager.send(manager::RetireAll {
            deadline: retire_within,
        })
    });

    if let Some(handle) = server_handle {
        match connections_move_on {
            false => handle.stop(true).await,
            true => {
                let left = server::hand_over(&handle, &connections).await;
                // Nothing reaches this process's handlers any more.
                stopping.store(true, std::sync::atomic::Ordering::Release);
                info!(log, "connections handed over"; "closed_while_idle" => left);
            }
        }
    }
    if let Some(task) = server_task {
        let _ = task.await;
    }

    while queue.depth() > 0 && Instant::now() < deadline {
        actix_rt::time::sleep(DRAIN_POLL).await;
    }
    let workers_running = pool.close().wait(deadline).await;
    let unprocessed = queue.depth() as u64 + queue.lost();
    let retire_started = Instant::now();
    if let Some(Ok(supervised)) = OptionFuture::from(retiring).await {
        if supervised > 0 {
            info!(log, "supervised agents stopped"; "agents" => supervised,
                "waited_ms" => retire_started.elapsed().as_millis() as u64);
        }
    }
    if let Some(Ok(released)) = OptionFuture::from(releasing).await {
        if released > 0 {
            info!(log, "supervised agents left running for the new heartbeatd to adopt"; "agents" => released);
        }
    }
    let flush = flush_until_clean(&manager, deadline).await;
    if let Some(alerter) = alerter {
        let _ = alerter.send(SaveNow).await;
    }
    let drained = finished(&stats).await.saturating_sub(finished_before);
    force.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    manager_arbiter.stop();

    let outcome = report(
        &log,
        started,
        drained,
        unprocessed,
        workers_running,
        flush,
        server_failed,
        shutdown_timeout_s,
    );
    Stopped {
        outcome,
        handed_over: handing_to.is_some(),
    }
}

/// How an upgrade's preparation ended.
enum Upgraded {
    Prepared(Successor),
    /// A stop signal came while the new process prepared: it was killed, and this process
    /// stops as asked (a graceful stop, not a hand-over).
    StopInstead(&'static str),
    /// Logged and answered: this process keeps serving.
    Failed,
}

/// [`try_upgrade`], while still listening for signals: a stop signal abandons the upgrade
/// (so it is never taken for a second, forcing, stop signal later); SIGHUP and SIGUSR2 during
/// the preparation are ignored.
async fn upgrade_unless_stopped(
    upgrade: &Upgrades,
    log: &Logger,
    reply: Option<UpgradeReply>,
    signals: &mut Signals,
) -> Upgraded {
    let mut preparing = Box::pin(try_upgrade(upgrade, log, reply));
    loop {
        match future::select(preparing, Box::pin(signals.next())).await {
            Either::Left((Some(successor), _)) => return Upgraded::Prepared(successor),
            Either::Left((None, _)) => return Upgraded::Failed,
            Either::Right((Received::Stop(name), _)) => {
                warn!(log, "a stop signal came while the new heartbeatd prepared: the upgrade is abandoned and heartbeatd stops";
                    "signal" => name, "what_to_do" => "nothing: start heartbeatd again when you want it, then upgrade");
                return Upgraded::StopInstead(name);
            }
            Either::Right((_, still_preparing)) => {
                info!(
                    log,
                    "a signal came while the new heartbeatd prepared; ignored until the upgrade is decided"
                );
                preparing = still_preparing;
            }
        }
    }
}

/// Starts the new process of an upgrade; `Some` once it is prepared to take over. A failure
/// is logged (and answered, for a request over the API): this process keeps serving.
async fn try_upgrade(upgrade: &Upgrades, log: &Logger, reply: Option<UpgradeReply>) -> Option<Successor> {
    let Some(launch) = &upgrade.launch else {
        let why = "heartbeatd could not tell its own binary's path at start-up".to_owned();
        error!(log, "cannot upgrade: still serving"; "error" => &why,
            "what_to_do" => "restart heartbeatd (systemctl restart heartbeatd)");
        answer(reply, Err(why));
        return None;
    };
    let started = Instant::now();
    match upgrade::successor::start(launch, upgrade.sockets).await {
        Ok(successor) => {
            info!(log, "the new heartbeatd is prepared to take over";
                "new_pid" => successor.pid, "binary" => %launch.exe.display(),
                "prepared_in_ms" => started.elapsed().as_millis() as u64);
            answer(reply, Ok(successor.pid));
            Some(successor)
        }
        Err(e) => {
            error!(log, "upgrade failed: the old heartbeatd keeps serving"; "error" => %e,
                "binary" => %launch.exe.display(),
                "what_to_do" => "fix what the new heartbeatd said (its lines are just above), or reinstall the binary; then upgrade again");
            answer(reply, Err(e.to_string()));
            None
        }
    }
}

fn answer(reply: Option<UpgradeReply>, result: Result<u32, String>) {
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}

/// Why the final flush did not leave everything on disk.
#[derive(Debug, thiserror::Error)]
enum FinalFlushError {
    #[error(transparent)]
    Persist(#[from] manager::PersistError),
    #[error("{0} agents not persisted by the deadline")]
    Deadline(usize),
    #[error("the manager is not running")]
    ManagerStopped,
    #[error("timed out")]
    TimedOut,
}

/// Flushes until no agent is left unpersisted, the store fails, or the deadline passes.
/// Returns how many flushes it took.
async fn flush_until_clean(
    manager: &actix::Addr<manager::Manager>,
    deadline: Instant,
) -> Result<usize, FinalFlushError> {
    let mut flushes = 0;
    loop {
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        flushes += 1;
        match actix_rt::time::timeout(remaining, manager.send(manager::Flush)).await {
            Ok(Ok(Ok(0))) => return Ok(flushes),
            Ok(Ok(Ok(_still_dirty))) if Instant::now() < deadline => continue,
            Ok(Ok(Ok(still_dirty))) => return Err(FinalFlushError::Deadline(still_dirty)),
            Ok(Ok(Err(e))) => return Err(e.into()),
            Ok(Err(_)) => return Err(FinalFlushError::ManagerStopped),
            Err(_) => return Err(FinalFlushError::TimedOut),
        }
    }
}

/// Heartbeats the workers have finished, successfully or not.
async fn finished(stats: &actix::Addr<Stats>) -> u64 {
    stats
        .send(GetStats)
        .await
        .map(|r| r.total_processed + r.total_errors)
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn report(
    log: &Logger,
    started: Instant,
    drained: u64,
    unprocessed: u64,
    workers_running: usize,
    flush: Result<usize, FinalFlushError>,
    server_failed: bool,
    shutdown_timeout_s: u64,
) -> DrainOutcome {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match flush {
        Ok(flushes) if unprocessed == 0 && workers_running == 0 => {
            info!(log, "stopped: every accepted heartbeat is processed and on disk";
                "drained" => drained, "final_flushes" => flushes, "elapsed_ms" => elapsed_ms);
            if server_failed {
                DrainOutcome::Incomplete
            } else {
                DrainOutcome::Clean
            }
        }
        Ok(_) => {
            error!(log, "shutdown_timeout_s exceeded: stopping with heartbeats not processed";
                "unprocessed" => unprocessed, "workers_still_running" => workers_running, "drained" => drained,
                "shutdown_timeout_s" => shutdown_timeout_s, "elapsed_ms" => elapsed_ms,
                "what_to_do" => "check the disk under data_dir (slow or failing), or raise shutdown_timeout_s");
            DrainOutcome::Incomplete
        }
        Err(e) => {
            error!(log, "could not flush agent state at shutdown: some state may not be on disk";
                "error" => %e, "unprocessed" => unprocessed, "drained" => drained, "elapsed_ms" => elapsed_ms,
                "what_to_do" => "check free space and permissions of data_dir");
            DrainOutcome::Incomplete
        }
    }
}
