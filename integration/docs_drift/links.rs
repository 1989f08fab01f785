//! The pages among themselves: links resolve (file and anchor) without leaving the
//! repository, and the `make` targets they name exist.

use std::fs;
use std::path::{Component, Path, PathBuf};

use super::markdown::{code_spans, exists, Page};
use super::rust_source::root;

/// `path` joined to `base` with `.` and `..` resolved; `None` if it leaves the repository.
fn resolve(base: &Path, path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::ParentDir if !out.pop() => return None,
            Component::Normal(part) => out.push(part),
            _ => {}
        }
    }
    Some(out)
}

#[test]
fn every_link_between_the_pages_resolves_and_stays_in_the_repository() {
    let pages = Page::all();
    assert!(pages.len() >= 10);
    let mut checked = 0;
    for page in &pages {
        let dir = Path::new(&page.path).parent().unwrap().to_owned();
        for link in page.links() {
            if link.starts_with("http://") || link.starts_with("https://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                PathBuf::from(&page.path)
            } else {
                resolve(&dir, path).unwrap_or_else(|| panic!("{}: link {link} leaves the repository", page.path))
            };
            assert!(
                exists(&target),
                "{}: link {link}: {} does not exist",
                page.path,
                target.display()
            );
            if !anchor.is_empty() {
                let target_page = Page::read(&target.display().to_string());
                assert!(
                    target_page.anchors().iter().any(|a| a == anchor),
                    "{}: link {link}: {} has no heading with anchor #{anchor}",
                    page.path,
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} links found");
}

#[test]
fn every_make_target_the_pages_name_exists() {
    // The Makefile and the files it includes (packaging/install.mk holds install, deb …).
    let mut makefile = fs::read_to_string(root().join("Makefile")).unwrap();
    let included: Vec<String> = makefile
        .lines()
        .filter_map(|l| l.strip_prefix("include "))
        .map(|path| fs::read_to_string(root().join(path.trim())).unwrap())
        .collect();
    makefile.extend(included);
    let targets: Vec<&str> = makefile
        .lines()
        .filter_map(|l| l.split_once(':').map(|(t, _)| t))
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect();
    for page in Page::all() {
        let mut fenced = false;
        for line in page.text.lines() {
            if line.starts_with("```") {
                fenced = !fenced;
            }
            let code: Vec<String> = if fenced {
                vec![line.to_owned()]
            } else {
                code_spans(line)
            };
            for snippet in code {
                // A command: a line of a code block starting `make TARGET`, or a code span
                // `make TARGET` (with variables after it, `make install PREFIX=/usr`).
                let words: Vec<&str> = snippet.split_whitespace().collect();
                let command = fenced || words[2.min(words.len())..].iter().all(|w| w.contains('='));
                if let ["make", target, ..] = words.as_slice() {
                    if command && target.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                        assert!(
                            targets.contains(target),
                            "{}: `make {target}` is not a Makefile target",
                            page.path
                        );
                    }
                }
            }
        }
    }
}
