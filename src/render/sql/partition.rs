//! A partition's rows: the predicate that selects one value's rows (the value a parameter, so all
//! partitions share their statements), and the temporary table a session may hold them in.

use crate::config::Partition;
use crate::db::quote_ident;
use crate::render::source::{quoted_table, LayerSource};

/// Stands for the partition value's parameter until the statement's parameters are counted. SQL
/// text cannot hold a NUL byte, so no filter can contain it.
pub(super) const PARTITION_VALUE: &str = "\u{0}partition value\u{0}";

/// The rows of one partition: the value's parameter cast to the column's type (an element's for
/// an array), so an index on the column (btree, or GIN for an array) serves it.
pub(super) fn partition_predicate(partition: &Partition) -> String {
    let column = format!("t.{}", quote_ident(&partition.column));
    let value = format!("CAST({PARTITION_VALUE}::text AS {})", partition.value_type);
    if partition.array {
        // Containment, not `= ANY`, which no index serves: a GIN index on the column then finds
        // a small value's rows without scanning every row in the tile.
        format!("{column} @> ARRAY[{value}]")
    } else {
        format!("{column} = {value}")
    }
}

/// The temporary table a partition's rows are read from, if it has one.
pub(super) fn row_set_of(layer: &LayerSource) -> Option<&String> {
    layer.config.partition.as_ref()?.row_set.as_ref()
}

/// The statements that give a rendering session a partition's row set: the temporary table (empty,
/// with the table's column types) and its spatial index, each created once per session, then, for
/// every partition, the copy of the value's rows (the value bound as `$1`, as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSetSql {
    /// The table's name in `pg_temp`, unquoted.
    pub name: String,
    /// `CREATE TEMP TABLE … WITH NO DATA` and `CREATE INDEX`, one string of two statements.
    pub create: String,
    /// `TRUNCATE` of the table: a separate statement, since the copy takes a parameter.
    pub empty: String,
    /// `INSERT INTO … SELECT` of the value's rows that pass the layer's filter.
    pub fill: String,
}

/// [`RowSetSql`] of a layer whose partition has a row set. It holds only the columns tiles read
/// (the geometry, the id, the attributes and the breakdown), each under its own name, so every
/// statement reads `t.column` from it as it would from the table.
pub fn row_set_sql(layer: &LayerSource) -> Option<RowSetSql> {
    let partition = layer.config.partition.as_ref()?;
    let name = partition.row_set.clone()?;
    let config = &layer.config;
    let mut columns: Vec<&String> = vec![&config.geometry_column, &config.id_column];
    columns.extend(layer.properties.iter().map(|p| &p.column));
    columns.extend(&config.cluster_breakdown);
    let mut unique = Vec::new();
    for column in columns {
        if !unique.contains(&column) {
            unique.push(column);
        }
    }
    let selected: Vec<String> = unique
        .iter()
        .map(|column| format!("t.{}", quote_ident(column)))
        .collect();
    let selected = selected.join(", ");
    let table = quoted_table(config);
    let quoted = format!("pg_temp.{}", quote_ident(&name));
    let column = quote_ident(&config.geometry_column);
    let indexed = if layer.geography {
        format!("(({column}::geometry))")
    } else {
        format!("({column})")
    };
    // `IF NOT EXISTS`: a session that made them for an earlier connection of the pool keeps them.
    let create = format!(
        "CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT {selected} FROM {table} t WITH NO DATA; \
         CREATE INDEX IF NOT EXISTS {} ON {quoted} USING gist {indexed}",
        quote_ident(&name),
        quote_ident(&format!("{name}_geometry"))
    );
    let mut filter = partition_predicate(partition).replace(PARTITION_VALUE, "$1");
    if let Some(own) = &config.filter {
        filter = format!("({own}) AND {filter}");
    }
    Some(RowSetSql {
        name,
        create,
        empty: format!("TRUNCATE {quoted}"),
        fill: format!("INSERT INTO {quoted} SELECT {selected} FROM {table} t WHERE {filter}"),
    })
}
