//! Fastly's purge API for one service: URLs, surrogate keys, or `purge_all`, at Fastly's purge
//! rate and within the user's share of the API calls it counts. No server of Fastly's runs here:
//! the tests check the requests against a local server that records them and answers as the API
//! documents.

use super::api::{plan, send_all, Api, Call};
use super::{Build, Builder, Built, CdnKind, Paced};
use crate::config::CdnTarget;
use crate::edge::error::PurgeError;
use crate::edge::fold::everything_under;
use crate::edge::pace::{Progress, Rate};
use crate::edge::price::Forms;
use crate::edge::report::{PurgePlan, PurgeReport};
use crate::edge::secrets::Secrets;
use crate::error::Result;

/// Fastly takes at most this many surrogate keys per batch purge.
const FASTLY_KEYS_PER_CALL: usize = 256;
/// Fastly's API page says URL and surrogate-key purges are not rate-limited (only `purge_all`
/// counts, against the 1,000 non-read calls an hour); they are still paced, as a bucket of 1,000
/// refilled at 100,000 an hour, so a huge reseed neither floods the API nor plans on no limit.
const FASTLY_RATE: Rate = Rate {
    per_second: 100_000.0 / 3_600.0,
    burst: 1_000.0,
};

/// `kind = "fastly"`.
pub(super) const KIND: CdnKind = CdnKind {
    name: "fastly",
    build: Builder::Now(build),
};

fn build(mut build: Build<'_>) -> Result<Built> {
    let api = Api::of(&mut build, KIND.name, "Fastly")?;
    let CdnTarget::Fastly {
        service_id,
        surrogate_keys,
        soft_purge,
        ..
    } = &build.config.target
    else {
        return Err(build.not_of(KIND.name));
    };
    Ok(api.built(|api| Fastly {
        soft_purge: *soft_purge,
        service_id: service_id.clone(),
        surrogate_keys: *surrogate_keys,
        only_this_output: build.config.only_this_output,
        api,
    }))
}

impl Paced for Fastly {
    /// The folders it purges whole: the output, its zooms and partitions by surrogate key
    /// (the origin tags each tile with them); else the root alone, as `purge_all`, where the
    /// service holds nothing but this output.
    fn forms(&self) -> Forms {
        match (self.surrogate_keys, self.only_this_output) {
            (true, _) => Forms {
                columns: false,
                ..Forms::ALL
            },
            (false, true) => Forms::ROOT,
            (false, false) => Forms::NONE,
        }
    }

    /// How long sending `paths` would take at Fastly's purge rate and the user's share of API
    /// calls.
    fn seconds(&self, paths: &[String]) -> f64 {
        let calls = self.calls_for(paths);
        let purges: usize = calls.iter().map(|c| c.items.len()).sum();
        let counted = calls.iter().filter(|c| Fastly::counted(c)).count();
        let api = self
            .api
            .calls
            .as_ref()
            .map_or(0.0, |api| api.seconds(counted));
        FASTLY_RATE.seconds(&self.bucket(), purges as f64).max(api)
    }

    fn plan(&self, paths: &[String]) -> PurgePlan {
        plan(&self.calls_for(paths))
    }

    /// Sends the calls purging `paths`, at Fastly's purge rate and the user's calls.
    async fn send(&self, paths: &[String], progress: &Progress) -> Result<PurgeReport, PurgeError> {
        fn succeeded(body: &str) -> bool {
            // Single purges answer {"status": "ok", ...}; batch purges a map of keys to ids.
            serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v.is_object())
        }
        let bucket = self.bucket();
        let pace = |call: &Call| {
            let purges = FASTLY_RATE.take(&bucket, call.items.len() as f64);
            match &self.api.calls {
                Some(api) if Fastly::counted(call) => {
                    let (api, reserved) = api.take();
                    (purges.max(api), Some(reserved))
                }
                _ => (purges, None),
            }
        };
        send_all(&self.api, self.calls_for(paths), succeeded, pace, progress).await
    }

    fn gathers(&self) -> Option<usize> {
        None
    }

    fn set_secrets(&mut self, secrets: Secrets) {
        self.api.secrets = secrets;
    }
}

/// Fastly's purge API for one service.
struct Fastly {
    pub service_id: String,
    pub surrogate_keys: bool,
    /// The service serves nothing but this output: `purge_all` purges nothing else.
    pub only_this_output: bool,
    /// Sends `Fastly-Soft-Purge: 1`: content is marked stale, not removed.
    pub soft_purge: bool,
    /// The token, the API and the public URL; the user's calls, of which only `purge_all`
    /// counts against the API's 1,000 an hour.
    pub api: Api,
}

impl Fastly {
    /// The surrogate key of a path as sent, which the origin or VCL tags each response with
    /// (`Surrogate-Key`): its public URL without the scheme
    /// (`tiles.example.org/v1/11/475/910.pbf`), and for a folder its URL and `*`
    /// (`tiles.example.org/v1/11/*` for a zoom, `tiles.example.org/v1/*` for the output). The
    /// public URL is the output's alone, so a key purges nothing of another output the service
    /// serves.
    fn surrogate_key(&self, path: &str) -> String {
        format!("{}/{path}", self.api.host_path())
    }

    /// Whether a call counts against the user's API limit: only `purge_all` does.
    fn counted(call: &Call) -> bool {
        call.url.ends_with("/purge_all")
    }

    fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![
            ("fastly-key".into(), self.api.token.clone()),
            ("accept".into(), "application/json".into()),
        ];
        if self.soft_purge {
            headers.push(("fastly-soft-purge".into(), "1".into()));
        }
        headers
    }

    fn calls_for(&self, paths: &[String]) -> Vec<Call> {
        // Without keys Fastly purges no folder: a partition's everything (`VALUE/*`) is the
        // service's.
        if !self.surrogate_keys && paths.iter().any(|p| everything_under(p).is_some()) {
            return vec![Call {
                method: "POST",
                url: format!("{}/service/{}/purge_all", self.api.url, self.service_id),
                headers: self.headers(),
                body: Vec::new(),
                items: vec![format!("{}/*", self.api.public_url)],
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
                        url: format!("{}/service/{}/purge", self.api.url, self.service_id),
                        headers,
                        body: Vec::new(),
                        items: keys,
                        paths: chunk.to_vec(),
                    }
                })
                .collect();
        }
        let host_path = self.api.host_path();
        paths
            .iter()
            .map(|path| Call {
                method: "POST",
                url: format!("{}/purge/{host_path}/{path}", self.api.url),
                headers: self.headers(),
                body: Vec::new(),
                items: vec![format!("{}/{path}", self.api.public_url)],
                paths: vec![path.clone()],
            })
            .collect()
    }

    fn bucket(&self) -> String {
        format!("fastly {}", self.service_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_partitions_everything_is_purge_all_or_its_key_never_a_star_url() {
        let changed = paths(&["CN/*", "CN/1/0/0.pbf", "US/1/1/0.pbf"]);

        let fastly = Fastly {
            service_id: "svc".into(),
            surrogate_keys: false,
            only_this_output: false,
            soft_purge: false,
            api: Api::for_test("https://tiles.example/t"),
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
            api: Api::for_test("https://tiles.example/u"),
            ..keyed
        };
        assert_eq!(
            other.calls_for(&paths(&["*"]))[0].header_value("surrogate-key"),
            "tiles.example/u/*"
        );
        assert_eq!(calls[0].paths, paths(&["CN/*", "3/*", "*", "US/1/1/0.pbf"]));
    }
}
