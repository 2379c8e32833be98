//! The checks and steps of [`super::SeedJob::resolve_with`]: which tilesets a run takes, what it
//! renders of them, whether it may be a shard, and each tileset's job with its output.

use std::path::Path;

use super::{read_tile_list, SeedOptions, Selection, ShardJob, ShardSpec, TilesetJob};
use crate::config::{OutputTarget, TilesetConfig};
use crate::error::{Error, Result};

/// The config's tilesets the options select (all when none is named); refuses a name the config
/// at `path` does not define, and `--output` for more than one tileset.
pub(super) fn select_tilesets(
    tilesets: Vec<TilesetConfig>,
    path: &Path,
    options: &SeedOptions,
) -> Result<Vec<TilesetConfig>> {
    for name in &options.tilesets {
        if !tilesets.iter().any(|t| &t.name == name) {
            let known: Vec<&str> = tilesets.iter().map(|t| t.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "unknown tileset `{name}` (the config {} defines: {})",
                path.display(),
                known.join(", ")
            )));
        }
    }
    let selected: Vec<TilesetConfig> = tilesets
        .into_iter()
        .filter(|t| options.tilesets.is_empty() || options.tilesets.contains(&t.name))
        .collect();
    if options.output.is_some() && selected.len() > 1 {
        return Err(Error::Usage(format!(
            "--output names one output but {} tilesets are selected; pick one with --tileset",
            selected.len()
        )));
    }
    Ok(selected)
}

/// What the run renders (`--dirty`, `--tiles-from` or the pyramid), refusing the options that
/// cannot go with it on the `selected` tilesets.
pub(super) fn selection_of(options: &SeedOptions, selected: &[TilesetConfig]) -> Result<Selection> {
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
    if options.run.dry_run && matches!(selection, Selection::List(_)) {
        return Err(Error::Usage(
            "--dry-run counts a full seed or plans a --dirty reseed; it cannot be combined \
             with --tiles-from"
                .into(),
        ));
    }
    if let (true, Selection::Dirty, Some(partitioned)) = (
        options.run.dry_run,
        &selection,
        selected.iter().find(|t| t.partition_by.is_some()),
    ) {
        return Err(Error::Usage(format!(
            "tileset `{}` is partitioned (partition_by), whose --dirty reseed --dry-run cannot \
             plan yet: leave it out with --tileset",
            partitioned.name
        )));
    }
    if options.run.max_duration.is_some() && selection == Selection::Pyramid {
        return Err(Error::Usage(
            "--max-duration applies to --dirty and --tiles-from runs".into(),
        ));
    }
    if !options.partitions.is_empty() && !selected.iter().any(|t| t.partition_by.is_some()) {
        return Err(Error::Usage(
            "--partition needs a tileset with `partition_by`; none of the selected ones has it"
                .into(),
        ));
    }
    Ok(selection)
}

/// Refuses a shard of anything but a full seed, or of a partitioned tileset.
pub(super) fn check_shard(
    shard: Option<ShardSpec>,
    selection: &Selection,
    options: &SeedOptions,
    selected: &[TilesetConfig],
) -> Result<()> {
    if shard.is_some() && (*selection != Selection::Pyramid || options.run.dry_run) {
        return Err(Error::Usage(
            "a shard runs a full seed: --shard cannot be combined with --dirty, --tiles-from or \
             --dry-run (reseed the merged output instead)"
                .into(),
        ));
    }
    if let (Some(_), Some(partitioned)) =
        (shard, selected.iter().find(|t| t.partition_by.is_some()))
    {
        return Err(Error::Usage(format!(
            "tileset `{}` is partitioned (partition_by), which sharded runs do not support yet: \
             seed it without --shard, or leave it out with --tileset",
            partitioned.name
        )));
    }
    Ok(())
}

/// One selected tileset's job: its output (`--output` or the config's; a dry run of the pyramid
/// needs none) and, for a shard, what the shard writes.
pub(super) fn tileset_job(
    tileset: TilesetConfig,
    options: &SeedOptions,
    selection: &Selection,
    shard: Option<ShardSpec>,
) -> Result<TilesetJob> {
    let output = match options.output.as_deref().or(tileset.output.as_deref()) {
        Some(output) => Some(OutputTarget::parse(output)?),
        None if options.run.dry_run && *selection == Selection::Pyramid => None,
        None => {
            return Err(Error::Usage(format!(
                "tileset `{}` has no output: pass --output or set `output` in the config",
                tileset.name
            )))
        }
    };
    if let Some(output) = &output {
        if tileset.output_settings.pmtiles_versions.is_some() && !output.is_pmtiles() {
            return Err(Error::Usage(format!(
                "tileset `{}` sets pmtiles_versions, which applies to PMTiles outputs; \
                 {} is not one",
                tileset.name,
                output.describe()
            )));
        }
    }
    let (output, shard) = match (shard, output) {
        (Some(spec), Some(output)) => {
            // An MBTiles shard writes a part file of its own; tree and S3 shards write
            // their disjoint tiles straight into the output; a PMTiles shard keeps its part
            // in the archive's shard folder (`OutputTarget::sharding`).
            let written = output.shard_part(spec.index, spec.count);
            let job = ShardJob { spec, output };
            (
                Some(written.unwrap_or_else(|| job.output.clone())),
                Some(job),
            )
        }
        (_, output) => (output, None),
    };
    Ok(TilesetJob {
        zooms: options.zooms.unwrap_or(tileset.zooms),
        bbox: options.bbox.unwrap_or(tileset.bbox),
        output,
        shard,
        tileset,
        full_seed: false,
        list_prefix: None,
        tileset_output: None,
        partition_of: None,
    })
}
