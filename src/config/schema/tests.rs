use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;
use crate::config::{Config, ConfigLine, MINIMAL};

/// A file of the repository.
fn repository_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The schema's complaints about a TOML text, one line each; empty when it is valid.
fn schema_errors(text: &str) -> Vec<String> {
    let instance: Value = toml::from_str(text).unwrap();
    let schema = json_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(&instance)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

#[test]
fn the_schema_is_a_valid_draft_07_schema() {
    let schema = json_schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    jsonschema::meta::validate(&schema).unwrap();
}

#[test]
fn the_schema_accepts_the_sample_config_the_parser_accepts() {
    let path = repository_file("sample-config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::parse(&path, &text, None).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let errors = schema_errors(&text);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn unknown_keys_are_refused_by_the_schema_and_the_parser_alike() {
    assert!(schema_errors(MINIMAL).is_empty());
    for (from, to) in [
        ("[database]", "[datbase]"),
        ("[database]", "[database]\npoolsize = 2"),
        ("output =", "ouptut ="),
        ("attributes", "atributes"),
        (
            "[database]",
            "[store]\nendpont = \"http://minio\"\n[database]",
        ),
        ("[database]", "[watch]\ndebounse = \"1s\"\n[database]"),
        (
            "[[tileset.layer]]",
            "[[tileset.cdn]]\nkind = \"http\"\nurll = \"http://c/{path}\"\n[[tileset.layer]]",
        ),
        (
            "[[tileset.layer]]",
            "[tileset.feed]\nretension = 5\n[[tileset.layer]]",
        ),
    ] {
        let text = MINIMAL.replacen(from, to, 1);
        assert_ne!(text, MINIMAL);
        assert!(!schema_errors(&text).is_empty(), "the schema takes {to}");
        let err = Config::parse(Path::new("c.toml"), &text, None).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{to}: {err}");
    }
    // What the schema requires, the parser requires.
    let without_layers = MINIMAL.split("[[tileset.layer]]").next().unwrap();
    assert!(!schema_errors(without_layers).is_empty());
    assert!(Config::parse(Path::new("c.toml"), without_layers, None).is_err());
    let without_tilesets = MINIMAL.split("[[tileset]]").next().unwrap();
    assert!(!schema_errors(without_tilesets).is_empty());
    assert!(Config::parse(Path::new("c.toml"), without_tilesets, None).is_err());
}

/// Configs that between them take every key with a default: `base` plus one extra set of keys
/// for the tileset and its first layer, and one `[[tileset.cdn]]` (or none).
fn bases() -> Vec<toml::Table> {
    let clustered = "cluster_maxzoom = 3\n";
    let cdns = [
        "kind = \"http\"\nurl = \"http://cache.internal/{path}\"",
        "kind = \"cloudflare\"\nzone_id = \"0123456789abcdef0123456789abcdef\"",
        "kind = \"fastly\"\nservice_id = \"SU1Z0isxPaozGVKXdv0eY\"",
        "kind = \"cloudfront\"\ndistribution_id = \"E2QWRUHAPOMQZL\"",
    ];
    let mut texts: Vec<String> = cdns
        .iter()
        .map(|cdn| {
            MINIMAL.replacen(
                "[[tileset.layer]]",
                &format!(
                    "[tileset.freshness]\ndefer_below_zoom = 3\n[tileset.feed]\n\
                     [[tileset.cdn]]\n{cdn}\n[[tileset.layer]]\n{clustered}"
                ),
                1,
            )
        })
        .collect();
    texts.push(
        MINIMAL
            .replacen(
                "output = \"out.mbtiles\"",
                "output = \"out.pmtiles\"\npmtiles_versions = true",
                1,
            )
            .replacen("attributes = [\"name\"]", "", 1),
    );
    // Empty top-level tables, which are their defaults, for the defaults to go in.
    let tables = "[store]\n[changes]\n[watch]\n";
    texts
        .iter()
        .map(|t| toml::from_str(&format!("{tables}{t}")).unwrap())
        .collect()
}

/// Every table of the schema with a path to it, `tileset.layer` as `["tileset", "layer"]`.
fn tables<'a>(
    root: &'a Value,
    schema: &'a Value,
    path: Vec<String>,
    out: &mut Vec<(Vec<String>, &'a Value)>,
) {
    let resolve = |schema: &'a Value| -> &'a Value {
        let reference = schema
            .get("$ref")
            .or_else(|| schema.get("allOf").and_then(|all| all[0].get("$ref")))
            .or_else(|| schema.get("items").and_then(|items| items.get("$ref")));
        match reference.and_then(Value::as_str) {
            Some(reference) => root.pointer(reference.trim_start_matches('#')).unwrap(),
            None => schema,
        }
    };
    let table = resolve(schema);
    let Some(properties) = table.get("properties").and_then(Value::as_object) else {
        return;
    };
    out.push((path.clone(), table));
    for (key, property) in properties {
        if property.get("deprecated").is_none() {
            let mut inner = path.clone();
            inner.push(key.clone());
            tables(root, property, inner, out);
        }
    }
}

/// The table at `path` in `config`, if it has one; in an array of tables, its first.
fn table_at<'a>(config: &'a mut toml::Table, path: &[String]) -> Option<&'a mut toml::Table> {
    let Some((first, rest)) = path.split_first() else {
        return Some(config);
    };
    let table = match config.get_mut(first)? {
        toml::Value::Array(items) => items.first_mut()?.as_table_mut()?,
        other => other.as_table_mut()?,
    };
    table_at(table, rest)
}

/// A config parsed, with what differs between two writings of one config (lines) left out.
fn parsed(config: &toml::Table) -> Result<String, crate::error::Error> {
    let text = toml::to_string(config).unwrap();
    let mut parsed = Config::parse(Path::new("c.toml"), &text, None)?;
    for tileset in &mut parsed.tilesets {
        for cdn in &mut tileset.cdn {
            cdn.defined_at = ConfigLine::default();
        }
    }
    Ok(format!("{parsed:?}"))
}

#[test]
fn every_default_in_the_schema_is_the_parsers() {
    let schema = json_schema();
    let mut found = Vec::new();
    tables(&schema, &schema, Vec::new(), &mut found);
    let bases = bases();
    let mut checked = 0;
    for (path, table) in found {
        for (key, property) in table["properties"].as_object().unwrap() {
            let Some(default) = property.get("default") else {
                continue;
            };
            let value = toml::Value::try_from(default).unwrap();
            let mut taken = false;
            for base in &bases {
                // A table is not made (a feed's is the feed turned on), nor a key replaced.
                let mut with = base.clone();
                match table_at(&mut with, &path) {
                    Some(table) if !table.contains_key(key) => {
                        table.insert(key.clone(), value.clone())
                    }
                    _ => continue,
                };
                // A key another kind of table takes (a CDN's) is refused here: another base has it.
                let Ok(with) = parsed(&with) else { continue };
                let without = parsed(base).unwrap();
                assert_eq!(
                    with,
                    without,
                    "{}.{key} = {value}: the schema's default is not the parser's",
                    path.join(".")
                );
                taken = true;
            }
            assert!(taken, "no config takes {}.{key} = {value}", path.join("."));
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} defaults checked");
}

#[test]
fn the_committed_configuration_reference_is_the_generated_one() {
    let path = "docs/src/reference/configuration.md";
    let committed = std::fs::read_to_string(repository_file(path)).unwrap_or_default();
    assert!(
        committed == reference(),
        "{path} differs from what the config's types generate: regenerate it with \
         `cargo run -- config reference > {path}` and commit it"
    );
}
