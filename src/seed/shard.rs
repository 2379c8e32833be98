//! `oar-tiles shard-plan`: weighs each tileset's data per tile and cuts it into shards, printing the
//! cut and storing it in the output (beside an MBTiles file), where every shard of the run reads it.

use deadpool_postgres::Pool;

use super::prepare::Prepared;
use super::{Ready, Session};
use crate::error::{Error, Result};
use crate::job::ShardJob;
use crate::plan::shard::{CostModel, ShardPlan, SplitSearch};
use crate::plan::PyramidWalk;
use crate::render::count::rows_per_tile;
use crate::sink::parts::plan_id;
use crate::sink::shards::ShardStore;
use crate::tile::in_scope;

/// One tileset's plan and where it was stored (`None` in a dry run).
#[derive(Debug, Clone)]
pub struct PlannedTileset {
    /// The tileset's name.
    pub tileset: String,
    /// The cut.
    pub plan: ShardPlan,
    /// The plan's file or object, if it was stored.
    pub stored: Option<String>,
}

impl Session<'_> {
    /// Plans `shards` shards for every tileset of the job; stores each plan in its output unless
    /// the job is a dry run.
    pub async fn shard_plans(&self, shards: u32) -> Result<Vec<PlannedTileset>> {
        let mut planned = Vec::new();
        for prepared in self.prepared.iter().filter_map(Ready::own) {
            let plan = plan_tileset(&self.pool, prepared, shards).await?;
            let tileset = prepared.tileset;
            // Under a batch engine's index an MBTiles output is already the shard's part file.
            let whole = tileset
                .shard
                .as_ref()
                .map(|shard| &shard.output)
                .or(tileset.output.as_ref());
            let stored = match (whole, self.job.run.dry_run) {
                (Some(target), false) => {
                    let store = crate::sink::kind_of(target)
                        .shard_store(&self.job.s3)
                        .await?;
                    store.replace_plan(&plan.to_json()).await?;
                    Some(store.plan_location())
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
    let digest = prepared.settings_digest();
    let bbox = tileset.bbox;
    let zooms = tileset.zooms;
    // One counting query per zoom, from the top down, until a cut is balanced: deeper zooms weigh
    // finer but put more of the work above the split.
    let mut search = SplitSearch::default();
    for split in zooms.levels() {
        let rows: Vec<_> = rows_per_tile(pool, layers, split)
            .await?
            .into_iter()
            .filter(|(tile, _)| in_scope(*tile, zooms, &bbox))
            .collect();
        let plan = ShardPlan::at_split(&model, split, &rows, shards, &digest)?;
        if let Some(balanced) = search.offer(plan) {
            return Ok(balanced);
        }
    }
    search.best().ok_or_else(|| Error::Plan {
        location: "shard plan".into(),
        message: format!("tileset `{}` has no zoom to split at", tileset.tileset.name),
    })
}

/// A shard's walk and the identity of its plan: the plan stored in the output, made now by the
/// first shard that finds none (later shards read that one, so all use the same cut), checked
/// against the shard and settings.
pub(super) async fn shard_walk(
    pool: &Pool,
    prepared: &Prepared<'_>,
    shard: &ShardJob,
    store: &ShardStore,
) -> Result<(PyramidWalk, String)> {
    let location = store.plan_location();
    let text = match store.read_plan().await? {
        Some(text) => text,
        None => {
            let plan = plan_tileset(pool, prepared, shard.spec.count).await?;
            let text = plan.to_json();
            if store.store_plan_if_absent(&text).await? {
                tracing::info!("shard plan stored in {location}");
                text
            } else {
                // Another shard stored its plan first: that one is the run's partition.
                store.read_plan().await?.ok_or_else(|| {
                    Error::output(&location, "the shard plan vanished while it was read")
                })?
            }
        }
    };
    let plan = ShardPlan::from_json(&text, &location)?;
    plan.check(shard.spec, &prepared.settings_digest())
        .map_err(|e| Error::Plan {
            message: format!("{location}: {e}"),
            location,
        })?;
    let tileset = prepared.tileset;
    let walk = PyramidWalk::for_shard(tileset.bbox, tileset.zooms, plan, shard.spec)?;
    Ok((walk, plan_id(&text)))
}
