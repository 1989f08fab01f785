//! heartbeatd: agents POST heartbeats; heartbeatd validates them, processes them on a bounded
//! worker pool and keeps each agent's state durable on disk.
//!
//! | module | role |
//! |---|---|
//! | [`cli`] | command-line parsing and the commands (run, check-config, ctl, completions, man) |
//! | [`cli_docs`] | man pages and shell completions generated from the command line |
//! | [`settings`] | layered configuration into typed settings |
//! | [`telemetry`] | the slog logger (term or JSON lines) |
//! | [`startup`] | `Application::build`: actors, listener, HTTP server |
//! | [`routes`] | the HTTP endpoints and their error bodies, the gate (who may call what) |
//! | [`server`] | the listeners (TCP, TLS, the control socket) and their connections' deadlines |
//! | [`memory`] | giving freed memory back to the OS after bursts |
//! | [`heartbeat_request`] | the `POST /heartbeat` body: parsing and the seed's rules |
//! | [`shutdown`] | signals and the graceful drain |
//! | [`reload`] | SIGHUP: what a configuration reload applies |
//! | [`tls`] | HTTPS through rustls, certificate reloaded on SIGHUP |
//! | [`systemd`] | `READY=1`, `STOPPING=1`, `WATCHDOG=1`, `MAINPID=` when run as a `Type=notify` unit |
//! | [`upgrade`] | in-place upgrade: the new binary started, the sockets and `data_dir` handed over |
//!
//! The actors live in the `heartbeatd-actors` crate (`actors/`); the load tool, the ceiling
//! server and the bench in `heartbeatd-bench` (`bench/`); the harness that starts this binary
//! for tests and the bench in `heartbeatd-harness` (`integration/harness/`).

pub mod cli;
pub mod cli_docs;
pub mod ctl;
pub mod heartbeat_request;
pub mod memory;
pub mod reload;
pub mod routes;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod upgrade;
