//! Cloudflare's and Fastly's purge APIs. No server of theirs runs here: the tests check the
//! requests against a local server that records them and answers as the APIs document.

use super::fold::{fold, Purge};
use std::time::Duration;

use super::{
    everything_under, excerpt, send_with_retries, Client, PurgeError, PurgePlan, PurgeReport,
    Request, Secrets,
};
use crate::config::cdn::CloudflarePlan;
use crate::tile::BBox;

/// Cloudflare takes at most this many URLs (or prefixes) per purge call (500 URLs on Enterprise).
const CLOUDFLARE_PER_CALL: usize = 100;
/// Fastly takes at most this many surrogate keys per batch purge.
const FASTLY_KEYS_PER_CALL: usize = 256;

/// One API call: method, URL, body, and the URLs, prefixes or keys it purges.
struct Call {
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    items: Vec<String>,
}

/// What `calls` would purge, without sending them.
fn plan(calls: &[Call]) -> PurgePlan {
    PurgePlan {
        requests: calls.len() as u64,
        paths: calls.iter().flat_map(|c| c.items.clone()).collect(),
        price_usd: None,
        evicted: 0,
    }
}

/// How an API's calls are sent: its client, each call's timeout, the token kept out of messages.
struct Sender<'a> {
    client: &'a Client,
    timeout: Duration,
    secrets: &'a Secrets,
}

async fn send_all(
    sender: Sender<'_>,
    calls: Vec<Call>,
    check: fn(&str) -> bool,
    pace: impl Fn(&Call) -> Duration,
) -> Result<PurgeReport, PurgeError> {
    let mut report = PurgeReport::default();
    for call in calls {
        let wait = pace(&call);
        if !wait.is_zero() {
            tracing::debug!(
                "waiting {:.1} s for the API's purge rate limit",
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
        }
        let request = Request {
            method: call.method,
            url: &call.url,
            headers: &call.headers,
            body: &call.body,
        };
        let answer =
            send_with_retries(sender.client, request, sender.timeout, sender.secrets).await?;
        if !(200..300).contains(&answer.status) || !check(&answer.body) {
            return Err(PurgeError::Refused {
                method: call.method.to_string(),
                url: call.url,
                status: answer.status,
                excerpt: excerpt(&answer.body, sender.secrets),
            });
        }
        report.requests += 1;
        report.paths += call.items.len() as u64;
    }
    Ok(report)
}

/// Cloudflare's purge-cache API for one zone.
pub(super) struct Cloudflare {
    pub zone_id: String,
    pub token: String,
    pub api_url: String,
    pub public_url: String,
    pub prefixes: bool,
    /// The account's plan: its purge rate limits.
    pub plan: CloudflarePlan,
    pub bbox: BBox,
    pub client: Client,
    /// How long each call may go unanswered.
    pub timeout: Duration,
    /// The token, kept out of messages.
    pub secrets: Secrets,
}

impl Cloudflare {
    fn call(&self, body: serde_json::Value, items: Vec<String>) -> Call {
        Call {
            method: "POST",
            url: format!("{}/zones/{}/purge_cache", self.api_url, self.zone_id),
            headers: vec![
                ("authorization".into(), format!("Bearer {}", self.token)),
                ("content-type".into(), "application/json".into()),
            ],
            body: body.to_string().into_bytes(),
            items,
        }
    }

    fn calls_for(&self, paths: &[String]) -> Vec<Call> {
        // A partition's everything (`VALUE/*`) is a prefix where the plan has prefix purges
        // (through `fold`), else the zone's everything: Cloudflare has no narrower form.
        let whole = paths
            .iter()
            .filter_map(|p| everything_under(p))
            .any(|folder| folder.is_empty() || !self.prefixes);
        if whole {
            let everything = vec![format!("{}/*", self.public_url)];
            return vec![self.call(serde_json::json!({ "purge_everything": true }), everything)];
        }
        let (mut files, mut prefixes) = (Vec::new(), Vec::new());
        if self.prefixes {
            for purge in fold(paths, self.bbox, 0.5, usize::MAX) {
                match purge {
                    Purge::Path(path) => files.push(format!("{}/{path}", self.public_url)),
                    // Prefixes are written without the scheme.
                    Purge::Folder(folder) => prefixes.push(format!(
                        "{}/{folder}",
                        self.public_url
                            .split_once("://")
                            .map_or(self.public_url.as_str(), |p| p.1)
                    )),
                }
            }
        } else {
            files = paths
                .iter()
                .map(|path| format!("{}/{path}", self.public_url))
                .collect();
        }
        let mut calls: Vec<Call> = files
            .chunks(Limits::of(self.plan).urls_per_call)
            .map(|chunk| self.call(serde_json::json!({ "files": chunk }), chunk.to_vec()))
            .collect();
        calls.extend(
            prefixes
                .chunks(CLOUDFLARE_PER_CALL)
                .map(|chunk| self.call(serde_json::json!({ "prefixes": chunk }), chunk.to_vec())),
        );
        calls
    }

    pub async fn purge(&self, paths: &[String]) -> Result<PurgeReport, PurgeError> {
        // The API answers 200 with `"success": false` when it refused part of a call.
        fn succeeded(body: &str) -> bool {
            serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|v| v["success"] == serde_json::Value::Bool(true))
        }
        let sender = Sender {
            client: &self.client,
            timeout: self.timeout,
            secrets: &self.secrets,
        };
        let limits = Limits::of(self.plan);
        let pace = |call: &Call| {
            // URL purges are counted per URL; prefix and everything purges per request.
            let urls = call.body.starts_with(br#"{"files""#);
            let (rate, burst, tokens) = if urls {
                (
                    limits.urls_per_second,
                    limits.urls_per_second,
                    call.items.len() as f64,
                )
            } else {
                (limits.requests_per_second, limits.burst, 1.0)
            };
            take_tokens(&format!("{}\n{urls}", self.zone_id), rate, burst, tokens)
        };
        send_all(sender, self.calls_for(paths), succeeded, pace).await
    }

    pub fn plan(&self, paths: &[String]) -> PurgePlan {
        plan(&self.calls_for(paths))
    }
}

/// Cloudflare's purge rate limits of a plan, as its documentation gives them (per account,
/// token buckets).
struct Limits {
    urls_per_second: f64,
    urls_per_call: usize,
    requests_per_second: f64,
    burst: f64,
}

impl Limits {
    fn of(plan: CloudflarePlan) -> Limits {
        let (urls_per_second, urls_per_call, requests_per_second, burst) = match plan {
            CloudflarePlan::Free => (800.0, CLOUDFLARE_PER_CALL, 5.0 / 60.0, 25.0),
            CloudflarePlan::Pro => (1_500.0, CLOUDFLARE_PER_CALL, 5.0, 25.0),
            CloudflarePlan::Business => (1_500.0, CLOUDFLARE_PER_CALL, 10.0, 50.0),
            CloudflarePlan::Enterprise => (3_000.0, 500, 50.0, 500.0),
        };
        Limits {
            urls_per_second,
            urls_per_call,
            requests_per_second,
            burst,
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `rate` a second.
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

/// The process's purge buckets, per zone and kind of call, shared by every run of a `watch`.
static BUCKETS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Bucket>>> =
    std::sync::OnceLock::new();

/// Takes `tokens` from the bucket `key` (reserving them when it is short: the debt is paid by
/// the refill) and returns how long to wait before sending.
fn take_tokens(key: &str, rate: f64, burst: f64, tokens: f64) -> Duration {
    let now = std::time::Instant::now();
    let mut buckets = BUCKETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
        tokens: burst,
        at: now,
    });
    let refilled = now.duration_since(bucket.at).as_secs_f64() * rate;
    bucket.tokens = (bucket.tokens + refilled).min(burst) - tokens;
    bucket.at = now;
    if bucket.tokens >= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(-bucket.tokens / rate)
    }
}

/// Fastly's purge API for one service.
pub(super) struct Fastly {
    pub service_id: String,
    pub token: String,
    pub api_url: String,
    pub public_url: String,
    pub surrogate_keys: bool,
    /// Sends `Fastly-Soft-Purge: 1`: content is marked stale, not removed.
    pub soft_purge: bool,
    pub client: Client,
    /// How long each call may go unanswered.
    pub timeout: Duration,
    /// The token, kept out of messages.
    pub secrets: Secrets,
}

/// The surrogate key of a path: its `/`s as `-` (`v1-3-4-2.pbf`), as the origin or VCL must tag
/// each response with (`Surrogate-Key`).
pub fn surrogate_key(path: &str) -> String {
    path.replace('/', "-")
}

impl Fastly {
    fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![
            ("fastly-key".into(), self.token.clone()),
            ("accept".into(), "application/json".into()),
        ];
        if self.soft_purge {
            headers.push(("fastly-soft-purge".into(), "1".into()));
        }
        headers
    }

    fn calls_for(&self, paths: &[String]) -> Vec<Call> {
        // Fastly purges no prefix: a partition's everything (`VALUE/*`) is the service's.
        if paths.iter().any(|p| everything_under(p).is_some()) {
            return vec![Call {
                method: "POST",
                url: format!("{}/service/{}/purge_all", self.api_url, self.service_id),
                headers: self.headers(),
                body: Vec::new(),
                items: vec![format!("{}/*", self.public_url)],
            }];
        }
        if self.surrogate_keys {
            let keys: Vec<String> = paths.iter().map(|p| surrogate_key(p)).collect();
            return keys
                .chunks(FASTLY_KEYS_PER_CALL)
                .map(|chunk| {
                    let mut headers = self.headers();
                    headers.push(("surrogate-key".into(), chunk.join(" ")));
                    Call {
                        method: "POST",
                        url: format!("{}/service/{}/purge", self.api_url, self.service_id),
                        headers,
                        body: Vec::new(),
                        items: chunk.to_vec(),
                    }
                })
                .collect();
        }
        let host_path = self
            .public_url
            .split_once("://")
            .map_or(self.public_url.as_str(), |p| p.1);
        paths
            .iter()
            .map(|path| Call {
                method: "POST",
                url: format!("{}/purge/{host_path}/{path}", self.api_url),
                headers: self.headers(),
                body: Vec::new(),
                items: vec![format!("{}/{path}", self.public_url)],
            })
            .collect()
    }

    pub async fn purge(&self, paths: &[String]) -> Result<PurgeReport, PurgeError> {
        fn succeeded(body: &str) -> bool {
            // Single purges answer {"status": "ok", ...}; batch purges a map of keys to ids.
            serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v.is_object())
        }
        let sender = Sender {
            client: &self.client,
            timeout: self.timeout,
            secrets: &self.secrets,
        };
        // Fastly does not rate-limit purges.
        send_all(sender, self.calls_for(paths), succeeded, |_| Duration::ZERO).await
    }

    pub fn plan(&self, paths: &[String]) -> PurgePlan {
        plan(&self.calls_for(paths))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn cloudflare(prefixes: bool) -> Cloudflare {
        Cloudflare {
            zone_id: "zone".into(),
            token: "token".into(),
            api_url: "https://api.example".into(),
            public_url: "https://tiles.example/t".into(),
            prefixes,
            plan: CloudflarePlan::Free,
            bbox: BBox::WORLD,
            client: Client::new().unwrap(),
            timeout: Duration::from_secs(10),
            secrets: Secrets::default(),
        }
    }

    #[test]
    fn a_partitions_everything_is_a_prefix_or_the_whole_zone_never_a_star_url() {
        let changed = paths(&["CN/*", "CN/1/0/0.pbf", "US/1/1/0.pbf"]);
        let calls = cloudflare(true).calls_for(&changed);
        let bodies: Vec<String> = calls
            .iter()
            .map(|c| String::from_utf8_lossy(&c.body).into_owned())
            .collect();
        assert_eq!(
            bodies,
            vec![
                r#"{"files":["https://tiles.example/t/US/1/1/0.pbf"]}"#.to_string(),
                r#"{"prefixes":["tiles.example/t/CN/"]}"#.to_string(),
            ]
        );
        let calls = cloudflare(false).calls_for(&changed);
        assert_eq!(calls.len(), 1);
        assert_eq!(
            String::from_utf8_lossy(&calls[0].body),
            r#"{"purge_everything":true}"#
        );

        let fastly = Fastly {
            service_id: "svc".into(),
            token: "token".into(),
            api_url: "https://api.example".into(),
            public_url: "https://tiles.example/t".into(),
            surrogate_keys: true,
            soft_purge: false,
            client: Client::new().unwrap(),
            timeout: Duration::from_secs(10),
            secrets: Secrets::default(),
        };
        let calls = fastly.calls_for(&changed);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].url, "https://api.example/service/svc/purge_all");
    }
}
