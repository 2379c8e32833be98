//! The `[store]` table (formerly `[s3]`): how outputs in a remote object store (S3, an
//! S3-compatible store, Azure Blob Storage, Google Cloud Storage) are reached and written, and
//! which of its keys only one kind of store takes.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::Scheme;
use crate::error::Error;

/// How outputs in a remote object store are reached and written: S3, an S3-compatible store
/// (MinIO, Ceph, R2), Azure Blob Storage or Google Cloud Storage. Most keys apply to every store;
/// those only one kind takes (its `own_store_keys` in [`Scheme`]'s table) are refused where no output is of that kind. Credentials always come from the store's standard
/// chain (for S3: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, an instance
/// role), never from this file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
#[schemars(rename = "Store")]
pub struct StoreConfig {
    /// S3 only (`s3://` outputs): endpoint URL of an S3-compatible store (MinIO, Ceph, R2); leave
    /// out for AWS. `AWS_ENDPOINT_URL` also works. Refused at its line when every output is in
    /// another store (Azure's and GCS's endpoints come from their environment variables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 only (`s3://` outputs): the region. Default: from the AWS chain (`AWS_REGION`, the
    /// profile), else us-east-1. Refused when every output is in another store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3 only (`s3://` outputs): path-style addressing (`endpoint/bucket/key`), which most
    /// S3-compatible stores need. Refused when every output is in another store.
    pub force_path_style: bool,
    /// Public base URL that serves the bucket's objects, such as a CDN domain whose origin is the
    /// bucket: `tiles.json` names absolute tile URLs under it (`{public_url}/{prefix}/{z}/{x}/{y}.pbf`).
    /// Default: the bucket's own address. A tileset's `tiles_url`, when set, wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^{]*$"))]
    pub public_url: Option<String>,
    /// Uploads in flight at once (1 to 256).
    #[schemars(range(min = 1, max = 256))]
    pub max_concurrent_uploads: usize,
    /// Attempts per request (1 to 20): 5xx answers, connection failures and throttled reads are
    /// retried with exponential backoff; a tile that still fails fails the job, naming the tile.
    /// Writes the store refuses as too fast are paced instead (`throttle_budget`).
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: u32,
    /// Size in MiB of the parts of a multipart upload (5 to 5120): a PMTiles archive larger than
    /// one part is uploaded in parts of this size (S3 needs at least 5).
    #[schemars(range(min = 5, max = 5120))]
    pub part_size_mib: u64,
    /// Longest one attempt may take to connect to the store (a duration: "500ms", "10s").
    #[schemars(regex(pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+\s*$"))]
    pub connect_timeout: String,
    /// Longest one attempt may wait for the store's answer once its request is sent (a
    /// duration). A store that stays silent past it (hung, or a proxy in between) is asked
    /// again, up to `max_attempts`, and then the run fails naming the object.
    #[schemars(regex(pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+\s*$"))]
    pub request_timeout: String,
    /// How long one write the store refuses as too fast (S3's `503 SlowDown`, GCS's `429`,
    /// Azure's `503 ServerBusy`) keeps being sent again, at the pace the store takes, before it
    /// fails the run (a duration). Such refusals do not count against `max_attempts`: a first
    /// seed into a new bucket meets them until the store scales.
    #[schemars(regex(pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+\s*$"))]
    pub throttle_budget: String,
}

impl StoreConfig {
    /// [`StoreConfig::connect_timeout`] as a duration (checked when the config was read).
    pub fn connect_timeout(&self) -> Duration {
        humantime::parse_duration(&self.connect_timeout).unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// [`StoreConfig::request_timeout`] as a duration (checked when the config was read).
    pub fn request_timeout(&self) -> Duration {
        humantime::parse_duration(&self.request_timeout).unwrap_or(DEFAULT_REQUEST_TIMEOUT)
    }

    /// [`StoreConfig::throttle_budget`] as a duration (checked when the config was read).
    pub fn throttle_budget(&self) -> Duration {
        humantime::parse_duration(&self.throttle_budget).unwrap_or(DEFAULT_THROTTLE_BUDGET)
    }
}

/// How long an attempt may take to connect unless `connect_timeout` says.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an attempt may wait for its answer unless `request_timeout` says.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write refused as too fast is sent again unless `throttle_budget` says.
const DEFAULT_THROTTLE_BUDGET: Duration = Duration::from_secs(30 * 60);

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            force_path_style: false,
            public_url: None,
            max_concurrent_uploads: 16,
            max_attempts: 6,
            part_size_mib: 8,
            connect_timeout: "10s".into(),
            request_timeout: "60s".into(),
            throttle_budget: "30m".into(),
        }
    }
}

/// The keys of `[store]` (or `[s3]`) as written, each with where it is written.
#[derive(Deserialize)]
struct WrittenStoreKeys {
    #[serde(default)]
    store: BTreeMap<Spanned<String>, toml::Value>,
    #[serde(default)]
    s3: BTreeMap<Spanned<String>, toml::Value>,
}

/// Refuses, at its own line, a `[store]` key only other kinds of store take than those the
/// `outputs` (the tilesets' addresses) are in, naming the kind that takes it. A config with no
/// remote output keeps every key: its `[store]` serves the outputs named on the command line.
pub(super) fn refuse_other_kinds_keys<'a>(
    text: &str,
    outputs: impl Iterator<Item = &'a str>,
    at: &impl Fn(Option<Range<usize>>, String) -> Error,
) -> Result<(), Error> {
    let mut schemes: Vec<Scheme> = outputs
        .filter_map(|output| Scheme::of(output.strip_prefix("pmtiles:").unwrap_or(output)))
        .collect();
    schemes.sort_by_key(|scheme| scheme.prefix());
    schemes.dedup();
    if schemes.is_empty() {
        return Ok(());
    }
    let written: WrittenStoreKeys =
        toml::from_str(text).map_err(|err| at(err.span(), err.message().into()))?;
    let in_use: Vec<&str> = schemes.iter().map(|scheme| scheme.prefix()).collect();
    for key in written.store.keys().chain(written.s3.keys()) {
        let name = key.get_ref().as_str();
        let Some(owner) = Scheme::ALL
            .iter()
            .find(|kind| kind.facts().own_store_keys.contains(&name))
        else {
            continue;
        };
        if !schemes.contains(owner) {
            return Err(at(
                Some(key.span()),
                format!(
                    "store.{name} is not a key of the outputs' store ({}): only {} outputs take it; \
                     remove it (the other stores read their settings from the environment)",
                    in_use.join(", "),
                    owner.prefix()
                ),
            ));
        }
    }
    Ok(())
}

/// The `[store]` table, or the `[s3]` table of older config files (with a warning in
/// `warnings`), but not both; each checked.
pub(super) fn resolve_store(
    store: Option<Spanned<StoreConfig>>,
    s3: Option<Spanned<StoreConfig>>,
    warnings: &mut Vec<String>,
    at: &impl Fn(Option<Range<usize>>, String) -> Error,
) -> Result<StoreConfig, Error> {
    let store = match (store, s3) {
        (Some(_), Some(old)) => {
            return Err(at(
                Some(old.span()),
                "both [store] and [s3] are present: [s3] is the old name of [store]; move its \
                 keys into [store] and remove it"
                    .into(),
            ))
        }
        (Some(store), None) => store.into_inner(),
        (None, Some(old)) => {
            warnings.push(
                "the [s3] table is now called [store] (it configures every remote store, Azure \
                 included): rename it; [s3] is still read for now"
                    .into(),
            );
            old.into_inner()
        }
        (None, None) => StoreConfig::default(),
    };
    if !(1..=256).contains(&store.max_concurrent_uploads) || !(1..=20).contains(&store.max_attempts)
    {
        return Err(at(
            None,
            "store.max_concurrent_uploads must lie in 1..=256 and store.max_attempts in 1..=20"
                .into(),
        ));
    }
    // S3 refuses parts under 5 MiB (but the last) and uploads of over 10,000 parts.
    if !(5..=5120).contains(&store.part_size_mib) {
        return Err(at(
            None,
            "store.part_size_mib must lie in 5..=5120 (S3 refuses smaller parts)".into(),
        ));
    }
    for (key, value) in [
        ("connect_timeout", &store.connect_timeout),
        ("request_timeout", &store.request_timeout),
        ("throttle_budget", &store.throttle_budget),
    ] {
        match humantime::parse_duration(value) {
            Ok(duration) if !duration.is_zero() => {}
            _ => {
                return Err(at(
                    None,
                    format!("store.{key} `{value}` is not a duration like \"30s\""),
                ))
            }
        }
    }
    if let Some(url) = &store.public_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains('{') {
            return Err(at(
                None,
                format!(
                    "store.public_url `{url}` must be a base URL such as \"https://tiles.example.org\""
                ),
            ));
        }
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, Scheme};

    /// A config whose one tileset writes to `output`, with `key_line` in `[store]` (line 2).
    fn config(output: &str, key_line: &str) -> String {
        format!(
            "[store]\n{key_line}\n\n[database]\nurl = \"postgresql://u@db/oar\"\n\n\
             [[tileset]]\nname = \"t\"\noutput = \"{output}\"\n\n[[tileset.layer]]\n\
             name = \"l\"\ntable = \"public.t\"\ngeometry_column = \"geom\"\n"
        )
    }

    fn value_of(key: &str) -> &'static str {
        match key {
            "force_path_style" => "true",
            _ => "\"x\"",
        }
    }

    #[test]
    fn a_kinds_own_key_is_refused_at_its_line_where_no_output_is_of_that_kind() {
        let s3_keys = Scheme::S3.facts().own_store_keys;
        assert!(s3_keys.contains(&"endpoint") && s3_keys.contains(&"region"));
        for &key in s3_keys {
            for output in ["az://tiles/v1", "gs://tiles/v1", "gs://tiles/v1.pmtiles"] {
                let text = config(output, &format!("{key} = {}", value_of(key)));
                let err = Config::parse(Path::new("conf/oar.toml"), &text, None)
                    .expect_err(&format!("{key} on {output} is refused"))
                    .to_string();
                let scheme = &output[..5];
                assert_eq!(
                    err,
                    format!(
                        "conf/oar.toml:2:1: store.{key} is not a key of the outputs' store \
                         ({scheme}): only s3:// outputs take it; remove it (the other stores \
                         read their settings from the environment)"
                    ),
                    "{key} on {output}"
                );
            }
            for output in ["s3://tiles/v1", "out.mbtiles"] {
                let text = config(output, &format!("{key} = {}", value_of(key)));
                let parsed = Config::parse(Path::new("conf/oar.toml"), &text, None);
                assert!(parsed.is_ok(), "{key} on {output}: {parsed:?}");
            }
        }
    }
}
