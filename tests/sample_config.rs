//! `sample-config.toml` shows every key `config schema` defines: set, or in a commented-out
//! example, which this test uncomments and parses, so the examples stay ones the tool accepts.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::run::oar_tiles;

/// Keys the sample leaves out on purpose, and why.
const LEFT_OUT: &[(&str, &str)] = &[(
    "s3",
    "the old name of [store], still read (with a warning) but not to be shown to new users",
)];

/// Every key path the schema defines (`tileset.cdn.zone_id`), through `$ref`s, arrays and
/// `anyOf`s; a table of free names (`freshness.cache_control`) counts as the table.
fn schema_keys(schema: &serde_json::Value) -> BTreeSet<String> {
    fn walk(
        node: &serde_json::Value,
        defs: &serde_json::Value,
        prefix: &str,
        depth: usize,
        out: &mut BTreeSet<String>,
    ) {
        let node = match node.get("$ref").and_then(|r| r.as_str()) {
            Some(reference) => &defs[reference.rsplit('/').next().unwrap()],
            None => node,
        };
        if depth > 10 {
            return;
        }
        for branch in ["anyOf", "oneOf", "allOf"] {
            for sub in node[branch].as_array().into_iter().flatten() {
                walk(sub, defs, prefix, depth + 1, out);
            }
        }
        if node["items"].is_object() {
            walk(&node["items"], defs, prefix, depth + 1, out);
        }
        for (key, value) in node["properties"].as_object().into_iter().flatten() {
            let path = match prefix {
                "" => key.clone(),
                _ => format!("{prefix}.{key}"),
            };
            out.insert(path.clone());
            walk(value, defs, &path, depth + 1, out);
        }
    }
    let defs = schema
        .get("definitions")
        .or_else(|| schema.get("$defs"))
        .cloned()
        .unwrap_or_default();
    let mut keys = BTreeSet::new();
    walk(schema, &defs, "", 0, &mut keys);
    keys
}

/// A line of a commented-out example that is TOML once one `# ` is taken off: a table header, a
/// key, or a comment of the example's own (`# # ...`).
fn is_commented_toml(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("# ")?;
    let first = rest.chars().next()?;
    let key = rest.split(" = ").next().unwrap_or("");
    let is_key = rest.contains(" = ")
        && !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-\"".contains(c));
    (first == '[' || first == '#' || is_key).then_some(rest)
}

/// The sample with every commented-out example table uncommented: from a `# [table]` line to the
/// next blank line, TOML lines lose one `# ` (an example's own comments stay comments).
fn uncommented(sample: &str) -> String {
    let mut out = Vec::new();
    let mut in_example = false;
    for line in sample.lines() {
        if line.trim().is_empty() {
            in_example = false;
        } else if line.starts_with("# [") {
            in_example = true;
        }
        match (in_example, is_commented_toml(line)) {
            (true, Some(toml)) => out.push(toml.to_string()),
            _ => out.push(line.to_string()),
        }
    }
    out.join("\n") + "\n"
}

/// Every key path of a TOML document, set or in a comment shaped like one (`# key = ...`,
/// `# # key = ...`), under the table header above it.
fn sample_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut table = String::new();
    for line in text.lines() {
        let mut line = line.trim();
        while let Some(rest) = line.strip_prefix('#') {
            line = rest.trim_start();
        }
        if line.starts_with('[') {
            table = line.trim_matches(|c| c == '[' || c == ']').to_string();
            keys.insert(table.clone());
            continue;
        }
        if let Some((key, _)) = line.split_once(" = ") {
            if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty() {
                keys.insert(match table.as_str() {
                    "" => key.to_string(),
                    _ => format!("{table}.{key}"),
                });
            }
        }
    }
    keys
}

#[test]
fn the_sample_config_shows_every_key_of_the_schema_and_its_examples_parse() {
    let schema = oar_tiles(None, &["config", "schema"]);
    schema.assert_success();
    let schema: serde_json::Value = serde_json::from_str(&schema.stdout).unwrap();
    let defined = schema_keys(&schema);
    assert!(defined.len() > 90, "{defined:?}");

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-config.toml");
    let sample = std::fs::read_to_string(&path).unwrap();
    let shown = sample_keys(&sample);
    let missing: Vec<&String> = defined
        .iter()
        .filter(|key| !shown.contains(*key))
        .filter(|key| {
            !LEFT_OUT
                .iter()
                .any(|(table, _)| key.as_str() == *table || key.starts_with(&format!("{table}.")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "sample-config.toml does not show these keys of `config schema`: {missing:?}"
    );
    let unknown: Vec<&String> = shown.iter().filter(|key| !defined.contains(*key)).collect();
    assert!(
        unknown
            .iter()
            .all(|key| key.starts_with("tileset.freshness.cache_control")),
        "sample-config.toml shows keys the schema does not define: {unknown:?}"
    );

    let examples = uncommented(&sample);
    assert!(
        examples.matches("\n[[tileset.cdn]]").count() >= 4,
        "{examples}"
    );
    let instance: serde_json::Value = toml::from_str(&examples).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let refused: Vec<String> = validator
        .iter_errors(&instance)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect();
    assert!(
        refused.is_empty(),
        "`config schema` refuses the sample's examples: {refused:#?}"
    );
    if let Err(err) = oar_tiles::Config::parse(&path, &examples, None) {
        panic!("sample-config.toml's commented-out examples, uncommented, do not parse: {err}\n{examples}");
    }
}

/// The uncommenting takes off one level of `# ` from an example's TOML lines only.
#[test]
fn uncommenting_keeps_prose_and_an_examples_own_comments() {
    let text = "# prose\n# [table]\n# key = 1\n# # note\n# more prose\n\n# other = 2\n";
    assert_eq!(
        uncommented(text),
        "# prose\n[table]\nkey = 1\n# note\n# more prose\n\n# other = 2\n"
    );
    let keys = sample_keys("[a]\nx = 1\n# y = 2\n# # z = 3\n# [b]\n# w = 4\n");
    let expected = ["a", "a.x", "a.y", "a.z", "b", "b.w"];
    assert_eq!(keys, expected.iter().map(|k| k.to_string()).collect());
}
