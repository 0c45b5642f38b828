//! The user's pages against the code and against each other: the README stays a page a user
//! reads in two minutes and reaches every page of docs/ in one click, every link between the
//! pages lands on a file and a heading that exist, and the log-line table of docs/supervisor.md
//! has a row, at the right level, for every event the supervisor logs.

use std::fs;
use std::path::{Path, PathBuf};

mod support;
use support::repo;

/// The README's budget, in lines.
const README_LINES: usize = 300;

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md and every Markdown page of docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    pages.insert(0, repo().join("README.md"));
    pages
}

/// The lines of a Markdown page outside its fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchors GitHub gives a page's headings: lower case, spaces to hyphens, punctuation other
/// than `-` and `_` dropped, `-1`, `-2`... after a repeated one.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for line in prose(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#').trim();
        let slug: String = heading
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let repeats = seen.iter().filter(|s| **s == slug).count();
        seen.push(slug.clone());
        if repeats > 0 {
            seen.push(format!("{slug}-{repeats}"));
        }
    }
    seen
}

/// The targets of the page's Markdown links `[text](target)`, outside code.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn every_link_between_the_pages_lands_on_a_file_and_a_heading() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = read(&page);
        let dir = page.parent().expect("dir");
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                page.clone()
            } else {
                dir.join(path)
            };
            let name = page.strip_prefix(repo()).unwrap_or(&page).display();
            if !file.exists() {
                broken.push(format!("{name}: ({target}): no file {}", file.display()));
                continue;
            }
            if !anchor.is_empty() && !anchors(&read(&file)).iter().any(|a| a == anchor) {
                broken.push(format!("{name}: ({target}): no heading #{anchor}"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_short_and_reaches_every_page_in_one_click() {
    let readme = read(&repo().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines < README_LINES,
        "README.md has {lines} lines; the budget is under {README_LINES}: move detail to docs/"
    );
    let targets = links(&readme);
    for page in pages().iter().skip(1) {
        let name = page.file_name().expect("name").to_string_lossy();
        let linked = targets
            .iter()
            .any(|t| t.split('#').next() == Some(&format!("docs/{name}")));
        assert!(linked, "README.md has no link to docs/{name}");
    }
    // The command that works today comes before any form that needs a release.
    let today = readme
        .find("heroku buildpacks:add --index 1 https://github.com/launcher-buildpack/launcher\n")
        .expect("README.md gives the repository's URL");
    let release = readme.find("/releases/download/").unwrap_or(usize::MAX);
    assert!(today < release, "the release form comes first");
}

/// Every `Event::info/warn/error("name")` in the supervisor's source files, with its level.
fn emitted(dir: &Path, found: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            emitted(&path, found);
            continue;
        }
        let text = read(&path);
        for level in ["info", "warn", "error"] {
            let call = format!("Event::{level}(\"");
            for (at, _) in text.match_indices(&call) {
                let rest = &text[at + call.len()..];
                let name = &rest[..rest.find('"').expect("closing quote")];
                found.push((name.to_owned(), level.to_owned()));
            }
        }
    }
}

#[test]
fn every_event_the_supervisor_logs_has_its_row_in_the_log_line_table() {
    let mut events = Vec::new();
    emitted(&repo().join("launcher/src/supervisor"), &mut events);
    assert!(events.len() > 20, "{events:?}");
    let docs = read(&repo().join("docs/supervisor.md"));
    for (name, level) in events {
        let row = format!("| `{name}` | ");
        let Some(line) = docs.lines().find(|l| l.starts_with(&row)) else {
            panic!("docs/supervisor.md's table of log lines has no row for `{name}` ({level})");
        };
        let level_column = line[row.len()..].split(" | ").next().unwrap_or_default();
        assert!(
            level_column.contains(&level),
            "`{name}` is logged at {level}: {line}"
        );
    }
}
