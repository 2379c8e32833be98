//! Sub-steps 4f-4i of a tileset's seed, which `TilesetRun::seed` drives once its tiles are
//! rendered: the output finished and its changes delivered, the change log's consumer advanced,
//! the hash brought up to date and delivered, and the summary.

use super::{TilesetRun, Underway};
use crate::delivery::Delivered;
use crate::error::{Error, Result};
use crate::report::TilesetSummary;
use crate::seed::freshness::{self, AfterRun};
use crate::seed::live::QuietMark;
use crate::sink::{self, writer, Sweep};
use crate::state::capture;

impl TilesetRun<'_> {
    /// Step 4f: finishes the output (or aborts it), then stores what changed in the outbox and
    /// hands it to the consumers, even after a failure; returns whether the run was complete and
    /// what the delivery did.
    pub(super) async fn finish_and_deliver(
        &self,
        run: &mut Underway<'_>,
        (written, rendered): (writer::Written, Result<bool>),
        (sweep, defer_hash): (Sweep, bool),
    ) -> Result<(bool, Delivered)> {
        let full = sweep == Sweep::Everything;
        let complete = self
            .complete(
                written,
                rendered,
                &mut run.tally,
                (sweep, defer_hash),
                run.watermark.as_ref(),
            )
            .await;
        let outbox = &mut run.outbox;
        // Rendered (or rendered ahead) and stored: the tiles the notes held back are the
        // output's now. A note left behind only renders them once more.
        let mut done_with = Vec::new();
        if matches!(complete, Ok(true)) {
            if run.deferred == AfterRun::Remove {
                done_with = vec![freshness::DEFERRED_TILES, freshness::RENDERING_TILES];
            } else if let Some(ahead) = &run.ahead {
                done_with = vec![freshness::RENDERING_TILES];
                if let Some(live) = self.live {
                    live.stored(&run.target.describe(), &ahead.tiles);
                }
            }
        }
        for note in done_with {
            if let Err(e) = outbox.remove_note(note).await {
                tracing::warn!("{e}; its deferred tiles are rendered again by the next cycle");
            }
        }
        if full && matches!(complete, Ok(true)) {
            // A complete full seed left exactly its own tiles: what a wildcard would evict.
            outbox.record_stored(run.tally.written_per_zoom()).await?;
        }
        // Only a complete run applied its changes (see 4h).
        let applied: &[f64] = if matches!(complete, Ok(true)) {
            &run.committed
        } else {
            &[]
        };
        let delivered = outbox
            .commit_and_deliver(
                &run.changed,
                complete.is_err(),
                self.holds,
                Some(self.stop),
                applied,
            )
            .await;
        Ok((complete?, delivered?))
    }

    /// Step 4g: advances the change log's consumer (watermark, pruning) after a complete run of
    /// a tileset that consumes it; says why the next run renders again what this one left.
    pub(super) async fn advance_consumer(&self, run: &Underway<'_>, complete: bool) -> Result<()> {
        let tileset = self.prepared.tileset;
        let name = &tileset.tileset.name;
        if tileset.shard.is_some() {
            // A part is not a consumer of the change log: pruning what one shard saw could drop
            // changes a shard with an earlier snapshot did not see, which the merged output's
            // first `seed --dirty` must still read.
        } else if tileset.list_prefix.is_some() {
            // A partition: its partitioned tileset consumes the log for all of them
            // (`crate::partition`), once every partition of the run is complete.
        } else if self.job.run.scratch {
            // A throwaway output: recording it as a consumer would hold back pruning for good.
        } else if let (true, Some(next)) = (complete, &run.watermark) {
            self.advance(run.target, next).await?;
        } else if !complete && !run.tally.failed().is_empty() {
            tracing::warn!(
                "tileset `{name}`: {} tile(s) failed; the watermark was not advanced, so the next \
                 run renders them again",
                run.tally.failed().len()
            );
        } else if !complete {
            tracing::warn!(
                "tileset `{name}`: stopped after --max-duration; the rest is left for the next run"
            );
        }
        Ok(())
    }

    /// Step 4g's second half: which zooms of the output rendered slowly, kept for `watch`'s low
    /// lane ([`crate::seed::Live`]): learned by this watcher from its quiet cycles (`mark`: where
    /// the lane stood as the cycle began), and recorded by seeds beside the consumer for the
    /// cycles of later watchers. A whole run states it; a run of some tiles only raises it.
    pub(super) async fn record_slow_zooms(
        &self,
        run: &Underway<'_>,
        (complete, whole): (bool, bool),
        mark: Option<QuietMark>,
    ) {
        let tileset = self.prepared.tileset;
        let deepest = tileset.zooms.max;
        let output = run.target.describe();
        let below = match (self.live, mark) {
            // A cycle's times hold whatever else the machine did meanwhile: they serve this
            // watcher, and are not recorded for the next.
            (Some(live), Some(mark)) => {
                self.recall_slow_zooms(run.target).await;
                live.learn(&output, run.tally.slowest(), deepest, mark);
                return;
            }
            _ => {
                let threshold = crate::seed::live::SLOW_TILE;
                crate::seed::live::slow_below(run.tally.slowest(), deepest, threshold)
            }
        };
        let consumes = tileset.shard.is_none()
            && tileset.list_prefix.is_none()
            && !self.job.run.scratch
            && complete;
        if consumes && (below.is_some() || whole) {
            let schema = &self.job.change_schema;
            let below = below.unwrap_or(0);
            capture::record_slow_zooms(self.pool, schema, run.target, below, whole).await;
        }
    }

    /// After a watcher's first cycle of an output (its catch-up, which renders every zoom of what
    /// changed while no watcher ran, as before): the slow zooms earlier runs recorded for it, so
    /// the cycles of the commits that follow render them apart, with no cycle spent learning.
    pub(super) async fn recall_slow_zooms(&self, target: &crate::config::OutputTarget) {
        let Some(live) = self.live else { return };
        let output = target.describe();
        if !live.first_sight(&output) {
            return;
        }
        let schema = &self.job.change_schema;
        if let Some(below) = capture::slow_zooms(self.pool, schema, target).await {
            live.recall(&output, below.min(self.prepared.tileset.zooms.max));
        }
    }

    /// Step 4h: brings the hash up to date; the new hash is news to the edge too, so `tiles.json`
    /// is delivered again.
    pub(super) async fn deliver_new_hash(
        &self,
        run: &mut Underway<'_>,
        delivered: &mut Delivered,
    ) -> Result<()> {
        if !self.refresh_hash(run.target).await? {
            return Ok(());
        }
        let tilejson = sink::tilejson::TILEJSON_NAME;
        if sink::kind_of(run.target).documents().contains(&tilejson) {
            run.outbox.record_documents(&[tilejson]).await?;
            let again = run.outbox.commit_and_deliver(
                &run.changed,
                false,
                self.holds,
                Some(self.stop),
                &[],
            );
            delivered.absorb(again.await?);
        }
        Ok(())
    }

    /// Step 4i: the run's summary; a run stopped while purging is an error, after its tiles are
    /// stored and its watermark moved on.
    pub(super) async fn summarize(
        &self,
        run: Underway<'_>,
        complete: bool,
        delivered: Delivered,
        started: std::time::Instant,
    ) -> Result<TilesetSummary> {
        let name = &self.prepared.tileset.tileset.name;
        let mut header = self.header(run.target.describe(), complete, run.changes_read);
        // Only a complete run applied its changes: the others are read again by the next one.
        if complete {
            header.committed = run.committed;
        }
        header.ways = run.ways;
        let mut summary = run.tally.summarize(header, started.elapsed());
        summary.outbox = run.outbox.backlog(&run.changed).await?;
        if let Some(signal) = delivered.stopped {
            // The tiles are stored and the watermark moved on: only the purges were cut short,
            // and their changes wait in the outbox.
            tracing::warn!(
                "tileset `{name}`: stopped by {signal} while purging; the output holds this run's tiles and its outbox the changes to purge"
            );
            return Err(Error::Stopped { signal });
        }
        summary.purges = delivered.purges;
        summary.feed = delivered.feed;
        summary.edge_probes = delivered.probes;
        Ok(summary)
    }
}
