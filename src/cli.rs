//! The command line: `heartbeatd [--config FILE] [--http-port N] [--data-dir DIR]` runs the
//! daemon; `heartbeatd check-config FILE` prints the effective configuration or the error;
//! `heartbeatd ctl …` is the admin client ([`crate::ctl`]); `heartbeatd completions SHELL`
//! prints a shell completion script and `heartbeatd man --out DIR` (hidden) writes the man
//! pages ([`crate::cli_docs`]); `heartbeatd keep ID` (hidden) is a supervised agent's keeper
//! when `heartbeatd-keep` is missing beside heartbeatd.
//!
//! Exit codes: 0 success (a stop that drained, or a hand-over to an upgrade); 1 runtime
//! failure (port in use, data_dir in use by another heartbeatd or unusable, drain not
//! finished in time); 2 configuration or usage error (including sockets handed over that
//! cannot be served).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueHint};
use slog::{crit, warn};

use crate::reload::ReloadSource;
use crate::server::inherited::Inherited;
use crate::settings::{self, Loaded, Overrides, SettingsError};
use crate::startup::{Application, Handed, StartupError};
use crate::telemetry;
use crate::tls::{self, TlsError};
use crate::upgrade::predecessor::Predecessor;
use crate::upgrade::successor::Launch;

/// Exit code for a configuration or usage error (clap uses 2 for usage errors too).
pub(crate) const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure at run time.
pub(crate) const EXIT_RUNTIME: u8 = 1;

/// heartbeatd: receives agent heartbeats over HTTP and keeps each agent's state on disk.
#[derive(Debug, Parser)]
#[command(
    name = "heartbeatd",
    version,
    about = "Receive agent heartbeats over HTTP, keep each agent's state on disk, and supervise agents' programs",
    long_about = "Receive agent heartbeats over HTTP, keep each agent's state on disk, and supervise agents' programs.\n\nWithout a subcommand, heartbeatd runs the daemon on the configuration given with --config (under systemd: /etc/heartbeatd/heartbeatd.toml); SIGTERM or SIGINT stop it gracefully, SIGHUP reloads the configuration."
)]
pub struct Cli {
    /// TOML configuration file (see configs/heartbeatd.toml).
    #[arg(long, short = 'c', value_name = "FILE", global = true, value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// HTTP port; overrides http_port from the file and HEARTBEATD_HTTP_PORT.
    #[arg(long, value_name = "N", global = true)]
    pub http_port: Option<u16>,
    /// Data directory; overrides data_dir from the file and HEARTBEATD_DATA_DIR.
    #[arg(long, value_name = "DIR", global = true, value_hint = ValueHint::DirPath)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration (defaults, file, environment and flags applied) as
    /// TOML and exit 0, or print the error and exit 2.
    CheckConfig {
        /// The configuration file to check.
        #[arg(value_hint = ValueHint::FilePath)]
        file: PathBuf,
        /// Print nothing but errors (for a unit's ExecStartPre).
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Control supervised agents through the admin API (status, start, stop, restart, pause,
    /// resume, tail).
    Ctl(crate::ctl::CtlArgs),
    /// Print a shell completion script to standard output (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (heartbeatd.1 and one per subcommand) into a directory (make install
    /// and make deb run it).
    #[command(hide = true)]
    Man {
        /// The directory to write into (created if missing).
        #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
        out: PathBuf,
    },
    /// The keeper of one supervised agent (started by heartbeatd itself; not for use by hand).
    #[command(hide = true)]
    Keep {
        /// The agent it keeps.
        agent_id: String,
    },
}

impl Cli {
    fn overrides(&self) -> Overrides {
        Overrides {
            http_port: self.http_port,
            data_dir: self.data_dir.clone(),
        }
    }
}

/// Runs the command the user asked for and returns the process exit code. The daemon runs
/// in an actix system; the keeper and `ctl` are plain programs and start no runtime (a keeper
/// runs beside every supervised agent, so it must stay small).
pub fn run(cli: Cli) -> ExitCode {
    let overrides = cli.overrides();
    match cli.command {
        Some(Command::Keep { .. }) => heartbeatd_actors::supervision::keeper::run(),
        Some(Command::Ctl(args)) => crate::ctl::run(args, cli.config, overrides),
        Some(Command::Completions { shell }) => crate::cli_docs::print_completions(shell),
        Some(Command::Man { ref out }) => crate::cli_docs::write_man_pages_command(out),
        Some(Command::CheckConfig { ref file, quiet }) => check_config(load(Some(file.clone()), &cli), quiet),
        None => {
            limit_malloc_arenas();
            match take_handed() {
                Ok(handed) => run_daemon_system(cli, handed),
                Err(message) => {
                    eprintln!("heartbeatd: {message}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
    }
}

/// What the process was handed besides its configuration: sockets (systemd, an upgrade), the
/// heartbeatd it replaces, and its own binary's path. Read here, before any thread starts,
/// because the variables are removed from the environment (keepers and programs must not
/// see them).
fn take_handed() -> Result<Handed, String> {
    let sockets = Inherited::take_from_env().map_err(|e| e.to_string())?;
    let predecessor = Predecessor::take_from_env().map_err(|e| e.to_string())?;
    Ok(Handed {
        sockets,
        predecessor,
        launch: Launch::of_this_process().ok(),
    })
}

/// At most two malloc arenas (glibc's default is 8 per core: 16 on two cores). Memory freed by
/// one of heartbeatd's many threads is then reused by the others instead of sitting in an
/// arena of its own: a 100k-agent fleet at 10k heartbeats/s kept 311 MiB resident with the
/// default, 259 MiB with two. Set before any thread starts; `MALLOC_ARENA_MAX` in the
/// environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[actix_web::main]
async fn run_daemon_system(cli: Cli, handed: Handed) -> ExitCode {
    run_daemon(load(cli.config.clone(), &cli), &cli, handed).await
}

/// A failed start is a runtime failure (1), except a certificate or key that cannot be used
/// (unreadable, not a regular file, too large, no PEM item, or a pair that does not belong
/// together): that is the configuration's fault, exactly what `check-config` reports with 2,
/// and no restart can mend it (systemd's unit does not restart after 2).
fn startup_exit_code(error: &StartupError) -> u8 {
    match error {
        StartupError::Tls(TlsError::Mismatch { .. } | TlsError::Cert { .. } | TlsError::Key { .. }) => EXIT_CONFIG,
        _ => EXIT_RUNTIME,
    }
}

fn load(file: Option<PathBuf>, cli: &Cli) -> Result<Loaded, SettingsError> {
    settings::load(file.as_deref(), std::env::vars(), &cli.overrides())
}

fn check_config(loaded: Result<Loaded, SettingsError>, quiet: bool) -> ExitCode {
    match loaded {
        Ok(loaded) => {
            for name in &loaded.ignored_env {
                eprintln!("heartbeatd: warning: {name} names no configuration key and is ignored");
            }
            // The certificate and key are read as the server would read them: a pair that
            // does not match (or a file that cannot be read) is caught before a start.
            if let Err(e) = tls::check_files(&loaded.settings) {
                eprintln!("heartbeatd: {e}. Fix tls_cert / tls_key (PEM files) or remove both to serve plain HTTP");
                return ExitCode::from(EXIT_CONFIG);
            }
            if quiet {
                return ExitCode::SUCCESS;
            }
            if loaded.settings.agents.iter().any(|agent| agent.command.is_some()) {
                say_which_keeper();
            }
            match loaded.settings.effective_toml() {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("heartbeatd: could not print the configuration: {e}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        Err(e) => {
            eprintln!("heartbeatd: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// On stderr (stdout is the configuration): the program that would keep supervised agents.
fn say_which_keeper() {
    use heartbeatd_actors::supervision::keeper::{keeper_program, KeeperProgram};
    match keeper_program() {
        KeeperProgram::Own(path) => eprintln!("heartbeatd: supervised agents will run under the keeper {}", path.display()),
        KeeperProgram::Fallback { expected, why } => eprintln!(
            "heartbeatd: warning: the keeper {} cannot be run ({why}); supervised agents would run under heartbeatd's own binary instead, at a higher memory cost. Install heartbeatd-keep beside heartbeatd",
            expected.display()
        ),
    }
}

async fn run_daemon(loaded: Result<Loaded, SettingsError>, cli: &Cli, handed: Handed) -> ExitCode {
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("heartbeatd: {e}");
            eprintln!(
                "heartbeatd: nothing was started; fix the configuration (check it with `heartbeatd check-config FILE`)"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let settings = loaded.settings;
    let (log, guard, level) = telemetry::build_logger(settings.log_level, settings.log_format);
    let source = ReloadSource {
        config: cli.config.clone(),
        overrides: cli.overrides(),
        level,
    };
    for name in &loaded.ignored_env {
        warn!(log, "environment variable names no configuration key and is ignored"; "variable" => name);
    }
    let code = match Application::build(settings, log.clone(), source, handed).await {
        Ok(app) => app.run_until_stopped().await.exit_code(),
        Err(e) => {
            crit!(log, "heartbeatd could not start"; "error" => %e);
            startup_exit_code(&e)
        }
    };
    drop(log);
    // Flushes the log thread so the last lines (start-up error, drain report) are written.
    drop(guard);
    // Exit here rather than by returning from main: returning drops the actix system with
    // its actors still registered (after a failed start-up, e.g. the Registry's timer), and
    // tokio panics when a dropped actor's timer is polled without a runtime. Everything that
    // matters is done: the drain finished, the store is flushed, the log is written.
    std::process::exit(i32::from(code))
}
