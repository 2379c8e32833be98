//! The work of sub-steps 4e-4h of a tileset's seed, which `TilesetRun::seed` drives: the tiles
//! rendered through the scheduler into the writer, the output finished (metadata, sweep, state),
//! the watermark advanced, and the hash refreshed.

use std::collections::HashMap;
use std::time::Instant;

use super::{Ahead, TilesetRun, Todo, Underway};
use crate::config::OutputTarget;
use crate::coordination::TilesetMetadata;
use crate::encode::{Encoding, SizeBudget};
use crate::error::{Error, Result};
use crate::plan::PyramidWalk;
use crate::render::Renderer;
use crate::report::{Progress, ProgressKind, Tally};
use crate::schedule::{ListOrder, Scheduler};
use crate::seed::live::AheadTiles;
use crate::sink::writer::{self, Writer, WriterCommand};
use crate::sink::{self, Finish, Sink, Sweep};
use crate::state::capture;
use crate::state::Watermark;

/// Hands the writer what the low lane rendered ahead, as the lane rendered it.
async fn store_ahead(ahead: &Ahead, writer: &Writer) -> Result<()> {
    for (tile, bytes) in ahead.tiles.iter() {
        if !ahead.injected.contains(tile) {
            continue;
        }
        let command = match bytes {
            Some(bytes) => WriterCommand::Write(*tile, bytes.clone(), None),
            None => WriterCommand::Delete(*tile),
        };
        writer.send(command).await?;
    }
    Ok(())
}

/// Tiles a walk of subtrees may queue at most at their deepest zoom (8 bytes each): subtrees are
/// walked in parts of as many roots as stay under it.
const WALK_FRONTIER: usize = 1 << 20;

impl TilesetRun<'_> {
    /// Step 4e: renders the work, encodes it and stores it through the one writer, purging the
    /// tiles as they are stored where the output's targets allow; returns how rendering ended
    /// and the writer's end.
    pub(super) async fn render_stored(
        &self,
        run: &mut Underway<'_>,
        sink: Box<dyn Sink>,
        todo: Todo,
        progress_kind: ProgressKind,
    ) -> (Result<bool>, writer::Written) {
        let name = &self.prepared.tileset.tileset.name;
        let (writer, written) = writer::spawn(sink, name);
        let mut progress = Progress::start(progress_kind, name);
        let outbox = &mut run.outbox;
        // A list's tiles that the output serves as soon as they are stored are purged as they
        // come, the deepest zoom first, while the heavy low zooms still render; a whole seed's
        // too where a target would send their exact paths anyway.
        let recorded = match &todo {
            Todo::Tiles(tiles) if outbox.purges_as_stored(tiles) => outbox.recorder().tap(),
            Todo::Walk(..) | Todo::Subtrees(..) if outbox.purges_whole_as_stored() => {
                outbox.recorder().tap()
            }
            _ => None,
        };
        let tally = &mut run.tally;
        let ahead = run.ahead.as_ref();
        let render = async {
            let rendered = self
                .render(run.target, todo, (writer, ahead), tally, &mut progress)
                .await;
            if let Some(recorded) = &recorded {
                recorded.close();
            }
            rendered
        };
        let purge = async {
            if let Some(recorded) = &recorded {
                outbox
                    .purge_as_stored(recorded, self.holds, self.stop)
                    .await;
            }
        };
        // The purges share this task with the renders rather than a thread of their own: in a
        // full seed of the 100k sample behind a cache that answers at once, this thread was busy
        // about 3 s of 8-24 s with them (0.5 s without) and they kept up with the writer; what
        // they cost is CPU, which 2 cores lack. The whole purger on a thread of its own took
        // 1.23x the seed without a CDN against 1.26x here; its requests alone on a runtime of
        // their own cost 1.5 s more CPU in hand-offs, and 1.20-1.32x
        // (scripts/bench/results/2026-11-28-purge-beside.md).
        let (rendered, ()) = tokio::join!(render, purge);
        progress.finish();
        tracing::debug!("tileset `{name}`: rendering done");
        (rendered, written)
    }

    /// Renders the work through the scheduler into the writer; false when `--max-duration` ran out.
    pub(super) async fn render(
        &self,
        target: &OutputTarget,
        todo: Todo,
        (writer, ahead): (Writer, Option<&Ahead>),
        tally: &mut Tally,
        progress: &mut Progress,
    ) -> Result<bool> {
        let tileset = self.prepared.tileset;
        let renderer = self.prepared.renderer.on(self.connections);
        let scheduler = self.scheduler(&renderer, self.encoding_for(target));
        match todo {
            Todo::Walk(walk, done) => {
                let walked = scheduler.walk(&walk, Some(&writer), done, tally, progress);
                walked.await.map(|()| true)
            }
            Todo::Tiles(mut tiles) => {
                if let Some(ahead) = ahead {
                    tiles.retain(|tile| !ahead.injected.contains(tile));
                    store_ahead(ahead, &writer).await?;
                }
                let listed = self.render_list(&scheduler, &tiles, &writer, tally, progress);
                listed.await
            }
            Todo::Subtrees(tiles, subtrees) => {
                let listed = self.render_list(&scheduler, &tiles, &writer, tally, progress);
                if !listed.await? {
                    return Ok(false);
                }
                // The walk is breadth first: all the subtrees at once would queue every tile of
                // their deepest zoom (18 million for Russia at z14).
                let depth = subtrees
                    .top_zoom()
                    .map_or(0, |root| tileset.zooms.max.saturating_sub(root));
                let per_part = (WALK_FRONTIER >> (2 * u32::from(depth.min(10)))).max(1);
                for part in subtrees.parts(per_part) {
                    let walk = PyramidWalk::for_subtrees(tileset.bbox, tileset.zooms, part);
                    let walked =
                        scheduler.walk(&walk, Some(&writer), HashMap::new(), tally, progress);
                    walked.await?;
                }
                Ok(true)
            }
        }
    }

    /// Renders `tiles` for `watch`'s low lane into memory, on `connections` of its own, for a
    /// later cycle to store; fails unless every tile rendered.
    pub(in crate::seed) async fn render_ahead(
        &self,
        target: &OutputTarget,
        tiles: &[crate::tile::TileCoord],
    ) -> Result<AheadTiles> {
        let name = &self.prepared.tileset.tileset.name;
        let renderer = self.prepared.renderer.on(self.connections);
        let scheduler = self.scheduler(&renderer, self.encoding_for(target));
        let (writer, mut received) = writer::in_memory(name);
        let mut tally = Tally::default();
        let mut progress = Progress::start(ProgressKind::Quiet, name);
        let render = async {
            let listed = self.render_list(&scheduler, tiles, &writer, &mut tally, &mut progress);
            let finished = listed.await;
            drop(writer);
            finished
        };
        let collect = async {
            let mut rendered = AheadTiles::new();
            while let Some(command) = received.recv().await {
                match command {
                    WriterCommand::Write(tile, bytes, _) => rendered.push((tile, Some(bytes))),
                    WriterCommand::Delete(tile) => rendered.push((tile, None)),
                    WriterCommand::Visited(..) => {}
                }
            }
            rendered
        };
        let (finished, rendered) = tokio::join!(render, collect);
        if !finished? || !tally.failed().is_empty() {
            return Err(Error::output(
                name,
                "the low lane could not render every noted tile; they stay noted for its next turn",
            ));
        }
        Ok(rendered)
    }

    /// Renders listed tiles in the run's order; false when `--max-duration` ran out.
    async fn render_list<R: Renderer>(
        &self,
        scheduler: &Scheduler<'_, R>,
        tiles: &[crate::tile::TileCoord],
        writer: &Writer,
        tally: &mut Tally,
        progress: &mut Progress,
    ) -> Result<bool> {
        let deadline = self.job.run.max_duration.map(|d| Instant::now() + d);
        let order = if self.job.run.lowest_zoom_first {
            ListOrder::LowestFirst
        } else {
            ListOrder::DeepestFirst
        };
        scheduler
            .render_list(tiles, order, writer, deadline, tally, progress)
            .await
    }

    /// How tiles are encoded for `target`: gzipped where its kind stores them so.
    fn encoding_for(&self, target: &OutputTarget) -> Encoding {
        let settings = &self.prepared.tileset.tileset.output_settings;
        Encoding {
            gzip: sink::kind_of(target).stores_gzip(settings),
            level: settings.compression_level,
        }
    }

    pub(super) fn scheduler<'r, R>(
        &'r self,
        renderer: &'r R,
        encoding: Encoding,
    ) -> Scheduler<'r, R> {
        let tileset = &self.prepared.tileset.tileset;
        Scheduler {
            renderer,
            tileset: &tileset.name,
            concurrency: self.connections.count(),
            encoding,
            budget: SizeBudget {
                bytes: tileset.size_budget,
                strict: self.job.run.strict_size,
            },
            keep_going: self.job.run.keep_going.is_some(),
            stop: self.stop,
        }
    }

    /// Writes the metadata and completes the output; with `sweep`, tiles the run did not produce are
    /// removed; `state` is recorded once every tile is durable; with `defer_hash`, a changed
    /// output's hash is left pending.
    pub(super) async fn finish(
        &self,
        sink: Box<dyn Sink>,
        sweep: Sweep,
        state: Option<&Watermark>,
        defer_hash: bool,
    ) -> Result<sink::SinkReport> {
        let name = self.prepared.tileset.tileset.name.clone();
        let metadata = TilesetMetadata::for_job(self.prepared.tileset, &self.prepared.layers);
        let state = state.map(Watermark::to_state);
        // Sinks block (SQLite, S3 round trips), so they finish off the async threads.
        let stored = tokio::task::spawn_blocking(move || {
            sink.finish(Finish {
                metadata: &metadata,
                sweep: &sweep,
                state: state.as_deref(),
                defer_hash,
            })
        })
        .await
        .map_err(|e| Error::output(&name, format!("finishing the output failed: {e}")))??;
        tracing::debug!("tileset `{name}`: output finished");
        Ok(stored)
    }

    /// Computes the `agg_tiles_hash` a deferred finish left pending; whether it named a new one.
    pub(super) async fn refresh_hash(&self, target: &OutputTarget) -> Result<bool> {
        let started = Instant::now();
        let settings = &self.prepared.tileset.tileset.output_settings;
        let cancel = std::sync::Arc::default();
        if let sink::HashRefresh::Computed(hash) =
            sink::refresh_agg_hash(target, settings, cancel).await?
        {
            tracing::info!(
                "{}: agg_tiles_hash {hash}, read from every tile after the purges in {:.2} s",
                target.describe(),
                started.elapsed().as_secs_f64()
            );
            return Ok(true);
        }
        Ok(false)
    }

    /// Records the output's new watermark in the change log and prunes what every consumer has.
    pub(super) async fn advance(&self, target: &OutputTarget, next: &Watermark) -> Result<()> {
        let schema = &self.job.change_schema;
        let pruned = capture::advance_and_prune(self.pool, schema, target, next).await?;
        if pruned > 0 {
            tracing::info!("pruned {pruned} applied change(s) from the change log");
        }
        Ok(())
    }
}
