//! The `seed` command: the pipeline's wiring.
//!
//! 1. Connect a bounded pool.
//! 2. Describe every layer's source and prepare its statements.
//! 3. Per tileset, open the sink on a writer thread.
//! 4. Walk the pyramid level by level, rendering on the pool and feeding encoded tiles through a
//!    bounded channel.
//! 5. Finish the sink with metadata, or abort it, leaving nothing half-written.
//! 6. Summarize.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Instant;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use md5::Digest;
use tokio::sync::mpsc;

use crate::cells::{self, CellTable};
use crate::changes::{self, Watermark};
use crate::config::LayerConfig;
use crate::encode::gzip_chunks;
use crate::error::{Error, Result};
use crate::job::{SeedJob, Selection, TilesetJob};
use crate::plan;
use crate::plan::{locality_key, PyramidWalk};
use crate::render::source::{describe, LayerSource};
use crate::render::{pool, Connections, Mode, Rendered, TilesetRenderer};
use crate::report::{human_bytes, Progress, ProgressKind, SummaryHeader, Tally, TilesetSummary};
use crate::sink::{self, lock, tile_key, ChangeLog, Sink, TilesetMetadata, VectorLayer};
use crate::tile::{BBox, TileCoord, ZoomRange};
use deadpool_postgres::Pool;

/// Encoded tiles waiting for the writer; small, so memory stays flat whatever the job's size.
const WRITE_QUEUE: usize = 256;

/// Runs a seed job and returns one summary per tileset.
pub async fn run(job: &SeedJob, progress: ProgressKind) -> Result<Vec<TilesetSummary>> {
    // Headroom beyond the working connections, for replacing broken ones and for start-up checks.
    let pool = pool::connect(&job.database, job.concurrency * 2).await?;
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
        let extent = tileset.tileset.extent;
        // A dry run only probes rows, and creates nothing.
        let cell_tables = if job.dry_run {
            vec![None; layers.len()]
        } else {
            cells::ensure(
                &pool,
                &job.change_schema,
                &tileset.tileset.name,
                &layers,
                extent,
            )
            .await?
        };
        let cell_names: Vec<Option<String>> = cell_tables
            .iter()
            .map(|t| t.as_ref().map(|t| t.qualified.clone()))
            .collect();
        let renderer = TilesetRenderer::new(
            pool.clone(),
            &tileset.tileset.name,
            &layers,
            &cell_names,
            tileset.zooms,
            (extent, tileset.tileset.buffer),
        );
        renderer.check().await?;
        prepared.push((tileset, layers, cell_tables, renderer));
    }
    let connections = Connections::open(&pool, job.concurrency, job.database.max_attempts).await?;
    let stop = Stop::on_signals();
    let change_list = match (&job.changed_list, job.dry_run) {
        (Some(path), false) => ChangeLog::create(path)?,
        _ => ChangeLog::disabled(),
    };
    let mut summaries = Vec::new();
    for (tileset, layers, cell_tables, renderer) in prepared {
        let context = TilesetContext {
            job,
            tileset,
            layers: &layers,
            cell_tables: &cell_tables,
            renderer: &renderer,
            pool: &pool,
            connections: &connections,
            stop: &stop,
        };
        summaries.push(context.seed(progress, change_list.clone()).await?);
    }
    change_list.close()?;
    Ok(summaries)
}

/// What one tileset's seed works with.
struct TilesetContext<'a> {
    job: &'a SeedJob,
    tileset: &'a TilesetJob,
    layers: &'a [LayerSource],
    /// Per layer, the maintained cluster cells its clustered zooms read, if any.
    cell_tables: &'a [Option<CellTable>],
    renderer: &'a TilesetRenderer,
    pool: &'a Pool,
    connections: &'a Connections,
    stop: &'a Stop,
}

/// The tiles a run renders.
enum Work {
    /// The pruned pyramid walk; afterwards tiles it did not produce are swept.
    Pyramid,
    /// Exactly these tiles: written when they hold something, deleted when they do not.
    Tiles(Vec<TileCoord>),
}

/// Turns SIGINT and SIGTERM into a request to stop, which every render loop watches.
struct Stop(tokio::sync::watch::Receiver<Option<&'static str>>);

impl Stop {
    fn on_signals() -> Stop {
        use tokio::signal::unix::{signal, SignalKind};
        let (sender, receiver) = tokio::sync::watch::channel(None);
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        if let (Ok(mut interrupt), Ok(mut terminate)) = (interrupt, terminate) {
            tokio::spawn(async move {
                let name = tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = terminate.recv() => "SIGTERM",
                };
                tracing::warn!("{name} received: stopping; the output keeps its previous state");
                let _ = sender.send(Some(name));
                // A second signal means now.
                tokio::select! {
                    _ = interrupt.recv() => std::process::exit(130),
                    _ = terminate.recv() => std::process::exit(143),
                }
            });
        }
        Stop(receiver)
    }

    /// Resolves with the signal's name once one arrived.
    async fn stopped(&self) -> &'static str {
        let mut receiver = self.0.clone();
        let signal = match receiver.wait_for(Option::is_some).await {
            Ok(value) => *value,
            Err(_) => None,
        };
        match signal {
            Some(name) => name,
            None => std::future::pending().await,
        }
    }
}

/// What the writer thread is asked to do.
enum WriterCommand {
    /// Store a tile; with the children it found, when a walk journals its progress.
    Write(TileCoord, Vec<u8>, Option<[bool; 4]>),
    Delete(TileCoord),
    /// A walked tile held nothing; journal it with the children it found.
    Visited(TileCoord, [bool; 4]),
}

impl TilesetContext<'_> {
    async fn seed(
        &self,
        progress_kind: ProgressKind,
        change_list: ChangeLog,
    ) -> Result<TilesetSummary> {
        let started = Instant::now();
        let name = &self.tileset.tileset.name;
        let Some(target) = self.tileset.output.as_ref().filter(|_| !self.job.dry_run) else {
            return self.dry_run(progress_kind, started).await;
        };
        tracing::info!(
            "{} tileset `{name}` zoom {} bbox {} -> {}",
            match self.job.selection {
                Selection::Pyramid => "seeding",
                Selection::Dirty => "reseeding what changed in",
                Selection::List(_) => "rendering listed tiles of",
            },
            self.tileset.zooms,
            self.tileset.bbox,
            target.describe()
        );
        let settings = &self.tileset.tileset.output_settings;
        let _lock =
            lock::acquire(target, self.job.s3.endpoint.as_deref(), self.job.wait_lock).await?;
        // A full seed journals its walk, so an interrupted run can be picked up where it stopped.
        let fingerprint = (self.job.selection == Selection::Pyramid).then(|| self.fingerprint());
        let mut sink = sink::open(
            target,
            settings,
            &self.job.s3,
            change_list,
            fingerprint.as_deref(),
        )
        .await?;
        // The cells are brought up to date after the watermark is taken, so they hold at least
        // every change the output will claim to reflect.
        let planned = async {
            let plan = self.plan(sink.state()).await?;
            cells::refresh(
                self.pool,
                &self.job.change_schema,
                self.layers,
                self.cell_tables,
                self.tileset.tileset.extent,
            )
            .await?;
            Ok::<_, Error>(plan)
        }
        .await;
        let (work, mut next_watermark, changes_read) = match planned {
            Ok(plan) => plan,
            Err(err) => {
                let _ = tokio::task::spawn_blocking(move || sink.abort()).await;
                return Err(err);
            }
        };
        let planned = match &work {
            Work::Pyramid => None,
            Work::Tiles(tiles) => Some(tiles.len()),
        };
        let state = next_watermark.as_ref().map(Watermark::to_state);
        // Preparing may copy a file or list a bucket: off the async threads.
        let journal_state = state.clone();
        let (sink, started_journal) = tokio::task::spawn_blocking(move || {
            let started = sink
                .prepare(planned)
                .and_then(|()| sink.begin_journal(journal_state.as_deref()));
            (sink, started)
        })
        .await
        .map_err(|e| Error::output(name, format!("preparing the output failed: {e}")))?;
        let resume = match started_journal {
            Ok(resume) => resume.unwrap_or_default(),
            Err(err) => {
                let _ = tokio::task::spawn_blocking(move || sink.abort()).await;
                return Err(err);
            }
        };
        if !resume.done.is_empty() {
            tracing::info!(
                "resuming: {} tile(s) were finished by an interrupted run of this job",
                resume.done.len()
            );
            // The output must not claim more than the oldest tiles in it reflect.
            if let Some(earlier) = resume.watermark.as_deref().and_then(Watermark::from_state) {
                next_watermark = Some(earlier);
            }
        }
        let pyramid = matches!(work, Work::Pyramid);
        let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
        let writer = spawn_writer(sink, receiver);

        let mut tally = Tally::default();
        let mut progress = Progress::start(progress_kind, name);
        let gzipped = target.stores_gzip(settings);
        let rendered = match work {
            Work::Pyramid => self
                .walk(
                    Some(sender),
                    gzipped,
                    resume.done,
                    &mut tally,
                    &mut progress,
                )
                .await
                .map(|()| true),
            Work::Tiles(tiles) => {
                self.render_tiles(tiles, sender, gzipped, &mut tally, &mut progress)
                    .await
            }
        };
        progress.finish();
        tracing::debug!("tileset `{name}`: rendering done");

        let sink = writer
            .await
            .map_err(|e| Error::output(name, format!("the writer stopped: {e}")))?;
        let complete = match (rendered, sink) {
            (Ok(finished), Ok(sink)) => {
                // Tiles that failed (--keep-going) leave their subtrees unknown: nothing is swept,
                // and the watermark stays so the next reseed covers them too.
                let complete = finished && tally.failed().is_empty();
                let sweep = pyramid && complete;
                // Only a complete run moves the watermark; an interrupted one leaves it for the next.
                let state = next_watermark
                    .as_ref()
                    .filter(|_| complete)
                    .map(Watermark::to_state);
                // Sinks block (SQLite, S3 round trips), so they finish off the async threads.
                let metadata = metadata(self.tileset, self.layers);
                let stored = tokio::task::spawn_blocking(move || {
                    sink.finish(&metadata, sweep, state.as_deref())
                })
                .await
                .map_err(|e| Error::output(name, format!("finishing the output failed: {e}")))??;
                tally.set_stored(stored);
                tracing::debug!("tileset `{name}`: output finished");
                complete
            }
            (Err(err), Ok(sink)) => {
                let _ = tokio::task::spawn_blocking(move || sink.abort()).await;
                return Err(err);
            }
            // The writer's own error explains why rendering could not hand it more tiles.
            (_, Err(err)) => return Err(err),
        };
        if let (true, Some(next)) = (complete, &next_watermark) {
            let pruned = changes::advance_and_prune(
                self.pool,
                &self.job.change_schema,
                &target.describe(),
                next,
            )
            .await?;
            if pruned > 0 {
                tracing::info!("pruned {pruned} applied change(s) from the change log");
            }
        }
        if !complete {
            tracing::warn!(
                "tileset `{name}`: stopped after --max-duration; the rest is left for the next run"
            );
        }
        let header = SummaryHeader {
            tileset: name.clone(),
            output: target.describe(),
            zooms: self.tileset.zooms.to_string(),
            dry_run: false,
            complete,
            changes_read,
        };
        Ok(tally.summarize(header, started.elapsed()))
    }

    /// Identifies the job, so a journal is only resumed by a run that would render the same tiles.
    fn fingerprint(&self) -> String {
        let tileset = &self.tileset.tileset;
        let text = format!(
            "{:?}",
            (
                &tileset.name,
                self.tileset.zooms,
                self.tileset.bbox,
                self.content_settings()
            )
        );
        hex::encode(md5::Md5::digest(text.as_bytes()))
    }

    /// A digest of the settings that decide what the tiles hold, whatever zooms and area a run
    /// covers.
    fn content_settings(&self) -> String {
        let layers: Vec<&LayerConfig> = self.layers.iter().map(|l| &l.config).collect();
        let tileset = &self.tileset.tileset;
        let text = format!("{:?}", (tileset.extent, tileset.buffer, layers));
        hex::encode(md5::Md5::digest(text.as_bytes()))
    }

    /// Decides what to render, and the watermark the output will hold once it is done.
    async fn plan(&self, state: Option<String>) -> Result<(Work, Option<Watermark>, Option<u64>)> {
        let settings = self.content_settings();
        let previous = state.as_deref().and_then(Watermark::from_state);
        let (work, watermark, changes_read) = self.plan_work(previous.as_ref(), &settings).await?;
        let watermark = watermark.map(|w| {
            let next = Watermark {
                settings: Some(settings),
                zooms: Some(self.tileset.zooms.to_string()),
                bbox: Some(self.tileset.bbox.to_string()),
                ..w
            };
            match previous {
                Some(previous) if !self.covers(&previous) => {
                    tracing::info!(
                        "tileset `{}`: zooms {} and bbox {} are part of what the output's \
                         watermark covers; it stays, so the next run over all of it renders these \
                         changes again",
                        self.tileset.tileset.name,
                        self.tileset.zooms,
                        self.tileset.bbox
                    );
                    previous
                }
                _ => next,
            }
        });
        Ok((work, watermark, changes_read))
    }

    /// Whether this run renders every zoom and all the area whose tiles the watermark speaks for.
    fn covers(&self, watermark: &Watermark) -> bool {
        let configured = &self.tileset.tileset;
        let zooms = watermark
            .zooms
            .as_deref()
            .and_then(|z| z.parse::<ZoomRange>().ok())
            .unwrap_or(configured.zooms);
        let bbox = watermark
            .bbox
            .as_deref()
            .and_then(|b| b.parse::<BBox>().ok())
            .unwrap_or(configured.bbox);
        let (run_zooms, run_bbox) = (self.tileset.zooms, self.tileset.bbox);
        run_zooms.min <= zooms.min
            && run_zooms.max >= zooms.max
            && run_bbox.west <= bbox.west
            && run_bbox.south <= bbox.south
            && run_bbox.east >= bbox.east
            && run_bbox.north >= bbox.north
    }

    async fn plan_work(
        &self,
        previous: Option<&Watermark>,
        settings: &str,
    ) -> Result<(Work, Option<Watermark>, Option<u64>)> {
        let name = &self.tileset.tileset.name;
        match &self.job.selection {
            Selection::Pyramid => {
                // Every tile query starts after this snapshot, so the output reflects at least
                // every change it saw.
                let watermark = changes::current_watermark(self.pool).await?;
                Ok((Work::Pyramid, Some(watermark), None))
            }
            Selection::List(tiles) => {
                let tiles = tiles
                    .iter()
                    .copied()
                    .filter(|t| self.tileset.zooms.contains(t.z()))
                    .collect();
                Ok((Work::Tiles(tiles), None, None))
            }
            Selection::Dirty => {
                let since = previous.ok_or_else(|| {
                    Error::Usage(format!(
                        "tileset `{name}`: the output records no watermark; run a full seed first"
                    ))
                })?;
                let configs: Vec<LayerConfig> =
                    self.layers.iter().map(|l| l.config.clone()).collect();
                let (changes, next) =
                    changes::read_since(self.pool, &self.job.change_schema, &configs, since)
                        .await?;
                tracing::info!(
                    "tileset `{name}`: {} changed geometries since the last seed",
                    changes.rows
                );
                if changes.everything {
                    tracing::info!(
                        "tileset `{name}`: a source was truncated; reseeding everything"
                    );
                    return Ok((Work::Pyramid, Some(next), Some(changes.rows)));
                }
                if since.settings.as_deref() != Some(settings) {
                    tracing::info!(
                        "tileset `{name}`: the layers, extent or buffer differ from those of the \
                         output's last seed; reseeding everything"
                    );
                    return Ok((Work::Pyramid, Some(next), Some(changes.rows)));
                }
                let boxes: Vec<(&LayerConfig, &[[f64; 4]])> = configs
                    .iter()
                    .filter_map(|c| changes.boxes.get(&c.name).map(|b| (c, b.as_slice())))
                    .collect();
                let tileset = &self.tileset.tileset;
                let dirty = plan::dirty_tiles(
                    &boxes,
                    self.tileset.bbox,
                    self.tileset.zooms,
                    tileset.extent,
                    tileset.buffer,
                    DIRTY_LIMIT,
                );
                match dirty {
                    Some(tiles) => Ok((Work::Tiles(tiles), Some(next), Some(changes.rows))),
                    None => {
                        tracing::info!("tileset `{name}`: over {DIRTY_LIMIT} dirty tiles; reseeding everything");
                        Ok((Work::Pyramid, Some(next), Some(changes.rows)))
                    }
                }
            }
        }
    }

    async fn dry_run(
        &self,
        progress_kind: ProgressKind,
        started: Instant,
    ) -> Result<TilesetSummary> {
        let name = &self.tileset.tileset.name;
        tracing::info!(
            "counting the tiles of `{name}` zoom {} (dry run)",
            self.tileset.zooms
        );
        let mut tally = Tally::default();
        let mut progress = Progress::start(progress_kind, name);
        let walked = self
            .walk(None, false, HashMap::new(), &mut tally, &mut progress)
            .await;
        progress.finish();
        walked?;
        let header = SummaryHeader {
            tileset: name.clone(),
            output: "-".into(),
            zooms: self.tileset.zooms.to_string(),
            dry_run: true,
            complete: true,
            changes_read: None,
        };
        Ok(tally.summarize(header, started.elapsed()))
    }

    /// Walks the pyramid, lowest zoom first, sending non-empty tiles to the writer. A tile's
    /// children are queued as soon as it is done, so no zoom level waits for the slowest tile of the
    /// one above.
    async fn walk(
        &self,
        sender: Option<mpsc::Sender<WriterCommand>>,
        gzipped: bool,
        mut done: HashMap<u64, [bool; 4]>,
        tally: &mut Tally,
        progress: &mut Progress,
    ) -> Result<()> {
        let walk = PyramidWalk::new(self.tileset.bbox, self.tileset.zooms);
        let mut queue: BinaryHeap<Reverse<(u8, u64, TileCoord)>> = walk
            .roots()
            .into_iter()
            .map(|t| Reverse((t.z(), locality_key(t), t)))
            .collect();
        progress.discovered(queue.len());
        let mut in_flight = FuturesUnordered::new();
        let capacity = self.job.concurrency * PIPELINE_DEPTH;
        let writes = sender.is_some();
        // Heavy tiles go alone, one per connection, not pipelined: the top zooms' tiles, and where
        // the layers hold more unclustered features than HUGE_TOP_ROWS, the children of tiles that
        // came out over BIG_TILE_BYTES. With such layers heavy tiles go one at a time, so memory
        // holds one tile of tens of megabytes rather than one per connection.
        let top_rows: f64 = self
            .layers
            .iter()
            .filter(|layer| layer.config.cluster_at(0).is_none())
            .map(|layer| layer.estimated_rows)
            .sum();
        let huge = top_rows > HUGE_TOP_ROWS;
        let heavy_parallel = if huge { 1 } else { self.job.concurrency };
        let mut heavy_in_flight = 0;
        let mut big_parents: HashSet<u64> = HashSet::new();
        let is_heavy = |tile: TileCoord, big_parents: &HashSet<u64>| {
            tile.z() <= walk.eager_depth()
                || tile
                    .parent()
                    .is_some_and(|parent| big_parents.contains(&tile_key(parent)))
        };
        loop {
            while in_flight.len() < capacity {
                let heavy = matches!(queue.peek(), Some(Reverse((_, _, tile))) if is_heavy(*tile, &big_parents));
                if heavy && heavy_in_flight >= heavy_parallel {
                    break;
                }
                let limit = if heavy {
                    1
                } else {
                    batch_limit(queue.len(), capacity)
                };
                let mut batch: Vec<TileCoord> = Vec::new();
                while batch.len() < limit {
                    let same_zoom = match (queue.peek(), batch.first()) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(Reverse((z, _, tile))), Some(first)) => {
                            *z == first.z() && !is_heavy(*tile, &big_parents)
                        }
                    };
                    if !same_zoom {
                        break;
                    }
                    let Some(Reverse((_, _, tile))) = queue.pop() else {
                        break;
                    };
                    if let Some(children) = done.remove(&tile_key(tile)) {
                        // Finished by an interrupted run: its children are known without rendering it.
                        for child in walk.children(tile, children) {
                            queue.push(Reverse((child.z(), locality_key(child), child)));
                        }
                        continue;
                    }
                    batch.push(tile);
                }
                let Some(first) = batch.first() else {
                    if queue.is_empty() {
                        break;
                    }
                    continue;
                };
                let mode = if self.job.dry_run {
                    Mode::Probe
                } else {
                    walk.mode(first.z())
                };
                heavy_in_flight += usize::from(heavy);
                in_flight.push(async move {
                    (
                        mode,
                        heavy,
                        self.render_encoded(&batch, mode, writes && gzipped, writes)
                            .await,
                    )
                });
            }
            let next = tokio::select! {
                biased;
                signal = self.stop.stopped() => return Err(Error::Stopped { signal }),
                next = in_flight.next() => next,
            };
            let Some((mode, heavy, results)) = next else {
                break;
            };
            heavy_in_flight -= usize::from(heavy);
            for result in results {
                let Some((rendered, data)) = self.keep_going(result, tally)? else {
                    continue;
                };
                if huge && data.as_ref().is_some_and(|d| d.len() > BIG_TILE_BYTES) {
                    big_parents.insert(tile_key(rendered.tile));
                }
                let stored = match (&sender, data) {
                    (Some(sender), Some(data)) => Some(
                        self.store(sender, rendered.tile, data, tally, Some(rendered.children))
                            .await?,
                    ),
                    (Some(sender), None) => {
                        sender
                            .send(WriterCommand::Visited(rendered.tile, rendered.children))
                            .await
                            .map_err(|_| {
                                Error::output(&self.tileset.tileset.name, "the writer stopped")
                            })?;
                        None
                    }
                    (None, _) => None,
                };
                tally.record(rendered.tile, mode, rendered.elapsed, stored);
                progress.tile_done(rendered.tile.z(), tally);
                for child in walk.children(rendered.tile, rendered.children) {
                    queue.push(Reverse((child.z(), locality_key(child), child)));
                    progress.discovered(1);
                }
            }
        }
        Ok(())
    }

    /// Renders a batch of tiles and encodes those that hold something and are to be written; a
    /// batch with large tiles is compressed on the blocking pool so the other renders keep flowing.
    async fn render_encoded(
        &self,
        tiles: &[TileCoord],
        mode: Mode,
        gzipped: bool,
        writes: bool,
    ) -> Vec<Result<(Rendered, Option<Vec<u8>>)>> {
        let results = self
            .renderer
            .render_batch(tiles, mode, self.connections)
            .await;
        if !writes {
            return results.into_iter().map(|r| r.map(|r| (r, None))).collect();
        }
        let level = self.tileset.tileset.output_settings.compression_level;
        let encode =
            move |results: Vec<Result<Rendered>>| -> Vec<Result<(Rendered, Option<Vec<u8>>)>> {
                results
                    .into_iter()
                    .map(|result| {
                        result.map(|mut rendered| {
                            if rendered.mvt.is_empty() {
                                return (rendered, None);
                            }
                            let mvt = rendered.mvt.take();
                            let data = if gzipped {
                                gzip_chunks(mvt.chunks(), level)
                            } else {
                                mvt.to_vec()
                            };
                            (rendered, Some(data))
                        })
                    })
                    .collect()
            };
        let bytes: usize = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| r.mvt.len())
            .sum();
        if !gzipped || bytes < OFFLOAD_GZIP_BYTES {
            return encode(results);
        }
        let first = tiles[0];
        match tokio::task::spawn_blocking(move || encode(results)).await {
            Ok(encoded) => encoded,
            Err(e) => vec![Err(Error::output(
                &self.tileset.tileset.name,
                format!("compressing tiles from {first}: {e}"),
            ))],
        }
    }

    /// Renders a list of tiles; returns false when `--max-duration` ran out before the end.
    async fn render_tiles(
        &self,
        tiles: Vec<TileCoord>,
        sender: mpsc::Sender<WriterCommand>,
        gzipped: bool,
        tally: &mut Tally,
        progress: &mut Progress,
    ) -> Result<bool> {
        let deadline = self.job.max_duration.map(|d| Instant::now() + d);
        progress.discovered(tiles.len());
        let capacity = self.job.concurrency * PIPELINE_DEPTH;
        let batches = list_batches(&tiles, capacity);
        let mut results = futures::stream::iter(batches)
            .map(|batch| self.render_encoded(batch, Mode::Render, gzipped, true))
            .buffer_unordered(capacity);
        loop {
            let next = tokio::select! {
                biased;
                signal = self.stop.stopped() => return Err(Error::Stopped { signal }),
                next = results.next() => next,
            };
            let Some(batch) = next else { break };
            for result in batch {
                let Some((rendered, data)) = self.keep_going(result, tally)? else {
                    continue;
                };
                let stored = match data {
                    None => {
                        sender
                            .send(WriterCommand::Delete(rendered.tile))
                            .await
                            .map_err(|_| {
                                Error::output(&self.tileset.tileset.name, "the writer stopped")
                            })?;
                        None
                    }
                    Some(data) => Some(
                        self.store(&sender, rendered.tile, data, tally, None)
                            .await?,
                    ),
                };
                tally.record(rendered.tile, Mode::Render, rendered.elapsed, stored);
                progress.tile_done(rendered.tile.z(), tally);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// With `--keep-going`, a tile that failed after its retries is noted and skipped (`None`);
    /// otherwise its error ends the run.
    fn keep_going<T>(&self, result: Result<T>, tally: &mut Tally) -> Result<Option<T>> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(Error::Render { tile, message, .. }) if self.job.keep_going.is_some() => {
                tracing::error!("tile {tile} failed: {message}");
                tally.failed_tile(tile, message);
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Checks an encoded tile against the size budget and hands it to the writer.
    async fn store(
        &self,
        sender: &mpsc::Sender<WriterCommand>,
        tile: TileCoord,
        data: Vec<u8>,
        tally: &mut Tally,
        children: Option<[bool; 4]>,
    ) -> Result<usize> {
        let budget = self.tileset.tileset.size_budget;
        if data.len() as u64 > budget {
            if self.job.strict_size {
                return Err(Error::Render {
                    tileset: self.tileset.tileset.name.clone(),
                    tile,
                    message: format!(
                        "{} stored, over the size budget of {} (--strict-size)",
                        human_bytes(data.len() as u64),
                        human_bytes(budget)
                    ),
                });
            }
            tally.over_budget(tile, data.len());
        }
        let size = data.len();
        sender
            .send(WriterCommand::Write(tile, data, children))
            .await
            .map_err(|_| Error::output(&self.tileset.tileset.name, "the writer stopped"))?;
        Ok(size)
    }
}

/// Tiles at least this large are compressed off the task that drives the renders.
const OFFLOAD_GZIP_BYTES: usize = 64 * 1024;

/// Unclustered features (the tables' row estimates) above which the top zooms' tiles render one
/// at a time: at 1,000,000 facilities the z0 tile alone is 90 MB before compression, and two of
/// that size at once took the peak RSS from 294 to 446 MB.
const HUGE_TOP_ROWS: f64 = 300_000.0;

/// Stored bytes above which a tile's children count as heavy where the layers are huge (see
/// [`HUGE_TOP_ROWS`]).
const BIG_TILE_BYTES: usize = 4 << 20;

/// Most tiles one statement renders. Batches spread a statement's fixed cost over many small tiles;
/// beyond a few dozen the gain is gone and a failed batch costs more to retry tile by tile.
const MAX_BATCH: usize = 48;

/// How many of `queued` tiles one statement takes: all statements in flight get a share, so no
/// connection idles while another works through a long batch (a z0 tile goes alone).
fn batch_limit(queued: usize, in_flight: usize) -> usize {
    (queued / in_flight.max(1)).clamp(1, MAX_BATCH)
}

/// Splits a tile list into batches of one zoom each, sized as [`batch_limit`] says.
fn list_batches(tiles: &[TileCoord], in_flight: usize) -> Vec<&[TileCoord]> {
    let mut batches = Vec::new();
    let mut rest = tiles;
    while let Some(first) = rest.first() {
        let same_zoom = rest.iter().take_while(|t| t.z() == first.z()).count();
        let size = same_zoom.min(batch_limit(rest.len(), in_flight));
        let (batch, tail) = rest.split_at(size);
        batches.push(batch);
        rest = tail;
    }
    batches
}

/// Statements in flight per connection: enough to hide the round trip, few enough that one slow
/// tile holds up little behind it.
const PIPELINE_DEPTH: usize = 4;

/// More dirty tiles than this and a reseed walks the whole pyramid instead of listing them.
const DIRTY_LIMIT: usize = 2_000_000;

/// Runs the sink on a thread of its own; returns it once the channel closes, so the caller decides
/// between finishing and aborting.
fn spawn_writer(
    mut sink: Box<dyn Sink>,
    mut receiver: mpsc::Receiver<WriterCommand>,
) -> tokio::task::JoinHandle<Result<Box<dyn Sink>>> {
    tokio::task::spawn_blocking(move || {
        while let Some(command) = receiver.blocking_recv() {
            let done = match command {
                WriterCommand::Write(tile, data, children) => sink
                    .write_tile(tile, &data)
                    .and_then(|()| children.map_or(Ok(()), |c| sink.journal(tile, c, true))),
                WriterCommand::Delete(tile) => sink.delete_tile(tile),
                WriterCommand::Visited(tile, children) => sink.journal(tile, children, false),
            };
            if let Err(err) = done {
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
