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
mod bounded_reads;
mod browser_attacks;
mod cli_docs;
mod config_errors;
mod connections;
mod data_dir;
mod docs_drift;
mod durability;
mod faults;
mod fleet;
mod hardening;
mod http_contract;
mod install;
mod liveness;
mod metrics;
mod reload;
mod security;
mod shutdown;
mod sorted_list;
mod status_page;
mod supervision;
mod supervision_intent;
mod supervision_keeper;
mod supervision_limits;
mod supervision_usage;
mod systemd;
mod tls_pair;
mod upgrade;
mod webhook;
