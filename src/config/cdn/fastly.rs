//! `kind = "fastly"`: Fastly's purge API for one service.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::api::ApiKeys;
use super::{id, CdnKind, CdnTarget, Fault, RawCdn};

/// The keys only `kind = "fastly"` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct FastlyKeys {
    /// The service's id (8 to 64 letters and digits). Required for `fastly`.
    service_id: Option<String>,
    /// Purge by surrogate key rather than URL by URL: a tile's key is its public URL without
    /// the scheme (`tiles.example.org/v1/11/475/910.pbf`), a zoom's `tiles.example.org/v1/11/*`,
    /// the output's `tiles.example.org/v1/*`, as the origin tags each tile.
    #[serde(default)]
    surrogate_keys: bool,
    /// Mark tiles stale instead of removing them (served while the edge revalidates).
    #[serde(default)]
    soft_purge: bool,
    #[serde(flatten)]
    api: ApiKeys,
}

/// A service's keys: its id, the token's variable, the API, surrogate keys and soft purges. Its
/// purges are free.
pub(super) const KIND: CdnKind = CdnKind {
    name: "fastly",
    summary: "its purge API",
    keys: FastlyKeys::json_schema,
    target,
    price_per_path: 0.0,
    // docs.fastly.com/api: 1,000 non-read requests an hour per user; URL and surrogate-key
    // purges are not counted, `purge_all` is.
    api_limit: Some((1_000, Duration::from_secs(3_600))),
};

fn target(raw: &RawCdn) -> Result<CdnTarget, Fault> {
    let keys: FastlyKeys = raw.read()?;
    Ok(CdnTarget::Fastly {
        service_id: id(
            raw.spanned("service_id", keys.service_id),
            "service_id",
            "Fastly",
            "8 to 64 letters and digits, such as SU1Z0isxPaozGVKXdv0eY",
            |id| (8..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric()),
        )?,
        token_env: keys.api.token_env(raw, "FASTLY_API_TOKEN")?,
        api_url: keys.api.api_url(raw, "Fastly", "https://api.fastly.com")?,
        surrogate_keys: keys.surrogate_keys,
        soft_purge: keys.soft_purge,
    })
}
