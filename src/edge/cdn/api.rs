//! What Cloudflare's and Fastly's purge APIs share: a call, and sending calls one after another
//! at the pace the API's limits allow, each accepted call reported as progress.

use std::time::Duration;

use super::super::calls::ApiCalls;
use super::super::send::{send_with_retries, Request};
use super::{Client, Progress, PurgeError, PurgePlan, PurgeReport, Secrets};
use crate::edge::secrets::excerpt;

/// One API call: method, URL, body, the URLs, prefixes or keys it purges, and the paths as sent
/// that it covers (a folder as `FOLDER*`), which its acceptance reports as progress.
pub(super) struct Call {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub items: Vec<String>,
    pub paths: Vec<String>,
}

/// What `calls` would purge, without sending them.
pub(super) fn plan(calls: &[Call]) -> PurgePlan {
    PurgePlan {
        requests: calls.len() as u64,
        paths: calls.iter().flat_map(|c| c.items.clone()).collect(),
        price_usd: None,
        evicted: 0,
    }
}

/// How an API's calls are sent: its client, each call's timeout, the token kept out of messages,
/// and the user's window of calls, which a rate limit's `Retry-After` closes.
pub(super) struct Sender<'a> {
    pub client: &'a Client,
    pub timeout: Duration,
    pub secrets: &'a Secrets,
    pub api: Option<&'a ApiCalls>,
}

/// Sends `calls` in order, each after the wait `pace` gives (and the API reservation it made);
/// a call the API refuses, or whose answer `check` does not take, fails the rest.
pub(super) async fn send_all(
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

#[cfg(test)]
impl Call {
    /// The value of header `name`, empty when it is not sent.
    pub fn header_value(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}
