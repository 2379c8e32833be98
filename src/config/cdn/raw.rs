//! The `[[tileset.cdn]]` table as written: the keys every kind shares, declared once here, and
//! the table's keys with where each is written, from which a kind reads its own keys (declared in
//! its own file). The config's schema and reference are generated from these declarations and
//! the kinds' registry, [`super::KINDS`].

use std::collections::BTreeMap;
use std::ops::Range;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use toml::Spanned;

use super::{Fault, DEFAULT_PURGE_TIMEOUT, DEFAULT_REFETCH_PRICE, DEFAULT_REQUEST_TIMEOUT, KINDS};

/// The keys every kind takes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SharedKeys {
    /// What the cache is (the kinds are listed in the schema, from the kinds' registry); optional
    /// here only so that each key can be read alone, required by `resolve_cdn`.
    pub(super) kind: Option<String>,
    /// Its name in logs, metrics and the outbox (letters, digits, `-`, `_`); unique in the
    /// tileset. Default: the kind.
    pub(super) name: Option<String>,
    /// The public URL the output is served under through this cache: the absolute URLs
    /// Cloudflare and Fastly purge, and where the edge check fetches changed tiles.
    pub(super) public_url: Option<String>,
    /// How long one purge request may go unanswered before it counts as failed and is retried
    /// (a duration above zero).
    #[schemars(extend("default" = humantime::format_duration(DEFAULT_REQUEST_TIMEOUT).to_string()))]
    pub(super) request_timeout: Option<String>,
    /// How long the target's whole purge of a run may take, retries included (at least
    /// `request_timeout`); past it what the target did not accept waits in the outbox.
    #[schemars(extend("default" = humantime::format_duration(DEFAULT_PURGE_TIMEOUT).to_string()))]
    pub(super) purge_timeout: Option<String>,
    /// The CDN's price per purged path in US dollars, a wildcard counting one. Default:
    /// CloudFront's 0.005 for `cloudfront`, 0 for the others.
    pub(super) price_per_path: Option<f64>,
    /// The price in US dollars of refetching one unchanged tile a wildcard evicted.
    #[schemars(extend("default" = DEFAULT_REFETCH_PRICE))]
    pub(super) refetch_price: Option<f64>,
    /// At most this many US dollars of purges a day, paced through the day; past it purges turn
    /// coarser or wait in the outbox, never lost. Default: no limit.
    pub(super) budget_per_day: Option<f64>,
    /// At most this many US dollars of purges per run or `watch` cycle. Default: no limit.
    pub(super) budget_per_run: Option<f64>,
}

/// A `[[tileset.cdn]]` table's keys as written, each with where it is written, not yet sorted into
/// the shared keys and the kind's: which keys a table may hold depends on its `kind`, so a key is
/// judged once the kind is known, and refused at its own line when another kind takes it.
#[derive(Debug)]
pub(in crate::config) struct RawCdn {
    keys: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

impl<'de> Deserialize<'de> for RawCdn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(RawCdn {
            keys: BTreeMap::deserialize(deserializer)?,
        })
    }
}

impl RawCdn {
    /// The keys `T` declares (serde's field names, which its schema lists), read into it; a key
    /// of the wrong type is named with its span.
    pub(super) fn read<T: DeserializeOwned + JsonSchema>(&self) -> Result<T, Fault> {
        let names = key_names(&T::json_schema(&mut SchemaGenerator::default()));
        let mine: Vec<(&Spanned<String>, &Spanned<toml::Value>)> = self
            .keys
            .iter()
            .filter(|(key, _)| names.iter().any(|name| name == key.get_ref()))
            .collect();
        let table = |keys: &[(&Spanned<String>, &Spanned<toml::Value>)]| {
            let mut table = toml::Table::new();
            for (key, value) in keys {
                table.insert(key.get_ref().clone(), value.get_ref().clone());
            }
            T::deserialize(toml::Value::Table(table))
        };
        table(&mine).map_err(|whole| {
            // Each key is optional or checked by its kind: alone, only a key of the wrong type
            // fails, which names the line at fault.
            mine.iter()
                .find_map(|pair| {
                    let alone = table(std::slice::from_ref(pair)).err()?;
                    let message = alone.to_string().trim_end().to_string();
                    Some((
                        Some(pair.1.span()),
                        format!("{}: {message}", pair.0.get_ref()),
                    ))
                })
                .unwrap_or_else(|| (None, whole.to_string().trim_end().to_string()))
        })
    }

    /// `value` of `key` with the span of where the key's value is written, if it is.
    pub(super) fn spanned<T>(&self, key: &str, value: Option<T>) -> Option<Spanned<T>> {
        let span = self.span(key)?;
        value.map(|value| Spanned::new(span, value))
    }

    /// Where `key`'s value is written.
    pub(super) fn span(&self, key: &str) -> Option<Range<usize>> {
        self.keys.get(key).map(Spanned::span)
    }

    /// The table's keys and where each is written, in the order of their names.
    pub(super) fn keys(&self) -> impl Iterator<Item = &Spanned<String>> {
        self.keys.keys()
    }
}

/// The keys a struct's schema declares (its flattened structs' included).
pub(super) fn key_names(schema: &Schema) -> Vec<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

/// A cache in front of the output that `seed` and `watch` purge of the tiles they change. Secrets
/// (API tokens, purge keys) are named by their environment variable, never written here. The
/// shared keys, then each kind's from its own file; a key two kinds declare is listed once.
impl JsonSchema for RawCdn {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cdn".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = SharedKeys::json_schema(generator);
        let mut owners: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        let mut own_keys = Map::new();
        for kind in KINDS {
            let keys = (kind.keys)(generator);
            for (key, property) in keys
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                owners.entry(key.clone()).or_default().push(kind.name);
                own_keys.entry(key.clone()).or_insert(property.clone());
            }
        }
        let object = schema.ensure_object();
        object.insert(
            "description".into(),
            "A cache in front of the output that `seed` and `watch` purge of the tiles they \
             change. Secrets (API tokens, purge keys) are named by their environment variable, \
             never written here."
                .into(),
        );
        object.insert("additionalProperties".into(), false.into());
        let Some(Value::Object(properties)) = object.get_mut("properties") else {
            return schema;
        };
        properties.insert("kind".into(), kind_property());
        for (key, mut property) in own_keys {
            let kinds: Vec<String> = owners[&key].iter().map(|k| format!("`{k}`")).collect();
            if let Some(Value::String(text)) = property.get_mut("description") {
                let mut chars = text.chars();
                let first = chars.next().map(|c| c.to_lowercase().to_string());
                *text = format!(
                    "{}: {}{}",
                    kinds.join(", "),
                    first.unwrap_or_default(),
                    chars.as_str()
                );
            }
            properties.insert(key, property);
        }
        crate::config::schema::require(&mut schema, "kind");
        schema
    }
}

/// `kind`: one of the registry's kinds, each described by its own entry.
fn kind_property() -> Value {
    let names: Vec<Value> = KINDS.iter().map(|kind| kind.name.into()).collect();
    let described: Vec<String> = KINDS
        .iter()
        .map(|kind| format!("`{}` ({})", kind.name, kind.summary))
        .collect();
    serde_json::json!({
        "type": "string",
        "enum": names,
        "description": format!("What the cache is: {}.", described.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_of_the_wrong_type_is_named_at_its_own_span() {
        let text = "kind = \"http\"\nname = \"edge\"\nrefetch_price = \"cheap\"";
        let raw: RawCdn = toml::from_str(text).unwrap();
        let (span, message) = raw.read::<SharedKeys>().unwrap_err();
        assert_eq!(span.map(|s| &text[s]), Some("\"cheap\""));
        assert!(message.starts_with("refetch_price: "), "{message}");
    }
}
