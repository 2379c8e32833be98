//! Rows per tile of one zoom, counted in the database with one grouped query per layer: the weights
//! a shard plan cuts ([`crate::plan::shard`]); and the rows a partition cannot all have missed.

use std::collections::BTreeMap;

use deadpool_postgres::Pool;

use super::source::{quoted_table, LayerSource};
use super::sql::{envelope_in_srid, too_small};
use crate::db::quote_ident;
use crate::error::{DbError, Result};
use crate::tile::{mercator, BBox, TileCoord, MAX_MERCATOR_LAT, MERCATOR_HALF_WORLD};

/// The rows of every layer per non-empty tile of zoom `z`, summed over the layers. A row counts in
/// the tile holding a point of its geometry (`ST_PointOnSurface`); the layer's filter applies.
pub async fn rows_per_tile(
    pool: &Pool,
    layers: &[LayerSource],
    z: u8,
) -> Result<Vec<(TileCoord, u64)>> {
    let client = crate::db::get(pool).await?;
    let side = 1i64 << z;
    let size = 2.0 * MERCATOR_HALF_WORLD / side as f64;
    let mut counts: BTreeMap<TileCoord, u64> = BTreeMap::new();
    for layer in layers {
        let geometry = layer.geometry_of("t");
        let filter = layer.config.filter.as_deref().unwrap_or("true");
        // Points in degrees are placed by the Mercator formula, not through PROJ: a census is an
        // estimate (of work, of a walk's tiles), and ST_Transform was most of its time (0.4-0.6 s
        // of about 0.8 s over the 100k sample). A point on a tile's edge may count in its
        // neighbour either way.
        let (m, x, y) = if layer.srid == 4326 && layer.points_only {
            let lat = format!(
                "radians(LEAST(GREATEST(ST_Y(m), -{MAX_MERCATOR_LAT}), {MAX_MERCATOR_LAT}))"
            );
            (
                geometry.clone(),
                format!("floor((ST_X(m) + 180.0) / 360.0 * {side})"),
                format!("floor((1.0 - ln(tan({lat}) + 1.0 / cos({lat})) / pi()) / 2.0 * {side})"),
            )
        } else {
            (
                format!("ST_Transform(ST_PointOnSurface({geometry}), 3857)"),
                format!("floor((ST_X(m) + {MERCATOR_HALF_WORLD}) / {size})"),
                format!("floor(({MERCATOR_HALF_WORLD} - ST_Y(m)) / {size})"),
            )
        };
        // Clamped so rows on the world's edge (and beyond Mercator's latitudes) count in the edge
        // tiles instead of outside the zoom.
        let sql = format!(
            "SELECT LEAST(GREATEST({x}::int8, 0), {last}) AS x,
                    LEAST(GREATEST({y}::int8, 0), {last}) AS y,
                    count(*)::int8
             FROM (SELECT {m} AS m
                   FROM {table} t
                   WHERE {geometry} IS NOT NULL AND NOT ST_IsEmpty({geometry}) AND ({filter})) rows
             GROUP BY 1, 2",
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

/// Counts the rows of `layer` whose partition column holds `$1` and that zoom `z` draws inside
/// `bbox` (degrees): what a partition's tiles cannot all miss. The value is compared as text, as
/// it was read (`column::text`, an element's for an array), not as the tile statements compare
/// it, so that a fault in those is caught rather than repeated.
pub fn drawable_rows_query(
    layer: &LayerSource,
    column: &str,
    array: bool,
    z: u8,
    bbox: &BBox,
) -> String {
    let quoted = format!("t.{}", quote_ident(column));
    let holds = if array {
        format!("$1 = ANY({quoted}::text[])")
    } else {
        format!("{quoted}::text = $1")
    };
    let geometry = layer.geometry_of("t");
    // Only what lies in the Mercator square can be in a tile.
    let south_lat = bbox.south.max(-MAX_MERCATOR_LAT);
    let north_lat = bbox.north.min(MAX_MERCATOR_LAT);
    let degrees = [bbox.west, south_lat, bbox.east, north_lat].map(|v| format!("{v:?}::float8"));
    let (west, south) = mercator(bbox.west, south_lat);
    let (east, north) = mercator(bbox.east, north_lat);
    let metres = [west, south, east, north].map(|v| format!("{v:?}::float8"));
    let mut sql = format!(
        "SELECT count(*) FROM {} t WHERE {holds} AND {geometry} && {} AND NOT ST_IsEmpty({geometry})",
        quoted_table(&layer.config),
        envelope_in_srid(layer, &degrees, &metres)
    );
    if let Some(filter) = &layer.config.filter {
        sql.push_str(&format!(" AND ({filter})"));
    }
    if let Some(test) = layer.generalised().and_then(|rules| {
        let merc = if layer.srid == 3857 {
            geometry.clone()
        } else {
            format!("ST_Transform({geometry}, 3857)")
        };
        too_small(rules, &merc, z)
    }) {
        sql.push_str(&format!(" AND NOT ({test})"));
    }
    sql
}
