//! The dependency rule of `src/lib.rs`, enforced: every `crate::` (and, in `main.rs`, `ecr_step::`) path in
//! every source file is an arrow from its module to another; an arrow to a layer that is not below is
//! refused, and so is any cycle between files. Comments are ignored, code is not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first; a module may use only modules of lower layers. Adapters share a layer, so
/// none of them may use another.
const LAYERS: &[&[&str]] = &[
    &["domain"],
    &["report"],
    &["files", "retry"],
    &["aws", "registry", "engine", "layout", "outputs"],
    &["settings"],
    &["modes"],
    &["main"],
];

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer: add it to LAYERS and to the rule in lib.rs"))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, with its module path (`["aws", "token"]`; `mod.rs` is its directory).
fn files() -> Vec<(PathBuf, Vec<String>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&src(), &mut paths);
    paths
        .into_iter()
        .filter(|p| p.file_name().unwrap() != "lib.rs")
        .map(|p| {
            let relative = p.strip_prefix(src()).unwrap().with_extension("");
            let mut module: Vec<String> = relative.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|l| l == "mod") {
                module.pop();
            }
            (p, module)
        })
        .collect()
}

/// The code of a file without its comments.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file's code names: `crate::a::b` → `[a, b]`; `super::x` → its parent's path + x.
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for prefix in ["crate::", "ecr_step::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(word) {
                continue;
            }
            let path: Vec<String> = rest
                .split("::")
                .map(|segment| segment.chars().take_while(|c| word(*c)).collect::<String>())
                .take_while(|segment| !segment.is_empty())
                .collect();
            let mut segments = path.clone();
            // A path segment that does not start lowercase (a type, a `{` group) ends the module path.
            segments.retain(|s| s.starts_with(|c: char| c.is_ascii_lowercase()));
            if prefix == "super::" {
                let parent_len = module.len().saturating_sub(1);
                let mut full: Vec<String> = module[..parent_len].to_vec();
                full.extend(segments);
                found.push(full);
            } else if !segments.is_empty() {
                found.push(segments);
            } else if let Some(first) = path.first().filter(|s| s.starts_with('{')) {
                found.push(vec![first.clone()]);
            }
        }
        // `use crate::{a, b}` groups.
        let mut rest = code;
        while let Some(at) = rest.find(&format!("{prefix}{{")) {
            rest = &rest[at + prefix.len() + 1..];
            let group = &rest[..rest.find('}').unwrap_or(rest.len())];
            for item in group.split(',') {
                let name: String = item.trim().chars().take_while(|c| word(*c)).collect();
                if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                    found.push(if prefix == "super::" {
                        let mut full = module[..module.len().saturating_sub(1)].to_vec();
                        full.push(name);
                        full
                    } else {
                        vec![name]
                    });
                }
            }
        }
    }
    found
}

/// The longest known module path that `path` starts with.
fn resolve(path: &[String], known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains(p))
}

fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = files();
    let known: BTreeSet<Vec<String>> = files.iter().map(|(_, m)| m.clone()).collect();
    let mut graph = BTreeMap::new();
    for (path, module) in &files {
        let edges: BTreeSet<Vec<String>> = references(module, &code(path))
            .iter()
            .filter_map(|r| resolve(r, &known))
            .filter(|target| target != module)
            .collect();
        graph.insert(module.clone(), edges);
    }
    graph
}

/// The modes: a file each (or a directory, its parts inside: `push/`), and none may use another, nor
/// another's parts (what they share is in `modes::write`).
const MODES: &[&str] = &["push", "promote", "login", "check"];

/// The mode a module is or belongs to (`modes::push::held` → `push`).
fn mode_of(module: &[String]) -> Option<&str> {
    match module {
        [modes, mode, ..] if modes == "modes" && MODES.contains(&mode.as_str()) => Some(mode),
        _ => None,
    }
}

/// The arrows of `graph` the rule forbids: one to a layer that is not below, and one between two modes.
fn forbidden(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let mut forbidden = Vec::new();
    for (from, targets) in graph {
        for to in targets {
            let (a, b) = (&from[0], &to[0]);
            if a != b && layer(b) >= layer(a) {
                forbidden.push(format!("{} → {} ({a} may not use {b})", from.join("::"), to.join("::")));
            }
            if let (Some(x), Some(y)) = (mode_of(from), mode_of(to))
                && x != y
            {
                forbidden.push(format!(
                    "{} → {} (a mode may not use another)",
                    from.join("::"),
                    to.join("::")
                ));
            }
        }
    }
    forbidden
}

#[test]
fn every_arrow_points_down_the_layers_and_no_mode_uses_another() {
    let forbidden = forbidden(&graph());
    assert!(
        forbidden.is_empty(),
        "arrows the rule forbids:\n{}",
        forbidden.join("\n")
    );
}

#[test]
fn the_file_graph_has_no_cycle() {
    let graph = graph();
    // Depth-first search with colours: a grey node reached again closes a cycle.
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|n| n == node).unwrap();
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.clone());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut state, &mut Vec::new()) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!("an import cycle: {}", names.join(" → "));
        }
    }
}

#[test]
fn the_reader_sees_the_arrows_that_are_there() {
    // Guards the test itself: arrows known to exist must be found, or the checks above prove nothing.
    let graph = graph();
    let has = |from: &str, to: &str| {
        let from: Vec<String> = from.split("::").map(String::from).collect();
        let to: Vec<String> = to.split("::").map(String::from).collect();
        graph.get(&from).is_some_and(|t| t.contains(&to))
    };
    assert!(has("main", "modes"), "{graph:#?}");
    assert!(has("modes::push", "modes::write"));
    assert!(has("modes::promote", "modes::write::engine_push"));
    assert!(
        has("modes::push::way", "modes::push::record"),
        "a mode's parts may use each other"
    );
    assert!(has("modes::write::tags", "registry"));
    assert!(has("aws::token", "aws"), "super:: paths are read");
    assert!(has("settings", "domain::grammar"), "grouped and nested paths are read");
    assert!(has("report", "domain::manifest"));
    let sample = references(&["modes".into(), "push".into()], "use crate::{report, domain::tag};");
    assert!(sample.contains(&vec!["report".to_string()]), "{sample:?}");
    // And forbidden arrows would be seen: an adapter using another adapter, a stage using a mode, a mode
    // using another mode or another mode's part.
    let mut bad = graph.clone();
    let module = |m: &str| m.split("::").map(String::from).collect::<Vec<String>>();
    for (from, to) in [
        ("registry::copy", "aws::token"),
        ("layout", "modes"),
        ("modes::promote", "modes::push"),
        ("modes::promote", "modes::push::held"),
    ] {
        bad.entry(module(from)).or_default().insert(module(to));
    }
    let found = forbidden(&bad);
    assert_eq!(found.len(), 4, "{found:#?}");
}
