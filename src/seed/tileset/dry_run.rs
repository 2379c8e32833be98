//! `seed --dry-run` of one tileset: the tiles a seed would query, or, with `--dirty`, what a
//! reseed would render, write and purge, with no lock taken and nothing written.

use std::collections::HashMap;
use std::time::Instant;

use super::TilesetRun;
use crate::config::OutputTarget;
use crate::encode::Encoding;
use crate::error::Result;
use crate::job::Selection;
use crate::plan::{PyramidWalk, Work};
use crate::report::{Progress, ProgressKind, ReseedPlan, Tally, TilesetSummary, ZoomCount};
use crate::seed::freshness;
use crate::sink;
use crate::state::reseed;

impl TilesetRun<'_> {
    /// `--dry-run`: walks the pyramid with probes only, counting the tiles each zoom would query.
    pub(super) async fn dry_run(
        &self,
        progress_kind: ProgressKind,
        started: Instant,
    ) -> Result<TilesetSummary> {
        let tileset = self.prepared.tileset;
        let name = &tileset.tileset.name;
        tracing::info!(
            "counting the tiles of `{name}` zoom {} (dry run)",
            tileset.zooms
        );
        let mut tally = Tally::default();
        let mut progress = Progress::start(progress_kind, name);
        let renderer = self.prepared.renderer.on(self.connections);
        let encoding = Encoding {
            gzip: false,
            level: tileset.tileset.output_settings.compression_level,
        };
        let walk = PyramidWalk::new(tileset.bbox, tileset.zooms);
        let walked = self
            .scheduler(&renderer, encoding)
            .walk(&walk, None, HashMap::new(), &mut tally, &mut progress)
            .await;
        progress.finish();
        walked?;
        let mut header = self.header("-".into(), true, None);
        header.dry_run = true;
        Ok(tally.summarize(header, started.elapsed()))
    }

    /// `--dirty --dry-run`: reads the output's state and the change log as a reseed would, and
    /// says what it would render, write and purge, without a lock, a rendered tile or a write.
    pub(super) async fn dry_run_dirty(
        &self,
        target: &OutputTarget,
        started: Instant,
    ) -> Result<TilesetSummary> {
        let tileset = self.prepared.tileset;
        let extension = &tileset.tileset.output_settings.tile_extension;
        let reader = sink::OutputReader::open(
            &target.describe(),
            target,
            &self.job.store_settings,
            extension,
        )
        .await?;
        let state = reader.state().await?;
        let mut decision = reseed::decide(
            (self.pool, self.render_pool()),
            &self.job.change_schema,
            tileset,
            (&self.layer_configs(), &self.prepared.layers),
            self.selection(),
            (state.as_deref(), self.settings_digest(), None),
        )
        .await?;
        // The tiles a `watch` deferral holds back, which this reseed would render too.
        if let (Work::Tiles(tiles) | Work::Subtrees { tiles, .. }, Selection::Dirty) =
            (&mut decision.work, self.selection())
        {
            freshness::add_noted(target, &self.job.store_settings, tiles).await?;
        }
        let per_zoom = |tiles: &mut dyn Iterator<Item = crate::tile::TileCoord>| {
            let mut per_zoom = std::collections::BTreeMap::<u8, u64>::new();
            for tile in tiles {
                *per_zoom.entry(tile.z()).or_default() += 1;
            }
            per_zoom
                .into_iter()
                .map(|(zoom, tiles)| ZoomCount { zoom, tiles })
                .collect::<Vec<_>>()
        };
        let (dirty_tiles, subtrees, count) = match &decision.work {
            Work::Pyramid => (Vec::new(), Vec::new(), None),
            Work::Tiles(tiles) => (
                per_zoom(&mut tiles.iter().copied()),
                Vec::new(),
                Some(tiles.len() as u64),
            ),
            Work::Subtrees { tiles, subtrees } => (
                per_zoom(&mut tiles.iter().copied()),
                per_zoom(&mut subtrees.roots()),
                None,
            ),
        };
        let (backlog, purges) =
            crate::delivery::purge_plans(target, tileset, &self.job.store_settings, &decision.work)
                .await?;
        let mut header = self.header(target.describe(), true, decision.changes_read);
        header.dry_run = true;
        let mut summary = Tally::default().summarize(header, started.elapsed());
        summary.outbox = backlog;
        summary.plan = Some(ReseedPlan {
            everything: matches!(decision.work, Work::Pyramid),
            dirty_tiles,
            subtrees,
            writes: sink::kind_of(target).expected_writes(count),
            purges,
        });
        Ok(summary)
    }
}
