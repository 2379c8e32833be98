//! The `oar-tiles` command: parses the command line, runs the library, and turns the outcome into a
//! message and an exit code.

use std::process::ExitCode as ProcessExit;

/// `println!` that never panics: a reader that went away (`| head`) is no error (see [`emit`]).
macro_rules! say {
    ($($arg:tt)*) => {
        emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

mod cli;

use cli::*;

use clap::Parser;
use oar_tiles::commands::{self, Server, Session};
use oar_tiles::{changes, database};
use oar_tiles::{
    ChangedList, Config, Error, ExitCode, OutputTarget, ProgressKind, RunSettings, SeedJob,
    SeedOptions, StoreConfig, WatchJob,
};

fn main() -> ProcessExit {
    let cli = Cli::parse();
    raise_open_file_limit();
    // A watcher logs one line per cycle: the seed's own per-run lines would repeat every cycle.
    let watching = matches!(cli.command, Command::Watch(_));
    init_logging(cli.quiet, watching, cli.log_format);
    let outcome = match cli.command {
        Command::Seed(args) => run_seed(args, cli.quiet),
        Command::Inspect(args) => run_inspect(args),
        Command::Validate(args) => run_validate(args),
        Command::Serve(args) => run_serve(args),
        Command::Changes(args) => run_changes(args),
        Command::Watch(args) => run_watch(args),
        Command::Merge(args) => run_merge(args),
        Command::Finalize(args) => run_finalize(args),
        Command::ShardPlan(args) => run_shard_plan(args),
        Command::Config(action) => run_config(action),
    };
    let code = match outcome {
        Ok(()) => ExitCode::Success,
        // A watcher runs until it is asked to stop: the signal is its end, not an error, and the
        // seed's message (a run's tiles, a seed's progress) says nothing true about a watcher.
        Err(err @ Error::Stopped { signal }) if watching => {
            tracing::info!(
                "stopped by {signal}: watch ends; a cycle it was running is rolled back and the \
                 next start catches up from each output's watermark"
            );
            err.exit_code()
        }
        Err(err) => {
            eprintln!("error: {err}");
            err.exit_code()
        }
    };
    ProcessExit::from(code as u8)
}

fn init_logging(quiet: bool, quiet_modules: bool, format: LogFormat) {
    let default = match (quiet, quiet_modules) {
        (true, _) => "warn",
        (false, true) => "info,oar_tiles::seed=warn,oar_tiles::state=warn",
        (false, false) => "info",
    };
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
        // The blocking pool compresses tiles (and does the other blocking work): named, so a
        // profile or the benchmark tells its CPU from the thread that drives the renders.
        .thread_name("oar-tiles-pool")
        .enable_all()
        .build()
        .map_err(|source| Error::System {
            what: "cannot start the async runtime".into(),
            source,
        })
}

fn run_config(action: ConfigAction) -> Result<(), Error> {
    let text = match action {
        ConfigAction::Schema => {
            let schema = commands::config_schema();
            // A Value always serialises; the fallback keeps this free of a panic all the same.
            let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
            text.push('\n');
            text
        }
        ConfigAction::Reference => commands::config_reference(),
    };
    emit(&text);
    Ok(())
}

fn run_changes(args: ChangesArgs) -> Result<(), Error> {
    let path = Config::locate(args.config.as_deref())?;
    let config = Config::load(&path)?;
    runtime()?.block_on(async {
        let pool = database::connect(&config.database, 1).await?;
        match args.action {
            ChangesAction::Install => {
                let tables = changes::install(&pool, &config).await?;
                say!("change capture installed on {}", tables.join(", "));
            }
            ChangesAction::Uninstall => {
                changes::uninstall(&pool, &config).await?;
                say!("change capture removed");
            }
            ChangesAction::Status => {
                let status = changes::status(&pool, &config).await?;
                let schema = &status.schema;
                for table in &status.tables {
                    let since = table.since.as_deref().unwrap_or("a time not recorded");
                    let ours = format!("\"{}\"", schema.replace('"', "\"\""));
                    let captured = if let Some(trouble) = &table.trouble {
                        trouble.clone()
                    } else if table.schemas.iter().any(|s| s == schema || *s == ours) {
                        format!("captured since {since}")
                    } else {
                        "NOT captured (its triggers are gone: run `oar-tiles changes install`)".into()
                    };
                    let compared = match table.compared.as_slice() {
                        [] => "not recorded (installed by an earlier version)".to_string(),
                        [all] if all == "*" => "every column (a layer filters the table)".to_string(),
                        columns => columns.join(", "),
                    };
                    say!(
                        "{}: {} change(s) in the log of schema `{schema}`, {captured}; capturing schemas: {}; compared on UPDATE: {compared}",
                        table.table,
                        table.changes,
                        if table.schemas.is_empty() { "none".to_string() } else { table.schemas.join(", ") }
                    );
                }
                if status.consumers.is_empty() {
                    say!(
                        "no output has recorded a watermark in schema `{schema}` yet: a seed records \
                         one once change capture is installed (an output seeded before that is \
                         reseeded whole by its next `seed --dirty`)"
                    );
                }
                for (output, snapshot, updated) in &status.consumers {
                    say!("output {output}: watermark {snapshot} (updated {updated})");
                    if status.stale.contains(output) {
                        say!(
                            "  STALE: it has not read the change log for over {} \
                             ([changes] stale_consumer_after) and holds back its pruning; seed it, \
                             or if it no longer exists: oar-tiles changes forget '{output}'",
                            status.stale_after
                        );
                    }
                }
            }
            ChangesAction::Forget { output } => {
                let forgotten = changes::forget(&pool, &config.change_schema, &output).await?;
                if forgotten.is_empty() {
                    say!(
                        "no consumer of the change log in schema `{}` is named {output}: \
                         `oar-tiles changes status` lists them",
                        config.change_schema
                    );
                }
                for name in forgotten {
                    say!("forgot output {name}: it no longer holds back pruning");
                }
            }
        }
        Ok(())
    })
}

fn run_inspect(args: InspectArgs) -> Result<(), Error> {
    let inventory = json_on_error(args.json, || {
        let store_settings = match &args.config {
            Some(path) => Config::load(path)?.store,
            None => StoreConfig::default(),
        };
        let target = OutputTarget::parse(&args.output)?;
        runtime()?.block_on(commands::inspect(
            &args.output,
            &target,
            &store_settings,
            &args.extension,
        ))
    })?;
    if args.json {
        emit(&(serde_json::to_string_pretty(&inventory).expect("inventories serialize") + "\n"));
    } else {
        emit(&inventory.to_text());
    }
    Ok(())
}

fn run_validate(args: ValidateArgs) -> Result<(), Error> {
    let report = json_on_error(args.json, || {
        let config = match (&args.config, args.against_db) {
            (Some(path), _) => Some(Config::load(path)?),
            (None, true) => Some(Config::load(&Config::locate(None)?)?),
            (None, false) => None,
        };
        let options = commands::ValidateOptions {
            outputs: args.outputs.clone(),
            extension: args.extension.clone(),
            tileset: args.tileset.clone(),
            against_db: args.against_db.then_some(if args.all {
                commands::DbCheck::All
            } else {
                commands::DbCheck::Sample(args.sample)
            }),
            repair_list: args.repair_list.clone(),
        };
        runtime()?.block_on(commands::validate(&options, config.as_ref()))
    })?;
    if args.json {
        emit(&(serde_json::to_string_pretty(&report).expect("reports serialize") + "\n"));
    } else {
        emit(&report.to_text());
    }
    match report.problems {
        0 => Ok(()),
        problems => Err(Error::Invalid {
            problems,
            outputs: report
                .outputs
                .iter()
                .filter(|o| o.problems.count > 0)
                .count(),
        }),
    }
}

/// Runs `work`; with `--json`, an error is printed on stdout too, as a JSON document in place of
/// the report (`{"error": {"message", "exit_code"}}`), so a script that parses stdout learns why
/// there is no report instead of failing on empty input. It has no `problems` count, so no check
/// of one can mistake an error for a clean result.
fn json_on_error<T>(json: bool, work: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    let outcome = work();
    if let (true, Err(err)) = (json, &outcome) {
        let document = serde_json::json!({
            "error": {
                "message": err.to_string(),
                "exit_code": err.exit_code() as u8,
            }
        });
        emit(&(serde_json::to_string_pretty(&document).expect("JSON serializes") + "\n"));
    }
    outcome
}

/// Writes a report to stdout; a reader that went away (`| head`) is no error, and no panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn run_serve(args: ServeArgs) -> Result<(), Error> {
    let store_settings = match &args.config {
        Some(path) => Config::load(path)?.store,
        None => StoreConfig::default(),
    };
    runtime()?.block_on(async {
        let server = Server::open(
            &args.outputs,
            &store_settings,
            &args.extension,
            args.size_budget,
        )
        .await?
        .following_watch(args.watch.as_ref());
        let listener = commands::bind_server(args.listen).await?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::Usage(format!("cannot read the listening address: {e}")))?;
        for line in server.describe() {
            say!("{line}");
        }
        // The URL comes last, so a script that reads up to it has read everything printed.
        say!("serving at http://{address}/");
        commands::serve(server, listener, &args.public_host).await
    })
}

fn run_seed(args: SeedArgs, quiet: bool) -> Result<(), Error> {
    let path = Config::locate(args.config.as_deref())?;
    let job = SeedJob::resolve(Config::load(&path)?, args.options.into())?;
    let progress = if quiet {
        ProgressKind::Quiet
    } else {
        ProgressKind::detect()
    };
    let outcome = runtime()?.block_on(async {
        let mut summaries = commands::seed(&job, progress).await?;
        if job.run.verify_sample > 0 && !job.run.dry_run {
            commands::verify_sample(&job, job.run.verify_sample, &mut summaries).await?;
        }
        Ok(summaries)
    });
    commands::write_metrics(&job, &outcome)?;
    let summaries = outcome?;
    // Quiet runs print only what changed or failed: cron mails any output at all.
    for summary in summaries
        .iter()
        .filter(|summary| !quiet || summary.is_news())
    {
        emit(&summary.to_text());
    }
    if !quiet || summaries.iter().any(|summary| summary.is_news()) {
        for line in commands::partition_totals(&job, &summaries) {
            say!("{line}");
        }
    }
    commands::write_reports(&job, &summaries)
}

fn run_shard_plan(mut args: ShardPlanArgs) -> Result<(), Error> {
    let from_env = std::env::var("OAR_TILES_SHARDS").ok();
    // The count is the plan's, not a shard's: the job resolves as a whole run.
    let shards = match (args.options.shards.take(), from_env.as_deref()) {
        (Some(shards), _) => shards,
        (None, Some(text)) => text.trim().parse().map_err(|_| {
            Error::Usage(format!("OAR_TILES_SHARDS={text} is not a number of shards"))
        })?,
        (None, None) => return Err(Error::Usage("shard-plan needs --shards N".into())),
    };
    if shards == 0 {
        return Err(Error::Usage("--shards must be at least 1".into()));
    }
    let path = Config::locate(args.config.as_deref())?;
    let job = SeedJob::resolve(Config::load(&path)?, args.options.into())?;
    let planned = runtime()?.block_on(async {
        let session = Session::open(&job).await?;
        session.shard_plans(shards).await
    })?;
    for tileset in &planned {
        let plan = &tileset.plan;
        let total: u64 = plan.ranges.iter().map(|r| r.weight).sum();
        say!(
            "tileset {}: {} shards, split zoom {}, heaviest shard {:.3} x mean",
            tileset.tileset,
            plan.shards(),
            plan.split_zoom,
            plan.imbalance()
        );
        for (index, range) in plan.ranges.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                100.0 * range.weight as f64 / total as f64
            };
            let dealt = plan
                .top
                .dealt
                .iter()
                .filter(|d| d.shard == index as u32)
                .map(|d| format!("{}/{}/{}", d.z, d.x, d.y))
                .collect::<Vec<_>>();
            let top = if plan.top.shard == Some(index as u32) && plan.split_zoom > 0 {
                ", with the top".to_string()
            } else if !dealt.is_empty() {
                format!(", dealt top tile(s) {}", dealt.join(" "))
            } else {
                String::new()
            };
            say!("shard {index}: weight {} ({share:.1}%){top}", range.weight);
        }
        // The top renders as leaves its shards' probes find, never as a chain before a subtree;
        // the dearest single tile is the floor no number of shards goes below.
        if plan.split_zoom > 0 {
            let who = match plan.top.shard {
                Some(shard) => format!("rendered whole by shard {shard} beside its range"),
                None if !plan.top.dealt.is_empty() => format!(
                    "its {} heaviest tile(s) dealt to shards by size, each other with the range \
                     holding its block",
                    plan.top.dealt.len()
                ),
                None => "spread: each tile with the range holding its block".to_string(),
            };
            say!(
                "top: zooms above {}, weight {}, dearest tile {}, {who}",
                plan.split_zoom,
                plan.top.weight,
                plan.top.dearest
            );
        }
        say!(
            "floor: the dearest single tile, weight {} (µs of CPU)",
            plan.dearest
        );
        if let Some(note) = &tileset.store_rate {
            say!("{note}");
        }
        if let Some(stored) = &tileset.stored {
            say!("plan stored in {stored}");
        }
    }
    Ok(())
}

fn run_merge(args: MergeArgs) -> Result<(), Error> {
    let report = oar_tiles::merge_mbtiles(&args.out, &args.parts)?;
    say!(
        "merged {} part(s), {} tiles, into {} (watermark {})",
        args.parts.len(),
        report.tiles,
        args.out.display(),
        report.snapshot
    );
    Ok(())
}

fn run_finalize(args: FinalizeArgs) -> Result<(), Error> {
    let path = Config::locate(args.config.as_deref())?;
    let options = SeedOptions {
        tilesets: args.tilesets,
        output: args.output,
        run: RunSettings {
            wait_lock: args.wait_lock,
            ..Default::default()
        },
        ..SeedOptions::default()
    };
    // The whole output is finalized, whatever shard index the container was started with.
    let job = SeedJob::resolve_with(Config::load(&path)?, options, |_| None)?;
    let changed = match &args.changed_list {
        Some(path) => ChangedList::create(path)?,
        None => ChangedList::disabled(),
    };
    let done = runtime()?.block_on(async {
        let done = commands::finalize(&job, changed.clone()).await?;
        // The list takes what the outboxes hold for it once it is in place.
        changed.close_and_acknowledge().await?;
        Ok::<_, Error>(done)
    })?;
    for output in &done {
        say!(
            "finalized tileset {}: {} shard(s), {} tiles, {} stale tile(s) deleted, into {} \
             (watermark {})",
            output.tileset,
            output.shards,
            output.tiles,
            output.deleted,
            output.output,
            output.snapshot
        );
        for purge in &output.purges {
            match &purge.failed {
                None => say!(
                    "  cdn `{}`: {} request(s), {} path(s)",
                    purge.target, purge.requests, purge.paths
                ),
                Some(failed) => {
                    return Err(Error::output(
                        format!("cdn `{}` of {}", purge.target, output.output),
                        format!(
                            "{failed}; the output is finalized, and the changes stay in its outbox for the next run to purge"
                        ),
                    ))
                }
            }
        }
    }
    Ok(())
}

fn run_watch(args: WatchArgs) -> Result<(), Error> {
    let path = Config::locate(args.config.as_deref())?;
    let job = WatchJob::resolve(Config::load(&path)?, args.options.into())?;
    runtime()?.block_on(commands::watch(&job))
}

/// Raises the soft limit of open files to the hard one, as servers do at start: the default soft
/// limit (1024 on most systems) is below what `watch`'s event streams, a wide pool and a tree's
/// writes may hold at once. Where it cannot be raised the limit stays, and `watch` sizes its
/// client cap to it.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("cannot raise the open-file limit: {err}");
        }
    }
}
