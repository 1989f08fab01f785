//! `heartbeatd-load`: see [`heartbeatd_bench::load`].

use std::process::ExitCode;

use clap::Parser;
use heartbeatd_bench::load::{self, args::LoadArgs};

fn main() -> ExitCode {
    let args = LoadArgs::parse();
    if args.print_agents_config {
        print!("{}", load::agents_config(args.agents));
        return ExitCode::SUCCESS;
    }
    match load::run::run(&args) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serialises"));
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("heartbeatd-load: {e}");
            ExitCode::from(1)
        }
    }
}
