//! heartbeatd's side of the keeper, the small process between heartbeatd and each supervised
//! agent's tree. The keeper itself, and the protocol both sides speak, are the
//! `heartbeatd-keep` crate (`keeper/` at the top of the workspace; its documentation says
//! what a keeper does): one definition, used here and built into the `heartbeatd-keep`
//! binary.
//!
//! | module | what |
//! |---|---|
//! | [`spawn`] | which program runs as a keeper (`heartbeatd-keep` beside heartbeatd, or heartbeatd's own binary as the fallback), and starting one |
//! | [`protocol`] | the spec, the signals and the report lines (heartbeatd-keep's) |
//! | [`rendezvous`] | adoption's words: the socket under `data_dir/run/`, the hello, the handshake (heartbeatd-keep's; heartbeatd's side of adoption is [`crate::supervision::adoption`]) |

pub mod spawn;

pub use heartbeatd_keep::protocol::{
    self, KeeperLine, KeeperSpec, KEEPER_BINARY, KILL_NOW, SPEC_ENV, STOP, SUBCOMMAND,
};
pub use heartbeatd_keep::{rendezvous, run};
pub use spawn::{keeper_path, keeper_program, spawn_keeper, KeeperProgram, SpawnedKeeper};
