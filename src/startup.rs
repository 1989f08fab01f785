//! `Application::build`: opens the data directory, loads the agents' state, starts the actors,
//! binds the listener, and builds the HTTP server. [`Application::run_until_stopped`] serves
//! until SIGTERM or SIGINT and then drains (see [`crate::shutdown`]).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::web;
use heartbeatd_actors::counters::IngressCounters;
use heartbeatd_actors::data_dir;
use heartbeatd_actors::data_dir::lock::DataDirLock;
use heartbeatd_actors::ingest::pipeline_metrics::PipelineMetrics;
use heartbeatd_actors::ingest::queue::IngressQueue;
use heartbeatd_actors::ingest::worker::WorkerPool;
use heartbeatd_actors::liveness::{Liveness, LivenessPolicy};
use heartbeatd_actors::manager::{Manager, ManagerPolicy};
use heartbeatd_actors::notify::alerter::{self, Alerter, AlerterPolicy};
use heartbeatd_actors::notify::webhook::Webhook;
use heartbeatd_actors::registry::{Registry, RegistryError};
use heartbeatd_actors::stats::Stats;
use heartbeatd_actors::store::{FileMetadataStore, StoreError};
use heartbeatd_actors::supervision::adoption;
use heartbeatd_actors::supervision::board::ProcessBoard;
use heartbeatd_actors::supervision::keeper::rendezvous::{self, RUN_DIR};
use heartbeatd_actors::supervision::process::SupervisionContext;
use slog::{error, info, o, warn, Logger};

use crate::reload::{gate_settings, webhook_policy, ReloadSource, Reloader};
use crate::routes::agents::AdminApi;
use crate::routes::auth::{Gate, GateSettings};
use crate::routes::costly::{self, CostlyReads};
use crate::routes::health::Readiness;
use crate::routes::heartbeat::HeartbeatIngress;
use crate::routes::metrics::{MetricsEndpoint, MetricsSources};
use crate::routes::upgrade::UpgradeApi;
use crate::routes::{self, AppState};
use crate::server::inherited::{Inherited, Source};
use crate::server::{self, control_socket, ConnectionCounters, ConnectionLimits, Listeners};
use crate::settings::Settings;
use crate::shutdown::{self, DrainOutcome, Running, Signals, Upgrades};
use crate::tls;
use crate::upgrade;
use crate::upgrade::predecessor::Predecessor;
use crate::upgrade::successor::{HandedSockets, Launch};

/// At most this long is given to open HTTP connections after a stop signal; the rest of
/// `shutdown_timeout_s` is for the queue.
const MAX_HTTP_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon could not start (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("data_dir is not usable: {0}. Create it or fix its permissions, or point data_dir / --data-dir / HEARTBEATD_DATA_DIR elsewhere")]
    DataDir(#[source] StoreError),
    #[error("data_dir is not usable: {0}. Create it or fix its permissions, or point data_dir / --data-dir / HEARTBEATD_DATA_DIR elsewhere")]
    DataDirUnusable(#[source] data_dir::CheckError),
    #[error("data_dir is not safe to use: {0}")]
    DataDirUnsafe(#[source] data_dir::Refusal),
    #[error("could not load agent state: {0}")]
    Load(#[source] StoreError),
    #[error("could not listen on {addr}: {source}. Is another process using the port? Choose another http_port / --http-port")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start the HTTP server: {0}")]
    Http(#[source] std::io::Error),
    #[error("could not install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("could not load the registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("could not set up metrics: {0}")]
    Metrics(String),
    #[error("{0}. Fix tls_cert / tls_key (PEM files) or remove both to serve plain HTTP")]
    Tls(#[source] tls::TlsError),
    #[error(transparent)]
    ControlSocket(#[from] control_socket::ControlSocketError),
    #[error(transparent)]
    Locked(#[from] data_dir::lock::LockError),
    #[error("the previous heartbeatd (pid {pid}) could not be told this one is prepared: {source}. It keeps serving")]
    Predecessor {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// What this process was handed when it started, besides its configuration: read from the
/// environment before any thread started (see [`crate::cli`]).
pub struct Handed {
    /// Listening sockets from systemd or from the heartbeatd this one replaces.
    pub sockets: Inherited,
    /// The heartbeatd this one replaces, in an upgrade.
    pub predecessor: Option<Predecessor>,
    /// This process's binary and arguments, for its own upgrade later (`None` if the path
    /// could not be read: upgrades are then refused with the reason).
    pub launch: Option<Launch>,
}

/// How long a new process of an upgrade waits, beyond `shutdown_timeout_s`, for the old one
/// to finish its drain and let go of `data_dir`.
const HAND_OVER_WAIT_BEYOND_DRAIN: Duration = Duration::from_secs(30);

impl StartupError {
    fn from_check(e: data_dir::CheckError) -> Self {
        match e {
            data_dir::CheckError::Refused(refusal) => Self::DataDirUnsafe(refusal),
            unusable => Self::DataDirUnusable(unusable),
        }
    }

    /// A store error caused by a file [`data_dir`] refused (a link, another user's file, one
    /// others can write: found when the Store opened it) is reported as such; any other as
    /// `otherwise` says.
    fn unsafe_or(e: StoreError, otherwise: fn(StoreError) -> Self) -> Self {
        let refusal = std::error::Error::source(&e)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .and_then(data_dir::Refusal::of_io_error)
            .cloned();
        match refusal {
            Some(refusal) => Self::DataDirUnsafe(refusal),
            None => otherwise(e),
        }
    }
}

/// A built daemon, ready to serve.
pub struct Application {
    settings: Settings,
    log: Logger,
    server: Option<Server>,
    local_addr: Option<SocketAddr>,
    signals: Signals,
    pool: WorkerPool,
    manager: Addr<Manager>,
    manager_arbiter: Arbiter,
    stats: Addr<Stats>,
    queue: Arc<IngressQueue>,
    stopping: Arc<AtomicBool>,
    /// Applies SIGHUP.
    reloader: Reloader,
    /// Pushes alerts (`alertmanager_url` set).
    alerter: Option<Addr<Alerter>>,
    /// Removed at a graceful stop.
    control_socket: Option<std::path::PathBuf>,
    /// Held until the process ends: no other heartbeatd uses this `data_dir` meanwhile.
    _lock: DataDirLock,
    /// Open connections and the hand-over flag.
    connections: ConnectionCounters,
    /// How an upgrade is started.
    upgrades: Upgrades,
    /// systemd holds the TCP socket too.
    socket_held_by_systemd: bool,
}

impl Application {
    pub async fn build(
        mut settings: Settings,
        log: Logger,
        source: ReloadSource,
        handed: Handed,
    ) -> Result<Self, StartupError> {
        // Signal handlers first: a SIGTERM during start-up then stops us gracefully too.
        let signals = Signals::install().map_err(StartupError::Signals)?;
        // The port next: a port in use is the likeliest start-up failure, and it should be
        // found before a long journal replay, with no actor started yet. A socket handed over
        // (systemd, upgrade) is served as it is.
        let bind_ip = settings.bind_ip().expect("validated when the settings were loaded");
        let Handed {
            sockets: inherited,
            predecessor,
            launch,
        } = handed;
        let listener = match (inherited.tcp, settings.http_port) {
            (Some(listener), _) => Some(listener),
            (None, 0) => None,
            (None, port) => {
                let addr = SocketAddr::new(bind_ip, port);
                Some(TcpListener::bind(addr).map_err(|source| StartupError::Bind { addr, source })?)
            }
        };
        if let Some(listener) = &listener {
            deepen_backlog(listener);
            if inherited.source != Source::None {
                info!(log, "serving the listening socket handed over";
                    "from" => inherited.source.as_str(),
                    "address" => listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()));
            }
        }
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(tls::server_config(cert, key).map_err(StartupError::Tls)?),
            _ => None,
        };

        // data_dir must be heartbeatd's own before anything in it is trusted (see data_dir).
        // The walk of history/, events/, journal/ and logs/ runs while the state loads.
        let audit = data_dir::check(&settings.data_dir).map_err(StartupError::from_check)?;
        // One heartbeatd per data_dir. In an upgrade the old one holds the lock until it has
        // drained: this one tells it that it is prepared, then waits.
        let lock = match predecessor {
            None => DataDirLock::acquire(&settings.data_dir)?,
            Some(predecessor) => {
                let pid = predecessor.pid;
                predecessor
                    .report_prepared()
                    .map_err(|source| StartupError::Predecessor { pid, source })?;
                info!(log, "upgrade: prepared; waiting for the previous heartbeatd to drain and let go of data_dir";
                    "previous_pid" => pid);
                let wait = Duration::from_secs(settings.shutdown_timeout_s) + HAND_OVER_WAIT_BEYOND_DRAIN;
                DataDirLock::acquire_waiting(&settings.data_dir, std::time::Instant::now() + wait).await?
            }
        };
        let store_log = log.new(o!("actor" => "store"));
        let mut store = FileMetadataStore::open(&settings.data_dir, store_log)
            .map_err(|e| StartupError::unsafe_or(e, StartupError::DataDir))?;
        let mut loaded = store
            .load_all()
            .map_err(|e| StartupError::unsafe_or(e, StartupError::Load))?;
        let mut tightened = audit.finish().map_err(StartupError::from_check)?;
        tightened.add(loaded.modes_tightened);
        if tightened.total() > 0 {
            info!(log, "data_dir held files or directories other users could read (made by an older version of heartbeatd); they are private now: files 0600, directories 0700";
                "data_dir" => %settings.data_dir.display(), "files" => tightened.files, "directories" => tightened.dirs);
        }
        if loaded.corrupt_files > 0 || loaded.temp_files_removed > 0 {
            warn!(log, "agent state loaded with repairs";
                "corrupt_files_moved_aside" => loaded.corrupt_files, "temp_files_removed" => loaded.temp_files_removed);
        }
        let journal = store.start_journal_writer();
        let store = store.start();

        // The Registry keeps the only copy of the agent list from here on.
        let config_agents = std::mem::take(&mut settings.agents);
        let (registry, registry_load) = Registry::load(&settings.data_dir, config_agents)?;
        for (id, changes) in &registry_load.clamped {
            warn!(log, "registry.json holds agent timing out of bounds (saved by an older version); loaded with the nearest bound";
                "agent_id" => id, "clamped" => changes.join(", "),
                "what_to_do" => "check the agent's heartbeat_interval_s and grace_s (PATCH /agents/{id}); bounds are 1 s to 7 days");
        }
        crate::reload::log_config_changes(&log, &registry_load.config);
        // Agents that left the configuration: their state and files go with them.
        for gone in &registry_load.config.removed {
            loaded.agents.retain(|state| state.id != gone.id);
            store.do_send(heartbeatd_actors::store::Delete(gone.id.clone()));
        }
        if let Some(aside) = &registry_load.moved_aside {
            error!(log, "registry.json was damaged and was moved aside; the registry starts from the config's agents";
                "moved_to" => %aside.display(),
                "what_to_do" => "re-register agents added through the API, or restore the file while heartbeatd is stopped");
        }
        // From here on, a file refused at run time is logged (a refusal above ends the start).
        data_dir::report_refusals_to(log.new(o!("actor" => "data_dir")));
        // Keepers left running by the previous heartbeatd (a crash, a kill, an upgrade) are
        // taken over before any agent starts; run/ is where the keepers started now listen.
        let adoptable = adoption::find_keepers(&settings.data_dir, &log.new(o!("actor" => "process")));
        if settings.adopt_timeout_s > 0 {
            let run = settings.data_dir.join(RUN_DIR);
            if let Err(e) = data_dir::create_dir_private(&run) {
                warn!(log, "cannot make data_dir/run: supervised agents will end with heartbeatd instead of waiting adopt_timeout_s to be adopted";
                    "path" => %run.display(), "error" => %e,
                    "what_to_do" => "make data_dir/run a directory of heartbeatd's user, mode 0700, then restart heartbeatd");
            }
            let longest_id = "x".repeat(heartbeatd_actors::model::agent::MAX_AGENT_ID_LEN);
            if rendezvous::socket_path(&settings.data_dir, &longest_id).is_none() {
                warn!(log, "data_dir's path is too long for the keepers' sockets (107 bytes at most): some supervised agents will end with heartbeatd instead of waiting adopt_timeout_s to be adopted";
                    "data_dir" => %settings.data_dir.display(),
                    "what_to_do" => "use a data_dir path of at most 81 bytes (a symbolic link to it will do), or set adopt_timeout_s = 0");
            }
        }
        let registry_view = registry.snapshot();
        if registry_view.len() > settings.max_agents {
            warn!(log, "more agents are registered than max_agents allows; no agent can be registered until some are deleted";
                "registered" => registry_view.len(), "max_agents" => settings.max_agents,
                "what_to_do" => "delete agents (DELETE /agents/{id}) or raise max_agents");
        }
        let registry = registry
            .with_logger(log.new(o!("actor" => "registry")))
            .with_auto_register_limit(settings.auto_register_limit)
            .with_max_agents(settings.max_agents)
            .start();

        let queue = IngressQueue::new(settings.queue_capacity());
        let counters = IngressCounters::new();

        // The Manager gets a thread of its own so its work never competes with the timers and
        // the SyncArbiter forwarding on the main arbiter.
        let manager_arbiter = Arbiter::new();
        let agents_with_state = loaded.agents.len();
        // The Manager applies the journal on top of the loaded states, so it knows every
        // agent seen before this start, including those only the journal holds (after kill -9).
        let manager = {
            let policy = ManagerPolicy {
                history_len: settings.history_len,
                flush_interval: Duration::from_millis(settings.flush_interval_ms),
                checkpoint_interval: Duration::from_secs(settings.checkpoint_interval_s),
                max_clock_skew: Duration::from_secs(settings.max_clock_skew_s),
            };
            let (view, log) = (registry_view.clone(), log.new(o!("actor" => "manager")));
            Manager::new(policy, loaded, registry, view, store.clone(), journal, log)
        };
        // Liveness, owned by the Manager: agents seen before this start begin `up`, with a
        // full interval + grace from now.
        let liveness = {
            let policy = LivenessPolicy {
                interval: Duration::from_secs(settings.heartbeat_interval_s),
                grace: settings.grace_s.map(Duration::from_secs),
            };
            let (view, log) = (registry_view.clone(), log.new(o!("actor" => "liveness")));
            Liveness::new(policy, view, manager.seen_agents(), log).with_events(store.clone())
        };
        let webhook_failures: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        // Started even without webhook_url, so a SIGHUP can set one.
        let webhook = {
            let (policy, failures) = (webhook_policy(&settings), Arc::clone(&webhook_failures));
            let log = log.new(o!("actor" => "webhook"));
            // Set now, not when the factory runs on the arbiter: Liveness may report before.
            let enabled = Arc::new(AtomicBool::new(policy.is_some()));
            let flag = Arc::clone(&enabled);
            let webhook = Webhook::start_in_arbiter(&manager_arbiter.handle(), move |_| {
                Webhook::new(policy, flag, failures, log)
            });
            (webhook, enabled)
        };
        let (webhook, webhook_enabled) = webhook;
        let liveness = liveness.with_webhook(webhook.clone(), Arc::clone(&webhook_enabled));
        // Alertmanager, when alertmanager_url is set: alerts still firing when heartbeatd last
        // stopped are sent again, and their agents start `down`.
        let alert_failures: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let alertmanager_urls = settings.alertmanager_urls();
        let (liveness, alerter) = if alertmanager_urls.is_empty() {
            (liveness, None)
        } else {
            let (firing, damaged) = alerter::load_firing(&settings.data_dir);
            if let Some(aside) = damaged {
                error!(log, "alerts.json was damaged; the alerts firing when heartbeatd last stopped are not known";
                    "moved_to" => %aside.display(),
                    "what_to_do" => "nothing: alerts fire again as agents go down; silence stale ones in Alertmanager, which ends them at their endsAt");
            }
            let down_before = alerter::down_before(&firing);
            let ended = alerter::ended_while_away(&firing, |id| registry_view.contains(id));
            let policy = AlerterPolicy {
                urls: alertmanager_urls,
                resend: Duration::from_secs(settings.alert_resend_s),
                instance: settings.instance(),
                data_dir: settings.data_dir.clone(),
            };
            let (failures, log) = (Arc::clone(&alert_failures), log.new(o!("actor" => "alerter")));
            let alerter = Alerter::start_on_own_thread(policy, firing, failures, log);
            for (name, agent_id) in ended {
                alerter.do_send(alerter::Resolve { name, agent_id });
            }
            (liveness.with_alerter(alerter.clone(), down_before), Some(alerter))
        };
        let status_counts = liveness.counts();
        let transition_counts = liveness.transition_counts();
        let liveness = Liveness::start_in_arbiter(&manager_arbiter.handle(), move |_| liveness);
        // Supervised agents (those with a `command`): their outputs go to data_dir/logs.
        let process_board = ProcessBoard::default();
        let manager = manager
            .with_liveness(liveness.clone())
            .with_adoptable(adoptable)
            .with_supervision(SupervisionContext {
                logs_dir: settings.data_dir.join("logs"),
                data_dir: settings.data_dir.clone(),
                adopt_timeout: Duration::from_secs(settings.adopt_timeout_s),
                store: store.clone(),
                webhook: Some((webhook.clone(), Arc::clone(&webhook_enabled))),
                board: process_board.clone(),
                alerter: alerter.clone(),
                registry: registry_view.clone(),
                log: log.new(o!("actor" => "process")),
                liveness: Some(liveness.clone()),
            });
        let manager_counters = manager.health();
        let manager = Manager::start_in_arbiter(&manager_arbiter.handle(), move |_| manager);
        let stats = Stats::new(
            settings.workers,
            Arc::clone(&counters),
            Arc::clone(&queue),
            registry_view.clone(),
        )
        .with_manager_counters(Arc::clone(&manager_counters))
        .with_status_counts(status_counts)
        .with_webhook_failures(webhook_failures)
        .with_process_board(process_board.clone())
        .start();
        let pipeline_metrics = PipelineMetrics::new();
        let pool = WorkerPool::start(
            settings.workers,
            manager.clone(),
            stats.clone(),
            Arc::clone(&pipeline_metrics),
            log.new(o!("actor" => "worker")),
        );
        let stopping = Arc::new(AtomicBool::new(false));
        check_descriptor_limit(settings.max_connections, &log);

        // Judged by the address really served: a socket handed over (systemd, an upgrade) may
        // listen elsewhere than http_bind says, and loopback_admin must not reach the network.
        let served_ip = listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(bind_ip, |a| a.ip());
        let loopback = served_ip.is_loopback();
        let gate = Gate::new(
            GateSettings {
                listens_on_loopback: loopback,
                ..gate_settings(&settings)
            },
            Some(Arc::clone(&counters)),
            log.new(o!("actor" => "gate")),
        );
        let tls_reloader = tls.as_ref().map(|(_, reloader)| reloader.clone());
        if !loopback && settings.ingest_token.is_none() && tls.is_none() && settings.http_port != 0 {
            warn!(log, "heartbeatd listens beyond loopback with neither ingest_token nor TLS: anyone on the network can post heartbeats for any registered agent (and register agents with auto_register), and read every heartbeat in transit";
                "bind" => %served_ip,
                "what_to_do" => "set ingest_token (agents send Authorization: Bearer <token>) and tls_cert / tls_key, or bind to 127.0.0.1");
        }
        // The control socket lives in data_dir, which the store has made (0700) by now. One
        // handed over is served as it is, at its own path.
        let (control, control_path) = match inherited.control {
            Some((listener, path)) => (Some(listener), Some(path)),
            None => {
                let path = settings.control_socket_path();
                (path.as_deref().map(control_socket::bind).transpose()?, path)
            }
        };
        let handed_sockets = HandedSockets {
            tcp: listener.as_ref().map(AsRawFd::as_raw_fd),
            control: control.as_ref().map(AsRawFd::as_raw_fd),
            tcp_held_by_systemd: inherited.tcp_held_by_systemd,
        };
        let connection_counters = ConnectionCounters::default();
        let (upgrade_requests, upgrade_queue) = upgrade::requests();

        let listening = listener.is_some() || control.is_some();
        let (server, local_addr) = if listening {
            let request_timeout = Duration::from_secs(settings.request_timeout_s);
            let local_addr = listener
                .as_ref()
                .map(|l| l.local_addr())
                .transpose()
                .map_err(StartupError::Http)?;
            let ingress = web::Data::new(
                HeartbeatIngress::new(
                    Arc::clone(&queue),
                    pool.weak_addr(),
                    registry_view.clone(),
                    Arc::clone(&counters),
                    Arc::clone(&stopping),
                    settings.auto_register.then(|| manager.clone()),
                    log.new(o!("actor" => "http")),
                )
                .with_request_timeout(request_timeout)
                .with_store_backlog(Arc::clone(&manager_counters))
                .with_auto_register_limit(settings.auto_register_limit.min(settings.max_agents)),
            );
            if !gate.has_admin_token() && listener.is_some() {
                let over_tcp = if loopback && settings.loopback_admin {
                    "allowed from loopback without a token (loopback_admin = true)"
                } else {
                    "refused over TCP (403): no admin_token is set"
                };
                info!(log, "admin calls over the control socket need no token; over TCP they need admin_token";
                    "control_socket" => control_path.as_ref().map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
                    "tcp" => over_tcp);
            }
            let costly_reads = CostlyReads::new(costly::budget_bytes());
            let metrics_endpoint = web::Data::new(
                MetricsEndpoint::new(
                    &pipeline_metrics,
                    MetricsSources {
                        registry: registry_view.clone(),
                        manager: manager.clone(),
                        liveness: liveness.clone(),
                        stats: stats.clone(),
                        counters: Arc::clone(&counters),
                        board: process_board.clone(),
                        transition_counts: Arc::clone(&transition_counts),
                        alert_failures: Arc::clone(&alert_failures),
                        connections: connection_counters.clone(),
                        costly_reads: Arc::clone(&costly_reads),
                        gate: gate.clone(),
                    },
                    settings.metrics_agent_limit,
                    log.new(o!("actor" => "metrics")),
                )
                .map_err(|e| StartupError::Metrics(e.to_string()))?,
            );
            let state = AppState {
                gate: gate.clone(),
                ingress,
                stats: web::Data::new(stats.clone()),
                admin: web::Data::new(AdminApi {
                    manager: manager.clone(),
                    log: log.new(o!("actor" => "admin")),
                    costly: costly_reads,
                    request_timeout,
                    logs_dir: settings.data_dir.join("logs"),
                    registry: registry_view.clone(),
                }),
                readiness: web::Data::new(Readiness {
                    stopping: Arc::clone(&stopping),
                    counters: Arc::clone(&manager_counters),
                }),
                metrics: metrics_endpoint,
                closing: Arc::clone(&connection_counters.closing),
                upgrade: web::Data::new(UpgradeApi {
                    requests: upgrade_requests.clone(),
                    started_at: chrono::Utc::now(),
                }),
            };
            let limits = ConnectionLimits {
                workers: settings.http_workers,
                max_connections: settings.max_connections,
                request_timeout,
                send_timeout: Duration::from_secs(settings.send_timeout_s),
                grace: Duration::from_secs(settings.shutdown_timeout_s).min(MAX_HTTP_GRACE),
            };
            let listeners = Listeners {
                tcp: listener,
                tls: tls.map(|(config, _)| Arc::new(config)),
                control,
            };
            let server = server::serve(
                listeners,
                &limits,
                &connection_counters,
                &log.new(o!("actor" => "http")),
                move |transport| routes::app(&state, transport),
            )
            .map_err(StartupError::Http)?;
            (Some(server), local_addr)
        } else {
            (None, None)
        };
        if settings.http_port == 0 {
            warn!(log, "http_port is 0: no HTTP server is started and no heartbeat can be received";
                "what_to_do" => "set http_port in the config file, HEARTBEATD_HTTP_PORT, or --http-port");
        }

        info!(log, "heartbeatd started";
            "version" => env!("CARGO_PKG_VERSION"),
            "bind" => local_addr.map_or_else(|| "none (http_port = 0)".to_owned(), |a| a.to_string()),
            "scheme" => if tls_reloader.is_some() { "https" } else { "http" },
            "workers" => settings.workers, "queue_capacity" => settings.queue_capacity(),
            "http_workers" => settings.http_workers, "data_dir" => %settings.data_dir.display(),
            "agents" => registry_view.len(), "agents_with_state" => agents_with_state,
            "auto_register" => settings.auto_register,
            "history_len" => settings.history_len, "flush_interval_ms" => settings.flush_interval_ms);

        // The configuration parser's memory, large for a big `[[agents]]` list.
        crate::memory::give_back_free_memory();
        let reloader = Reloader {
            current: Settings {
                agents: Vec::new(),
                ..settings.clone()
            },
            source,
            gate,
            webhook,
            manager: manager.clone(),
            tls: tls_reloader,
            log: log.clone(),
        };
        Ok(Self {
            settings,
            log,
            reloader,
            server,
            local_addr,
            signals,
            pool,
            manager,
            manager_arbiter,
            stats,
            queue,
            stopping,
            alerter,
            control_socket: control_path,
            _lock: lock,
            connections: connection_counters,
            upgrades: Upgrades {
                launch,
                sockets: handed_sockets,
                requests: upgrade_queue,
            },
            socket_held_by_systemd: inherited.tcp_held_by_systemd,
        })
    }

    /// The bound port, if an HTTP server was started (useful with `http_port` chosen by a test).
    pub fn port(&self) -> Option<u16> {
        self.local_addr.map(|a| a.port())
    }

    /// Serves until a stop signal or an upgrade's hand-over, then drains. See
    /// [`shutdown::run`].
    pub async fn run_until_stopped(self) -> DrainOutcome {
        let control_socket = self.control_socket;
        let lock = self._lock;
        let running = Running {
            shutdown_timeout: Duration::from_secs(self.settings.shutdown_timeout_s),
            log: self.log,
            server: self.server,
            signals: self.signals,
            pool: self.pool,
            manager: self.manager,
            manager_arbiter: self.manager_arbiter,
            stats: self.stats,
            queue: self.queue,
            stopping: self.stopping,
            reloader: self.reloader,
            alerter: self.alerter,
            connections: self.connections,
            upgrade: self.upgrades,
            socket_outlives_process: self.socket_held_by_systemd,
            agents_outlive_process: self.settings.adopt_timeout_s > 0,
        };
        let stopped = shutdown::run(running).await;
        // After a hand-over the socket's file is the new process's.
        if let (Some(path), false) = (control_socket, stopped.handed_over) {
            control_socket::remove(&path);
        }
        // Everything is on disk: the next heartbeatd (an upgrade's, waiting) may take data_dir.
        drop(lock);
        stopped.outcome
    }
}

/// The queue of connections the kernel holds for heartbeatd while it is not accepting (an
/// upgrade's or a restart's gap), at most; the kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// Raises the listening socket's queue to [`LISTEN_BACKLOG`] (std binds with 128): past the
/// queue, connections made while no process accepts are not refused but delayed by the
/// client's SYN retry (a second). listen(2) on a listening socket only changes its queue.
fn deepen_backlog(listener: &TcpListener) {
    // SAFETY: listen on a descriptor the listener owns.
    unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
}

/// Descriptors heartbeatd needs besides its HTTP connections: the journal, state and history
/// files of a checkpoint (closed as it goes), the log, the listener, eventfds of the runtime.
const DESCRIPTORS_BESIDES_CONNECTIONS: u64 = 256;

/// Raises the soft limit on open files to the hard limit, and warns when even that is below
/// what `max_connections` needs: past it, accepting a connection or opening a journal segment
/// fails with EMFILE.
fn check_descriptor_limit(max_connections: usize, log: &Logger) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                limit = wanted;
                true
            } else {
                false
            }
        } else {
            false
        }
    };
    let needed = max_connections as u64 + DESCRIPTORS_BESIDES_CONNECTIONS;
    let soft: u64 = limit.rlim_cur;
    if soft < needed {
        warn!(log, "the open-files limit is below what max_connections needs: past it, new connections and files fail";
            "limit" => soft, "needed" => needed, "max_connections" => max_connections,
            "what_to_do" => "raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) or lower max_connections");
    } else if raised {
        info!(log, "raised the open-files limit to its hard limit"; "limit" => soft);
    }
}
