//! CloudFront invalidations through the AWS SDK, on the credential chain, runtime and HTTP client
//! the S3 outputs use.
//!
//! CloudFront takes minutes to complete an invalidation and refuses new ones past its quotas of
//! paths in progress per distribution (3,000 file paths and, apart from them, 15 wildcard paths).
//! Waiting for room would stall the run behind it (a `watch` cycle, the origin's freshness), so a
//! purge never waits: it counts what is in flight ([`CloudFront::survey`]: `ListInvalidations`,
//! and `GetInvalidation` for invalidations it did not make), sends only a plan that fits the room
//! left, and when none fits, or CloudFront answers `TooManyInvalidationsInProgress`, reports
//! [`Sent::NoRoom`]: the paths stay in the outbox for a later run. Nor does it wait for an
//! invalidation to complete: the next runs see it completed (`crate::edge::flight`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
use aws_sdk_cloudfront::Client;

use futures::future::BoxFuture;

use super::{Build, Builder, Built, Cdn, CdnKind};
use crate::config::cdn::CLOUDFRONT_PRICE_PER_PATH;
use crate::config::CdnTarget;
use crate::edge::error::PurgeError;
use crate::edge::fold::everything_under;
use crate::edge::fold::Purge;
use crate::edge::pace::Progress;
use crate::edge::price::Forms;
use crate::edge::report::{PurgePlan, PurgeReport};
use crate::edge::secrets::Secrets;
use crate::error::Result as RunResult;

/// File paths (not wildcards) in progress per distribution, and paths per invalidation.
const MAX_FILES: usize = 3_000;
/// Wildcard paths in progress per distribution, counted apart from file paths.
const MAX_WILDCARDS: usize = 15;
/// Pages of `ListInvalidations` read per survey (100 invalidations each, newest first on AWS):
/// invalidations in progress are among the newest.
const MAX_PAGES: usize = 20;
/// The error code of an invalidation past the quotas.
const TOO_MANY: &str = "TooManyInvalidationsInProgress";

/// What a distribution has in progress.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// File paths in invalidations in progress.
    pub files: usize,
    /// Wildcard paths in invalidations in progress.
    pub wildcards: usize,
    /// The ids of invalidations in progress (AWS lists the newest first, so an invalidation not
    /// listed within [`MAX_PAGES`] pages completed long ago).
    pub in_progress: BTreeSet<String>,
}

impl Survey {
    /// The file paths and wildcard paths a new invalidation may hold now.
    pub fn room(&self) -> (usize, usize) {
        (
            MAX_FILES.saturating_sub(self.files),
            MAX_WILDCARDS.saturating_sub(self.wildcards),
        )
    }

    /// Whether invalidation `id` is known to be done.
    pub fn completed(&self, id: &str) -> bool {
        !self.in_progress.contains(id)
    }
}

/// What sending a purge came to.
pub(in crate::edge) enum Sent {
    /// CloudFront accepted the invalidations (their ids).
    Accepted(Vec<String>),
    /// CloudFront answered `TooManyInvalidationsInProgress` to the first: nothing was sent.
    NoRoom(PurgeError),
}

/// File paths and wildcards among `paths` as sent (wildcards end in `*`).
pub(in crate::edge) fn counts(paths: &[String]) -> (usize, usize) {
    let wildcards = paths.iter().filter(|p| p.ends_with('*')).count();
    (paths.len() - wildcards, wildcards)
}

/// `kind = "cloudfront"`.
pub(super) const KIND: CdnKind = CdnKind {
    name: "cloudfront",
    build: Builder::Connect(build),
};

fn build(build: Build<'_>) -> BoxFuture<'_, RunResult<Built>> {
    Box::pin(async move {
        let config = build.config;
        let CdnTarget::CloudFront {
            distribution_id,
            path_prefix,
        } = &config.target
        else {
            return Err(build.not_of(KIND.name));
        };
        // The AWS secret key and session token are sent (as signatures), so kept out of messages.
        for variable in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
            build.sent.extend(std::env::var(variable).ok());
        }
        let cdn = CloudFront::connect(distribution_id, path_prefix, config.request_timeout).await;
        Ok(Built {
            cdn: Box::new(cdn),
            api: None,
        })
    })
}

impl Cdn for CloudFront {
    /// Any folder, as a wildcard path.
    fn forms(&self) -> Forms {
        Forms::ALL
    }

    /// Its invalidations are paced by their quotas in flight, not by time.
    fn seconds(&self, _paths: &[String]) -> f64 {
        0.0
    }

    fn plan(&self, paths: &[String]) -> PurgePlan {
        let paths: Vec<String> = self.batches(paths).into_iter().flatten().collect();
        PurgePlan {
            requests: paths.len().div_ceil(MAX_FILES) as u64,
            price_usd: Some(paths.len() as f64 * CLOUDFRONT_PRICE_PER_PATH),
            paths,
            evicted: 0,
        }
    }

    /// Nothing: its purges are sent as invalidations ([`Cdn::invalidations`]).
    fn purge<'a>(
        &'a self,
        _paths: &'a [String],
        _progress: &'a Progress,
    ) -> BoxFuture<'a, Result<PurgeReport, PurgeError>> {
        Box::pin(async { Ok(PurgeReport::default()) })
    }

    fn max_wildcards(&self) -> usize {
        MAX_WILDCARDS
    }

    fn invalidations(&self) -> Option<&CloudFront> {
        Some(self)
    }

    fn check(&self) -> BoxFuture<'_, Result<(), PurgeError>> {
        Box::pin(self.check_credentials())
    }

    fn gathers(&self) -> Option<usize> {
        None
    }

    fn set_secrets(&mut self, secrets: Secrets) {
        self.secrets = secrets;
    }
}

/// One distribution's invalidations.
pub(in crate::edge) struct CloudFront {
    client: Client,
    /// The credential chain the client signs with, which `check_credentials` asks.
    credentials: Option<aws_sdk_cloudfront::config::SharedCredentialsProvider>,
    distribution_id: String,
    path_prefix: String,
    /// The AWS secret key and session token, kept out of messages.
    pub secrets: Secrets,
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
            .http_client(crate::store::s3::https_client())
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
    pub async fn check_credentials(&self) -> Result<(), PurgeError> {
        use aws_sdk_cloudfront::config::ProvideCredentials;
        let provider = self.credentials.as_ref().ok_or(PurgeError::NoCredentials)?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| PurgeError::Credentials(Box::new(e)))?;
        // The chain may have read them from a file, SSO or the instance's metadata rather than
        // the environment: from now on they are redacted as the environment's are.
        self.secrets.add(credentials.secret_access_key());
        self.secrets
            .add(credentials.session_token().unwrap_or_default());
        Ok(())
    }

    /// The paths as CloudFront takes them (under the path prefix, folders as `…/*`), in
    /// invalidations of at most [`MAX_FILES`] paths each.
    fn batches(&self, paths: &[String]) -> Vec<Vec<String>> {
        // The paths come planned (`super::price`): folders as `FOLDER*`, nothing to fold again.
        let all: Vec<String> = paths
            .iter()
            .map(|path| match everything_under(path) {
                Some(folder) => Purge::Folder(folder.to_string()),
                None => Purge::Path(path.clone()),
            })
            .map(|purge| match purge {
                Purge::Path(path) => format!("{}/{path}", self.path_prefix),
                Purge::Folder(folder) => format!("{}/{folder}*", self.path_prefix),
            })
            .collect();
        all.chunks(MAX_FILES).map(<[String]>::to_vec).collect()
    }

    /// What the distribution has in progress. `known` gives the file paths and wildcards of
    /// invalidations this tool made, so only others' are read one by one.
    pub async fn survey(
        &self,
        known: &BTreeMap<String, (usize, usize)>,
    ) -> Result<Survey, PurgeError> {
        // The target that sends may not be the one checked before rendering: its secrets learn
        // the chain's credentials here, before its first request.
        let _ = self.check_credentials().await;
        let mut survey = Survey::default();
        let mut running = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let listed = self
                .client
                .list_invalidations()
                .distribution_id(&self.distribution_id)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| PurgeError::List {
                    distribution: self.distribution_id.clone(),
                    source: Box::new(e),
                })?;
            let Some(list) = listed.invalidation_list() else {
                break;
            };
            running.extend(
                list.items()
                    .iter()
                    .filter(|summary| summary.status().eq_ignore_ascii_case("InProgress"))
                    .map(|summary| summary.id().to_string()),
            );
            match list.next_marker().filter(|_| list.is_truncated()) {
                Some(next) => marker = Some(next.to_string()),
                None => break,
            }
        }
        for id in running {
            let (files, wildcards) = match known.get(&id) {
                Some(counted) => *counted,
                None => self.count(&id).await?,
            };
            survey.files += files;
            survey.wildcards += wildcards;
            survey.in_progress.insert(id);
        }
        Ok(survey)
    }

    /// The file paths and wildcards of invalidation `id`.
    async fn count(&self, id: &str) -> Result<(usize, usize), PurgeError> {
        let detail = self
            .client
            .get_invalidation()
            .distribution_id(&self.distribution_id)
            .id(id)
            .send()
            .await
            .map_err(|e| PurgeError::Read {
                id: id.to_string(),
                distribution: self.distribution_id.clone(),
                source: Box::new(e),
            })?;
        let items = detail
            .invalidation()
            .and_then(|i| i.invalidation_batch())
            .and_then(|b| b.paths())
            .map(|p| p.items().to_vec())
            .unwrap_or_default();
        Ok(counts(&items))
    }

    /// Creates the invalidations of `paths` (planned to fit the room in flight), without waiting
    /// for room or for them to complete. A refusal for want of room after some were accepted
    /// fails the purge: its paths stay in the outbox, and those accepted are sent again.
    pub async fn send(&self, paths: &[String]) -> Result<Sent, PurgeError> {
        let mut ids = Vec::new();
        for (index, batch) in self.batches(paths).iter().enumerate() {
            match self.create(batch, index).await {
                Ok(id) => ids.push(id),
                Err(err) if err.cloudfront_code() == Some(TOO_MANY) && ids.is_empty() => {
                    return Ok(Sent::NoRoom(err))
                }
                Err(err) => return Err(err),
            }
        }
        Ok(Sent::Accepted(ids))
    }

    /// Creates one invalidation; its id.
    async fn create(&self, batch: &[String], index: usize) -> Result<String, PurgeError> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let reference = format!("oar-tiles-{millis:015}-{}-{index}", std::process::id());
        let invalid = |source| PurgeError::Build {
            paths: batch.len(),
            distribution: self.distribution_id.clone(),
            source,
        };
        let paths = Paths::builder()
            .quantity(batch.len() as i32)
            .set_items(Some(batch.to_vec()))
            .build()
            .map_err(invalid)?;
        let invalidation = InvalidationBatch::builder()
            .paths(paths)
            .caller_reference(reference)
            .build()
            .map_err(invalid)?;
        let created = self
            .client
            .create_invalidation()
            .distribution_id(&self.distribution_id)
            .invalidation_batch(invalidation)
            .send()
            .await
            .map_err(|e| PurgeError::Create {
                paths: batch.len(),
                distribution: self.distribution_id.clone(),
                source: Box::new(e),
            })?;
        Ok(created
            .invalidation()
            .map(|i| i.id().to_string())
            .unwrap_or_default())
    }
}
