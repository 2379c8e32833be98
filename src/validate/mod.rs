//! `oar-tiles validate`: proves an output well-formed, complete and equal to the database, for CI
//! and audits. Four passes, each reporting what it finds with the tile or the part at fault:
//!
//! 1. the **container**, by the output's kind ([`crate::sink::check_container`]: MBTiles 1.3,
//!    TileJSON 3.0 beside a tree or prefix, PMTiles v3);
//! 2. **every tile** as MVT 2.1 ([`mvt`]), read once in `agg_tiles_hash` order (`tiles.rs`);
//! 3. **consistency**: the metadata's zooms, bounds, `vector_layers` and `agg_tiles_hash` against
//!    what the tiles hold; a partitioned output's index against its partitions;
//! 4. with `--against-db`, **the database** (`against_db.rs`): a sample of tiles, or all of them,
//!    rendered again into a throwaway output with the settings the output recorded, and compared.

mod against_db;
pub mod mvt;
mod tiles;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, IndexLocation, OutputTarget, StoreConfig};
use crate::coordination::partitions::{read_index, PartitionIndex};
use crate::error::{Error, Result};
use crate::sink::OutputReader;
use crate::tile::TileCoord;
pub use against_db::{DbCheck, DbComparison};

/// Problems listed per output at most; the count goes on past it.
const LISTED_PROBLEMS: usize = 10_000;

/// What `oar-tiles validate` is asked.
#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// The outputs, as the user wrote them.
    pub outputs: Vec<String>,
    /// File extension of directory and S3 tiles.
    pub extension: String,
    /// The tileset that wrote the outputs, when the config names none of them as its output.
    pub tileset: Option<String>,
    /// Compare with the database; needs `config`.
    pub against_db: Option<DbCheck>,
    /// Write the tiles found wrong as a `--tiles-from` list to this file.
    pub repair_list: Option<PathBuf>,
}

/// One thing found wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The tile at fault, `z/x/y`, when it is one tile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tile: Option<String>,
    /// Which pass found it: `container`, `mvt`, `tile`, `metadata`, `index`, `database`.
    pub check: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    fn tile(tile: TileCoord, check: &str, message: impl Into<String>) -> Problem {
        Problem {
            tile: Some(tile.to_string()),
            check: check.to_string(),
            message: message.into(),
        }
    }

    fn output(check: &str, message: impl Into<String>) -> Problem {
        Problem {
            tile: None,
            check: check.to_string(),
            message: message.into(),
        }
    }
}

/// The problems of one output: the first [`LISTED_PROBLEMS`] listed, all counted.
#[derive(Debug, Default, Serialize)]
pub struct Problems {
    /// How many were found.
    pub count: u64,
    /// The first ones found.
    pub listed: Vec<Problem>,
}

impl Problems {
    fn push(&mut self, problem: Problem) {
        self.count += 1;
        if self.listed.len() < LISTED_PROBLEMS {
            self.listed.push(problem);
        }
    }
}

/// What validating one output found.
#[derive(Debug, Serialize)]
pub struct OutputValidation {
    /// The output, as given (a partition's, for partitions).
    pub output: String,
    /// Tiles stored.
    pub tiles: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// The hash of the tiles, computed as martin's `mbtiles` does.
    pub agg_tiles_hash: String,
    /// Whether the output says its recorded hash is pending (tiles changed since it was last
    /// computed): not a problem, and the hash recorded, if any, is not compared.
    pub hash_pending: bool,
    /// What is wrong.
    pub problems: Problems,
    /// What the seed that wrote the output warned of too (a tree's relative tile URL): said, not
    /// counted among the problems, so it does not fail the output.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The comparison with the database, with `--against-db`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DbComparison>,
}

/// What `oar-tiles validate` found, per output.
#[derive(Debug, Serialize)]
pub struct ValidationReport {
    /// One entry per output, and per partition of a partitioned output.
    pub outputs: Vec<OutputValidation>,
    /// Problems over all of them.
    pub problems: u64,
}

/// Validates every output of `options`; `config` gives the S3 settings and, for `--against-db`,
/// the tilesets that wrote the outputs.
pub async fn validate(
    options: &ValidateOptions,
    config: Option<&Config>,
) -> Result<ValidationReport> {
    let default_store = StoreConfig::default();
    let store_settings = config.map_or(&default_store, |c| &c.store);
    let mut outputs = Vec::new();
    let mut repairs = Vec::new();
    for output in &options.outputs {
        let target = OutputTarget::parse(output)?;
        let database = match &options.against_db {
            None => None,
            Some(check) => Some(against_db::Prepared::from_config(
                config.ok_or_else(|| {
                    Error::Usage("--against-db needs the config that wrote the output (-c)".into())
                })?,
                &target,
                output,
                options.tileset.as_deref(),
                *check,
            )?),
        };
        let Some(index) = read_index(&target.partition_index(), store_settings).await? else {
            let mut validated = one(output, &target, store_settings, &options.extension).await?;
            if let Some(database) = &database {
                let reader = validated
                    .reader
                    .as_ref()
                    .expect("a validated output has a reader");
                let compared = database.compare(reader, &validated.stored).await?;
                compared.report(&mut validated.validation.problems);
                repairs.extend(compared.repair_tiles());
                validated.validation.database = Some(compared);
            }
            outputs.push(validated.validation);
            continue;
        };
        outputs.extend(
            partitioned(&target, &index, database.as_ref(), store_settings, options).await?,
        );
    }
    if let Some(path) = &options.repair_list {
        write_repair_list(path, repairs)?;
    }
    let problems = outputs.iter().map(|o| o.problems.count).sum();
    Ok(ValidationReport { outputs, problems })
}

/// Validates a partitioned output: every partition `index` lists, each against the database when
/// `database` is given (rendered once, with the zooms and bbox the first readable partition
/// recorded), and the index against them, as one more output of the report.
async fn partitioned(
    target: &OutputTarget,
    index: &PartitionIndex,
    database: Option<&against_db::Prepared>,
    store_settings: &StoreConfig,
    options: &ValidateOptions,
) -> Result<Vec<OutputValidation>> {
    let mut outputs = Vec::new();
    let mut rendered = None;
    let mut index_problems = Problems::default();
    let location = target.partition_index();
    for entry in &index.partitions {
        let partition = target.for_partition(&entry.path);
        let name = partition.describe();
        if let Some(real) = leads_outside(&location, &partition) {
            index_problems.push(Problem::output(
                "index",
                format!(
                    "partition `{}` ({name}) leads outside the output, through a symbolic \
                     link, to {}: refused, not read",
                    entry.value,
                    real.display()
                ),
            ));
            continue;
        }
        let mut validated = match one(&name, &partition, store_settings, &options.extension).await {
            Ok(validated) => validated,
            Err(e) => {
                index_problems.push(Problem::output(
                    "index",
                    format!(
                        "partition `{}` is listed but cannot be read: {e}",
                        entry.value
                    ),
                ));
                continue;
            }
        };
        if validated.validation.tiles != entry.tiles {
            index_problems.push(Problem::output(
                "index",
                format!(
                    "partition `{}`: the index says {} tile(s), {name} holds {}",
                    entry.value, entry.tiles, validated.validation.tiles
                ),
            ));
        }
        if entry.features <= 0 {
            index_problems.push(Problem::output(
                "index",
                format!("partition `{}` is listed with no features", entry.value),
            ));
        }
        if let (Some(database), Some(reader)) = (database, &validated.reader) {
            if rendered.is_none() && database.partitioned() {
                rendered = Some(database.render_partitions(reader).await?);
            }
        }
        if let (Some(database), Some(rendered), Some(reader)) =
            (database, &rendered, &validated.reader)
        {
            let compared = database
                .compare_partition(
                    rendered,
                    (&entry.value, &entry.path),
                    reader,
                    &validated.stored,
                )
                .await?;
            compared.report(&mut validated.validation.problems);
            validated.validation.database = Some(compared);
        }
        outputs.push(validated.validation);
    }
    outputs.push(OutputValidation {
        output: format!(
            "{} (partition index, {} partition(s))",
            target.describe(),
            index.partitions.len()
        ),
        tiles: 0,
        bytes: 0,
        agg_tiles_hash: String::new(),
        hash_pending: false,
        problems: index_problems,
        warnings: Vec::new(),
        database: None,
    });
    Ok(outputs)
}

/// Writes the tiles `--against-db` found wrong, one `z/x/y` a line, for `seed --tiles-from`.
fn write_repair_list(path: &Path, mut repairs: Vec<TileCoord>) -> Result<()> {
    repairs.sort_by_key(|t: &TileCoord| (t.z(), t.x(), t.y()));
    repairs.dedup();
    let text: String = repairs.iter().map(|t| format!("{t}\n")).collect();
    std::fs::write(path, text).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: format!("cannot write the repair list: {e}"),
    })
}

/// Where a partition on this machine really lies, when a symbolic link takes it out of the folder
/// that holds the output's index (the tree, or the folder of a single-file output); `None` when it
/// stays inside, is not on this machine, or is not there (which reading it reports).
fn leads_outside(index: &IndexLocation, partition: &OutputTarget) -> Option<PathBuf> {
    let (IndexLocation::File(index), Some(path)) = (index, partition.local_path()) else {
        return None;
    };
    let folder = match index.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let folder = std::fs::canonicalize(folder).ok()?;
    let real = std::fs::canonicalize(path).ok()?;
    (!real.starts_with(&folder)).then_some(real)
}

/// One output validated, its reader, and the tiles it stores (for the comparison with the
/// database).
struct Validated {
    validation: OutputValidation,
    reader: Option<OutputReader>,
    stored: std::collections::BTreeSet<TileCoord>,
}

async fn one(
    output: &str,
    target: &OutputTarget,
    store_settings: &StoreConfig,
    extension: &str,
) -> Result<Validated> {
    let mut problems = Problems::default();
    let mut warnings = Vec::new();
    for finding in crate::sink::check_container(output, target, store_settings, extension).await? {
        if finding.warning {
            warnings.push(finding.message);
            continue;
        }
        problems.push(Problem {
            tile: finding.tile.map(|t| t.to_string()),
            check: "container".into(),
            message: finding.message,
        });
    }
    let mut validation = OutputValidation {
        output: output.to_string(),
        tiles: 0,
        bytes: 0,
        agg_tiles_hash: String::new(),
        hash_pending: false,
        problems: Problems::default(),
        warnings,
        database: None,
    };
    let reader = match OutputReader::open(output, target, store_settings, extension).await {
        Ok(reader) => reader,
        Err(e) if problems.count > 0 => {
            // The container pass has said why; the tiles cannot be judged.
            problems.push(Problem::output("tile", format!("cannot open it: {e}")));
            validation.problems = problems;
            return Ok(Validated {
                validation,
                reader: None,
                stored: Default::default(),
            });
        }
        Err(e) => return Err(e),
    };
    let metadata = match reader.metadata().await {
        Ok(metadata) => Some(metadata),
        // As for opening: the container pass has said why (a gzip bomb, a hot journal); the
        // tiles are still read, and the metadata is not judged.
        Err(e) if problems.count > 0 => {
            problems.push(Problem::output(
                "metadata",
                format!("cannot read the metadata: {e}"),
            ));
            None
        }
        Err(e) => return Err(e),
    };
    match tiles::scan(&reader, &mut problems).await {
        Ok(scan) => {
            if let Some(metadata) = &metadata {
                scan.check_metadata(metadata, &mut problems);
                validation.hash_pending = crate::sink::agg_hash::hash_pending(metadata);
            }
            validation.tiles = scan.tiles;
            validation.bytes = scan.bytes;
            validation.agg_tiles_hash = scan.agg_tiles_hash;
            validation.problems = problems;
            Ok(Validated {
                validation,
                reader: Some(reader),
                stored: scan.stored,
            })
        }
        Err(e) => {
            problems.push(Problem::output(
                "tile",
                format!("cannot read the tiles: {e}"),
            ));
            validation.problems = problems;
            Ok(Validated {
                validation,
                reader: Some(reader),
                stored: Default::default(),
            })
        }
    }
}

impl ValidationReport {
    /// The report as an operator reads it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for output in &self.outputs {
            let verdict = match output.problems.count {
                0 => "valid".to_string(),
                n => format!("{n} problem(s)"),
            };
            out.push_str(&format!(
                "{}: {verdict}; {} tile(s), {} byte(s){}\n",
                output.output,
                output.tiles,
                output.bytes,
                match (output.agg_tiles_hash.is_empty(), output.hash_pending) {
                    (true, _) => String::new(),
                    (false, false) => format!(", agg_tiles_hash {}", output.agg_tiles_hash),
                    (false, true) => format!(
                        ", agg_tiles_hash {} (pending: tiles changed since the output recorded \
                         it; a later run or an idle `watch` records it)",
                        output.agg_tiles_hash
                    ),
                }
            ));
            for warning in &output.warnings {
                out.push_str(&format!("  warning: {warning}\n"));
            }
            for problem in &output.problems.listed {
                match &problem.tile {
                    Some(tile) => out.push_str(&format!(
                        "  {tile}: {} ({})\n",
                        problem.message, problem.check
                    )),
                    None => out.push_str(&format!("  {} ({})\n", problem.message, problem.check)),
                }
            }
            if output.problems.count > output.problems.listed.len() as u64 {
                out.push_str(&format!(
                    "  ... and {} more\n",
                    output.problems.count - output.problems.listed.len() as u64
                ));
            }
            if let Some(database) = &output.database {
                out.push_str(&database.to_text());
            }
        }
        out
    }
}

/// `--verify-sample N` after a seed or a `watch` cycle: for each output of `job` that the run
/// wrote, `n` random stored tiles and their empty neighbours rendered again and compared; what it
/// found goes into the output's summary (and so its metrics). Partitioned tilesets are left to
/// `validate --against-db`, which renders their partitions whole.
pub async fn verify_sample(
    job: &crate::job::SeedJob,
    n: u64,
    summaries: &mut [crate::report::TilesetSummary],
) -> Result<()> {
    for tileset in &job.tilesets {
        let Some(target) = &tileset.output else {
            continue;
        };
        let output = target.describe();
        let Some(summary) = summaries.iter_mut().find(|s| s.header.output == output) else {
            continue;
        };
        if tileset.tileset.partition_by.is_some() {
            tracing::info!(
                "tileset `{}` is partitioned: --verify-sample leaves it to `validate --against-db`",
                tileset.tileset.name
            );
            continue;
        }
        let mut one = job.clone();
        one.tilesets = vec![tileset.clone()];
        let extension = &tileset.tileset.output_settings.tile_extension;
        let reader = OutputReader::open(&output, target, &job.store_settings, extension).await?;
        let stored = reader
            .tile_sizes()
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let compared = against_db::Prepared::new(one, &output, DbCheck::Sample(n))
            .compare(&reader, &stored)
            .await?;
        if compared.count_wrong() > 0 {
            tracing::warn!(
                "{output}: --verify-sample found {} wrong tile(s) of {} compared",
                compared.count_wrong(),
                compared.compared
            );
        }
        summary.verified = Some(crate::report::SampleCheck {
            compared: compared.compared,
            wrong: compared
                .repair_tiles()
                .iter()
                .map(|t| t.to_string())
                .collect(),
            pending: compared.pending.len() as u64,
        });
    }
    Ok(())
}
