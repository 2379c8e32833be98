//! `kind = "cloudflare"`: Cloudflare's purge-cache API for one zone, on an account's plan.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::api::ApiKeys;
use super::{id, CdnKind, CdnTarget, Fault, RawCdn};

/// The keys only `kind = "cloudflare"` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct CloudflareKeys {
    /// The zone's id (32 hexadecimal digits). Required for `cloudflare`.
    zone_id: Option<String>,
    /// Purge a folded column or zoom by prefix instead of URL by URL.
    #[schemars(extend("default" = true))]
    prefixes: Option<bool>,
    /// The account's plan, whose purge rate limits the purges keep to.
    #[schemars(extend("enum" = ["free", "pro", "business", "enterprise"], "default" = "free"))]
    plan: Option<String>,
    #[serde(flatten)]
    api: ApiKeys,
}

/// Cloudflare's plans, whose purge rate limits differ (per account, token buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudflarePlan {
    /// 800 URLs a second; 5 other purge requests a minute, 25 at once.
    Free,
    /// 1,500 URLs a second; 5 other purge requests a second, 25 at once.
    Pro,
    /// 1,500 URLs a second; 10 other purge requests a second, 50 at once.
    Business,
    /// 3,000 URLs a second, 500 per call; 50 other purge requests a second, 500 at once.
    Enterprise,
}

/// A zone's keys: its id, the token's variable, the API, prefix purges and the plan. Its purges
/// are free.
pub(super) const KIND: CdnKind = CdnKind {
    name: "cloudflare",
    summary: "its purge API",
    keys: CloudflareKeys::json_schema,
    target,
    price_per_path: 0.0,
    // developers.cloudflare.com/fundamentals/api/reference/limits: 1,200 calls per five
    // minutes per user, all tools together; past it every call is refused for 5 minutes.
    api_limit: Some((1_200, Duration::from_secs(300))),
};

fn target(raw: &RawCdn) -> Result<CdnTarget, Fault> {
    let keys: CloudflareKeys = raw.read()?;
    Ok(CdnTarget::Cloudflare {
        zone_id: id(
            raw.spanned("zone_id", keys.zone_id),
            "zone_id",
            "Cloudflare",
            "32 hexadecimal digits, as the zone's overview page shows it",
            |id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        )?,
        token_env: keys.api.token_env(raw, "CLOUDFLARE_API_TOKEN")?,
        api_url: keys
            .api
            .api_url(raw, "Cloudflare", "https://api.cloudflare.com/client/v4")?,
        // Every plan takes prefix purges (Cloudflare's purge documentation, 2025 on).
        prefixes: keys.prefixes.unwrap_or(true),
        plan: plan(raw.spanned("plan", keys.plan))?,
    })
}

fn plan(raw: Option<Spanned<String>>) -> Result<CloudflarePlan, Fault> {
    let Some(spanned) = raw else {
        return Ok(CloudflarePlan::Free);
    };
    match spanned.get_ref().trim().to_ascii_lowercase().as_str() {
        "free" => Ok(CloudflarePlan::Free),
        "pro" => Ok(CloudflarePlan::Pro),
        "business" => Ok(CloudflarePlan::Business),
        "enterprise" => Ok(CloudflarePlan::Enterprise),
        other => Err((
            Some(spanned.span()),
            format!("plan `{other}` is not free, pro, business or enterprise"),
        )),
    }
}
