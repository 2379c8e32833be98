//! The keys of a kind reached through a vendor's API with a bearer token (Cloudflare, Fastly):
//! the token's variable, the API's URL, whether the zone or service is this output's alone, and
//! `api_limit` and `api_share`: the account-wide limit of calls the API takes from one user, and
//! the share of it this tool keeps to, so other tools on the same account keep the rest.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::url::api_url;
use super::{is_variable_name, Fault, RawCdn};

/// The keys of a kind reached through an API with a bearer token, which such a kind's keys
/// flatten in.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct ApiKeys {
    /// The environment variable holding the API token. Default: `CLOUDFLARE_API_TOKEN` or
    /// `FASTLY_API_TOKEN`.
    token_env: Option<String>,
    /// The API's base URL (https). Default: the vendor's.
    api_url: Option<String>,
    /// The zone or service serves nothing but this output, so a purge plan may choose to clear
    /// everything in one request (`purge_everything`, `purge_all`) where that beats its paths.
    /// Without it no plan chooses that, but a change with no narrower form still clears the whole
    /// zone or service: everything (`*`) or a partition's `VALUE/*` (a killed run's changes) on
    /// Cloudflare with `prefixes = false`, or on Fastly without `surrogate_keys`.
    #[serde(default)]
    pub(super) only_this_output: bool,
    /// The API's limit of calls per user, all tools together, as `CALLS/DURATION`. Default:
    /// Cloudflare's `1200/5m`; Fastly's `1000/1h` (which counts its `purge_all`, not its URL and
    /// key purges).
    api_limit: Option<String>,
    /// The share of `api_limit` this target keeps to (above 0, at most 1), leaving the rest to
    /// other tools on the account.
    #[schemars(extend("default" = DEFAULT_API_SHARE))]
    api_share: Option<f64>,
}

impl ApiKeys {
    /// `token_env`: the variable holding the API's token, `default` unless the table names one.
    pub(super) fn token_env(&self, raw: &RawCdn, default: &str) -> Result<String, Fault> {
        let name = self
            .token_env
            .clone()
            .unwrap_or_else(|| default.to_string());
        if !is_variable_name(&name) {
            return Err((
                raw.span("token_env"),
                format!("token_env `{name}` is not an environment variable name"),
            ));
        }
        Ok(name)
    }

    /// `api_url`, `default` unless the table names one, refused where it would carry the token
    /// in clear text.
    pub(super) fn api_url(&self, raw: &RawCdn, kind: &str, default: &str) -> Result<String, Fault> {
        api_url(kind, raw.spanned("api_url", self.api_url.clone()), default)
    }

    /// The quota of the API from `api_limit`, else `default` (the vendor's documented limit),
    /// and `api_share`.
    pub(super) fn quota(&self, raw: &RawCdn, default: (u32, Duration)) -> Result<ApiQuota, Fault> {
        api_quota(
            default,
            raw.spanned("api_limit", self.api_limit.clone()),
            raw.spanned("api_share", self.api_share),
        )
    }
}

/// The share of an API's calls a target keeps to by default: a third, leaving the rest to the
/// dashboard, other tools and other runs on the same account.
pub const DEFAULT_API_SHARE: f64 = 0.33;

/// An API's limit of calls per user, and the share of it a target keeps to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiQuota {
    /// Calls the API takes from one user within `per` (Cloudflare: 1,200; Fastly: 1,000 of the
    /// calls it counts).
    pub calls: u32,
    /// The window the calls are counted in (Cloudflare: 5 minutes; Fastly: an hour).
    pub per: Duration,
    /// The share of `calls` this target keeps to (above 0, at most 1).
    pub share: f64,
}

impl ApiQuota {
    /// Calls this target may make within `per`: its share of the limit, at least one.
    pub fn allowed(&self) -> usize {
        ((f64::from(self.calls) * self.share).floor() as usize).max(1)
    }
}

/// The quota of a kind's API from `api_limit` (`CALLS/DURATION`, the vendor's documented limit,
/// `default`, unless given) and `api_share`.
fn api_quota(
    default: (u32, Duration),
    limit: Option<Spanned<String>>,
    share: Option<Spanned<f64>>,
) -> Result<ApiQuota, Fault> {
    let (calls, per) = match limit {
        None => default,
        Some(spanned) => parse_limit(spanned.get_ref()).ok_or_else(|| {
            (
                Some(spanned.span()),
                format!(
                    "api_limit `{}` is not calls per duration like \"1200/5m\"",
                    spanned.get_ref()
                ),
            )
        })?,
    };
    let share = match share {
        None => DEFAULT_API_SHARE,
        Some(spanned) => {
            let value = *spanned.get_ref();
            if !(value.is_finite() && value > 0.0 && value <= 1.0) {
                return Err((
                    Some(spanned.span()),
                    format!("api_share `{value}` is not a share above 0 and at most 1, like 0.33"),
                ));
            }
            value
        }
    };
    Ok(ApiQuota { calls, per, share })
}

/// `CALLS/DURATION`: at least one call, a duration above zero.
fn parse_limit(text: &str) -> Option<(u32, Duration)> {
    let (calls, per) = text.split_once('/')?;
    let calls: u32 = calls.trim().parse().ok().filter(|c| *c > 0)?;
    let per = humantime::parse_duration(per.trim())
        .ok()
        .filter(|d| !d.is_zero())?;
    Some((calls, per))
}
