//! What goes wrong purging a CDN, with the failure underneath kept as the cause: a request that
//! got no answer, an answer that refuses the purge, a CloudFront call the SDK failed, a purge that
//! ran out of time.
//!
//! Each reads as the one line the edge has always shown. A message may quote what a target
//! answered, so it leaves the edge only redacted of the target's secrets (`PurgeTarget`); the
//! causes kept under it are not redacted, which is why the tool shows messages, never the chain.

use std::time::Duration;

use aws_sdk_cloudfront::error::{BoxError, BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudfront::operation::create_invalidation::CreateInvalidationError;
use aws_sdk_cloudfront::operation::get_invalidation::GetInvalidationError;
use aws_sdk_cloudfront::operation::list_invalidations::ListInvalidationsError;

/// Why one HTTP request got no answer, or none in time.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A method the HTTP client cannot send.
    #[error("{0}")]
    Method(#[from] hyper::http::method::InvalidMethod),
    /// A header name or value the request cannot carry. The builder's error names neither the
    /// header nor its value (a value may be a secret).
    #[error("bad request to {url}: a header name or value cannot be sent")]
    Unsendable {
        /// Where the request was going.
        url: String,
        /// The request builder's error.
        #[source]
        source: hyper::http::Error,
    },
    /// Connecting or exchanging failed: the client's words, each of their causes after a colon.
    #[error("{}", chain(.0))]
    Transport(#[source] hyper_util::client::legacy::Error),
    /// The answer broke off while its body was read.
    #[error("reading the answer: {0}")]
    Reading(#[source] hyper::Error),
    /// No answer within the target's `request_timeout`.
    #[error("no answer within {} (request_timeout)", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// No answer to an edge check's fetch within its time.
    #[error("no answer within {0:?}")]
    FetchTimeout(Duration),
    /// An answer longer than any that could match what was asked for: reading stopped there.
    #[error("an answer of more than {0} bytes")]
    TooLong(usize),
}

/// One failed attempt of a purge request, which the retry policy tries again.
#[derive(Debug, thiserror::Error)]
pub enum Attempt {
    /// No answer.
    #[error(transparent)]
    Unanswered(#[from] RequestError),
    /// An answer that asks to try later (429, 5xx), quoted as an `excerpt`.
    #[error("answered {status}: {excerpt}")]
    Answered {
        /// The HTTP status.
        status: u16,
        /// What the answer's body may be quoted as.
        excerpt: String,
    },
    /// A rate limit's answer (429) asking to wait before the next call (`Retry-After`).
    #[error("answered 429, the API's rate limit, asking to wait {}: {excerpt}", humantime::format_duration(*.after))]
    Limited {
        /// How long the answer asks to wait.
        after: Duration,
        /// What the answer's body may be quoted as.
        excerpt: String,
    },
}

/// Why a purge (or what it needs first: credentials, a survey of CloudFront's invalidations)
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// A request whose every attempt failed.
    #[error("{method} {url}: {last} (after {attempts} attempts)")]
    Retried {
        /// The request's method.
        method: String,
        /// The request's URL.
        url: String,
        /// The last attempt's failure.
        #[source]
        last: Attempt,
        /// Attempts made, the first included.
        attempts: u32,
    },
    /// An answer that refuses the purge: a status other than success, or an API's verdict of
    /// failure.
    #[error("{method} {url}: answered {status}: {excerpt}")]
    Refused {
        /// The request's method.
        method: String,
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What the answer's body may be quoted as.
        excerpt: String,
    },
    /// CloudFront did not list a distribution's invalidations.
    #[error("listing the invalidations of distribution {distribution}: {}", aws_message(.source))]
    List {
        /// The distribution's id.
        distribution: String,
        /// The SDK's error.
        #[source]
        source: Box<SdkError<ListInvalidationsError>>,
    },
    /// CloudFront did not give one invalidation's paths.
    #[error("reading invalidation {id} of distribution {distribution}: {}", aws_message(.source))]
    Read {
        /// The invalidation's id.
        id: String,
        /// The distribution's id.
        distribution: String,
        /// The SDK's error.
        #[source]
        source: Box<SdkError<GetInvalidationError>>,
    },
    /// CloudFront refused or did not take an invalidation.
    #[error(
        "CloudFront invalidation of {paths} path(s) on distribution {distribution}: {}",
        aws_message(.source)
    )]
    Create {
        /// Paths in the invalidation.
        paths: usize,
        /// The distribution's id.
        distribution: String,
        /// The SDK's error.
        #[source]
        source: Box<SdkError<CreateInvalidationError>>,
    },
    /// The SDK would not build an invalidation of these paths.
    #[error("CloudFront invalidation of {paths} path(s) on distribution {distribution}: {source}")]
    Build {
        /// Paths in the invalidation.
        paths: usize,
        /// The distribution's id.
        distribution: String,
        /// The SDK's error.
        #[source]
        source: BuildError,
    },
    /// The AWS credential chain has no provider at all.
    #[error(
        "no AWS credentials: the credential chain is empty (set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with a role)"
    )]
    NoCredentials,
    /// The AWS credential chain yields no credentials: its words, each cause after a colon.
    #[error("no AWS credentials for CloudFront: {}", chain(.0.as_ref()))]
    Credentials(#[source] BoxError),
    /// The target's `purge_timeout` ran out before every path was purged.
    #[error(
        "{paths} path(s) not {done} within its purge_timeout {}",
        humantime::format_duration(*.within)
    )]
    OutOfTime {
        /// Paths the purge was to send.
        paths: usize,
        /// What was to happen to them: `purged`, `invalidated`.
        done: &'static str,
        /// The `purge_timeout`.
        within: Duration,
    },
    /// No request was accepted for the target's `purge_timeout`: the purge stopped there.
    #[error(
        "no purge request accepted for its purge_timeout {}; {left} path(s) wait in the outbox",
        humantime::format_duration(*.within)
    )]
    Stalled {
        /// Paths of the plan not yet accepted.
        left: usize,
        /// The `purge_timeout`.
        within: Duration,
    },
    /// The target's `purge_timeout` ran out while CloudFront's invalidations were listed.
    #[error(
        "invalidations in flight not listed within its purge_timeout {}",
        humantime::format_duration(*.within)
    )]
    SurveyOutOfTime {
        /// The `purge_timeout`.
        within: Duration,
    },
}

impl PurgeError {
    /// The error code CloudFront answered an invalidation with, if it answered one.
    pub fn cloudfront_code(&self) -> Option<&str> {
        match self {
            PurgeError::Create { source, .. } => source.as_service_error()?.code(),
            _ => None,
        }
    }
}

/// An error's text with each of its causes' after a colon, as one line of the reasons a
/// connection failed (the client's own text says little: "client error (Connect)").
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// One line for an SDK error: the service's code and message, or the transport's causes.
fn aws_message<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("error"),
            service.message().unwrap_or_default()
        ),
        None => chain(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_reads_as_the_line_the_edge_always_showed() {
        let retried = PurgeError::Retried {
            method: "PURGE".into(),
            url: "http://cache/t/1/0/0.pbf".into(),
            last: Attempt::Answered {
                status: 503,
                excerpt: "busy".into(),
            },
            attempts: 5,
        };
        assert_eq!(
            retried.to_string(),
            "PURGE http://cache/t/1/0/0.pbf: answered 503: busy (after 5 attempts)"
        );
        let unanswered = PurgeError::Retried {
            method: "POST".into(),
            url: "https://api/purge".into(),
            last: RequestError::Timeout(Duration::from_secs(10)).into(),
            attempts: 2,
        };
        assert_eq!(
            unanswered.to_string(),
            "POST https://api/purge: no answer within 10s (request_timeout) (after 2 attempts)"
        );
        assert!(std::error::Error::source(&unanswered).is_some());
        assert_eq!(
            RequestError::FetchTimeout(Duration::from_secs(30)).to_string(),
            "no answer within 30s"
        );
        let out_of_time = PurgeError::OutOfTime {
            paths: 3,
            done: "purged",
            within: Duration::from_secs(90),
        };
        assert_eq!(
            out_of_time.to_string(),
            "3 path(s) not purged within its purge_timeout 1m 30s"
        );
        assert_eq!(
            PurgeError::SurveyOutOfTime {
                within: Duration::from_secs(60)
            }
            .to_string(),
            "invalidations in flight not listed within its purge_timeout 1m"
        );
        let credentials = PurgeError::Credentials("profile `x` not found".into());
        assert_eq!(
            credentials.to_string(),
            "no AWS credentials for CloudFront: profile `x` not found"
        );
    }
}
