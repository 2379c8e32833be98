//! Turns a config file and the command line's overrides into one resolved, validated seed job, so the
//! engine never sees half-checked input.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::config::OutputTarget;
use crate::config::{Config, DatabaseConfig, StoreConfig, TilesetConfig, WatchConfig};
use crate::error::{Error, Result};
use crate::tile::{BBox, TileCoord, ZoomRange};

/// What the operator asked for on the command line; `None` means "as the config says". The
/// command line's flags (the binary's `cli.rs`) become these; [`SeedJob::resolve`] checks them against
/// the config.
#[derive(Debug, Clone, Default)]
pub struct SeedOptions {
    /// Seed only this tileset (repeatable) [default: every tileset of the config].
    pub tilesets: Vec<String>,

    /// Zoom levels, `A-B` or `N`, within 0-24 [default: the tileset's minzoom-maxzoom].
    pub zooms: Option<ZoomRange>,

    /// Area in degrees `W,S,E,N`, not crossing the antimeridian [default: the tileset's bbox].
    pub bbox: Option<BBox>,

    /// Output: path.mbtiles, path.pmtiles, dir:PATH or PATH/ (a z/x/y tree), s3://bucket/prefix, or
    /// s3://bucket/key.pmtiles (one PMTiles object)
    /// [default: the tileset's output]. Only with one tileset.
    pub output: Option<String>,

    /// Tiles rendered at once; also the number of database connections [default: database.pool_size].
    pub concurrency: Option<usize>,

    /// Re-render only the tiles touched by changes since the output's watermark (needs
    /// `oar-tiles changes install`); tiles that became empty are deleted.
    pub dirty: bool,

    /// Of a partitioned tileset (`partition_by`), seed only this value (repeatable)
    /// [default: every value the rows hold].
    pub partitions: Vec<String>,

    /// Render exactly the tiles listed in FILE, one z/x/y per line (osm2pgsql expire lists, tegola
    /// tile lists); empty ones are deleted from the output.
    pub tiles_from: Option<PathBuf>,

    /// Run shard I of N (0-based) of a sharded seed (into an MBTiles part file, or straight into a
    /// tree or S3 prefix), rendering from replica I mod R of `[database] replicas` when it lists some
    /// [default: the index from JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX,
    /// CLOUD_RUN_TASK_INDEX, BATCH_TASK_INDEX or SLURM_ARRAY_TASK_ID].
    pub shard: Option<ShardSpec>,

    /// The number of shards when the index comes from the environment [default: OAR_TILES_SHARDS,
    /// else AWS_BATCH_JOB_ARRAY_SIZE, CLOUD_RUN_TASK_COUNT, BATCH_TASK_COUNT or
    /// SLURM_ARRAY_TASK_COUNT].
    pub shards: Option<u32>,

    /// How the run behaves, passed to the job as given.
    pub run: RunSettings,
}

/// Which shard of how many a process runs, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    /// This shard's index, `0..count`.
    pub index: u32,
    /// How many shards the run has.
    pub count: u32,
}

impl ShardSpec {
    /// A shard spec, refusing an index outside `0..count` and a count of zero.
    pub fn new(index: u32, count: u32) -> Result<Self> {
        if count == 0 {
            return Err(Error::Usage(
                "the number of shards must be at least 1".into(),
            ));
        }
        if index >= count {
            return Err(Error::Usage(format!(
                "shard index {index} is outside 0..{count} (indices are 0-based)"
            )));
        }
        Ok(Self { index, count })
    }

    /// The shard a process runs: `--shard I/N` if given; else the index from
    /// the first of [`ARRAY_INDICES`] set, else `SLURM_ARRAY_TASK_ID` counted from
    /// `SLURM_ARRAY_TASK_MIN` by `SLURM_ARRAY_TASK_STEP` (SLURM), with the count from `--shards`,
    /// else the first of [`ARRAY_COUNTS`] set. `None` when nothing asks for sharding. `env` reads
    /// a variable, so tests need not touch the process's.
    pub fn resolve(
        flag: Option<ShardSpec>,
        shards: Option<u32>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ShardSpec>> {
        let number = |name: &str| -> Result<Option<u32>> {
            match env(name) {
                None => Ok(None),
                Some(text) if text.trim().is_empty() => Ok(None),
                Some(text) => text.trim().parse().map(Some).map_err(|_| {
                    Error::Usage(format!("{name}={text} is not a non-negative integer"))
                }),
            }
        };
        if let Some(spec) = flag {
            if let Some(count) = shards.filter(|count| *count != spec.count) {
                return Err(Error::Usage(format!(
                    "--shard {spec} contradicts --shards {count}"
                )));
            }
            return Ok(Some(spec));
        }
        let mut index = None;
        for variable in ARRAY_INDICES {
            if index.is_none() {
                index = number(variable)?;
            }
        }
        if index.is_none() {
            index = slurm_index(&number)?;
        }
        let mut count = shards;
        for variable in ARRAY_COUNTS {
            if count.is_none() {
                count = number(variable)?;
            }
        }
        match (index, count) {
            (None, None) => Ok(None),
            (Some(index), Some(count)) => ShardSpec::new(index, count).map(Some),
            (Some(index), None) => Err(Error::Usage(format!(
                "shard index {index} is set by the environment but not the number of shards: \
                 pass --shards N or set OAR_TILES_SHARDS"
            ))),
            (None, Some(count)) => Err(Error::Usage(format!(
                "{count} shards were asked for but not which one this is: pass --shard I/{count} \
                 or set JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX, CLOUD_RUN_TASK_INDEX, \
                 BATCH_TASK_INDEX or SLURM_ARRAY_TASK_ID"
            ))),
        }
    }
}

/// The variables a job array's engine gives each task its index in, 0-based: Kubernetes
/// (an Indexed Job), AWS Batch, Google Cloud Run jobs, Google Cloud Batch. SLURM's, which may
/// start at any number, is read apart ([`slurm_index`]). An index and a count set by two engines
/// at once are taken from the first set, in this order.
const ARRAY_INDICES: &[&str] = &[
    "JOB_COMPLETION_INDEX",
    "AWS_BATCH_JOB_ARRAY_INDEX",
    "CLOUD_RUN_TASK_INDEX",
    "BATCH_TASK_INDEX",
];

/// The variables a job array's size comes from, `OAR_TILES_SHARDS` first (Kubernetes sets none:
/// its Indexed Job's `completions` is passed on by hand).
const ARRAY_COUNTS: &[&str] = &[
    "OAR_TILES_SHARDS",
    "AWS_BATCH_JOB_ARRAY_SIZE",
    "CLOUD_RUN_TASK_COUNT",
    "BATCH_TASK_COUNT",
    "SLURM_ARRAY_TASK_COUNT",
];

/// A SLURM array task's place in its array: an array may start at any number and step by any
/// (`--array=10-16:2` runs tasks 10, 12, 14 and 16, the shards 0 to 3).
fn slurm_index(number: &dyn Fn(&str) -> Result<Option<u32>>) -> Result<Option<u32>> {
    let Some(id) = number("SLURM_ARRAY_TASK_ID")? else {
        return Ok(None);
    };
    let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
    let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
    if id < min || (id - min) % step != 0 {
        return Err(Error::Usage(format!(
            "SLURM_ARRAY_TASK_ID={id} is not a task of an array from SLURM_ARRAY_TASK_MIN={min} \
             by SLURM_ARRAY_TASK_STEP={step}"
        )));
    }
    Ok(Some((id - min) / step))
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for ShardSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let wrong = || Error::Usage(format!("`{text}` is not a shard like 0/4 (index/count)"));
        let (index, count) = text.split_once('/').ok_or_else(wrong)?;
        let index = index.trim().parse().map_err(|_| wrong())?;
        let count = count.trim().parse().map_err(|_| wrong())?;
        ShardSpec::new(index, count)
    }
}

/// One shard's part of a tileset: which shard, and the output the whole run stands for, which
/// keeps the plan every shard shares (an MBTiles shard's own output is its part file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardJob {
    /// Which shard of how many.
    pub spec: ShardSpec,
    /// The whole run's output.
    pub output: OutputTarget,
}

/// Command-line settings that need no resolving against the config.
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    /// Print how many tiles each zoom would query, without rendering or writing anything; with
    /// --dirty, what the reseed would render, write and purge.
    pub dry_run: bool,

    /// Also write the summary as JSON to FILE.
    pub summary_json: Option<PathBuf>,

    /// Write the tiles stored with new bytes or deleted to FILE, one z/x/y per line (for CDN invalidation).
    pub changed_list: Option<PathBuf>,

    /// With --dirty or --tiles-from: stop cleanly after this long (e.g. 10m); deeper zooms go first
    /// and the next run picks up the rest.
    pub max_duration: Option<Duration>,

    /// If another job holds the output, wait for it instead of refusing.
    pub wait_lock: bool,

    /// When a tile still fails after its retries, finish the others, list the failed tiles in FILE
    /// (a --tiles-from list) and exit 1; the tiles below a failed one are still rendered where a
    /// probe of it finds content.
    pub keep_going: Option<PathBuf>,

    /// Fail (exit 1, output left as it was) on the first tile over the tileset's size_budget,
    /// instead of listing such tiles in the summary.
    pub strict_size: bool,

    /// Also write the run's Prometheus metrics to FILE in node_exporter's textfile format
    /// (replaced atomically; on failure too, keeping the last success time).
    pub metrics_file: Option<PathBuf>,

    /// After each purge, fetch this many changed tiles through each CDN target's `public_url` and
    /// compare them with the output's (0: no check).
    pub check_edge: crate::config::EdgeCheckSettings,

    /// Sum every cluster cell again from the rows before rendering, instead of only the cells the
    /// change log says changed: the repair after changes the log never saw (triggers disabled for a
    /// bulk load, a restore from backup).
    pub rebuild_cells: bool,

    /// After the run, re-render this many of each output's tiles (and their empty neighbours) and
    /// compare them with what it stores (`validate --against-db --sample N`); 0: no check.
    pub verify_sample: u64,

    /// A verification render into a throwaway output (`validate --against-db`): clustered layers
    /// aggregate rows instead of reading the maintained cells, which could share the drift being
    /// looked for, and the run is no consumer of the change log.
    pub scratch: bool,

    /// Leave the `agg_tiles_hash` of a run that changed some tiles (not a full seed) pending when
    /// the run ends, for the caller to bring up to date when it is idle (`watch`); otherwise it
    /// is computed after the run's purges are delivered.
    pub defer_agg_hash: bool,

    /// Render a tile list (--dirty, --tiles-from) lowest zoom first, as before deepest-first
    /// lists: kept to measure one against the other.
    pub lowest_zoom_first: bool,
}

/// What `oar-tiles watch` takes on the command line; the rest is the config's `[watch]`.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Keep only this tileset fresh (repeatable) [default: every tileset of the config].
    pub tilesets: Vec<String>,

    /// Tiles rendered at once in a cycle; also the number of database connections
    /// [default: database.pool_size].
    pub concurrency: Option<usize>,

    /// Address serving /metrics and /health [default: watch.listen, else 127.0.0.1:9187].
    pub listen: Option<std::net::SocketAddr>,

    /// After each cycle, re-render this many random tiles of each output it changed (and their
    /// empty neighbours) and compare; 0: no check.
    pub verify_sample: u64,
}

/// A watch ready to run: the `seed --dirty` job each cycle runs, and the pacing of cycles.
#[derive(Debug, Clone)]
pub struct WatchJob {
    /// What one cycle runs.
    pub seed: SeedJob,
    /// Debounce, maximum delay, poll interval and the metrics address.
    pub settings: WatchConfig,
}

impl WatchJob {
    /// Resolves the options against the config, as `seed --dirty` over the same tilesets would.
    pub fn resolve(config: Config, options: WatchOptions) -> Result<WatchJob> {
        let mut settings = config.watch.clone();
        if let Some(listen) = options.listen {
            settings.listen = listen;
        }
        let mut seed = SeedJob::resolve(
            config,
            SeedOptions {
                tilesets: options.tilesets,
                concurrency: options.concurrency,
                dirty: true,
                ..SeedOptions::default()
            },
        )?;
        // A cycle samples its purged tiles; the watcher checks them at the edge off the cycle.
        seed.run.check_edge = settings.check_edge;
        seed.run.verify_sample = options.verify_sample;
        // The watcher brings the hash up to date when it is idle, so no cycle reads every tile.
        seed.run.defer_agg_hash = true;
        Ok(WatchJob { seed, settings })
    }
}

/// Which tiles a job renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every non-empty tile of the pyramid; tiles no longer produced are removed.
    Pyramid,
    /// The tiles touched by changes since the output's watermark.
    Dirty,
    /// Exactly these tiles.
    List(Vec<TileCoord>),
}

/// A seed job ready to run.
#[derive(Debug, Clone)]
pub struct SeedJob {
    /// Database settings.
    pub database: DatabaseConfig,
    /// S3 settings.
    pub store_settings: StoreConfig,
    /// Schema of the change log.
    pub change_schema: String,
    /// Tiles rendered at once (also the pool size).
    pub concurrency: usize,
    /// Tilesets in config order.
    pub tilesets: Vec<TilesetJob>,
    /// Which tiles to render.
    pub selection: Selection,
    /// Of partitioned tilesets, only these values; empty means every value.
    pub partitions: Vec<String>,
    /// How the run behaves.
    pub run: RunSettings,
}

/// One tileset's part of a job.
#[derive(Debug, Clone)]
pub struct TilesetJob {
    /// The tileset as configured.
    pub tileset: TilesetConfig,
    /// Zooms to render.
    pub zooms: ZoomRange,
    /// Area to cover.
    pub bbox: BBox,
    /// Where its tiles go; `None` only in a dry run. A shard's part file in a sharded run.
    pub output: Option<OutputTarget>,
    /// Seeded in full whatever the job's selection: a partition whose value is new since the last
    /// run, or whose value vanished (the full seed then empties its output).
    pub full_seed: bool,
    /// A partition's path inside the configured output, before its tiles in `--changed-list`.
    pub list_prefix: Option<String>,
    /// A partition's: the partitioned tileset's own output, whose outbox takes over what the
    /// partition's CDN purges have not taken, so it outlives the partition and is retried by
    /// every later run of the tileset, whichever partitions those change.
    pub tileset_output: Option<OutputTarget>,
    /// The partitioned tileset this job is one partition of: partitions of one tileset share its
    /// described sources and statements.
    pub partition_of: Option<String>,
    /// The shard this job runs, in a sharded run.
    pub shard: Option<ShardJob>,
}

impl TilesetJob {
    /// Which tiles this tileset's run renders.
    pub fn selection<'a>(&self, job: &'a Selection) -> &'a Selection {
        if self.full_seed {
            &Selection::Pyramid
        } else {
            job
        }
    }
}

/// Reads a tile list: one `z/x/y` per line (osm2pgsql expire lists, tegola tile lists); blank lines
/// and `#` comments are skipped; duplicates are rendered once, lowest zoom first.
pub fn read_tile_list(path: &Path) -> Result<Vec<TileCoord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read the tile list: {e}"),
    })?;
    let mut tiles = std::collections::BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let tile: TileCoord = line
            .parse()
            .map_err(|e: crate::tile::TileError| Error::Config {
                path: path.to_path_buf(),
                line: Some(index + 1),
                column: None,
                message: e.to_string(),
            })?;
        tiles.insert((tile.z(), tile.x(), tile.y()));
    }
    Ok(tiles
        .into_iter()
        .map(|(z, x, y)| TileCoord::new(z, x, y).expect("parsed tiles are valid"))
        .collect())
}

impl SeedJob {
    /// Resolves the options against the config; every error here is a usage or config error.
    pub fn resolve(config: Config, options: SeedOptions) -> Result<SeedJob> {
        Self::resolve_with(config, options, |name| std::env::var(name).ok())
    }

    /// [`SeedJob::resolve`], with the batch engines' shard variables read through `env` (`finalize`
    /// acts on the whole output, whatever index its container was given).
    pub fn resolve_with(
        config: Config,
        options: SeedOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SeedJob> {
        let selected = resolve::select_tilesets(config.tilesets, &config.path, &options)?;
        let selection = resolve::selection_of(&options, &selected)?;
        let concurrency = options.concurrency.unwrap_or(config.database.pool_size);
        if !(1..=256).contains(&concurrency) {
            return Err(Error::Usage(format!(
                "--concurrency {concurrency} must lie in 1..=256"
            )));
        }
        let shard = ShardSpec::resolve(options.shard, options.shards, env)?;
        resolve::check_shard(shard, &selection, &options, &selected)?;
        let tilesets = selected
            .into_iter()
            .map(|tileset| resolve::tileset_job(tileset, &options, &selection, shard))
            .collect::<Result<Vec<_>>>()?;
        Ok(SeedJob {
            database: config.database,
            store_settings: config.store,
            change_schema: config.change_schema,
            concurrency,
            tilesets,
            selection,
            partitions: options.partitions,
            run: options.run,
        })
    }
}

impl SeedJob {
    /// The replica a sharded run renders from, with its index in `[database] replicas`: shard I
    /// of a run takes replica I mod R. `None` for an unsharded run or an empty list (the primary).
    pub fn replica(&self) -> Option<(usize, &str)> {
        let spec = self.tilesets.iter().find_map(|t| t.shard.as_ref())?.spec;
        let count = self.database.replicas.len();
        let index = usize::try_from(spec.index).ok()?.checked_rem(count)?;
        Some((index, self.database.replicas[index].as_str()))
    }
}

mod resolve;

#[cfg(test)]
mod tests;
