//! Checks each configured layer against the database before any tile is rendered: the table, its
//! columns and their types, the geometry's SRID, the spatial index, and the right to read it.

use std::collections::BTreeMap;

use deadpool_postgres::{Client, Pool};
use tokio_postgres::types::Type;

use serde::Serialize;

use crate::config::{breakdown_property, Generalisation, LayerConfig, CLUSTER_PROPERTIES};
use crate::db::quote_ident;
use crate::error::{pg_message, Error, Result};

/// The type of a feature property, as TileJSON's `vector_layers` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// Whether a spatial index covers the geometry column. Views count as indexed: whether their
    /// base tables' indexes serve the view cannot be known here, and a warning would be noise.
    pub has_spatial_index: bool,
    /// The planner's estimate of the table's rows (0 when unknown, as for views).
    pub estimated_rows: f64,
    /// Whether the geometry column's type admits only points (`geometry(Point, …)`). A clustered
    /// layer of any other column places each row at a representative point (see
    /// [`crate::render::sql::representative_point`]); one of points only takes them as they are,
    /// without testing each row's kind.
    pub points_only: bool,
    /// Whether the column is `geography`: it is read as geometry (`::geometry`, longitude and
    /// latitude in its SRID), and its spatial index must be on that expression.
    pub geography: bool,
}

/// One property column of a layer.
#[derive(Debug, Clone)]
pub struct Property {
    /// Column name, also the property name.
    pub column: String,
    /// Its type in `vector_layers`.
    pub field_type: FieldType,
    /// How its values travel in a tile.
    pub encoding: Encoding,
}

/// How a property's values become MVT values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As they are: numbers, booleans, text.
    Native,
    /// As their text form, because MVT has no value type for them.
    Text,
    /// An array as one string, each element followed and the first preceded by [`LIST_SEPARATOR`]
    /// (`,12,34,`), so a map client tests membership with a substring (`",12,"`) that cannot
    /// match part of another element. Separators and `%` inside elements are percent-encoded.
    List,
}

/// The separator of [`Encoding::List`] properties.
pub const LIST_SEPARATOR: char = ',';

impl LayerSource {
    /// The layer's geometry in the row `alias` of its table, as a `geometry` value.
    pub fn geometry_of(&self, alias: &str) -> String {
        let column = quote_ident(&self.config.geometry_column);
        if self.geography {
            format!("{alias}.{column}::geometry")
        } else {
            format!("{alias}.{column}")
        }
    }

    /// The generalisation this layer's tiles get: none for a column of points only, or when the
    /// config turns every rule off.
    pub fn generalised(&self) -> Option<&Generalisation> {
        let rules = &self.config.generalisation;
        (!self.points_only && !rules.is_off()).then_some(rules)
    }

    /// The properties sent as delimited lists.
    pub fn list_properties(&self) -> Vec<&str> {
        self.properties
            .iter()
            .filter(|p| p.encoding == Encoding::List)
            .map(|p| p.column.as_str())
            .collect()
    }

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
            if let Some(column) = &self.config.cluster_breakdown {
                fields.insert(breakdown_property(column), FieldType::String);
            }
        }
        fields
    }
}

/// `"schema"."table"` or `"table"`.
pub fn quoted_table(layer: &LayerConfig) -> String {
    match &layer.schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&layer.table)),
        None => quote_ident(&layer.table),
    }
}

#[derive(Clone)]
struct Column {
    type_name: String,
    /// The SQL name of its type, or of its elements' for an array (`integer`, `text`, a
    /// qualified enum where the search path does not reach it).
    element_type: String,
    attnum: i16,
    typmod_srid: Option<i32>,
    /// The geometry kind a `geometry(Kind, …)` column admits (`Point`, `PointZ`, `Geometry`, …).
    typmod_kind: Option<String>,
}

/// What is wrong with a layer's source, as the database describes it; it reaches the user as an
/// [`Error::Source`] naming the tileset and the layer.
#[derive(Debug, thiserror::Error)]
enum SourceProblem {
    /// The catalog could not be asked for the table.
    #[error("cannot look up table `{table}`: {}", pg_message(.source))]
    LookUp {
        table: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("table `{0}` does not exist (or is not on the search_path)")]
    NoTable(String),
    #[error("the database user may not SELECT from `{0}`")]
    NoSelect(String),
    /// The catalog could not be asked for the table's columns.
    #[error("cannot read the columns of `{table}`: {}", pg_message(.source))]
    Columns {
        table: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("column `{column}` does not exist in table `{table}`")]
    NoColumn { column: String, table: String },
    #[error("partition_by column `{column}` does not exist in table `{table}`")]
    NoPartitionColumn { column: String, table: String },
    #[error("column `{column}` of `{table}` is of type {type_name}, not geometry or geography")]
    NotGeometry {
        column: String,
        table: String,
        type_name: String,
    },
    #[error("srid {configured} in the config, but column `{column}` holds SRID {actual}")]
    OtherSrid {
        configured: i32,
        column: String,
        actual: i32,
    },
    #[error("column `{0}` has no SRID constraint: set `srid` in the layer")]
    NoSrid(String),
    #[error(
        "cluster_breakdown `{0}` is an array column; counts per value need a column of single values"
    )]
    ArrayBreakdown(String),
    /// The catalog could not be asked for the table's indexes.
    #[error("{}", pg_message(.0))]
    Indexes(#[source] tokio_postgres::Error),
}

/// Looks a layer's source up in the database; `tileset` only names it in errors.
pub async fn describe(pool: &Pool, tileset: &str, layer: &LayerConfig) -> Result<LayerSource> {
    let source_error = |problem: SourceProblem| Error::Source {
        tileset: tileset.to_string(),
        layer: layer.name.clone(),
        message: problem.to_string(),
    };
    let client = crate::db::get(pool).await?;
    let (table, columns) = table_and_columns(&client, layer)
        .await
        .map_err(source_error)?;
    let column = |name: &str| {
        columns.get(name).ok_or_else(|| {
            source_error(SourceProblem::NoColumn {
                column: name.to_string(),
                table: table.name.clone(),
            })
        })
    };
    let geometry = column(&layer.geometry_column)?;
    let srid = geometry_srid(layer, &table.name, geometry).map_err(source_error)?;
    let id = column(&layer.id_column)?;
    let integer_id = matches!(id.type_name.as_str(), "int2" | "int4" | "int8");
    let mut property_columns: Vec<&String> = layer.attributes.iter().collect();
    if !integer_id && !layer.attributes.contains(&layer.id_column) {
        property_columns.insert(0, &layer.id_column);
    }
    let mut properties = Vec::new();
    for name in property_columns {
        properties.push(property(name, column(name)?));
    }
    let list_breakdown = properties.iter().find(|p| {
        p.encoding == Encoding::List && layer.cluster_breakdown.as_ref() == Some(&p.column)
    });
    if let Some(list) = list_breakdown {
        return Err(source_error(SourceProblem::ArrayBreakdown(
            list.column.clone(),
        )));
    }
    // Views count as indexed (see `LayerSource::has_spatial_index`).
    let geography = geometry.type_name == "geography";
    let has_spatial_index = table.relkind == "v"
        || spatial_index(
            &client,
            table.oid,
            geometry.attnum,
            geography.then_some(&layer.geometry_column),
        )
        .await
        .map_err(source_error)?;
    Ok(LayerSource {
        config: layer.clone(),
        srid,
        integer_id,
        properties,
        has_spatial_index,
        // Never analysed (-1) or a view (0): unknown, taken as small.
        estimated_rows: table.estimated_rows.max(0.0),
        // `Point`, `PointZ`, `PointM`, `PointZM`; `MultiPoint` has no single X and Y.
        points_only: geometry
            .typmod_kind
            .as_deref()
            .is_some_and(|kind| kind.starts_with("Point")),
        geography,
    })
}

/// What the catalog says of a source table.
struct Table {
    name: String,
    oid: u32,
    relkind: String,
    estimated_rows: f64,
}

async fn look_up_table(client: &Client, layer: &LayerConfig) -> Result<Table, SourceProblem> {
    let name = layer.qualified_table();
    let row = client
        .query_typed_opt(
            "SELECT c.oid, c.relkind::text, has_table_privilege(c.oid, 'SELECT'),
                    c.reltuples::float8
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[(&quoted_table(layer), Type::TEXT)],
        )
        .await
        .map_err(|source| SourceProblem::LookUp {
            table: name.clone(),
            source,
        })?
        .ok_or_else(|| SourceProblem::NoTable(name.clone()))?;
    if !row.get::<_, bool>(2) {
        return Err(SourceProblem::NoSelect(name));
    }
    Ok(Table {
        oid: row.get(0),
        relkind: row.get(1),
        estimated_rows: row.get(3),
        name,
    })
}

async fn read_columns(
    client: &Client,
    table: &Table,
) -> Result<BTreeMap<String, Column>, SourceProblem> {
    let rows = client
        .query_typed(
            "SELECT a.attname::text, t.typname::text, a.attnum,
                    format_type(CASE WHEN left(t.typname::text, 1) = '_' THEN t.typelem ELSE t.oid END, a.atttypmod),
                    CASE WHEN t.typname IN ('geometry', 'geography') AND a.atttypmod >= 0
                         THEN postgis_typmod_srid(a.atttypmod) END,
                    CASE WHEN t.typname IN ('geometry', 'geography') AND a.atttypmod >= 0
                         THEN postgis_typmod_type(a.atttypmod) END
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            &[(&table.oid, Type::OID)],
        )
        .await
        .map_err(|source| SourceProblem::Columns {
            table: table.name.clone(),
            source,
        })?;
    Ok(rows
        .iter()
        .map(|r| {
            let column = Column {
                type_name: r.get(1),
                attnum: r.get(2),
                element_type: r.get(3),
                typmod_srid: r.get(4),
                typmod_kind: r.get(5),
            };
            (r.get::<_, String>(0), column)
        })
        .collect())
}

/// What one value of a partition column holds in one layer: its rows and their extent.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionValue {
    /// The value's text form (`column::text`, or an element's for an array column).
    pub value: String,
    /// Rows holding it.
    pub features: i64,
    /// Their extent `[west, south, east, north]` in degrees.
    pub bounds: Option<[f64; 4]>,
}

/// How a layer's table holds the partition column: whether it is an array, and the SQL type of
/// a value (an element's, for an array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionColumn {
    /// Whether the column is an array, whose rows belong to the partition of each element.
    pub array: bool,
    /// The type a value's text form is cast to in tile statements.
    pub value_type: String,
    /// Whether an index covers the column, so a small value's tiles do not filter every row
    /// the tile holds.
    pub indexed: bool,
}

/// Whether the layer's table has the partition column, and how it holds it.
pub async fn partition_column(
    pool: &Pool,
    tileset: &str,
    layer: &LayerConfig,
    column: &str,
) -> Result<PartitionColumn> {
    let client = crate::db::get(pool).await?;
    let (table_oid, found) =
        table_and_columns(&client, layer)
            .await
            .and_then(|(table, columns)| {
                let found = columns.get(column).cloned().ok_or_else(|| {
                    SourceProblem::NoPartitionColumn {
                        column: column.to_string(),
                        table: table.name.clone(),
                    }
                })?;
                Ok((table.oid, found))
            })
            .map_err(|problem| Error::Source {
                tileset: tileset.to_string(),
                layer: layer.name.clone(),
                message: problem.to_string(),
            })?;
    let indexed = client
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $1 AND $2 = ANY (i.indkey::int2[]))",
            &[(&table_oid, Type::OID), (&found.attnum, Type::INT2)],
        )
        .await
        .map_err(|e| Error::Source {
            tileset: tileset.to_string(),
            layer: layer.name.clone(),
            message: format!("cannot read the indexes of its table: {}", pg_message(&e)),
        })?
        .get(0);
    Ok(PartitionColumn {
        array: found.type_name.starts_with('_'),
        value_type: found.element_type,
        indexed,
    })
}

/// The layer's table and its columns by name.
async fn table_and_columns(
    client: &Client,
    layer: &LayerConfig,
) -> Result<(Table, BTreeMap<String, Column>), SourceProblem> {
    let table = look_up_table(client, layer).await?;
    let columns = read_columns(client, &table).await?;
    Ok((table, columns))
}

/// Every value of the partition column among the layer's rows (within its filter), or of those
/// `only` lists, with their row counts and extents. NULL and empty values belong to no partition.
pub async fn partition_values(
    pool: &Pool,
    tileset: &str,
    layer: &LayerSource,
    column: &str,
    held: &PartitionColumn,
    only: Option<&[String]>,
) -> Result<Vec<PartitionValue>> {
    let config = &layer.config;
    let quoted = format!("t.{}", quote_ident(column));
    let array = held.array;
    let value = if array {
        format!("unnest({quoted})::text")
    } else {
        format!("{quoted}::text")
    };
    let geometry = layer.geometry_of("t");
    let mut filter = config
        .filter
        .as_ref()
        .map(|f| format!(" AND ({f})"))
        .unwrap_or_default();
    if only.is_some() {
        // The rows of the listed values only, found through an index on the column if there is one.
        let listed = format!("CAST($1 AS {}[])", held.value_type);
        filter.push_str(&if array {
            format!(" AND {quoted} && {listed}")
        } else {
            format!(" AND {quoted} = ANY({listed})")
        });
    }
    // The extent is taken in the source SRID and its corners projected, not every row.
    let sql = format!(
        "SELECT v, n, ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM (
             SELECT v, count(*) AS n,
                    ST_Transform(ST_SetSRID(ST_Extent(g)::geometry, {srid}), 4326)::box2d AS b
             FROM (SELECT {value} AS v, {geometry} AS g FROM {table} t
                   WHERE {geometry} IS NOT NULL{filter}) s
             WHERE v IS NOT NULL AND v <> '' AND ($1::text[] IS NULL OR v = ANY($1)) GROUP BY v) c
         ORDER BY v",
        srid = layer.srid,
        table = quoted_table(config),
    );
    let mut client = crate::db::get(pool).await?;
    let read = async {
        // Values are named by their text forms, which partitions' statements read back.
        let transaction = crate::db::text_form_transaction(&mut client).await?;
        transaction
            .query_typed(&sql, &[(&only, Type::TEXT_ARRAY)])
            .await
    };
    let rows = read.await.map_err(|e| Error::Source {
        tileset: tileset.to_string(),
        layer: config.name.clone(),
        message: format!(
            "cannot read the values of partition_by `{column}`: {}",
            pg_message(&e)
        ),
    })?;
    Ok(rows
        .iter()
        .map(|r| {
            // To 1e-7 degrees (about a centimetre): the same rows give the same index whichever
            // plan read them, where the last bits of a projected extent can differ.
            let corner = |i: usize| r.get::<_, Option<f64>>(i).map(|v| (v * 1e7).round() / 1e7);
            PartitionValue {
                value: r.get(0),
                features: r.get(1),
                bounds: match (corner(2), corner(3), corner(4), corner(5)) {
                    (Some(w), Some(s), Some(e), Some(n)) => Some([w, s, e, n]),
                    _ => None,
                },
            }
        })
        .collect())
}

/// The SRID the layer's geometry column holds: its constraint, else the config's `srid`; a
/// `geography` column without one holds longitude and latitude in EPSG:4326, its type's default.
fn geometry_srid(
    layer: &LayerConfig,
    table: &str,
    geometry: &Column,
) -> Result<i32, SourceProblem> {
    let name = &layer.geometry_column;
    let declared = match geometry.type_name.as_str() {
        "geometry" => geometry.typmod_srid.filter(|s| *s > 0),
        "geography" => Some(geometry.typmod_srid.filter(|s| *s > 0).unwrap_or(4326)),
        other => {
            return Err(SourceProblem::NotGeometry {
                column: name.clone(),
                table: table.to_string(),
                type_name: other.to_string(),
            })
        }
    };
    match (declared, layer.srid) {
        (Some(actual), Some(configured)) if actual != configured => Err(SourceProblem::OtherSrid {
            configured,
            column: name.clone(),
            actual,
        }),
        (Some(actual), _) => Ok(actual),
        (None, Some(configured)) => Ok(configured),
        (None, None) => Err(SourceProblem::NoSrid(name.clone())),
    }
}

/// A property column with its `vector_layers` type; arrays travel as delimited lists, other types
/// MVT cannot hold as text.
fn property(name: &str, column: &Column) -> Property {
    let (field_type, encoding) = match column.type_name.as_str() {
        "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" => {
            (FieldType::Number, Encoding::Native)
        }
        "bool" => (FieldType::Boolean, Encoding::Native),
        "text" | "varchar" => (FieldType::String, Encoding::Native),
        // PostgreSQL names an array type after its element type with a leading underscore.
        array if array.starts_with('_') => (FieldType::String, Encoding::List),
        _ => (FieldType::String, Encoding::Text),
    };
    Property {
        column: name.to_string(),
        field_type,
        encoding,
    }
}

/// Whether an index can serve the tiles' `&&` on the column: one on the column itself, or for a
/// `geography` column (whose own index answers questions on the sphere, not in longitude and
/// latitude) one on the expression `(column::geometry)` as the tiles' statements write it.
async fn spatial_index(
    client: &Client,
    oid: u32,
    attnum: i16,
    geography: Option<&String>,
) -> Result<bool, SourceProblem> {
    let expression = geography.map(|column| format!("({}::geometry)", quote_ident(column)));
    let row = client
        .query_typed_one(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_index i
                 JOIN pg_class ic ON ic.oid = i.indexrelid
                 JOIN pg_am am ON am.oid = ic.relam
                 WHERE i.indrelid = $1 AND am.amname IN ('gist', 'spgist', 'brin')
                   AND CASE WHEN $3::text IS NULL THEN $2 = ANY (i.indkey::int2[])
                            ELSE i.indkey[0] = 0 AND pg_get_indexdef(i.indexrelid, 1, true) = $3 END)",
            &[(&oid, Type::OID), (&attnum, Type::INT2), (&expression, Type::TEXT)],
        )
        .await
        .map_err(SourceProblem::Indexes)?;
    Ok(row.get(0))
}
