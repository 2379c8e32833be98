//! The config file's JSON Schema (draft 07), derived from the very types the parser reads the file
//! into, so keys, types, defaults and descriptions (the raw types' doc comments) cannot drift from
//! what is accepted. Editors that read JSON Schema for TOML (Taplo, Even Better TOML) complete and
//! check a config file whose first line is `#:schema ./oar-tiles.schema.json`. The configuration
//! reference is generated from the same schema (`reference`).

use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::RawConfig;

mod reference;
pub use reference::reference;

/// The JSON Schema of the configuration file.
pub fn json_schema() -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<RawConfig>().to_value();
    tidy(&mut schema);
    schema
}

/// Marks `key` required in a table's schema: serde fills in an absent array of tables (for the
/// parser to say what is missing in its own words), so the derive does not know it is required.
pub(super) fn require(schema: &mut schemars::Schema, key: &str) {
    let object = schema.ensure_object();
    let required = object
        .entry("required")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(keys) = required {
        keys.push(key.into());
    }
}

/// Fits the generated schema to TOML and to editors: TOML has no null, so an optional key's schema
/// is its value's alone; a description's lines are joined into paragraphs, as an editor's hover
/// wraps them itself; integer formats (`uint32`), which no TOML tool checks, are dropped.
fn tidy(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::Array(types)) = object.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    object.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(choices)) = object.get_mut(key) {
                    choices.retain(|choice| choice.get("type").is_none_or(|t| t != "null"));
                    // An optional table: draft 07 reads `allOf` beside a description, as for the
                    // required ones.
                    if choices.len() == 1 && !object.contains_key("allOf") {
                        if let Some(only) = object.remove(key) {
                            object.insert("allOf".into(), only);
                        }
                    }
                }
            }
            if let Some(Value::String(text)) = object.get_mut("description") {
                *text = paragraphs(text);
            }
            if object
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| {
                    f.starts_with("uint") || f.starts_with("int") || f == "double" || f == "float"
                })
            {
                object.remove("format");
            }
            object.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// Doc-comment text with its lines joined: a blank line still separates paragraphs.
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests;
