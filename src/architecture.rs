//! The import rule of ARCHITECTURE.md, checked: every module imports only modules of lower layers
//! (and itself), so imports point one way down the pipeline and into the shared leaves.

/// Layers from the leaves up; a module may use only modules of a lower layer, or its own.
const LAYERS: &[&[&str]] = &[
    &["tile"],
    &["error", "retry"],
    &["config"],
    // Connections, as libpq makes them: every stage that talks to PostgreSQL builds on it.
    &["db"],
    &["job"],
    &["plan"],
    &["render"],
    &["state"],
    &["encode"],
    &["sink"],
    &["report"],
    &["schedule", "metrics"],
    &["seed", "inspect"],
    // `serve` shows what `inspect` reads, through its reader and inventory; `watch` repeats `seed`;
    // `partition` expands a job for `seed` and counts each partition's tiles with `inspect`'s reader.
    &["serve", "watch", "partition"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// `(importing module, imported module, file)` for every `crate::` path outside comments.
fn imports() -> Vec<(String, String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            // Only Rust files import; assets (a page, images) sit beside them.
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let module = relative
                .split(['/', '.'])
                .next()
                .unwrap_or_default()
                .to_string();
            if ["main", "lib", "architecture"].contains(&module.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for (index, _) in code.match_indices("crate::") {
                    let rest = &code[index + "crate::".len()..];
                    let target: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    found.push((module.clone(), target, relative.clone()));
                }
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
