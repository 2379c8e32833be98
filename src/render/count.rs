//! Rows per tile of one zoom, counted in the database with one grouped query per layer: the weights
//! a shard plan cuts ([`crate::plan::shard`]).

use std::collections::BTreeMap;

use deadpool_postgres::Pool;

use super::source::{quoted_table, LayerSource};
use crate::error::{DbError, Result};
use crate::tile::{TileCoord, MERCATOR_HALF_WORLD};

/// The rows of every layer per non-empty tile of zoom `z`, summed over the layers. A row counts in
/// the tile holding a point of its geometry (`ST_PointOnSurface`); the layer's filter applies.
pub async fn rows_per_tile(
    pool: &Pool,
    layers: &[LayerSource],
    z: u8,
) -> Result<Vec<(TileCoord, u64)>> {
    let client = pool.get().await?;
    let side = 1i64 << z;
    let size = 2.0 * MERCATOR_HALF_WORLD / side as f64;
    let mut counts: BTreeMap<TileCoord, u64> = BTreeMap::new();
    for layer in layers {
        let geometry = layer.geometry_of("t");
        let filter = layer.config.filter.as_deref().unwrap_or("true");
        // Clamped so rows on the world's edge (and beyond Mercator's latitudes) count in the edge
        // tiles instead of outside the zoom.
        let sql = format!(
            "SELECT LEAST(GREATEST(floor((ST_X(m) + {h}) / {size})::int8, 0), {last}) AS x,
                    LEAST(GREATEST(floor(({h} - ST_Y(m)) / {size})::int8, 0), {last}) AS y,
                    count(*)::int8
             FROM (SELECT ST_Transform(ST_PointOnSurface({geometry}), 3857) AS m
                   FROM {table} t
                   WHERE {geometry} IS NOT NULL AND NOT ST_IsEmpty({geometry}) AND ({filter})) rows
             GROUP BY 1, 2",
            h = MERCATOR_HALF_WORLD,
            last = side - 1,
            table = quoted_table(&layer.config),
        );
        let rows = client
            .query(&sql, &[])
            .await
            .map_err(DbError::during(format!(
                "counting the rows of layer `{}` per tile of zoom {z}",
                layer.config.name
            )))?;
        for row in rows {
            let (x, y, n): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            let tile =
                TileCoord::new(z, x as u32, y as u32).expect("x and y are clamped into the zoom");
            *counts.entry(tile).or_default() += n.max(0) as u64;
        }
    }
    Ok(counts.into_iter().collect())
}
