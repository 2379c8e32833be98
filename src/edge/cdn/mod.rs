//! The kinds of CDN the edge purges, one file each behind one trait, [`Cdn`], as output kinds
//! are behind `sink::OutputKind`: `http.rs` (an HTTP cache), `cloudfront.rs` (invalidations),
//! `cloudflare.rs` and `fastly.rs` (their purge APIs, on the calls `api.rs` sends). A kind's file
//! holds its plan forms and limits, its requests, and how it is built from its config; it is
//! registered by one line in [`KINDS`].
//!
//! A kind's keys are parsed and checked in `config/cdn/KIND.rs` (registered in the config's own
//! list), not here: `config` sits below `edge`, and a config is refused at the line at fault
//! when it is read, before any stage that could call the edge runs. The edge finds a target's
//! kind by the name its `CdnTarget` gives ([`crate::config::CdnTarget::kind`]); a test holds both
//! lists to the schema's `kind` enum.
//!
//! What every kind shares (budgets, pricing, pace, the outbox's timeout, secrets and messages)
//! stays in `PurgeTarget` (`edge/target.rs`), which holds one `Box<dyn Cdn>`. The kinds that send
//! their purges as they go, at their own pace (all but CloudFront), are a [`Cdn`] through
//! [`Paced`], which holds what differs between them; Cloudflare and Fastly build what their APIs
//! share (token, calls, public URL) with `api::Api::of`.

mod api;
mod cloudflare;
pub(super) mod cloudfront;
mod fastly;
mod http;

use std::future::Future;

use futures::future::BoxFuture;

use super::calls::{self, ApiCalls};
use super::client::Client;
use super::error::PurgeError;
use super::pace::Progress;
use super::price::Forms;
use super::report::{PurgePlan, PurgeReport};
use super::secrets::secret;
use super::secrets::Secrets;
use crate::config::CdnConfig;
use crate::error::{Error, Result};
use crate::tile::BBox;

/// The CDN kinds the edge sends purges to, each registered by the name its config's
/// `kind = "…"` gives.
pub(super) const KINDS: &[&CdnKind] = &[
    &http::KIND,
    &cloudfront::KIND,
    &cloudflare::KIND,
    &fastly::KIND,
];

/// One kind of CDN: its name and how a target of it is built from its config.
pub(super) struct CdnKind {
    /// Its `kind = "…"`.
    pub name: &'static str,
    /// Builds a target of this kind; fails when a secret it sends is not set, or when the
    /// config's target is of another kind.
    pub build: Builder,
}

/// How a kind builds a target: at once, or after connecting.
pub(super) enum Builder {
    /// From its config and secrets alone.
    Now(fn(Build<'_>) -> Result<Built>),
    /// After connecting (CloudFront loads the AWS credential chain).
    Connect(for<'a> fn(Build<'a>) -> BoxFuture<'a, Result<Built>>),
}

/// What one kind of CDN does. No method has a default, so a kind that forgets a capability does
/// not compile.
pub(super) trait Cdn: Send + Sync {
    /// The folders it can purge whole, which the plan may choose instead of their paths.
    fn forms(&self) -> Forms;

    /// How long sending `paths` (as planned: folders as `FOLDER*`) would take at its pace.
    fn seconds(&self, paths: &[String]) -> f64;

    /// What purging `paths` (as planned) would send.
    fn plan(&self, paths: &[String]) -> PurgePlan;

    /// Sends the purges of `paths` (as planned), noting each accepted request in `progress`.
    fn purge<'a>(
        &'a self,
        paths: &'a [String],
        progress: &'a Progress,
    ) -> BoxFuture<'a, std::result::Result<PurgeReport, PurgeError>>;

    /// Wildcards one purge may hold.
    fn max_wildcards(&self) -> usize;

    /// Its invalidations, where its purges are invalidations that complete later (CloudFront),
    /// which `PurgeTarget` sends within the room in flight and `Flights` follows instead of
    /// [`Cdn::purge`].
    fn invalidations(&self) -> Option<&cloudfront::CloudFront>;

    /// Checks what can fail before any request and any tile beyond its secrets (CloudFront: that
    /// the AWS credential chain yields credentials).
    fn check(&self) -> BoxFuture<'_, std::result::Result<(), PurgeError>>;

    /// How many paths a call takes, where every call counts against the API user's limit
    /// (Cloudflare); `None` where calls are not what is scarce.
    fn gathers(&self) -> Option<usize>;

    /// Keeps the secrets it sends out of its messages (known once every secret was read).
    fn set_secrets(&mut self, secrets: Secrets);
}

/// A kind whose purges are requests it sends as it goes, at its own pace (an HTTP cache,
/// Cloudflare, Fastly), not invalidations that complete later: it takes any number of wildcards
/// and has nothing to check before its first request beyond its secrets, which is all that makes
/// it a [`Cdn`]. As [`Cdn`]'s, no method has a default.
pub(super) trait Paced: Send + Sync {
    /// [`Cdn::forms`].
    fn forms(&self) -> Forms;

    /// [`Cdn::seconds`].
    fn seconds(&self, paths: &[String]) -> f64;

    /// [`Cdn::plan`].
    fn plan(&self, paths: &[String]) -> PurgePlan;

    /// Sends the purges of `paths` (as planned), noting each accepted request in `progress`:
    /// [`Cdn::purge`].
    fn send(
        &self,
        paths: &[String],
        progress: &Progress,
    ) -> impl Future<Output = std::result::Result<PurgeReport, PurgeError>> + Send;

    /// [`Cdn::gathers`].
    fn gathers(&self) -> Option<usize>;

    /// [`Cdn::set_secrets`].
    fn set_secrets(&mut self, secrets: Secrets);
}

impl<T: Paced> Cdn for T {
    fn forms(&self) -> Forms {
        Paced::forms(self)
    }

    fn seconds(&self, paths: &[String]) -> f64 {
        Paced::seconds(self, paths)
    }

    fn plan(&self, paths: &[String]) -> PurgePlan {
        Paced::plan(self, paths)
    }

    fn purge<'a>(
        &'a self,
        paths: &'a [String],
        progress: &'a Progress,
    ) -> BoxFuture<'a, std::result::Result<PurgeReport, PurgeError>> {
        Box::pin(self.send(paths, progress))
    }

    fn max_wildcards(&self) -> usize {
        usize::MAX
    }

    fn invalidations(&self) -> Option<&cloudfront::CloudFront> {
        None
    }

    fn check(&self) -> BoxFuture<'_, std::result::Result<(), PurgeError>> {
        Box::pin(async { Ok(()) })
    }

    fn gathers(&self) -> Option<usize> {
        Paced::gathers(self)
    }

    fn set_secrets(&mut self, secrets: Secrets) {
        Paced::set_secrets(self, secrets);
    }
}

/// What building a target of a kind takes.
pub(super) struct Build<'a> {
    /// The target's config.
    pub config: &'a CdnConfig,
    /// The tileset's bounds, which folding measures density against.
    pub bbox: BBox,
    /// The HTTP client its requests go through.
    pub client: &'a Client,
    /// Whether it sends: a planner (`--dry-run`) reads no secret.
    pub read_secrets: bool,
    /// Every secret it sends, which its messages are redacted of.
    pub sent: &'a mut Vec<String>,
}

/// A target of a kind, built: what sends its purges, and the API user whose calls it counts.
pub(super) struct Built {
    pub cdn: Box<dyn Cdn>,
    pub api: Option<ApiCalls>,
}

impl Build<'_> {
    /// The API token in `variable`, added to what is sent (empty for a planner, which reads none).
    pub fn token(&mut self, variable: &str) -> Result<String> {
        if !self.read_secrets {
            return Ok(String::new());
        }
        let token = secret(
            variable,
            &self.config.name,
            "its API token",
            &self.config.defined_at,
        )?;
        self.sent.push(token.clone());
        Ok(token)
    }

    /// The calls of the user holding `token` on `kind`'s API, where the config limits them.
    pub fn api_calls(&self, kind: &str, token: &str) -> Option<ApiCalls> {
        calls::of(self.config, kind, token)
    }

    /// The public URL, which an API that purges absolute URLs needs (`api` names it).
    pub fn public_url(&self, api: &str) -> Result<String> {
        self.config.public_url.clone().ok_or_else(|| {
            self.config.defined_at.error(format!(
                "cdn `{}`: {api} purges absolute URLs: set public_url",
                self.config.name
            ))
        })
    }

    /// The error of a config whose target is not of the kind it was registered under: the two
    /// lists of kinds disagree.
    pub fn not_of(&self, kind: &str) -> Error {
        self.config.defined_at.error(format!(
            "cdn `{}`: kind `{}` was handed to the edge's `{kind}`",
            self.config.name,
            self.config.target.kind()
        ))
    }
}

/// Builds the target `build.config` names through its kind's registration.
pub(super) async fn build(build: Build<'_>) -> Result<Built> {
    let kind = build.config.target.kind();
    let Some(registered) = KINDS.iter().find(|registered| registered.name == kind) else {
        return Err(build.config.defined_at.error(format!(
            "cdn `{}`: kind `{kind}` has no purges registered in the edge",
            build.config.name
        )));
    };
    match registered.build {
        Builder::Now(build_now) => build_now(build),
        Builder::Connect(connect) => connect(build).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind the config's schema offers is parsed by a registered config kind and sent by a
    /// registered edge kind, and neither list holds a kind the schema does not offer: a kind
    /// left out of either registration fails here rather than at a user's first purge.
    #[test]
    fn every_kind_the_schema_names_is_registered_in_the_config_and_the_edge() {
        let schema = crate::config::json_schema();
        let offered: Vec<&str> = schema["definitions"]["Cdn"]["properties"]["kind"]["enum"]
            .as_array()
            .expect("the schema's `kind` of a [[tileset.cdn]] table is an enum")
            .iter()
            .filter_map(|kind| kind.as_str())
            .collect();
        assert!(offered.len() >= 4, "{offered:?}");
        let mut edge: Vec<&str> = KINDS.iter().map(|kind| kind.name).collect();
        let mut config = crate::config::cdn::kind_names();
        let mut sorted = offered.clone();
        sorted.sort_unstable();
        edge.sort_unstable();
        config.sort_unstable();
        assert_eq!(config, sorted, "the config's kinds (config/cdn.rs KINDS)");
        assert_eq!(edge, sorted, "the edge's kinds (edge/cdn/mod.rs KINDS)");
    }
}
