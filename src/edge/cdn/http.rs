//! An HTTP cache (Varnish, nginx's cache purge, a shield): one `PURGE` (or `BAN`) per path.
//! Everything (`*`), or a partition's everything (`VALUE/*`), is one `BAN` of the root or of the
//! partition's prefix, which the cache's rules turn into a prefix ban; a cache that takes `BAN`
//! is sent a folder the plan chose the same way.
//!
//! Its pace is an estimate: `concurrency` connections, each carrying `rate_per_connection`
//! requests a second (50 by default: a 20 ms round trip).

use std::time::Duration;

use futures::StreamExt;

use super::{Build, Builder, Built, CdnKind, Paced};
use crate::config::{CdnTarget, PurgeMethod};
use crate::edge::client::Client;
use crate::edge::error::PurgeError;
use crate::edge::fold::everything_under;
use crate::edge::pace::Progress;
use crate::edge::price::Forms;
use crate::edge::report::{PurgePlan, PurgeReport};
use crate::edge::secrets::Secrets;
use crate::edge::secrets::{excerpt, header_values};
use crate::edge::send::{send_with_retries, Request};
use crate::error::Result;

/// `kind = "http"`.
pub(super) const KIND: CdnKind = CdnKind {
    name: "http",
    build: Builder::Now(build),
};

fn build(build: Build<'_>) -> Result<Built> {
    let config = build.config;
    let CdnTarget::Http {
        url,
        method,
        concurrency,
        rate_per_connection,
        headers,
    } = &config.target
    else {
        return Err(build.not_of(KIND.name));
    };
    let cdn = HttpCache {
        url: url.clone(),
        method: *method,
        concurrency: *concurrency,
        rate_per_connection: *rate_per_connection,
        headers: header_values(config, headers, build.read_secrets, build.sent)?,
        client: build.client.clone(),
        timeout: config.request_timeout,
        secrets: Secrets::default(),
    };
    Ok(Built {
        cdn: Box::new(cdn),
        api: None,
    })
}

impl Paced for HttpCache {
    /// The folders it purges whole: any, as a BAN of its prefix, where it takes BAN.
    fn forms(&self) -> Forms {
        match self.method {
            PurgeMethod::Ban => Forms::ALL,
            PurgeMethod::Purge => Forms::NONE,
        }
    }

    /// How long sending `paths` would take at its reckoned pace.
    fn seconds(&self, paths: &[String]) -> f64 {
        self.requests(paths).len() as f64 / (self.concurrency as f64 * self.rate_per_connection)
    }

    fn plan(&self, paths: &[String]) -> PurgePlan {
        let requests = self.requests(paths);
        PurgePlan {
            requests: requests.len() as u64,
            paths: requests
                .into_iter()
                .map(|(method, url)| format!("{method} {url}"))
                .collect(),
            price_usd: None,
            evicted: 0,
        }
    }

    /// Sends one request per path (a folder: a BAN of its prefix), `concurrency` at once.
    async fn send(&self, paths: &[String], progress: &Progress) -> Result<PurgeReport, PurgeError> {
        let requests = self.sent(paths);
        let count = requests.len() as u64;
        // Each request's future is made when the stream reaches it: made all before the first was
        // sent, a purge of 100,000 paths held about 3 kB a path (270 MB) for its whole run.
        let mut answers = futures::stream::iter(requests)
            .map(|request: Sent| self.send_one(request, progress))
            .buffer_unordered(self.concurrency);
        while let Some(answer) = answers.next().await {
            answer?;
        }
        Ok(PurgeReport {
            evicted: 0,
            over_budget: false,
            no_room: false,
            requests: count,
            paths: count,
            price_usd: None,
        })
    }

    fn gathers(&self) -> Option<usize> {
        None
    }

    fn set_secrets(&mut self, secrets: Secrets) {
        self.secrets = secrets;
    }
}

/// One request to a cache: a named type, not a tuple, so a closure taking it makes a future the
/// compiler can prove `Send` (a tuple's `&'static str` is read as any lifetime).
struct Sent {
    method: &'static str,
    url: String,
    /// The path as sent, which the request covers.
    path: String,
}

/// A cache purged by URL.
struct HttpCache {
    /// `{path}` stands for each path.
    pub url: String,
    pub method: PurgeMethod,
    pub concurrency: usize,
    /// Requests a second one connection is reckoned to carry.
    pub rate_per_connection: f64,
    /// Header names and their values (from the environment).
    pub headers: Vec<(String, String)>,
    pub client: Client,
    /// How long each request may go unanswered.
    pub timeout: Duration,
    /// The header values, kept out of messages.
    pub secrets: Secrets,
}

impl HttpCache {
    /// The requests: method and URL.
    fn requests(&self, paths: &[String]) -> Vec<(&'static str, String)> {
        self.sent(paths)
            .into_iter()
            .map(|request| (request.method, request.url))
            .collect()
    }

    /// The requests with the path as sent each covers.
    fn sent(&self, paths: &[String]) -> Vec<Sent> {
        // A folder purged whole is one BAN of its prefix, and covers every path under it.
        let folders: Vec<(&str, &String)> = paths
            .iter()
            .filter_map(|p| Some((everything_under(p)?, p)))
            .collect();
        let mut requests: Vec<Sent> = folders
            .iter()
            .map(|(folder, sent)| Sent {
                method: "BAN",
                url: self.url.replace("{path}", folder),
                path: (*sent).clone(),
            })
            .collect();
        requests.extend(
            paths
                .iter()
                .filter(|path| !folders.iter().any(|(folder, _)| path.starts_with(folder)))
                .map(|path| Sent {
                    method: self.method.as_str(),
                    url: self.url.replace("{path}", path),
                    path: path.clone(),
                }),
        );
        requests
    }

    /// One request, noted in `progress` once the cache accepted it.
    async fn send_one(&self, request: Sent, progress: &Progress) -> Result<(), PurgeError> {
        let Sent { method, url, path } = request;
        let request = Request {
            method,
            url: &url,
            headers: &self.headers,
            body: b"",
        };
        // A wait the cache asks for is its pace, not a stall.
        let limited = |after| progress.paced(after);
        let answer =
            send_with_retries(&self.client, request, self.timeout, &self.secrets, &limited).await?;
        // Not cached (404 to a PURGE) is as good as purged.
        if (200..300).contains(&answer.status) || answer.status == 404 {
            progress.accepted([path]);
            Ok(())
        } else {
            Err(PurgeError::Refused {
                method: method.to_string(),
                url,
                status: answer.status,
                excerpt: excerpt(&answer.body, &self.secrets),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partitions_everything_is_one_ban_of_its_prefix_not_a_literal_star() {
        let cache = HttpCache {
            url: "http://cache:6081/tiles/{path}".into(),
            method: PurgeMethod::Purge,
            concurrency: 1,
            rate_per_connection: 50.0,
            headers: Vec::new(),
            client: Client::new().unwrap(),
            timeout: Duration::from_secs(10),
            secrets: Secrets::default(),
        };
        let paths: Vec<String> = ["CN/*", "CN/1/0/0.pbf", "US/1/1/0.pbf"]
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            cache.requests(&paths),
            vec![
                ("BAN", "http://cache:6081/tiles/CN/".to_string()),
                ("PURGE", "http://cache:6081/tiles/US/1/1/0.pbf".to_string()),
            ]
        );
        assert_eq!(
            cache.requests(&["*".to_string(), "1/0/0.pbf".to_string()]),
            vec![("BAN", "http://cache:6081/tiles/".to_string())]
        );
    }
}
