//! `heartbeatd completions SHELL` and `heartbeatd man --out DIR` on the real binary: each
//! script names ctl's commands and none of the hidden ones, bash's completes them, and every
//! man page renders through groff without a warning.

use std::path::Path;
use std::process::{Command, Output};

use clap::CommandFactory;

use crate::daemon::BIN;

/// ctl's commands, as a user types them after `heartbeatd ctl`: read from the clap
/// definitions, so a command added to ctl must get its completion and its page.
fn ctl_commands() -> Vec<String> {
    let cli = heartbeatd::cli::Cli::command();
    let ctl = cli.find_subcommand("ctl").expect("a ctl subcommand");
    let commands: Vec<String> = ctl
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_owned())
        .collect();
    assert!(commands.len() >= 7, "{commands:?}");
    commands
}

fn heartbeatd(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn each_shell_gets_a_script_naming_ctl_commands_and_no_hidden_ones() {
    for shell in ["bash", "zsh", "fish"] {
        let out = heartbeatd(&["completions", shell]);
        let script = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(script.len() > 1000, "{shell}: {script}");
        for command in ctl_commands()
            .iter()
            .map(String::as_str)
            .chain(["check-config", "ctl", "completions"])
        {
            assert!(script.contains(command), "{shell} script does not name {command}");
        }
        // The keeper and the man-page writer are hidden: not offered to a user.
        for hidden in ["keep", "man"] {
            let offered = script
                .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
                .any(|word| word == hidden);
            assert!(!offered, "{shell} script offers the hidden {hidden}");
        }
    }
}

#[test]
fn bash_completes_ctl_commands() {
    let out = heartbeatd(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("heartbeatd.bash");
    std::fs::write(&script, &out.stdout).unwrap();

    // What bash-completion does on `heartbeatd ctl st<TAB>` and `heartbeatd ctl <TAB>`.
    let complete = |words: &str, current: usize| {
        let shell = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={current}; _heartbeatd heartbeatd \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash").args(["--norc", "-c", &shell]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };

    assert_eq!(complete("heartbeatd ctl st", 2), "status start stop");
    let all: Vec<String> = complete("heartbeatd ctl ''", 2).split(' ').map(str::to_owned).collect();
    for command in ctl_commands() {
        assert!(all.contains(&command), "{command} not offered: {all:?}");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = heartbeatd(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcsh"));
}

#[test]
fn man_pages_cover_every_command_and_render_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let out = heartbeatd(&["man", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());

    let mut pages: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    let mut expected: Vec<String> = [
        "heartbeatd",
        "heartbeatd-check-config",
        "heartbeatd-completions",
        "heartbeatd-ctl",
    ]
    .iter()
    .map(|p| format!("{p}.1"))
    .chain(ctl_commands().iter().map(|c| format!("heartbeatd-ctl-{c}.1")))
    .collect();
    expected.sort();
    assert_eq!(pages, expected);

    for page in &pages {
        let text = render(&out_dir.join(page));
        assert!(text.contains("EXIT STATUS"), "{page}: {text}");
    }
    let main = render(&out_dir.join("heartbeatd.1"));
    for command in [
        "heartbeatd-check-config(1)",
        "heartbeatd-ctl(1)",
        "heartbeatd-completions(1)",
    ] {
        assert!(main.contains(command), "{command} not in heartbeatd(1): {main}");
    }
    assert!(main.contains("/etc/heartbeatd/heartbeatd.toml"), "{main}");
    let ctl = render(&out_dir.join("heartbeatd-ctl.1"));
    for command in ctl_commands() {
        assert!(
            ctl.contains(&format!("heartbeatd-ctl-{command}(1)")),
            "{command} not in heartbeatd-ctl(1): {ctl}"
        );
    }
    // ctl's own exit code for an unreachable daemon, which the daemon's page does not have.
    assert!(ctl.contains("cannot be reached"), "{ctl}");
}

#[test]
fn groff_reports_a_broken_page() {
    // The check above can fail: groff -ww warns about a macro that does not exist.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.1");
    std::fs::write(&page, ".TH BROKEN 1\n.SH NAME\n.XQ undefined macro\n").unwrap();
    let out = groff(&page);
    assert!(!out.stderr.is_empty(), "groff said nothing about an undefined macro");
}

/// The page as text, asserting groff printed no warning.
fn render(page: &Path) -> String {
    let out = groff(page);
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.is_empty(),
        "{}: {warnings}",
        page.display()
    );
    // Plain text: no overstrike for bold, no hyphenation at line ends.
    String::from_utf8(out.stdout).unwrap()
}

/// groff with the man macros and every warning on (`-ww`), to plain ASCII text (`-Tascii`,
/// `-P-cbou`: no escape sequences) with hyphenation off (`-rHY=0`) and a wide line (`-rLL=200n`),
/// so that what the page says can be searched for.
fn groff(page: &Path) -> Output {
    Command::new("groff")
        .args(["-man", "-ww", "-Tascii", "-P-cbou", "-rHY=0", "-rLL=200n"])
        .arg(page)
        .output()
        .expect("groff (Debian's groff-base; make test-tools installs it)")
}
