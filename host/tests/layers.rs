//! The layering of `host/src`, checked: every file's `crate::`/`super::` imports are
//! read (comments skipped), resolved to the file they name, and
//! - printed, one line per file (run with `--nocapture` to see them);
//! - an import from `capabilities/` to anything above it fails the test: a
//!   capability is a leaf that only sees `config/`, `fault`, `limits`, `metrics`, `trigger`
//!   and other capabilities, so it can be read, changed and tested alone;
//! - import circles between modules (strongly connected components whose files
//!   are not all parts of one module's folder) fail the test; a circle inside
//!   one folder (a module split into files for size, like `websocket/hub.rs` and
//!   `websocket/fanout.rs`) is printed, not failed.
//!
//! `cargo test --release -p alorig-host --test layers -- --nocapture` prints the
//! graph; it also runs with the rest of the suite.

// A test fails by panicking: unwrap is how it says "this must work".
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// What a capability may import, besides other capabilities.
const BELOW_CAPABILITIES: &[&str] = &[
    "config/",
    "fault.rs",
    "limits.rs",
    "limits/",
    "metrics.rs",
    "metrics/",
    // Rate-limited trap lines: a leaf (imports nothing of the crate).
    "traplog.rs",
    "trigger.rs",
];

#[test]
fn capabilities_are_a_leaf_layer_and_no_files_import_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    let known: BTreeSet<String> = files.iter().map(|f| rel(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let name = rel(&src, file);
        let text = fs::read_to_string(file).unwrap();
        let module = module_path(&name);
        let mut targets = BTreeSet::new();
        for path in import_paths(&text) {
            if let Some(target) = resolve(&module, &path, &known)
                && target != name
            {
                targets.insert(target);
            }
        }
        graph.insert(name, targets);
    }

    let mut upward = Vec::new();
    for (from, targets) in &graph {
        println!(
            "{from}: {}",
            targets.iter().cloned().collect::<Vec<_>>().join(" ")
        );
        if from.starts_with("capabilities/") {
            for to in targets {
                let allowed = to.starts_with("capabilities/")
                    || BELOW_CAPABILITIES.iter().any(|b| to.starts_with(b));
                if !allowed {
                    upward.push(format!("{from} -> {to}"));
                }
            }
        }
    }
    let circles: Vec<Vec<String>> = strongly_connected(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    let folder = |file: &String| {
        file.rsplit_once('/')
            .map_or(String::new(), |(dir, _)| dir.to_string())
    };
    let across: Vec<&Vec<String>> = circles
        .iter()
        .filter(|c| c.iter().any(|f| folder(f) != folder(&c[0])))
        .collect();
    println!(
        "files: {}, imports: {}",
        graph.len(),
        graph.values().map(|t| t.len()).sum::<usize>()
    );
    println!("largest file: {}", largest(&files, &src));
    println!(
        "import circles: {} ({} across modules)",
        circles.len(),
        across.len()
    );
    for circle in &circles {
        println!("  circle of {} files: {}", circle.len(), circle.join(" "));
    }
    println!("upward imports from capabilities/: {}", upward.len());
    for arrow in &upward {
        println!("  {arrow}");
    }
    assert!(
        upward.is_empty(),
        "capabilities/ imports from above it: {upward:?}"
    );
    assert!(
        across.is_empty(),
        "import circles across modules: {across:?}"
    );
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn rel(src: &Path, file: &Path) -> String {
    file.strip_prefix(src)
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

fn largest(files: &[PathBuf], src: &Path) -> String {
    let (lines, name) = files
        .iter()
        .map(|f| (fs::read_to_string(f).unwrap().lines().count(), rel(src, f)))
        .max()
        .unwrap();
    format!("{name} ({lines} lines)")
}

/// `capabilities/redis/mod.rs` -> `["capabilities", "redis"]`; `lib.rs`/`main.rs` -> `[]`.
fn module_path(file: &str) -> Vec<String> {
    let stem = file.trim_end_matches(".rs");
    let mut parts: Vec<String> = stem.split('/').map(String::from).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Every path after `crate::` or `super::` outside comments, with `{a, b::c}`
/// groups expanded: `crate::{app::App, state}` -> `crate::app::App`, `crate::state`.
fn import_paths(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    // Tests may reach anywhere; the layering is about the code that ships.
    let code = match code.find("#[cfg(test)]") {
        Some(i) => code[..i].to_string(),
        None => code,
    };
    let bytes = code.as_bytes();
    let inline = inline_modules(&code);
    let mut out = Vec::new();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(root) {
            let start = from + i;
            from = start + root.len();
            let before = start.checked_sub(1).map(|b| bytes[b]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            let (paths, _) = tree(&code[start..]);
            // `super::` inside an inline `mod x { .. }` first leaves that block.
            let depth = inline
                .iter()
                .filter(|(a, b)| *a < start && start < *b)
                .count();
            for path in paths {
                let mut rest = path.as_str();
                let mut skipped = 0;
                while skipped < depth && rest.starts_with("super::") {
                    rest = &rest["super::".len()..];
                    skipped += 1;
                }
                if skipped == 0 {
                    out.push(path.clone());
                } else if rest.starts_with("super::") {
                    out.push(rest.to_string());
                }
            }
        }
    }
    out
}

/// Byte ranges of inline `mod name { .. }` blocks.
fn inline_modules(code: &str) -> Vec<(usize, usize)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find("mod ") {
        let start = from + i;
        from = start + 4;
        if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            continue;
        }
        let mut j = from;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j >= b.len() || b[j] != b'{' {
            continue;
        }
        let mut depth = 0usize;
        for (k, &c) in b.iter().enumerate().skip(j) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((j, k));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Parses one use-tree at the start of `s`; returns its expanded paths and the length read.
fn tree(s: &str) -> (Vec<String>, usize) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut prefix = String::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'{' {
            i += 1;
            let mut out = Vec::new();
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    return (out, i + 1);
                }
                let (inner, used) = tree(&s[i..]);
                if used == 0 {
                    return (out, i);
                }
                out.extend(inner.into_iter().map(|p| {
                    if p == "self" {
                        prefix.trim_end_matches("::").to_string()
                    } else {
                        format!("{prefix}{p}")
                    }
                }));
                i += used;
            }
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if start == i {
            return (
                if prefix.is_empty() {
                    vec![]
                } else {
                    vec![prefix.trim_end_matches("::").to_string()]
                },
                i,
            );
        }
        prefix.push_str(&s[start..i]);
        if s[i..].starts_with("::") {
            prefix.push_str("::");
            i += 2;
        } else {
            // `x as y`: the alias is not a path.
            let rest = &s[i..];
            let trimmed = rest.trim_start();
            if let Some(alias) = trimmed.strip_prefix("as ") {
                let alias = alias.trim_start();
                let len = alias
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(alias.len());
                i += rest.len() - alias.len() + len;
            }
            return (vec![prefix], i);
        }
    }
}

/// The file a path names: its longest prefix that is a module file.
fn resolve(module: &[String], path: &str, known: &BTreeSet<String>) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> = Vec::new();
    match parts.first() {
        Some(&"crate") => {
            parts.remove(0);
        }
        Some(&"super") => {
            base = module.to_vec();
            while parts.first() == Some(&"super") {
                parts.remove(0);
                base.pop()?;
            }
        }
        _ => return None,
    }
    let mut full = base;
    full.extend(parts.iter().map(|p| p.to_string()));
    for len in (1..=full.len()).rev() {
        let stem = full[..len].join("/");
        for candidate in [format!("{stem}.rs"), format!("{stem}/mod.rs")] {
            if known.contains(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

/// Tarjan's algorithm; each component sorted by name.
fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            component.sort();
            s.out.push(component);
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on_stack: BTreeSet::new(),
        out: vec![],
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}
