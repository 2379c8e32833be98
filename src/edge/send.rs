//! One purge request sent with the purge retry policy: bounded tries, each within the target's
//! `request_timeout`, answers quoted only as an excerpt.

use std::time::Duration;

use super::client::{self, Client};
use super::error::{Attempt, PurgeError};
use super::secrets::{excerpt, Secrets};
use crate::retry::Policy;

/// Attempts per purge request before the target counts as failing for this run.
const ATTEMPTS: u32 = 5;

/// The retry policy of purge requests: 0.5 s doubling to 8 s.
fn policy() -> Policy {
    Policy::database(ATTEMPTS)
}

/// One purge request: where it goes and what it carries.
pub(super) struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    /// Its headers, secrets among them.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Sends a request with the purge retry policy, each try within `timeout`: transport failures,
/// timeouts, 429 and 5xx are retried. Messages quote answers only as an [`excerpt`].
pub(super) async fn send_with_retries(
    client: &Client,
    request: Request<'_>,
    timeout: Duration,
    secrets: &Secrets,
) -> std::result::Result<client::Answer, PurgeError> {
    let Request {
        method,
        url,
        headers,
        body,
    } = request;
    let what = || format!("{method} {url}");
    let outcome = policy()
        .run(
            what,
            || async {
                let answer = client
                    .send(method, url, headers, body.to_vec(), timeout)
                    .await?;
                if answer.status == 429 || answer.status >= 500 {
                    return Err(Attempt::Answered {
                        status: answer.status,
                        excerpt: excerpt(&answer.body, secrets),
                    });
                }
                Ok(answer)
            },
            |_| true,
            |e: &Attempt| e.to_string(),
        )
        .await;
    outcome.map_err(|failed| PurgeError::Retried {
        method: method.to_string(),
        url: url.to_string(),
        last: failed.error,
        attempts: failed.attempts,
    })
}
