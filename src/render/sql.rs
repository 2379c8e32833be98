//! Builds the per-tile SQL. Everything from the config is quoted as an identifier, except the layer's
//! `filter`, which is the operator's own SQL by design. Tile coordinates, envelopes and layer names are
//! bound parameters, so one prepared statement per zoom serves every tile of it.
//!
//! Parameters: `$1..$3` z, x, y; `$4..$7` the buffered envelope in degrees (EPSG:4326); `$8..$11` the same
//! in Web-Mercator metres; `$12..` the names of the layers rendered at that zoom.

use tokio_postgres::types::Type;

use crate::render::source::{quote_ident, quoted_table, LayerSource};
use crate::tile::ZoomRange;

const FIRST_LAYER_NAME_PARAM: usize = 12;
const GEOM: &str = "\"__oar_geom\"";
const FEATURE_ID: &str = "\"__oar_fid\"";

/// The SQL and parameter types of one zoom's statement.
#[derive(Debug, Clone)]
pub struct TileQuery {
    /// Statement text; returns one row `(mvt bytea, descend bool)`.
    pub sql: String,
    /// Types of its parameters, in order.
    pub types: Vec<Type>,
    /// Names bound from `$12` on, one per rendered layer.
    pub layer_names: Vec<String>,
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

fn envelope(layer: &LayerSource) -> String {
    match layer.srid {
        4326 => "ST_MakeEnvelope($4, $5, $6, $7, 4326)".into(),
        3857 => "ST_MakeEnvelope($8, $9, $10, $11, 3857)".into(),
        // Segmentized so that a curved projection of the envelope still covers the tile.
        srid => format!(
            "ST_Transform(ST_Segmentize(ST_MakeEnvelope(greatest($4, -180), greatest($5, -89.999999), \
             least($6, 180), least($7, 89.999999), 4326), 0.5), {srid})"
        ),
    }
}

fn source_predicate(layer: &LayerSource) -> String {
    let mut sql = format!(
        "FROM {} t WHERE t.{} && {}",
        quoted_table(&layer.config),
        quote_ident(&layer.config.geometry_column),
        envelope(layer)
    );
    if let Some(filter) = &layer.config.filter {
        sql.push_str(&format!(" AND ({filter})"));
    }
    sql
}

fn exists(layer: &LayerSource) -> String {
    format!("EXISTS (SELECT 1 {})", source_predicate(layer))
}

/// The subquery rendering one layer: its MVT bytes and how many source rows touch the buffered tile.
fn layer_subquery(layer: &LayerSource, name_param: usize, extent: u32, buffer: u32) -> String {
    let geometry = quote_ident(&layer.config.geometry_column);
    let projected = if layer.srid == 3857 {
        format!("t.{geometry}")
    } else {
        format!("ST_Transform(t.{geometry}, 3857)")
    };
    let mut columns = vec![format!(
        "ST_AsMVTGeom({projected}, ST_TileEnvelope($1, $2, $3), {extent}, {buffer}, true) AS {GEOM}"
    )];
    if layer.integer_id {
        columns.push(format!(
            "t.{} AS {FEATURE_ID}",
            quote_ident(&layer.config.id_column)
        ));
    }
    for property in &layer.properties {
        let column = quote_ident(&property.column);
        let cast = if property.cast_to_text { "::text" } else { "" };
        columns.push(format!("t.{column}{cast} AS {column}"));
    }
    let (id_arg, order) = if layer.integer_id {
        (", '__oar_fid'", FEATURE_ID.to_string())
    } else {
        ("", quote_ident(&layer.config.id_column))
    };
    format!(
        "(SELECT COALESCE(ST_AsMVT(q, ${name_param}, {extent}, '__oar_geom'{id_arg} ORDER BY q.{order}) \
         FILTER (WHERE q.{GEOM} IS NOT NULL), ''::bytea) AS mvt, count(*) AS n \
         FROM (SELECT {} {}) q)",
        columns.join(", "),
        source_predicate(layer)
    )
}

fn parameter_types(layer_names: usize) -> Vec<Type> {
    let mut types = vec![Type::INT4; 3];
    types.extend(std::iter::repeat_n(Type::FLOAT8, 8));
    types.extend(std::iter::repeat_n(Type::TEXT, layer_names));
    types
}

/// The statement that only says whether the tile's children hold anything (no rendering).
pub fn probe_query(layers: &[LayerSource], z: u8, job: ZoomRange) -> TileQuery {
    let deeper: Vec<String> = layers
        .iter()
        .filter(|l| active_below(l, z, job))
        .map(exists)
        .collect();
    let descend = if deeper.is_empty() {
        "false".into()
    } else {
        deeper.join(" OR ")
    };
    TileQuery {
        sql: format!("SELECT ''::bytea AS mvt, ({descend}) AS descend"),
        types: parameter_types(0),
        layer_names: vec![],
    }
}

/// The statement that renders a tile at zoom `z` and says whether its children hold anything.
pub fn render_query(
    layers: &[LayerSource],
    z: u8,
    job: ZoomRange,
    extent: u32,
    buffer: u32,
) -> TileQuery {
    let active: Vec<(usize, &LayerSource)> = layers
        .iter()
        .enumerate()
        .filter(|(_, l)| active_at(l, z))
        .collect();
    if active.is_empty() {
        return probe_query(layers, z, job);
    }
    let mut from = Vec::new();
    let mut layer_names = Vec::new();
    for (position, (index, layer)) in active.iter().enumerate() {
        from.push(format!(
            "{} AS l{index}",
            layer_subquery(layer, FIRST_LAYER_NAME_PARAM + position, extent, buffer)
        ));
        layer_names.push(layer.config.name.clone());
    }
    let mvt: Vec<String> = active
        .iter()
        .map(|(index, _)| format!("l{index}.mvt"))
        .collect();
    let descend: Vec<String> = layers
        .iter()
        .enumerate()
        .filter(|(_, l)| active_below(l, z, job))
        .map(|(index, layer)| {
            if active_at(layer, z) {
                format!("l{index}.n > 0")
            } else {
                exists(layer)
            }
        })
        .collect();
    let descend = if descend.is_empty() {
        "false".into()
    } else {
        descend.join(" OR ")
    };
    TileQuery {
        sql: format!(
            "SELECT {} AS mvt, ({descend}) AS descend FROM {}",
            mvt.join(" || "),
            from.join(" CROSS JOIN ")
        ),
        types: parameter_types(layer_names.len()),
        layer_names,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LayerConfig;
    use crate::render::source::Property;
    use crate::sink::FieldType;

    fn layer(name: &str, zooms: Option<ZoomRange>) -> LayerSource {
        LayerSource {
            config: LayerConfig {
                name: name.into(),
                schema: Some("my schema".into()),
                table: "fac\"ilities".into(),
                geometry_column: "location".into(),
                srid: None,
                id_column: "id".into(),
                attributes: vec!["name".into()],
                filter: Some("country_code = 'BD'".into()),
                zooms,
            },
            srid: 4326,
            integer_id: true,
            properties: vec![Property {
                column: "name".into(),
                field_type: FieldType::String,
                cast_to_text: false,
            }],
            has_spatial_index: true,
        }
    }

    #[test]
    fn identifiers_are_quoted_and_values_bound() {
        let job = ZoomRange::new(0, 14).unwrap();
        let query = render_query(&[layer("points", None)], 3, job, 4096, 64);
        assert!(
            query
                .sql
                .contains("FROM \"my schema\".\"fac\"\"ilities\" t"),
            "{}",
            query.sql
        );
        assert!(query
            .sql
            .contains("t.\"location\" && ST_MakeEnvelope($4, $5, $6, $7, 4326)"));
        assert!(query.sql.contains(
            "ST_AsMVT(q, $12, 4096, '__oar_geom', '__oar_fid' ORDER BY q.\"__oar_fid\")"
        ));
        assert!(query.sql.contains("AND (country_code = 'BD')"));
        assert!(
            !query.sql.contains("points"),
            "layer names are bound, not inlined"
        );
        assert_eq!(query.layer_names, ["points"]);
        assert_eq!(query.types.len(), 12);
    }

    #[test]
    fn the_deepest_zoom_never_descends() {
        let job = ZoomRange::new(0, 14).unwrap();
        assert!(render_query(&[layer("p", None)], 14, job, 4096, 64)
            .sql
            .contains("(false) AS descend"));
        assert!(render_query(&[layer("p", None)], 13, job, 4096, 64)
            .sql
            .contains("(l0.n > 0) AS descend"));
    }

    #[test]
    fn layers_outside_a_zoom_only_steer_the_walk() {
        let job = ZoomRange::new(0, 14).unwrap();
        let detail = layer("detail", Some(ZoomRange::new(12, 14).unwrap()));
        let overview = layer("overview", Some(ZoomRange::new(0, 11).unwrap()));
        let query = render_query(&[overview.clone(), detail.clone()], 5, job, 4096, 64);
        assert_eq!(query.layer_names, ["overview"]);
        assert!(query.sql.contains("l0.n > 0 OR EXISTS"), "{}", query.sql);
        let probe = probe_query(&[overview, detail], 12, job);
        assert!(
            probe.sql.starts_with("SELECT ''::bytea AS mvt, (EXISTS"),
            "{}",
            probe.sql
        );
        assert!(probe.layer_names.is_empty());
    }
}
