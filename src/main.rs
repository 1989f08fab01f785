//! The `heartbeatd` binary: parse the command line and hand over to [`heartbeatd::cli`].

use std::process::ExitCode;

use clap::Parser;
use heartbeatd_actors::supervision::keeper;

fn main() -> ExitCode {
    // A keeper runs beside every supervised agent: it skips the command-line parser, whose
    // description of every subcommand would cost each keeper memory for nothing.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == keeper::SUBCOMMAND) {
        return keeper::run();
    }
    heartbeatd::cli::run(heartbeatd::cli::Cli::parse())
}
