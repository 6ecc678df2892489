//! No import cycle among the crate's modules: the top-level modules (`engine`, `speed`,
//! `session`, ...) and, inside each, its submodules, read from the source (`crate::a::b` and
//! `super::x` paths, `use` groups included). A module's own facade (`mod.rs` re-exports) is left
//! out of the sibling graph, since every submodule reaches its siblings' items through it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The module path of a source file: `src/engine/conn/recv.rs` → `["engine", "conn", "recv"]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The first path segment after each `prefix` (`crate::`, `super::`), including each member of
/// a `{a, b::c}` group.
fn targets(src: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for member in group[..end].split(',') {
                let id = ident_at(member.trim());
                if !id.is_empty() {
                    out.push(id);
                }
            }
        } else {
            out.push(ident_at(rest));
        }
    }
    out
}

/// Edges between modules at one depth: `from` and `to` are the first `depth` segments.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_import_cycle_among_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // (module, referenced module path) pairs, both absolute.
    let mut refs: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let module = module_of(rel);
        // The crate root (lib.rs, main.rs) is everyone's parent; `tests.rs` files are test
        // modules (`#[cfg(test)] mod tests;`), which may reach anywhere.
        if module.is_empty() || module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        // Code only: comment lines name modules without using them, and test modules may reach
        // anywhere.
        let text: String = std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for t in targets(text, "crate::") {
            refs.push((module.clone(), vec![t]));
        }
        // `super::x` in module a::b (a/b.rs or a/b/mod.rs) names a::x.
        let parent: Vec<String> = module[..module.len() - 1].to_vec();
        for t in targets(text, "super::") {
            let mut to = parent.clone();
            to.push(t);
            refs.push((module.clone(), to));
        }
    }
    // Top level: engine → speed and so on.
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in &refs {
        let (a, b) = (&from[0], &to[0]);
        let known = files
            .iter()
            .any(|f| module_of(f.strip_prefix(&src).unwrap()).first() == Some(b));
        if a != b && known {
            top.entry(a.clone()).or_default().insert(b.clone());
        }
    }
    if let Some(c) = find_cycle(&top) {
        panic!("a cycle among top-level modules: {}", c.join(" → "));
    }
    // Inside each top-level module: its submodules, the facade left out.
    let mut inner: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in &refs {
        if from.len() < 2 || to.len() < 2 || from[0] != to[0] || from[1] == to[1] {
            continue;
        }
        let known = files.iter().any(|f| {
            let m = module_of(f.strip_prefix(&src).unwrap());
            m.len() >= 2 && m[0] == to[0] && m[1] == to[1]
        });
        if known {
            inner
                .entry(format!("{}::{}", from[0], from[1]))
                .or_default()
                .insert(format!("{}::{}", to[0], to[1]));
        }
    }
    if let Some(c) = find_cycle(&inner) {
        panic!("a cycle among submodules: {}", c.join(" → "));
    }
}
