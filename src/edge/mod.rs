//! The edge: purging the caches in front of an output (`[[tileset.cdn]]`) of the paths a run
//! changed, as the output's outbox hands them over.
//!
//! Paths are relative to where the output lives: a tree's root or an S3 prefix (`z/x/y.ext`,
//! `tiles.json`, a partition's `VALUE/z/x/y.ext`), the folder of a single file (its name). `*`
//! stands for everything (a killed full seed). Each target retries its own requests (bounded,
//! with backoff); a target that still fails leaves the paths in the outbox for the next run, and
//! the others are not asked again.

mod apis;
pub mod check;
mod client;
mod cloudfront;
pub mod fold;
mod http;

use crate::config::{CdnConfig, CdnTarget};
use crate::error::{Error, Result};
use crate::retry::Policy;
use crate::tile::BBox;

pub use client::Client;

/// The folder a path stands for as a whole: `""` for `*` (everything: a killed full seed),
/// `VALUE/` for a partition's `VALUE/*` (a killed run of that partition); `None` for one path.
/// Each kind of CDN purges such a folder in its own form (a BAN of the prefix, a wildcard, a
/// prefix purge, or everything where it has no narrower one), never as a literal `*` URL.
pub(crate) fn everything_under(path: &str) -> Option<&str> {
    if path == "*" {
        Some("")
    } else {
        path.strip_suffix('*')
            .filter(|folder| folder.ends_with('/'))
    }
}

/// CloudFront's price per invalidation path past the free 1,000 a month (a wildcard is one path).
pub const CLOUDFRONT_PRICE_PER_PATH: f64 = 0.005;

/// Attempts per purge request before the target counts as failing for this run.
const ATTEMPTS: u32 = 5;

/// One configured purge target, ready to send.
pub struct PurgeTarget {
    name: String,
    target: Target,
    public_url: Option<String>,
}

enum Target {
    Http(http::HttpCache),
    CloudFront(cloudfront::CloudFront),
    Cloudflare(apis::Cloudflare),
    Fastly(apis::Fastly),
}

/// What a purge sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PurgeReport {
    /// Requests (API calls, invalidations) that succeeded.
    pub requests: u64,
    /// Paths or keys purged, after folding (a wildcard counts as one).
    pub paths: u64,
    /// What the paths cost where the CDN charges per path (CloudFront: $0.005 each past the
    /// first 1,000 a month, counted here as if the free ones were used up).
    pub price_usd: Option<f64>,
}

/// How long a target that failed is held back at first; each failure in a row doubles it.
const FIRST_HOLD: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest a failing target is held back.
const MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(300);

/// Targets that failed, held back from purging for a while (10 s doubling to 5 min), so a CDN that
/// is down costs one run's retries per hold instead of every `watch` cycle's; their changes wait
/// in the outbox meanwhile. Keyed by output and target.
#[derive(Default)]
pub struct Holds(std::sync::Mutex<std::collections::HashMap<String, Hold>>);

struct Hold {
    until: std::time::Instant,
    next: std::time::Duration,
}

impl Holds {
    fn with<T>(&self, f: impl FnOnce(&mut std::collections::HashMap<String, Hold>) -> T) -> T {
        let mut holds = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut holds)
    }

    /// How long `key` is still held back, if it is.
    pub fn held(&self, key: &str) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        self.with(|holds| {
            holds
                .get(key)
                .and_then(|hold| hold.until.checked_duration_since(now))
                .filter(|left| !left.is_zero())
        })
    }

    /// Holds `key` back after a failure: longer after each failure in a row.
    pub fn failed(&self, key: &str) {
        let now = std::time::Instant::now();
        self.with(|holds| {
            let wait = holds.get(key).map_or(FIRST_HOLD, |hold| hold.next);
            holds.insert(
                key.to_string(),
                Hold {
                    until: now + wait,
                    next: (wait * 2).min(MAX_HOLD),
                },
            );
        });
    }

    /// Lets `key` purge freely again.
    pub fn succeeded(&self, key: &str) {
        self.with(|holds| holds.remove(key));
    }
}

/// What a purge would send, worked out without sending it (`seed --dirty --dry-run`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PurgePlan {
    /// Requests (API calls, invalidations) it takes.
    pub requests: u64,
    /// What is purged after folding: CloudFront paths, Cloudflare URLs or prefixes, Fastly URLs
    /// or surrogate keys, an HTTP cache's `METHOD URL`s.
    pub paths: Vec<String>,
    /// Their price where the CDN charges per path (CloudFront).
    pub price_usd: Option<f64>,
}

/// The retry policy of purge requests: 0.5 s doubling to 8 s.
fn policy() -> Policy {
    Policy::database(ATTEMPTS)
}

/// A secret named by its environment variable.
fn secret(variable: &str, target: &str) -> Result<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(Error::setting(
            variable,
            format!(
                "cdn `{target}`: the environment variable {variable} (its API token) is not set"
            ),
        )),
    }
}

impl PurgeTarget {
    /// Builds a target from its config: secrets are read from the environment now, so a missing
    /// one fails before any tile is written. `bbox` is the tileset's, which folding measures
    /// density against.
    pub async fn build(config: &CdnConfig, bbox: BBox, client: &Client) -> Result<PurgeTarget> {
        let name = config.name.clone();
        let target = match &config.target {
            CdnTarget::Http {
                url,
                method,
                concurrency,
                headers,
            } => {
                let mut values = Vec::new();
                for (header, variable) in headers {
                    values.push((header.clone(), secret(variable, &name)?));
                }
                Target::Http(http::HttpCache {
                    url: url.clone(),
                    method: *method,
                    concurrency: *concurrency,
                    headers: values,
                    client: client.clone(),
                })
            }
            CdnTarget::CloudFront {
                distribution_id,
                path_prefix,
            } => Target::CloudFront(
                cloudfront::CloudFront::connect(distribution_id, path_prefix, bbox).await,
            ),
            CdnTarget::Cloudflare {
                zone_id,
                token_env,
                api_url,
                prefixes,
            } => Target::Cloudflare(apis::Cloudflare {
                zone_id: zone_id.clone(),
                token: secret(token_env, &name)?,
                api_url: api_url.clone(),
                public_url: config.public_url.clone().ok_or_else(|| {
                    Error::setting(
                        "public_url",
                        format!("cdn `{name}`: Cloudflare purges absolute URLs: set public_url"),
                    )
                })?,
                prefixes: *prefixes,
                bbox,
                client: client.clone(),
            }),
            CdnTarget::Fastly {
                service_id,
                token_env,
                api_url,
                surrogate_keys,
            } => Target::Fastly(apis::Fastly {
                service_id: service_id.clone(),
                token: secret(token_env, &name)?,
                api_url: api_url.clone(),
                public_url: config.public_url.clone().ok_or_else(|| {
                    Error::setting(
                        "public_url",
                        format!("cdn `{name}`: Fastly purges absolute URLs: set public_url"),
                    )
                })?,
                surrogate_keys: *surrogate_keys,
                client: client.clone(),
            }),
        };
        Ok(PurgeTarget {
            name,
            target,
            public_url: config.public_url.clone(),
        })
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public URL the output is served under through this cache, where the edge check fetches.
    pub fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    /// The name it takes batches from an outbox under.
    pub fn consumer(&self) -> String {
        format!("cdn-{}", self.name)
    }

    /// What purging `paths` would send.
    pub fn plan(&self, paths: &[String]) -> PurgePlan {
        if paths.is_empty() {
            return PurgePlan::default();
        }
        match &self.target {
            Target::Http(cache) => cache.plan(paths),
            Target::CloudFront(cloudfront) => cloudfront.plan(paths),
            Target::Cloudflare(api) => api.plan(paths),
            Target::Fastly(api) => api.plan(paths),
        }
    }

    /// Purges `paths`; `Ok` when every one was purged.
    pub async fn purge(&self, paths: &[String]) -> Result<PurgeReport> {
        if paths.is_empty() {
            return Ok(PurgeReport::default());
        }
        let failed = |message: String| Error::output(format!("cdn `{}`", self.name), message);
        match &self.target {
            Target::Http(cache) => cache.purge(paths).await.map_err(failed),
            Target::CloudFront(cloudfront) => cloudfront.purge(paths).await.map_err(failed),
            Target::Cloudflare(api) => api.purge(paths).await.map_err(failed),
            Target::Fastly(api) => api.purge(paths).await.map_err(failed),
        }
    }
}

/// Sends a request with the purge retry policy: transport failures, 429 and 5xx are retried.
async fn send_with_retries(
    client: &Client,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::result::Result<client::Answer, String> {
    let what = || format!("{method} {url}");
    let outcome = policy()
        .run(
            what,
            || async {
                let answer = client.send(method, url, headers, body.to_vec()).await?;
                if answer.status == 429 || answer.status >= 500 {
                    return Err(format!(
                        "answered {}: {}",
                        answer.status,
                        one_line(&answer.body)
                    ));
                }
                Ok(answer)
            },
            |_| true,
            |e: &String| e.clone(),
        )
        .await;
    outcome.map_err(|failed| {
        format!(
            "{method} {url}: {} (after {} attempts)",
            failed.error, failed.attempts
        )
    })
}

/// The first line of a body, shortened, for messages.
fn one_line(body: &str) -> String {
    let line = body.lines().next().unwrap_or_default();
    line.chars().take(200).collect()
}
