//! The pairs of geometry-only edits in the change log: each side's place in its pair, and the
//! comparison, in PostGIS, of what each zoom draws of the two shapes.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use super::{refused_or_rows, Compare, Geometries, LOG_FILTER};
use crate::config::LayerConfig;
use crate::error::{pg_message, Result};
use crate::plan::{ChangedBox, DrawnChange, Moved, Shape, SourceBox};
use crate::render::sql;

/// A logged geometry's place in a geometry-only edit: its log row, the pair's number in it, and
/// whether it is the new shape.
pub(super) type PairSide = (i64, i64, bool);

/// What [`compare_moved`] found per pair (log row, number): per zoom compared, what changed.
pub(super) type Compared = BTreeMap<(i64, i64), BTreeMap<u8, DrawnChange>>;

/// Gives both sides of each compared pair what changed per zoom; the old side reports the tiles
/// for both, and fetches where either row is fetched.
pub(super) fn pair_up(boxes: &mut [(ChangedBox, Option<PairSide>)], compared: &Compared) {
    let mut sources: BTreeMap<(i64, i64), Option<SourceBox>> = BTreeMap::new();
    let mut sides: BTreeMap<(i64, i64), u8> = BTreeMap::new();
    for (changed, pair) in boxes.iter() {
        if let Some((log, number, _)) = pair {
            let key = (*log, *number);
            *sides.entry(key).or_default() += 1;
            let union = match sources.get(&key) {
                None => changed.source,
                Some(other) => SourceBox::union(*other, changed.source),
            };
            sources.insert(key, union);
        }
    }
    let shared: BTreeMap<(i64, i64), Arc<BTreeMap<u8, DrawnChange>>> = compared
        .iter()
        .map(|(key, zooms)| (*key, Arc::new(zooms.clone())))
        .collect();
    for (changed, pair) in boxes.iter_mut() {
        let Some((log, number, new)) = *pair else {
            continue;
        };
        let key = (log, number);
        // Both sides must have been read (a side PostGIS cannot project is read alone, as a
        // box that dirties everywhere it may be fetched).
        let (Some(zooms), Some(2)) = (shared.get(&key), sides.get(&key)) else {
            continue;
        };
        if changed.shape.is_none() {
            continue;
        }
        if !new {
            changed.source = sources.get(&key).copied().flatten();
        }
        changed.moved = Some(Moved {
            zooms: Arc::clone(zooms),
            lead: !new,
        });
    }
}

/// Whether a ring or line of the drawn shapes `d.a` and `d.b` (their vertices `v.a`, `v.b`) may
/// start elsewhere or run the other way while their vertices agree, which changes the bytes of
/// tiles where the shapes do not differ: rings and lines are paired by their place in the shape;
/// one without a partner, a first vertex that differs while either is a vertex of the other
/// shape (the ring turned), or a first vertex alike and a second that differs while either is a
/// vertex of the other shape (the line reversed). A vertex moved, or the shape moved whole,
/// shows in the vertices that differ, whose tiles are rendered.
fn restarted(a: &str, b: &str) -> String {
    let firsts = |g: &str| {
        format!(
            "SELECT s.path[1:array_length(s.path, 1) - 1] AS path, ST_StartPoint(s.geom) AS p1,
                    ST_EndPoint(s.geom) AS p2
             FROM ST_DumpSegments(d.{g}) s WHERE s.path[array_length(s.path, 1)] = 1"
        )
    };
    let same = |p: &str, q: &str| format!("(ST_X({p}) = ST_X({q}) AND ST_Y({p}) = ST_Y({q}))");
    let known = |p: &str, q: &str| {
        format!("(ST_Intersects(fa.{p}, v.{b}) OR ST_Intersects(fb.{q}, v.{a}))")
    };
    format!(
        "EXISTS (SELECT 1 FROM ({}) fa FULL JOIN ({}) fb ON fa.path = fb.path
                 WHERE fa.path IS NULL OR fb.path IS NULL
                    OR (NOT {} AND {})
                    OR ({} AND NOT {} AND {}))",
        firsts(a),
        firsts(b),
        same("fa.p1", "fb.p1"),
        known("p1", "p1"),
        same("fa.p1", "fb.p1"),
        same("fa.p2", "fb.p2"),
        known("p2", "p2"),
    )
}

/// Draws the two shapes of each geometry-only edit of a line or polygon among `geometries` as
/// each of `compare`'s zooms that draws the layer's rows one by one would, before clipping
/// ([`sql::unclipped`]), and says per zoom where they differ: the areas where they differ, the
/// vertices one has and the other lacks, for the stored and the simplified shape alike. A zoom
/// where a threshold leaves out one shape and not the other, where one shape vanishes, where a
/// ring or line may start at another of its vertices or run the other way ([`restarted`]), or
/// where either shape would fit in one tile (which `ST_AsMVTGeom` does not clip) is left out, so
/// both shapes dirty their own tiles there; so is every zoom when PostGIS cannot compare them (a
/// GEOS error), with a warning.
pub(super) async fn compare_moved(
    client: &impl GenericClient,
    geometries: &Geometries,
    params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type); 4],
    layer: &LayerConfig,
    compare: Compare,
) -> Result<Compared> {
    let zooms: Vec<u8> = compare
        .zooms
        .levels()
        .filter(|&z| layer.zooms.is_none_or(|r| r.contains(z)) && layer.cluster_at(z).is_none())
        .collect();
    let per_zoom: Vec<String> = zooms
        .into_iter()
        .filter_map(|z| zoom_comparison(layer, z, compare.extent))
        .collect();
    let mut compared = Compared::new();
    if per_zoom.is_empty() {
        return Ok(compared);
    }
    let merc = |g: &str| sql::web_mercator_per_row(g);
    let statement = format!(
        "WITH pairs AS MATERIALIZED (
             SELECT c.id AS log_id, p.i AS pair, {a} AS a, {b} AS b
             FROM {from_log}
             CROSS JOIN LATERAL unnest(c.moved_from, c.moved_to) WITH ORDINALITY AS p(a, b, i)
             {filter} AND ST_Dimension(p.a) > 0 AND ST_Dimension(p.b) > 0)
         {}",
        per_zoom.join("\n UNION ALL\n"),
        a = merc("p.a"),
        b = merc("p.b"),
        from_log = geometries.log,
        filter = LOG_FILTER,
    );
    let read = refused_or_rows(
        client,
        &statement,
        params,
        "comparing the shapes of geometry-only edits",
    )
    .await?;
    let rows = match read {
        Ok(rows) => rows,
        Err(err) => {
            tracing::warn!(
                "layer `{}`: PostGIS cannot compare the old and new shapes of geometry-only \
                 edits ({}); each dirties every tile of both its shapes",
                layer.name,
                pg_message(&err)
            );
            return Ok(compared);
        }
    };
    for row in rows {
        if let Some((key, z, change)) = compared_row(&row) {
            compared.entry(key).or_default().insert(z, change);
        }
    }
    Ok(compared)
}

/// One zoom's comparison of the pairs' two shapes as `z` draws them: a `SELECT` of the pairs'
/// ids, the zoom, their state (0 the same drawing, 1 differing within the areas it returns, 2
/// not compared) and those areas in metres; `None` where `z` draws no shape of the layer alone.
fn zoom_comparison(layer: &LayerConfig, z: u8, extent: u32) -> Option<String> {
    let drawn = sql::unclipped(layer, "q.a", z, extent)?;
    let other = |expression: &str| expression.replace("q.a", "q.b");
    let tile = 2.0 * crate::tile::MERCATOR_HALF_WORLD / (1u64 << z) as f64;
    let mut columns = vec![
        format!("{} AS da", drawn.stored),
        format!("{} AS db", other(&drawn.stored)),
    ];
    let mut chains = vec![("da", "db")];
    if let Some(simplified) = &drawn.simplified {
        columns.push(format!("{simplified} AS sa"));
        columns.push(format!("{} AS sb", other(simplified)));
        chains.push(("sa", "sb"));
    }
    let small = match &drawn.too_small {
        Some(test) => format!("({test}), ({})", other(test)),
        None => "false, false".into(),
    };
    columns.push(small);
    let names: Vec<&str> = chains.iter().flat_map(|(a, b)| [*a, *b]).collect();
    let vertices: Vec<String> = names
        .iter()
        .map(|name| format!("ST_Points(d.{name})"))
        .collect();
    let vanished: Vec<String> = chains
        .iter()
        .map(|(a, b)| format!("(d.{a} IS NULL) <> (d.{b} IS NULL)"))
        .collect();
    let restarted: Vec<String> = chains.iter().map(|(a, b)| restarted(a, b)).collect();
    let differences: Vec<String> = chains
        .iter()
        .flat_map(|(a, b)| {
            [
                format!("ST_SymDifference(d.{a}, d.{b})"),
                format!("ST_SymDifference(v.{a}, v.{b})"),
            ]
        })
        .collect();
    // A side whose box spans at most two tiles each way may lie whole inside some tile's
    // clip box, which `ST_AsMVTGeom` then does not clip: its bytes may differ where the
    // shapes agree.
    let spans = |g: &str| {
        format!(
            "(ST_XMax({g}) - ST_XMin({g}) > {span} OR ST_YMax({g}) - ST_YMin({g}) > {span})",
            span = 2.0 * tile
        )
    };
    Some(format!(
        "SELECT q.log_id, q.pair, {z}::int4 AS z, s.state,
                CASE WHEN s.state = 1 THEN ST_AsBinary(ST_Affine(ST_Collect(ARRAY[{differences}]), {affine})) END
         FROM pairs q
         CROSS JOIN LATERAL (SELECT {columns} OFFSET 0) d({names}, small_a, small_b)
         CROSS JOIN LATERAL (SELECT {vertices} OFFSET 0) v({names})
         CROSS JOIN LATERAL (SELECT CASE
                 WHEN d.small_a IS DISTINCT FROM d.small_b THEN 2
                 WHEN d.small_a THEN 0
                 WHEN {vanished} THEN 2
                 WHEN {restarted} THEN 2
                 ELSE 1 END AS state) s
         WHERE {spans_a} AND {spans_b}",
        differences = differences.join(", "),
        affine = sql::world_units_to_metres(drawn.unit),
        vanished = vanished.join(" OR "),
        restarted = restarted.join(" OR "),
        columns = columns.join(", "),
        names = names.join(", "),
        vertices = vertices.join(", "),
        spans_a = spans("q.a"),
        spans_b = spans("q.b"),
    ))
}

/// A row of the comparison as `((log id, pair), zoom, what changed)`; `None` for a zoom left out
/// (not compared, or its difference not WKB this reader knows).
fn compared_row(row: &tokio_postgres::Row) -> Option<((i64, i64), u8, DrawnChange)> {
    let key = (row.get::<_, i64>(0), row.get::<_, i64>(1));
    let Ok(z) = u8::try_from(row.get::<_, i32>(2)) else {
        return None;
    };
    let change = match row.get::<_, i32>(3) {
        0 => DrawnChange::Nothing,
        1 => match row
            .get::<_, Option<&[u8]>>(4)
            .map(|wkb| Shape::from_wkb(wkb, true))
        {
            // Nothing left of either difference.
            None => DrawnChange::Nothing,
            Some(Some(shape)) if shape.is_empty() => DrawnChange::Nothing,
            Some(Some(shape)) => DrawnChange::Within(Arc::new(shape)),
            // Not WKB this reader knows: the zoom is not compared.
            Some(None) => return None,
        },
        _ => return None,
    };
    Some((key, z, change))
}
