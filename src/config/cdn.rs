//! `[[tileset.cdn]]`: the caches in front of a tileset's output that `seed` and `watch` purge of
//! the tiles they change. Secrets (API tokens, purge keys) are named here by their environment
//! variable and read from the environment only.

use std::time::Duration;

use serde::Deserialize;

/// The operator's table, checked by [`resolve_cdn`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCdn {
    kind: String,
    name: Option<String>,
    url: Option<String>,
    method: Option<String>,
    concurrency: Option<usize>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    distribution_id: Option<String>,
    path_prefix: Option<String>,
    zone_id: Option<String>,
    service_id: Option<String>,
    token_env: Option<String>,
    api_url: Option<String>,
    public_url: Option<String>,
    #[serde(default)]
    prefixes: bool,
    #[serde(default)]
    surrogate_keys: bool,
}

/// One purge target of a tileset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdnConfig {
    /// Its name in logs, metrics and the outbox (default: the kind); unique in the tileset.
    pub name: String,
    /// What it is and how to reach it.
    pub target: CdnTarget,
    /// The public URL the output is served under through this cache, with no trailing `/`: the
    /// absolute URLs Cloudflare and Fastly purge, and where the edge check fetches changed tiles.
    pub public_url: Option<String>,
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

/// A purge target by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdnTarget {
    /// One request per changed path to an HTTP cache (Varnish, nginx, a shield).
    Http {
        /// The URL of a path: `{path}` stands for the tile's `z/x/y.ext` or a document's name.
        url: String,
        /// The request's method.
        method: PurgeMethod,
        /// Requests in flight at once.
        concurrency: usize,
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
        /// Purge a folded column or zoom by prefix (Cloudflare Enterprise) instead of URL by URL.
        prefixes: bool,
    },
    /// Fastly's purge API.
    Fastly {
        /// The service.
        service_id: String,
        /// The environment variable holding the API token.
        token_env: String,
        /// The API's base URL.
        api_url: String,
        /// Purge by surrogate key (`z{z}x{x}`, `z{z}`) rather than URL by URL.
        surrogate_keys: bool,
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

fn http_url(key: &str, url: &str) -> Result<String, String> {
    let url = url.trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.contains(char::is_whitespace)
    {
        return Err(format!("{key} `{url}` is not an http:// or https:// URL"));
    }
    Ok(url.to_string())
}

pub(super) fn resolve_cdn(raw: RawCdn) -> Result<CdnConfig, String> {
    let kind = raw.kind.trim().to_ascii_lowercase();
    let name = raw.name.clone().unwrap_or_else(|| kind.clone());
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "cdn name `{name}` must be letters, digits, `-` and `_`"
        ));
    }
    let context = |message: String| format!("cdn `{name}`: {message}");
    let required = |value: Option<String>, key: &str| {
        value
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| context(format!("`{key}` is required for kind = \"{kind}\"")))
    };
    let public_url = raw
        .public_url
        .as_deref()
        .map(|url| http_url("public_url", url).map_err(context))
        .transpose()?;
    let token_env = |default: &str| {
        let name = raw.token_env.clone().unwrap_or_else(|| default.to_string());
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(context(format!(
                "token_env `{name}` is not an environment variable name"
            )));
        }
        Ok(name)
    };
    let target = match kind.as_str() {
        "http" => {
            let url = http_url("url", &required(raw.url.clone(), "url")?).map_err(context)?;
            if !url.contains("{path}") {
                return Err(context(format!(
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
                Some(other) => {
                    return Err(context(format!("method `{other}` is not PURGE or BAN")))
                }
            };
            let concurrency = raw.concurrency.unwrap_or(8);
            if concurrency == 0 {
                return Err(context("concurrency must be at least 1".into()));
            }
            CdnTarget::Http {
                url,
                method,
                concurrency,
                headers: raw.headers.into_iter().collect(),
            }
        }
        "cloudfront" => {
            let prefix = raw.path_prefix.clone().unwrap_or_default();
            let prefix = prefix.trim().trim_matches('/');
            CdnTarget::CloudFront {
                distribution_id: required(raw.distribution_id.clone(), "distribution_id")?,
                path_prefix: if prefix.is_empty() {
                    String::new()
                } else {
                    format!("/{prefix}")
                },
            }
        }
        "cloudflare" => CdnTarget::Cloudflare {
            zone_id: required(raw.zone_id.clone(), "zone_id")?,
            token_env: token_env("CLOUDFLARE_API_TOKEN")?,
            api_url: http_url(
                "api_url",
                raw.api_url
                    .as_deref()
                    .unwrap_or("https://api.cloudflare.com/client/v4"),
            )
            .map_err(context)?,
            prefixes: raw.prefixes,
        },
        "fastly" => CdnTarget::Fastly {
            service_id: required(raw.service_id.clone(), "service_id")?,
            token_env: token_env("FASTLY_API_TOKEN")?,
            api_url: http_url(
                "api_url",
                raw.api_url.as_deref().unwrap_or("https://api.fastly.com"),
            )
            .map_err(context)?,
            surrogate_keys: raw.surrogate_keys,
        },
        other => {
            return Err(format!(
                "cdn kind `{other}` is not http, cloudfront, cloudflare or fastly"
            ))
        }
    };
    Ok(CdnConfig {
        name,
        target,
        public_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CdnConfig, String> {
        resolve_cdn(toml::from_str(text).map_err(|e| e.to_string())?)
    }

    #[test]
    fn each_kind_needs_its_keys_and_secrets_are_named_not_given() {
        let http = parse("kind = \"http\"\nurl = \"http://cache:6081/t/{path}\"").unwrap();
        assert_eq!(http.name, "http");
        assert!(matches!(
            http.target,
            CdnTarget::Http {
                method: PurgeMethod::Purge,
                concurrency: 8,
                ..
            }
        ));
        assert!(parse("kind = \"http\"\nurl = \"http://cache/t/\"")
            .unwrap_err()
            .contains("{path}"));
        assert!(parse("kind = \"cloudfront\"")
            .unwrap_err()
            .contains("distribution_id"));
        let cf = parse("kind = \"cloudfront\"\ndistribution_id = \"E1\"\npath_prefix = \"tiles/\"")
            .unwrap();
        assert_eq!(
            cf.target,
            CdnTarget::CloudFront {
                distribution_id: "E1".into(),
                path_prefix: "/tiles".into()
            }
        );
        let flare = parse("kind = \"cloudflare\"\nzone_id = \"z\"").unwrap();
        assert!(
            matches!(flare.target, CdnTarget::Cloudflare { ref token_env, .. } if token_env == "CLOUDFLARE_API_TOKEN")
        );
        assert!(parse("kind = \"fastly\"\nservice_id = \"s\"\ntoken = \"secret\"").is_err());
        assert!(parse("kind = \"akamai\"").unwrap_err().contains("akamai"));
        assert!(parse("kind = \"http\"\nname = \"a b\"\nurl = \"http://c/{path}\"").is_err());
    }
}
