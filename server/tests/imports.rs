//! The import picture of `server/src`: which top-level module uses which, read from the source.
//!
//! A module `a` uses `b` when a file of `a` names `crate::b` (in a `use` line or inline; a
//! `crate::{b, c}` group counts each) or a name the crate root re-exports from `b`
//! (`crate::Config`). Comments are left out: a doc link is not an import. Test modules count
//! like the rest, and a file included with `#[path]` belongs to the module that includes it.
//!
//! The rules kept here: the graph between top-level modules has no cycle; `game` (the rules)
//! uses neither replication, replay, the tick that assembles them nor the network; `config` is
//! a leaf; `recording` knows only the config and the counters, `outbox` only the config.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// Where one module uses another: the first file and line seen.
type Edges = BTreeMap<String, BTreeMap<String, String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("server/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/./b/../c` as `a/c`, so a `#[path]` target compares equal to the file found on disk.
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// The top-level module a file belongs to by where it lies: `game/combat.rs` is `game`,
/// `config.rs` is `config`; the crate roots (`lib.rs`, `main.rs`) are none.
fn module_by_place(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The code of a file without its comments (line comments, doc comments, block comments).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_block = 0usize;
    for line in text.lines() {
        let mut rest = line;
        let mut kept = String::new();
        loop {
            if in_block > 0 {
                match rest.find("*/") {
                    Some(end) => {
                        in_block -= 1;
                        rest = &rest[end + 2..];
                    }
                    None => break,
                }
            } else {
                let line_comment = rest.find("//");
                let block = rest.find("/*");
                match (line_comment, block) {
                    (Some(l), b) if b.is_none_or(|b| l < b) => {
                        kept.push_str(&rest[..l]);
                        break;
                    }
                    (_, Some(b)) => {
                        kept.push_str(&rest[..b]);
                        in_block += 1;
                        rest = &rest[b + 2..];
                    }
                    (None, None) => {
                        kept.push_str(rest);
                        break;
                    }
                    (Some(_), None) => unreachable!("matched by the first arm"),
                }
            }
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of each item of a `{a, b::c, d as e}` group (`s` starts after `{`).
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_item = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item = true,
            c if c.is_whitespace() => {}
            _ if at_item && depth == 0 => {
                heads.push(ident_at(&s[i..]).to_string());
                at_item = false;
            }
            _ => {}
        }
    }
    heads
}

/// Each `crate::<name>` in `code`, with the line it is on.
fn crate_paths(code: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        from = start + "crate::".len();
        // `$crate::` and `arena_server_crate::` are not this crate's root.
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_heads(group).into_iter().map(|h| (h, line)));
        } else {
            found.push((ident_at(rest).to_string(), line));
        }
    }
    found
}

/// Names the crate root re-exports (`pub use config::Config;`), by the module they come from.
fn root_reexports() -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let mut names = BTreeMap::new();
    for line in code(&lib).lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident_at(path).to_string();
        let rest = path[module.len()..].trim_start_matches("::");
        let items = match rest.strip_prefix('{') {
            Some(group) => group_heads(group),
            None => vec![ident_at(rest).to_string()],
        };
        for item in items {
            names.insert(item, module.clone());
        }
    }
    names
}

/// The top-level modules and who uses whom.
fn graph() -> (BTreeSet<String>, Edges) {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    // A file included with `#[path]` belongs to the module whose file includes it.
    let mut owner: BTreeMap<PathBuf, String> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        for (i, line) in text.lines().enumerate() {
            let Some(target) = line
                .trim()
                .strip_prefix("#[path = \"")
                .and_then(|t| t.strip_suffix("\"]"))
            else {
                continue;
            };
            let dir = file.parent().expect("a file has a folder");
            let included = normal(&dir.join(target));
            let by = module_by_place(file)
                .unwrap_or_else(|| panic!("{}:{}: #[path] in a crate root", file.display(), i + 1));
            owner.insert(included, by);
        }
    }
    let reexports = root_reexports();
    let mut modules = BTreeSet::new();
    for file in &files {
        modules.extend(module_by_place(file));
    }
    let mut edges = Edges::new();
    for file in &files {
        let Some(from) = owner
            .get(&normal(file))
            .cloned()
            .or_else(|| module_by_place(file))
        else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("readable source");
        for (name, line) in crate_paths(&code(&text)) {
            let to = if modules.contains(&name) {
                name
            } else if let Some(module) = reexports.get(&name) {
                module.clone()
            } else {
                panic!(
                    "{}:{line}: crate::{name} is neither a top-level module nor a root re-export",
                    file.display()
                );
            };
            if to != from {
                let rel = file.strip_prefix(src()).expect("under src").display();
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("src/{rel}:{line}"));
            }
        }
    }
    (modules, edges)
}

/// The strongly connected components with more than one module (Tarjan's algorithm): each is
/// a set of modules that reach each other, so each holds at least one cycle.
fn tangles(modules: &BTreeSet<String>, edges: &Edges) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a Edges,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flat_map(|m| m.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().expect("v is on the stack");
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for m in modules {
        if !s.index.contains_key(m.as_str()) {
            visit(&mut s, m);
        }
    }
    s.out.sort();
    s.out
}

/// One cycle through `start` inside `within`, each step with the line that makes it.
fn a_cycle(start: &str, within: &[String], edges: &Edges) -> String {
    fn walk(
        at: &str,
        start: &str,
        within: &[String],
        edges: &Edges,
        path: &mut Vec<String>,
    ) -> bool {
        for (to, _) in edges.get(at).into_iter().flatten() {
            if to == start {
                path.push(to.clone());
                return true;
            }
            if within.contains(to) && !path.contains(to) {
                path.push(to.clone());
                if walk(to, start, within, edges, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(start, start, within, edges, &mut path);
    path.windows(2)
        .map(|w| format!("{} -> {} ({})", w[0], w[1], edges[&w[0]][&w[1]]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn picture(edges: &Edges) -> String {
    edges
        .iter()
        .map(|(from, to)| {
            let to: Vec<&str> = to.keys().map(String::as_str).collect();
            format!("  {from} -> {}", to.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let (modules, edges) = graph();
    let found = tangles(&modules, &edges);
    let mut problems = Vec::new();
    for tangle in &found {
        let mut cycles: Vec<String> = tangle.iter().map(|m| a_cycle(m, tangle, &edges)).collect();
        cycles.dedup();
        problems.push(format!(
            "a cycle between {}: {}",
            tangle.join(", "),
            cycles.join("; ")
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\nthe picture:\n{}",
        problems.join("\n"),
        picture(&edges)
    );
}

#[test]
fn the_rules_know_nothing_of_what_assembles_them_and_the_leaves_stay_leaves() {
    let (modules, edges) = graph();
    for m in [
        "game",
        "tick",
        "replication",
        "replay",
        "recording",
        "outbox",
        "net",
        "config",
    ] {
        assert!(modules.contains(m), "no top-level module `{m}` any more");
    }
    let uses = |m: &str| edges.get(m).cloned().unwrap_or_default();
    let mut problems = Vec::new();
    for banned in ["replication", "replay", "tick", "net"] {
        if let Some(at) = uses("game").get(banned) {
            problems.push(format!("game uses {banned} ({at})"));
        }
    }
    for (to, at) in uses("config") {
        problems.push(format!("config is no leaf: it uses {to} ({at})"));
    }
    for (to, at) in uses("recording") {
        if to != "config" && to != "stats" {
            problems.push(format!("recording uses {to} ({at})"));
        }
    }
    for (to, at) in uses("outbox") {
        if to != "config" {
            problems.push(format!("outbox uses {to} ({at})"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nthe picture:\n{}",
        problems.join("\n"),
        picture(&edges)
    );
}
