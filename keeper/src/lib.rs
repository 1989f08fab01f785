//! The keeper: a small process between heartbeatd and each supervised agent, so that no
//! process of an agent's tree outlives heartbeatd, even after a SIGKILL of heartbeatd.
//!
//! ```text
//! heartbeatd ──spawns──▶ heartbeatd-keep <id>   (this crate's binary, next to heartbeatd's)
//!                          │ subreaper of the tree, PR_SET_PDEATHSIG = SIGUSR2
//!                          └──▶ the agent's command (own process group, PDEATHSIG = SIGKILL)
//!                                 └──▶ … its children, also those that call setsid()
//! ```
//!
//! One runs per supervised agent, so it is a program of its own, built small: no actix, no
//! serde, no clap, no slog (the protocol is a few lines of text), `panic = "abort"`,
//! `opt-level = "s"`, linked statically and not as a PIE (see docs/architecture.md, "The
//! keeper"). Where the binary is missing, heartbeatd runs the same code from its own binary
//! (`heartbeatd keep <id>`), which costs more memory per agent but supervises the same way.
//!
//! Why a keeper (in the style of s6-supervise and `tini -s`) and not a PID namespace: in a
//! namespace the agent would be pid 1, which ignores signals it has no handler for (a plain
//! program could not be stopped with SIGTERM) and reports pid 1 in its heartbeats; creating
//! one also needs privileges or user namespaces that many hosts disable.
//!
//! What the keeper does:
//! - it is the subreaper of the tree (`PR_SET_CHILD_SUBREAPER`): a grandchild whose parent
//!   died, or that left the group with `setsid`, is re-parented to it, so the tree is always
//!   "the keeper's descendants", found by walking `/proc`;
//! - it copies the agent's stdout and stderr into its output file, whole lines, buffered,
//!   rotated, within a CPU budget (see [`output`]);
//! - SIGTERM from heartbeatd: `stop_signal` to the agent's group and every descendant, then
//!   SIGKILL to every descendant after `stop_timeout`;
//! - SIGUSR1 from heartbeatd: SIGKILL to every descendant now;
//! - heartbeatd died (its PDEATHSIG, SIGUSR2, its pid is no longer the parent, or its end of
//!   the report pipe is closed): the stop signal, then SIGKILL after at most one second; with
//!   `adopt_timeout_s`, only once that has passed without a new heartbeatd adopting the tree
//!   (see [`adopt`]);
//! - when the agent's own process ends, what is left of its tree is stopped the same way: the
//!   tree lives and dies with the agent (run programs in the foreground, as under supervisord);
//! - it reaps every child, and reports the CPU they used (`/proc` no longer shows it);
//! - with `max_processes`, it counts the tree every [`run::COUNT_INTERVAL`] and kills it when
//!   it has more;
//! - it exits once no descendant is left.
//!
//! What it does not cover: a process that leaves the tree entirely (double-forks *and* is
//! re-parented above the keeper, which a subreaper prevents, or is started through another
//! daemon such as `systemd-run` or `at`) is not the agent's any more. A SIGKILL of the
//! keeper itself (not of heartbeatd) ends the agent (its PDEATHSIG) and leaves its
//! grandchildren to heartbeatd, which is a subreaper too and ends them when it finds them.
//!
//! | module | side | what |
//! |---|---|---|
//! | [`protocol`] | both | the spec, the signals and the report lines, parsed and written |
//! | [`spec_text`] | both | the spec as the few lines of text the keeper reads |
//! | [`run`] | keeper | its entry point, [`run()`], and its loop |
//! | [`tree`] | keeper | signalling, reaping (with the CPU used) and counting the tree |
//! | [`rendezvous`] | both | adoption's words: the socket under `data_dir/run/`, the hello, the handshake, the settings digest |
//! | [`adopt`] | keeper | outliving heartbeatd for `adopt_timeout_s` and being adopted by the next one |
//! | [`output`] | keeper | copying the output pipe into the output file, within a CPU budget |
//! | [`output_log`] | both | `data_dir/logs/<id>.log`: whole lines, buffered, rotated, opened again when removed |
//! | [`private_file`] | keeper | opening the output file: never through a link, private, refused if someone else could write it |
//! | [`procfs`] | both | reading `/proc`: process trees, CPU ticks, resident and proportional memory |
//!
//! heartbeatd's side (starting a keeper, reading its lines) is in heartbeatd-actors
//! (`supervision::keeper`).

pub mod adopt;
pub mod output;
pub mod output_log;
pub mod private_file;
pub mod procfs;
pub mod protocol;
pub mod rendezvous;
pub mod run;
pub mod spec_text;
pub mod tree;

pub use protocol::{KeeperLine, KeeperSpec, KEEPER_BINARY, KILL_NOW, SPEC_ENV, STOP, SUBCOMMAND};
pub use run::run;
