//! `Application::build`: opens the data directory, loads the agents' state, starts the actors,
//! binds the listener, and builds the HTTP server. [`Application::run_until_stopped`] serves
//! until SIGTERM or SIGINT and then drains (see [`crate::shutdown`]).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use heartbeatd_actors::counters::IngressCounters;
use heartbeatd_actors::data_dir;
use heartbeatd_actors::ingest::pipeline_metrics::PipelineMetrics;
use heartbeatd_actors::ingest::queue::IngressQueue;
use heartbeatd_actors::ingest::worker::WorkerPool;
use heartbeatd_actors::liveness::alerter::{self, Alerter, AlerterPolicy};
use heartbeatd_actors::liveness::webhook::Webhook;
use heartbeatd_actors::liveness::{Liveness, LivenessPolicy};
use heartbeatd_actors::manager::{Manager, ManagerPolicy};
use heartbeatd_actors::registry::{Registry, RegistryError};
use heartbeatd_actors::stats::Stats;
use heartbeatd_actors::store::{FileMetadataStore, StoreError};
use heartbeatd_actors::supervision::board::ProcessBoard;
use heartbeatd_actors::supervision::process::SupervisionContext;
use slog::{error, info, o, warn, Logger};

use crate::reload::{webhook_policy, ReloadSource, Reloader};
use crate::routes::agents::{self, AdminApi, AdminAuth};
use crate::routes::health::{self, Readiness};
use crate::routes::heartbeat::{post_heartbeat, HeartbeatIngress, IngestAuth};
use crate::routes::metrics::{self, MetricsEndpoint, MetricsSources};
use crate::routes::{fallback, process, stats, status_page};
use crate::settings::Settings;
use crate::shutdown::{self, DrainOutcome, Running, Signals};
use crate::tls;

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
}

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
}

impl Application {
    pub async fn build(mut settings: Settings, log: Logger, source: ReloadSource) -> Result<Self, StartupError> {
        // Signal handlers first: a SIGTERM during start-up then stops us gracefully too.
        let signals = Signals::install().map_err(StartupError::Signals)?;
        // The port next: a port in use is the likeliest start-up failure, and it should be
        // found before a long journal replay, with no actor started yet.
        let bind_ip = settings.bind_ip().expect("validated when the settings were loaded");
        let listener = match settings.http_port {
            0 => None,
            port => {
                let addr = SocketAddr::new(bind_ip, port);
                Some(TcpListener::bind(addr).map_err(|source| StartupError::Bind { addr, source })?)
            }
        };
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(tls::server_config(cert, key).map_err(StartupError::Tls)?),
            _ => None,
        };

        // data_dir must be heartbeatd's own before anything in it is trusted (see data_dir).
        // The walk of history/, events/, journal/ and logs/ runs while the state loads.
        let audit = data_dir::check(&settings.data_dir).map_err(StartupError::from_check)?;
        let store_log = log.new(o!("actor" => "store"));
        let mut store = FileMetadataStore::open(&settings.data_dir, store_log)
            .map_err(|e| StartupError::unsafe_or(e, StartupError::DataDir))?;
        let loaded = store
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
        if let Some(aside) = &registry_load.moved_aside {
            error!(log, "registry.json was damaged and was moved aside; the registry starts from the config's agents";
                "moved_to" => %aside.display(),
                "what_to_do" => "re-register agents added through the API, or restore the file while heartbeatd is stopped");
        }
        // From here on, a file refused at run time is logged (a refusal above ends the start).
        data_dir::report_refusals_to(log.new(o!("actor" => "data_dir")));
        let registry_view = registry.snapshot();
        let registry = registry
            .with_logger(log.new(o!("actor" => "registry")))
            .with_auto_register_limit(settings.auto_register_limit)
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
            let firing = alerter::load_firing(&settings.data_dir);
            let down_before = alerter::down_before(&firing);
            let policy = AlerterPolicy {
                urls: alertmanager_urls,
                resend: Duration::from_secs(settings.alert_resend_s),
                instance: settings.instance(),
                data_dir: settings.data_dir.clone(),
            };
            let (failures, log) = (Arc::clone(&alert_failures), log.new(o!("actor" => "alerter")));
            let alerter = Alerter::start_in_arbiter(&manager_arbiter.handle(), move |_| {
                Alerter::new(policy, firing, failures, log)
            });
            (liveness.with_alerter(alerter.clone(), down_before), Some(alerter))
        };
        let status_counts = liveness.counts();
        let transition_counts = liveness.transition_counts();
        let liveness = Liveness::start_in_arbiter(&manager_arbiter.handle(), move |_| liveness);
        // Supervised agents (those with a `command`): their outputs go to data_dir/logs.
        let process_board = ProcessBoard::default();
        let manager = manager
            .with_liveness(liveness.clone())
            .with_supervision(SupervisionContext {
                logs_dir: settings.data_dir.join("logs"),
                store: store.clone(),
                webhook: Some((webhook.clone(), Arc::clone(&webhook_enabled))),
                board: process_board.clone(),
                alerter: alerter.clone(),
                registry: registry_view.clone(),
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

        let loopback = bind_ip.is_loopback();
        let admin_auth = AdminAuth::new(settings.admin_token.clone(), loopback);
        let ingest_auth = IngestAuth::new(settings.ingest_token.clone());
        let tls_reloader = tls.as_ref().map(|(_, reloader)| reloader.clone());
        if !loopback && settings.ingest_token.is_none() && tls.is_none() && settings.http_port != 0 {
            warn!(log, "heartbeatd listens beyond loopback with neither ingest_token nor TLS: anyone on the network can post heartbeats for any registered agent (and register agents with auto_register), and read every heartbeat in transit";
                "bind" => %bind_ip,
                "what_to_do" => "set ingest_token (agents send Authorization: Bearer <token>) and tls_cert / tls_key, or bind to 127.0.0.1");
        }

        let (server, local_addr) = if let Some(listener) = listener {
            let request_timeout = Duration::from_secs(settings.request_timeout_s);
            let local_addr = listener.local_addr().map_err(StartupError::Http)?;
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
                .with_auth(ingest_auth.clone()),
            );
            let stats_data = web::Data::new(stats.clone());
            if settings.admin_token.is_none() && !loopback {
                warn!(log, "no admin_token is set and heartbeatd listens beyond loopback: the admin API refuses every change (403)";
                    "bind" => %local_addr,
                    "what_to_do" => "set admin_token (or HEARTBEATD_ADMIN_TOKEN) to register, change and delete agents over HTTP");
            }
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
                    },
                    settings.metrics_agent_limit,
                    log.new(o!("actor" => "metrics")),
                )
                .map_err(|e| StartupError::Metrics(e.to_string()))?,
            );
            let readiness = web::Data::new(Readiness {
                stopping: Arc::clone(&stopping),
                counters: Arc::clone(&manager_counters),
            });
            let admin = web::Data::new(AdminApi {
                manager: manager.clone(),
                auth: admin_auth.clone(),
                log: log.new(o!("actor" => "admin")),
                request_timeout,
                logs_dir: settings.data_dir.join("logs"),
            });
            let grace = Duration::from_secs(settings.shutdown_timeout_s).min(MAX_HTTP_GRACE);
            let server =
                HttpServer::new(move || {
                    App::new()
                        .app_data(ingress.clone())
                        .app_data(stats_data.clone())
                        .app_data(admin.clone())
                        .app_data(readiness.clone())
                        .app_data(metrics_endpoint.clone())
                        .service(
                            // HEAD too: load balancers and uptime checkers use it.
                            web::resource("/")
                                .route(web::get().to(status_page::status_page))
                                .route(web::head().to(status_page::status_page))
                                .default_service(web::to(fallback::expected_get)),
                        )
                        .route("/metrics", web::get().to(metrics::metrics))
                        .service(
                            web::resource("/healthz")
                                .route(web::get().to(health::healthz))
                                .route(web::head().to(health::healthz)),
                        )
                        .service(
                            web::resource("/readyz")
                                .route(web::get().to(health::readyz))
                                .route(web::head().to(health::readyz)),
                        )
                        .service(
                            web::resource("/heartbeat")
                                .route(web::post().to(post_heartbeat))
                                .default_service(web::to(fallback::expected_post)),
                        )
                        .service(
                            web::resource("/heartbeat/stats")
                                .route(web::get().to(stats::get_stats))
                                .default_service(web::to(fallback::expected_get)),
                        )
                        .service(
                            web::resource("/agents")
                                .route(web::get().to(agents::list))
                                .route(web::post().to(agents::register))
                                .default_service(web::to(fallback::expected_get_or_post)),
                        )
                        .service(
                            web::resource("/agents/{id}")
                                .route(web::get().to(agents::get))
                                .route(web::patch().to(agents::update))
                                .route(web::delete().to(agents::delete))
                                .default_service(web::to(fallback::expected_get_patch_or_delete)),
                        )
                        .service(
                            web::resource("/agents/{id}/pause")
                                .route(web::post().to(agents::pause))
                                .default_service(web::to(fallback::expected_post)),
                        )
                        .service(
                            web::resource("/agents/{id}/resume")
                                .route(web::post().to(agents::resume))
                                .default_service(web::to(fallback::expected_post)),
                        )
                        .service(
                            web::resource("/agents/{id}/events")
                                .route(web::get().to(agents::events))
                                .default_service(web::to(fallback::expected_get)),
                        )
                        .service(
                            web::resource("/agents/{id}/start")
                                .route(web::post().to(process::start))
                                .default_service(web::to(fallback::expected_post)),
                        )
                        .service(
                            web::resource("/agents/{id}/stop")
                                .route(web::post().to(process::stop))
                                .default_service(web::to(fallback::expected_post)),
                        )
                        .service(
                            web::resource("/agents/{id}/restart")
                                .route(web::post().to(process::restart))
                                .default_service(web::to(fallback::expected_post)),
                        )
                        .service(
                            web::resource("/agents/{id}/log")
                                .route(web::get().to(process::log))
                                .default_service(web::to(fallback::expected_get)),
                        )
                        .service(
                            web::resource("/agents/{id}/history")
                                .route(web::get().to(agents::history))
                                .default_service(web::to(fallback::expected_get)),
                        )
                        .app_data(web::QueryConfig::default().error_handler(|e, _| {
                            agents::AgentsError::BadRequest(format!("invalid query: {e}")).into()
                        }))
                        .app_data(web::PayloadConfig::new(agents::ADMIN_BODY_LIMIT))
                        .default_service(web::to(fallback::not_found))
                })
                .workers(settings.http_workers)
                // The limit is per HTTP worker thread; the setting is for all of them.
                .max_connections(settings.max_connections.div_ceil(settings.http_workers))
                // Headers must arrive within the same deadline as a body (408 otherwise).
                .client_request_timeout(request_timeout)
                .disable_signals()
                .shutdown_timeout(grace.as_secs());
            let server = match tls {
                Some((config, _)) => server.listen_rustls_0_23(listener, config),
                None => server.listen(listener),
            }
            .map_err(StartupError::Http)?
            .run();
            (Some(server), Some(local_addr))
        } else {
            warn!(log, "http_port is 0: no HTTP server is started and no heartbeat can be received";
                "what_to_do" => "set http_port in the config file, HEARTBEATD_HTTP_PORT, or --http-port");
            (None, None)
        };

        info!(log, "heartbeatd started";
            "version" => env!("CARGO_PKG_VERSION"),
            "bind" => local_addr.map_or_else(|| "none (http_port = 0)".to_owned(), |a| a.to_string()),
            "scheme" => if tls_reloader.is_some() { "https" } else { "http" },
            "workers" => settings.workers, "queue_capacity" => settings.queue_capacity(),
            "http_workers" => settings.http_workers, "data_dir" => %settings.data_dir.display(),
            "agents" => registry_view.len(), "agents_with_state" => agents_with_state,
            "agents_imported_from_config" => registry_load.imported, "auto_register" => settings.auto_register,
            "history_len" => settings.history_len, "flush_interval_ms" => settings.flush_interval_ms);

        release_startup_memory();
        let reloader = Reloader {
            current: Settings {
                agents: Vec::new(),
                ..settings.clone()
            },
            source,
            admin: admin_auth,
            ingest: ingest_auth,
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
        })
    }

    /// The bound port, if an HTTP server was started (useful with `http_port` chosen by a test).
    pub fn port(&self) -> Option<u16> {
        self.local_addr.map(|a| a.port())
    }

    /// Serves until a stop signal, then drains. See [`shutdown::run`].
    pub async fn run_until_stopped(self) -> DrainOutcome {
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
        };
        shutdown::run(running).await
    }
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

/// Gives the memory freed after start-up (the configuration parser's, large for a big
/// `[[agents]]` list) back to the OS, so the resident size reflects what the daemon keeps.
fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
