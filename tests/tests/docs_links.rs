//! The README, the manuals in `docs/` and the other READMEs hold together: every relative link names a file
//! of this repository that exists (and a heading of it, for `file.md#anchor`), nothing
//! links outside the repository, and the README still opens with its two commands.
//! Reads files only; needs no running cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The README and every Markdown file in `docs/`, in name order.
fn manuals(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let docs = std::fs::read_dir(root.join("docs")).expect("docs/ is readable");
    let mut in_docs: Vec<PathBuf> =
        docs.map(|e| e.expect("docs/ entry").path()).filter(|p| p.extension().is_some_and(|x| x == "md")).collect();
    in_docs.sort();
    files.extend(in_docs);
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Text outside fenced code blocks and inline code spans, line by line (1-based line
/// numbers): a `[x](y)` inside code is an example, not a link.
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        // An indented block (four spaces after a blank line) is code too, but a list
        // item's continuation is not; the manuals only use fences and `    ` command
        // lines that hold no links, so only fences are skipped.
        if fenced {
            continue;
        }
        let mut prose = String::new();
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                prose.push(c);
            }
        }
        out.push((i + 1, prose));
    }
    out
}

/// The targets of inline links and images, `[text](target)` and `![alt](target)`.
fn link_targets(prose: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = prose;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => {
                // A title (`(file "title")`) is not part of the target.
                let target = after[..end].split_whitespace().next().unwrap_or("");
                targets.push(target.to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case; letters, digits, `-` and `_` kept, spaces
/// become `-`, everything else (punctuation, backticks) dropped.
fn slug(heading: &str) -> String {
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

/// Every anchor a Markdown file's headings give (a repeated heading gets `-1`, `-2`, ...).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#'));
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:") || target.starts_with("//")
}

/// What is wrong with one link of `file`, if anything.
fn check_link(root: &Path, file: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("an empty link".into());
    }
    if is_external(target) {
        return Some(format!("{target} leads outside the repository: link a file in it, or name the page in words"));
    }
    let (path_part, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let resolved = if path_part.is_empty() {
        file.to_path_buf()
    } else if path_part.starts_with('/') {
        return Some(format!("{target} is absolute: write it relative to {}", file.display()));
    } else {
        file.parent().expect("a file has a folder").join(path_part)
    };
    let Ok(canonical) = resolved.canonicalize() else {
        return Some(format!("{target} names {}, which does not exist", resolved.display()));
    };
    let root = root.canonicalize().expect("the repository root exists");
    if !canonical.starts_with(&root) {
        return Some(format!("{target} leads outside the repository ({})", canonical.display()));
    }
    // Anchors are checked in Markdown files only (a source file's line anchors are not).
    let anchor = anchor?;
    if canonical.extension().is_none_or(|x| x != "md") {
        return None;
    }
    let known = anchors(&read(&canonical));
    if known.contains(anchor) {
        return None;
    }
    Some(format!(
        "{target}: {} has no heading with the anchor #{anchor} (it has: {})",
        canonical.display(),
        known.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// The other READMEs, which link into `docs/` too.
const OTHER_READMES: [&str; 2] = ["clients/java/README.md", "scenarios/README.md"];

#[test]
fn every_link_in_the_readme_and_docs_resolves_inside_the_repository() {
    let root = repo_root();
    let mut problems = Vec::new();
    let mut checked = 0;
    let files = manuals(&root).into_iter().chain(OTHER_READMES.iter().map(|f| root.join(f)));
    for file in files {
        for (line, prose) in prose_lines(&read(&file)) {
            for target in link_targets(&prose) {
                checked += 1;
                if let Some(why) = check_link(&root, &file, &target) {
                    problems.push(format!("{}:{line}: {why}", file.strip_prefix(&root).unwrap_or(&file).display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} of {checked} links are broken:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn the_readme_links_every_manual_in_docs() {
    let root = repo_root();
    let readme = read(&root.join("README.md"));
    let linked: BTreeSet<String> = prose_lines(&readme).iter().flat_map(|(_, prose)| link_targets(prose)).collect();
    let missing: Vec<String> = manuals(&root)
        .iter()
        .skip(1)
        .map(|p| format!("docs/{}", p.file_name().expect("a file name").to_string_lossy()))
        .filter(|name| !linked.contains(name))
        .collect();
    assert!(missing.is_empty(), "the README links no way to {}", missing.join(", "));
}

#[test]
fn the_readme_opens_with_the_two_commands() {
    let readme = read(&repo_root().join("README.md"));
    let first_block: Vec<&str> =
        readme.lines().skip_while(|l| !l.starts_with("```")).skip(1).take_while(|l| !l.starts_with("```")).collect();
    let commands: Vec<&str> = first_block.iter().map(|l| l.split('#').next().unwrap_or("").trim()).collect();
    assert_eq!(
        commands,
        ["cargo run --release -p roster-real --bin roster -- dev", "scripts/test"],
        "the README's first code block must hold exactly the command that runs Roster and the one that runs every test"
    );
    let before: Vec<&str> =
        readme.lines().take_while(|l| !l.starts_with("```")).filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(before, ["# Roster"], "nothing but the title may come before the two commands");
}

#[test]
fn a_slug_follows_githubs_rules() {
    assert_eq!(slug(" Bootstrap, and a node that lost its disk"), "bootstrap-and-a-node-that-lost-its-disk");
    assert_eq!(slug(" `scripts/measure`"), "scriptsmeasure");
    assert_eq!(slug(" Who is alive: the leader's, not_the log's"), "who-is-alive-the-leaders-not_the-logs");
    let repeated = anchors("# A\n## A\n```\n# A\n```\n## A\n");
    assert_eq!(repeated.into_iter().collect::<Vec<_>>(), ["a", "a-1", "a-2"]);
}

#[test]
fn links_in_code_are_not_links_and_titles_are_not_targets() {
    let lines = prose_lines("see [a](a.md) and `[b](b.md)`\n```\n[c](c.md)\n```\n![d](img/d.png \"title\")");
    let targets: Vec<String> = lines.iter().flat_map(|(_, p)| link_targets(p)).collect();
    assert_eq!(targets, ["a.md", "img/d.png"]);
}

#[test]
fn a_broken_link_is_named() {
    let root = repo_root();
    let readme = root.join("README.md");
    assert!(check_link(&root, &readme, "docs/no-such-manual.md").is_some_and(|w| w.contains("does not exist")));
    assert!(check_link(&root, &readme, "https://example.com/").is_some_and(|w| w.contains("outside")));
    assert!(check_link(&root, &readme, "../../etc/hostname").is_some());
    assert!(check_link(&root, &readme, "#no-such-heading").is_some_and(|w| w.contains("no heading")));
    assert_eq!(check_link(&root, &readme, "docs/design.md"), None);
}
