//! One purge request sent with the purge retry policy: bounded tries, each within the target's
//! `request_timeout`, answers quoted only as an excerpt. A rate limit's answer (429 with
//! `Retry-After`) is waited out as it asks, not retried sooner: the API refuses every call until
//! then, and Cloudflare's block of a user past its limit lasts five minutes.

use std::time::Duration;

use super::client::{self, Client};
use super::error::{Attempt, PurgeError};
use super::secrets::{excerpt, Secrets};
use crate::retry::Policy;

/// Attempts per purge request before the target counts as failing for this run.
const ATTEMPTS: u32 = 5;

/// The longest `Retry-After` a request waits out: Cloudflare's five-minute block of a user past
/// its API limit, and some slack. A longer one fails the request, and its changes wait in the
/// outbox.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(330);

/// Rate-limit answers waited out per request before it fails.
const RATE_LIMITED_WAITS: u32 = 3;

/// The retry policy of purge requests: 0.5 s doubling to 8 s.
fn policy() -> Policy {
    Policy::database(ATTEMPTS)
}

/// One purge request: where it goes and what it carries.
#[derive(Clone, Copy)]
pub(super) struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    /// Its headers, secrets among them.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Sends a request with the purge retry policy, each try within `timeout`: transport failures,
/// timeouts, 429 and 5xx are retried. A 429 with `Retry-After` (at most
/// [`LONGEST_RETRY_AFTER`]) is told to `limited` and waited out before the next try.
/// Messages quote answers only as an [`excerpt`].
pub(super) async fn send_with_retries(
    client: &Client,
    request: Request<'_>,
    timeout: Duration,
    secrets: &Secrets,
    limited: &(dyn Fn(Duration) + Sync),
) -> std::result::Result<client::Answer, PurgeError> {
    let mut waits = 0;
    loop {
        match tries(client, &request, timeout, secrets).await {
            Err(PurgeError::Retried {
                last: Attempt::Limited { after, .. },
                ..
            }) if waits < RATE_LIMITED_WAITS && after <= LONGEST_RETRY_AFTER => {
                waits += 1;
                tracing::warn!(
                    "{}: the API's rate limit asks to wait {}: waiting",
                    secrets.redact(&format!("{} {}", request.method, request.url)),
                    humantime::format_duration(after)
                );
                limited(after);
                tokio::time::sleep(after).await;
            }
            sent => return sent,
        }
    }
}

/// The tries of the retry policy; a 429 with `Retry-After` ends them at once.
async fn tries(
    client: &Client,
    request: &Request<'_>,
    timeout: Duration,
    secrets: &Secrets,
) -> std::result::Result<client::Answer, PurgeError> {
    let Request {
        method,
        url,
        headers,
        body,
    } = *request;
    // Each retry's warning is redacted as the final error is.
    let what = || secrets.redact(&format!("{method} {url}"));
    let outcome = policy()
        .run(
            what,
            || async {
                let answer = client
                    .send(method, url, headers, body.to_vec(), timeout)
                    .await?;
                match (answer.status, answer.retry_after) {
                    (429, Some(after)) => Err(Attempt::Limited {
                        after,
                        excerpt: excerpt(&answer.body, secrets),
                    }),
                    (status, _) if status == 429 || status >= 500 => Err(Attempt::Answered {
                        status,
                        excerpt: excerpt(&answer.body, secrets),
                    }),
                    _ => Ok(answer),
                }
            },
            |e: &Attempt| !matches!(e, Attempt::Limited { .. }),
            |e: &Attempt| secrets.redact(&e.to_string()),
        )
        .await;
    outcome.map_err(|failed| PurgeError::Retried {
        method: method.to_string(),
        url: url.to_string(),
        last: failed.error,
        attempts: failed.attempts,
    })
}
