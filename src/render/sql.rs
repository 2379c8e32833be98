//! Builds the per-tile SQL. Everything from the config is quoted as an identifier, except the layer's
//! `filter`, which is the operator's own SQL by design. Tile coordinates, envelopes and layer names are
//! bound parameters, so one prepared statement per zoom serves every tile of it.
//!
//! A statement returns the tile's MVT bytes and, for each of its four children, whether any source row
//! lies in the child's buffered envelope. The rows already fetched for the tile answer that for the
//! layers it renders, so the walk never queries an empty child at all.
//!
//! A statement renders a batch of tiles of one zoom, to spread the fixed cost of a statement (bind,
//! executor start-up, a network round trip) over many small tiles. Parameters: `$1` z; `$2`, `$3`
//! the tiles' x and y; then five envelopes per tile (the tile's, then its children's in
//! [`crate::tile::TileCoord::children`] order), each as four degrees (EPSG:4326) followed by four
//! Web-Mercator metres, from `$4` to `$43`, each an array with one element per tile; from `$44` the
//! names of the layers rendered at that zoom; after them, in a partition's statements, the
//! partition's value as text, so all partitions of a tileset share their statements.

use tokio_postgres::types::Type;

mod batch;
mod children;
mod cluster;
mod drawn;
mod generalise;
mod partition;

use batch::{batch_rows, drawn_from_batch, tile_rows};
use children::{children_array, RowsAt};
use cluster::*;
pub use cluster::{
    breakdown_rollup, cell_display_columns, cell_metres, cell_rollup, cells_from_rows,
    cluster_row_columns, representative_point, BREAKDOWN_COLUMNS,
};
pub use drawn::{unclipped, world_units_to_metres};
pub(super) use generalise::too_small;
use generalise::{drawn_geometry, simplified};
use partition::{partition_predicate, row_set_of, PARTITION_VALUE};
pub use partition::{row_set_sql, RowSetSql};

use crate::config::{breakdown_property, ClusterConfig, ClusterPosition};
use crate::db::quote_ident;
use crate::render::source::{quoted_table, Encoding, LayerSource, LIST_SEPARATOR};
use crate::tile::{ZoomRange, EARTH_RADIUS, MERCATOR_HALF_WORLD};

/// Envelopes bound per statement: the tile's and its four children's.
pub const ENVELOPES: usize = 5;
const FIRST_ENVELOPE_PARAM: usize = 4;
const FIRST_LAYER_NAME_PARAM: usize = FIRST_ENVELOPE_PARAM + ENVELOPES * 8;
const GEOM: &str = "\"__oar_geom\"";
const MERC: &str = "\"__oar_merc\"";
const FEATURE_ID: &str = "\"__oar_fid\"";

/// How the per-tile query refers to parameter `$n` of the single-tile layout: the zoom and layer
/// names are plain parameters; the rest arrive as arrays, one element per tile, unnested into `b`.
fn tile_value(n: usize) -> String {
    match n {
        2 => "b.x".to_string(),
        3 => "b.y".to_string(),
        n if (FIRST_ENVELOPE_PARAM..FIRST_LAYER_NAME_PARAM).contains(&n) => format!("b.p{n}"),
        n => format!("${n}"),
    }
}

/// Bytes of MVT per row of a statement's result: a large tile arrives in pieces, so the client never
/// needs one buffer of its whole size (tokio-postgres grows its read buffer by doubling).
pub const MVT_CHUNK: usize = 1 << 20;

/// The batch's envelope parameters: the columns they are unnested into (`pN`) and the
/// parameters as arrays (`$N::float8[]`).
fn envelope_columns() -> (Vec<String>, Vec<String>) {
    let params = FIRST_ENVELOPE_PARAM..FIRST_LAYER_NAME_PARAM;
    (
        params.clone().map(|n| format!("p{n}")).collect(),
        params.map(|n| format!("${n}::float8[]")).collect(),
    )
}

/// Runs the per-tile query once per tile of a batch: `$2`, `$3` and `$4..$43` are arrays with one
/// element per tile. A tile's MVT comes as consecutive rows of [`MVT_CHUNK`] bytes (one row, maybe
/// empty, for most). Each row also carries the server's clock when it was produced, so render times
/// are the server's own and do not include waiting in the pipeline.
///
/// `ctes` are the statement's own (not one tile's): what they compute is computed once per batch.
fn batched(ctes: &[String], per_tile: &str) -> String {
    let (columns, arrays) = envelope_columns();
    // The chunks come from a set-returning function in the select list (a ProjectSet), not from a
    // lateral `generate_series`: the planner puts a Memoize keyed by the whole MVT in front of the
    // latter, which hashed every tile's bytes. `date_part` gives float8 directly; `extract` would
    // compute a numeric first, on every row.
    let with = if ctes.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", ctes.join(", "))
    };
    format!(
        "{with}SELECT q.x, q.y, q.part, substring(q.mvt FROM q.part * {MVT_CHUNK} + 1 FOR {MVT_CHUNK}) AS chunk, \
         q.children, date_part('epoch', clock_timestamp() - statement_timestamp()) AS done \
         FROM (SELECT b.x, b.y, t.mvt, t.children, \
         generate_series(0, greatest(length(t.mvt) - 1, 0) / {MVT_CHUNK}) AS part \
         FROM unnest($2::int4[], $3::int4[], {}) AS b(x, y, {}) \
         CROSS JOIN LATERAL ({per_tile} OFFSET 0) t) q",
        arrays.join(", "),
        columns.join(", ")
    )
}

/// The SQL and parameter types of one zoom's statement.
#[derive(Debug, Clone)]
pub struct TileQuery {
    /// Statement text; returns per tile one or more rows `(x int4, y int4, part int4, chunk bytea,
    /// children bool[4], done float8)`, `done` being seconds since the statement started.
    pub sql: String,
    /// Types of its parameters, in order.
    pub types: Vec<Type>,
    /// Names bound from `$44` on, one per rendered layer.
    pub layer_names: Vec<String>,
    /// A partition's value, bound after the names.
    pub partition_value: Option<String>,
}

/// What a layer contributes to a tile at a given zoom.
fn active_at(layer: &LayerSource, z: u8) -> bool {
    layer.config.zooms.is_none_or(|r| r.contains(z))
}

/// Whether a layer appears at any zoom of the job below `z` (in the tile pyramid: deeper).
fn active_below(layer: &LayerSource, z: u8, job: ZoomRange) -> bool {
    let deeper = (z + 1)..=job.max;
    match layer.config.zooms {
        None => !deeper.is_empty(),
        Some(range) => range.max > z && range.min <= job.max,
    }
}

/// West, south, east, north of envelope `index` (0 the tile, 1-4 its children) in degrees or metres.
fn envelope_values(index: usize, mercator: bool) -> [String; 4] {
    let first = FIRST_ENVELOPE_PARAM + index * 8 + if mercator { 4 } else { 0 };
    [0, 1, 2, 3].map(|i| tile_value(first + i))
}

/// `w, s, e, n` of envelope `index`, as `ST_MakeEnvelope` takes them.
fn envelope_params(index: usize, mercator: bool) -> String {
    envelope_values(index, mercator).join(", ")
}

/// Envelope `index` in the layer's own SRID, so the spatial index on the stored column is used.
fn envelope(layer: &LayerSource, index: usize) -> String {
    envelope_in_srid(
        layer,
        &envelope_values(index, false),
        &envelope_values(index, true),
    )
}

/// An envelope given as SQL expressions in degrees and in metres, in the layer's own SRID.
pub fn envelope_in_srid(
    layer: &LayerSource,
    degrees: &[String; 4],
    metres: &[String; 4],
) -> String {
    match layer.srid {
        4326 => format!("ST_MakeEnvelope({}, 4326)", degrees.join(", ")),
        3857 => format!("ST_MakeEnvelope({}, 3857)", metres.join(", ")),
        // Clamped to where projections are defined, and segmentized so that a curved projection of
        // the envelope still covers the tile.
        srid => {
            let [w, s, e, n] = degrees;
            format!(
                "ST_Transform(ST_Segmentize(ST_MakeEnvelope(greatest({w}, -180), greatest({s}, -89.999999), \
                 least({e}, 180), least({n}, 89.999999), 4326), 0.5), {srid})"
            )
        }
    }
}

fn source_predicate(layer: &LayerSource, index: usize) -> String {
    rows_within(layer, &envelope(layer, index))
}

/// `FROM` and `WHERE` of the layer's rows whose geometry's box meets `area` (in its own SRID):
/// from the partition's row set when it has one, which holds them already filtered.
fn rows_within(layer: &LayerSource, area: &str) -> String {
    if let Some(set) = row_set_of(layer) {
        return format!(
            "FROM pg_temp.{} t WHERE {} && {area}",
            quote_ident(set),
            layer.geometry_of("t")
        );
    }
    let mut sql = format!(
        "FROM {} t WHERE {} && {}",
        quoted_table(&layer.config),
        layer.geometry_of("t"),
        area
    );
    if let Some(filter) = &layer.config.filter {
        sql.push_str(&format!(" AND ({filter})"));
    }
    if let Some(partition) = &layer.config.partition {
        sql.push_str(&format!(" AND {}", partition_predicate(partition)));
    }
    sql
}

/// A statement with its parameters: the partition value's placeholder, if any layer has one, is
/// numbered after the others and its value kept to be bound.
fn tile_query(sql: String, layers: &[LayerSource], layer_names: Vec<String>) -> TileQuery {
    let mut types = parameter_types(layer_names.len());
    let partition_value = layers
        .iter()
        .find_map(|layer| layer.config.partition.as_ref())
        .filter(|_| sql.contains(PARTITION_VALUE))
        .map(|partition| partition.value.clone());
    let sql = match partition_value {
        Some(_) => {
            types.push(Type::TEXT);
            sql.replace(PARTITION_VALUE, &format!("${}", types.len()))
        }
        None => sql,
    };
    TileQuery {
        sql,
        types,
        layer_names,
        partition_value,
    }
}

/// Whether the layer has rows in envelope `index`, straight from its table, by the test a statement
/// that renders the parent makes on the rows it holds (`MERC && env.childN`): found through the
/// index on the stored column, then held to the envelope in metres. The envelope in degrees alone
/// takes rows a fraction of a metre outside it (it is converted, and `&&` rounds boxes outwards),
/// which the parent's render leaves out; a shard that only probed the parent then wrote tiles a
/// single run does not (10 of 542,027 tiles at 1M points, each drawing one point 0.5 m past its
/// buffer).
///
/// Only degrees are held to metres so: a row past the poles cannot be projected, and a probe reads
/// no geometry it could fail on (`--keep-going` walks below a tile whose render failed through
/// probes), so such a row is kept as before; other SRIDs' rows are kept as the index finds them.
fn exists(layer: &LayerSource, index: usize) -> String {
    let rows = source_predicate(layer, index);
    if layer.srid != 4326 {
        return format!("EXISTS (SELECT 1 {rows})");
    }
    let geometry = layer.geometry_of("t");
    format!(
        "EXISTS (SELECT 1 {rows} AND CASE WHEN ST_YMin({geometry}) > -90 AND ST_YMax({geometry}) < 90 \
         THEN {} && ST_MakeEnvelope({}, 3857) ELSE true END)",
        web_mercator(&geometry, layer.srid),
        envelope_params(index, true)
    )
}

/// A geometry held in SRID `srid`, in Web-Mercator metres as tiles draw it. The planner reads
/// changed geometries through the same expression ([`web_mercator_per_row`]): where PROJ wraps a
/// longitude past ±180° or stretches a latitude past the Mercator square, both see the same shape.
pub fn web_mercator(geometry: &str, srid: i32) -> String {
    if srid == 3857 {
        geometry.to_string()
    } else {
        format!("ST_Transform({geometry}, 3857)")
    }
}

/// [`web_mercator`] for a geometry whose SRID only the server knows (the change log holds whatever
/// SRID the column held), chosen per row: as it is in 3857, transformed in any other SRID (4326
/// stands for them all).
pub fn web_mercator_per_row(geometry: &str) -> String {
    format!(
        "CASE WHEN ST_SRID({geometry}) = 3857 THEN {} ELSE {} END",
        web_mercator(geometry, 3857),
        web_mercator(geometry, 4326)
    )
}

/// A row's columns with the geometry `geometry` (an expression in the layer's SRID).
fn columns_with(layer: &LayerSource, geometry: &str) -> Vec<String> {
    let projected = web_mercator(geometry, layer.srid);
    let mut columns = vec![format!("{projected} AS {MERC}")];
    if layer.integer_id {
        columns.push(format!(
            "t.{} AS {FEATURE_ID}",
            quote_ident(&layer.config.id_column)
        ));
    }
    for property in &layer.properties {
        let column = quote_ident(&property.column);
        let value = match property.encoding {
            Encoding::Native => format!("t.{column}"),
            Encoding::Text => format!("t.{column}::text"),
            Encoding::List => list_value(&format!("t.{column}")),
        };
        columns.push(format!("{value} AS {column}"));
    }
    columns
}

/// An array as [`Encoding::List`] text: NULL stays NULL, an empty array is an empty string.
fn list_value(array: &str) -> String {
    let separator = LIST_SEPARATOR;
    let escaped = format!("%{:02X}", u32::from(separator));
    format!(
        "(SELECT CASE WHEN {array} IS NULL THEN NULL WHEN count(e.v) = 0 THEN '' ELSE \
         '{separator}' || string_agg(replace(replace(e.v::text, '%', '%25'), '{separator}', '{escaped}'), \
         '{separator}' ORDER BY e.o) || '{separator}' END \
         FROM unnest({array}) WITH ORDINALITY AS e(v, o))"
    )
}

/// The rows of one clustered layer inside the tile's fetch envelope, as a CTE the cells group;
/// materialized, so each row is projected once however many aggregates read it.
fn layer_rows(layer: &LayerSource, cte: &str) -> String {
    format!(
        "{cte} AS MATERIALIZED (SELECT {} {})",
        cluster_row_columns(layer).join(", "),
        source_predicate(layer, 0)
    )
}

/// The feature id argument of `ST_AsMVT` and the column features are ordered by, so the same rows
/// always give the same bytes.
fn feature_order(layer: &LayerSource) -> (&'static str, String) {
    if layer.integer_id {
        (", '__oar_fid'", FEATURE_ID.to_string())
    } else {
        ("", quote_ident(&layer.config.id_column))
    }
}

/// A lateral subquery `alias` yielding one unclustered layer's MVT bytes (`mvt`, NULL when nothing
/// is drawn) and, per child envelope, whether any of its rows lies there (`c1`..`c4`).
///
/// Rows stream from the index scan straight into the aggregates: no CTE holds them, and the
/// envelopes are built once per tile in `env`, not once per row. `OFFSET 0` keeps the planner from
/// pulling the rows' subquery up, which would copy `ST_Transform` into every use of its result and
/// run it five times per row.
///
/// A layer that may hold lines or polygons reads its rows from the statement's CTE `batch`
/// instead ([`batch_rows`]), where each row was projected, measured and simplified once for the
/// whole batch; the tile takes the rows whose stored envelope meets its fetch envelope, the very
/// test its own index scan would make, so it draws the same rows.
fn layer_lateral(
    layer: &LayerSource,
    (alias, name_param, batch): (&str, usize, Option<&str>),
    z: u8,
    (extent, buffer): (u32, u32),
    with_flags: bool,
) -> String {
    let drawn = match batch {
        Some(_) => drawn_from_batch(layer, z, (extent, buffer)),
        None => drawn_geometry(layer, &format!("s.{MERC}"), z, (extent, buffer)),
    };
    let mut columns = vec![format!("{drawn} AS {GEOM}")];
    if layer.integer_id {
        columns.push(format!("s.{FEATURE_ID}"));
    }
    for property in &layer.properties {
        columns.push(format!("s.{}", quote_ident(&property.column)));
    }
    let (id_arg, order) = feature_order(layer);
    let flags: String = (1..ENVELOPES)
        .filter(|_| with_flags)
        .map(|child| format!(", bool_or(s.{MERC} && env.child{child}) AS c{child}"))
        .collect();
    let rows = match batch {
        Some(cte) => tile_rows(layer, cte, z, (extent, buffer)),
        None => format!(
            "SELECT {} {}",
            row_columns(layer).join(", "),
            source_predicate(layer, 0)
        ),
    };
    format!(
        "CROSS JOIN LATERAL (SELECT ST_AsMVT(r, ${name_param}, {extent}, '__oar_geom'{id_arg} ORDER BY r.{order}) \
         FILTER (WHERE r.{GEOM} IS NOT NULL) AS mvt{} \
         FROM ({rows} OFFSET 0) s CROSS JOIN LATERAL (SELECT {}) r) {alias}",
        flags,
        columns.join(", ")
    )
}

fn parameter_types(layer_names: usize) -> Vec<Type> {
    let mut types = vec![Type::INT4, Type::INT4_ARRAY, Type::INT4_ARRAY];
    types.extend(std::iter::repeat_n(Type::FLOAT8_ARRAY, ENVELOPES * 8));
    types.extend(std::iter::repeat_n(Type::TEXT, layer_names));
    types
}

/// The statement that only says which children hold anything (no rendering).
pub fn probe_query(layers: &[LayerSource], z: u8, job: ZoomRange) -> TileQuery {
    let sql = batched(
        &[],
        &format!(
            "SELECT ''::bytea AS mvt, {} AS children",
            children_array(layers, z, job, |_| RowsAt::Table)
        ),
    );
    tile_query(sql, layers, Vec::new())
}

/// The one-row `env` every lateral layer reads: the tile's envelope and its children's fetch
/// envelopes, as geometries built once per statement. `OFFSET 0` keeps the planner from pulling
/// the subquery up, which would rebuild every envelope once per row.
fn envelopes_row() -> String {
    let children: Vec<String> = (1..ENVELOPES)
        .map(|child| {
            format!(
                "ST_MakeEnvelope({}, 3857) AS child{child}",
                envelope_params(child, true)
            )
        })
        .collect();
    format!(
        "(SELECT ST_TileEnvelope($1, b.x, b.y) AS tile, {} OFFSET 0) env",
        children.join(", ")
    )
}

/// The statement that renders a tile at zoom `z` and says which of its children hold anything.
/// `cell_tables` names, per layer, a maintained table of cluster cells to read at clustered zooms
/// instead of aggregating rows (see [`crate::state::cells`]).
///
/// A little over 80 lines, kept whole on purpose: it lays out one statement from top to bottom
/// (CTEs, laterals, MVT concatenation, children flags), and each piece is built by a function of
/// its own; splitting the layout itself would scatter the statement's shape.
pub fn render_query(
    layers: &[LayerSource],
    cell_tables: &[Option<String>],
    z: u8,
    job: ZoomRange,
    (extent, buffer): (u32, u32),
) -> TileQuery {
    let active: Vec<usize> = (0..layers.len())
        .filter(|i| active_at(&layers[*i], z))
        .collect();
    if active.is_empty() {
        return probe_query(layers, z, job);
    }
    let cte_names: Vec<String> = (0..layers.len()).map(|index| format!("s{index}")).collect();
    let lateral_names: Vec<String> = (0..layers.len()).map(|index| format!("l{index}")).collect();
    let batch_names: Vec<String> = (0..layers.len()).map(|index| format!("r{index}")).collect();
    let cell_names: Vec<String> = (0..layers.len()).map(|index| format!("c{index}")).collect();
    // Whole pixels: fetch margins are whole cells or the buffer.
    let margin_pixels =
        (crate::render::fetch_margin(layers, z, extent, buffer) * f64::from(extent)).round() as u32;
    let mut ctes = Vec::new();
    let mut batch_ctes = Vec::new();
    let mut laterals = Vec::new();
    let mut mvts = Vec::new();
    let mut layer_names = Vec::new();
    for (position, index) in active.iter().enumerate() {
        let layer = &layers[*index];
        let name_param = FIRST_LAYER_NAME_PARAM + position;
        match layer.config.cluster_at(z) {
            Some(cluster) => {
                let names = (cte_names[*index].as_str(), cell_names[*index].as_str());
                let stored = cell_tables.get(*index).and_then(Option::as_ref);
                let (layer_ctes, mvt) = clustered_layer(
                    layer,
                    cluster,
                    names,
                    stored.map(String::as_str),
                    name_param,
                    margin_pixels,
                    (extent, buffer),
                );
                ctes.extend(layer_ctes);
                mvts.push(mvt);
            }
            None => {
                let alias = &lateral_names[*index];
                // Points cost nothing to project or generalise, and a tile's own index scan
                // streams them into the aggregates: only layers with other kinds share rows.
                let batch = (!layer.points_only).then(|| batch_names[*index].as_str());
                if let Some(cte) = batch {
                    batch_ctes.push(batch_rows(layer, cte, z));
                }
                laterals.push(layer_lateral(
                    layer,
                    (alias, name_param, batch),
                    z,
                    (extent, buffer),
                    active_below(layer, z, job),
                ));
                mvts.push(format!("COALESCE({alias}.mvt, ''::bytea)"));
            }
        }
        layer_names.push(layer.config.name.clone());
    }
    let children = children_array(layers, z, job, |index| {
        if !active.contains(&index) {
            RowsAt::Table
        } else if layers[index].config.cluster_at(z).is_some() {
            if cell_tables.get(index).is_some_and(Option::is_some) {
                RowsAt::Cells(&cell_names[index])
            } else {
                RowsAt::Cte(&cte_names[index])
            }
        } else {
            RowsAt::Flags(&lateral_names[index])
        }
    });
    let with = if ctes.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", ctes.join(", "))
    };
    let sql = batched(
        &batch_ctes,
        &format!(
            "{with}SELECT {} AS mvt, {children} AS children FROM {} {}",
            mvts.join(" || "),
            envelopes_row(),
            laterals.join(" ")
        ),
    );
    tile_query(sql, layers, layer_names)
}

#[cfg(test)]
mod tests;

/// For naming the rows that make a tile's statement fail: `layer`'s rows in a one-tile statement's
/// fetch envelope (its parameters `$1..$43`, then the partition value's), found as the statement
/// finds them, whose id as text (`COLLATE "C"`) lies within the two bounds bound last (NULL:
/// unbounded). With `project`, one count of them, each projected as the statement projects it (to
/// its representative point where `clustered`), so a row the projection fails on fails it;
/// without, their ids as text in that order, projecting nothing.
pub fn rows_between(layer: &LayerSource, clustered: bool, project: bool) -> TileQuery {
    // From the table itself, whatever the tile read: the search runs on any connection, whose
    // row set may be another partition's, and a row that fails in a copy fails in the table.
    let mut layer = layer.clone();
    if let Some(partition) = &mut layer.config.partition {
        partition.row_set = None;
    }
    let layer = &layer;
    const LOWER: &str = "\u{0}lower id\u{0}";
    const UPPER: &str = "\u{0}upper id\u{0}";
    let id = format!(
        "t.{}::text COLLATE \"C\"",
        quote_ident(&layer.config.id_column)
    );
    let found = format!(
        "{} AND ({LOWER}::text IS NULL OR {id} >= {LOWER}) AND ({UPPER}::text IS NULL OR {id} <= {UPPER})",
        source_predicate(layer, 0)
    );
    let per_tile = if project {
        let columns = if clustered {
            cluster_row_columns(layer)
        } else {
            row_columns(layer)
        };
        // The whole-row count keeps every projected column computed: the planner drops unused
        // immutable outputs of a subquery.
        format!(
            "SELECT count(p.*) FROM (SELECT {} {found} OFFSET 0) p",
            columns.join(", ")
        )
    } else {
        format!("SELECT {id} {found}")
    };
    let (columns, arrays) = envelope_columns();
    let sql = format!(
        "SELECT s.* FROM unnest($2::int4[], $3::int4[], {}) AS b(x, y, {}) \
         CROSS JOIN LATERAL ({per_tile}) s ORDER BY 1",
        arrays.join(", "),
        columns.join(", ")
    );
    let mut query = tile_query(sql, std::slice::from_ref(layer), Vec::new());
    let lower = query.types.len() + 1;
    query.types.extend([Type::TEXT, Type::TEXT]);
    query.sql = query
        .sql
        .replace(LOWER, &format!("${lower}"))
        .replace(UPPER, &format!("${}", lower + 1));
    query
}
