//! `kind = "http"`: an HTTP cache (Varnish, nginx, a shield) sent one request per changed path.

use super::url::http_url;
use super::DEFAULT_RATE_PER_CONNECTION;
use super::{is_variable_name, required, CdnKind, CdnTarget, Fault, RawCdn};

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
    target,
    price_per_path: 0.0,
    api_limit: None,
    takes: &["rate_per_connection"],
};

fn target(raw: &mut RawCdn) -> Result<CdnTarget, Fault> {
    let plain = |message: String| (None, message);
    let url = http_url("url", &required(raw.url.take(), "url", "http")?)
        .map_err(|e| plain(e.to_string()))?;
    if !url.contains("{path}") {
        return Err(plain(format!(
            "url `{url}` has no {{path}}, which stands for each changed tile or document"
        )));
    }
    let method = match raw
        .method
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("PURGE") => PurgeMethod::Purge,
        Some("BAN") => PurgeMethod::Ban,
        Some(other) => return Err(plain(format!("method `{other}` is not PURGE or BAN"))),
    };
    let concurrency = raw.concurrency.unwrap_or(8);
    if concurrency == 0 {
        return Err(plain("concurrency must be at least 1".into()));
    }
    let headers = headers(raw)?;
    Ok(CdnTarget::Http {
        url,
        method,
        concurrency,
        rate_per_connection: rate_per_connection(raw)?,
        headers,
    })
}

/// `headers`: names HTTP takes, each valued from an environment variable named by its name.
fn headers(raw: &mut RawCdn) -> Result<Vec<(String, String)>, Fault> {
    let Some(spanned) = raw.headers.take() else {
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

fn rate_per_connection(raw: &mut RawCdn) -> Result<f64, Fault> {
    match raw.rate_per_connection.take() {
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
