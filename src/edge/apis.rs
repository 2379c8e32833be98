//! Cloudflare's and Fastly's purge APIs. No server of theirs runs here: the tests check the
//! requests against a local server that records them and answers as the APIs document.

use super::fold::{fold, Purge};
use std::time::Duration;

use super::calls::ApiCalls;
use super::pace::{Progress, Rate};
use super::price::Forms;
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
/// Fastly counts 100,000 URL and surrogate-key purges an hour per customer; they are paced as a
/// bucket of 1,000 refilled at that rate.
const FASTLY_RATE: Rate = Rate {
    per_second: 100_000.0 / 3_600.0,
    burst: 1_000.0,
};

/// One API call: method, URL, body, the URLs, prefixes or keys it purges, and the paths as sent
/// that it covers (a folder as `FOLDER*`), which its acceptance reports as progress.
struct Call {
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    items: Vec<String>,
    paths: Vec<String>,
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

/// How an API's calls are sent: its client, each call's timeout, the token kept out of messages,
/// and the user's window of calls, which a rate limit's `Retry-After` closes.
struct Sender<'a> {
    client: &'a Client,
    timeout: Duration,
    secrets: &'a Secrets,
    api: Option<&'a ApiCalls>,
}

async fn send_all(
    sender: Sender<'_>,
    calls: Vec<Call>,
    check: fn(&str) -> bool,
    pace: impl Fn(&Call) -> (Duration, Option<u64>),
    progress: &Progress,
) -> Result<PurgeReport, PurgeError> {
    let mut report = PurgeReport::default();
    for call in calls {
        let (wait, reserved) = pace(&call);
        if !wait.is_zero() {
            tracing::debug!(
                "waiting {:.1} s for the API's purge rate limit",
                wait.as_secs_f64()
            );
            progress.paced(wait);
            tokio::time::sleep(wait).await;
        }
        let request = Request {
            method: call.method,
            url: &call.url,
            headers: &call.headers,
            body: &call.body,
        };
        // The API refuses every call of the user until then: none goes sooner, in this purge or
        // the next, and the wait is its pace, not a stall.
        let limited = |after: Duration| {
            progress.paced(after);
            if let Some(api) = sender.api {
                api.blocked(after);
            }
        };
        let answer = send_with_retries(
            sender.client,
            request,
            sender.timeout,
            sender.secrets,
            &limited,
        )
        .await;
        if let (Some(api), Some(reserved)) = (sender.api, reserved) {
            api.settle(reserved);
        }
        let answer = answer?;
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
        progress.accepted(call.paths);
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
    /// The zone serves nothing but this output: purging everything purges nothing else.
    pub only_this_output: bool,
    /// The account's plan: its purge rate limits.
    pub plan: CloudflarePlan,
    /// The user's calls: every call counts against the API's 1,200 per five minutes.
    pub api: Option<ApiCalls>,
    pub bbox: BBox,
    pub client: Client,
    /// How long each call may go unanswered.
    pub timeout: Duration,
    /// The token, kept out of messages.
    pub secrets: Secrets,
}

impl Cloudflare {
    fn call(&self, body: serde_json::Value, items: Vec<String>, paths: Vec<String>) -> Call {
        Call {
            method: "POST",
            url: format!("{}/zones/{}/purge_cache", self.api_url, self.zone_id),
            headers: vec![
                ("authorization".into(), format!("Bearer {}", self.token)),
                ("content-type".into(), "application/json".into()),
            ],
            body: body.to_string().into_bytes(),
            items,
            paths,
        }
    }

    /// The folders it purges whole: any, as prefixes, where it may purge by prefix; else the
    /// root alone, as everything, where the zone holds nothing but this output.
    pub fn forms(&self) -> Forms {
        match (self.prefixes, self.only_this_output) {
            (true, _) => Forms::ALL,
            (false, true) => Forms::ROOT,
            (false, false) => Forms::NONE,
        }
    }

    fn calls_for(&self, paths: &[String]) -> Vec<Call> {
        // Without prefix purges, everything (`*`) or a partition's (`VALUE/*`) is the zone's
        // everything: a killed run's changes have no narrower form.
        if !self.prefixes && paths.iter().any(|p| everything_under(p).is_some()) {
            let everything = vec![format!("{}/*", self.public_url)];
            return vec![self.call(
                serde_json::json!({ "purge_everything": true }),
                everything,
                vec!["*".to_string()],
            )];
        }
        if !self.prefixes {
            let files = paths.iter().cloned().map(Purge::Path).collect();
            return self.calls_of(files);
        }
        // Dense changes as prefixes only where that saves calls: URLs evict nothing unchanged,
        // and a prefix call also draws on the plan's scarce bucket of other purges.
        let exact = self.calls_of(fold(paths, self.bbox, 0.5, 0));
        let folded = self.calls_of(fold(paths, self.bbox, 0.5, usize::MAX));
        if folded.len() < exact.len() {
            folded
        } else {
            exact
        }
    }

    /// The calls purging `purges`: their URLs, then their folders as prefixes.
    fn calls_of(&self, purges: Vec<Purge>) -> Vec<Call> {
        let (mut files, mut prefixes) = (Vec::new(), Vec::new());
        for purge in purges {
            match purge {
                Purge::Path(path) => files.push((format!("{}/{path}", self.public_url), path)),
                // Prefixes are written without the scheme.
                Purge::Folder(folder) => prefixes.push((
                    format!(
                        "{}/{folder}",
                        self.public_url
                            .split_once("://")
                            .map_or(self.public_url.as_str(), |p| p.1)
                    ),
                    format!("{folder}*"),
                )),
            }
        }
        let call = |key: &str, chunk: &[(String, String)]| {
            let (items, sent): (Vec<String>, Vec<String>) = chunk.iter().cloned().unzip();
            self.call(serde_json::json!({ key: items }), items, sent)
        };
        let mut calls: Vec<Call> = files
            .chunks(Limits::of(self.plan).urls_per_call)
            .map(|chunk| call("files", chunk))
            .collect();
        calls.extend(
            prefixes
                .chunks(CLOUDFLARE_PER_CALL)
                .map(|chunk| call("prefixes", chunk)),
        );
        calls
    }

    /// The bucket a call draws on: URLs per URL, other purges (prefixes, everything) per call.
    fn bucket(&self, call: &Call) -> (String, Rate, f64) {
        let limits = Limits::of(self.plan);
        let urls = call.body.starts_with(br#"{"files""#);
        let key = format!("cloudflare {}\n{urls}", self.zone_id);
        if urls {
            let rate = Rate {
                per_second: limits.urls_per_second,
                burst: limits.urls_per_second,
            };
            (key, rate, call.items.len() as f64)
        } else {
            let rate = Rate {
                per_second: limits.requests_per_second,
                burst: limits.burst,
            };
            (key, rate, 1.0)
        }
    }

    /// How long sending `paths` would take at the plan's rates and the user's share of API
    /// calls, from the buckets and the window as they stand.
    pub fn seconds(&self, paths: &[String]) -> f64 {
        let calls = self.calls_for(paths);
        let mut needed: std::collections::BTreeMap<String, (Rate, f64)> = Default::default();
        for call in &calls {
            let (key, rate, tokens) = self.bucket(call);
            needed.entry(key).or_insert((rate, 0.0)).1 += tokens;
        }
        let purges: f64 = needed
            .iter()
            .map(|(key, (rate, tokens))| rate.seconds(key, *tokens))
            .sum();
        let api = self
            .api
            .as_ref()
            .map_or(0.0, |api| api.seconds(calls.len()));
        purges.max(api)
    }

    pub async fn purge(
        &self,
        paths: &[String],
        progress: &Progress,
    ) -> Result<PurgeReport, PurgeError> {
        // The API answers 200 with `"success": false` when it refused part of a call.
        fn succeeded(body: &str) -> bool {
            serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|v| v["success"] == serde_json::Value::Bool(true))
        }
        let sender = Sender {
            client: &self.client,
            timeout: self.timeout,
            secrets: &self.secrets,
            api: self.api.as_ref(),
        };
        let pace = |call: &Call| {
            let (key, rate, tokens) = self.bucket(call);
            let purges = rate.take(&key, tokens);
            match self.api.as_ref().map(ApiCalls::take) {
                Some((api, reserved)) => (purges.max(api), Some(reserved)),
                None => (purges, None),
            }
        };
        send_all(sender, self.calls_for(paths), succeeded, pace, progress).await
    }

    pub fn plan(&self, paths: &[String]) -> PurgePlan {
        plan(&self.calls_for(paths))
    }

    /// The URLs one call takes on the account's plan.
    pub fn urls_per_call(&self) -> usize {
        Limits::of(self.plan).urls_per_call
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

/// Fastly's purge API for one service.
pub(super) struct Fastly {
    pub service_id: String,
    pub token: String,
    pub api_url: String,
    pub public_url: String,
    pub surrogate_keys: bool,
    /// The service serves nothing but this output: `purge_all` purges nothing else.
    pub only_this_output: bool,
    /// Sends `Fastly-Soft-Purge: 1`: content is marked stale, not removed.
    pub soft_purge: bool,
    /// The user's calls: only `purge_all` counts against the API's 1,000 an hour.
    pub api: Option<ApiCalls>,
    pub client: Client,
    /// How long each call may go unanswered.
    pub timeout: Duration,
    /// The token, kept out of messages.
    pub secrets: Secrets,
}

impl Fastly {
    /// The surrogate key of a path as sent, which the origin or VCL tags each response with
    /// (`Surrogate-Key`): its public URL without the scheme
    /// (`tiles.example.org/v1/11/475/910.pbf`), and for a folder its URL and `*`
    /// (`tiles.example.org/v1/11/*` for a zoom, `tiles.example.org/v1/*` for the output). The
    /// public URL is the output's alone, so a key purges nothing of another output the service
    /// serves.
    fn surrogate_key(&self, path: &str) -> String {
        let host_path = self
            .public_url
            .split_once("://")
            .map_or(self.public_url.as_str(), |p| p.1);
        format!("{host_path}/{path}")
    }

    /// Whether a call counts against the user's API limit: only `purge_all` does.
    fn counted(call: &Call) -> bool {
        call.url.ends_with("/purge_all")
    }

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

    /// The folders it purges whole: the output, its zooms and partitions by surrogate key
    /// (the origin tags each tile with them); else the root alone, as `purge_all`, where the
    /// service holds nothing but this output.
    pub fn forms(&self) -> Forms {
        match (self.surrogate_keys, self.only_this_output) {
            (true, _) => Forms {
                columns: false,
                ..Forms::ALL
            },
            (false, true) => Forms::ROOT,
            (false, false) => Forms::NONE,
        }
    }

    fn calls_for(&self, paths: &[String]) -> Vec<Call> {
        // Without keys Fastly purges no folder: a partition's everything (`VALUE/*`) is the
        // service's.
        if !self.surrogate_keys && paths.iter().any(|p| everything_under(p).is_some()) {
            return vec![Call {
                method: "POST",
                url: format!("{}/service/{}/purge_all", self.api_url, self.service_id),
                headers: self.headers(),
                body: Vec::new(),
                items: vec![format!("{}/*", self.public_url)],
                paths: vec!["*".to_string()],
            }];
        }
        if self.surrogate_keys {
            return paths
                .chunks(FASTLY_KEYS_PER_CALL)
                .map(|chunk| {
                    let keys: Vec<String> = chunk.iter().map(|p| self.surrogate_key(p)).collect();
                    let mut headers = self.headers();
                    headers.push(("surrogate-key".into(), keys.join(" ")));
                    Call {
                        method: "POST",
                        url: format!("{}/service/{}/purge", self.api_url, self.service_id),
                        headers,
                        body: Vec::new(),
                        items: keys,
                        paths: chunk.to_vec(),
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
                paths: vec![path.clone()],
            })
            .collect()
    }

    /// How long sending `paths` would take at Fastly's purge rate and the user's share of API
    /// calls.
    pub fn seconds(&self, paths: &[String]) -> f64 {
        let calls = self.calls_for(paths);
        let purges: usize = calls.iter().map(|c| c.items.len()).sum();
        let counted = calls.iter().filter(|c| Fastly::counted(c)).count();
        let api = self.api.as_ref().map_or(0.0, |api| api.seconds(counted));
        FASTLY_RATE.seconds(&self.bucket(), purges as f64).max(api)
    }

    fn bucket(&self) -> String {
        format!("fastly {}", self.service_id)
    }

    pub async fn purge(
        &self,
        paths: &[String],
        progress: &Progress,
    ) -> Result<PurgeReport, PurgeError> {
        fn succeeded(body: &str) -> bool {
            // Single purges answer {"status": "ok", ...}; batch purges a map of keys to ids.
            serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v.is_object())
        }
        let sender = Sender {
            client: &self.client,
            timeout: self.timeout,
            secrets: &self.secrets,
            api: self.api.as_ref(),
        };
        let bucket = self.bucket();
        let pace = |call: &Call| {
            let purges = FASTLY_RATE.take(&bucket, call.items.len() as f64);
            match &self.api {
                Some(api) if Fastly::counted(call) => {
                    let (api, reserved) = api.take();
                    (purges.max(api), Some(reserved))
                }
                _ => (purges, None),
            }
        };
        send_all(sender, self.calls_for(paths), succeeded, pace, progress).await
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
            only_this_output: false,
            plan: CloudflarePlan::Free,
            api: None,
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
            surrogate_keys: false,
            only_this_output: false,
            soft_purge: false,
            api: None,
            client: Client::new().unwrap(),
            timeout: Duration::from_secs(10),
            secrets: Secrets::default(),
        };
        let calls = fastly.calls_for(&changed);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].url, "https://api.example/service/svc/purge_all");
        // With surrogate keys a folder is its key, which the origin tags every tile under it
        // with: the output's public URL and the path, which no other output's key shares.
        let keyed = Fastly {
            surrogate_keys: true,
            ..fastly
        };
        let calls = keyed.calls_for(&paths(&["CN/*", "3/*", "*", "US/1/1/0.pbf"]));
        assert_eq!(calls.len(), 1);
        assert_eq!(
            calls[0].header_value("surrogate-key"),
            "tiles.example/t/CN/* tiles.example/t/3/* tiles.example/t/* tiles.example/t/US/1/1/0.pbf"
        );
        let other = Fastly {
            public_url: "https://tiles.example/u".into(),
            ..keyed
        };
        assert_eq!(
            other.calls_for(&paths(&["*"]))[0].header_value("surrogate-key"),
            "tiles.example/u/*"
        );
        assert_eq!(calls[0].paths, paths(&["CN/*", "3/*", "*", "US/1/1/0.pbf"]));
    }

    impl Call {
        fn header_value(&self, name: &str) -> &str {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str())
        }
    }

    #[test]
    fn a_free_plans_urls_cost_time_and_a_prefix_one_request() {
        let api = cloudflare(true);
        let many: Vec<String> = (0..40_000).map(|i| format!("14/{i}/0.pbf")).collect();
        // 40,000 URLs at 800 a second, 800 of them at once: 49 s.
        assert!(
            (api.seconds(&many) - 49.0).abs() < 0.5,
            "{}",
            api.seconds(&many)
        );
        // One prefix call: the Free plan's bucket holds 25.
        assert!(api.seconds(&paths(&["*"])) < 1e-6);
        let calls = api.calls_for(&paths(&["*"]));
        assert_eq!(
            String::from_utf8_lossy(&calls[0].body),
            r#"{"prefixes":["tiles.example/t/"]}"#
        );
    }
}
