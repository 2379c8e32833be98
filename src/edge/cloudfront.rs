//! CloudFront invalidations through the AWS SDK, on the credential chain, runtime and HTTP client
//! the S3 outputs use. Dense changes are folded into wildcards; each invalidation stays within
//! CloudFront's limits (3,000 paths, 15 wildcards in flight per distribution), waiting for
//! invalidations in flight to finish when a new one would pass them, and
//! `TooManyInvalidationsInProgress` is retried with backoff.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
use aws_sdk_cloudfront::Client;

use super::fold::Purge;
use super::{PurgePlan, PurgeReport, Secrets};
use crate::retry::Policy;

/// Paths in flight per distribution, wildcards included.
const MAX_PATHS: usize = 3_000;
/// Wildcard paths in flight per distribution.
pub(super) const MAX_WILDCARDS: usize = 15;

/// One distribution's invalidations.
pub(super) struct CloudFront {
    client: Client,
    /// The credential chain the client signs with, which `check_credentials` asks.
    credentials: Option<aws_sdk_cloudfront::config::SharedCredentialsProvider>,
    distribution_id: String,
    path_prefix: String,
    /// The AWS secret key and session token, kept out of the retries' messages.
    pub secrets: Secrets,
}

/// Waiting for room among the invalidations in flight, and `TooManyInvalidationsInProgress`:
/// 1 s doubling to 30 s, about 3 minutes in all.
fn patience() -> Policy {
    Policy {
        attempts: 9,
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(30),
    }
}

impl CloudFront {
    /// A client for `distribution_id`, each attempt of a call within `timeout`;
    /// `AWS_ENDPOINT_URL_CLOUDFRONT` (or `AWS_ENDPOINT_URL`) points it elsewhere than AWS.
    pub async fn connect(
        distribution_id: &str,
        path_prefix: &str,
        timeout: Duration,
    ) -> CloudFront {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(timeout)
            .operation_attempt_timeout(timeout)
            .build();
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(crate::sink::s3::https_client())
            .timeout_config(timeouts);
        let mut config = loader.load().await;
        if config.region().is_none() {
            // CloudFront is global; requests are signed for us-east-1.
            config = config
                .into_builder()
                .region(aws_config::Region::new("us-east-1"))
                .build();
        }
        CloudFront {
            credentials: config.credentials_provider(),
            client: Client::new(&config),
            distribution_id: distribution_id.to_string(),
            path_prefix: path_prefix.to_string(),
            secrets: Secrets::default(),
        }
    }

    /// Whether the AWS credential chain yields credentials, so a target without them fails before
    /// any tile renders rather than at its first invalidation.
    pub async fn check_credentials(&self) -> Result<(), String> {
        use aws_sdk_cloudfront::config::ProvideCredentials;
        let provider = self.credentials.as_ref().ok_or_else(|| {
            "no AWS credentials: the credential chain is empty (set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with a role)"
                .to_string()
        })?;
        provider
            .provide_credentials()
            .await
            .map(|_| ())
            .map_err(|e| {
                let mut text = format!("no AWS credentials for CloudFront: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                text
            })
    }

    /// The invalidations `paths` take: their paths (wildcards as `…/*`), each batch within the
    /// limits, and the wildcards among them.
    fn batches(&self, paths: &[String]) -> (Vec<Vec<String>>, usize) {
        let mut wildcards = 0;
        // The paths come planned (`super::price`): folders as `FOLDER*`, nothing to fold again.
        let all: Vec<String> = paths
            .iter()
            .map(|path| match super::everything_under(path) {
                Some(folder) => Purge::Folder(folder.to_string()),
                None => Purge::Path(path.clone()),
            })
            .map(|purge| match purge {
                Purge::Path(path) => format!("{}/{path}", self.path_prefix),
                Purge::Folder(folder) => {
                    wildcards += 1;
                    format!("{}/{folder}*", self.path_prefix)
                }
            })
            .collect();
        let batches = all.chunks(MAX_PATHS).map(<[String]>::to_vec).collect();
        (batches, wildcards)
    }

    /// Paths and wildcards of the distribution's invalidations in progress.
    async fn in_flight(&self) -> Result<(usize, usize), String> {
        let listed = self
            .client
            .list_invalidations()
            .distribution_id(&self.distribution_id)
            .send()
            .await
            .map_err(|e| format!("listing invalidations: {}", aws_message(&e)))?;
        let mut totals = (0, 0);
        let running = listed
            .invalidation_list()
            .map(|list| list.items())
            .unwrap_or_default()
            .iter()
            .filter(|summary| summary.status() == "InProgress");
        for summary in running {
            let detail = self
                .client
                .get_invalidation()
                .distribution_id(&self.distribution_id)
                .id(summary.id())
                .send()
                .await
                .map_err(|e| {
                    format!("reading invalidation {}: {}", summary.id(), aws_message(&e))
                })?;
            let items = detail
                .invalidation()
                .and_then(|i| i.invalidation_batch())
                .and_then(|b| b.paths())
                .map(|p| p.items().to_vec())
                .unwrap_or_default();
            totals.0 += items.len();
            totals.1 += items.iter().filter(|p| p.ends_with('*')).count();
        }
        Ok(totals)
    }

    pub fn plan(&self, paths: &[String]) -> PurgePlan {
        let (batches, _) = self.batches(paths);
        let paths: Vec<String> = batches.into_iter().flatten().collect();
        PurgePlan {
            requests: paths.len().div_ceil(MAX_PATHS) as u64,
            price_usd: Some(paths.len() as f64 * super::CLOUDFRONT_PRICE_PER_PATH),
            paths,
            evicted: 0,
        }
    }

    pub async fn purge(&self, paths: &[String]) -> Result<PurgeReport, String> {
        let (batches, _) = self.batches(paths);
        let mut report = PurgeReport::default();
        for (index, batch) in batches.iter().enumerate() {
            let wildcards = batch.iter().filter(|p| p.ends_with('*')).count();
            let what = || {
                format!(
                    "CloudFront invalidation of {} path(s) on distribution {}",
                    batch.len(),
                    self.distribution_id
                )
            };
            let sent = patience()
                .run(
                    what,
                    || async {
                        let redact = |e: String| self.secrets.redact(&e);
                        let (paths_now, wildcards_now) = self.in_flight().await.map_err(redact)?;
                        if paths_now + batch.len() > MAX_PATHS
                            || wildcards_now + wildcards > MAX_WILDCARDS
                        {
                            return Err(format!(
                                "{paths_now} path(s), {wildcards_now} wildcard(s) in flight leave no room"
                            ));
                        }
                        self.create(batch, index).await.map_err(redact)
                    },
                    |_| true,
                    |e: &String| e.clone(),
                )
                .await;
            sent.map_err(|failed| {
                format!(
                    "{}: {} (after {} attempts)",
                    what(),
                    failed.error,
                    failed.attempts
                )
            })?;
            report.requests += 1;
            report.paths += batch.len() as u64;
        }
        report.price_usd = Some(report.paths as f64 * super::CLOUDFRONT_PRICE_PER_PATH);
        Ok(report)
    }

    async fn create(&self, batch: &[String], index: usize) -> Result<(), String> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let reference = format!("oar-tiles-{millis:015}-{}-{index}", std::process::id());
        let paths = Paths::builder()
            .quantity(batch.len() as i32)
            .set_items(Some(batch.to_vec()))
            .build()
            .map_err(|e| e.to_string())?;
        let invalidation = InvalidationBatch::builder()
            .paths(paths)
            .caller_reference(reference)
            .build()
            .map_err(|e| e.to_string())?;
        self.client
            .create_invalidation()
            .distribution_id(&self.distribution_id)
            .invalidation_batch(invalidation)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_message(&e))
    }
}

/// One line for an SDK error: the service's code and message, or the transport's causes.
fn aws_message<E>(err: &aws_sdk_cloudfront::error::SdkError<E>) -> String
where
    E: aws_sdk_cloudfront::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match err.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("error"),
            service.message().unwrap_or_default()
        ),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}
