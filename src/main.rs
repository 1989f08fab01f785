//! The `heartbeatd` binary: parse the command line and hand over to [`heartbeatd::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    heartbeatd::cli::run(heartbeatd::cli::Cli::parse())
}
