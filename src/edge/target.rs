//! A purge target as configured: what sends its purges (its kind's [`Cdn`]), the secrets its
//! messages are redacted of, what it may spend, and the API user whose calls it counts. What it
//! plans and sends is in `purge.rs`; the budget and the flights in flight take it from here.

use std::time::Duration;

use super::calls::{learn_calls, recent_calls, ApiCalls};
use super::cdn::{self, Cdn};
use super::client::Client;
use super::error::PurgeError;
use super::secrets::Secrets;
use crate::config::cdn::CdnSpend;
use crate::config::CdnConfig;
use crate::error::{Error, Result};
use crate::tile::BBox;

/// One configured purge target, ready to send.
pub struct PurgeTarget {
    pub(super) name: String,
    /// What sends its purges: its kind's.
    pub(super) cdn: Box<dyn Cdn>,
    pub(super) public_url: Option<String>,
    pub(super) purge_timeout: Duration,
    pub(super) secrets: Secrets,
    pub(super) spend: CdnSpend,
    pub(super) bbox: BBox,
    /// The API user's calls, where the API limits them per user (Cloudflare, Fastly).
    pub(super) api: Option<ApiCalls>,
}

impl PurgeTarget {
    /// Builds a target from its config: secrets are read from the environment now, so a missing
    /// one fails before any tile is written. `bbox` is the tileset's, which folding measures
    /// density against.
    pub async fn build(config: &CdnConfig, bbox: BBox, client: &Client) -> Result<PurgeTarget> {
        Self::build_reading(config, bbox, client, true).await
    }

    /// A target that only plans (`seed --dirty --dry-run`): it sends nothing, so it reads no
    /// secret, and a token that is not set is no error.
    pub async fn planner(config: &CdnConfig, bbox: BBox, client: &Client) -> Result<PurgeTarget> {
        Self::build_reading(config, bbox, client, false).await
    }

    async fn build_reading(
        config: &CdnConfig,
        bbox: BBox,
        client: &Client,
        read_secrets: bool,
    ) -> Result<PurgeTarget> {
        // Every value read from the environment is a secret, and so is the AWS secret key.
        let mut sent = Vec::new();
        let built = cdn::build(cdn::Build {
            config,
            bbox,
            client,
            read_secrets,
            sent: &mut sent,
        })
        .await?;
        // Known only once every secret was read.
        let secrets = Secrets::new(sent);
        let mut cdn = built.cdn;
        cdn.set_secrets(secrets.clone());
        Ok(PurgeTarget {
            name: config.name.clone(),
            cdn,
            public_url: config.public_url.clone(),
            purge_timeout: config.purge_timeout,
            secrets,
            spend: config.spend,
            bbox,
            api: built.api,
        })
    }

    /// What its purges cost and may spend.
    pub fn spend(&self) -> &CdnSpend {
        &self.spend
    }

    /// Whether its purges cost money, so the output's stored tiles are worth counting and a
    /// budget applies.
    pub fn is_priced(&self) -> bool {
        self.spend.price_per_path > 0.0
    }

    /// Whether its purges are invalidations that complete later (CloudFront), which
    /// [`Flights`] follows.
    pub fn tracks_invalidations(&self) -> bool {
        self.cdn.invalidations().is_some()
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public URL the output is served under through this cache, where the edge check fetches.
    pub fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    /// The name it takes batches from an outbox under.
    pub fn consumer(&self) -> String {
        format!("cdn-{}", self.name)
    }

    /// A failure of the target as the run's error: naming the target, its message redacted of
    /// the target's secrets, the failure kept as its cause (whose own text is not redacted).
    pub(super) fn failed(&self, err: PurgeError) -> Error {
        Error::Output {
            path: format!("cdn `{}`", self.name).into(),
            message: self.secrets.redact(&err.to_string()),
            source: Some(Box::new(err)),
        }
    }

    /// The calls its API user made within the API's window (milliseconds since the Unix epoch,
    /// some perhaps ahead, reserved behind a wait), for the outbox note a later process learns
    /// them from; `None` where the API counts no calls per user.
    pub fn recent_api_calls(&self) -> Option<Vec<u64>> {
        let api = self.api.as_ref()?;
        Some(recent_calls(&api.key, api.window.per))
    }

    /// Counts the calls a note says its API user made (another process: a cron run before this
    /// one) against its window.
    pub fn learn_api_calls(&self, noted: &[u64]) {
        if let Some(api) = &self.api {
            learn_calls(&api.key, api.window.per, noted);
        }
    }

    /// How many paths a call of it takes, where every call counts against the API user's limit
    /// (Cloudflare): a reseed's chunks are then gathered into calls that full before they are
    /// sent, rather than a call per chunk. `None` where calls are not what is scarce.
    pub fn gathers(&self) -> Option<usize> {
        self.cdn.gathers()
    }
}

/// Checks what can fail a target before any request and any tile: its secrets (set, and fit for
/// a header) and, for CloudFront, that the AWS credential chain yields credentials. `seed` and
/// `watch` call it while preparing, before they render.
pub async fn check(config: &CdnConfig) -> Result<()> {
    let client = Client::new()?;
    let target = PurgeTarget::build(config, crate::tile::BBox::WORLD, &client).await?;
    target.cdn.check().await.map_err(|err| {
        config.defined_at.error(format!(
            "cdn `{}`: {}",
            config.name,
            target.secrets.redact(&err.to_string())
        ))
    })
}
