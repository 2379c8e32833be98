//! Sub-step 4c's decision: the work a run does, from the output's recorded state, with the
//! cluster cells brought up to date beside it.

use super::TilesetRun;
use crate::error::Result;
use crate::job::Selection;
use crate::plan::Work;
use crate::state::reseed::{self, Decision};
use crate::state::{capture, cells};

impl TilesetRun<'_> {
    /// Decides the work from the output's state, and brings the cluster cells up to date beside
    /// it: from the moment the watermark's snapshot is taken, so they hold at least every change
    /// the output will claim to reflect. A bulk change's log read, its dirty tiles and its census
    /// then run while the server sums the cells, where they used to wait for one another.
    pub(super) async fn decide(&self, state: Option<String>, settings: String) -> Result<Decision> {
        let prepared = self.prepared;
        let tileset = prepared.tileset;
        let schema = &self.job.change_schema;
        let layers = self.layer_configs();
        let selection = self.selection();
        // A gap in capture is recorded before a full seed takes its watermark, which then sees
        // it (a reseed records it as it reads the log).
        if *selection == Selection::Pyramid {
            capture::record_gaps(self.pool, schema, &layers).await?;
        }
        let extent = tileset.tileset.extent;
        let refresh = |rebuild: bool| {
            cells::refresh(
                self.pool,
                schema,
                &prepared.layers,
                &prepared.cell_tables,
                extent,
                rebuild,
            )
        };
        let (taken, snapshot_taken) = tokio::sync::oneshot::channel();
        let deciding = reseed::decide(
            (self.pool, self.render_pool()),
            schema,
            tileset,
            (&layers, &prepared.layers),
            selection,
            (state.as_deref(), settings, Some(taken)),
        );
        let refreshing = async {
            // Dropped unanswered where the run takes no watermark: nothing to wait for then.
            let _ = snapshot_taken.await;
            refresh(self.job.run.rebuild_cells).await
        };
        let (decision, refreshed) = tokio::join!(deciding, refreshing);
        let decision = decision?;
        refreshed?;
        // A reseed rendering whole (a gap in capture, a truncate, new settings) sums the cells
        // from rows too: whatever the log missed for the output, it missed for them. Rare, so
        // the refresh beside the decision is not held back for it.
        // A bulk change walked whole was read from a complete log, which the cells read too.
        let whole = *selection == Selection::Dirty
            && matches!(decision.work, Work::Pyramid)
            && !decision.bulk;
        if whole && !self.job.run.rebuild_cells {
            refresh(true).await?;
        }
        if let Some(replica) = self.replica {
            // The cells just refreshed on the primary, and every commit the snapshot taken on the
            // replica counts as seen, must be visible to the replica's tile queries.
            replica
                .catch_up(self.pool, self.job.database.statement_timeout)
                .await?;
        }
        Ok(decision)
    }
}
