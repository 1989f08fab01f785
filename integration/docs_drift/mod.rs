//! The docs against the code: `make test` fails when the docs lose sight of what the code
//! does. Every fact is read from the code itself (its source, its types, its clap
//! definitions), never from a second list kept by hand:
//!
//! - every `what_to_do` text, and the message of every log line that carries one or is
//!   logged at WARN or above, is in `docs/runbook.md`;
//! - every alert (the shipped rules' and the ones heartbeatd pushes) has a runbook entry, and
//!   every rule's `runbook_url` points at it;
//! - every configuration key (from the `Settings` and `AgentInfo` types), every environment
//!   variable, and every single-value default is in `docs/configuration.md` or
//!   `docs/supervision.md`, and no documented key is unknown to the code;
//! - every route registered in `src/routes/mod.rs` is in `docs/http-api.md`'s endpoint table,
//!   and that table names no route the code lacks;
//! - every exit code in the code is in the exit-code table of its program;
//! - every flag and command of `heartbeatd` and `heartbeatd ctl` is documented;
//! - every link between the pages resolves (file and anchor) and stays inside the repository,
//!   and every `make` target the pages name exists.
mod configuration;
mod interfaces;
mod links;
mod markdown;
mod runbook;
mod rust_source;
