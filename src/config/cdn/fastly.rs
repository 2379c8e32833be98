//! `kind = "fastly"`: Fastly's purge API for one service.

use std::time::Duration;

use super::url::api_url;
use super::{id, token_env, CdnKind, CdnTarget, Fault, RawCdn};

/// A service's keys: its id, the token's variable, the API, surrogate keys and soft purges. Its
/// purges are free.
pub(super) const KIND: CdnKind = CdnKind {
    name: "fastly",
    target,
    price_per_path: 0.0,
    // docs.fastly.com/api: 1,000 non-read requests an hour per user; URL and surrogate-key
    // purges are not counted, `purge_all` is.
    api_limit: Some((1_000, Duration::from_secs(3_600))),
    takes: &["soft_purge", "only_this_output"],
};

fn target(raw: &mut RawCdn) -> Result<CdnTarget, Fault> {
    Ok(CdnTarget::Fastly {
        service_id: id(
            raw.service_id.take(),
            "service_id",
            "Fastly",
            "8 to 64 letters and digits, such as SU1Z0isxPaozGVKXdv0eY",
            |id| (8..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric()),
        )?,
        token_env: token_env(raw, "FASTLY_API_TOKEN")?,
        api_url: api_url("Fastly", raw.api_url.take(), "https://api.fastly.com")?,
        surrogate_keys: raw.surrogate_keys,
        soft_purge: raw.soft_purge,
    })
}
