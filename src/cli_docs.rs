//! Man pages and shell completions, generated from the clap definitions in [`crate::cli`], so
//! that they cannot drift from the flags the binary accepts.
//!
//! - `heartbeatd completions bash|zsh|fish|elvish|powershell` prints a completion script.
//! - `heartbeatd man --out DIR` (hidden) writes `heartbeatd.1` and one page per subcommand
//!   (`heartbeatd-ctl.1`, `heartbeatd-ctl-status.1`, …), each with its EXIT STATUS; `make
//!   install` and `make deb` run it.
//!
//! Why the binary writes its own pages rather than a `build.rs`: the command line is defined
//! in `src/cli.rs` and `src/ctl/`, which a build script could only reach by compiling them a
//! second time (with the settings and actors crates they name); and pages written by the
//! installed binary always describe that binary, whatever profile or features built it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};

use crate::cli::{Cli, EXIT_CONFIG, EXIT_RUNTIME};
use crate::ctl::{EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE};

/// The name every page and completion script uses for the program.
const BIN_NAME: &str = "heartbeatd";

/// The completion script for `shell`, as bytes (written whole by the caller, so a closed pipe
/// is an error and not a panic inside the generator).
pub fn completion_script(shell: Shell) -> Vec<u8> {
    let mut command = visible_command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, BIN_NAME, &mut script);
    script
}

/// The command line without its hidden subcommands (`keep`, `man`): clap_complete offers
/// every subcommand it is given, hidden or not, and clap has no way to remove one, so the root
/// is put together again from `Cli`'s own arguments and visible subcommands (nothing is
/// restated, so it cannot drift from `Cli`).
fn visible_command() -> clap::Command {
    let cli = Cli::command();
    let mut root = clap::Command::new(BIN_NAME)
        .version(env!("CARGO_PKG_VERSION"))
        .args(cli.get_arguments().cloned())
        .subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = cli.get_about() {
        root = root.about(about.clone());
    }
    root
}

/// Writes the man pages into `dir` (created if missing); returns the files written.
pub fn write_man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (file_name, page) in man_pages() {
        let path = dir.join(file_name);
        std::fs::write(&path, page)?;
        written.push(path);
    }
    Ok(written)
}

/// Every page as (file name, roff text): heartbeatd(1) and one per visible subcommand, at any
/// depth. The hidden `keep` and `man` have none.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let date = page_date(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref());
    let mut root = Cli::command().disable_help_subcommand(true);
    // Sets each subcommand's display name (heartbeatd-ctl-status) and bin name
    // (heartbeatd ctl status), which the pages' titles and synopses use.
    root.build();
    let mut pages = Vec::new();
    collect(&root, &date, &mut pages);
    pages
}

/// The date in each page's title line: `SOURCE_DATE_EPOCH` when set (reproducible builds),
/// else today. Without one, man would show the version where the date goes.
fn page_date(source_date_epoch: Option<&str>) -> String {
    let epoch = source_date_epoch.and_then(|s| s.trim().parse::<i64>().ok());
    let when = epoch
        .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
        .unwrap_or_else(chrono::Utc::now);
    when.format("%Y-%m-%d").to_string()
}

fn collect(command: &clap::Command, date: &str, pages: &mut Vec<(String, Vec<u8>)>) {
    pages.push(render(command, date));
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, date, pages);
    }
}

fn render(command: &clap::Command, date: &str) -> (String, Vec<u8>) {
    let name = command.get_display_name().unwrap_or(BIN_NAME).to_owned();
    let man = clap_mangen::Man::new(command.clone())
        .title(name.to_uppercase())
        .date(date)
        .source(format!("heartbeatd {}", env!("CARGO_PKG_VERSION")))
        .manual("heartbeatd manual");
    let mut page = Vec::new();
    man.render(&mut page).expect("rendering into memory cannot fail");
    let mut extra = Vec::new();
    sections(&name)
        .to_writer(&mut extra)
        .expect("rendering into memory cannot fail");
    // The sections go before VERSION, where man-pages(7) puts them.
    let text = String::from_utf8(page).expect("clap_mangen writes UTF-8");
    let at = text.find("\n.SH VERSION").map_or(text.len(), |i| i + 1);
    let mut out = text.as_bytes()[..at].to_vec();
    out.extend_from_slice(&extra);
    out.extend_from_slice(&text.as_bytes()[at..]);
    (format!("{name}.1"), out)
}

/// EXIT STATUS, FILES (on heartbeatd(1)) and SEE ALSO for the page of `name`.
fn sections(name: &str) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit_statuses(name) {
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(*meaning)]);
    }
    if name == BIN_NAME {
        roff.control("SH", ["FILES"]);
        for (path, role) in FILES {
            roff.control("TP", []);
            roff.text([bold(*path)]);
            roff.text([roman(*role)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    let see_also = if name == BIN_NAME {
        "heartbeatd-check-config(1), heartbeatd-ctl(1), heartbeatd-completions(1), systemctl(1), systemd.exec(5)"
    } else {
        "heartbeatd(1)"
    };
    roff.text([roman(see_also)]);
    roff.control("PP", []);
    roff.text([roman(
        "The user manual: README.md in the source tree, or /usr/share/doc/heartbeatd/ where installed.",
    )]);
    roff
}

/// The files an installed heartbeatd uses (`make install PREFIX=/usr` and the .deb).
const FILES: &[(&str, &str)] = &[
    (
        "/etc/heartbeatd/heartbeatd.toml",
        "The configuration the systemd unit starts heartbeatd with (check a change with heartbeatd check-config FILE).",
    ),
    (
        "/etc/heartbeatd/env",
        "Optional; HEARTBEATD_ADMIN_TOKEN=... and HEARTBEATD_INGEST_TOKEN=... for the unit, to keep tokens out of the configuration.",
    ),
    (
        "/var/lib/heartbeatd",
        "data_dir under the unit (mode 0700): journal, agents' state and history, events, output logs, and the control socket heartbeatd.sock.",
    ),
    (
        "/usr/lib/systemd/system/heartbeatd.service",
        "The unit (under /usr/local/lib with the default PREFIX); relax its sandbox with systemctl edit heartbeatd.",
    ),
];

/// The exit codes of the command whose page is `name`: the numbers are the constants the
/// commands return, so the pages follow them.
fn exit_statuses(name: &str) -> &'static [(u8, &'static str)] {
    const DAEMON: &[(u8, &str)] = &[
        (0, "Stopped gracefully: every accepted heartbeat is processed and on disk."),
        (
            EXIT_RUNTIME,
            "Could not start (port in use, unusable data_dir, unreadable agent state), or the graceful stop did not finish within shutdown_timeout_s.",
        ),
        (
            EXIT_CONFIG,
            "Configuration or usage error; nothing was started (the unit does not restart after it).",
        ),
    ];
    const CHECK_CONFIG: &[(u8, &str)] = &[
        (0, "The configuration is valid (and was printed, without --quiet)."),
        (EXIT_RUNTIME, "The configuration could not be printed."),
        (EXIT_CONFIG, "The configuration is invalid; the error names the key."),
    ];
    const CTL: &[(u8, &str)] = &[
        (0, "Done."),
        (EXIT_REFUSED, "Refused or not found (the daemon's message is printed)."),
        (
            EXIT_USAGE,
            "Usage error (unknown command, bad id or URL, unreadable --ca, invalid --config).",
        ),
        (
            EXIT_UNREACHABLE,
            "heartbeatd cannot be reached, or its certificate is not trusted.",
        ),
    ];
    const PRINTS: &[(u8, &str)] = &[
        (0, "The script was printed."),
        (EXIT_RUNTIME, "It could not be written to standard output."),
        (EXIT_CONFIG, "Usage error (an unknown shell)."),
    ];
    match name {
        BIN_NAME => DAEMON,
        "heartbeatd-check-config" => CHECK_CONFIG,
        "heartbeatd-completions" => PRINTS,
        ctl if ctl.starts_with("heartbeatd-ctl") => CTL,
        other => unreachable!("a page without exit statuses: {other}"),
    }
}

/// `heartbeatd completions SHELL`: the script on stdout; 1 if it cannot be written.
pub fn print_completions(shell: Shell) -> std::process::ExitCode {
    let script = completion_script(shell);
    let mut stdout = io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heartbeatd: could not write the completion script: {e}");
            std::process::ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `heartbeatd man --out DIR`: the pages into DIR, nothing on stdout; 1 if one cannot be written.
pub fn write_man_pages_command(dir: &Path) -> std::process::ExitCode {
    match write_man_pages(dir) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "heartbeatd: could not write the man pages into {}: {e}. Give a directory this user can write",
                dir.display()
            );
            std::process::ExitCode::from(EXIT_RUNTIME)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_title_line_carries_the_date_from_source_date_epoch() {
        // 2026-01-02T03:04:05Z
        assert_eq!(page_date(Some("1767323045")), "2026-01-02");
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        assert_eq!(page_date(None).len(), today.len());
    }

    #[test]
    fn every_visible_command_has_a_page_and_the_hidden_ones_none() {
        let names: Vec<String> = man_pages().into_iter().map(|(name, _)| name).collect();
        for expected in [
            "heartbeatd.1",
            "heartbeatd-check-config.1",
            "heartbeatd-completions.1",
            "heartbeatd-ctl.1",
            "heartbeatd-ctl-status.1",
            "heartbeatd-ctl-start.1",
            "heartbeatd-ctl-stop.1",
            "heartbeatd-ctl-restart.1",
            "heartbeatd-ctl-pause.1",
            "heartbeatd-ctl-resume.1",
            "heartbeatd-ctl-tail.1",
        ] {
            assert!(
                names.contains(&expected.to_owned()),
                "{expected} missing from {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.contains("keep") || n.contains("-man")),
            "{names:?}"
        );
    }

    #[test]
    fn each_page_states_its_exit_codes_before_version() {
        for (name, page) in man_pages() {
            let text = String::from_utf8(page).unwrap();
            let exit = text
                .find(".SH \"EXIT STATUS\"")
                .unwrap_or_else(|| panic!("{name}: {text}"));
            // Only heartbeatd(1) has a VERSION section (subcommands have no --version).
            if let Some(version) = text.find(".SH VERSION") {
                assert!(exit < version, "{name}");
            }
        }
        let main = man_pages().into_iter().find(|(n, _)| n == "heartbeatd.1").unwrap().1;
        assert!(String::from_utf8(main).unwrap().contains(".SH VERSION"));
        let ctl = man_pages()
            .into_iter()
            .find(|(n, _)| n == "heartbeatd-ctl.1")
            .unwrap()
            .1;
        let ctl = String::from_utf8(ctl).unwrap();
        assert!(ctl.contains("cannot be reached"), "{ctl}");
    }
}
