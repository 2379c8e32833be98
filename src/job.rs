//! Turns a config file and the command line's overrides into one resolved, validated seed job, so the
//! engine never sees half-checked input.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, DatabaseConfig, S3Config, TilesetConfig};
use crate::error::{Error, Result};
use crate::sink::OutputTarget;
use crate::tile::{BBox, TileCoord, ZoomRange};

/// What the operator asked for on the command line; `None` means "as the config says".
#[derive(Debug, Clone, Default)]
pub struct SeedOptions {
    /// Tilesets to seed; empty means all.
    pub tilesets: Vec<String>,
    /// Zoom range override.
    pub zooms: Option<ZoomRange>,
    /// Bbox override.
    pub bbox: Option<BBox>,
    /// Output override (only with a single tileset).
    pub output: Option<String>,
    /// Tiles rendered at once, and connections in the pool.
    pub concurrency: Option<usize>,
    /// Count the tiles each zoom would query, render nothing.
    pub dry_run: bool,
    /// Where to write the machine-readable summary.
    pub summary_json: Option<PathBuf>,
    /// Where to list the tiles written with new bytes or deleted.
    pub changed_list: Option<PathBuf>,
    /// Fail on the first tile over its tileset's size budget.
    pub strict_size: bool,
    /// Re-render only what changed since the output's watermark.
    pub dirty: bool,
    /// Render exactly the `z/x/y` tiles listed in this file.
    pub tiles_from: Option<PathBuf>,
    /// Stop a reseed cleanly after this long.
    pub max_duration: Option<Duration>,
    /// Wait for another job's lock on an output instead of refusing.
    pub wait_lock: bool,
    /// Finish the other tiles when some fail, and list the failed ones here.
    pub keep_going: Option<PathBuf>,
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
    pub s3: S3Config,
    /// Schema of the change log.
    pub change_schema: String,
    /// Tiles rendered at once (also the pool size).
    pub concurrency: usize,
    /// Tilesets in config order.
    pub tilesets: Vec<TilesetJob>,
    /// Whether nothing is rendered or written.
    pub dry_run: bool,
    /// Where to write the machine-readable summary.
    pub summary_json: Option<PathBuf>,
    /// Where to list the tiles written with new bytes or deleted.
    pub changed_list: Option<PathBuf>,
    /// Fail on the first tile over its tileset's size budget.
    pub strict_size: bool,
    /// Which tiles to render.
    pub selection: Selection,
    /// Stop a reseed cleanly after this long.
    pub max_duration: Option<Duration>,
    /// Wait for another job's lock on an output instead of refusing.
    pub wait_lock: bool,
    /// Finish the other tiles when some fail, and list the failed ones here.
    pub keep_going: Option<PathBuf>,
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
    /// Where its tiles go; `None` only in a dry run.
    pub output: Option<OutputTarget>,
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
        let tile: TileCoord = line.parse().map_err(|message| Error::Config {
            path: path.to_path_buf(),
            line: Some(index + 1),
            column: None,
            message,
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
        for name in &options.tilesets {
            if !config.tilesets.iter().any(|t| &t.name == name) {
                let known: Vec<&str> = config.tilesets.iter().map(|t| t.name.as_str()).collect();
                return Err(Error::Usage(format!(
                    "unknown tileset `{name}` (the config {} defines: {})",
                    config.path.display(),
                    known.join(", ")
                )));
            }
        }
        let selected: Vec<TilesetConfig> = config
            .tilesets
            .into_iter()
            .filter(|t| options.tilesets.is_empty() || options.tilesets.contains(&t.name))
            .collect();
        if options.output.is_some() && selected.len() > 1 {
            return Err(Error::Usage(format!(
                "--output names one output but {} tilesets are selected; pick one with --tileset",
                selected.len()
            )));
        }
        let selection = match (&options.tiles_from, options.dirty) {
            (Some(_), true) => {
                return Err(Error::Usage(
                    "--dirty and --tiles-from cannot be combined".into(),
                ))
            }
            (Some(path), false) => Selection::List(read_tile_list(path)?),
            (None, true) => Selection::Dirty,
            (None, false) => Selection::Pyramid,
        };
        if options.dry_run && selection != Selection::Pyramid {
            return Err(Error::Usage(
                "--dry-run counts a full seed; it cannot be combined with --dirty or --tiles-from"
                    .into(),
            ));
        }
        if options.max_duration.is_some() && selection == Selection::Pyramid {
            return Err(Error::Usage(
                "--max-duration applies to --dirty and --tiles-from runs".into(),
            ));
        }
        let concurrency = options.concurrency.unwrap_or(config.database.pool_size);
        if !(1..=256).contains(&concurrency) {
            return Err(Error::Usage(format!(
                "--concurrency {concurrency} must lie in 1..=256"
            )));
        }
        let mut tilesets = Vec::new();
        for tileset in selected {
            let output = match options.output.as_deref().or(tileset.output.as_deref()) {
                Some(output) => Some(OutputTarget::parse(output)?),
                None if options.dry_run => None,
                None => {
                    return Err(Error::Usage(format!(
                        "tileset `{}` has no output: pass --output or set `output` in the config",
                        tileset.name
                    )))
                }
            };
            tilesets.push(TilesetJob {
                zooms: options.zooms.unwrap_or(tileset.zooms),
                bbox: options.bbox.unwrap_or(tileset.bbox),
                output,
                tileset,
            });
        }
        Ok(SeedJob {
            database: config.database,
            s3: config.s3,
            change_schema: config.change_schema,
            concurrency,
            tilesets,
            dry_run: options.dry_run,
            summary_json: options.summary_json,
            changed_list: options.changed_list,
            strict_size: options.strict_size,
            selection,
            max_duration: options.max_duration,
            wait_lock: options.wait_lock,
            keep_going: options.keep_going,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const TWO_TILESETS: &str = r#"
[database]
url = "postgresql://localhost/oar"
pool_size = 3
[[tileset]]
name = "all"
output = "/tmp/all.mbtiles"
maxzoom = 12
[[tileset.layer]]
name = "f"
table = "f"
[[tileset]]
name = "bd"
[[tileset.layer]]
name = "f"
table = "f"
filter = "country_code = 'BD'"
"#;

    fn config() -> Config {
        Config::parse(Path::new("c.toml"), TWO_TILESETS, None).unwrap()
    }

    #[test]
    fn the_command_line_overrides_the_config() {
        let options = SeedOptions {
            tilesets: vec!["all".into()],
            zooms: Some(ZoomRange::new(2, 5).unwrap()),
            output: Some("x.mbtiles".into()),
            ..Default::default()
        };
        let job = SeedJob::resolve(config(), options).unwrap();
        assert_eq!(job.concurrency, 3);
        assert_eq!(job.tilesets.len(), 1);
        assert_eq!(job.tilesets[0].zooms, ZoomRange::new(2, 5).unwrap());
        assert_eq!(
            job.tilesets[0].output,
            Some(OutputTarget::Mbtiles("x.mbtiles".into()))
        );
    }

    #[test]
    fn unknown_tilesets_and_missing_outputs_are_usage_errors() {
        let options = SeedOptions {
            tilesets: vec!["nope".into()],
            ..Default::default()
        };
        let err = SeedJob::resolve(config(), options).unwrap_err();
        assert!(err.to_string().contains("unknown tileset `nope`"), "{err}");
        let err = SeedJob::resolve(config(), SeedOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("tileset `bd` has no output"),
            "{err}"
        );
        let dry = SeedOptions {
            dry_run: true,
            ..Default::default()
        };
        assert_eq!(SeedJob::resolve(config(), dry).unwrap().tilesets.len(), 2);
    }
}
