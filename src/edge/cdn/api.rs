//! What Cloudflare's and Fastly's purge APIs share: a target's token, calls and public URL
//! ([`Api`]), a call, and sending calls one after another at the pace the API's limits allow,
//! each accepted call reported as progress.

use std::time::Duration;

use super::super::calls::ApiCalls;
use super::super::send::{send_with_retries, Request};
use super::{Build, Built, Cdn, Client, Progress, PurgeError, PurgePlan, PurgeReport, Secrets};
use crate::config::CdnTarget;
use crate::edge::secrets::excerpt;
use crate::error::Result as RunResult;

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

/// What a target of a purge API (Cloudflare's, Fastly's) sends its calls with.
pub(super) struct Api {
    /// The API token, which every call carries.
    pub token: String,
    /// The API's base URL.
    pub url: String,
    /// The output's public URL, whose absolute URLs the API purges.
    pub public_url: String,
    /// The calls of the user holding the token, where the config limits them; a rate limit's
    /// `Retry-After` closes their window, and what an answer says is left of it narrows it.
    pub calls: Option<ApiCalls>,
    pub client: Client,
    /// How long each call may go unanswered.
    pub timeout: Duration,
    /// The token, kept out of messages.
    pub secrets: Secrets,
}

impl Api {
    /// The API of `build`'s target, of kind `kind` (`shown` in messages): its token, read from
    /// the variable the config names, the calls of the user holding it, and the public URL.
    pub fn of(build: &mut Build<'_>, kind: &str, shown: &str) -> RunResult<Api> {
        let config = build.config;
        let (CdnTarget::Cloudflare {
            token_env, api_url, ..
        }
        | CdnTarget::Fastly {
            token_env, api_url, ..
        }) = &config.target
        else {
            return Err(build.not_of(kind));
        };
        let token = build.token(token_env)?;
        let calls = build.api_calls(kind, &token);
        Ok(Api {
            token,
            url: api_url.clone(),
            public_url: build.public_url(shown)?,
            calls,
            client: build.client.clone(),
            timeout: config.request_timeout,
            secrets: Secrets::default(),
        })
    }

    /// A target built on this API: what `cdn` makes of it, and the calls of its user, which the
    /// edge counts across targets.
    pub fn built<C: Cdn + 'static>(self, cdn: impl FnOnce(Api) -> C) -> Built {
        let calls = self.calls.clone();
        Built {
            cdn: Box::new(cdn(self)),
            api: calls,
        }
    }

    /// The public URL without its scheme (`tiles.example.org/v1`), as prefixes and surrogate
    /// keys are written.
    pub fn host_path(&self) -> &str {
        self.public_url
            .split_once("://")
            .map_or(self.public_url.as_str(), |p| p.1)
    }
}

/// Sends `calls` to `api` in order, each after the wait `pace` gives (and the API reservation it
/// made); a call the API refuses, or whose answer `check` does not take, fails the rest.
pub(super) async fn send_all(
    api: &Api,
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
            if let Some(user) = &api.calls {
                user.blocked(after);
            }
        };
        let answer =
            send_with_retries(&api.client, request, api.timeout, &api.secrets, &limited).await;
        if let (Some(user), Some(reserved)) = (&api.calls, reserved) {
            user.settle(reserved);
        }
        let answer = answer?;
        if let (Some(user), Some(reported)) = (&api.calls, answer.reported) {
            user.reported(reported);
        }
        if !(200..300).contains(&answer.status) || !check(&answer.body) {
            return Err(PurgeError::Refused {
                method: call.method.to_string(),
                url: call.url,
                status: answer.status,
                excerpt: excerpt(&answer.body, &api.secrets),
            });
        }
        report.requests += 1;
        report.paths += call.items.len() as u64;
        progress.accepted(call.paths);
    }
    Ok(report)
}

#[cfg(test)]
impl Api {
    /// An API at `https://api.example` for the output at `public_url`, with no limit of calls.
    pub fn for_test(public_url: &str) -> Api {
        Api {
            token: "token".into(),
            url: "https://api.example".into(),
            public_url: public_url.into(),
            calls: None,
            client: Client::new().unwrap(),
            timeout: Duration::from_secs(10),
            secrets: Secrets::default(),
        }
    }
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
