//! Checks each configured layer against the database before any tile is rendered: the table, its
//! columns and their types, the geometry's SRID, the spatial index, and the right to read it.

use std::collections::BTreeMap;

use deadpool_postgres::Pool;

use serde::Serialize;

use crate::config::{LayerConfig, CLUSTER_PROPERTIES};
use crate::error::{pg_message, Error, Result};
use crate::render::pool::pool_message;

/// The type of a feature property, as TileJSON's `vector_layers` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FieldType {
    /// Any numeric column.
    Number,
    /// A boolean column.
    Boolean,
    /// Text, and anything else (rendered as its text form).
    String,
}

/// A layer whose source has been found and described by the database.
#[derive(Debug, Clone)]
pub struct LayerSource {
    /// The layer as configured.
    pub config: LayerConfig,
    /// The SRID the geometry column holds.
    pub srid: i32,
    /// Whether the id column is an integer, and so becomes the MVT feature id.
    pub integer_id: bool,
    /// Property columns in output order, with their MVT types and whether they need a text cast.
    pub properties: Vec<Property>,
    /// Whether a spatial index covers the geometry column (false for views, where it cannot be known).
    pub has_spatial_index: bool,
    /// The planner's estimate of the table's rows (0 when unknown, as for views).
    pub estimated_rows: f64,
}

/// One property column of a layer.
#[derive(Debug, Clone)]
pub struct Property {
    /// Column name, also the property name.
    pub column: String,
    /// Its type in `vector_layers`.
    pub field_type: FieldType,
    /// Whether it is cast to text because MVT has no value type for it.
    pub cast_to_text: bool,
}

impl LayerSource {
    /// Property names and types for `vector_layers`.
    pub fn fields(&self) -> BTreeMap<String, FieldType> {
        let mut fields: BTreeMap<String, FieldType> = self
            .properties
            .iter()
            .map(|p| (p.column.clone(), p.field_type))
            .collect();
        if self.config.cluster.is_some() {
            for name in CLUSTER_PROPERTIES {
                fields.insert(name.to_string(), FieldType::Number);
            }
            let id_type = if self.integer_id {
                FieldType::Number
            } else {
                FieldType::String
            };
            fields
                .entry(self.config.id_column.clone())
                .or_insert(id_type);
        }
        fields
    }
}

/// Quotes an identifier for SQL, doubling embedded quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"` or `"table"`.
pub fn quoted_table(layer: &LayerConfig) -> String {
    match &layer.schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&layer.table)),
        None => quote_ident(&layer.table),
    }
}

struct Column {
    type_name: String,
    attnum: i16,
    typmod_srid: Option<i32>,
}

/// Looks a layer's source up in the database; `tileset` only names it in errors.
pub async fn describe(pool: &Pool, tileset: &str, layer: &LayerConfig) -> Result<LayerSource> {
    let source_error = |message: String| Error::Source {
        tileset: tileset.to_string(),
        layer: layer.name.clone(),
        message,
    };
    let client = pool
        .get()
        .await
        .map_err(|e| Error::Database(pool_message(&e)))?;
    let table = layer.qualified_table();
    let row = client
        .query_opt(
            "SELECT c.oid, c.relkind::text, has_table_privilege(c.oid, 'SELECT'),
                    c.reltuples::float8
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&quoted_table(layer)],
        )
        .await;
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => {
            return Err(source_error(format!(
                "table `{table}` does not exist (or is not on the search_path)"
            )))
        }
        Err(err) => {
            return Err(source_error(format!(
                "cannot look up table `{table}`: {}",
                pg_message(&err)
            )))
        }
    };
    let oid: u32 = row.get(0);
    let relkind: String = row.get(1);
    let can_select: bool = row.get(2);
    let estimated_rows: f64 = row.get(3);
    if !can_select {
        return Err(source_error(format!(
            "the database user may not SELECT from `{table}`"
        )));
    }

    let rows = client
        .query(
            "SELECT a.attname::text, t.typname::text, a.attnum,
                    CASE WHEN t.typname = 'geometry' AND a.atttypmod >= 0
                         THEN postgis_typmod_srid(a.atttypmod) END
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&oid],
        )
        .await
        .map_err(|e| {
            source_error(format!(
                "cannot read the columns of `{table}`: {}",
                pg_message(&e)
            ))
        })?;
    let columns: BTreeMap<String, Column> = rows
        .iter()
        .map(|r| {
            let column = Column {
                type_name: r.get(1),
                attnum: r.get(2),
                typmod_srid: r.get(3),
            };
            (r.get::<_, String>(0), column)
        })
        .collect();
    let column = |name: &str| {
        columns.get(name).ok_or_else(|| {
            source_error(format!("column `{name}` does not exist in table `{table}`"))
        })
    };

    let geometry = column(&layer.geometry_column)?;
    if geometry.type_name != "geometry" {
        return Err(source_error(format!(
            "column `{}` of `{table}` is of type {}, not geometry",
            layer.geometry_column, geometry.type_name
        )));
    }
    let srid = match (geometry.typmod_srid.filter(|s| *s > 0), layer.srid) {
        (Some(actual), Some(configured)) if actual != configured => {
            return Err(source_error(format!(
                "srid {configured} in the config, but column `{}` holds SRID {actual}",
                layer.geometry_column
            )))
        }
        (Some(actual), _) => actual,
        (None, Some(configured)) => configured,
        (None, None) => {
            return Err(source_error(format!(
                "column `{}` has no SRID constraint: set `srid` in the layer",
                layer.geometry_column
            )))
        }
    };

    let id = column(&layer.id_column)?;
    let integer_id = matches!(id.type_name.as_str(), "int2" | "int4" | "int8");
    let mut property_columns: Vec<&String> = layer.attributes.iter().collect();
    if !integer_id && !layer.attributes.contains(&layer.id_column) {
        property_columns.insert(0, &layer.id_column);
    }
    let mut properties = Vec::new();
    for name in property_columns {
        let (field_type, cast_to_text) = match column(name)?.type_name.as_str() {
            "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" => {
                (FieldType::Number, false)
            }
            "bool" => (FieldType::Boolean, false),
            "text" | "varchar" => (FieldType::String, false),
            _ => (FieldType::String, true),
        };
        properties.push(Property {
            column: name.clone(),
            field_type,
            cast_to_text,
        });
    }

    let has_spatial_index = if relkind == "v" {
        true
    } else {
        client
            .query_one(
                "SELECT EXISTS (
                     SELECT 1 FROM pg_index i
                     JOIN pg_class ic ON ic.oid = i.indexrelid
                     JOIN pg_am am ON am.oid = ic.relam
                     WHERE i.indrelid = $1 AND am.amname IN ('gist', 'spgist', 'brin')
                       AND $2 = ANY (i.indkey::int2[]))",
                &[&oid, &geometry.attnum],
            )
            .await
            .map_err(|e| source_error(pg_message(&e)))?
            .get(0)
    };

    Ok(LayerSource {
        config: layer.clone(),
        srid,
        integer_id,
        properties,
        has_spatial_index,
        // Never analysed (-1) or a view (0): unknown, taken as small.
        estimated_rows: estimated_rows.max(0.0),
    })
}
