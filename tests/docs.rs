//! The documentation stays true to the tree and stays documentation:
//!
//! - the layout in `docs/design.md` lists exactly the `.rs` files under `src/`;
//! - `README.md` stays a user's document of bounded length;
//! - no file under `src`, `tests`, `benches` or `docs`, nor `README.md`, reads like a work
//!   diary (references to numbered tracker items or to earlier stretches of work): comments
//!   and documents say what the code does and guards against, not when or why it was written.
//!
//! Plain std: no extra dependencies.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The README is the user's document; developer material lives in `docs/`.
const README_MAX_LINES: usize = 920;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (recursively), skipping `target`, `node_modules` and hidden
/// directories, as paths relative to the repository root with `/` separators.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            if name == "target" || name == "node_modules" || name.starts_with('.') {
                continue;
            }
            files_under(&path, out);
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .expect("under the root")
        .to_string_lossy()
        .replace('\\', "/")
}

/// The `.rs` paths of the layout in `docs/design.md`.
///
/// The form: the first fenced block tagged `text` after the `## Layout` heading; every line of
/// it whose first whitespace-separated word ends in `.rs` names a file by its path from the
/// repository root (the rest of the line is its purpose). Other lines (blank, or a directory
/// whose first word ends in `/`) are ignored.
fn layout_paths(design: &str) -> BTreeSet<String> {
    let section = design
        .split("\n## ")
        .find(|s| s.starts_with("Layout"))
        .expect("docs/design.md has a `## Layout` section");
    let start = section
        .find("```text\n")
        .expect("the Layout section has a ```text block")
        + "```text\n".len();
    let len = section[start..]
        .find("\n```")
        .expect("the ```text block ends");
    section[start..start + len]
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.ends_with(".rs"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_design_layout_lists_exactly_the_source_files() {
    let design = fs::read_to_string(root().join("docs/design.md")).expect("read docs/design.md");
    let listed = layout_paths(&design);
    let mut found = Vec::new();
    files_under(&root().join("src"), &mut found);
    let actual: BTreeSet<String> = found
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| relative(p))
        .collect();
    let missing: Vec<&String> = actual.difference(&listed).collect();
    let extra: Vec<&String> = listed.difference(&actual).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/design.md's layout is out of date\n\
         files under src/ not in the layout: {missing:#?}\n\
         layout lines naming no file under src/: {extra:#?}"
    );
}

#[test]
fn the_readme_stays_short() {
    let readme = fs::read_to_string(root().join("README.md")).expect("read README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, at most {README_MAX_LINES}: move developer material to docs/"
    );
}

/// The diary phrases found in `text` (already lowercase), each with its line number.
fn diary_phrases(text: &str) -> Vec<(usize, String)> {
    // Built from pieces, so that this file does not match itself.
    let s = ["ses", "sion"].concat();
    let phrases = [
        format!("this {s}"),
        format!("last {s}"),
        format!("{s} before"),
        format!("{s}s before"),
        format!("{s}s back"),
    ];
    let numbered = [["iss", "ue "], ["find", "ing "]].map(|w| w.concat());
    let mut hits = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for phrase in &phrases {
            if line.contains(phrase.as_str()) {
                hits.push((n + 1, phrase.clone()));
            }
        }
        for prefix in &numbered {
            let mut from = 0;
            while let Some(at) = line[from..].find(prefix.as_str()) {
                let start = from + at;
                let after = &line[start + prefix.len()..];
                let word_start = !line[..start].ends_with(|c: char| c.is_alphanumeric());
                if word_start && after.starts_with(|c: char| c.is_ascii_digit()) {
                    let number: String = after.chars().take_while(char::is_ascii_digit).collect();
                    hits.push((n + 1, format!("{prefix}{number}")));
                }
                from = start + prefix.len();
            }
        }
    }
    hits
}

#[test]
fn no_file_reads_like_a_diary() {
    let mut files = vec![root().join("README.md")];
    for dir in ["src", "tests", "benches", "docs"] {
        files_under(&root().join(dir), &mut files);
    }
    let mut offenders = Vec::new();
    for path in &files {
        let Ok(bytes) = fs::read(path) else { continue };
        // Binary files (images, keys in DER form): skipped.
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        if text.contains('\0') {
            continue;
        }
        for (line, phrase) in diary_phrases(&text.to_lowercase()) {
            offenders.push(format!("{}:{line}: {phrase:?}", relative(path)));
        }
    }
    assert!(
        offenders.is_empty(),
        "say what the code does and guards against, not when it was written:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_diary_check_finds_what_it_looks_for() {
    let sample = format!(
        "fine\nas {i} 12 showed\n{f} 3: a bug\nthe {i} 7x\nlast {s}\n{i} tracker\n\
         t{i} 5\ntwo {s}s back\n",
        i = ["Iss", "ue"].concat(),
        f = ["Find", "ing"].concat(),
        s = ["ses", "sion"].concat(),
    )
    .to_lowercase();
    let hits = diary_phrases(&sample);
    let lines: Vec<usize> = hits.iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, [2, 3, 4, 5, 8], "{hits:?}");
}
