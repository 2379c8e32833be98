//! The import rules of ARCHITECTURE.md, checked: every module imports only modules of lower layers
//! (and itself), so imports point one way down the pipeline and into the shared leaves; and inside
//! a module, no files import each other in a circle; and no file or function grows past what a
//! reader takes in at once ([`lengths`]).

mod lengths;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the leaves up; a module may use only modules of a lower layer, or its own.
const LAYERS: &[&[&str]] = &[
    &["tile"],
    &["error", "retry", "redact"],
    &["config"],
    // Connections, as libpq makes them: every stage that talks to PostgreSQL builds on it; and
    // object stores, which outputs, outboxes and shard parts in remote stores are written through.
    &["db", "store"],
    &["job"],
    &["plan"],
    &["render"],
    &["state"],
    &["encode"],
    // What lets runs, shards, partitions and consumers of changes share an output, whatever its
    // format: locks, outboxes, feeds, shard parts, partition indexes.
    &["coordination"],
    &["sink"],
    // Purging CDNs of what the outputs' outboxes hand over.
    &["edge"],
    &["report"],
    &["schedule", "metrics"],
    // Handing an output's changes to its outbox's consumers (CDN purges, the changes feed, a
    // partitioned tileset's own outbox), which `partition` and `seed` call after a run.
    &["delivery"],
    // `partition` expands a job into one tileset per value before `seed` runs it, and writes the
    // partition index after.
    &["partition"],
    &["seed", "inspect"],
    // `validate` renders through `seed` (`--against-db`); `watch` runs its sample check.
    &["validate"],
    // The HTTP listeners' connection cap and timeouts, and the answers they give alike, which
    // `serve` and `watch` share.
    &["listen"],
    // `serve` shows what `inspect` reads, through its reader and inventory; `watch` repeats `seed`.
    &["serve", "watch"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// `(importing module, imported module, file)` for every `crate::` path outside comments.
fn imports() -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for (module, path) in module_files() {
        let relative = path.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for (index, _) in code.match_indices("crate::") {
                let target: String = code[index + "crate::".len()..]
                    .chars()
                    .take_while(|c| is_ident(*c))
                    .collect();
                found.push((module[0].clone(), target, relative.clone()));
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_from_lower_layers() {
    let imports = imports();
    assert!(imports.len() > 50, "the scan found the crate's imports");
    let mut wrong = Vec::new();
    for (module, target, file) in &imports {
        let (Some(from), Some(to)) = (layer_of(module), layer_of(target)) else {
            wrong.push(format!(
                "{file}: `{module}` or `{target}` has no layer in LAYERS"
            ));
            continue;
        };
        if module != target && to >= from {
            wrong.push(format!(
                "{file}: `{module}` imports `{target}`, which is not below it"
            ));
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

/// Every `.rs` file under `src/` but the crate roots and this file, with its module path
/// (`sink/objects/mod.rs` is `["sink", "objects"]`, `coordination/lock.rs` is `["coordination", "lock"]`).
fn module_files() -> BTreeMap<Vec<String>, PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    for path in lengths::source_files() {
        let relative = path.strip_prefix(&root).unwrap().with_extension("");
        let mut module: Vec<String> = relative
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect();
        if module.last().is_some_and(|last| last == "mod") {
            module.pop();
        }
        let root_file =
            matches!(module.as_slice(), [one] if ["main", "cli", "lib"].contains(&one.as_str()));
        if !root_file && module[0] != "architecture" {
            files.insert(module, path);
        }
    }
    files
}

/// The paths a line of code names, as written after `crate::`, `super::` or `self::` (with
/// `{a, b::{c, d}}` groups opened), resolved against `module`; a glob's bare names are not seen.
fn named_paths(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        for (index, _) in code.match_indices(start) {
            if code[..index].ends_with(|c: char| is_ident(c) || c == ':') {
                continue;
            }
            // `super` in `a/b.rs` and in `a/b/mod.rs` both name `a`: the file's module's parent.
            let mut base: Vec<String> = match start {
                "crate::" => Vec::new(),
                "self::" => module.to_vec(),
                _ => module[..module.len().saturating_sub(1)].to_vec(),
            };
            let mut rest = &code[index + start.len()..];
            while let Some(tail) = rest.strip_prefix("super::") {
                base.pop();
                rest = tail;
            }
            expand(base, rest, &mut found);
        }
    }
    found
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Adds the paths `text` names below `prefix`: `a::b`, or `a::{b, c::{d}}` opened into each path.
fn expand(mut prefix: Vec<String>, mut text: &str, found: &mut Vec<Vec<String>>) {
    loop {
        text = text.trim_start();
        let name: String = text.chars().take_while(|c| is_ident(*c)).collect();
        if name.is_empty() {
            break;
        }
        prefix.push(name.clone());
        text = &text[name.len()..];
        match text.strip_prefix("::") {
            Some(tail) => text = tail,
            None => break,
        }
    }
    let Some(group) = text.strip_prefix('{') else {
        found.push(prefix);
        return;
    };
    let (mut depth, mut item_start) = (0usize, 0usize);
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                expand(prefix.clone(), &group[item_start..at], found);
                return;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(prefix.clone(), &group[item_start..at], found);
                item_start = at + 1;
            }
            _ => {}
        }
    }
    // A group continued on the next lines: what this line holds of it.
    expand(prefix, &group[item_start..], found);
}

/// `file -> files it imports from`, inside the crate. A folder's `mod.rs` declares and re-exports
/// its files, so its imports of its own descendants are not counted: a circle is between files
/// that use each other.
fn file_imports() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let files = module_files();
    let mut graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let targets = graph.entry(path.clone()).or_default();
        for line in text.lines() {
            let code = line.trim_start();
            // A file's own unit tests, at its end, may use anything of it.
            if code.starts_with("#[cfg(test)]") {
                break;
            }
            if code.starts_with("//") {
                continue;
            }
            for named in named_paths(module, code) {
                let target = (0..=named.len())
                    .rev()
                    .find_map(|n| files.get_key_value(&named[..n]));
                if let Some((target_module, target_path)) = target {
                    if target_path != path && !target_module.starts_with(module) {
                        targets.insert(target_path.clone());
                    }
                }
            }
        }
    }
    graph
}

/// The strongly connected groups of more than one file (Tarjan's algorithm).
fn circles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct Search<'g> {
        graph: &'g BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'g PathBuf, usize>,
        low: BTreeMap<&'g PathBuf, usize>,
        stack: Vec<&'g PathBuf>,
        found: Vec<Vec<PathBuf>>,
    }
    impl<'g> Search<'g> {
        fn visit(&mut self, node: &'g PathBuf) {
            let number = self.index.len();
            self.index.insert(node, number);
            self.low.insert(node, number);
            self.stack.push(node);
            for next in self.graph.get(node).into_iter().flatten() {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.stack.contains(&next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut group = Vec::new();
                while let Some(member) = self.stack.pop() {
                    group.push(member.clone());
                    if member == node {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !search.index.contains_key(node) {
            search.visit(node);
        }
    }
    search.found
}

#[test]
fn no_files_import_each_other_in_a_circle_at_any_depth() {
    let graph = file_imports();
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    assert!(edges > 100, "the scan found the files' imports ({edges})");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found: Vec<String> = circles(&graph)
        .iter()
        .map(|group| {
            group
                .iter()
                .map(|p| p.strip_prefix(root).unwrap().display().to_string())
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "files importing each other:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_circle_check_sees_a_circle_between_two_files() {
    let a = PathBuf::from("a.rs");
    let b = PathBuf::from("b.rs");
    let c = PathBuf::from("c.rs");
    let graph = BTreeMap::from([
        (a.clone(), BTreeSet::from([b.clone()])),
        (b.clone(), BTreeSet::from([a.clone(), c.clone()])),
        (c.clone(), BTreeSet::new()),
    ]);
    assert_eq!(circles(&graph), vec![vec![a, b]]);
    let module = ["sink".to_string(), "s3".to_string()];
    assert_eq!(
        named_paths(&module, "use super::{shards::{PartOf, Part}, lock};"),
        [
            ["sink", "shards", "PartOf"],
            ["sink", "shards", "Part"],
            ["sink", "lock", ""]
        ]
        .map(|path| path
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
            .collect::<Vec<_>>())
    );
}

/// The files and folders ARCHITECTURE.md names in backquotes or links: a path from the
/// repository's root (`src/seed/mod.rs`), from `src/` (`seed/prepare.rs`) or from a stage's folder
/// (`mbtiles/check.rs` in the sink's row). Placeholders in capitals (`src/sink/KIND/`) are not
/// paths.
fn named_in_architecture(text: &str) -> Vec<String> {
    let mut named = Vec::new();
    for piece in text.split(['`', '(', ')']) {
        let piece = piece.trim();
        let looks_like_path = piece.contains('/')
            && (piece.ends_with(".rs") || piece.ends_with('/') || piece.ends_with(".sh"))
            && !piece.contains(' ')
            && !piece.contains("://")
            && !piece.contains('{');
        let placeholder = piece
            .split('/')
            .any(|part| part.len() > 1 && part.chars().all(|c| c.is_ascii_uppercase()));
        let placeholder = placeholder || piece.split('/').any(|part| part.starts_with("NAME"));
        if looks_like_path && !placeholder {
            named.push(piece.to_string());
        }
    }
    named
}

#[test]
fn every_path_architecture_md_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let stages: Vec<PathBuf> = std::fs::read_dir(root.join("src"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    let missing: Vec<String> = named_in_architecture(&text)
        .into_iter()
        .filter(|named| {
            // The test suite, scripts and book are named from the repository's root only, so
            // `tests/gone.rs` is not found as some stage's own `tests/` folder.
            let from_root = ["tests/", "scripts/", "docs/", ".ci/"]
                .iter()
                .any(|top| named.starts_with(top));
            let bases = [root.to_path_buf(), root.join("src")];
            let bases = if from_root { &bases[..1] } else { &bases[..] };
            !bases
                .iter()
                .chain(if from_root { &[][..] } else { &stages[..] })
                .any(|base| base.join(named).exists())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that are not there: {missing:?}"
    );
    let named = named_in_architecture("see `src/seed/gone.rs` and (src/sink/KIND/) or `NAME.rs`");
    assert_eq!(named, ["src/seed/gone.rs"], "the check reads paths");
}
