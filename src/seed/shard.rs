//! `oar-tiles shard-plan`: weighs each tileset's data per tile and cuts it into shards, printing the
//! cut and storing it in the output (beside an MBTiles file), where every shard of the run reads it.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::prepare::Prepared;
use super::{Ready, Session};
use crate::config::output::WriteRate;
use crate::config::{OutputTarget, Scheme};
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
    /// What the shards' writes ask of the output's store against its documented write rate, for
    /// tile prefixes in a remote store.
    pub store_rate: Option<String>,
}

impl Session<'_> {
    /// Plans `shards` shards for every tileset of the job; stores each plan in its output unless
    /// the job is a dry run.
    pub async fn shard_plans(&self, shards: u32) -> Result<Vec<PlannedTileset>> {
        let mut planned = Vec::new();
        for prepared in self.prepared.iter().filter_map(Ready::own) {
            let (plan, tiles) =
                plan_tileset(&self.pool, prepared, self.job.concurrency, shards).await?;
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
                        .shard_store(&self.job.store_settings)
                        .await?;
                    store.replace_plan(&plan.to_json()).await?;
                    Some(store.plan_location())
                }
                _ => None,
            };
            let store_rate = match whole {
                Some(OutputTarget::Objects { bucket, .. }) => {
                    Some(store_rate_note(bucket.scheme, shards, tiles))
                }
                _ => None,
            };
            planned.push(PlannedTileset {
                tileset: tileset.tileset.name.clone(),
                plan,
                stored,
                store_rate,
            });
        }
        Ok(planned)
    }
}

/// Tiles a second one shard writes, as one of the quickstart sample's did (13,600): what the
/// shards are taken to ask of a store.
const SHARD_TILES_PER_SECOND: u64 = 13_600;

/// Seconds to write `tiles` at `rate` a second, the rate doubling every `ramp` seconds.
fn seconds_to_write(tiles: u64, rate: u64, ramp: Option<u64>) -> u64 {
    let Some(ramp) = ramp else {
        return tiles.div_ceil(rate.max(1));
    };
    let (mut left, mut rate, mut seconds) = (tiles, rate.max(1), 0);
    while left > rate * ramp {
        left -= rate * ramp;
        seconds += ramp;
        rate *= 2;
    }
    seconds + left.div_ceil(rate)
}

/// What `shards` shards writing a prefix of a store of `scheme` ask of it against its documented
/// write rate, and, past it, what the store's pace costs the run's at least `tiles` tiles.
pub fn store_rate_note(scheme: Scheme, shards: u32, tiles: u64) -> String {
    let WriteRate {
        per_second: limit,
        per,
        doubling_every: ramp,
    } = scheme.facts().rate;
    let asked = u64::from(shards) * SHARD_TILES_PER_SECOND;
    let human = |seconds: u64| humantime::format_duration(Duration::from_secs(seconds));
    if asked <= limit {
        return format!(
            "store: {shards} shard(s) at about {SHARD_TILES_PER_SECOND} tiles/s each ask \
             {asked} writes/s, within the {limit}/s documented per {per}"
        );
    }
    let paced = seconds_to_write(tiles, limit, ramp);
    let unpaced = tiles.div_ceil(asked);
    format!(
        "store: {shards} shard(s) at about {SHARD_TILES_PER_SECOND} tiles/s each ask {asked} \
         writes/s, past the {limit}/s documented per {per}: the store will refuse the excess and \
         the writers slow to its pace; the {tiles}+ tiles of the census take at least {} instead \
         of {} (more shards add no speed past {} writing one prefix; a prefix per tileset or \
         partition has a limit of its own on S3)",
        human(paced),
        human(unpaced),
        limit.div_ceil(SHARD_TILES_PER_SECOND)
    )
}

/// The plan of one tileset for `shards` shards rendering on `connections` connections each, and
/// the tiles its census found (down to the census zoom).
async fn plan_tileset(
    pool: &Pool,
    prepared: &Prepared<'_>,
    connections: usize,
    shards: u32,
) -> Result<(ShardPlan, u64)> {
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
    let plan = plan.map_err(|e| Error::Plan {
        location: "shard plan".into(),
        message: format!("tileset `{}`: {e}", tileset.tileset.name),
    })?;
    Ok((plan, pyramid.tiles()))
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
            let (plan, _) = plan_tileset(pool, prepared, connections, shard.spec.count).await?;
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

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn shards_past_a_stores_documented_rate_are_told_what_it_costs() {
        let note = store_rate_note(Scheme::S3, 4, 3_500_000);
        assert!(note.contains("past the 3500/s"), "{note}");
        assert!(note.contains("at least 16m 40s"), "{note}");
        assert!(store_rate_note(Scheme::Azure, 1, 1000).contains("within"));
        // GCS's ramp: 1,000/s for 20 minutes, then 2,000/s.
        assert_eq!(seconds_to_write(1_200_000 + 2_000, 1_000, Some(1200)), 1201);
    }
}
