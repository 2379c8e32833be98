//! `api_limit` and `api_share`: the account-wide limit of calls a CDN's API takes from one user,
//! and the share of it this tool keeps to, so other tools on the same account keep the rest.

use std::time::Duration;

use toml::Spanned;

use super::Fault;

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
/// `default`, unless given) and `api_share`; `None` for a kind whose calls no account-wide limit
/// counts (no `default`), which refuses both keys.
pub(super) fn api_quota(
    default: Option<(u32, Duration)>,
    limit: Option<Spanned<String>>,
    share: Option<Spanned<f64>>,
) -> Result<Option<ApiQuota>, Fault> {
    let Some(default) = default else {
        if let Some(span) = limit.map(|l| l.span()).or(share.map(|s| s.span())) {
            return Err((
                Some(span),
                "api_limit and api_share are Cloudflare's and Fastly's (an account's API \
                 calls): only kind = \"cloudflare\" or \"fastly\" takes them"
                    .into(),
            ));
        }
        return Ok(None);
    };
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
    Ok(Some(ApiQuota { calls, per, share }))
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
