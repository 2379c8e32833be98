//! Partitioned tilesets (`partition_by`): one pyramid per value of a column, each a tileset of its
//! own whose layers render only the rows holding that value, plus the index that lists them.
//!
//! Before a run, the values are read from the rows and compared with the index the last run left:
//! a value seen before is seeded as the job asks (a `--dirty` run reads only the changes that
//! touched its rows), a new value is seeded in full, and a value that vanished is seeded in full
//! once more, which empties its output, and is then removed. After the run the index is written.
//! Everything else is an ordinary `seed` of the expanded job.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::Pool;

use crate::config::{partition_segment, IndexLocation, OutputTarget, Partition};
use crate::db;
use crate::error::Result;
use crate::job::{SeedJob, TilesetJob};
use crate::render::source::{describe, partition_column, partition_values};
use crate::report::TilesetSummary;
use crate::sink::partitions::{
    read_index, remove_emptied, write_index, PartitionEntry, PartitionIndex,
};
use crate::sink::{self, OutputReader};
use crate::state::capture;

/// A seed job with each partitioned tileset expanded into one tileset per value, and what to do
/// once the expanded job has run.
pub struct Expansion {
    /// The job to run; `None`: the job had no partitioned tileset and runs as it is.
    expanded: Option<(SeedJob, Pool)>,
    plans: Vec<Plan>,
}

/// Expands each partitioned tileset of `job` into one tileset per value (step 0 of a seed).
pub async fn expand(job: &SeedJob) -> Result<Expansion> {
    if !job
        .tilesets
        .iter()
        .any(|t| t.tileset.partition_by.is_some())
    {
        return Ok(Expansion {
            expanded: None,
            plans: Vec::new(),
        });
    }
    let pool = db::connect(&job.database, 2).await?;
    let mut expanded = job.clone();
    expanded.tilesets.clear();
    let mut plans = Vec::new();
    for tileset in &job.tilesets {
        match &tileset.tileset.partition_by {
            None => expanded.tilesets.push(tileset.clone()),
            Some(column) => {
                let plan = Plan::new(&pool, job, tileset, column).await?;
                expanded.tilesets.extend(plan.jobs.iter().cloned());
                plans.push(plan);
            }
        }
    }
    Ok(Expansion {
        expanded: Some((expanded, pool)),
        plans,
    })
}

impl Expansion {
    /// The job to run: the expanded one, or `job` itself when nothing was partitioned.
    pub fn job<'a>(&'a self, job: &'a SeedJob) -> &'a SeedJob {
        self.expanded.as_ref().map_or(job, |(expanded, _)| expanded)
    }

    /// Removes vanished partitions and writes each partitioned tileset's index, once the
    /// expanded job ran and returned `summaries` (one per tileset run, per partition for
    /// partitioned ones).
    pub async fn finish(&self, job: &SeedJob, summaries: &[TilesetSummary]) -> Result<()> {
        if let Some((_, pool)) = &self.expanded {
            for plan in &self.plans {
                plan.finish(pool, job, summaries).await?;
            }
        }
        Ok(())
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
                "tileset `{name}`: {} partition(s), {} tiles queried, {} written ({} bytes), {} deleted, {:.1} s",
                parts.len(),
                sum(|s| s.tiles_queried),
                sum(|s| s.tiles_written),
                sum(|s| s.bytes_written),
                sum(|s| s.stored.deleted),
                parts.iter().map(|s| s.seconds).sum::<f64>(),
            )
        })
        .collect()
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
}

impl Plan {
    async fn new(pool: &Pool, job: &SeedJob, tileset: &TilesetJob, column: &str) -> Result<Plan> {
        let config = &tileset.tileset;
        let mut current: BTreeMap<String, Holding> = BTreeMap::new();
        let mut arrays = Vec::new();
        for layer in &config.layers {
            let array = partition_column(pool, &config.name, layer, column).await?;
            let source = describe(pool, &config.name, layer).await?;
            for found in partition_values(pool, &config.name, &source, column, array).await? {
                let holding = current.entry(found.value).or_default();
                holding.features += found.features;
                holding.bounds = union(holding.bounds, found.bounds);
            }
            arrays.push(array);
        }
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
        let target = tileset.output.clone().filter(|_| !job.run.dry_run);
        if let Some(target) = &target {
            sink::kind_of(target).prepare_partitions()?;
        }
        let previous = match &target {
            Some(target) => read_index(&target.partition_index(), &job.s3).await?,
            None => None,
        };
        let known: BTreeSet<&str> = previous
            .iter()
            .flat_map(|index| index.partitions.iter().map(|p| p.value.as_str()))
            .collect();
        let vanished: Vec<String> = known
            .iter()
            .filter(|v| !current.contains_key(**v))
            .filter(|v| wanted.is_empty() || wanted.contains(&v.to_string()))
            .map(|v| v.to_string())
            .collect();
        let mut jobs = Vec::new();
        for value in current.keys().chain(&vanished) {
            let fresh = !known.contains(value.as_str()) || vanished.contains(value);
            jobs.push(partition_job(tileset, column, value, &arrays, fresh)?);
        }
        tracing::info!(
            "tileset `{}`: {} partition(s) by {column}{}",
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
        })
    }

    /// Removes vanished partitions and writes the index, once their runs are complete.
    async fn finish(&self, pool: &Pool, job: &SeedJob, summaries: &[TilesetSummary]) -> Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let summary_of = |value: &str| {
            let name = partition_name(&self.name, value);
            summaries.iter().find(|s| s.header.tileset == name)
        };
        let previous: BTreeMap<&str, &PartitionEntry> = self
            .previous
            .iter()
            .flat_map(|index| index.partitions.iter().map(|p| (p.value.as_str(), p)))
            .collect();
        let mut entries: BTreeMap<String, PartitionEntry> = previous
            .iter()
            .map(|(value, entry)| (value.to_string(), (*entry).clone()))
            .collect();
        for value in &self.vanished {
            if !summary_of(value).is_some_and(|s| s.header.complete) {
                continue;
            }
            let output = target.for_partition(&partition_segment(value)?);
            remove_emptied(&output)?;
            capture::forget_consumer(pool, &job.change_schema, &output.describe()).await?;
            entries.remove(value);
            tracing::info!(
                "tileset `{}`: partition {value:?} holds no rows any more; removed {}",
                self.name,
                output.describe()
            );
        }
        for (value, holding) in &self.current {
            let path = partition_segment(value)?;
            let output = target.for_partition(&path);
            let untouched =
                summary_of(value).is_some_and(|s| s.stored.changed == 0 && s.stored.deleted == 0);
            let tiles = match previous.get(value.as_str()) {
                Some(entry) if untouched => entry.tiles,
                _ => count_tiles(&output, job, &self.extension).await?,
            };
            entries.insert(
                value.clone(),
                PartitionEntry {
                    value: value.clone(),
                    path,
                    features: holding.features,
                    bounds: holding.bounds,
                    tiles,
                },
            );
        }
        let index = PartitionIndex {
            tileset: self.name.clone(),
            partition_by: self.column.clone(),
            partitions: entries.into_values().collect(),
        };
        let location = target.partition_index();
        write_index(&location, &job.s3, &self.cache_control, &index).await?;
        tracing::info!(
            "tileset `{}`: index of {} partition(s) written to {}",
            self.name,
            index.partitions.len(),
            match &location {
                IndexLocation::File(path) => path.display().to_string(),
                IndexLocation::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
            }
        );
        Ok(())
    }
}

/// The name a partition's run goes by in logs, summaries and its metadata.
fn partition_name(tileset: &str, value: &str) -> String {
    format!("{tileset}[{value}]")
}

/// The tileset of one value: every layer limited to its rows, the output named after it.
fn partition_job(
    tileset: &TilesetJob,
    column: &str,
    value: &str,
    arrays: &[bool],
    full_seed: bool,
) -> Result<TilesetJob> {
    let segment = partition_segment(value)?;
    let mut job = tileset.clone();
    job.full_seed = full_seed;
    job.list_prefix = Some(segment.clone());
    job.output = tileset.output.as_ref().map(|t| t.for_partition(&segment));
    let config = &mut job.tileset;
    config.name = partition_name(&config.name, value);
    config.partition_by = None;
    // A tree's TileJSON names the tiles under the value's own prefix.
    if let Some(url) = &mut config.output_settings.tiles_url {
        *url = url.replacen("{z}", &format!("{segment}/{{z}}"), 1);
    }
    for (layer, array) in config.layers.iter_mut().zip(arrays) {
        layer.partition = Some(Partition {
            column: column.to_string(),
            value: value.to_string(),
            array: *array,
        });
    }
    Ok(job)
}

/// Tiles a partition's output holds, read back from it.
async fn count_tiles(output: &OutputTarget, job: &SeedJob, extension: &str) -> Result<u64> {
    let reader = OutputReader::open(&output.describe(), output, &job.s3, extension).await?;
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
