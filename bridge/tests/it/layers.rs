//! The crate's modules form layers: no modules import each other in a circle, at any
//! depth, and a top-level module uses only the layers `lib.rs` declares before its own
//! (groups of declarations between blank lines).
//!
//! A reference is any `crate::…` or `super::…` path in the code (comments left out),
//! resolved to the deepest module it names. A module using its own parent or children is
//! not an edge; two siblings (the children of the deepest module both paths share) are.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path, e.g. ["networks", "chirpstack"].
type ModPath = Vec<String>;

/// Where an edge was seen: the file and line.
type Seen = BTreeMap<(ModPath, String, String), (PathBuf, usize)>;

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_owned()),
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "main.rs")
        {
            out.push(path);
        }
    }
}

/// The lowercase path segments after a `crate::` or `super::` at each occurrence,
/// expanding one level of braces: `crate::{a, b::c}` gives `a` and `b::c`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `my_crate::`
        }
        let mut heads = vec![rest];
        let group;
        if let Some(inner) = rest.strip_prefix('{') {
            group = inner.split('}').next().unwrap_or("").to_owned();
            heads = group.split(',').map(str::trim).collect();
        }
        for head in heads {
            let segs: Vec<String> = head
                .split("::")
                .map(|s| {
                    s.chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .take_while(|s| {
                    !s.is_empty() && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                })
                .collect();
            if !segs.is_empty() {
                found.push(segs);
            }
        }
    }
    found
}

/// Every problem with the layers of the crate whose sources are in `src`.
fn check(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(src, f)).collect();
    let deepest_module = |mut p: ModPath| {
        while !p.is_empty() && !modules.contains(&p) {
            p.pop();
        }
        p
    };
    // sibling edges, by parent module
    let mut seen: Seen = BTreeMap::new();
    for file in &files {
        let here = module_of(src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut targets: Vec<ModPath> = paths_after(code, "crate::");
            let parent: ModPath = here[..here.len().saturating_sub(1)].to_vec();
            for p in paths_after(code, "super::") {
                let mut t = parent.clone();
                // `super::super::x`
                let mut segs = p.into_iter().peekable();
                while segs.peek().is_some_and(|s| s == "super") {
                    segs.next();
                    t.pop();
                }
                t.extend(segs);
                targets.push(t);
            }
            for t in targets {
                let t = deepest_module(t);
                let common = here.iter().zip(&t).take_while(|(a, b)| a == b).count();
                if common == here.len() || common == t.len() {
                    continue; // itself, an ancestor or a descendant
                }
                let key = (
                    here[..common].to_vec(),
                    here[common].clone(),
                    t[common].clone(),
                );
                seen.entry(key).or_insert((file.clone(), n + 1));
            }
        }
    }
    let mut problems = Vec::new();
    // the top level follows lib.rs's layers: groups of declarations between blank lines
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut layer_of = BTreeMap::new();
    let mut layer = 0;
    for line in lib.lines().map(str::trim) {
        if line.is_empty() && !layer_of.is_empty() {
            layer += 1;
        } else if let Some(m) = line.strip_prefix("pub mod ") {
            layer_of.insert(m.trim_end_matches(';').to_owned(), layer);
        }
    }
    for ((parent, from, to), (file, line)) in &seen {
        if !parent.is_empty() {
            continue;
        }
        let (Some(a), Some(b)) = (layer_of.get(from), layer_of.get(to)) else {
            continue;
        };
        if b > a {
            problems.push(format!(
                "{from} uses {to}, a layer declared after its own in lib.rs ({}:{line})",
                file.display()
            ));
        }
    }
    // no cycles among the children of any module
    let parents: BTreeSet<&ModPath> = seen.keys().map(|(p, _, _)| p).collect();
    for parent in parents {
        let edges: BTreeMap<&str, Vec<&str>> = seen.keys().filter(|(p, _, _)| p == parent).fold(
            BTreeMap::new(),
            |mut m, (_, a, b)| {
                m.entry(a.as_str()).or_default().push(b.as_str());
                m
            },
        );
        if let Some(cycle) = find_cycle(&edges) {
            let at: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let (f, l) = &seen[&(parent.clone(), w[0].to_owned(), w[1].to_owned())];
                    format!("{} → {} at {}:{l}", w[0], w[1], f.display())
                })
                .collect();
            problems.push(format!(
                "import cycle in {}: {} ({})",
                if parent.is_empty() {
                    "the crate".to_owned()
                } else {
                    parent.join("::")
                },
                cycle.join(" → "),
                at.join("; ")
            ));
        }
    }
    problems
}

/// A cycle in `edges`, as its nodes with the first repeated at the end.
fn find_cycle<'a>(edges: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = stack.iter().position(|n| *n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(c) = visit(node, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_crate_has_layers_and_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = check(&src);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_finds_a_cycle_and_a_layer_broken() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |p: &str, text: &str| {
        let path = src.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod base;\n\npub mod http;\n");
    write("base.rs", "use crate::http::Thing; // base reaches up\n");
    write("http/mod.rs", "pub mod api;\npub mod server;\n");
    write("http/api.rs", "use super::server::serve;\n");
    write(
        "http/server.rs",
        "use crate::{base, http::api::routes};\n// crate::base::x in a comment does not count\n",
    );
    let problems = check(src);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("base uses http, a layer declared after its own")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("import cycle in http: api → server → api")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("import cycle in the crate: base → http → base")),
        "{problems:?}"
    );
}
