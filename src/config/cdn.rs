//! `[[tileset.cdn]]`: the caches in front of a tileset's output that `seed` and `watch` purge of
//! the tiles they change. Secrets (API tokens, purge keys) are named here by their environment
//! variable and read from the environment only.
//!
//! Everything a purge could only find out by failing after the tiles rendered is checked here
//! when the text alone can tell: header names, the shape of distribution, zone and service ids,
//! and an API that would carry a bearer token in clear text.
//!
//! Each kind's own keys are read in a file of its own (`cdn/http.rs`, `cdn/cloudfront.rs`,
//! `cdn/cloudflare.rs`, `cdn/fastly.rs`), registered in [`KINDS`]; this file reads the keys every
//! kind shares and dispatches to the kind. The kinds' purges are sent by `edge::cdn`, whose files
//! mirror these: `config` sits below `edge`, and a config is refused at the line at fault when it
//! is read, before any stage that could call the edge, so a kind's parse cannot live beside its
//! requests. [`CdnTarget::kind`] is the name the edge finds a target's kind by.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::error::Error;

mod api;
mod cloudflare;
mod cloudfront;
mod fastly;
mod http;
mod raw;
mod url;
pub use api::ApiQuota;
pub use cloudflare::CloudflarePlan;
pub use cloudfront::CLOUDFRONT_PRICE_PER_PATH;
pub use http::PurgeMethod;
pub(super) use raw::RawCdn;
use raw::SharedKeys;
use schemars::JsonSchema;
use url::http_url;

/// How long one purge request may go unanswered by default: an API answers in well under a
/// second, so this only bounds a CDN that took the connection and went silent.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one target's purge may take by default, retries and waits for CloudFront's room
/// included: past it the changes wait in the outbox, so a silent CDN cannot hold a `watch` cycle.
pub const DEFAULT_PURGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests a second one connection to an HTTP cache is reckoned to carry by default: a 20 ms
/// round trip to a cache nearby.
pub const DEFAULT_RATE_PER_CONNECTION: f64 = 50.0;

/// Where a setting is written in the config file, for what can be found wrong with it only after
/// the file was read (an environment variable it names that is not set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigLine {
    /// The config file.
    pub path: PathBuf,
    /// Its 1-based line, when known.
    pub line: Option<usize>,
}

impl ConfigLine {
    /// A config error (exit 2) at this line.
    pub fn error(&self, message: impl Into<String>) -> Error {
        Error::Config {
            path: self.path.clone(),
            line: self.line,
            column: None,
            message: message.into(),
        }
    }
}

/// What a target's purges cost and what the operator lets them spend, in US dollars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CdnSpend {
    /// The CDN's price per purged path, a wildcard counting one (`price_per_path`; CloudFront's
    /// $0.005 by default, 0 for the others, whose purges are free).
    pub price_per_path: f64,
    /// The price of refetching one unchanged tile a wildcard evicted (`refetch_price`).
    pub refetch_price: f64,
    /// At most this much a day (`budget_per_day`), paced through the day.
    pub budget_per_day: Option<f64>,
    /// At most this much per run or `watch` cycle (`budget_per_run`).
    pub budget_per_run: Option<f64>,
}

/// One purge target of a tileset.
#[derive(Debug, Clone, PartialEq)]
pub struct CdnConfig {
    /// Its name in logs, metrics and the outbox (default: the kind); unique in the tileset.
    pub name: String,
    /// What it is and how to reach it.
    pub target: CdnTarget,
    /// The public URL the output is served under through this cache, with no trailing `/`: the
    /// absolute URLs Cloudflare and Fastly purge, and where the edge check fetches changed tiles.
    pub public_url: Option<String>,
    /// How long one request may go unanswered before it counts as failed (and is retried).
    pub request_timeout: Duration,
    /// How long the target's whole purge of a run may take, retries included.
    pub purge_timeout: Duration,
    /// What its purges cost and may spend.
    pub spend: CdnSpend,
    /// The Cloudflare zone or Fastly service serves nothing but this output
    /// (`only_this_output`), so purging everything (`purge_everything`, `purge_all`) is a
    /// form of purge the plan may choose.
    pub only_this_output: bool,
    /// Cloudflare's and Fastly's account-wide limit of API calls and the share of it the target
    /// keeps to (`api_limit`, `api_share`); `None` for the others.
    pub api: Option<ApiQuota>,
    /// Where the table is written, for errors found when its secrets are read.
    pub defined_at: ConfigLine,
}

/// A purge target by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum CdnTarget {
    /// One request per changed path to an HTTP cache (Varnish, nginx, a shield).
    Http {
        /// The URL of a path: `{path}` stands for the tile's `z/x/y.ext` or a document's name.
        url: String,
        /// The request's method.
        method: PurgeMethod,
        /// Requests in flight at once.
        concurrency: usize,
        /// Requests a second one connection is reckoned to carry (`rate_per_connection`): the
        /// pace a plan is timed at.
        rate_per_connection: f64,
        /// Header name and the environment variable holding its value.
        headers: Vec<(String, String)>,
    },
    /// AWS CloudFront invalidations, through the AWS SDK and its credential chain.
    CloudFront {
        /// The distribution.
        distribution_id: String,
        /// The path under which the distribution serves the output, with leading and without
        /// trailing `/` (`/tiles`), or empty for its root.
        path_prefix: String,
    },
    /// Cloudflare's purge-cache API.
    Cloudflare {
        /// The zone.
        zone_id: String,
        /// The environment variable holding the API token.
        token_env: String,
        /// The API's base URL.
        api_url: String,
        /// Purge a folded column or zoom by prefix instead of URL by URL.
        prefixes: bool,
        /// The account's plan, whose purge rate limits the purges keep to.
        plan: CloudflarePlan,
    },
    /// Fastly's purge API.
    Fastly {
        /// The service.
        service_id: String,
        /// The environment variable holding the API token.
        token_env: String,
        /// The API's base URL.
        api_url: String,
        /// Purge by surrogate key (the public URL's host and path of a tile, a zoom's or the
        /// output's folder) rather than URL by URL.
        surrogate_keys: bool,
        /// Mark content stale instead of removing it (`Fastly-Soft-Purge: 1`): the edge serves
        /// the stale tile while it revalidates with the origin.
        soft_purge: bool,
    },
}

/// How many tiles to check and how long each may take to turn fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeCheckSettings {
    /// Tiles sampled per target and run (0: no check).
    pub sample: usize,
    /// How long a sampled tile may stay stale after the purge before it counts as unconfirmed.
    pub within: Duration,
}

impl Default for EdgeCheckSettings {
    fn default() -> Self {
        EdgeCheckSettings {
            sample: 0,
            within: Duration::from_secs(60),
        }
    }
}

/// An id of `key` that must match `shape` (said in words by `expected`).
fn id(
    raw: Option<Spanned<String>>,
    key: &str,
    kind: &str,
    expected: &str,
    shape: impl Fn(&str) -> bool,
) -> Result<String, Fault> {
    let Some(spanned) = raw else {
        return Err((None, format!("`{key}` is required for kind = \"{kind}\"")));
    };
    let span = spanned.span();
    let value = spanned.into_inner().trim().to_string();
    if value.is_empty() {
        return Err((
            Some(span),
            format!("`{key}` is required for kind = \"{kind}\""),
        ));
    }
    if !shape(&value) {
        return Err((
            Some(span),
            format!("{key} `{value}` is not a {kind} {key}: {expected}"),
        ));
    }
    Ok(value)
}

/// A duration key with its default.
fn timeout(raw: Option<Spanned<String>>, key: &str, default: Duration) -> Result<Duration, Fault> {
    let Some(spanned) = raw else {
        return Ok(default);
    };
    let span = spanned.span();
    match humantime::parse_duration(spanned.get_ref()) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err((
            Some(span),
            format!(
                "{key} `{}` is not a duration above zero like \"10s\"",
                spanned.get_ref()
            ),
        )),
    }
}

/// A fault in a table and where: a key's span, or `None` for the table as a whole.
type Fault = (Option<Range<usize>>, String);

/// Checks a tileset's `[[tileset.cdn]]` tables; an error names the config file and the line of the
/// key at fault (or of the table).
pub(super) fn resolve_cdns(
    raw: Vec<Spanned<RawCdn>>,
    tileset: &str,
    path: &Path,
    text: &str,
) -> crate::error::Result<Vec<CdnConfig>> {
    let line_at = |offset: usize| Some(super::line_column(text, offset).0);
    let mut targets: Vec<CdnConfig> = Vec::new();
    for spanned in raw {
        let table = spanned.span();
        let fail = |(span, message): Fault| {
            let (line, column) = super::line_column(text, span.unwrap_or(table.clone()).start);
            Error::Config {
                path: path.to_path_buf(),
                line: Some(line),
                column: Some(column),
                message: format!("tileset `{tileset}`: {message}"),
            }
        };
        let mut target = resolve_cdn(spanned.into_inner()).map_err(fail)?;
        if targets.iter().any(|c| c.name == target.name) {
            return Err(fail((
                None,
                format!(
                    "cdn `{}` is defined twice (give each a `name`)",
                    target.name
                ),
            )));
        }
        target.defined_at = ConfigLine {
            path: path.to_path_buf(),
            line: line_at(table.start),
        };
        targets.push(target);
    }
    Ok(targets)
}

/// One kind of CDN as its table is written: its own keys, read into its [`CdnTarget`], and what
/// the keys every kind shares default to for it. Each kind is a file of its own (`cdn/http.rs`,
/// `cdn/cloudfront.rs`, `cdn/cloudflare.rs`, `cdn/fastly.rs`) that declares its keys in a struct
/// beside the kind, registered in [`KINDS`]: a key a kind does not declare is refused on its
/// table, naming the kinds that declare it.
pub(super) struct CdnKind {
    /// Its `kind = "…"`, lower case.
    pub name: &'static str,
    /// What it purges through, in a few words, for the schema's list of kinds.
    pub summary: &'static str,
    /// The schema of its own keys (`KindKeys::json_schema`): the keys it takes, their types and
    /// what each means.
    pub keys: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// Its target from its own keys; a fault does not yet name the target.
    pub target: fn(&RawCdn) -> Result<CdnTarget, Fault>,
    /// Its price per purged path unless `price_per_path` says otherwise.
    pub price_per_path: f64,
    /// Its API's documented limit of calls per user and the window they are counted in, where
    /// an account-wide limit counts them: such a kind's keys flatten in [`api::ApiKeys`].
    pub api_limit: Option<(u32, Duration)>,
}

/// The CDN kinds a `[[tileset.cdn]]` table may name, in the order messages list them. The edge
/// registers the same kinds (`edge::cdn::KINDS`); a test holds both to the schema's `kind` enum,
/// which is generated from this list.
pub(super) const KINDS: &[&CdnKind] = &[
    &http::KIND,
    &cloudfront::KIND,
    &cloudflare::KIND,
    &fastly::KIND,
];

/// The CDN kinds a `[[tileset.cdn]]` table may name, as `kind = "…"` writes them.
pub fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|kind| kind.name).collect()
}

impl CdnTarget {
    /// Its `kind = "…"`, under which the edge registers what sends its purges.
    pub fn kind(&self) -> &'static str {
        match self {
            CdnTarget::Http { .. } => http::KIND.name,
            CdnTarget::CloudFront { .. } => cloudfront::KIND.name,
            CdnTarget::Cloudflare { .. } => cloudflare::KIND.name,
            CdnTarget::Fastly { .. } => fastly::KIND.name,
        }
    }
}

fn resolve_cdn(raw: RawCdn) -> Result<CdnConfig, Fault> {
    let shared: SharedKeys = raw.read()?;
    let Some(kind_name) = shared
        .kind
        .as_deref()
        .map(|k| k.trim().to_ascii_lowercase())
    else {
        return Err((
            None,
            format!("`kind` is required: {}", kind_names().join(", ")),
        ));
    };
    let name = shared.name.clone().unwrap_or_else(|| kind_name.clone());
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err((
            raw.span("name"),
            format!("cdn name `{name}` must be letters, digits, `-` and `_`"),
        ));
    }
    let context = |(span, message): Fault| (span, format!("cdn `{name}`: {message}"));
    let Some(kind) = KINDS.iter().find(|kind| kind.name == kind_name) else {
        let names = kind_names();
        let (last, rest) = names.split_last().unwrap_or((&"", &[]));
        return Err((
            raw.span("kind"),
            format!(
                "cdn kind `{kind_name}` is not {} or {last}",
                rest.join(", ")
            ),
        ));
    };
    refuse_others_keys(&raw, kind).map_err(context)?;
    let public_url = shared
        .public_url
        .as_deref()
        .map(|url| http_url("public_url", url).map_err(|e| (raw.span("public_url"), e.to_string())))
        .transpose()
        .map_err(context)?;
    let (request_timeout, purge_timeout) = timeouts(&raw, &shared).map_err(context)?;
    let target = (kind.target)(&raw).map_err(context)?;
    let (api, only_this_output) = match kind.api_limit {
        Some(limit) => {
            let keys: api::ApiKeys = raw.read().map_err(context)?;
            let quota = keys.quota(&raw, limit).map_err(context)?;
            (Some(quota), keys.only_this_output)
        }
        None => (None, false),
    };
    let spend = spend(&raw, &shared, kind.price_per_path).map_err(context)?;
    Ok(CdnConfig {
        name,
        target,
        public_url,
        request_timeout,
        purge_timeout,
        spend,
        only_this_output,
        api,
        defined_at: ConfigLine::default(),
    })
}

/// `request_timeout` and `purge_timeout`, a purge long enough for one request at least.
fn timeouts(raw: &RawCdn, shared: &SharedKeys) -> Result<(Duration, Duration), Fault> {
    let request_timeout = timeout(
        raw.spanned("request_timeout", shared.request_timeout.clone()),
        "request_timeout",
        DEFAULT_REQUEST_TIMEOUT,
    )?;
    let purge_timeout = timeout(
        raw.spanned("purge_timeout", shared.purge_timeout.clone()),
        "purge_timeout",
        DEFAULT_PURGE_TIMEOUT,
    )?;
    if purge_timeout < request_timeout {
        return Err((
            raw.span("purge_timeout"),
            format!(
                "purge_timeout {} is shorter than request_timeout {}: not one request could finish",
                humantime::format_duration(purge_timeout),
                humantime::format_duration(request_timeout)
            ),
        ));
    }
    Ok((request_timeout, purge_timeout))
}

/// Refuses, at its own line, a key `kind` does not take, which a reader would otherwise believe
/// acted: a key of other kinds names them, any other key is unknown to every kind.
fn refuse_others_keys(raw: &RawCdn, kind: &CdnKind) -> Result<(), Fault> {
    let mut generator = schemars::SchemaGenerator::default();
    let shared = raw::key_names(&SharedKeys::json_schema(&mut generator));
    let own = raw::key_names(&(kind.keys)(&mut generator));
    let key_names: Vec<(&str, Vec<String>)> = KINDS
        .iter()
        .map(|other| (other.name, raw::key_names(&(other.keys)(&mut generator))))
        .collect();
    for key in raw.keys() {
        let written = key.get_ref().as_str();
        if shared.iter().chain(&own).any(|name| name == written) {
            continue;
        }
        let takers: Vec<String> = key_names
            .iter()
            .filter(|(_, names)| names.iter().any(|name| name == written))
            .map(|(name, _)| format!("kind = \"{name}\""))
            .collect();
        let message = if takers.is_empty() {
            format!(
                "unknown field `{written}`: a [[tileset.cdn]] table takes {} and its kind's own \
                 keys (see the configuration reference)",
                shared.join(", ")
            )
        } else {
            format!(
                "{written} is not a key of kind = \"{}\": only {} takes it",
                kind.name,
                takers.join(" or ")
            )
        };
        return Err((Some(key.span()), message));
    }
    Ok(())
}

/// What the target's purges cost and may spend, `price_per_path` defaulting to the kind's.
fn spend(raw: &RawCdn, shared: &SharedKeys, default_price: f64) -> Result<CdnSpend, Fault> {
    let amount = |key: &str, value: Option<f64>| dollars(raw.spanned(key, value), key);
    Ok(CdnSpend {
        price_per_path: amount("price_per_path", shared.price_per_path)?.unwrap_or(default_price),
        refetch_price: amount("refetch_price", shared.refetch_price)?
            .unwrap_or(DEFAULT_REFETCH_PRICE),
        budget_per_day: amount("budget_per_day", shared.budget_per_day)?,
        budget_per_run: amount("budget_per_run", shared.budget_per_run)?,
    })
}

/// A key required of a kind, trimmed and not empty.
fn required(value: Option<String>, key: &str, kind: &str) -> Result<String, Fault> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| (None, format!("`{key}` is required for kind = \"{kind}\"")))
}

/// The default price of refetching one evicted tile from the origin: about two S3 GETs plus a
/// tile's transfer. At CloudFront's $0.005 a path, one path is worth 5,000 refetches.
pub const DEFAULT_REFETCH_PRICE: f64 = 0.000_001;

/// A price or budget in US dollars: a finite number, zero or more.
fn dollars(raw: Option<Spanned<f64>>, key: &str) -> Result<Option<f64>, Fault> {
    let Some(spanned) = raw else {
        return Ok(None);
    };
    let value = *spanned.get_ref();
    if !value.is_finite() || value < 0.0 {
        return Err((
            Some(spanned.span()),
            format!("{key} `{value}` is not an amount of US dollars (0 or more, like 10.0)"),
        ));
    }
    Ok(Some(value))
}

pub(super) fn is_variable_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
