//! `oar-tiles shard-plan`: weighs each tileset's data per tile and cuts it into shards, printing the
//! cut and storing it in the output (beside an MBTiles file), where every shard of the run reads it.

use deadpool_postgres::Pool;

use super::prepare::Prepared;
use super::{Ready, Session};
use crate::coordination::parts::plan_id;
use crate::coordination::shards::ShardStore;
use crate::error::{Error, Result};
use crate::job::ShardJob;
use crate::plan::shard::{CostModel, Pyramid, ShardPlan};
use crate::plan::PyramidWalk;
use crate::render::count::rows_per_tile;

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
            let plan = plan_tileset(&self.pool, prepared, self.job.concurrency, shards).await?;
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

/// The plan of one tileset for `shards` shards rendering on `connections` connections each.
async fn plan_tileset(
    pool: &Pool,
    prepared: &Prepared<'_>,
    connections: usize,
    shards: u32,
) -> Result<ShardPlan> {
    let tileset = prepared.tileset;
    let layers = &prepared.layers;
    let extent = tileset.tileset.extent;
    // A clustered tile carries one feature per non-empty cell and layer; the planner prices the
    // tileset's tiles as one layer's, so it counts cells only when every layer clusters.
    let cluster = layers
        .iter()
        .map(|l| l.config.cluster)
        .collect::<Option<Vec<_>>>()
        .filter(|c| !c.is_empty())
        .map(|clusters| {
            let maxzoom = clusters.iter().map(|c| c.maxzoom).min().unwrap_or(0);
            // Cells are counted as tiles some zooms deeper: the finest layer's grid sets how deep.
            let cells: u64 = clusters
                .iter()
                .map(|c| u64::from(extent / c.cell.max(1)).pow(2))
                .max()
                .unwrap_or(1);
            (maxzoom, cells)
        });
    let model = CostModel {
        zooms: tileset.zooms,
        cluster,
        maintained_cells: prepared.cells_maintained,
    };
    let digest = prepared.settings_digest();
    let started = std::time::Instant::now();
    // One grouped query at the census zoom; every zoom's estimate is aggregated from it.
    let census = model.census_zoom();
    let rows = rows_per_tile(pool, layers, census).await?;
    let counted = started.elapsed();
    let pyramid = Pyramid::from_census(model, &tileset.bbox, &rows);
    let connections = u32::try_from(connections).unwrap_or(u32::MAX);
    let plan = ShardPlan::most_balanced(
        &pyramid,
        tileset.zooms.levels(),
        connections,
        shards,
        &digest,
    );
    tracing::info!(
        "shard plan of `{}`: census of {} tiles at zoom {census} in {:.2} s, cut in {:.2} s",
        tileset.tileset.name,
        rows.len(),
        counted.as_secs_f64(),
        (started.elapsed() - counted).as_secs_f64()
    );
    plan.map_err(|e| Error::Plan {
        location: "shard plan".into(),
        message: format!("tileset `{}`: {e}", tileset.tileset.name),
    })
}

/// A shard's walk and the identity of its plan: the plan stored in the output, made now by the
/// first shard that finds none (later shards read that one, so all use the same cut), checked
/// against the shard and settings.
pub(super) async fn shard_walk(
    pool: &Pool,
    prepared: &Prepared<'_>,
    connections: usize,
    shard: &ShardJob,
    store: &ShardStore,
) -> Result<(PyramidWalk, String)> {
    let location = store.plan_location();
    let text = match store.read_plan().await? {
        Some(text) => text,
        None => {
            let plan = plan_tileset(pool, prepared, connections, shard.spec.count).await?;
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
