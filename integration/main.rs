//! Black-box tests: each starts the real `heartbeatd` binary on a free port with a temporary
//! data directory, talks HTTP to it, and stops it with a signal.

/// The shared harness (`integration/harness`), under the name the tests use, with the path
/// of the binary cargo built for this test target.
mod daemon {
    pub use heartbeatd_harness::*;

    pub const BIN: &str = env!("CARGO_BIN_EXE_heartbeatd");
}

mod admin_api;
mod adoption;
mod alert_backlog;
mod alerting;
mod alerting_configs;
mod browser_attacks;
mod config_errors;
mod connections;
mod data_dir;
mod docs_drift;
mod durability;
mod faults;
mod fleet;
mod hardening;
mod http_contract;
mod liveness;
mod metrics;
mod reload;
mod security;
mod shutdown;
mod status_page;
mod supervision;
mod supervision_intent;
mod supervision_limits;
mod systemd;
mod tls_pair;
mod upgrade;
mod webhook;
