//! The command line, declared with clap: the only place clap's types live. `main.rs` turns
//! these into the library's plain options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use oar_tiles::commands::PublicHost;
use oar_tiles::{
    output_forms, BBox, RunSettings, SeedOptions, ShardSpec, TileError, WatchOptions, ZoomRange,
};

pub(crate) const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  runtime failure (database, rendering, output, a CDN purge; purges left undone are retried by the next run)
  2  usage or configuration error (nothing was done)
  130, 143  stopped by SIGINT, SIGTERM (the output keeps its state before the run or cycle)

Environment:
  OAR_TILES_CONFIG      config file used when --config is not given (else ./oar-tiles.toml)
  DATABASE_URL          overrides database.url of the config
  PGPASSWORD            password used when the database URL has none
  RUST_LOG              log filter, e.g. oar_tiles=debug
  OAR_TILES_LOG_FORMAT  text or json, as --log-format
  NO_COLOR              set (to anything) to keep log lines uncoloured on a terminal too";

/// Pregenerates static vector tiles (MVT) of PostGIS geometries (points, lines, polygons) and keeps
/// them fresh.
#[derive(Debug, Parser)]
#[command(name = "oar-tiles", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// Only print warnings and errors, and a seed's summary when something changed or failed (a
    /// reseed with nothing to do prints nothing on stdout, so cron mails nothing).
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,

    /// Log lines on stderr as plain text (coloured only on a terminal), or as one JSON object per
    /// line for log collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "OAR_TILES_LOG_FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub(crate) log_format: LogFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// `2026-11-22T10:00:00Z  INFO message key=value`
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{"message":…}}`
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Render every non-empty tile of the zoom pyramid over a bbox and write it to the output.
    #[command(after_help = AFTER_HELP)]
    Seed(SeedArgs),
    /// Manage change capture in PostGIS, which `seed --dirty` reads. Needs DDL rights; seeding does not.
    #[command(after_help = AFTER_HELP)]
    Changes(ChangesArgs),
    /// Show what an output holds: metadata or TileJSON, tiles and bytes per zoom, bounds. Changes nothing.
    #[command(after_help = AFTER_HELP)]
    Inspect(InspectArgs),
    /// Check outputs: the container (MBTiles 1.3, TileJSON 3.0, PMTiles v3), every tile (MVT 2.1,
    /// gzip), the metadata against the tiles (zooms, bounds, vector_layers, agg_tiles_hash), a
    /// partitioned output's index; with --against-db, tiles rendered again from the database.
    /// Changes nothing. Exit 0: valid; 1: problems found (listed); 2: usage.
    #[command(after_help = AFTER_HELP)]
    Validate(ValidateArgs),
    /// Show outputs in a browser: a map of every layer, the tiles and their sizes per zoom. Reads
    /// only; runs until SIGINT or SIGTERM, then exits 0.
    #[command(after_help = AFTER_HELP)]
    Serve(ServeArgs),
    /// Weigh the data per tile and cut each tileset into N shards of near-equal work; print the cut
    /// and store it beside the (MBTiles) output, unless --dry-run.
    #[command(name = "shard-plan", after_help = AFTER_HELP)]
    ShardPlan(ShardPlanArgs),
    /// Combine the MBTiles part files of a sharded seed into one MBTiles file; refuses overlapping
    /// tiles, unfinished parts and parts of different settings.
    #[command(after_help = AFTER_HELP)]
    Merge(MergeArgs),
    /// End a sharded seed once every shard is done: merge MBTiles parts, or (trees, S3) delete
    /// stale tiles and write TileJSON and state; refuses while a shard is unfinished.
    #[command(after_help = AFTER_HELP)]
    Finalize(FinalizeArgs),
    /// Keep every output fresh: after each burst of committed changes (and every poll_interval),
    /// run what `seed --dirty` runs; serve /metrics and /health. Runs until SIGTERM or SIGINT.
    #[command(after_help = AFTER_HELP)]
    Watch(WatchArgs),
    /// Describe the configuration file: its JSON Schema for editors, or a Markdown reference of
    /// every table and key. Reads no config file.
    #[command(subcommand)]
    Config(ConfigAction),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigAction {
    /// Print the JSON Schema (draft 07) of the configuration file: every table and key with its
    /// type, default and description. Save it as oar-tiles.schema.json beside the config file and
    /// make `#:schema ./oar-tiles.schema.json` the file's first line: editors that read JSON
    /// Schema for TOML (Taplo, Even Better TOML) then complete and check it.
    Schema,
    /// Print the configuration reference in Markdown, generated from the same schema: a section
    /// per table, with each key's type, default and description.
    Reference,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[arg(value_name = "OUTPUT", required = true, help = outputs_help("The outputs, one tileset each", ""))]
    pub(crate) outputs: Vec<String>,

    /// Address and port to listen on; port 0 takes a free one. The URL is printed on stdout.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub(crate) listen: std::net::SocketAddr,

    /// Config whose [store] settings (endpoint, region, path style) reach the bucket; optional.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// File extension of directory and S3 tiles.
    #[arg(long, value_name = "EXT", default_value = "pbf")]
    pub(crate) extension: String,

    /// A host name the server is also reached by (through a proxy or DNS): NAME on any port, or
    /// NAME:PORT; repeatable. Requests whose Host is neither this, the listening address nor
    /// localhost on its port get 421, so a web page cannot read the server by DNS rebinding.
    #[arg(long = "public-host", value_name = "NAME")]
    pub(crate) public_host: Vec<PublicHost>,

    /// Stored bytes above which the page marks a tile as over budget (the tilesets' size_budget).
    #[arg(long, value_name = "BYTES", default_value_t = oar_tiles::DEFAULT_SIZE_BUDGET)]
    pub(crate) size_budget: u64,

    /// The listener of an `oar-tiles watch` keeping these outputs fresh (its --listen, as
    /// http://127.0.0.1:9187): the page follows each tileset's changes by the watcher's
    /// Server-Sent Events while they answer, and polls the feed's head.json otherwise.
    #[arg(long = "watch", value_name = "URL")]
    pub(crate) watch: Option<url::Url>,
}

/// A command that reads a config file, and its own flags.
#[derive(Debug, Args)]
pub(crate) struct WithConfig<F: Args> {
    /// Config file [default: $OAR_TILES_CONFIG, else ./oar-tiles.toml].
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) options: F,
}

/// `oar-tiles seed`'s command line.
pub(crate) type SeedArgs = WithConfig<SeedFlags>;
/// `oar-tiles shard-plan`'s command line.
pub(crate) type ShardPlanArgs = WithConfig<ShardPlanFlags>;
/// `oar-tiles watch`'s command line.
pub(crate) type WatchArgs = WithConfig<WatchFlags>;

/// The part of the pyramid a seed or a shard plan covers.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct AreaFlags {
    /// Zoom levels, `A-B` or `N`, within 0-24 [default: the tileset's minzoom-maxzoom].
    #[arg(short, long = "zoom", value_name = "A-B|N", value_parser = parse_zoom)]
    pub(crate) zooms: Option<ZoomRange>,

    /// Area in degrees `W,S,E,N`, not crossing the antimeridian [default: the tileset's bbox].
    #[arg(short, long, value_name = "W,S,E,N", value_parser = parse_bbox, allow_hyphen_values = true)]
    pub(crate) bbox: Option<BBox>,
}

/// What `shard-plan` reads of a seed's flags: only those that decide the plan and where it is
/// stored, so its help lists nothing it would ignore.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ShardPlanFlags {
    /// Plan only this tileset (repeatable) [default: every tileset of the config].
    #[arg(short, long = "tileset", value_name = "NAME")]
    pub(crate) tilesets: Vec<String>,

    #[command(flatten)]
    pub(crate) area: AreaFlags,

    #[arg(short, long, value_name = "PATH", help = outputs_help("The output the shards will write, beside which the plan is stored",
        " [default: the tileset's output]. Only with one tileset"))]
    pub(crate) output: Option<String>,

    /// Connections each shard will render on, which the plan prices their work for; also the
    /// connections planning uses [default: database.pool_size].
    #[arg(short = 'j', long, value_name = "N")]
    pub(crate) concurrency: Option<usize>,

    /// The number of shards to plan [default: OAR_TILES_SHARDS].
    #[arg(long, value_name = "N")]
    pub(crate) shards: Option<u32>,

    /// Print the plan without storing it.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

impl From<ShardPlanFlags> for SeedOptions {
    fn from(flags: ShardPlanFlags) -> SeedOptions {
        SeedOptions {
            tilesets: flags.tilesets,
            zooms: flags.area.zooms,
            bbox: flags.area.bbox,
            output: flags.output,
            concurrency: flags.concurrency,
            shards: flags.shards,
            run: RunSettings {
                dry_run: flags.dry_run,
                ..RunSettings::default()
            },
            ..SeedOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct FinalizeArgs {
    /// Config file [default: $OAR_TILES_CONFIG, else ./oar-tiles.toml].
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Finalize only this tileset (repeatable) [default: all].
    #[arg(short, long = "tileset", value_name = "NAME")]
    pub(crate) tilesets: Vec<String>,

    /// The output the shards wrote, instead of the tileset's configured one.
    #[arg(short, long, value_name = "PATH")]
    pub(crate) output: Option<String>,

    /// Write the tiles deleted as stale to FILE, one z/x/y per line (for CDN invalidation).
    #[arg(long, value_name = "FILE")]
    pub(crate) changed_list: Option<PathBuf>,

    /// If another job holds the output, wait for it instead of refusing.
    #[arg(long)]
    pub(crate) wait_lock: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MergeArgs {
    /// The merged MBTiles file to create (replaced if it exists).
    #[arg(value_name = "OUT")]
    pub(crate) out: PathBuf,

    /// The shards' MBTiles part files.
    #[arg(value_name = "PART", required = true)]
    pub(crate) parts: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ChangesArgs {
    #[command(subcommand)]
    pub(crate) action: ChangesAction,

    /// Config file [default: $OAR_TILES_CONFIG, else ./oar-tiles.toml].
    #[arg(short, long, value_name = "FILE", global = true)]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChangesAction {
    /// Create the oar_tiles schema, its change log and the triggers on every source table of the
    /// config. Running it again refreshes the triggers (e.g. after adding attributes).
    Install,
    /// Show the changes logged per source table and the outputs that consume them.
    Status,
    /// Remove the triggers and the oar_tiles schema with everything in it.
    Uninstall,
    /// Drop an output from the change log's consumers (one that no longer exists, or that
    /// `changes status` flags as not reading the log), so it no longer holds back pruning. A
    /// later seed of the output records it again.
    Forget {
        /// The output, as `changes status` lists it or as a config names it.
        #[arg(value_name = "OUTPUT")]
        output: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    #[arg(value_name = "OUTPUT", required = true, help = outputs_help("The outputs",
        "; a partitioned tileset's configured output checks every partition its index lists"))]
    pub(crate) outputs: Vec<String>,

    /// Config file: its [store] settings reach buckets; --against-db renders with its database and
    /// tilesets [default with --against-db: $OAR_TILES_CONFIG, else ./oar-tiles.toml].
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// The tileset that wrote the outputs, when the config does not name them as its output.
    #[arg(short, long, value_name = "NAME")]
    pub(crate) tileset: Option<String>,

    /// Render tiles again from the database, with the zooms, bbox and settings the output
    /// recorded, and compare: tiles that differ, are missing or should not exist. Tiles that
    /// changes since the output's watermark touched count as pending, not wrong.
    #[arg(long)]
    pub(crate) against_db: bool,

    /// With --against-db: compare N random tiles and their empty neighbours.
    #[arg(long, value_name = "N", default_value_t = 200, conflicts_with = "all")]
    pub(crate) sample: u64,

    /// With --against-db: compare every tile of the pyramid (a full render).
    #[arg(long, requires = "against_db")]
    pub(crate) all: bool,

    /// Write the tiles found wrong to FILE, one z/x/y per line, for `seed --tiles-from FILE`.
    #[arg(long, value_name = "FILE", requires = "against_db")]
    pub(crate) repair_list: Option<PathBuf>,

    /// File extension of directory and S3 tiles.
    #[arg(long, value_name = "EXT", default_value = "pbf")]
    pub(crate) extension: String,

    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    #[arg(value_name = "OUTPUT", help = outputs_help("The output", ""))]
    pub(crate) output: String,

    /// Config whose [store] settings (endpoint, region, path style) reach the bucket; optional.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// File extension of directory and S3 tiles.
    #[arg(long, value_name = "EXT", default_value = "pbf")]
    pub(crate) extension: String,

    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `oar-tiles seed`'s flags, which become the library's `SeedOptions`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct SeedFlags {
    /// Seed only this tileset (repeatable) [default: every tileset of the config].
    #[arg(short, long = "tileset", value_name = "NAME")]
    pub(crate) tilesets: Vec<String>,

    #[command(flatten)]
    pub(crate) area: AreaFlags,

    #[arg(short, long, value_name = "PATH", help = outputs_help("Output",
        " [default: the tileset's output]. Only with one tileset"))]
    pub(crate) output: Option<String>,

    /// Tiles rendered at once; also the number of database connections [default: database.pool_size].
    #[arg(short = 'j', long, value_name = "N")]
    pub(crate) concurrency: Option<usize>,

    /// Re-render only the tiles touched by changes since the output's watermark (needs
    /// `oar-tiles changes install`); tiles that became empty are deleted.
    #[arg(long)]
    pub(crate) dirty: bool,

    /// Of a partitioned tileset (`partition_by`), seed only this value (repeatable)
    /// [default: every value the rows hold].
    #[arg(long = "partition", value_name = "VALUE")]
    pub(crate) partitions: Vec<String>,

    /// Render exactly the tiles listed in FILE, one z/x/y per line (osm2pgsql expire lists, tegola
    /// tile lists); empty ones are deleted from the output.
    #[arg(long, value_name = "FILE")]
    pub(crate) tiles_from: Option<PathBuf>,

    /// Run shard I of N (0-based) of a sharded seed (into an MBTiles part file, or straight into a
    /// tree or S3 prefix), rendering from replica I mod R of `[database] replicas` when it lists some
    /// [default: the index from JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX,
    /// CLOUD_RUN_TASK_INDEX, BATCH_TASK_INDEX or SLURM_ARRAY_TASK_ID counted from
    /// SLURM_ARRAY_TASK_MIN].
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub(crate) shard: Option<ShardSpec>,

    /// The number of shards when the index comes from the environment [default: OAR_TILES_SHARDS,
    /// else AWS_BATCH_JOB_ARRAY_SIZE, CLOUD_RUN_TASK_COUNT, BATCH_TASK_COUNT or
    /// SLURM_ARRAY_TASK_COUNT].
    #[arg(long, value_name = "N")]
    pub(crate) shards: Option<u32>,

    /// How the run behaves, passed to the job as given.
    #[command(flatten)]
    pub(crate) run: RunFlags,
}

/// Flags that need no resolving against the config: the library's `RunSettings`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct RunFlags {
    /// Print how many tiles each zoom would query, without rendering or writing anything; with
    /// --dirty, the dirty tiles per zoom, the writes, and each CDN target's purge after folding
    /// with its price, without a lock, a write or a purge.
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Also write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) summary_json: Option<PathBuf>,

    /// Write the tiles stored with new bytes or deleted to FILE, one z/x/y per line (for CDN
    /// invalidation), with those an earlier run changed but could not list (its list failed, it was
    /// stopped or killed): each output keeps them in its outbox until a list takes them.
    #[arg(long, value_name = "FILE")]
    pub(crate) changed_list: Option<PathBuf>,

    /// Render a tile list lowest zoom first, the order before deepest-first lists (for
    /// benchmarks).
    #[arg(long, hide = true)]
    pub(crate) lowest_zoom_first: bool,

    /// With --dirty or --tiles-from: stop cleanly after this long (e.g. 10m); deeper zooms go first
    /// and the next run picks up the rest.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) max_duration: Option<Duration>,

    /// If another job holds the output, wait for it instead of refusing.
    #[arg(long)]
    pub(crate) wait_lock: bool,

    /// When a tile still fails after its retries, finish the others, list the failed tiles in FILE
    /// (a --tiles-from list) and exit 1. The tiles below a failed one are still rendered where a
    /// probe of it (which reads no geometry) finds content.
    #[arg(long, value_name = "FILE")]
    pub(crate) keep_going: Option<PathBuf>,

    /// Fail (exit 1, output left as it was) on the first tile over the tileset's size_budget,
    /// instead of listing such tiles in the summary.
    #[arg(long)]
    pub(crate) strict_size: bool,

    /// Also write the run's Prometheus metrics to FILE in node_exporter's textfile format
    /// (replaced atomically; on failure too, keeping the last success time).
    #[arg(long, value_name = "FILE")]
    pub(crate) metrics_file: Option<PathBuf>,

    /// After purging each CDN target that has a public_url, fetch up to N of the tiles it purged
    /// through that URL and compare them with the output's; the summary and metrics say how long
    /// they took to turn fresh and how many answers were stale.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) check_edge: usize,

    /// How long a tile checked by --check-edge may stay stale before it counts as unconfirmed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub(crate) check_edge_within: Duration,

    /// Sum every cluster cell again from the rows before rendering. Gaps in capture the tool can
    /// see (triggers dropped, disabled or re-created) rebuild the cells on their own; this is the
    /// repair after what it cannot see, such as `validate --against-db` finding a clustered
    /// tile wrong.
    #[arg(long)]
    pub(crate) rebuild_cells: bool,

    /// After the run, re-render N random tiles of each output (and their empty neighbours) and
    /// compare them with what it stores, as `validate --against-db --sample N` does; tiles found
    /// wrong fail the run (exit 1) and are counted in the metrics.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) verify_sample: u64,
}

/// What `oar-tiles watch` takes on the command line (the library's `WatchOptions`); the rest is the
/// config's `[watch]`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct WatchFlags {
    /// Keep only this tileset fresh (repeatable) [default: every tileset of the config].
    #[arg(short, long = "tileset", value_name = "NAME")]
    pub(crate) tilesets: Vec<String>,

    /// Tiles rendered at once in a cycle; also the number of database connections
    /// [default: database.pool_size].
    #[arg(short = 'j', long, value_name = "N")]
    pub(crate) concurrency: Option<usize>,

    /// Address serving /metrics and /health [default: watch.listen, else 127.0.0.1:9187].
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<std::net::SocketAddr>,

    /// After each cycle that changed an output, re-render N random tiles of it (and their empty
    /// neighbours) and compare them with what it stores; tiles found wrong are logged and counted
    /// in oar_tiles_verify_wrong_tiles.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) verify_sample: u64,
}

impl From<SeedFlags> for SeedOptions {
    fn from(flags: SeedFlags) -> SeedOptions {
        SeedOptions {
            tilesets: flags.tilesets,
            zooms: flags.area.zooms,
            bbox: flags.area.bbox,
            output: flags.output,
            concurrency: flags.concurrency,
            dirty: flags.dirty,
            partitions: flags.partitions,
            tiles_from: flags.tiles_from,
            shard: flags.shard,
            shards: flags.shards,
            run: flags.run.into(),
        }
    }
}

impl From<RunFlags> for RunSettings {
    fn from(flags: RunFlags) -> RunSettings {
        RunSettings {
            dry_run: flags.dry_run,
            summary_json: flags.summary_json,
            changed_list: flags.changed_list,
            max_duration: flags.max_duration,
            wait_lock: flags.wait_lock,
            keep_going: flags.keep_going,
            strict_size: flags.strict_size,
            metrics_file: flags.metrics_file,
            check_edge: oar_tiles::EdgeCheckSettings {
                sample: flags.check_edge,
                within: flags.check_edge_within,
            },
            rebuild_cells: flags.rebuild_cells,
            verify_sample: flags.verify_sample,
            scratch: false,
            defer_agg_hash: false,
            lowest_zoom_first: flags.lowest_zoom_first,
        }
    }
}

impl From<WatchFlags> for WatchOptions {
    fn from(flags: WatchFlags) -> WatchOptions {
        WatchOptions {
            tilesets: flags.tilesets,
            concurrency: flags.concurrency,
            listen: flags.listen,
            verify_sample: flags.verify_sample,
        }
    }
}

/// An argument's help naming every output form the address parser takes, from its own list, so
/// the help never lags behind a new store or format.
fn outputs_help(what: &str, after: &str) -> String {
    format!(
        "{what}: {} (PATH/ and dir:PATH are z/x/y trees){after}.",
        output_forms()
    )
}

fn parse_zoom(text: &str) -> Result<ZoomRange, String> {
    text.parse().map_err(|e: TileError| e.to_string())
}

fn parse_bbox(text: &str) -> Result<BBox, String> {
    text.parse().map_err(|e: TileError| e.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 10m or 90s ({e})"))
}

fn parse_shard(text: &str) -> Result<ShardSpec, String> {
    text.parse().map_err(|e: oar_tiles::Error| e.to_string())
}
