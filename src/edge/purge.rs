//! What a target plans and sends: the cheapest plan of the changed paths that fits its budget
//! and its pace (or, on CloudFront, the room its invalidations in flight leave), sent within its
//! `purge_timeout`.

use super::cdn::cloudfront;
use super::error::PurgeError;
use super::flight::Flights;
use super::fold::{as_paths, Purge};
use super::pace::{self, Progress};
use super::price::{self, Forms, Priced, Pricing, StoredTiles};
use super::report::{PurgePlan, PurgeReport};
use super::target::PurgeTarget;
use crate::error::Result;

impl PurgeTarget {
    /// Whether its plans weigh wildcards against the output's stored tiles: its purges cost
    /// money, or it has folders to coarsen into when its pace is too slow for the exact paths.
    pub fn uses_census(&self) -> bool {
        self.is_priced() || self.forms().any()
    }

    /// The folders it can purge whole.
    fn forms(&self) -> Forms {
        self.cdn.forms()
    }

    fn pricing(&self, stored: Option<&StoredTiles>) -> Pricing {
        Pricing {
            path_usd: self.spend.price_per_path,
            refetch_usd: self.spend.refetch_price,
            max_wildcards: self.cdn.max_wildcards(),
            bbox: self.bbox,
            stored: stored.cloned(),
            forms: self.forms(),
        }
    }

    /// Whether `priced` goes out within its `purge_timeout` at the target's pace (CloudFront's
    /// invalidations are paced by their quotas in flight instead).
    fn in_time(&self, priced: &Priced) -> bool {
        let paths = as_paths(&priced.purges);
        self.cdn.seconds(&paths) <= self.purge_timeout.as_secs_f64()
    }

    /// Whether its exact `paths` go out within its `purge_timeout` at its pace, or it has no
    /// coarser form to send instead.
    pub fn sends_in_time(&self, paths: &[String]) -> bool {
        let exact = Priced {
            purges: paths.iter().cloned().map(Purge::Path).collect(),
            ..Priced::default()
        };
        !self.forms().any() || self.in_time(&exact)
    }

    /// The cheapest plan for `paths` that fits `allowance` (none: any price) and, where the
    /// target has folders to buy time with, goes out within its `purge_timeout` at its pace;
    /// `None` when even the coarsest does not fit the allowance. A target without folders sends
    /// its exact paths, however long they take.
    fn choose(
        &self,
        paths: &[String],
        stored: Option<&StoredTiles>,
        allowance: Option<f64>,
    ) -> Option<Priced> {
        let pricing = self.pricing(stored);
        let budget = allowance.filter(|_| self.is_priced());
        let cheapest = match budget {
            Some(allowance) => price::plan_within(paths, &pricing, allowance)?,
            None => price::plan(paths, &pricing),
        };
        if self.tracks_invalidations() || !pricing.forms.any() || self.in_time(&cheapest) {
            return Some(cheapest);
        }
        // Time is bought with folders: free paths get a nominal price, so the planner trades
        // them for wildcards, cheapest in evictions first.
        let timed = Pricing {
            path_usd: pricing.path_usd.max(1e-9),
            ..pricing
        };
        let fits = |priced: &Priced| {
            self.in_time(priced) && budget.is_none_or(|b| priced.price_usd <= b + 1e-12)
        };
        Some(price::plan_until(paths, &timed, fits).unwrap_or(cheapest))
    }

    fn price(&self, paths: u64) -> Option<f64> {
        self.is_priced()
            .then_some(paths as f64 * self.spend.price_per_path)
    }

    /// Asks CloudFront what is in flight on the distribution, so `flights` sees which of its
    /// invalidations completed and the purge that follows knows the room left; nothing for
    /// other targets.
    pub async fn survey(&self, flights: &mut Flights<'_>) -> Result<()> {
        let Some(cloudfront) = self.cdn.invalidations() else {
            return Ok(());
        };
        let surveyed =
            tokio::time::timeout(self.purge_timeout, cloudfront.survey(&flights.known()))
                .await
                .unwrap_or(Err(PurgeError::SurveyOutOfTime {
                    within: self.purge_timeout,
                }));
        let survey = surveyed.map_err(|err| self.failed(err))?;
        flights.observe(survey);
        Ok(())
    }

    /// The CloudFront plan of `paths` that fits both `allowance` and the room the
    /// distribution's invalidations in flight leave, and sends it without waiting; `no_room`
    /// when none fits or CloudFront refuses it for want of room.
    async fn invalidate(
        &self,
        cloudfront: &cloudfront::CloudFront,
        paths: &[String],
        stored: Option<&StoredTiles>,
        allowance: Option<f64>,
        flights: &mut Flights<'_>,
    ) -> std::result::Result<PurgeReport, PurgeError> {
        let no_room = PurgeReport {
            no_room: true,
            ..PurgeReport::default()
        };
        if flights.survey.is_none() {
            let survey = cloudfront.survey(&flights.known()).await?;
            flights.observe(survey);
        }
        let (files_room, wildcards_room) = flights.survey.as_ref().map_or((0, 0), |s| s.room());
        // A plan of paths fits `files_room`; one wildcard (the root's, at worst) needs only
        // wildcard room.
        let quota_paths = match (files_room, wildcards_room) {
            (0, 0) => return Ok(no_room),
            (0, _) => 1,
            (files, _) => files,
        };
        let mut pricing = self.pricing(stored);
        pricing.max_wildcards = wildcards_room;
        // Free paths cannot be priced into coarser plans: a nominal price can.
        pricing.path_usd = pricing.path_usd.max(1e-9);
        let quota_usd = quota_paths as f64 * pricing.path_usd;
        let budget = allowance.filter(|_| self.is_priced());
        let limit = budget.map_or(quota_usd, |budget| budget.min(quota_usd));
        let Some(priced) = price::plan_within(paths, &pricing, limit) else {
            return Ok(match budget {
                Some(budget) if budget < quota_usd => PurgeReport {
                    over_budget: true,
                    ..PurgeReport::default()
                },
                _ => no_room,
            });
        };
        let sent_paths = as_paths(&priced.purges);
        // Folders end in `*` as sent.
        let (files, wildcards) = cloudfront::counts(&sent_paths);
        if files > files_room || wildcards > wildcards_room {
            return Ok(no_room);
        }
        match cloudfront.send(&sent_paths).await? {
            cloudfront::Sent::NoRoom(refusal) => {
                tracing::info!(
                    "{}: the changes wait in the outbox",
                    self.secrets.redact(&refusal.to_string())
                );
                Ok(no_room)
            }
            cloudfront::Sent::Accepted(ids) => {
                let report = PurgeReport {
                    requests: ids.len() as u64,
                    paths: sent_paths.len() as u64,
                    evicted: priced.evicted,
                    ..PurgeReport::default()
                };
                flights.launched(ids, files, wildcards);
                Ok(report)
            }
        }
    }

    /// What purging `paths` would send, priced against the output's `stored` tiles.
    pub fn plan(&self, paths: &[String], stored: Option<&StoredTiles>) -> PurgePlan {
        if paths.is_empty() {
            return PurgePlan::default();
        }
        let Some(priced) = self.choose(paths, stored, None) else {
            return PurgePlan::default();
        };
        let paths = as_paths(&priced.purges);
        let mut plan = self.cdn.plan(&paths);
        plan.price_usd = self.price(plan.paths.len() as u64);
        plan.evicted = priced.evicted;
        plan
    }

    /// Purges `paths` as the cheapest plan priced against the output's `stored` tiles that fits
    /// `allowance` (a budget) and the target's pace; `Ok` when every one was purged, or when
    /// nothing was sent because nothing fits the allowance (`over_budget`) or, on CloudFront, the
    /// room its invalidations in flight leave (`no_room`). A CloudFront purge returns once its
    /// invalidations are accepted; `flights` records them. A purge that has no request accepted
    /// for the target's `purge_timeout` (rate-limit waits aside) fails.
    pub async fn purge(
        &self,
        paths: &[String],
        stored: Option<&StoredTiles>,
        allowance: Option<f64>,
        flights: &mut Flights<'_>,
    ) -> Result<PurgeReport> {
        let progress = Progress::new();
        self.purge_tracked(paths, stored, allowance, flights, &progress)
            .await
    }

    /// [`PurgeTarget::purge`], noting in `progress` the paths (as sent, a folder as `FOLDER*`)
    /// whose requests the target accepted, which the caller reads even when the purge failed or
    /// was dropped: what they cover need not be sent again.
    pub async fn purge_tracked(
        &self,
        paths: &[String],
        stored: Option<&StoredTiles>,
        allowance: Option<f64>,
        flights: &mut Flights<'_>,
        progress: &Progress,
    ) -> Result<PurgeReport> {
        if paths.is_empty() {
            return Ok(PurgeReport::default());
        }
        if let Some(cloudfront) = self.cdn.invalidations() {
            let sent = self.invalidate(cloudfront, paths, stored, allowance, flights);
            let mut report = self
                .within_timeout("invalidated", paths.len(), sent)
                .await?;
            report.price_usd = self.price(report.paths);
            return Ok(report);
        }
        let Some(priced) = self.choose(paths, stored, allowance) else {
            return Ok(PurgeReport {
                over_budget: true,
                ..PurgeReport::default()
            });
        };
        let evicted = priced.evicted;
        let paths = &as_paths(&priced.purges)[..];
        let sent = self.cdn.purge(paths, progress);
        let stalled = || PurgeError::Stalled {
            left: paths.len() - progress.accepted_count().min(paths.len()),
            within: self.purge_timeout,
        };
        let outcome = pace::until_stalled(sent, progress, self.purge_timeout, stalled).await;
        let mut report = outcome.map_err(|err| self.failed(err))?;
        report.price_usd = self.price(report.paths);
        report.evicted = evicted;
        Ok(report)
    }

    /// `sent` bounded by the target's `purge_timeout`; its failure, redacted of the target's
    /// secrets, as an error naming the target.
    async fn within_timeout(
        &self,
        done: &'static str,
        paths: usize,
        sent: impl std::future::Future<Output = std::result::Result<PurgeReport, PurgeError>>,
    ) -> Result<PurgeReport> {
        let outcome = tokio::time::timeout(self.purge_timeout, sent)
            .await
            .unwrap_or(Err(PurgeError::OutOfTime {
                paths,
                done,
                within: self.purge_timeout,
            }));
        outcome.map_err(|err| self.failed(err))
    }
}
