//! Partitioned tilesets (`partition_by`): one pyramid per value of a column, each a tileset of its
//! own whose layers render only the rows holding that value, plus the index that lists them.
//!
//! Before a run, the values are read from the rows and compared with the index the last run left:
//! a value seen before is seeded as the job asks (a `--dirty` run reads only the changes that
//! touched its rows), a new value is seeded in full, and a value that vanished is seeded in full
//! once more, which empties its output, and is then removed. After the run the index is written.
//! Everything else is an ordinary `seed` of the expanded job.
//!
//! A `--dirty` run (and every `watch` cycle) of a tileset whose index records a watermark reads
//! the change log once, since that watermark, for the values its changes touched, and expands only
//! those: its work grows with the values a change touches, not with the values there are. The
//! tileset, not each partition, is the change log's consumer, so thousands of partitions do not
//! hold back its pruning; a partition's own watermark (in its output) still decides its tiles.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::Pool;

use crate::config::OutputTarget;
use crate::config::{CdnConfig, TilesetConfig};
use crate::coordination::lock::{self, OutputLock};
use crate::coordination::partitions::{read_index, PartitionIndex};
use crate::db;
use crate::delivery;
use crate::edge::Holds;
use crate::error::{Error, Result};
use crate::job::{SeedJob, TilesetJob};
use crate::render::count::drawable_rows_query;
use crate::render::row_set;
use crate::render::source::{
    describe, partition_column, partition_values, LayerSource, PartitionColumn,
};
use crate::report::{seconds_text, TilesetSummary};
use crate::sink::{self, OutputReader};
use crate::state::Watermark;
use crate::tile::{BBox, ZoomRange};

mod index;
mod job;
mod scope;
mod stopped;

use job::{partition_job, partition_name, row_sets_allowed};
use scope::Scope;
use stopped::RunRecord;

/// A seed job with each partitioned tileset expanded into one tileset per value, and what to do
/// once the expanded job has run.
pub struct Expansion {
    /// The job to run; `None`: the job had no partitioned tileset and runs as it is.
    expanded: Option<(SeedJob, Pool)>,
    plans: Vec<Plan>,
    /// Each partitioned tileset's own lock, held from its expansion until its index is written.
    _locks: Vec<OutputLock>,
}

/// Whether an expansion locks each partitioned tileset (`seed`), or runs under the locks its
/// caller holds for longer (`watch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilesetLocks {
    /// Lock each partitioned tileset until its index is written.
    Take,
    /// The caller holds them.
    Held,
}

/// Expands each partitioned tileset of `job` into one tileset per value (step 0 of a seed).
pub async fn expand(job: &SeedJob, locks: TilesetLocks) -> Result<Expansion> {
    if !job
        .tilesets
        .iter()
        .any(|t| t.tileset.partition_by.is_some())
    {
        return Ok(Expansion {
            expanded: None,
            plans: Vec::new(),
            _locks: Vec::new(),
        });
    }
    let pool = db::connect(&job.database, 2).await?;
    let mut expanded = job.clone();
    expanded.tilesets.clear();
    let mut plans = Vec::new();
    let mut held = Vec::new();
    for tileset in &job.tilesets {
        match &tileset.tileset.partition_by {
            None => expanded.tilesets.push(tileset.clone()),
            Some(column) => {
                // Two runs of one partitioned tileset would each read its index and write their
                // own: the tileset is locked as a whole, its partitions each as they run.
                if let (TilesetLocks::Take, Some(target), false) =
                    (locks, &tileset.output, job.run.dry_run)
                {
                    held.push(
                        // Before any signal handler: SIGTERM and SIGINT end a wait here at once.
                        lock::acquire(
                            &sink::lock_place(target, &job.store_settings),
                            job.run.wait_lock,
                            None,
                            std::future::pending(),
                        )
                        .await?,
                    );
                }
                let plan = Plan::new(&pool, job, tileset, column).await?;
                expanded.tilesets.extend(plan.jobs.iter().cloned());
                plans.push(plan);
            }
        }
    }
    Ok(Expansion {
        expanded: Some((expanded, pool)),
        plans,
        _locks: held,
    })
}

impl Expansion {
    /// The job to run: the expanded one, or `job` itself when nothing was partitioned.
    pub fn job<'a>(&'a self, job: &'a SeedJob) -> &'a SeedJob {
        self.expanded.as_ref().map_or(job, |(expanded, _)| expanded)
    }

    /// Per partitioned tileset: its name, the partitions the run renders and the values its index
    /// lists, and when the changes its tileset-wide read found were committed.
    pub fn scope(&self) -> Vec<PartitionScope> {
        self.plans
            .iter()
            .map(|plan| PartitionScope {
                tileset: plan.name.clone(),
                rendered: plan.jobs.len(),
                total: plan.total_after(),
                committed: plan.committed.clone(),
                changes_read: plan.changes_read,
            })
            .collect()
    }

    /// Removes vanished partitions, writes each partitioned tileset's index and delivers what
    /// its partitions' purges left in its own outbox, once the expanded job ran and returned
    /// `summaries` (one per tileset run, per partition for partitioned ones). Returns a summary
    /// per partitioned tileset whose outbox had something: its purges and what still waits.
    pub async fn finish(
        &self,
        job: &SeedJob,
        summaries: &[TilesetSummary],
        holds: &Holds,
    ) -> Result<Vec<TilesetSummary>> {
        let mut delivered = Vec::new();
        if let Some((_, pool)) = &self.expanded {
            for plan in &self.plans {
                let indexed = plan.finish(pool, job, summaries).await;
                if let Some(record) = &plan.record {
                    record.close().await?;
                }
                // What waits is delivered even when the index found a fault.
                delivered.extend(plan.deliver_handed_over(job, holds).await?);
                indexed?;
            }
        }
        Ok(delivered)
    }
}

/// One line per partitioned tileset totalling its partitions' summaries.
pub fn totals(job: &SeedJob, summaries: &[TilesetSummary]) -> Vec<String> {
    job.tilesets
        .iter()
        .filter(|t| t.tileset.partition_by.is_some())
        .map(|t| {
            let name = &t.tileset.name;
            let parts: Vec<&TilesetSummary> = summaries
                .iter()
                .filter(|s| s.header.tileset.starts_with(&format!("{name}[")))
                .collect();
            let sum = |f: fn(&TilesetSummary) -> u64| parts.iter().map(|s| f(s)).sum::<u64>();
            format!(
                "tileset `{name}`: {} partition(s), {} tiles queried, {} written ({} bytes), {} deleted, {} s",
                parts.len(),
                sum(|s| s.tiles_queried),
                sum(|s| s.tiles_written),
                sum(|s| s.bytes_written),
                sum(|s| s.stored.deleted),
                seconds_text(parts.iter().map(|s| s.seconds).sum::<f64>(), 1),
            )
        })
        .collect()
}

/// What a run does with one partitioned tileset, for `watch`'s metrics and cycle line.
#[derive(Debug, Clone)]
pub struct PartitionScope {
    /// The partitioned tileset's name.
    pub tileset: String,
    /// Partitions rendered (touched, new or vanished values).
    pub rendered: usize,
    /// Values the index lists once the run is done.
    pub total: usize,
    /// When each change the tileset-wide read found was committed (seconds since the epoch);
    /// empty when no such read was made (a full seed, or the first reseed).
    pub committed: Vec<f64>,
    /// Log rows that read found.
    pub changes_read: Option<u64>,
}

/// What a value holds over all layers.
#[derive(Debug, Clone, Default)]
struct Holding {
    features: i64,
    bounds: Option<[f64; 4]>,
}

/// One partitioned tileset's expansion: the tileset run per value, and what the index will say.
struct Plan {
    name: String,
    column: String,
    target: Option<OutputTarget>,
    extension: String,
    cache_control: String,
    previous: Option<PartitionIndex>,
    /// Values the rows hold now (of those the run is limited to), with their figures.
    current: BTreeMap<String, Holding>,
    /// Values of the previous index the rows no longer hold, seeded empty and then removed.
    vanished: Vec<String>,
    jobs: Vec<TilesetJob>,
    /// The snapshot the index records once every partition of the run is complete; `None` when
    /// the run does not apply every change to every value (`--partition`, `--tiles-from`, a dry
    /// run), which leaves the previous one.
    next_watermark: Option<Watermark>,
    /// See [`PartitionScope::committed`].
    committed: Vec<f64>,
    /// See [`PartitionScope::changes_read`].
    changes_read: Option<u64>,
    /// Each layer's source, and whether it holds the column as an array.
    sources: Vec<(LayerSource, bool)>,
    /// The tileset's CDNs, which its own outbox is delivered to.
    cdn: Vec<CdnConfig>,
    zooms: ZoomRange,
    bbox: BBox,
    /// The run's record in the tileset's outbox, and what stopped runs left.
    record: Option<RunRecord>,
    /// Whether the tileset publishes changes feeds, which its vanished partitions take along.
    feed: bool,
}

impl Plan {
    async fn new(pool: &Pool, job: &SeedJob, tileset: &TilesetJob, column: &str) -> Result<Plan> {
        let config = &tileset.tileset;
        let target = tileset.output.clone().filter(|_| !job.run.dry_run);
        if let Some(target) = &target {
            sink::kind_of(target).prepare_partitions()?;
        }
        let previous = match &target {
            Some(target) => read_index(&target.partition_index(), &job.store_settings).await?,
            None => None,
        };
        let (mut scope, next_watermark) =
            Scope::decide(pool, job, tileset, column, &previous).await?;
        let mut record = match &target {
            Some(target) => Some(RunRecord::find(target, job, &previous).await?),
            None => None,
        };
        if let (Scope::Touched(touched), Some(record)) = (&mut scope, &record) {
            touched.values.extend(record.unfinished.iter().cloned());
        }
        let only = match &scope {
            Scope::Touched(touched) => Some(touched.values.iter().cloned().collect::<Vec<_>>()),
            Scope::Every | Scope::EveryNow(_) => None,
        };
        let (mut current, arrays, sources) =
            read_values(pool, config, column, only.as_deref()).await?;
        let wanted: BTreeSet<&String> = job.partitions.iter().collect();
        if !wanted.is_empty() {
            current.retain(|value, _| wanted.contains(value));
            for value in wanted.iter().filter(|v| !current.contains_key(**v)) {
                tracing::warn!(
                    "tileset `{}`: no rows hold {column} = {value:?}",
                    config.name
                );
            }
        }
        let known: BTreeSet<&str> = previous
            .iter()
            .flat_map(|index| index.partitions.iter().map(|p| p.value.as_str()))
            .collect();
        let vanished: Vec<String> = known
            .iter()
            .filter(|v| !current.contains_key(**v))
            .filter(|v| wanted.is_empty() || wanted.contains(&v.to_string()))
            .filter(|v| scope.covers(v))
            .map(|v| v.to_string())
            .collect();
        if let Some(record) = &mut record {
            let running: BTreeSet<&String> = current.keys().chain(&vanished).collect();
            record.write(&running).await?;
        }
        let row_sets = row_sets_allowed(pool, job).await?;
        let mut jobs = Vec::new();
        for value in current.keys().chain(&vanished) {
            let fresh = !known.contains(value.as_str()) || vanished.contains(value);
            let features = current.get(value).map_or(0, |holding| holding.features);
            let copied = row_sets && features <= row_set::MAX_ROWS;
            let job = partition_job(tileset, column, value, &arrays, fresh, copied)?;
            jobs.push((features, job));
        }
        // Largest first: partitions run side by side (`crate::seed`), and a large one started
        // last would run alone at the end.
        jobs.sort_by_key(|(features, _)| std::cmp::Reverse(*features));
        let jobs: Vec<TilesetJob> = jobs.into_iter().map(|(_, job)| job).collect();
        let (committed, changes_read) = match scope {
            Scope::Touched(touched) => (touched.committed, Some(touched.changes)),
            Scope::EveryNow(touched) => (touched.committed, Some(touched.changes)),
            Scope::Every => (Vec::new(), None),
        };
        tracing::info!(
            "tileset `{}`: {} partition(s) by {column} to render{}",
            config.name,
            current.len(),
            if vanished.is_empty() {
                String::new()
            } else {
                format!(", {} vanished", vanished.len())
            }
        );
        Ok(Plan {
            name: config.name.clone(),
            column: column.to_string(),
            target,
            extension: config.output_settings.tile_extension.clone(),
            cache_control: config.output_settings.cache_control.clone(),
            previous,
            current,
            vanished,
            jobs,
            next_watermark,
            committed,
            changes_read,
            sources,
            cdn: config.cdn.clone(),
            zooms: tileset.zooms,
            bbox: tileset.bbox,
            record,
            feed: config.feed.is_some(),
        })
    }

    /// Values the index lists once the run is done.
    fn total_after(&self) -> usize {
        let mut values: BTreeSet<&str> = self
            .previous
            .iter()
            .flat_map(|index| index.partitions.iter().map(|p| p.value.as_str()))
            .collect();
        for value in &self.vanished {
            values.remove(value.as_str());
        }
        values.extend(self.current.keys().map(String::as_str));
        values.len()
    }

    /// Purges what the tileset's partitions handed over to its own outbox.
    async fn deliver_handed_over(
        &self,
        job: &SeedJob,
        holds: &Holds,
    ) -> Result<Option<TilesetSummary>> {
        match &self.target {
            Some(target) => {
                delivery::deliver_handed_over(
                    &self.name, target, &self.cdn, self.bbox, self.zooms, job, holds,
                )
                .await
            }
            None => Ok(None),
        }
    }

    /// The first layer with rows holding `value` that the tileset's deepest zoom draws, and how
    /// many: a partition with such rows cannot have come out empty.
    async fn drawable_rows(&self, pool: &Pool, value: &str) -> Result<Option<(String, i64)>> {
        for (source, array) in &self.sources {
            let zooms = source.config.zooms.unwrap_or(self.zooms);
            if zooms.min > self.zooms.max || zooms.max < self.zooms.min {
                continue;
            }
            let deepest = zooms.max.min(self.zooms.max);
            let sql = drawable_rows_query(source, &self.column, *array, deepest, &self.bbox);
            let rows = db::query_with_text_forms(pool, &sql, value)
                .await
                .map_err(|err| Error::Source {
                    tileset: partition_name(&self.name, value),
                    layer: source.config.name.clone(),
                    message: format!("cannot count the partition's rows: {err}"),
                })?;
            if rows > 0 {
                return Ok(Some((source.config.name.clone(), rows)));
            }
        }
        Ok(None)
    }
}

/// Tiles a partition's output holds, read back from it.
async fn count_tiles(output: &OutputTarget, job: &SeedJob, extension: &str) -> Result<u64> {
    let reader =
        OutputReader::open(&output.describe(), output, &job.store_settings, extension).await?;
    Ok(reader.tile_sizes().await?.len() as u64)
}

fn union(a: Option<[f64; 4]>, b: Option<[f64; 4]>) -> Option<[f64; 4]> {
    match (a, b) {
        (Some(a), Some(b)) => Some([
            a[0].min(b[0]),
            a[1].min(b[1]),
            a[2].max(b[2]),
            a[3].max(b[3]),
        ]),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Per value the rows hold (of `only`, when given), its features and bounds over every layer of
/// `config`; and per layer how it holds `column` and its source. Warns, on a run over every
/// value, of a layer whose table has no index on the column.
async fn read_values(
    pool: &Pool,
    config: &TilesetConfig,
    column: &str,
    only: Option<&[String]>,
) -> Result<(
    BTreeMap<String, Holding>,
    Vec<PartitionColumn>,
    Vec<(LayerSource, bool)>,
)> {
    let mut current: BTreeMap<String, Holding> = BTreeMap::new();
    let mut arrays = Vec::new();
    let mut sources = Vec::new();
    for layer in &config.layers {
        let held = partition_column(pool, &config.name, layer, column).await?;
        // Said once per seed, not on every `watch` cycle.
        if !held.indexed && only.is_none() {
            let table = layer.qualified_table();
            tracing::warn!(
                "tileset `{}`, layer `{}`: no index on {table}.{column}; each partition's tiles \
                 filter every row they cover, which at thousands of values costs more than the \
                 tiles (CREATE INDEX ON {table} USING {} ({column}))",
                config.name,
                layer.name,
                if held.array { "gin" } else { "btree" }
            );
        }
        let source = describe(pool, &config.name, layer).await?;
        for found in partition_values(pool, &config.name, &source, column, &held, only).await? {
            let holding = current.entry(found.value).or_default();
            holding.features += found.features;
            holding.bounds = union(holding.bounds, found.bounds);
        }
        sources.push((source, held.array));
        arrays.push(held);
    }
    Ok((current, arrays, sources))
}
