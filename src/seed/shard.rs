//! `oar-tiles shard-plan`: weighs each tileset's data per tile and cuts it into shards, printing the
//! cut and storing it beside an MBTiles output, where every shard of the run will read it.

use std::path::{Path, PathBuf};

use deadpool_postgres::Pool;

use super::prepare::Prepared;
use super::tileset::settings_digest;
use super::Session;
use crate::config::OutputTarget;
use crate::error::{Error, Result};
use crate::job::ShardJob;
use crate::plan::shard::{CostModel, ShardPlan, BALANCE_TARGET};
use crate::plan::PyramidWalk;
use crate::render::count::rows_per_tile;
use crate::tile::in_scope;

/// One tileset's plan and where it was stored (`None` in a dry run).
#[derive(Debug, Clone)]
pub struct PlannedTileset {
    /// The tileset's name.
    pub tileset: String,
    /// The cut.
    pub plan: ShardPlan,
    /// The plan file written, if any.
    pub stored: Option<PathBuf>,
}

/// Where a shard plan of an output is stored: a file beside an MBTiles output.
pub fn plan_path(target: &OutputTarget) -> Result<PathBuf> {
    match target {
        OutputTarget::Mbtiles(path) => {
            let mut name = path.as_os_str().to_os_string();
            name.push(".shard-plan.json");
            Ok(PathBuf::from(name))
        }
        other => Err(Error::Usage(format!(
            "sharded runs write MBTiles part files for now; {} is not supported yet",
            other.describe()
        ))),
    }
}

impl Session<'_> {
    /// Plans `shards` shards for every tileset of the job; stores each plan unless the job is a
    /// dry run.
    pub async fn shard_plans(&self, shards: u32) -> Result<Vec<PlannedTileset>> {
        let mut planned = Vec::new();
        for prepared in &self.prepared {
            let plan = plan_tileset(&self.pool, prepared, shards).await?;
            let tileset = prepared.tileset;
            let stored = match (&tileset.output, self.job.run.dry_run) {
                (Some(target), false) => {
                    // Under a batch engine's index the output is already the shard's part file.
                    let path = match &tileset.shard {
                        Some(shard) => shard.plan_file.clone(),
                        None => plan_path(target)?,
                    };
                    write_atomically(&path, &plan.to_json())?;
                    Some(path)
                }
                _ => None,
            };
            planned.push(PlannedTileset {
                tileset: tileset.tileset.name.clone(),
                plan,
                stored,
            });
        }
        Ok(planned)
    }
}

async fn plan_tileset(pool: &Pool, prepared: &Prepared<'_>, shards: u32) -> Result<ShardPlan> {
    let tileset = prepared.tileset;
    let layers = &prepared.layers;
    let extent = tileset.tileset.extent;
    // A clustered tile carries at most one feature per cell and layer; the planner needs one bound
    // for the tileset, so it takes it only when every layer clusters.
    let cluster = layers
        .iter()
        .map(|l| l.config.cluster)
        .collect::<Option<Vec<_>>>()
        .filter(|c| !c.is_empty())
        .map(|clusters| {
            let maxzoom = clusters.iter().map(|c| c.maxzoom).min().unwrap_or(0);
            let cells: u64 = clusters
                .iter()
                .map(|c| u64::from(extent / c.cell.max(1)).pow(2))
                .sum();
            (maxzoom, cells)
        });
    let model = CostModel {
        zooms: tileset.zooms,
        cluster,
    };
    let digest = settings_digest(prepared);
    let bbox = tileset.bbox;
    let zooms = tileset.zooms;
    // One counting query per zoom, from the top down, until a cut is balanced: deeper zooms weigh
    // finer but put more of the work above the split.
    let mut best: Option<ShardPlan> = None;
    for split in zooms.levels() {
        let rows: Vec<_> = rows_per_tile(pool, layers, split)
            .await?
            .into_iter()
            .filter(|(tile, _)| in_scope(*tile, zooms, &bbox))
            .collect();
        let plan = ShardPlan::at_split(&model, split, &rows, shards, &digest)?;
        if plan.imbalance() <= BALANCE_TARGET {
            return Ok(plan);
        }
        if best
            .as_ref()
            .is_none_or(|b| plan.imbalance() < b.imbalance())
        {
            best = Some(plan);
        }
    }
    best.ok_or_else(|| {
        Error::Usage(format!(
            "tileset `{}` has no zoom to split at",
            tileset.tileset.name
        ))
    })
}

/// A shard's walk: the plan stored beside the output, made now by the first shard that finds none
/// (later shards read that one, so all use the same cut), checked against the shard and settings.
pub(super) async fn shard_walk(
    pool: &Pool,
    prepared: &Prepared<'_>,
    shard: &ShardJob,
) -> Result<PyramidWalk> {
    let path = &shard.plan_file;
    let read = |path: &Path| -> Result<Option<ShardPlan>> {
        match std::fs::read_to_string(path) {
            Ok(text) => ShardPlan::from_json(&text, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::File {
                path: path.to_path_buf(),
                message: format!("cannot read the shard plan: {e}"),
            }),
        }
    };
    let plan = match read(path)? {
        Some(plan) => plan,
        None => {
            let plan = plan_tileset(pool, prepared, shard.spec.count).await?;
            if store_if_absent(path, &plan.to_json())? {
                tracing::info!("shard plan stored in {}", path.display());
                plan
            } else {
                // Another shard stored its plan first: that one is the run's partition.
                read(path)?.ok_or_else(|| Error::File {
                    path: path.clone(),
                    message: "the shard plan vanished while it was read".into(),
                })?
            }
        }
    };
    plan.check(shard.spec, &settings_digest(prepared))
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    let tileset = prepared.tileset;
    PyramidWalk::for_shard(tileset.bbox, tileset.zooms, plan, shard.spec)
}

/// Writes `text` to `path` unless it exists; false when another process stored one first. The
/// file appears whole: written under a private name, then linked into place, which fails rather
/// than replaces.
fn store_if_absent(path: &Path, text: &str) -> Result<bool> {
    let mut private = path.as_os_str().to_os_string();
    private.push(format!(".{}.partial", std::process::id()));
    let private = PathBuf::from(private);
    let fail = |e: std::io::Error| Error::File {
        path: path.to_path_buf(),
        message: format!("cannot store the shard plan: {e}"),
    };
    std::fs::write(&private, text).map_err(fail)?;
    let linked = std::fs::hard_link(&private, path);
    let _ = std::fs::remove_file(&private);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(fail(e)),
    }
}

fn write_atomically(path: &std::path::Path, text: &str) -> Result<()> {
    let mut partial = path.as_os_str().to_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let fail = |e: std::io::Error| Error::File {
        path: path.to_path_buf(),
        message: format!("cannot write the shard plan: {e}"),
    };
    std::fs::write(&partial, text).map_err(fail)?;
    std::fs::rename(&partial, path).map_err(fail)
}
