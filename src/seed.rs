//! The `seed` command: the pipeline's wiring.
//!
//! 1. Connect a bounded pool.
//! 2. Describe every layer's source and prepare its statements.
//! 3. Per tileset, open the sink on a writer thread.
//! 4. Walk the pyramid level by level, rendering on the pool and feeding encoded tiles through a
//!    bounded channel.
//! 5. Finish the sink with metadata, or abort it, leaving nothing half-written.
//! 6. Summarize.

use std::time::Instant;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::encode::gzip;
use crate::error::{Error, Result};
use crate::job::{SeedJob, TilesetJob};
use crate::plan::{sort_for_locality, PyramidWalk};
use crate::render::source::{describe, LayerSource};
use crate::render::{pool, Mode, TilesetRenderer};
use crate::report::{human_bytes, Progress, ProgressKind, SummaryHeader, Tally, TilesetSummary};
use crate::sink::{self, ChangeLog, Sink, SinkReport, TilesetMetadata, VectorLayer};
use crate::tile::TileCoord;

/// Encoded tiles waiting for the writer; small, so memory stays flat whatever the job's size.
const WRITE_QUEUE: usize = 256;

/// Runs a seed job and returns one summary per tileset.
pub async fn run(job: &SeedJob, progress: ProgressKind) -> Result<Vec<TilesetSummary>> {
    let pool = pool::connect(&job.database, job.concurrency).await?;
    let mut prepared = Vec::new();
    for tileset in &job.tilesets {
        let mut layers = Vec::new();
        for layer in &tileset.tileset.layers {
            let source = describe(&pool, &tileset.tileset.name, layer).await?;
            if !source.has_spatial_index {
                tracing::warn!(
                    "tileset `{}`, layer `{}`: no spatial index on {}.{}; every tile will scan the table \
                     (CREATE INDEX ON {} USING gist ({}))",
                    tileset.tileset.name,
                    layer.name,
                    layer.qualified_table(),
                    layer.geometry_column,
                    layer.qualified_table(),
                    layer.geometry_column
                );
            }
            layers.push(source);
        }
        let renderer = TilesetRenderer::new(
            pool.clone(),
            &tileset.tileset.name,
            &layers,
            tileset.zooms,
            tileset.tileset.extent,
            tileset.tileset.buffer,
        );
        renderer.check().await?;
        prepared.push((tileset, layers, renderer));
    }
    let changes = match (&job.changed_list, job.dry_run) {
        (Some(path), false) => ChangeLog::create(path)?,
        _ => ChangeLog::disabled(),
    };
    let mut summaries = Vec::new();
    for (tileset, layers, renderer) in prepared {
        summaries
            .push(seed_tileset(job, tileset, &layers, &renderer, progress, changes.clone()).await?);
    }
    changes.close()?;
    Ok(summaries)
}

async fn seed_tileset(
    job: &SeedJob,
    tileset: &TilesetJob,
    layers: &[LayerSource],
    renderer: &TilesetRenderer,
    progress_kind: ProgressKind,
    changes: ChangeLog,
) -> Result<TilesetSummary> {
    let started = Instant::now();
    let name = &tileset.tileset.name;
    let output = tileset.output.as_ref().filter(|_| !job.dry_run);
    tracing::info!(
        "seeding tileset `{name}` zoom {} bbox {} -> {}",
        tileset.zooms,
        tileset.bbox,
        output.map_or("nothing (dry run)".into(), |o| o.describe())
    );
    let settings = &tileset.tileset.output_settings;
    let gzipped = output.is_some_and(|target| target.stores_gzip(settings));
    let (sender, writer) = match output {
        Some(target) => {
            let sink = sink::open(target, settings, &job.s3, changes).await?;
            let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
            (Some(sender), Some(spawn_writer(sink, receiver)))
        }
        None => (None, None),
    };

    let mut tally = Tally::default();
    let mut progress = Progress::start(progress_kind, name);
    let walked = walk(
        job,
        tileset,
        renderer,
        sender,
        gzipped,
        &mut tally,
        &mut progress,
    )
    .await;
    progress.finish();

    let mut stored = SinkReport::default();
    if let Some(writer) = writer {
        let sink = writer
            .await
            .map_err(|e| Error::output(name, format!("the writer stopped: {e}")))?;
        match (walked, sink) {
            (Ok(()), Ok(sink)) => {
                // Sinks block (SQLite, S3 round trips), so they finish off the async threads.
                let metadata = metadata(tileset, layers);
                stored = tokio::task::spawn_blocking(move || sink.finish(&metadata, true, None))
                    .await
                    .map_err(|e| {
                        Error::output(name, format!("finishing the output failed: {e}"))
                    })??;
            }
            (Err(err), Ok(sink)) => {
                let _ = tokio::task::spawn_blocking(move || sink.abort()).await;
                return Err(err);
            }
            // The writer's own error explains why rendering could not hand it more tiles.
            (_, Err(err)) => return Err(err),
        }
    } else {
        walked?;
    }

    let header = SummaryHeader {
        tileset: name.clone(),
        output: output.map_or("-".into(), |o| o.describe()),
        zooms: tileset.zooms.to_string(),
        dry_run: job.dry_run,
    };
    Ok(tally.summarize(header, stored, started.elapsed()))
}

/// Walks the pyramid level by level, sending written tiles to the writer.
async fn walk(
    job: &SeedJob,
    tileset: &TilesetJob,
    renderer: &TilesetRenderer,
    sender: Option<mpsc::Sender<(TileCoord, Vec<u8>)>>,
    gzipped: bool,
    tally: &mut Tally,
    progress: &mut Progress,
) -> Result<()> {
    let walk = PyramidWalk::new(tileset.bbox, tileset.zooms);
    let mut level = walk.roots();
    while !level.is_empty() {
        let z = level[0].z();
        let mode = if job.dry_run {
            Mode::Probe
        } else {
            walk.mode(z)
        };
        progress.level(z, level.len());
        let mut next = Vec::new();
        let mut results = futures::stream::iter(std::mem::take(&mut level))
            .map(|tile| renderer.render(tile, mode))
            .buffer_unordered(job.concurrency);
        while let Some(rendered) = results.next().await {
            let rendered = rendered?;
            let mut stored = None;
            if let (Some(sender), false) = (&sender, rendered.mvt.is_empty()) {
                let data = if gzipped {
                    gzip(&rendered.mvt)
                } else {
                    rendered.mvt
                };
                stored = Some(data.len());
                let budget = tileset.tileset.size_budget;
                if data.len() as u64 > budget {
                    if job.strict_size {
                        return Err(Error::Render {
                            tileset: tileset.tileset.name.clone(),
                            tile: rendered.tile,
                            message: format!(
                                "{} stored, over the size budget of {} (--strict-size)",
                                human_bytes(data.len() as u64),
                                human_bytes(budget)
                            ),
                        });
                    }
                    tally.over_budget(rendered.tile, data.len());
                }
                if sender.send((rendered.tile, data)).await.is_err() {
                    return Err(Error::output(&tileset.tileset.name, "the writer stopped"));
                }
            }
            tally.record(rendered.tile, mode, rendered.elapsed, stored);
            progress.tile_done(tally);
            next.extend(walk.children(rendered.tile, rendered.children));
        }
        sort_for_locality(&mut next);
        level = next;
    }
    Ok(())
}

/// Runs the sink on a thread of its own; returns it once the channel closes, so the caller decides
/// between finishing and aborting.
fn spawn_writer(
    mut sink: Box<dyn Sink>,
    mut receiver: mpsc::Receiver<(TileCoord, Vec<u8>)>,
) -> tokio::task::JoinHandle<Result<Box<dyn Sink>>> {
    tokio::task::spawn_blocking(move || {
        while let Some((tile, data)) = receiver.blocking_recv() {
            if let Err(err) = sink.write_tile(tile, &data) {
                sink.abort();
                return Err(err);
            }
        }
        Ok(sink)
    })
}

fn metadata(tileset: &TilesetJob, layers: &[LayerSource]) -> TilesetMetadata {
    TilesetMetadata {
        name: tileset.tileset.name.clone(),
        description: tileset.tileset.description.clone(),
        attribution: tileset.tileset.attribution.clone(),
        bounds: tileset.bbox,
        zooms: tileset.zooms,
        vector_layers: layers
            .iter()
            .map(|layer| {
                let range = layer.config.zooms.unwrap_or(tileset.zooms);
                VectorLayer {
                    id: layer.config.name.clone(),
                    fields: layer.fields(),
                    minzoom: range.min.max(tileset.zooms.min),
                    maxzoom: range.max.min(tileset.zooms.max),
                }
            })
            .collect(),
    }
}
