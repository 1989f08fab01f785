//! The docs against the code: `make test` fails when the docs lose sight of what the code
//! does. Every fact is read from the code itself (its source, its types, its clap
//! definitions), never from a second list kept by hand:
//!
//! - every `what_to_do` text, and the message of every log line that carries one or is
//!   logged at WARN or above, is in `docs/runbook.md`;
//! - every alert (the shipped rules' and the ones heartbeatd pushes) has a runbook entry, and
//!   every rule's `runbook_url` points at it;
//! - every configuration key (from the `Settings` and `AgentInfo` types), every environment
//!   variable, every single-value default and every numeric key's bounds are in
//!   `docs/configuration.md` or `docs/supervision.md`, no documented key is unknown to the
//!   code, and the reload table names exactly the keys a SIGHUP applies;
//! - every route registered in `src/routes/mod.rs` is in `docs/http-api.md`'s endpoint table,
//!   and that table names no route the code lacks; every field and metric family a running
//!   daemon answers is described there;
//! - every exit code in the code is in the exit-code table of its program;
//! - every flag and command of `heartbeatd` and `heartbeatd ctl` is documented;
//! - every link between the pages resolves (file and anchor) and stays inside the repository,
//!   and every `make` target the pages name exists.
//!
//! | file | checks |
//! |---|---|
//! | `runbook.rs` | log lines and alerts against `docs/runbook.md` and the rules |
//! | `configuration.rs` | keys, variables, defaults, bounds, reload |
//! | `interfaces.rs` | routes, answers, exit codes, the command line |
//! | `links.rs` | links and `make` targets |
//! | `rust_source.rs`, `markdown.rs` | reading the code and the pages |

mod configuration;
mod interfaces;
mod links;
mod markdown;
mod runbook;
mod rust_source;
