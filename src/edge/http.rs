//! An HTTP cache (Varnish, nginx's cache purge, a shield): one `PURGE` (or `BAN`) per path.
//! Everything (`*`) is one `BAN` of the root, which the cache's rules turn into a prefix ban.

use futures::StreamExt;

use std::time::Duration;

use super::{excerpt, send_with_retries, Client, PurgePlan, PurgeReport, Request, Secrets};
use crate::config::PurgeMethod;

/// A cache purged by URL.
pub(super) struct HttpCache {
    /// `{path}` stands for each path.
    pub url: String,
    pub method: PurgeMethod,
    pub concurrency: usize,
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
    pub fn requests(&self, paths: &[String]) -> Vec<(&'static str, String)> {
        if paths.iter().any(|p| p == "*") {
            return vec![("BAN", self.url.replace("{path}", ""))];
        }
        paths
            .iter()
            .map(|path| (self.method.as_str(), self.url.replace("{path}", path)))
            .collect()
    }

    pub fn plan(&self, paths: &[String]) -> PurgePlan {
        let requests = self.requests(paths);
        PurgePlan {
            requests: requests.len() as u64,
            paths: requests
                .into_iter()
                .map(|(method, url)| format!("{method} {url}"))
                .collect(),
            price_usd: None,
        }
    }

    pub async fn purge(&self, paths: &[String]) -> Result<PurgeReport, String> {
        let requests = self.requests(paths);
        let count = requests.len() as u64;
        let mut answers = futures::stream::iter(requests)
            .map(|(method, url)| async move {
                let request = Request {
                    method,
                    url: &url,
                    headers: &self.headers,
                    body: b"",
                };
                let answer =
                    send_with_retries(&self.client, request, self.timeout, &self.secrets).await?;
                // Not cached (404 to a PURGE) is as good as purged.
                if (200..300).contains(&answer.status) || answer.status == 404 {
                    Ok(())
                } else {
                    Err(format!(
                        "{method} {url}: answered {}: {}",
                        answer.status,
                        excerpt(&answer.body, &self.secrets)
                    ))
                }
            })
            .buffer_unordered(self.concurrency);
        while let Some(answer) = answers.next().await {
            answer?;
        }
        Ok(PurgeReport {
            requests: count,
            paths: count,
            price_usd: None,
        })
    }
}
