//! S3 writes at the bucket's pace ([`crate::store::pace`]): a refusal as too fast (`503 SlowDown`,
//! `503 ServiceUnavailable`, `429`) is left to the pace, which sends the write again within the
//! throttle budget; other failures are retried as every request is.

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::{describe, is_transient};
use crate::retry::Policy;
use crate::store::pace::Pace;
use crate::store::StoreError;

/// Whether the store refused the request as too fast, and the `Retry-After` it gave.
fn too_fast<E>(err: &SdkError<E, HttpResponse>) -> Option<Option<Duration>> {
    let SdkError::ServiceError(context) = err else {
        return None;
    };
    let raw = context.raw();
    matches!(raw.status().as_u16(), 503 | 429).then(|| {
        raw.headers()
            .get("retry-after")
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    })
}

/// Runs an S3 write at `pace`, each sending of it tried up to `attempts` times for failures other
/// than a refusal as too fast.
pub async fn paced<T, E, F, Fut>(
    pace: &Pace,
    attempts: u32,
    what: &str,
    request: F,
) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let policy = Policy::s3(attempts);
    let secrets = crate::store::credentials();
    let run = pace.run(
        what,
        || {
            policy.run(
                || secrets.redact(what),
                &request,
                |err| is_transient(err) && too_fast(err).is_none(),
                describe,
            )
        },
        |failed| too_fast(&failed.error),
    );
    tokio::select! {
        result = run => result.map_err(|refused| {
            let message = format!("{}{}", describe(&refused.error.error), refused.note());
            let attempts = refused.error.attempts;
            StoreError::new(what, &message, attempts, Box::new(refused.error.error))
        }),
        signal = crate::error::stop_requested() => Err(crate::store::abandoned(what, signal)),
    }
}
