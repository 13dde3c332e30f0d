//! The crate's modules form layers: no top-level module reaches, through `crate::` paths in
//! code that is not a test, one that reaches it back. A cycle is where a settings type learns an
//! implementation or a store learns a source, and it is easy to add one by accident: this test
//! reads the sources and names the first cycle it finds with the lines that make it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → (module it names → first `file:line` naming it).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn is_test_file(rel: &str) -> bool {
    let stem = rel
        .rsplit('/')
        .next()
        .unwrap_or(rel)
        .trim_end_matches(".rs");
    stem == "tests" || stem.ends_with("_tests") || rel.starts_with("testkit")
}

/// The code of a file without comments and without what `#[cfg(test)]` marks: a one-line item
/// (`mod tests;`, a `use`) or the inline test module that ends the file.
fn code(text: &str) -> Vec<(usize, &str)> {
    let mut lines = text.lines().enumerate();
    let mut kept = Vec::new();
    while let Some((at, line)) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            match lines.next() {
                Some((_, item)) if item.trim_end().ends_with('{') => break,
                _ => continue,
            }
        }
        kept.push((at + 1, line.split("//").next().unwrap_or("")));
    }
    kept
}

fn graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for entry in walkdir::WalkDir::new(src).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(src).unwrap().to_string_lossy();
        if !rel.ends_with(".rs") || is_test_file(&rel) || rel == "lib.rs" || rel == "main.rs" {
            continue;
        }
        let top = rel.split(['/', '.']).next().unwrap().to_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for (line_no, line) in code(&text) {
            for (at, _) in line.match_indices("crate::") {
                let named: String = line[at + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let is_module = src.join(format!("{named}.rs")).exists()
                    || src.join(&named).join("mod.rs").exists();
                if is_module && named != top {
                    graph
                        .entry(top.clone())
                        .or_default()
                        .entry(named)
                        .or_insert_with(|| format!("src/{rel}:{line_no}"));
                }
            }
        }
    }
    graph
}

/// A path from `from` back to `from`, if there is one.
fn cycle_through(graph: &Graph, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flat_map(|n| n.keys()) {
            if next == from {
                return Some(path.iter().cloned().chain([next.clone()]).collect());
            }
            if seen.insert(next.clone()) {
                stack.push(path.iter().cloned().chain([next.clone()]).collect());
            }
        }
    }
    None
}

#[test]
fn no_module_reaches_one_that_reaches_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(graph.len() > 10, "read too little of {}", src.display());
    for module in graph.keys() {
        if let Some(cycle) = cycle_through(&graph, module) {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|pair| format!("{} -> {} ({})", pair[0], pair[1], graph[&pair[0]][&pair[1]]))
                .collect();
            panic!("a cycle of modules:\n  {}", steps.join("\n  "));
        }
    }
}
