//! The batch's shared rows: a line or polygon layer's large rows found once for all the tiles of a
//! statement, each projected, measured and simplified once in a CTE of the statement, and how a
//! tile reads them beside its own small rows.

use super::generalise::{
    canonical_rings, drawn_as_polygons, in_canonical_order, pixel_metres, simplified, too_small,
};
use super::{envelope, envelope_in_srid, row_columns, rows_within, FIRST_ENVELOPE_PARAM, MERC};
use crate::db::quote_ident;
use crate::render::source::LayerSource;
use crate::tile::MERCATOR_HALF_WORLD;

/// Columns of a batch's rows of a line or polygon layer ([`batch_rows`]): the stored geometry's
/// envelope, whether `ST_AsMVTGeom` draws it as polygons, whether the row is a point, whether it
/// is under the thresholds, and its simplified shape.
const BOX: &str = "\"__oar_box\"";
const POLYGON: &str = "\"__oar_polygon\"";
const POINT: &str = "\"__oar_point\"";
const SMALL: &str = "\"__oar_small\"";
const SIMPLE: &str = "\"__oar_simple\"";
/// A tile's box grown past its buffer by [`GUARD_UNITS`] and the layer's simplification
/// tolerance: a row of the batch that does not meet it draws nothing in the tile.
const GUARD: &str = "\"__oar_guard\"";
/// Tile units beyond the buffer where a row that meets nothing is certainly not drawn:
/// `ST_AsMVTGeom` moves a shape by at most half a unit (its own simplification) plus half a unit's
/// diagonal (the grid) before clipping to the buffer.
const GUARD_UNITS: u32 = 4;
/// Bytes of a stored geometry (about 500 vertices) over which a row is shared through the batch
/// ([`batch_rows`]): projecting and simplifying it costs more than comparing its box with each
/// tile of a batch. Smaller rows come from each tile's own index scan, as they did: shared, a
/// layer of 20,000 small polygons seeded 4 times slower, every tile scanning every row of the
/// batch.
const SHARED_BYTES: u32 = 8192;

/// The rows tile `env` draws of a line or polygon layer whose large rows the batch's CTE `cte`
/// holds ([`batch_rows`]): those of the CTE whose stored box meets the tile's fetch envelope, and
/// the small rows from the tile's own index scan, each with the tile's guard box.
pub(super) fn tile_rows(
    layer: &LayerSource,
    cte: &str,
    z: u8,
    (extent, buffer): (u32, u32),
) -> String {
    // The envelopes are built once per tile (`w`), not once per row they are compared with.
    let own = with_measures(
        layer,
        z,
        &format!(
            "SELECT {}, NULL::geometry AS {BOX} {} AND ST_MemSize({}) <= {SHARED_BYTES}",
            row_columns(layer).join(", "),
            rows_within(layer, "w.e"),
            layer.geometry_of("t")
        ),
    );
    format!(
        "SELECT u.*, w.g AS {GUARD} FROM (SELECT {} AS e, ST_Expand(env.tile, {}) AS g OFFSET 0) w \
         CROSS JOIN LATERAL (SELECT c.* FROM {cte} c WHERE c.{BOX} && w.e UNION ALL {own}) u",
        envelope(layer, 0),
        guard_reach(layer, z, (extent, buffer))
    )
}

/// The statement-level CTE `cte` of a line or polygon layer's rows for a whole batch of tiles:
/// those whose box meets one of the batch's fetch envelopes (in the layer's SRID, so its index
/// serves each), each projected to Web Mercator, measured against the thresholds and simplified
/// once, however many of the batch's tiles it reaches. A country touching 40 tiles of a zoom was
/// projected and simplified 40 times when each tile did it.
///
/// Every tile's own test is made here, so every row a tile's own test would find is here (ids
/// are taken as unique, as the cluster cells take them); each row keeps
/// its stored geometry's envelope, whose box is the geometry's, for the tile's test
/// ([`super::layer_lateral`]).
pub(super) fn batch_rows(layer: &LayerSource, cte: &str, z: u8) -> String {
    let first = FIRST_ENVELOPE_PARAM;
    let names: Vec<String> = (first..first + 8).map(|n| format!("p{n}")).collect();
    let arrays: Vec<String> = (first..first + 8)
        .map(|n| format!("${n}::float8[]"))
        .collect();
    let column = |i: usize| format!("e.{}", names[i]);
    let area = envelope_in_srid(layer, &[0, 1, 2, 3].map(column), &[4, 5, 6, 7].map(column));
    // Each tile's fetch envelope searched through the index, then each row once: the extent of
    // the envelopes would take every large row between a batch's scattered tiles (a reseed's
    // list spans continents), and the rows are projected only after the duplicates are gone.
    let id = quote_ident(&layer.config.id_column);
    let found = format!(
        "SELECT DISTINCT ON (t.{id}) t.* FROM unnest({}) AS e({}) \
         CROSS JOIN LATERAL (SELECT t.* {} AND ST_MemSize({}) > {SHARED_BYTES}) t \
         ORDER BY t.{id}",
        arrays.join(", "),
        names.join(", "),
        rows_within(layer, &area),
        layer.geometry_of("t")
    );
    let mut columns = row_columns(layer);
    columns.push(format!("ST_Envelope({}) AS {BOX}", layer.geometry_of("t")));
    let rows = format!("SELECT {} FROM ({found} OFFSET 0) t", columns.join(", "));
    format!("{cte} AS MATERIALIZED ({})", with_measures(layer, z, &rows))
}

/// `rows` (a query of [`row_columns`] and more) with what drawing needs of each row at zoom `z`,
/// which [`drawn_from_batch`] reads: whether it is drawn as polygons, and where the layer is
/// generalised whether it is a point, whether it is under the thresholds and its simplified shape.
fn with_measures(layer: &LayerSource, z: u8, rows: &str) -> String {
    let merc = format!("s.{MERC}");
    let mut measures = vec![format!("{} AS {POLYGON}", drawn_as_polygons(&merc))];
    if let Some(rules) = layer.generalised() {
        measures.push(format!("ST_Dimension({merc}) = 0 AS {POINT}"));
        if let Some(test) = too_small(rules, &merc, z) {
            measures.push(format!("({test}) AS {SMALL}"));
        }
        if rules.simplify > 0.0 {
            measures.push(format!(
                "CASE WHEN ST_Dimension({merc}) > 0 THEN {} END AS {SIMPLE}",
                simplified(rules, &merc, z)
            ));
        }
    }
    // `OFFSET 0` keeps the projection in one place: pulled up, each use would project again.
    format!(
        "SELECT s.*, {} FROM ({rows} OFFSET 0) s",
        measures.join(", ")
    )
}

/// Metres past a tile's edges within which a row of [`batch_rows`] may be drawn in it: the
/// buffer, [`GUARD_UNITS`], and the distance simplification may move a shape (Douglas-Peucker
/// keeps a subset of the vertices, every one dropped within the tolerance of what is kept).
fn guard_reach(layer: &LayerSource, z: u8, (extent, buffer): (u32, u32)) -> f64 {
    let unit = 2.0 * MERCATOR_HALF_WORLD / ((1u64 << z) as f64 * f64::from(extent));
    let tolerance = layer
        .generalised()
        .filter(|rules| rules.simplify > 0.0)
        .map_or(0.0, |rules| rules.simplify * pixel_metres(z));
    f64::from(buffer + GUARD_UNITS) * unit + tolerance
}

/// [`super::generalise::drawn_geometry`] of a row of [`batch_rows`], which holds what does not depend on the tile;
/// a polygon's rings in [`canonical_rings`] order.
///
/// A row whose box meets the tile's while its shape stays clear of the tile's guard box (a
/// country's far-flung islands) is not clipped at all: `ST_AsMVTGeom` would simplify, project
/// and clip it whole to find nothing, and with generalisation twice (the simplified shape, then
/// the stored one). Over the world at z6 such rows are 55% of the rows the tiles' boxes meet.
pub(super) fn drawn_from_batch(layer: &LayerSource, z: u8, (extent, buffer): (u32, u32)) -> String {
    let clip =
        |geometry: &str| format!("ST_AsMVTGeom({geometry}, env.tile, {extent}, {buffer}, true)");
    let merc = format!("s.{MERC}");
    let reaches = format!("ST_Intersects({merc}, s.{GUARD})");
    let polygon = format!("s.{POLYGON}");
    let Some(rules) = layer.generalised() else {
        return format!(
            "CASE WHEN {reaches} THEN {} END",
            in_canonical_order(&polygon, &clip(&merc))
        );
    };
    let too_small = match too_small(rules, &merc, z) {
        None => String::new(),
        Some(_) => format!(" WHEN s.{SMALL} THEN NULL"),
    };
    let drawn = if rules.simplify > 0.0 {
        format!(
            "COALESCE({}, {})",
            clip(&format!("s.{SIMPLE}")),
            clip(&merc)
        )
    } else {
        clip(&merc)
    };
    format!(
        "CASE WHEN s.{POINT} THEN {}{too_small} WHEN NOT {reaches} THEN NULL \
         WHEN {polygon} THEN {} ELSE {drawn} END",
        clip(&merc),
        canonical_rings(&drawn)
    )
}
