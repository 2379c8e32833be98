//! A partitioned tileset's own outbox at the edge: what its partitions' runs could not purge
//! (handed over by `Outbox::hand_over`) and its rewritten index, purged by every run of the
//! tileset, whichever partitions it renders, so a purge outlives its partition.

use crate::config::{CdnConfig, IndexLocation, OutputTarget};
use crate::coordination::outbox::Outbox;
use crate::delivery::outbox::accepted_lines;
use crate::edge::Budget;
use crate::edge::Flights;
use crate::edge::{Client, Holds, Progress, PurgeTarget};
use crate::error::Result;
use crate::job::SeedJob;
use crate::report::{PurgeSummary, SummaryHeader, Tally, TilesetSummary};
use crate::sink;
use crate::tile::{BBox, ZoomRange};

/// Purges what waits in the outbox of tileset `name`'s output `target` for its CDNs `cdn`;
/// returns a summary of the tileset when anything waited (its purges, what still waits).
pub async fn deliver_handed_over(
    name: &str,
    target: &OutputTarget,
    cdn: &[CdnConfig],
    bbox: BBox,
    zooms: ZoomRange,
    job: &SeedJob,
    holds: &Holds,
) -> Result<Option<TilesetSummary>> {
    if cdn.is_empty() {
        return Ok(None);
    }
    let outbox = sink::outbox_of(target, &job.store_settings).await?;
    if outbox.backlog().await?.batches == 0 {
        return Ok(None);
    }
    let client = Client::new()?;
    let mut targets = Vec::new();
    for config in cdn {
        targets.push(PurgeTarget::build(config, bbox, &client).await?);
    }
    let consumers: Vec<String> = targets.iter().map(PurgeTarget::consumer).collect();
    outbox.coalesce(1).await?;
    let handed = HandedOver {
        tileset: name,
        outbox: &outbox,
        consumers: &consumers,
        holds,
    };
    let mut purges = Vec::new();
    for target in &targets {
        let pending = outbox.pending(&target.consumer()).await?;
        if !pending.is_empty() {
            purges.push(handed.purge(target, pending).await?);
        }
    }
    outbox.prune(&consumers).await?;
    let header = SummaryHeader::complete(
        name.to_string(),
        target.describe(),
        format!("{}-{}", zooms.min, zooms.max),
    );
    let mut summary = Tally::default().summarize(header, std::time::Duration::ZERO);
    summary.purges = purges;
    summary.outbox = outbox.backlog_for(&consumers).await?;
    Ok(Some(summary))
}

/// A partitioned tileset's own outbox, as its CDNs are handed what waits in it.
struct HandedOver<'a> {
    tileset: &'a str,
    outbox: &'a Outbox,
    /// Every consumer of the outbox: one CDN each.
    consumers: &'a [String],
    holds: &'a Holds,
}

impl HandedOver<'_> {
    /// Purges the batches `pending` for `target`, unless a failure holds it back.
    async fn purge(
        &self,
        target: &PurgeTarget,
        pending: Vec<(String, Vec<String>)>,
    ) -> Result<PurgeSummary> {
        let mut paths: Vec<String> = pending.iter().flat_map(|(_, l)| l.clone()).collect();
        paths.sort();
        paths.dedup();
        let mut summary = PurgeSummary {
            target: target.name().to_string(),
            ..PurgeSummary::default()
        };
        // The key its partitions' runs use too: one failure holds the CDN back for them all.
        let key = Holds::key(&self.outbox.describe(), target.name());
        if let Some(left) = self.holds.held(&key) {
            tracing::info!(
                "cdn `{}` failed recently: the purges of tileset `{}`'s partitions wait in \
                 {}; next attempt in {:.0} s",
                target.name(),
                self.tileset,
                self.outbox.describe(),
                left.as_secs_f64()
            );
            summary.deferred = true;
            return Ok(summary);
        }
        let mut budget = Budget::open(target, self.outbox).await?;
        let allowance = budget.allowance();
        // The partitions' commit times are not carried over: these invalidations are followed
        // for the room they take, not for latency.
        let mut flights = Flights::untracked();
        let progress = Progress::new();
        let purged = target
            .purge_tracked(&paths, None, allowance, &mut flights, &progress)
            .await;
        match purged {
            Ok(report) if report.over_budget => {
                summary.over_budget = true;
                summary.budget = budget.state();
            }
            Ok(report) if report.no_room => {
                summary.no_room = true;
                summary.budget = budget.state();
            }
            Ok(report) => {
                self.holds.succeeded(&key);
                budget.spent(report.price_usd.unwrap_or_default()).await?;
                summary.budget = budget.state();
                summary.evicted = report.evicted;
                summary.requests = report.requests;
                summary.paths = report.paths;
                summary.price_usd = report.price_usd;
                let names: Vec<String> = pending.into_iter().map(|(n, _)| n).collect();
                let consumer = target.consumer();
                self.outbox.taken(&consumer, &names, self.consumers).await?;
            }
            Err(err) => {
                self.holds.failed(&key);
                self.keep_accepted(target, &pending, &progress).await?;
                tracing::warn!(
                    "{err}; the purges of tileset `{}`'s partitions stay in {}",
                    self.tileset,
                    self.outbox.describe()
                );
                summary.failed = Some(err.to_string());
            }
        }
        Ok(summary)
    }

    /// Records what `target` accepted of `pending` before its purge failed, which leaves the
    /// outbox: its lines are paths already.
    async fn keep_accepted(
        &self,
        target: &PurgeTarget,
        pending: &[(String, Vec<String>)],
        progress: &Progress,
    ) -> Result<()> {
        let took = accepted_lines(pending, &progress.take(), |line| line);
        self.outbox.took_lines(&target.consumer(), &took).await
    }
}

/// Records in the tileset's outbox the changes feeds of the vanished partitions `segments` (their
/// escaped values) of a tree or prefix, removed with them: their segments are immutable, and a
/// cache would otherwise keep serving them, private names included, for as long as it keeps
/// anything. The tileset's next delivery purges each feed's folder.
pub async fn purge_vanished_feeds(
    target: &OutputTarget,
    segments: &[String],
    job: &SeedJob,
) -> Result<()> {
    let kind = sink::kind_of(target);
    if segments.is_empty() || !kind.home().stores_tile_by_tile() {
        return Ok(());
    }
    let folders: Vec<String> = segments
        .iter()
        .map(|segment| format!("{segment}/{}/*", crate::coordination::feed::FOLDER))
        .collect();
    Outbox::new(kind.home().outbox(&job.store_settings).await?, None)
        .add_batch(&folders)
        .await
}

/// Records the index at `location` in the tileset's outbox, for its next delivery to purge.
pub async fn purge_index(
    target: &OutputTarget,
    location: &IndexLocation,
    job: &SeedJob,
) -> Result<()> {
    let name = match location {
        IndexLocation::File(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()),
        IndexLocation::Object { key, .. } => key.rsplit('/').next().map(str::to_string),
    };
    match name {
        Some(name) => {
            sink::outbox_of(target, &job.store_settings)
                .await?
                .add_batch(&[name])
                .await
        }
        None => Ok(()),
    }
}
