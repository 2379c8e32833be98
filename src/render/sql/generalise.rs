//! Generalisation in SQL: a line's or polygon's shape simplified at a zoom's pixel, and the
//! thresholds under which it is not drawn at all.

use crate::config::Generalisation;
use crate::render::source::LayerSource;
use crate::tile::MERCATOR_HALF_WORLD;

/// A line or polygon `merc` simplified as the layer's rules say at zoom `z`.
pub(super) fn simplified(rules: &Generalisation, merc: &str, z: u8) -> String {
    format!(
        "ST_Simplify({merc}, {}, true)",
        rules.simplify * pixel_metres(z)
    )
}

/// Web-Mercator metres of one generalisation pixel at zoom `z`: 1/256 of a tile's width.
pub fn pixel_metres(z: u8) -> f64 {
    2.0 * MERCATOR_HALF_WORLD / (256.0 * (1u64 << z) as f64)
}

/// The tile geometry (`ST_AsMVTGeom`) of a row whose Web-Mercator geometry is `merc`, generalised
/// as the layer asks at zoom `z`: lines and polygons simplified (Douglas-Peucker) before clipping,
/// so every tile clips the same simplified shape and neighbours meet; NULL (not drawn) for a
/// polygon or line smaller than the thresholds. Points pass untouched, and a column of points
/// only pays nothing.
///
/// `ST_Simplify` keeps parts that collapse (`true`), so only the thresholds decide whether a
/// feature is drawn. It may leave a ring crossing itself; `ST_AsMVTGeom` makes every polygon
/// valid after snapping it to the tile's grid, which it must do anyway. GEOS's
/// topology-preserving simplification would avoid that, but simplifying a country's outline
/// with it cost 70 times as much, and every tile the outline touches simplifies it again.
pub(super) fn drawn_geometry(
    layer: &LayerSource,
    merc: &str,
    z: u8,
    (extent, buffer): (u32, u32),
) -> String {
    let clip =
        |geometry: &str| format!("ST_AsMVTGeom({geometry}, env.tile, {extent}, {buffer}, true)");
    let polygon = drawn_as_polygons(merc);
    let Some(rules) = layer.generalised() else {
        if layer.points_only {
            return clip(merc);
        }
        return in_canonical_order(&polygon, &clip(merc));
    };
    let simplified = if rules.simplify > 0.0 {
        simplified(rules, merc, z)
    } else {
        merc.to_string()
    };
    let too_small = too_small(rules, merc, z);
    // Douglas-Peucker turns a small closed line into a there-and-back spike, and can leave a
    // polygon's sliver in the buffer degenerate, which `ST_AsMVTGeom` drops: the stored shape is
    // drawn instead, so simplifying never removes a feature from a tile (only the thresholds do).
    let drawn = if rules.simplify > 0.0 {
        format!("COALESCE({}, {})", clip(&simplified), clip(merc))
    } else {
        clip(merc)
    };
    // Points (in a column that may hold other kinds too) are clipped as they are, first, so they
    // pay one test of their dimension and nothing else.
    let too_small = match too_small {
        None => String::new(),
        Some(test) => format!(" WHEN {test} THEN NULL"),
    };
    format!(
        "CASE WHEN ST_Dimension({merc}) = 0 THEN {}{too_small} WHEN {polygon} THEN {} ELSE {drawn} END",
        clip(merc),
        canonical_rings(&drawn)
    )
}

/// A polygon's tile geometry `drawn` with its rings in one canonical order: each ring starting
/// at its least vertex, holes and parts sorted (`ST_Normalize`), then wound as `ST_AsMVTGeom`
/// winds them (exterior rings counter-clockwise in its y-down units, which MVT reads as
/// clockwise on screen). `ST_AsMVTGeom` clips the whole shape, and where a clipped ring starts
/// and which way it runs depends on the whole shape: a square inside a polygon started at
/// another corner after an edit far from the tile. Normalised, a tile's bytes depend only on
/// what it draws, so a reseed that renders only the tiles where an edit changed the drawing
/// leaves the others as a full seed would write them. Lines keep their direction.
pub(super) fn canonical_rings(drawn: &str) -> String {
    format!("ST_ForcePolygonCCW(ST_Normalize({drawn}))")
}

/// Whether `ST_AsMVTGeom` draws the Web-Mercator geometry `merc` as polygons: a polygon, a
/// multipolygon, or a collection holding one (it keeps a collection's highest dimension). A TIN or
/// a triangle, two-dimensional too, is left as it is and fails its tiles as before, rather than
/// drawn: `ST_Normalize` would make it a polygon. Reads only the geometry's header where the
/// type decides.
pub(super) fn drawn_as_polygons(merc: &str) -> String {
    format!(
        "(ST_GeometryType({merc}) IN ('ST_Polygon', 'ST_MultiPolygon') \
         OR (ST_GeometryType({merc}) = 'ST_GeometryCollection' AND ST_Dimension({merc}) = 2))"
    )
}

/// `drawn`, a row's tile geometry, in [`canonical_rings`] order where `polygon` (an SQL test of
/// the row, [`drawn_as_polygons`]) holds.
pub(super) fn in_canonical_order(polygon: &str, drawn: &str) -> String {
    format!(
        "CASE WHEN {polygon} THEN {} ELSE {drawn} END",
        canonical_rings(drawn)
    )
}

/// Whether a line or polygon whose Web-Mercator geometry is `merc` is below the layer's
/// thresholds at zoom `z`, and so not drawn; `None` when no threshold is set.
pub(in crate::render) fn too_small(rules: &Generalisation, merc: &str, z: u8) -> Option<String> {
    let pixel = pixel_metres(z);
    let mut tests = Vec::new();
    if rules.min_area > 0.0 {
        tests.push(format!(
            "(ST_Dimension({merc}) = 2 AND ST_Area({merc}) < {})",
            rules.min_area * pixel * pixel
        ));
    }
    if rules.min_length > 0.0 {
        tests.push(format!(
            "(ST_Dimension({merc}) = 1 AND ST_Length({merc}) < {})",
            rules.min_length * pixel
        ));
    }
    (!tests.is_empty()).then(|| tests.join(" OR "))
}
