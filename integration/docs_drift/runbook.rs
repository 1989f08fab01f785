//! The runbook against the code: every `what_to_do` and every serious log message of the
//! code, every alert of the shipped rules and of heartbeatd itself, and each rule's
//! `runbook_url`.

use std::fs;

use super::markdown::{slug, Page};
use super::rust_source::{arguments, file, matching, root, sources, Source, Text, Token, CODE};

const RULES: &str = "configs/prometheus/heartbeatd.rules.yml";

/// One log line of the code.
#[derive(Debug)]
struct LogLine {
    at: String,
    level: String,
    /// `None` when the message is nothing but a value (`"{}", problem`).
    message: Option<Text>,
    what_to_do: Option<Text>,
    /// A `what_to_do` given as an expression, not a literal: resolved through [`INDIRECT`].
    what_to_do_expression: Option<String>,
}

/// The log lines of `sources`: every slog macro call.
fn log_lines(sources: &[Source]) -> Vec<LogLine> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "crit"];
    let mut lines = Vec::new();
    for source in sources {
        let t = &source.tokens;
        for i in 0..t.len().saturating_sub(2) {
            let (Token::Ident(level), line) = (&t[i].0, t[i].1) else {
                continue;
            };
            if !LEVELS.contains(&level.as_str()) || t[i + 1].0 != Token::Punct('!') || t[i + 2].0 != Token::Punct('(') {
                continue;
            }
            let parts = arguments(t, i + 2);
            let message = parts.get(1).and_then(|m| match m {
                [(Token::Str(s), _)] if !s.replace("{}", "").trim().is_empty() => Some(Text::Template(s.clone())),
                _ => None,
            });
            let mut what_to_do = None;
            let mut what_to_do_expression = None;
            for part in parts.iter().skip(2) {
                if let [(Token::Str(key), _), (Token::Punct('='), _), (Token::Punct('>'), _), value @ ..] = part {
                    if key == "what_to_do" {
                        what_to_do = Text::of_expression(value);
                        if what_to_do.is_none() {
                            what_to_do_expression = Some(expression(value));
                        }
                    }
                }
            }
            lines.push(LogLine {
                at: format!("{}:{line}", source.path),
                level: level.clone(),
                message,
                what_to_do,
                what_to_do_expression,
            });
        }
    }
    lines
}

/// An expression's tokens as one string, e.g. `&refusal.what_to_do`.
fn expression(tokens: &[(Token, usize)]) -> String {
    tokens
        .iter()
        .map(|(t, _)| match t {
            Token::Str(s) => format!("{s:?}"),
            Token::Ident(s) | Token::Number(s) => s.clone(),
            Token::Punct(c) => c.to_string(),
        })
        .collect()
}

/// What is wrong (when the code says it apart from the log message), and what to do.
type ProblemAndAction = (Option<Text>, Text);

/// A `what_to_do` that the log line takes from a value made elsewhere: where its texts are
/// made. A new kind of indirection fails the test until it is added here.
struct Indirect {
    /// The expression in the log line.
    expression: &'static str,
    /// The file of the log line.
    log_file: &'static str,
    /// The texts, read from the code that makes them: (what is wrong, what to do).
    texts: fn(&[Source]) -> Vec<ProblemAndAction>,
}

const INDIRECT: [Indirect; 2] = [
    Indirect {
        expression: "what_to_do",
        log_file: "src/routes/auth.rs",
        texts: gate_refusal_texts,
    },
    Indirect {
        expression: "&refusal.what_to_do",
        log_file: "actors/src/data_dir/mod.rs",
        texts: data_dir_refusal_texts,
    },
];

/// The gate's refusals: the literals of `let (gate, what_to_do) = match … { … }`.
fn gate_refusal_texts(sources: &[Source]) -> Vec<ProblemAndAction> {
    let t = &file(sources, "src/routes/auth.rs").tokens;
    let start = (0..t.len())
        .find(|&i| {
            t[i..].iter().take(7).map(|(t, _)| t).eq([
                Token::Ident("let".into()),
                Token::Punct('('),
                Token::Ident("gate".into()),
                Token::Punct(','),
                Token::Ident("what_to_do".into()),
                Token::Punct(')'),
                Token::Punct('='),
            ]
            .iter())
        })
        .expect("src/routes/auth.rs: `let (gate, what_to_do) = match` is gone; update INDIRECT");
    let open = (start..t.len()).find(|&i| t[i].0 == Token::Punct('{')).unwrap();
    let close = matching(t, open);
    t[open..close]
        .iter()
        .filter_map(|(t, _)| match t {
            Token::Str(s) => Some((None, Text::Literal(s.clone()))),
            _ => None,
        })
        .collect()
}

/// The data_dir refusals: (problem, what to do) of every `Self::new(path, problem, what_to_do)`.
fn data_dir_refusal_texts(sources: &[Source]) -> Vec<ProblemAndAction> {
    let t = &file(sources, "actors/src/data_dir/refusal.rs").tokens;
    let mut texts = Vec::new();
    for i in 0..t.len().saturating_sub(4) {
        let call = [
            Token::Ident("Self".into()),
            Token::Punct(':'),
            Token::Punct(':'),
            Token::Ident("new".into()),
        ];
        if t[i..i + 4].iter().map(|(t, _)| t).eq(call.iter()) && t[i + 4].0 == Token::Punct('(') {
            let args = arguments(t, i + 4);
            let text = |n: usize| {
                Text::of_expression(args[n]).unwrap_or_else(|| {
                    panic!(
                        "refusal.rs:{}: argument {n} of Self::new is not a literal or format!",
                        t[i].1
                    )
                })
            };
            texts.push((Some(text(1)), text(2)));
        }
    }
    texts
}

/// Every text the runbook must show, with where it comes from.
fn runbook_texts() -> Vec<(String, Text)> {
    let sources = sources(&CODE);
    let mut wanted = Vec::new();
    for line in log_lines(&sources) {
        let serious = ["warn", "error", "crit"].contains(&line.level.as_str());
        let has_action = line.what_to_do.is_some() || line.what_to_do_expression.is_some();
        if let Some(message) = line.message.clone().filter(|_| serious || has_action) {
            wanted.push((format!("{} (log message)", line.at), message));
        }
        if let Some(action) = line.what_to_do {
            wanted.push((format!("{} (what_to_do)", line.at), action));
        }
        if let Some(expression) = line.what_to_do_expression {
            let indirect = INDIRECT
                .iter()
                .find(|i| i.expression == expression && line.at.starts_with(&format!("{}:", i.log_file)))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: what_to_do is `{expression}`, not a literal: add to INDIRECT where its texts are made",
                        line.at
                    )
                });
            let texts = (indirect.texts)(&sources);
            assert!(!texts.is_empty(), "{}: found no texts for `{expression}`", line.at);
            for (problem, action) in texts {
                wanted.extend(problem.map(|p| (format!("{} (problem behind {expression})", line.at), p)));
                wanted.push((format!("{} ({expression})", line.at), action));
            }
        }
    }
    wanted
}

#[test]
fn every_what_to_do_and_every_serious_log_message_is_in_the_runbook() {
    let runbook = Page::read("docs/runbook.md");
    let wanted = runbook_texts();
    // The scan itself must work: it finds the log lines of the shutdown and the data_dir refusals.
    assert!(wanted.len() > 50, "too few texts found: {wanted:#?}");
    assert!(wanted
        .iter()
        .any(|(_, t)| t.as_str() == "check free space and permissions of data_dir"));
    assert!(wanted.iter().any(|(_, t)| t.as_str().starts_with("chmod go-w {}")));
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(_, text)| !runbook.shows(text))
        .map(|(at, text)| format!("{at}: {:?}", text.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/runbook.md lacks these texts of the code (a run-time value {{…}} is written <name>):\n{}",
        missing.join("\n")
    );
}

/// (alert name, its block of the rules file) for every alerting rule shipped.
fn shipped_rules() -> Vec<(String, String)> {
    let text = fs::read_to_string(root().join(RULES)).unwrap();
    let mut rules: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let item = line.trim_start().trim_start_matches("- ");
        if line.trim_start().starts_with("- ") {
            if let Some(name) = item.strip_prefix("alert:") {
                rules.push((name.trim().to_owned(), String::new()));
                continue;
            }
            if item.starts_with("record:") {
                rules.push((String::new(), String::new()));
                continue;
            }
        }
        if let Some((_, block)) = rules.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    rules.retain(|(name, _)| !name.is_empty());
    rules
}

/// The alerts heartbeatd pushes itself: the variants of `AlertName`.
fn pushed_alerts() -> Vec<String> {
    let sources = sources(&["actors/src/notify"]);
    let t = &file(&sources, "actors/src/notify/alerter.rs").tokens;
    let at = (0..t.len())
        .find(|&i| t[i].0 == Token::Ident("enum".into()) && t[i + 1].0 == Token::Ident("AlertName".into()))
        .expect("enum AlertName");
    arguments(t, at + 2)
        .into_iter()
        .filter_map(|variant| match variant {
            [(Token::Ident(name), _)] => Some(name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_a_runbook_entry_and_every_runbook_url_leads_to_it() {
    let runbook = Page::read("docs/runbook.md");
    let anchors = runbook.anchors();
    let rules = shipped_rules();
    let pushed = pushed_alerts();
    assert!(rules.len() >= 6 && pushed.len() >= 2, "{rules:?} {pushed:?}");
    for name in rules.iter().map(|(n, _)| n).chain(&pushed) {
        assert!(
            anchors.contains(&slug(name)),
            "docs/runbook.md has no heading `{name}` (anchor #{})",
            slug(name)
        );
    }
    for (name, block) in &rules {
        let url = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("runbook_url:"))
            .unwrap_or_else(|| panic!("{RULES}: {name} has no runbook_url annotation"))
            .trim()
            .trim_matches('"');
        let (path, anchor) = url.split_once('#').unwrap_or((url, ""));
        assert_eq!(path, "docs/runbook.md", "{name}: runbook_url {url}");
        assert_eq!(
            anchor,
            slug(name),
            "{name}: runbook_url {url} must lead to its own entry"
        );
    }
}
