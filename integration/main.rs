//! Black-box tests: each starts the real `heartbeatd` binary on a free port with a temporary
//! data directory, talks HTTP to it, and stops it with a signal.

mod daemon;

mod admin_api;
mod config_errors;
mod durability;
mod faults;
mod hardening;
mod http_contract;
mod liveness;
mod load_tool;
mod metrics;
mod reload;
mod security;
mod shutdown;
mod systemd;
mod webhook;
