//! The `oar-tiles` command: parses the command line, runs the library, and turns the outcome into a
//! message and an exit code.

use std::path::PathBuf;
use std::process::ExitCode as ProcessExit;

use clap::{Args, Parser, Subcommand};
use oar_tiles::config::{Config, S3Config};
use oar_tiles::job::{SeedJob, SeedOptions};
use oar_tiles::report::ProgressKind;
use oar_tiles::sink::OutputTarget;
use oar_tiles::tile::{BBox, ZoomRange};
use oar_tiles::{changes, inspect, seed, Error, ExitCode};

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  runtime failure (database, rendering, output)
  2  usage or configuration error (nothing was done)

Environment:
  OAR_TILES_CONFIG      config file used when --config is not given (else ./oar-tiles.toml)
  DATABASE_URL          overrides database.url of the config
  PGPASSWORD            password used when the database URL has none
  RUST_LOG              log filter, e.g. oar_tiles=debug
  OAR_TILES_LOG_FORMAT  text or json, as --log-format
  NO_COLOR              set (to anything) to keep log lines uncoloured on a terminal too";

/// Pregenerates static vector tiles (MVT) of point data in PostGIS and keeps them fresh.
#[derive(Debug, Parser)]
#[command(name = "oar-tiles", version, after_help = AFTER_HELP)]
struct Cli {
    /// Only print warnings, errors and the summary.
    #[arg(short, long, global = true)]
    quiet: bool,

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
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// `2026-11-22T10:00:00Z  INFO message key=value`
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{"message":…}}`
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Render every non-empty tile of the zoom pyramid over a bbox and write it to the output.
    #[command(after_help = AFTER_HELP)]
    Seed(SeedArgs),
    /// Manage change capture in PostGIS, which `seed --dirty` reads. Needs DDL rights; seeding does not.
    #[command(after_help = AFTER_HELP)]
    Changes(ChangesArgs),
    /// Show what an output holds: metadata or TileJSON, tiles and bytes per zoom, bounds. Changes nothing.
    #[command(after_help = AFTER_HELP)]
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
struct ChangesArgs {
    #[command(subcommand)]
    action: ChangesAction,

    /// Config file [default: $OAR_TILES_CONFIG, else ./oar-tiles.toml].
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ChangesAction {
    /// Create the oar_tiles schema, its change log and the triggers on every source table of the
    /// config. Running it again refreshes the triggers (e.g. after adding attributes).
    Install,
    /// Show the changes logged per source table and the outputs that consume them.
    Status,
    /// Remove the triggers and the oar_tiles schema with everything in it.
    Uninstall,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The output: path.mbtiles, dir:PATH or PATH/, or s3://bucket/prefix.
    #[arg(value_name = "OUTPUT")]
    output: String,

    /// Config whose [s3] settings (endpoint, region, path style) reach the bucket; optional.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// File extension of directory and S3 tiles.
    #[arg(long, value_name = "EXT", default_value = "pbf")]
    extension: String,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SeedArgs {
    /// Config file [default: $OAR_TILES_CONFIG, else ./oar-tiles.toml].
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Seed only this tileset (repeatable) [default: every tileset of the config].
    #[arg(short, long = "tileset", value_name = "NAME")]
    tilesets: Vec<String>,

    /// Zoom levels, `A-B` or `N`, within 0-24 [default: the tileset's minzoom-maxzoom].
    #[arg(short, long, value_name = "A-B|N", value_parser = parse_zoom)]
    zoom: Option<ZoomRange>,

    /// Area in degrees `W,S,E,N`, not crossing the antimeridian [default: the tileset's bbox].
    #[arg(short, long, value_name = "W,S,E,N", value_parser = parse_bbox, allow_hyphen_values = true)]
    bbox: Option<BBox>,

    /// Output: path.mbtiles, dir:PATH or PATH/ (a z/x/y tree), or s3://bucket/prefix
    /// [default: the tileset's output]. Only with one tileset.
    #[arg(short, long, value_name = "PATH")]
    output: Option<String>,

    /// Tiles rendered at once; also the number of database connections [default: database.pool_size].
    #[arg(short = 'j', long, value_name = "N")]
    concurrency: Option<usize>,

    /// Print how many tiles each zoom would query, without rendering or writing anything.
    #[arg(long)]
    dry_run: bool,

    /// Also write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,

    /// Write the tiles stored with new bytes or deleted to FILE, one z/x/y per line (for CDN invalidation).
    #[arg(long, value_name = "FILE")]
    changed_list: Option<PathBuf>,

    /// Re-render only the tiles touched by changes since the output's watermark (needs
    /// `oar-tiles changes install`); tiles that became empty are deleted.
    #[arg(long)]
    dirty: bool,

    /// Render exactly the tiles listed in FILE, one z/x/y per line (osm2pgsql expire lists, tegola
    /// tile lists); empty ones are deleted from the output.
    #[arg(long, value_name = "FILE")]
    tiles_from: Option<PathBuf>,

    /// With --dirty or --tiles-from: stop cleanly after this long (e.g. 10m); lower zooms go first and
    /// the next run picks up the rest.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_duration: Option<std::time::Duration>,

    /// If another job holds the output, wait for it instead of refusing.
    #[arg(long)]
    wait_lock: bool,

    /// When a tile still fails after its retries, finish the others, list the failed tiles in FILE
    /// (a --tiles-from list; their subtrees are not walked) and exit 1.
    #[arg(long, value_name = "FILE")]
    keep_going: Option<PathBuf>,

    /// Fail (exit 1, output left as it was) on the first tile over the tileset's size_budget,
    /// instead of listing such tiles in the summary.
    #[arg(long)]
    strict_size: bool,
}

fn parse_zoom(text: &str) -> Result<ZoomRange, String> {
    text.parse()
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 10m or 90s ({e})"))
}

fn parse_bbox(text: &str) -> Result<BBox, String> {
    text.parse()
}

fn main() -> ProcessExit {
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.log_format);
    let outcome = match cli.command {
        Command::Seed(args) => run_seed(args, cli.quiet),
        Command::Inspect(args) => run_inspect(args),
        Command::Changes(args) => run_changes(args),
    };
    let code = match outcome {
        Ok(()) => ExitCode::Success,
        Err(err) => {
            eprintln!("error: {err}");
            err.exit_code()
        }
    };
    ProcessExit::from(code as u8)
}

fn init_logging(quiet: bool, format: LogFormat) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().init(),
        // Escape codes in cron mail, CI logs and log files are noise: colour is for people at a
        // terminal who have not asked for none (https://no-color.org).
        LogFormat::Text => builder.with_ansi(colour_wanted()).init(),
    }
}

fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the async runtime: {e}")))
}

fn run_changes(args: ChangesArgs) -> Result<(), Error> {
    let path = Config::locate(args.config.as_deref())?;
    let config = Config::load(&path)?;
    runtime()?.block_on(async {
        let pool = oar_tiles::render::pool::connect(&config.database, 1).await?;
        match args.action {
            ChangesAction::Install => {
                let tables = changes::install(&pool, &config).await?;
                println!("change capture installed on {}", tables.join(", "));
            }
            ChangesAction::Uninstall => {
                changes::uninstall(&pool, &config).await?;
                println!("change capture removed");
            }
            ChangesAction::Status => {
                let status = changes::status(&pool, &config).await?;
                for (table, count) in &status.tables {
                    println!("{table}: {count} change(s) in the log");
                }
                if status.consumers.is_empty() {
                    println!("no output has recorded a watermark yet");
                }
                for (output, snapshot, updated) in &status.consumers {
                    println!("output {output}: watermark {snapshot} (updated {updated})");
                }
            }
        }
        Ok(())
    })
}

fn run_inspect(args: InspectArgs) -> Result<(), Error> {
    let s3 = match &args.config {
        Some(path) => Config::load(path)?.s3,
        None => S3Config::default(),
    };
    let target = OutputTarget::parse(&args.output)?;
    let inventory = runtime()?.block_on(inspect::inspect(
        &args.output,
        &target,
        &s3,
        &args.extension,
    ))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&inventory).expect("inventories serialize")
        );
    } else {
        print!("{}", inventory.to_text());
    }
    Ok(())
}

fn run_seed(args: SeedArgs, quiet: bool) -> Result<(), Error> {
    let path = Config::locate(args.config.as_deref())?;
    let config = Config::load(&path)?;
    let options = SeedOptions {
        tilesets: args.tilesets,
        zooms: args.zoom,
        bbox: args.bbox,
        output: args.output,
        concurrency: args.concurrency,
        dry_run: args.dry_run,
        summary_json: args.summary_json,
        changed_list: args.changed_list,
        strict_size: args.strict_size,
        dirty: args.dirty,
        tiles_from: args.tiles_from,
        max_duration: args.max_duration,
        wait_lock: args.wait_lock,
        keep_going: args.keep_going,
    };
    let job = SeedJob::resolve(config, options)?;
    let progress = if quiet {
        ProgressKind::Quiet
    } else {
        ProgressKind::detect()
    };
    let summaries = runtime()?.block_on(seed::run(&job, progress))?;
    for summary in &summaries {
        print!("{}", summary.to_text());
    }
    if let Some(path) = &job.summary_json {
        let json = serde_json::to_string_pretty(&summaries).expect("summaries serialize");
        std::fs::write(path, json + "\n").map_err(|e| Error::File {
            path: path.clone(),
            message: format!("cannot write the summary: {e}"),
        })?;
    }
    let failed: Vec<&str> = summaries
        .iter()
        .flat_map(|s| &s.failed_tiles)
        .map(|f| f.tile.as_str())
        .collect();
    if let (Some(list), false) = (&job.keep_going, failed.is_empty()) {
        let text: String = failed.iter().map(|tile| format!("{tile}\n")).collect();
        std::fs::write(list, text).map_err(|e| Error::File {
            path: list.clone(),
            message: format!("cannot write the failed-tile list: {e}"),
        })?;
        return Err(Error::TilesFailed {
            count: failed.len(),
            list: list.clone(),
        });
    }
    Ok(())
}
