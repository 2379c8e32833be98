//! `kind = "cloudfront"`: AWS CloudFront invalidations of one distribution, through the AWS
//! credential chain (no secret is named here).

use schemars::JsonSchema;
use serde::Deserialize;

use super::{id, CdnKind, CdnTarget, Fault, RawCdn};

/// The keys only `kind = "cloudfront"` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct CloudFrontKeys {
    /// The distribution's id (8 to 32 capital letters and digits). Required for `cloudfront`.
    distribution_id: Option<String>,
    /// The path under which the distribution serves the output (`/tiles`). Default: its root.
    path_prefix: Option<String>,
}

/// CloudFront's price per invalidation path past the free 1,000 a month (a wildcard is one path).
pub const CLOUDFRONT_PRICE_PER_PATH: f64 = 0.005;

/// A distribution's keys: its id and the path it serves the output under. Its paths cost
/// CloudFront's price; its calls are AWS's, which no `api_limit` counts.
pub(super) const KIND: CdnKind = CdnKind {
    name: "cloudfront",
    summary: "invalidations",
    keys: CloudFrontKeys::json_schema,
    target,
    price_per_path: CLOUDFRONT_PRICE_PER_PATH,
    api_limit: None,
};

fn target(raw: &RawCdn) -> Result<CdnTarget, Fault> {
    let keys: CloudFrontKeys = raw.read()?;
    let prefix = keys.path_prefix.unwrap_or_default();
    let prefix = prefix.trim().trim_matches('/');
    Ok(CdnTarget::CloudFront {
        distribution_id: id(
            raw.spanned("distribution_id", keys.distribution_id),
            "distribution_id",
            "CloudFront",
            "8 to 32 capital letters and digits, such as E2QWRUHAPOMQZL",
            |id| {
                (8..=32).contains(&id.len())
                    && id
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            },
        )?,
        path_prefix: if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        },
    })
}
