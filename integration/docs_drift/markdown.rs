//! Reading the docs as the test needs them: headings and their anchors (as GitHub makes them),
//! sections, table rows, links, and finding a text from the code in a page whatever the
//! line wrapping, with `<name>` where the code puts a run-time value.

use std::fs;
use std::path::Path;

use super::rust_source::{root, Text};

/// A Markdown page of the repository.
pub struct Page {
    /// The path relative to the repository root (`docs/runbook.md`).
    pub path: String,
    pub text: String,
}

impl Page {
    pub fn read(path: &str) -> Self {
        let text = fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        Self {
            path: path.to_owned(),
            text,
        }
    }

    /// `README.md` and every page under `docs/`.
    pub fn all() -> Vec<Self> {
        let mut paths: Vec<String> = fs::read_dir(root().join("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
            .collect();
        paths.sort();
        paths.insert(0, "README.md".to_owned());
        paths.iter().map(|p| Self::read(p)).collect()
    }

    /// Every line with its level when it is a heading, and whether it is code (a fence or
    /// inside one).
    fn lines(&self) -> Vec<(Option<usize>, &str, bool)> {
        let mut fenced = false;
        self.text
            .lines()
            .map(|line| {
                if line.starts_with("```") {
                    fenced = !fenced;
                    return (None, line, true);
                }
                if fenced {
                    return (None, line, true);
                }
                let level = line.chars().take_while(|&c| c == '#').count();
                let heading = (1..=6).contains(&level) && line[level..].starts_with(' ');
                (heading.then_some(level), line, false)
            })
            .collect()
    }

    /// The anchors of every heading, as GitHub makes them (repeats get `-1`, `-2`, …).
    pub fn anchors(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for (level, line, _) in self.lines() {
            if let Some(level) = level {
                let base = slug(&line[level..]);
                let repeats = seen
                    .iter()
                    .filter(|a| {
                        **a == base
                            || a.strip_prefix(&format!("{base}-"))
                                .is_some_and(|n| n.parse::<u32>().is_ok())
                    })
                    .count();
                seen.push(if repeats == 0 {
                    base
                } else {
                    format!("{base}-{repeats}")
                });
            }
        }
        seen
    }

    /// The text of the section whose heading has `anchor`, up to the next heading of the same
    /// or a higher level (its code blocks included).
    pub fn section(&self, anchor: &str) -> String {
        let mut out = None::<(usize, Vec<&str>)>;
        for (level, line, _) in self.lines() {
            match (&mut out, level) {
                (None, Some(level)) if slug(&line[level..]) == anchor => out = Some((level, Vec::new())),
                (Some((at, _)), Some(level)) if level <= *at => break,
                (Some((_, lines)), _) => lines.push(line),
                _ => {}
            }
        }
        let (_, lines) = out.unwrap_or_else(|| panic!("{} has no heading with anchor #{anchor}", self.path));
        lines.join("\n")
    }

    /// Every link target written `[text](target)`, outside code blocks and code spans.
    pub fn links(&self) -> Vec<String> {
        let mut links = Vec::new();
        for (_, line, _) in self.lines().into_iter().filter(|(_, _, code)| !code) {
            let without_code: String = line
                .split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(_, part)| part)
                .collect::<Vec<_>>()
                .join(" ");
            let mut rest = without_code.as_str();
            while let Some(at) = rest.find("](") {
                let after = &rest[at + 2..];
                let end = after.find(')').unwrap_or(after.len());
                links.push(after[..end].to_owned());
                rest = &after[end..];
            }
        }
        links
    }

    /// Whether the page shows `text`, with any line wrapping; in a template, each `{…}` of the
    /// code must be shown as `<name>`.
    pub fn shows(&self, text: &Text) -> bool {
        let page = normalise(&self.text);
        let wanted = normalise(text.as_str());
        match text {
            Text::Literal(_) => page.contains(&wanted),
            Text::Template(_) => template_found(&page, &wanted),
        }
    }
}

/// The cells of the body rows of the Markdown tables in `text` (headers left out).
pub fn table_rows(text: &str) -> Vec<Vec<String>> {
    let cells = |line: &str| -> Vec<String> {
        line[1..line.len() - 1]
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let is_separator = |line: &str| {
        cells(line)
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| "-: ".contains(ch)))
    };
    let mut rows = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim).chain([""]) {
        if line.len() > 1 && line.starts_with('|') && line.ends_with('|') {
            block.push(line);
            continue;
        }
        let body = if block.len() >= 2 && is_separator(block[1]) {
            &block[2..]
        } else {
            &block[..]
        };
        rows.extend(body.iter().map(|l| cells(l)));
        block.clear();
    }
    rows
}

/// The `code spans` in a piece of Markdown.
pub fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// A heading's anchor as GitHub makes it: lower case; letters, digits, `-` and `_` kept,
/// spaces made `-`, everything else dropped.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every run of white space made one space, so wrapping does not matter.
fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `page` holds the template: its fixed parts in order, each `{…}` shown as `<name>`.
fn template_found(page: &str, template: &str) -> bool {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        parts.push(&rest[..open]);
        rest = &rest[(close + 1).min(rest.len())..];
    }
    parts.push(rest);
    let (first, others) = parts.split_first().unwrap();
    page.match_indices(first).any(|(at, _)| {
        let mut here = &page[at + first.len()..];
        for part in others {
            let Some(placeholder) = here.strip_prefix('<').and_then(|after| {
                after
                    .find('>')
                    .filter(|&end| end > 0 && end <= 40 && !after[..end].contains('<'))
            }) else {
                return false;
            };
            here = &here[placeholder + 2..];
            match here.strip_prefix(part) {
                Some(after) => here = after,
                None => return false,
            }
        }
        true
    })
}

/// Whether `path` (relative to the repository root) exists.
pub fn exists(path: &Path) -> bool {
    root().join(path).exists()
}

#[test]
fn templates_and_anchors_are_read_as_github_and_the_code_mean_them() {
    assert!(template_found(
        "x chmod go-w <path> (heartbeatd makes) y",
        "chmod go-w {} (heartbeatd makes)"
    ));
    assert!(!template_found(
        "chmod go-w /a/b (heartbeatd makes)",
        "chmod go-w {} (heartbeatd makes)"
    ));
    assert!(!template_found(
        "if it is, chown <user> <path>; if",
        "if it is, {chown} {} {}; if"
    ));
    assert!(template_found(
        "if it is, <chown> <user> <path>; if",
        "if it is, {chown} {} {}; if"
    ));
    assert_eq!(slug(" `heartbeatd ctl`"), "heartbeatd-ctl");
    assert_eq!(slug("Reloading (SIGHUP)"), "reloading-sighup");
    assert_eq!(slug("Alerting: Alertmanager"), "alerting-alertmanager");
    assert_eq!(slug("HeartbeatdDown"), "heartbeatddown");
}
