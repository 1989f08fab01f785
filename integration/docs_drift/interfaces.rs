//! The interfaces against their docs: the routes of `src/routes/mod.rs` and
//! `docs/http-api.md`, the exit codes of every program and their tables, and the clap
//! definitions of `heartbeatd` and `heartbeatd ctl`.

use std::collections::BTreeSet;

use clap::CommandFactory;

use super::markdown::{code_spans, table_rows, Page};
use super::rust_source::{file, sources, Token, CODE};

/// (method, path) of every route registered in `src/routes/mod.rs`.
fn routes() -> BTreeSet<(String, String)> {
    let sources = sources(&["src/routes"]);
    let t = &file(&sources, "src/routes/mod.rs").tokens;
    let method = |i: usize| match (&t[i].0, &t[i + 1].0, &t[i + 2].0, &t[i + 3].0) {
        (Token::Ident(web), Token::Punct(':'), Token::Punct(':'), Token::Ident(m)) if web == "web" => {
            ["get", "post", "put", "patch", "delete", "head"]
                .contains(&m.as_str())
                .then(|| m.to_uppercase())
        }
        _ => None,
    };
    let mut routes = BTreeSet::new();
    let mut resource = None;
    for i in 0..t.len().saturating_sub(6) {
        match (&t[i].0, &t[i + 1].0, &t[i + 2].0) {
            (Token::Ident(f), Token::Punct('('), Token::Str(path)) if f == "resource" => resource = Some(path.clone()),
            (Token::Ident(f), Token::Punct('('), Token::Str(path)) if f == "route" => {
                routes.extend(method(i + 4).map(|m| (m, path.clone())));
            }
            (Token::Ident(f), Token::Punct('('), _) if f == "route" => {
                if let (Some(m), Some(path)) = (method(i + 2), &resource) {
                    routes.insert((m, path.clone()));
                }
            }
            _ => {}
        }
    }
    routes
}

#[test]
fn every_route_is_in_the_endpoint_table_and_every_row_is_a_route() {
    let api = Page::read("docs/http-api.md");
    let routes = routes();
    assert!(
        routes.contains(&("GET".into(), "/agents/{id}/log".into())),
        "{routes:?}"
    );
    assert!(routes.contains(&("HEAD".into(), "/healthz".into())), "{routes:?}");
    let documented: BTreeSet<(String, String)> = table_rows(&api.section("endpoints"))
        .iter()
        .filter_map(|row| code_spans(&row[0]).into_iter().next())
        .filter_map(|span| span.split_once(' ').map(|(m, p)| (m.to_owned(), p.to_owned())))
        .collect();
    let missing: Vec<_> = routes.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&routes).collect();
    assert!(missing.is_empty(), "docs/http-api.md#endpoints lacks {missing:?}");
    assert!(
        unknown.is_empty(),
        "docs/http-api.md#endpoints names routes the code lacks: {unknown:?}"
    );
}

/// Where the exit codes of each program are documented: (source path prefix, page, anchor).
const EXIT_CODE_TABLES: [(&str, &str, &str); 4] = [
    ("src/ctl/", "docs/supervision.md", "exit-codes-of-heartbeatd-ctl"),
    ("src/", "docs/operations.md", "exit-codes"),
    ("keeper/src/", "docs/architecture.md", "exit-codes-of-the-keeper"),
    (
        "bench/src/bin/heartbeatd-load.rs",
        "docs/performance.md",
        "exit-codes-of-heartbeatd-load",
    ),
];

/// (file, code) of every exit code the code names: `const EXIT_…: u8 = N`,
/// `ExitCode::from(N)`, `ExitCode::SUCCESS`, `process::exit(N)`.
fn exit_codes() -> Vec<(String, String)> {
    let mut codes = Vec::new();
    for source in sources(&CODE) {
        let t: Vec<&Token> = source.tokens.iter().map(|(t, _)| t).collect();
        for i in 0..t.len().saturating_sub(6) {
            let code = match (t[i], t[i + 1], t[i + 2], t[i + 3], t[i + 4], t[i + 5]) {
                (
                    Token::Ident(k),
                    Token::Ident(name),
                    Token::Punct(':'),
                    Token::Ident(ty),
                    Token::Punct('='),
                    Token::Number(n),
                ) if k == "const" && name.starts_with("EXIT_") && ty == "u8" => Some(n.clone()),
                (
                    Token::Ident(e),
                    Token::Punct(':'),
                    Token::Punct(':'),
                    Token::Ident(f),
                    Token::Punct('('),
                    Token::Number(n),
                ) if (e == "ExitCode" && f == "from") || (e == "process" && f == "exit") => Some(n.clone()),
                (Token::Ident(e), Token::Punct(':'), Token::Punct(':'), Token::Ident(f), _, _)
                    if e == "ExitCode" && f == "SUCCESS" =>
                {
                    Some("0".to_owned())
                }
                _ => None,
            };
            codes.extend(code.map(|c| (source.path.clone(), c)));
        }
    }
    codes
}

#[test]
fn every_exit_code_is_in_the_table_of_its_program() {
    let codes = exit_codes();
    assert!(
        codes.iter().any(|(f, c)| f == "src/ctl/mod.rs" && c == "3"),
        "{codes:?}"
    );
    for (path, code) in codes {
        let (_, page, anchor) = EXIT_CODE_TABLES
            .iter()
            .find(|(prefix, _, _)| path.starts_with(prefix))
            .unwrap_or_else(|| {
                panic!("{path} has exit code {code}: add where its exit codes are documented to EXIT_CODE_TABLES")
            });
        let rows = table_rows(&Page::read(page).section(anchor));
        assert!(
            rows.iter()
                .any(|row| row[0] == code || code_spans(&row[0]) == [code.clone()]),
            "{page}#{anchor} has no row for exit code {code} (of {path})"
        );
    }
}

#[test]
fn every_flag_and_command_of_heartbeatd_and_ctl_is_documented() {
    let operations = Page::read("docs/operations.md");
    let ctl = Page::read("docs/supervision.md").section("heartbeatd-ctl");
    let cli = heartbeatd::cli::Cli::command();
    for arg in cli.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(long) = arg.get_long() {
            assert!(
                operations.text.contains(&format!("`--{long}")),
                "docs/operations.md lacks --{long}"
            );
        }
    }
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        assert!(
            operations.text.contains(&format!("`{} ", sub.get_name()))
                || operations.text.contains(&format!("`{}`", sub.get_name())),
            "docs/operations.md lacks the command {}",
            sub.get_name()
        );
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set() && !a.is_global_set()) {
            if let Some(long) = arg.get_long() {
                let page = if sub.get_name() == "ctl" {
                    &ctl
                } else {
                    &operations.text
                };
                assert!(
                    page.contains(&format!("--{long}")),
                    "{} --{long} is not documented",
                    sub.get_name()
                );
            }
        }
    }
    let ctl_command = cli.find_subcommand("ctl").unwrap();
    let rows = table_rows(&ctl);
    for command in ctl_command.get_subcommands() {
        let name = command.get_name();
        assert!(
            rows.iter().any(|row| code_spans(&row[0])
                .iter()
                .any(|s| s == name || s.starts_with(&format!("{name} ")))),
            "docs/supervision.md#heartbeatd-ctl has no row for `ctl {name}`"
        );
        for arg in command.get_arguments() {
            for flag in arg
                .get_long()
                .map(|l| format!("--{l}"))
                .into_iter()
                .chain(arg.get_short().map(|s| format!("-{s}")))
            {
                assert!(
                    ctl.contains(&flag),
                    "docs/supervision.md#heartbeatd-ctl lacks `ctl {name} {flag}`"
                );
            }
        }
    }
}

/// The names in the first column of the tables of `text`, each code span cut at `{` (a
/// metric's labels) and at a space.
fn first_column_names(text: &str) -> BTreeSet<String> {
    table_rows(text)
        .iter()
        .flat_map(|row| code_spans(&row[0]))
        .map(|span| span.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn every_field_and_series_the_daemon_answers_is_documented() {
    // Arrange: a daemon with a passive agent that reported and a supervised one that runs.
    let mut daemon = crate::daemon::Daemon::start(
        "[[agents]]\nid = \"passive\"\n\n[[agents]]\nid = \"runner\"\ncommand = [\"/bin/sleep\", \"3600\"]\nheartbeats = false\n",
    );
    assert_eq!(
        daemon.post_heartbeat(&crate::daemon::heartbeat("passive", 1)).status,
        200
    );
    daemon.wait_processed(1);
    let api = Page::read("docs/http-api.md");

    // The stats: every field in the table of GET /heartbeat/stats.
    let stats = daemon.stats();
    let documented = first_column_names(&api.section("get-heartbeatstats"));
    for key in stats.as_object().unwrap().keys() {
        assert!(
            documented.contains(key),
            "docs/http-api.md#get-heartbeatstats lacks `{key}`: {stats}"
        );
    }

    // An agent: every field in the Admin API's description of one.
    let admin = api.section("admin-api-agents");
    for id in ["passive", "runner"] {
        let agent = daemon.request("GET", &format!("/agents/{id}"), None).body;
        for key in agent.as_object().unwrap().keys() {
            assert!(
                admin.contains(&format!("\"{key}\"")),
                "docs/http-api.md#admin-api-agents lacks `{key}`: {agent}"
            );
        }
        for key in agent["process"]
            .as_object()
            .map(|p| p.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            assert!(
                admin.contains(&format!("\"{key}\"")),
                "docs/http-api.md#admin-api-agents lacks process `{key}`: {agent}"
            );
        }
    }

    // /metrics: every heartbeatd_ family in the table of GET /metrics.
    let text = daemon
        .request("GET", "/metrics", None)
        .body
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let documented = first_column_names(&api.section("prometheus-get-metrics"));
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .filter(|name| name.starts_with("heartbeatd_"))
        .collect();
    assert!(families.len() >= 20, "{text}");
    for family in families {
        assert!(
            documented.contains(family),
            "docs/http-api.md#prometheus-get-metrics lacks {family}"
        );
    }
    assert_eq!(daemon.stop_with("TERM").code(), Some(0));
}
