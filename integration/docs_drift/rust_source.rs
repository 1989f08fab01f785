//! Reading facts out of heartbeatd's own Rust source, so the docs test compares the docs with
//! the code itself and not with a second, hand-kept list: a small tokenizer (strings, raw
//! strings, chars, comments, identifiers, numbers, punctuation) and the patterns the test
//! looks for in its tokens (log lines with their `what_to_do`, routes, exit codes).

use std::fs;
use std::path::{Path, PathBuf};

/// One token of Rust source, with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// A string literal's value (escapes resolved), raw strings included.
    Str(String),
    Ident(String),
    /// An integer or float literal as written.
    Number(String),
    Punct(char),
}

/// A source file's tokens with their lines; comments are dropped.
pub struct Source {
    /// The path relative to the repository root.
    pub path: String,
    pub tokens: Vec<(Token, usize)>,
}

/// Where the code lives that the docs describe.
pub const CODE: [&str; 4] = ["src", "actors/src", "keeper/src", "bench/src"];

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dirs` (relative to the root), sorted, without test-only files and
/// with `#[cfg(test)]` modules cut out: facts come from what ships.
pub fn sources(dirs: &[&str]) -> Vec<Source> {
    let mut files = Vec::new();
    for dir in dirs {
        collect(&root().join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            !(name == "tests.rs" || name.ends_with("_tests.rs") || name == "testkit.rs")
        })
        .map(|file| {
            let text = fs::read_to_string(&file).unwrap();
            Source {
                path: file.strip_prefix(root()).unwrap().display().to_string(),
                tokens: without_test_modules(tokenize(&text)),
            }
        })
        .collect()
}

/// The file at `path` among `sources`.
pub fn file<'a>(sources: &'a [Source], path: &str) -> &'a Source {
    sources
        .iter()
        .find(|s| s.path == path)
        .unwrap_or_else(|| panic!("{path} is gone; update the docs test"))
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Splits Rust source into tokens. It knows enough of the lexical grammar for this test:
/// `'a'` versus a lifetime, `r#"…"#`, byte strings, nested block comments.
pub fn tokenize(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let start_line = line;
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
        } else if let Some((value, next)) = raw_string(&chars, i) {
            line += value.matches('\n').count();
            tokens.push((Token::Str(value), start_line));
            i = next;
        } else if c == '"' || (c == 'b' && chars.get(i + 1) == Some(&'"')) {
            i += if c == 'b' { 2 } else { 1 };
            let mut value = String::new();
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                    match chars[i] {
                        'n' => value.push('\n'),
                        't' => value.push('\t'),
                        '0' => value.push('\0'),
                        '\n' => {
                            // A line continuation: the newline and the next line's indent go.
                            line += 1;
                            while chars.get(i + 1).is_some_and(|c| c.is_whitespace()) {
                                line += usize::from(chars[i + 1] == '\n');
                                i += 1;
                            }
                        }
                        other => value.push(other),
                    }
                } else {
                    line += usize::from(chars[i] == '\n');
                    value.push(chars[i]);
                }
                i += 1;
            }
            tokens.push((Token::Str(value), start_line));
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\'', '\u{1F}') or a lifetime ('a, left to the
            // identifier that follows).
            if chars.get(i + 1) == Some(&'\\') {
                i = (i + 3..chars.len())
                    .find(|&j| chars[j] == '\'')
                    .map_or(chars.len(), |j| j + 1);
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push((Token::Ident(chars[start..i].iter().collect()), start_line));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push((Token::Number(chars[start..i].iter().collect()), start_line));
        } else {
            tokens.push((Token::Punct(c), start_line));
            i += 1;
        }
    }
    tokens
}

/// `r"…"`, `r#"…"#`, `br"…"` at `i`: its value and the index after it.
fn raw_string(chars: &[char], i: usize) -> Option<(String, usize)> {
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') || (i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')) {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    let start = j;
    loop {
        if j >= chars.len() {
            return None;
        }
        if chars[j] == '"' && chars[j + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
            return Some((chars[start..j].iter().collect(), j + 1 + hashes));
        }
        j += 1;
    }
}

/// Drops `#[cfg(test)] mod name { … }` (and `#[cfg(test)] mod name;`).
fn without_test_modules(tokens: Vec<(Token, usize)>) -> Vec<(Token, usize)> {
    let cfg_test = [
        Token::Punct('#'),
        Token::Punct('['),
        Token::Ident("cfg".into()),
        Token::Punct('('),
        Token::Ident("test".into()),
        Token::Punct(')'),
        Token::Punct(']'),
    ];
    let mut kept = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let is_cfg_test = tokens.len() >= i + cfg_test.len()
            && tokens[i..i + cfg_test.len()].iter().map(|(t, _)| t).eq(cfg_test.iter());
        let after = i + cfg_test.len();
        let is_module = is_cfg_test && matches!(tokens.get(after), Some((Token::Ident(m), _)) if m == "mod");
        if !is_module {
            kept.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let mut j = after + 2;
        if tokens.get(j).map(|(t, _)| t) == Some(&Token::Punct('{')) {
            j = matching(&tokens, j);
        }
        i = j + 1;
    }
    kept
}

/// The index of the bracket closing the one at `open` (`(`, `[` or `{`).
pub fn matching(tokens: &[(Token, usize)], open: usize) -> usize {
    let mut depth = 0i32;
    for (j, (token, _)) in tokens.iter().enumerate().skip(open) {
        match token {
            Token::Punct('(' | '[' | '{') => depth += 1,
            Token::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced brackets")
}

/// The top-level comma-separated parts of the tokens between `open` and its closing bracket.
pub fn arguments(tokens: &[(Token, usize)], open: usize) -> Vec<&[(Token, usize)]> {
    let close = matching(tokens, open);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, open + 1);
    for j in open + 1..close {
        match tokens[j].0 {
            Token::Punct('(' | '[' | '{') => depth += 1,
            Token::Punct(')' | ']' | '}') => depth -= 1,
            Token::Punct(',' | ';') if depth == 0 => {
                parts.push(&tokens[start..j]);
                start = j + 1;
            }
            _ => {}
        }
    }
    if start < close {
        parts.push(&tokens[start..close]);
    }
    parts
}

/// A text from the source: a plain literal, or a `format!` template whose `{…}` stand for
/// values only known at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Text {
    Literal(String),
    Template(String),
}

impl Text {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Literal(s) | Self::Template(s) => s,
        }
    }

    /// The text an expression gives, when it is a literal or a `format!` of one
    /// (`&format!(…)` too); `None` for anything computed otherwise.
    pub fn of_expression(tokens: &[(Token, usize)]) -> Option<Self> {
        let tokens: Vec<&Token> = tokens
            .iter()
            .map(|(t, _)| t)
            .skip_while(|t| matches!(t, Token::Punct('&' | '%')))
            .collect();
        match tokens.as_slice() {
            [Token::Str(s)] => Some(Self::Literal(s.clone())),
            [Token::Ident(f), Token::Punct('!'), Token::Punct('('), Token::Str(s), ..] if f == "format" => {
                Some(Self::Template(s.clone()))
            }
            _ => None,
        }
    }
}
