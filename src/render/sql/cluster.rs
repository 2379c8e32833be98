//! SQL of clustered zooms: each row at a representative point, in grid cells of a fixed number of
//! tile pixels, aggregated from rows or read from a maintained cell table, and turned into one
//! cluster feature per cell.

use super::*;

/// SQL for the point a clustered layer places a row at, given its geometry `geometry`: a point as
/// it is, any other kind at `ST_PointOnSurface` of it (a point on the line or inside the polygon,
/// so within the geometry's box). NULL stays NULL and an empty geometry gives an empty point, and
/// clustering skips both, as it skips them among points.
pub fn representative_point(geometry: &str) -> String {
    format!(
        "CASE WHEN ST_GeometryType({geometry}) = 'ST_Point' THEN {geometry} \
         ELSE ST_PointOnSurface({geometry}) END"
    )
}

/// The columns of one layer's rows inside the tile's buffered envelope, projected to Web Mercator.
pub fn row_columns(layer: &LayerSource) -> Vec<String> {
    let geometry = layer.geometry_of("t");
    columns_with(layer, &geometry)
}

/// The columns of one clustered layer's rows, as [`row_columns`] but with each row's
/// [`representative_point`] for its geometry, which is what clusters group and count. A column of
/// points only keeps its geometry as it is, so point layers pay nothing for other kinds.
pub fn cluster_row_columns(layer: &LayerSource) -> Vec<String> {
    let geometry = layer.geometry_of("t");
    if layer.points_only {
        columns_with(layer, &geometry)
    } else {
        columns_with(layer, &representative_point(&geometry))
    }
}

/// Whether a zoom deeper than `z` in the job draws the layer's geometries whole (unclustered).
pub(super) fn drawn_whole_below(layer: &LayerSource, z: u8, job: ZoomRange) -> bool {
    (z + 1..=job.max).any(|d| active_at(layer, d) && layer.config.cluster_at(d).is_none())
}

/// Whether a row of a kind other than a point lies in child envelope `child`. A clustered zoom's
/// cells or rows hold only representative points, but the deeper zooms that draw a line or a
/// polygon whole must be reached wherever it passes.
pub(super) fn other_kinds_in(layer: &LayerSource, child: usize) -> String {
    format!(
        "EXISTS (SELECT 1 {} AND ST_GeometryType({}) <> 'ST_Point')",
        source_predicate(layer, child),
        layer.geometry_of("t")
    )
}

/// The size of a clustered layer's grid cells at zoom `z`, in Web-Mercator metres. A cell at `z` is
/// exactly four cells of `z + 1` (the sizes differ by a power of two, so even the floating-point
/// cell indices agree), which lets coarser cells be summed from finer ones.
pub fn cell_metres(cluster: &ClusterConfig, z: u8, extent: u32) -> f64 {
    2.0 * MERCATOR_HALF_WORLD / cells_per_row(cluster, z, extent) as f64
}

pub(super) fn cells_per_row(cluster: &ClusterConfig, z: u8, extent: u32) -> u64 {
    (1u64 << z) * u64::from(extent / cluster.cell)
}

/// SQL for the cells across the world at the zoom `zoom` (an SQL expression: `$1` in tile
/// statements, so every clustered zoom shares one statement and one plan).
pub(super) fn cells_per_row_sql(cluster: &ClusterConfig, zoom: &str, extent: u32) -> String {
    format!("({}::bigint << {zoom})", extent / cluster.cell)
}

/// SQL for [`cell_metres`] at the zoom `zoom`; the same division as in Rust, so the same double.
pub(super) fn cell_metres_sql(cluster: &ClusterConfig, zoom: &str, extent: u32) -> String {
    format!(
        "({:?} / {}::float8)",
        2.0 * MERCATOR_HALF_WORLD,
        cells_per_row_sql(cluster, zoom, extent)
    )
}

/// The id column and the other attribute columns a cell carries (shown when it has one member).
pub(super) fn cell_attributes(layer: &LayerSource) -> (String, Vec<String>) {
    let id = quote_ident(&layer.config.id_column);
    let attributes = layer
        .properties
        .iter()
        .map(|p| quote_ident(&p.column))
        .filter(|column| *column != id)
        .collect();
    (id, attributes)
}

/// The columns of the cells of zoom `z` aggregated from rows `rows` (as [`row_columns`] names
/// them), for `GROUP BY 1, 2`: `cx, cy` (cell indices from the west and the north), `n` members,
/// `sx, sy` the sums of their coordinates in whole centimetres, `x0, y0, x1, y1` their extent in
/// metres, then the id and the attributes of one member. These own columns carry the `__oar_`
/// prefix (`__oar_cx`, ...), so source columns of any name can sit beside them.
///
/// Attributes are only shown for cells of one member, where any aggregate picks that member, so no
/// aggregate needs an ORDER BY (which would sort all rows beneath a low-zoom tile once per column).
/// Centimetre sums are exact integers, so neither the row order a plan happens to use nor summing
/// finer cells instead of rows can change a centroid's last bits.
pub fn cell_aggregates(
    layer: &LayerSource,
    cluster: &ClusterConfig,
    rows: &str,
    zoom: &str,
    extent: u32,
) -> Vec<String> {
    let cell = cell_metres_sql(cluster, zoom, extent);
    let half = MERCATOR_HALF_WORLD;
    let first = |column: &str| format!("(array_agg({rows}.{column}))[1]");
    let centimetres = |axis: &str| format!("sum(round(ST_{axis}({rows}.{MERC}) * 100)::bigint)");
    let mut aggregates = vec![
        format!("floor((ST_X({rows}.{MERC}) + {half:?}) / {cell})::bigint AS __oar_cx"),
        format!("floor(({half:?} - ST_Y({rows}.{MERC})) / {cell})::bigint AS __oar_cy"),
        "count(*) AS __oar_n".to_string(),
        format!("{} AS __oar_sx", centimetres("X")),
        format!("{} AS __oar_sy", centimetres("Y")),
        format!("min(ST_X({rows}.{MERC})) AS __oar_x0, min(ST_Y({rows}.{MERC})) AS __oar_y0"),
        format!("max(ST_X({rows}.{MERC})) AS __oar_x1, max(ST_Y({rows}.{MERC})) AS __oar_y1"),
    ];
    let (id, attributes) = cell_attributes(layer);
    let id_source = if layer.integer_id {
        FEATURE_ID.to_string()
    } else {
        id.clone()
    };
    aggregates.push(format!("{} AS {id}", first(&id_source)));
    for column in &attributes {
        aggregates.push(format!("{} AS {column}", first(column)));
    }
    aggregates
}

/// The same columns as [`cell_aggregates`] for the cells of a zoom summed from the cells of the
/// next deeper zoom in `finer`, for `GROUP BY 1, 2` (without the breakdown: see
/// [`breakdown_rollup`]).
pub fn cell_rollup(layer: &LayerSource, finer: &str) -> Vec<String> {
    summed_cells(layer, finer, 1)
}

/// Cells summed from parts in `finer`: the cells of the next deeper zoom (`shift` 1), or the
/// per-value parts of the same cells (`shift` 0).
fn summed_cells(layer: &LayerSource, finer: &str, shift: u8) -> Vec<String> {
    let mut columns = vec![
        format!("{finer}.__oar_cx >> {shift} AS __oar_cx"),
        format!("{finer}.__oar_cy >> {shift} AS __oar_cy"),
        format!("sum({finer}.__oar_n)::bigint AS __oar_n"),
        format!("sum({finer}.__oar_sx) AS __oar_sx"),
        format!("sum({finer}.__oar_sy) AS __oar_sy"),
        format!("min({finer}.__oar_x0) AS __oar_x0, min({finer}.__oar_y0) AS __oar_y0"),
        format!("max({finer}.__oar_x1) AS __oar_x1, max({finer}.__oar_y1) AS __oar_y1"),
    ];
    let (id, attributes) = cell_attributes(layer);
    for column in std::iter::once(&id).chain(&attributes) {
        columns.push(format!(
            "(array_agg({finer}.{column}) FILTER (WHERE {finer}.__oar_n = 1))[1] AS {column}"
        ));
    }
    columns
}

/// The breakdown columns a cell carries after those of [`cell_aggregates`] when its layer has a
/// `cluster_breakdown`: the values (text; NULL counted as `''`) and their member counts, sorted by
/// value.
pub const BREAKDOWN_COLUMNS: [&str; 2] = ["__oar_bvs", "__oar_bns"];

/// The cells of zoom `zoom` aggregated from the rows of relation `rows` (as [`row_columns`] names
/// them), with the columns of [`cell_aggregates`] and, for a layer with a `cluster_breakdown`, the
/// [`BREAKDOWN_COLUMNS`]: the rows are first grouped by cell and value, and those parts then
/// summed per cell as finer cells are summed into coarser ones.
pub fn cells_from_rows(
    layer: &LayerSource,
    cluster: &ClusterConfig,
    rows: &str,
    zoom: &str,
    extent: u32,
) -> String {
    let aggregates = cell_aggregates(layer, cluster, rows, zoom, extent);
    let Some(column) = &layer.config.cluster_breakdown else {
        return format!("SELECT {} FROM {rows} GROUP BY 1, 2", aggregates.join(", "));
    };
    let value = format!("coalesce({rows}.{}::text, '')", quote_ident(column));
    let [values, counts] = BREAKDOWN_COLUMNS;
    format!(
        "SELECT {}, array_agg(p.__oar_bv ORDER BY p.__oar_bv) AS {values}, \
         array_agg(p.__oar_n ORDER BY p.__oar_bv) AS {counts} \
         FROM (SELECT {}, {value} AS __oar_bv FROM {rows} GROUP BY 1, 2, {value}) p GROUP BY 1, 2",
        summed_cells(layer, "p", 0).join(", "),
        aggregates.join(", ")
    )
}

/// The breakdown of the cells of a zoom summed from those of the next deeper zoom in `finer`
/// (rows of a FROM clause `from`), as `(cx, cy, values, counts)` for a join on the cell.
pub fn breakdown_rollup(from: &str, finer: &str) -> String {
    let [values, counts] = BREAKDOWN_COLUMNS;
    format!(
        "SELECT s.cx, s.cy, array_agg(s.v ORDER BY s.v) AS {values}, array_agg(s.n ORDER BY s.v) AS {counts} \
         FROM (SELECT {finer}.__oar_cx >> 1 AS cx, {finer}.__oar_cy >> 1 AS cy, u.v, sum(u.n)::bigint AS n \
         FROM (SELECT {finer}.* FROM {from}) {finer} \
         CROSS JOIN LATERAL unnest({finer}.{values}, {finer}.{counts}) AS u(v, n) \
         GROUP BY 1, 2, 3) s GROUP BY 1, 2"
    )
}

/// A cluster's breakdown as one property: `value:count` pairs in value order, joined by `,`, with
/// `%`, `,` and `:` inside values percent-encoded (`BD:3,CN:5`).
fn breakdown_text(cells: &str) -> String {
    let [values, counts] = BREAKDOWN_COLUMNS;
    format!(
        "(SELECT string_agg(replace(replace(replace(u.v, '%', '%25'), ',', '%2C'), ':', '%3A') || ':' || u.n, \
         ',' ORDER BY u.o) FROM unnest({cells}.{values}, {cells}.{counts}) WITH ORDINALITY AS u(v, n, o))"
    )
}

/// What a clustered feature shows that is derived from a cell's sums, as `(expression, stored
/// column)`: the centroid in metres, then the members' extent in degrees rounded to 6 decimals.
/// Cell tables store these once per cell ([`cell_display_columns`]) instead of every tile computing
/// them again: on 48 dense zoom-11 tiles of the 100k sample that halved the statement's time (15.5
/// to 7.8 ms), the numeric rounding being most of it.
pub(super) fn cell_display(cells: &str) -> [(String, &'static str); 6] {
    let lon =
        |x: &str| format!("round(degrees({cells}.{x} / {EARTH_RADIUS:?})::numeric, 6)::float8");
    let lat = |y: &str| {
        format!("round(degrees(atan(sinh({cells}.{y} / {EARTH_RADIUS:?})))::numeric, 6)::float8")
    };
    [
        (
            format!("({cells}.__oar_sx / {cells}.__oar_n / 100)::float8"),
            "__oar_px",
        ),
        (
            format!("({cells}.__oar_sy / {cells}.__oar_n / 100)::float8"),
            "__oar_py",
        ),
        (lon("__oar_x0"), "__oar_west"),
        (lat("__oar_y0"), "__oar_south"),
        (lon("__oar_x1"), "__oar_east"),
        (lat("__oar_y1"), "__oar_north"),
    ]
}

/// The derived columns a cell table stores after those of [`cell_aggregates`], computed from the
/// cells of relation `cells`.
pub fn cell_display_columns(cells: &str) -> String {
    cell_display(cells)
        .map(|(expression, column)| format!("{expression} AS {column}"))
        .join(", ")
}

/// The MVT bytes of one clustered layer, one feature per cell of the relation `cells` (with the
/// columns of [`cell_aggregates`], and those of [`cell_display_columns`] when `stored`).
///
/// Cells are aligned to the tile pixel grid of the zoom, so each lies in exactly one tile; every
/// cell reaching into the tile's buffer is complete, so a cluster comes out the same in every tile
/// that shows it.
pub(super) fn cluster_mvt(
    layer: &LayerSource,
    cluster: &ClusterConfig,
    cells: &str,
    name_param: usize,
    stored: bool,
    (extent, buffer): (u32, u32),
) -> String {
    let per_row = cells_per_row_sql(cluster, "$1", extent);
    let cell = cell_metres_sql(cluster, "$1", extent);
    let half = MERCATOR_HALF_WORLD;
    let [px, py, west, south, east, north] = cell_display(cells).map(|(expression, column)| {
        if stored {
            format!("{cells}.{column}")
        } else {
            expression
        }
    });
    let point = match cluster.position {
        ClusterPosition::Centroid => format!("ST_SetSRID(ST_MakePoint({px}, {py}), 3857)"),
        ClusterPosition::CellCenter => format!(
            "ST_SetSRID(ST_MakePoint(({cells}.__oar_cx + 0.5) * {cell} - {half:?}, \
             {half:?} - ({cells}.__oar_cy + 0.5) * {cell}), 3857)"
        ),
    };
    let (id, attributes) = cell_attributes(layer);
    let mut columns = vec![
        format!("ST_AsMVTGeom({point}, env.tile, {extent}, {buffer}, true) AS {GEOM}"),
        format!("{cells}.__oar_cy * {per_row} + {cells}.__oar_cx AS {FEATURE_ID}"),
        format!("{cells}.__oar_n AS \"count\""),
        format!("{west} AS \"extent_west\""),
        format!("{south} AS \"extent_south\""),
        format!("{east} AS \"extent_east\""),
        format!("{north} AS \"extent_north\""),
        format!("CASE WHEN {cells}.__oar_n = 1 THEN {cells}.{id} END AS {id}"),
    ];
    for column in &attributes {
        columns.push(format!(
            "CASE WHEN {cells}.__oar_n = 1 THEN {cells}.{column} END AS {column}"
        ));
    }
    if let Some(column) = &layer.config.cluster_breakdown {
        columns.push(format!(
            "{} AS {}",
            breakdown_text(cells),
            quote_ident(&breakdown_property(column))
        ));
    }
    format!(
        "COALESCE((SELECT ST_AsMVT(q, ${name_param}, {extent}, '__oar_geom', '__oar_fid' ORDER BY q.{FEATURE_ID}) \
         FROM (SELECT {} FROM {cells}) q WHERE q.{GEOM} IS NOT NULL), ''::bytea)",
        columns.join(", ")
    )
}

/// A CTE `cells` holding the cells of zoom `z` that reach into the tile's fetch envelope
/// (`margin_pixels` beyond it), read from a maintained cell table instead of aggregated from rows.
pub(super) fn cells_from_table(
    table: &str,
    cells: &str,
    cluster: &ClusterConfig,
    extent: u32,
    margin_pixels: u32,
) -> String {
    let per_tile = i64::from(extent / cluster.cell);
    let margin = i64::from(margin_pixels.div_ceil(cluster.cell));
    let range = |axis: &str| {
        format!(
            "k.__oar_c{axis} BETWEEN b.{axis}::bigint * {per_tile} - {margin} \
             AND b.{axis}::bigint * {per_tile} + {}",
            per_tile - 1 + margin
        )
    };
    format!(
        "{cells} AS (SELECT * FROM {table} k WHERE k.__oar_z = $1 AND {} AND {})",
        range("x"),
        range("y")
    )
}

/// The CTEs and the MVT expression of a layer at a clustered zoom: its cells read from the
/// maintained table `stored`, or aggregated from its rows (the CTEs named `rows` and `cells`).
pub(super) fn clustered_layer(
    layer: &LayerSource,
    cluster: &ClusterConfig,
    (rows, cells): (&str, &str),
    stored: Option<&str>,
    name_param: usize,
    margin_pixels: u32,
    (extent, buffer): (u32, u32),
) -> (Vec<String>, String) {
    let ctes = match stored {
        Some(table) => vec![cells_from_table(
            table,
            cells,
            cluster,
            extent,
            margin_pixels,
        )],
        None => vec![
            layer_rows(layer, rows),
            format!(
                "{cells} AS ({})",
                cells_from_rows(layer, cluster, rows, "$1", extent)
            ),
        ],
    };
    let mvt = cluster_mvt(
        layer,
        cluster,
        cells,
        name_param,
        stored.is_some(),
        (extent, buffer),
    );
    (ctes, mvt)
}

#[cfg(test)]
mod tests {
    use super::super::tests::layer;
    use super::*;

    #[test]
    fn only_columns_of_any_geometry_kind_cluster_at_representative_points() {
        let job = ZoomRange::new(0, 10).unwrap();
        let mut points = layer("p", None);
        points.config.cluster = Some(ClusterConfig {
            maxzoom: 6,
            cell: 256,
            position: ClusterPosition::Centroid,
        });
        let any = LayerSource {
            points_only: false,
            ..points.clone()
        };
        let other_kinds = "AND ST_GeometryType(t.\"location\") <> 'ST_Point')";
        for z in [3, 6] {
            let typed = render_query(std::slice::from_ref(&points), &[], z, job, (4096, 64)).sql;
            assert!(!typed.contains("ST_PointOnSurface"), "{typed}");
            assert!(!typed.contains(other_kinds), "{typed}");
            let generic = render_query(std::slice::from_ref(&any), &[], z, job, (4096, 64)).sql;
            assert!(
                generic.contains(&representative_point("t.\"location\"")),
                "{generic}"
            );
            // Zooms 7-10 draw lines whole: the walk must reach every tile they cross.
            assert!(generic.contains(other_kinds), "{generic}");
        }
        // Every zoom clustered: the walk follows the representative points alone.
        let clustered = ZoomRange::new(0, 6).unwrap();
        let generic = render_query(&[any], &[], 3, clustered, (4096, 64)).sql;
        assert!(!generic.contains(other_kinds), "{generic}");
    }
}
