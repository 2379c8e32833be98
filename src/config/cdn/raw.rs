//! The `[[tileset.cdn]]` table as written, with what each key means: the config's schema and
//! reference are generated from these declarations.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::{
    DEFAULT_PURGE_TIMEOUT, DEFAULT_RATE_PER_CONNECTION, DEFAULT_REFETCH_PRICE,
    DEFAULT_REQUEST_TIMEOUT,
};

/// A cache in front of the output that `seed` and `watch` purge of the tiles they change. Secrets
/// (API tokens, purge keys) are named by their environment variable, never written here.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Cdn")]
pub(in crate::config) struct RawCdn {
    /// What the cache is: `http` (Varnish, nginx: one request per path), `cloudfront`
    /// (invalidations), `cloudflare` or `fastly` (their purge APIs).
    #[schemars(extend("enum" = ["http", "cloudfront", "cloudflare", "fastly"]))]
    pub(super) kind: String,
    /// Its name in logs, metrics and the outbox (letters, digits, `-`, `_`); unique in the
    /// tileset. Default: the kind.
    pub(super) name: Option<String>,
    /// `http`: the purge URL of a path, where `{path}` stands for the tile's `z/x/y.ext` or a
    /// document's name. Required for `http`.
    pub(super) url: Option<String>,
    /// `http`: the purge request's method, `PURGE` or `BAN`.
    #[schemars(extend("default" = "PURGE"))]
    pub(super) method: Option<String>,
    /// `http`: purge requests in flight at once (at least 1).
    #[schemars(extend("default" = 8))]
    pub(super) concurrency: Option<usize>,
    /// `http`: headers sent with each purge, as header name = the environment variable holding
    /// its value.
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub(super) headers: Option<Spanned<BTreeMap<String, String>>>,
    /// `cloudfront`: the distribution's id (8 to 32 capital letters and digits). Required for
    /// `cloudfront`.
    #[schemars(with = "Option<String>")]
    pub(super) distribution_id: Option<Spanned<String>>,
    /// `cloudfront`: the path under which the distribution serves the output (`/tiles`). Default:
    /// its root.
    pub(super) path_prefix: Option<String>,
    /// `cloudflare`: the zone's id (32 hexadecimal digits). Required for `cloudflare`.
    #[schemars(with = "Option<String>")]
    pub(super) zone_id: Option<Spanned<String>>,
    /// `fastly`: the service's id (8 to 64 letters and digits). Required for `fastly`.
    #[schemars(with = "Option<String>")]
    pub(super) service_id: Option<Spanned<String>>,
    /// `cloudflare`, `fastly`: the environment variable holding the API token. Default:
    /// `CLOUDFLARE_API_TOKEN` or `FASTLY_API_TOKEN`.
    pub(super) token_env: Option<String>,
    /// `cloudflare`, `fastly`: the API's base URL (https). Default: the vendor's.
    #[schemars(with = "Option<String>")]
    pub(super) api_url: Option<Spanned<String>>,
    /// The public URL the output is served under through this cache: the absolute URLs
    /// Cloudflare and Fastly purge, and where the edge check fetches changed tiles.
    pub(super) public_url: Option<String>,
    /// `cloudflare`: purge a folded column or zoom by prefix instead of URL by URL.
    #[schemars(extend("default" = true))]
    pub(super) prefixes: Option<bool>,
    /// `fastly`: purge by surrogate key rather than URL by URL: a tile's key is its public URL
    /// without the scheme (`tiles.example.org/v1/11/475/910.pbf`), a zoom's
    /// `tiles.example.org/v1/11/*`, the output's `tiles.example.org/v1/*`, as the origin tags each
    /// tile.
    #[serde(default)]
    pub(super) surrogate_keys: bool,
    /// How long one purge request may go unanswered before it counts as failed and is retried
    /// (a duration above zero).
    #[schemars(
        with = "Option<String>",
        extend("default" = humantime::format_duration(DEFAULT_REQUEST_TIMEOUT).to_string())
    )]
    pub(super) request_timeout: Option<Spanned<String>>,
    /// How long the target's whole purge of a run may take, retries included (at least
    /// `request_timeout`); past it what the target did not accept waits in the outbox.
    #[schemars(
        with = "Option<String>",
        extend("default" = humantime::format_duration(DEFAULT_PURGE_TIMEOUT).to_string())
    )]
    pub(super) purge_timeout: Option<Spanned<String>>,
    /// The CDN's price per purged path in US dollars, a wildcard counting one. Default:
    /// CloudFront's 0.005 for `cloudfront`, 0 for the others.
    #[schemars(with = "Option<f64>")]
    pub(super) price_per_path: Option<Spanned<f64>>,
    /// The price in US dollars of refetching one unchanged tile a wildcard evicted.
    #[schemars(with = "Option<f64>", extend("default" = DEFAULT_REFETCH_PRICE))]
    pub(super) refetch_price: Option<Spanned<f64>>,
    /// At most this many US dollars of purges a day, paced through the day; past it purges turn
    /// coarser or wait in the outbox, never lost. Default: no limit.
    #[schemars(with = "Option<f64>")]
    pub(super) budget_per_day: Option<Spanned<f64>>,
    /// At most this many US dollars of purges per run or `watch` cycle. Default: no limit.
    #[schemars(with = "Option<f64>")]
    pub(super) budget_per_run: Option<Spanned<f64>>,
    /// `fastly`: mark tiles stale instead of removing them (served while the edge revalidates).
    #[serde(default)]
    pub(super) soft_purge: bool,
    /// `cloudflare`: the account's plan, whose purge rate limits the purges keep to.
    #[schemars(
        with = "Option<String>",
        extend("enum" = ["free", "pro", "business", "enterprise"], "default" = "free")
    )]
    pub(super) plan: Option<Spanned<String>>,
    /// `cloudflare`, `fastly`: the zone or service serves nothing but this output, so a purge may
    /// clear everything in one request.
    #[serde(default)]
    pub(super) only_this_output: bool,
    /// `cloudflare`, `fastly`: the API's limit of calls per user, all tools together, as
    /// `CALLS/DURATION`. Default: Cloudflare's `1200/5m`; Fastly's `1000/1h` (which counts its
    /// `purge_all`, not its URL and key purges).
    #[schemars(with = "Option<String>")]
    pub(super) api_limit: Option<Spanned<String>>,
    /// `cloudflare`, `fastly`: the share of `api_limit` this target keeps to (above 0, at most
    /// 1), leaving the rest to other tools on the account.
    #[schemars(with = "Option<f64>", extend("default" = super::DEFAULT_API_SHARE))]
    pub(super) api_share: Option<Spanned<f64>>,
    /// `http`: requests a second one connection is reckoned to carry (above 0): with
    /// `concurrency`, the pace that decides when a `BAN` target purges folders instead.
    #[schemars(with = "Option<f64>", extend("default" = DEFAULT_RATE_PER_CONNECTION))]
    pub(super) rate_per_connection: Option<Spanned<f64>>,
}
