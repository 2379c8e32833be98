//! `kind = "http"`: an HTTP cache (Varnish, nginx, a shield) sent one request per changed path.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::url::http_url;
use super::DEFAULT_RATE_PER_CONNECTION;
use super::{is_variable_name, required, CdnKind, CdnTarget, Fault, RawCdn};

/// The keys only `kind = "http"` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct HttpKeys {
    /// The purge URL of a path, where `{path}` stands for the tile's `z/x/y.ext` or a document's
    /// name. Required for `http`.
    url: Option<String>,
    /// The purge request's method, `PURGE` or `BAN`.
    #[schemars(extend("default" = "PURGE"))]
    method: Option<String>,
    /// Purge requests in flight at once (at least 1).
    #[schemars(extend("default" = 8))]
    concurrency: Option<usize>,
    /// Headers sent with each purge, as header name = the environment variable holding its
    /// value.
    headers: Option<BTreeMap<String, String>>,
    /// Requests a second one connection is reckoned to carry (above 0): with `concurrency`, the
    /// pace that decides when a `BAN` target purges folders instead.
    #[schemars(extend("default" = DEFAULT_RATE_PER_CONNECTION))]
    rate_per_connection: Option<f64>,
}

/// How a purge request is sent to an HTTP cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeMethod {
    /// `PURGE URL`: Varnish's and nginx's cache-purge convention.
    Purge,
    /// `BAN URL`: the cache bans what its rules derive from the URL.
    Ban,
}

impl PurgeMethod {
    /// The HTTP method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeMethod::Purge => "PURGE",
            PurgeMethod::Ban => "BAN",
        }
    }
}

/// An HTTP cache's keys: its purge URL, method, concurrency, headers and pace. Its purges are
/// free and no API counts its calls.
pub(super) const KIND: CdnKind = CdnKind {
    name: "http",
    summary: "Varnish, nginx: one request per path",
    keys: HttpKeys::json_schema,
    target,
    price_per_path: 0.0,
    api_limit: None,
};

fn target(raw: &RawCdn) -> Result<CdnTarget, Fault> {
    let keys: HttpKeys = raw.read()?;
    let at = |key: &'static str| move |message: String| (raw.span(key), message);
    let url = http_url("url", &required(keys.url, "url", "http")?)
        .map_err(|e| at("url")(e.to_string()))?;
    if !url.contains("{path}") {
        return Err(at("url")(format!(
            "url `{url}` has no {{path}}, which stands for each changed tile or document"
        )));
    }
    let method = match keys
        .method
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("PURGE") => PurgeMethod::Purge,
        Some("BAN") => PurgeMethod::Ban,
        Some(other) => {
            return Err(at("method")(format!(
                "method `{other}` is not PURGE or BAN"
            )))
        }
    };
    let concurrency = keys.concurrency.unwrap_or(8);
    if concurrency == 0 {
        return Err(at("concurrency")("concurrency must be at least 1".into()));
    }
    Ok(CdnTarget::Http {
        url,
        method,
        concurrency,
        rate_per_connection: rate_per_connection(
            raw.spanned("rate_per_connection", keys.rate_per_connection),
        )?,
        headers: headers(raw.spanned("headers", keys.headers))?,
    })
}

/// `headers`: names HTTP takes, each valued from an environment variable named by its name.
fn headers(raw: Option<Spanned<BTreeMap<String, String>>>) -> Result<Vec<(String, String)>, Fault> {
    let Some(spanned) = raw else {
        return Ok(Vec::new());
    };
    let span = spanned.span();
    let headers = spanned.into_inner();
    for (header, variable) in &headers {
        if hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err((
                Some(span),
                format!(
                    "`{header}` is not an HTTP header name (letters, digits and \
                     !#$%&'*+-.^_`|~, no spaces)"
                ),
            ));
        }
        if !is_variable_name(variable) {
            return Err((
                Some(span),
                format!(
                    "header `{header}`: `{variable}` is not an environment \
                     variable name (its value is read from that variable)"
                ),
            ));
        }
    }
    Ok(headers.into_iter().collect())
}

fn rate_per_connection(raw: Option<Spanned<f64>>) -> Result<f64, Fault> {
    match raw {
        Some(spanned) if !(spanned.get_ref().is_finite() && *spanned.get_ref() > 0.0) => Err((
            Some(spanned.span()),
            format!(
                "rate_per_connection `{}` is not a number of requests a second above 0",
                spanned.get_ref()
            ),
        )),
        Some(spanned) => Ok(spanned.into_inner()),
        None => Ok(DEFAULT_RATE_PER_CONNECTION),
    }
}
