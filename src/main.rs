//! The `heartbeatd` binary: parse the command line and hand over to [`heartbeatd::cli`].

use std::process::ExitCode;

use clap::Parser;

#[actix_web::main]
async fn main() -> ExitCode {
    heartbeatd::cli::run(heartbeatd::cli::Cli::parse()).await
}
