//! The oracle of the geometry tests: what PostGIS says a tile must hold, and the tiles' polygons
//! read back from their own integer coordinates.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;

use super::{Layer, BUFFER, EXTENT, HALF};
use crate::common::mvt::{decode_tile, gunzip_if_needed, paths, tile::GeomType, Tile};
use crate::common::pg::TestSchema;
use crate::common::run::Tiles;

/// `(z, x, y, feature id)` of every feature of `layer` in the tiles.
pub(super) fn placements(tiles: &Tiles, layer: &str) -> BTreeSet<(u8, u32, u32, u64)> {
    let mut found = BTreeSet::new();
    for (&(z, x, y), bytes) in tiles {
        let decoded = decode_tile(bytes).unwrap_or_else(|e| panic!("tile {z}/{x}/{y}: {e}"));
        for l in decoded.iter().filter(|l| l.name == layer) {
            for f in &l.features {
                let id =
                    f.id.unwrap_or_else(|| panic!("{z}/{x}/{y}: a feature without id"));
                found.insert((z, x, y, id));
            }
        }
    }
    found
}

/// What PostGIS says of each (zoom, tile, feature) whose tile's buffered envelope the feature's
/// geometry intersects: whether the thresholds drop it at that zoom (its whole Mercator area or
/// length against `min_area` square pixels or `min_length` pixels), and how much of it lies in
/// the envelope, in grid units (square units for polygons, units for lines).
pub(super) struct Expected {
    pub(super) dropped: bool,
    pub(super) part: f64,
}

pub(super) fn expected(
    schema: &mut TestSchema,
    layer: Layer,
    (zmin, zmax): (u8, u8),
    min_area: f64,
    min_length: f64,
) -> BTreeMap<(u8, u32, u32, u64), Expected> {
    let margin = f64::from(BUFFER) / f64::from(EXTENT);
    // Candidate tiles come from each geometry's box widened by the margin; the intersection test
    // against ST_TileEnvelope(margin) decides. ST_ClipByBox2D on the made-valid polygon: Sudan
    // self-intersects once projected, and ST_Intersection refuses invalid input.
    let sql = format!(
        "WITH f AS MATERIALIZED (
             SELECT t.id::bigint AS id, g, ST_Dimension(g) AS dim,
                    CASE WHEN ST_Dimension(g) = 2 THEN ST_MakeValid(g) ELSE g END AS v,
                    CASE ST_Dimension(g) WHEN 2 THEN ST_Area(g) WHEN 1 THEN ST_Length(g) END AS measure
             FROM \"{schema}\".{table} t CROSS JOIN LATERAL (SELECT ST_Transform(t.geom, 3857) AS g) p),
         zs AS (SELECT z, 2 * {HALF}::float8 / 2 ^ z AS size FROM generate_series({zmin}, {zmax}) z),
         c AS (
             SELECT zs.z, zs.size, x, y, f.* FROM f CROSS JOIN zs
             CROSS JOIN LATERAL generate_series(
                 greatest(0, floor((ST_XMin(f.g) + {HALF}) / zs.size - {margin})::int),
                 least((1 << zs.z) - 1, floor((ST_XMax(f.g) + {HALF}) / zs.size + {margin})::int)) x
             CROSS JOIN LATERAL generate_series(
                 greatest(0, floor(({HALF} - ST_YMax(f.g)) / zs.size - {margin})::int),
                 least((1 << zs.z) - 1, floor(({HALF} - ST_YMin(f.g)) / zs.size + {margin})::int)) y)
         SELECT c.z, c.x, c.y, c.id,
                CASE c.dim WHEN 2 THEN c.measure < {min_area} * (c.size / 256) ^ 2
                           WHEN 1 THEN c.measure < {min_length} * (c.size / 256)
                           ELSE false END,
                CASE c.dim WHEN 2 THEN ST_Area(ST_ClipByBox2D(c.v, e.env)) / (c.size / {EXTENT}) ^ 2
                           WHEN 1 THEN ST_Length(ST_Intersection(c.g, e.env)) / (c.size / {EXTENT})
                           ELSE 'Infinity' END
         FROM c CROSS JOIN LATERAL (SELECT ST_TileEnvelope(c.z, c.x, c.y, margin => {margin}) AS env) e
         WHERE ST_Intersects(c.g, e.env)",
        schema = schema.name,
        table = layer.table,
    );
    schema
        .client()
        .query(&sql, &[])
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
        .iter()
        .map(|row| {
            let z: i32 = row.get(0);
            let x: i32 = row.get(1);
            let y: i32 = row.get(2);
            let id: i64 = row.get(3);
            let key = (z as u8, x as u32, y as u32, id as u64);
            (
                key,
                Expected {
                    dropped: row.get(4),
                    part: row.get(5),
                },
            )
        })
        .collect()
}

/// The polygons of a polygon feature: each exterior ring (positive area by the surveyor's formula
/// in tile coordinates, MVT 2.1 section 4.3.4.4) followed by its holes, as WKT in tile units.
fn polygon_wkt(geometry: &[u32]) -> Result<String, String> {
    let mut polygons: Vec<Vec<String>> = Vec::new();
    for ring in paths(geometry)? {
        let twice_area: i64 = ring
            .iter()
            .zip(ring.iter().cycle().skip(1))
            .map(|(a, b)| a.0 * b.1 - b.0 * a.1)
            .sum();
        let mut points: Vec<String> = ring.iter().map(|(x, y)| format!("{x} {y}")).collect();
        points.push(points[0].clone());
        let text = format!("({})", points.join(","));
        match twice_area {
            0 => return Err(format!("a ring of zero area: {text}")),
            a if a > 0 => polygons.push(vec![text]),
            _ => polygons
                .last_mut()
                .ok_or_else(|| format!("a hole before any exterior ring: {text}"))?
                .push(text),
        }
    }
    let parts: Vec<String> = polygons
        .iter()
        .map(|rings| format!("({})", rings.join(",")))
        .collect();
    Ok(format!("MULTIPOLYGON({})", parts.join(",")))
}

/// The polygons of every tile as `(z/x/y layer #id, WKT)`, and what could not be read as one.
pub(super) fn tile_polygons(tiles: &Tiles) -> (Vec<(String, String)>, Vec<String>) {
    let (mut polygons, mut unreadable) = (Vec::new(), Vec::new());
    for (&(z, x, y), bytes) in tiles {
        let tile = Tile::decode(gunzip_if_needed(bytes).as_slice()).expect("an MVT tile");
        for layer in &tile.layers {
            for f in &layer.features {
                if f.r#type != Some(GeomType::Polygon as i32) {
                    continue;
                }
                let key = format!("{z}/{x}/{y} {} #{}", layer.name, f.id.unwrap_or(0));
                match polygon_wkt(&f.geometry) {
                    Ok(wkt) => polygons.push((key, wkt)),
                    Err(e) => unreadable.push(format!("{key}: {e}")),
                }
            }
        }
    }
    (polygons, unreadable)
}

/// Stored bytes per zoom.
pub(super) fn bytes_per_zoom(tiles: &Tiles) -> BTreeMap<u8, usize> {
    let mut bytes = BTreeMap::new();
    for (&(z, _, _), data) in tiles {
        *bytes.entry(z).or_default() += data.len();
    }
    bytes
}

/// Each feature's Mercator area (polygons) or length (lines), by id.
pub(super) fn measures(schema: &mut TestSchema, layer: Layer) -> BTreeMap<u64, f64> {
    let sql = format!(
        "SELECT id::bigint, CASE WHEN ST_Dimension(geom) = 2 THEN ST_Area(ST_Transform(geom, 3857))
                ELSE ST_Length(ST_Transform(geom, 3857)) END FROM \"{}\".{}",
        schema.name, layer.table
    );
    schema
        .client()
        .query(&sql, &[])
        .unwrap()
        .iter()
        .map(|row| (row.get::<_, i64>(0) as u64, row.get(1)))
        .collect()
}
