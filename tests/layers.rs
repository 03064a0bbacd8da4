//! The crate's modules import one way: each only from its own layer or the
//! layers below (the table [`LAYERS`], the same as `# Layout` in
//! `src/lib.rs`), and none from a module that imports it back.
//!
//! A reader can then start at the bottom and never has to look up, and a
//! change that would bend an arrow upwards (a message type that names the
//! user's `Subscription`, a session that names its registry) fails here
//! rather than in review. The check reads the source as text, with the
//! standard library only: every `crate::` path outside comments and outside
//! the test modules (`#[cfg(test)] mod ...` to the end of a file, and files
//! named `tests.rs`), resolved through the root's `pub use` re-exports to
//! the module that defines the name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, from the bottom up (see `# Layout` in `src/lib.rs`).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "no I/O, no clock",
        &[
            "proto",
            "tracker",
            "error",
            "credential",
            "config",
            "stats",
            "backoff",
            "mail",
            "folder",
            "position",
            "filter",
            "replay",
        ],
    ),
    (
        "I/O",
        &["transport", "connection", "login", "watcher", "policy"],
    ),
    ("what the actors share", &["queue", "messages"]),
    ("the actors", &["subscriber", "session", "registry"]),
    ("the user-facing API", &["subscription", "handle"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// One `;`-terminated statement starting at `from`, as one line.
fn statement(text: &str, from: usize) -> &str {
    let end = text[from..].find(';').map_or(text.len(), |i| from + i);
    &text[from..end]
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The modules declared in `lib.rs`, and the module behind each name the
/// root re-exports (`pub use credential::{Auth, ...}` → `Auth` is
/// `credential`'s).
fn root() -> (BTreeSet<String>, BTreeMap<String, String>) {
    let lib = strip_comments(&fs::read_to_string(src().join("lib.rs")).unwrap());
    let mut modules = BTreeSet::new();
    let mut reexports = BTreeMap::new();
    for line in lib.lines() {
        let line = line.trim();
        let decl = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            modules.insert(name.trim().to_owned());
        }
    }
    let mut at = 0;
    while let Some(i) = lib[at..].find("pub use ") {
        let start = at + i + "pub use ".len();
        let stmt = statement(&lib, start);
        at = start + stmt.len();
        let Some((module, rest)) = stmt.split_once("::") else {
            continue;
        };
        let module = module.trim();
        if !modules.contains(module) {
            continue;
        }
        for name in rest.split(|c: char| !is_ident(c)).filter(|s| !s.is_empty()) {
            reexports.insert(name.to_owned(), module.to_owned());
        }
    }
    (modules, reexports)
}

/// `text` without `//` comments (doc comments included) and without its
/// test module, which by convention closes the file.
fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        at += line.len();
        if line.trim() == "#[cfg(test)]" && text[at..].trim_start().starts_with("mod ") {
            break;
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The first segment of every `crate::` path in `code`:
/// `crate::a::b` → `a`; `crate::{a::b, C, d::{e}}` → `a`, `C`, `d`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut firsts = Vec::new();
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i;
        at = start + "crate::".len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == '$') {
            continue;
        }
        let rest = &code[at..];
        if rest.starts_with('{') {
            // A use tree: the identifier after `{` or `,` at depth 1.
            let (mut depth, mut expect, mut ident) = (0, false, String::new());
            for c in rest.chars() {
                if is_ident(c) && (expect || !ident.is_empty()) {
                    ident.push(c);
                    expect = false;
                    continue;
                }
                if !ident.is_empty() {
                    firsts.push(std::mem::take(&mut ident));
                }
                match c {
                    '{' => {
                        depth += 1;
                        expect = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' => expect = depth == 1,
                    _ => {}
                }
            }
        } else {
            let ident: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !ident.is_empty() {
                firsts.push(ident);
            }
        }
    }
    firsts
}

/// The Rust files of module `name`: `src/name.rs` and everything under
/// `src/name/`, except the test files.
fn files(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let file = src().join(format!("{name}.rs"));
    if file.exists() {
        out.push(file);
    }
    let mut dirs = vec![src().join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                out.push(path);
            }
        }
    }
    out
}

/// Each module of the crate and the modules it imports.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let (modules, reexports) = root();
    let mut deps = BTreeMap::new();
    for module in &modules {
        let mut mine = BTreeSet::new();
        for file in files(module) {
            let code = strip_comments(&fs::read_to_string(&file).unwrap());
            for first in crate_paths(&code) {
                let target = if modules.contains(&first) {
                    Some(&first)
                } else {
                    reexports.get(&first)
                };
                if let Some(t) = target
                    && t != module
                {
                    mine.insert(t.clone());
                }
            }
        }
        deps.insert(module.clone(), mine);
    }
    deps
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, members)| members.contains(&module))
}

#[test]
fn every_module_has_a_layer() {
    let (modules, _) = root();
    assert!(modules.len() > 10, "modules not found: {modules:?}");
    let unplaced: Vec<_> = modules.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "place {unplaced:?} in LAYERS (and in `# Layout` of src/lib.rs)"
    );
}

#[test]
fn modules_import_only_downwards() {
    let deps = imports();
    // The reader sees what the actors import, so an empty result would
    // mean the scan is broken rather than that all is well.
    assert!(deps["session"].contains("messages"), "{deps:?}");
    assert!(deps["handle"].contains("registry"), "{deps:?}");
    let mut upward = Vec::new();
    for (module, targets) in &deps {
        let Some(mine) = layer_of(module) else {
            continue;
        };
        for target in targets {
            if let Some(theirs) = layer_of(target)
                && theirs > mine
            {
                upward.push(format!(
                    "{module} ({}) imports {target} ({})",
                    LAYERS[mine].0, LAYERS[theirs].0
                ));
            }
        }
    }
    assert!(upward.is_empty(), "imports that run upwards: {upward:#?}");
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let deps = imports();
    // Depth-first search for a back edge; reports one cycle.
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for t in deps.get(m).into_iter().flatten() {
            if let Some(c) = visit(t, deps, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in deps.keys() {
        let cycle = visit(m, &deps, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn use_trees_are_read_whole() {
    let code = "use crate::{a::b, C, d::{e, f}};\nlet x = crate::g::h(); $crate::no; notcrate::no;";
    assert_eq!(crate_paths(code), ["a", "C", "d", "g"]);
}
