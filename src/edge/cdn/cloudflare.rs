//! Cloudflare's purge-cache API for one zone: URLs, prefixes, or everything, at the rates of
//! the account's plan and within the user's share of API calls. No server of Cloudflare's runs
//! here: the tests check the requests against a local server that records them and answers as
//! the API documents.

use super::api::{plan, send_all, Api, Call};
use super::{Build, Builder, Built, CdnKind, Paced};
use crate::config::cdn::CloudflarePlan;
use crate::config::CdnTarget;
use crate::edge::calls::ApiCalls;
use crate::edge::error::PurgeError;
use crate::edge::fold::everything_under;
use crate::edge::fold::{fold, Purge};
use crate::edge::pace::{Progress, Rate};
use crate::edge::price::Forms;
use crate::edge::report::{PurgePlan, PurgeReport};
use crate::edge::secrets::Secrets;
use crate::error::Result;
use crate::tile::BBox;

/// Cloudflare takes at most this many URLs (or prefixes) per purge call (500 URLs on Enterprise).
const CLOUDFLARE_PER_CALL: usize = 100;

/// `kind = "cloudflare"`.
pub(super) const KIND: CdnKind = CdnKind {
    name: "cloudflare",
    build: Builder::Now(build),
};

fn build(mut build: Build<'_>) -> Result<Built> {
    let api = Api::of(&mut build, KIND.name, "Cloudflare")?;
    let CdnTarget::Cloudflare {
        zone_id,
        prefixes,
        plan,
        ..
    } = &build.config.target
    else {
        return Err(build.not_of(KIND.name));
    };
    Ok(api.built(|api| Cloudflare {
        plan: *plan,
        zone_id: zone_id.clone(),
        prefixes: *prefixes,
        only_this_output: build.config.only_this_output,
        bbox: build.bbox,
        api,
    }))
}

impl Paced for Cloudflare {
    /// The folders it purges whole: any, as prefixes, where it may purge by prefix; else the
    /// root alone, as everything, where the zone holds nothing but this output.
    fn forms(&self) -> Forms {
        match (self.prefixes, self.only_this_output) {
            (true, _) => Forms::ALL,
            (false, true) => Forms::ROOT,
            (false, false) => Forms::NONE,
        }
    }

    /// How long sending `paths` would take at the plan's rates and the user's share of API
    /// calls, from the buckets and the window as they stand.
    fn seconds(&self, paths: &[String]) -> f64 {
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
            .calls
            .as_ref()
            .map_or(0.0, |api| api.seconds(calls.len()));
        purges.max(api)
    }

    fn plan(&self, paths: &[String]) -> PurgePlan {
        plan(&self.calls_for(paths))
    }

    /// Sends the calls purging `paths`, each at the pace of its bucket and the user's calls.
    async fn send(&self, paths: &[String], progress: &Progress) -> Result<PurgeReport, PurgeError> {
        // The API answers 200 with `"success": false` when it refused part of a call.
        fn succeeded(body: &str) -> bool {
            serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|v| v["success"] == serde_json::Value::Bool(true))
        }
        let pace = |call: &Call| {
            let (key, rate, tokens) = self.bucket(call);
            let purges = rate.take(&key, tokens);
            match self.api.calls.as_ref().map(ApiCalls::take) {
                Some((api, reserved)) => (purges.max(api), Some(reserved)),
                None => (purges, None),
            }
        };
        send_all(&self.api, self.calls_for(paths), succeeded, pace, progress).await
    }

    fn gathers(&self) -> Option<usize> {
        self.api.calls.is_some().then(|| self.urls_per_call())
    }

    fn set_secrets(&mut self, secrets: Secrets) {
        self.api.secrets = secrets;
    }
}

/// Cloudflare's purge-cache API for one zone.
struct Cloudflare {
    pub zone_id: String,
    pub prefixes: bool,
    /// The zone serves nothing but this output: purging everything purges nothing else.
    pub only_this_output: bool,
    /// The account's plan: its purge rate limits.
    pub plan: CloudflarePlan,
    pub bbox: BBox,
    /// The token, the API and the public URL; the user's calls, every one of which counts
    /// against the API's 1,200 per five minutes.
    pub api: Api,
}

impl Cloudflare {
    fn call(&self, body: serde_json::Value, items: Vec<String>, paths: Vec<String>) -> Call {
        Call {
            method: "POST",
            url: format!("{}/zones/{}/purge_cache", self.api.url, self.zone_id),
            headers: vec![
                ("authorization".into(), format!("Bearer {}", self.api.token)),
                ("content-type".into(), "application/json".into()),
            ],
            body: body.to_string().into_bytes(),
            items,
            paths,
        }
    }

    fn calls_for(&self, paths: &[String]) -> Vec<Call> {
        // Without prefix purges, everything (`*`) or a partition's (`VALUE/*`) is the zone's
        // everything: a killed run's changes have no narrower form.
        if !self.prefixes && paths.iter().any(|p| everything_under(p).is_some()) {
            let everything = vec![format!("{}/*", self.api.public_url)];
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
                Purge::Path(path) => {
                    files.push((format!("{}/{path}", self.api.public_url), path));
                }
                // Prefixes are written without the scheme.
                Purge::Folder(folder) => prefixes.push((
                    format!("{}/{folder}", self.api.host_path()),
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
            // The bucket is counted here when a call is reserved and at Cloudflare when it
            // arrives: a call that travelled faster than the one before it finds fewer tokens
            // refilled than were counted here. Planning with one call less than the documented
            // burst keeps that jitter from costing a 429 at the bottom of the bucket.
            let rate = Rate {
                per_second: limits.urls_per_second,
                burst: limits.urls_per_second - limits.urls_per_call as f64,
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

    /// The URLs one call takes on the account's plan.
    fn urls_per_call(&self) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn cloudflare(prefixes: bool) -> Cloudflare {
        Cloudflare {
            zone_id: "zone".into(),
            prefixes,
            only_this_output: false,
            plan: CloudflarePlan::Free,
            bbox: BBox::WORLD,
            api: Api::for_test("https://tiles.example/t"),
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
    }

    #[test]
    fn a_free_plans_urls_cost_time_and_a_prefix_one_request() {
        let api = cloudflare(true);
        let many: Vec<String> = (0..40_000).map(|i| format!("14/{i}/0.pbf")).collect();
        // 40,000 URLs at 800 a second, 700 of them at once (a call's worth kept in hand): 49.1 s.
        assert!(
            (api.seconds(&many) - 49.125).abs() < 0.1,
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
