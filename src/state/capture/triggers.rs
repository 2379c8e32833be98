//! The DDL that installs change capture: the change log, and per source table the statement
//! triggers whose functions log each statement's old and new geometries and notify `watch`.

use std::collections::BTreeMap;

use md5::{Digest, Md5};

use crate::config::Config;
use crate::db::{dollar_quote, quote_ident, quote_literal};
use crate::render::source::quoted_table;

mod compared;
mod update;

use super::coverage;
pub(super) use compared::{
    compared_columns, recorded, table_sql as compared_table_sql, widen, Widening,
};
use update::update_body;

/// A source table and what its trigger must watch.
pub(super) struct Watched {
    pub(super) table: String,
    geometry: String,
    pub(super) id: String,
    /// Whether the id column's type has a collation (text ids): their pairing then compares bytes
    /// (read at install).
    pub(super) id_collatable: bool,
    /// Whether the geometry column is `geography`: the log holds geometries, so its values are
    /// cast, and compared as geometries, whose equality is exact (read at install).
    pub(super) geography: bool,
    columns: Vec<String>,
    filtered: bool,
    /// Columns some tileset is partitioned by, each with whether it is an array (read at install).
    pub(super) partitions: Vec<(String, bool)>,
    /// Watched columns whose type has no equality the triggers may rely on (`json`, `point`,
    /// `xml`, a domain or array of one): compared by their text forms, since comparing them as
    /// they are would fail every UPDATE of the table (read at install).
    pub(super) text_compared: Vec<String>,
    /// Columns compared because another config sharing the change schema renders them, each with
    /// that config's file (read at install from `SCHEMA.compared`).
    pub(super) borrowed: Vec<(String, String)>,
}

impl Watched {
    /// The geometry column's name.
    pub(super) fn geometry(&self) -> &str {
        &self.geometry
    }

    /// Every watched column (rendered, id, geometry, partition).
    pub(super) fn columns(&self) -> Vec<String> {
        self.columns.clone()
    }

    /// Stops comparing `column`, which the table no longer has, if only another config's entry
    /// named it (renamed or dropped since: that config's own runs fail on it, and comparing it
    /// would fail every UPDATE of the table); says whether it did. The entry stays, so the column
    /// is compared again once the table has it and capture is installed again.
    pub(super) fn forget_borrowed(&mut self, column: &str) -> bool {
        let Some(at) = self.borrowed.iter().position(|(c, _)| c == column) else {
            return false;
        };
        let (_, other) = self.borrowed.remove(at);
        self.columns.retain(|c| c != column);
        tracing::warn!(
            "table {} has no column `{column}`, which {other} rendered when it was installed under \
             this change schema: it is no longer compared; install that config again once it is fixed",
            self.table
        );
        true
    }
}

/// The source tables of a config, each once, with the union of what its layers render.
pub(super) fn watched_tables(config: &Config) -> Vec<Watched> {
    let mut tables: BTreeMap<String, Watched> = BTreeMap::new();
    for (tileset, layer) in config
        .tilesets
        .iter()
        .flat_map(|t| t.layers.iter().map(move |l| (t, l)))
    {
        let entry = tables
            .entry(quoted_table(layer))
            .or_insert_with(|| Watched {
                table: quoted_table(layer),
                geometry: layer.geometry_column.clone(),
                id: layer.id_column.clone(),
                id_collatable: false,
                geography: false,
                columns: Vec::new(),
                filtered: false,
                partitions: Vec::new(),
                text_compared: Vec::new(),
                borrowed: Vec::new(),
            });
        for column in layer
            .attributes
            .iter()
            .chain([&layer.id_column, &layer.geometry_column])
        {
            if !entry.columns.contains(column) {
                entry.columns.push(column.clone());
            }
        }
        entry.filtered |= layer.filter.is_some();
        // A row whose partition value changed moves between pyramids: the change must be logged,
        // with the values it left and joined.
        if let Some(column) = &tileset.partition_by {
            if !entry.columns.contains(column) {
                entry.columns.push(column.clone());
            }
            if !entry.partitions.iter().any(|(c, _)| c == column) {
                entry.partitions.push((column.clone(), false));
            }
        }
    }
    tables.into_values().collect()
}

/// The channel the triggers notify after each statement that logged a change: the change schema's
/// name, so several installs in one database never wake each other's watchers.
pub fn channel(change_schema: &str) -> String {
    change_schema.to_string()
}

fn function_name(schema: &str, table: &str) -> String {
    let digest = Md5::digest(table.as_bytes());
    format!("{schema}.capture_{}", hex::encode(&digest[..8]))
}

/// The DDL that installs change capture, `tables` widened to what every config sharing the schema
/// renders, each with what the install adds to the schema's entries (`widenings`, in the same
/// order); running it twice is harmless.
pub(super) fn install_sql(config: &Config, tables: &[Watched], widenings: &[Widening]) -> String {
    let schema = &quote_ident(&config.change_schema);
    // Sent by the trigger that logged, not by a trigger of its own: one trigger call fewer on
    // every statement (2,000 single-row UPDATEs: 115.7 against 119.1 ms of server CPU, median of
    // 15 alternating rounds), and no wake-up for a statement that changed nothing rendered.
    let notify = &format!(
        "PERFORM pg_notify({}, TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME)",
        quote_literal(&channel(&config.change_schema))
    );
    let mut sql = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.change_log (
             id bigserial PRIMARY KEY,
             source oid NOT NULL,
             xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
             changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
             old_geom geometry,
             new_geom geometry,
             everything boolean NOT NULL DEFAULT false);
         -- One row per statement: the old and new geometries of every row it changed. (old_geom
         -- and new_geom, one row per changed row, are what earlier versions wrote, and what a
         -- statement of one row writes.)
         ALTER TABLE {schema}.change_log ADD COLUMN IF NOT EXISTS old_geoms geometry[];
         ALTER TABLE {schema}.change_log ADD COLUMN IF NOT EXISTS new_geoms geometry[];
         -- Rows whose lines or polygons alone changed (no other watched column), as pairs: the
         -- old shape at moved_from[i], the new one at moved_to[i]. A reseed renders only the
         -- tiles where what they draw differs.
         ALTER TABLE {schema}.change_log ADD COLUMN IF NOT EXISTS moved_from geometry[];
         ALTER TABLE {schema}.change_log ADD COLUMN IF NOT EXISTS moved_to geometry[];
         DO {compression};
         -- Per partition column of the table, the values of the rows the statement changed, as
         -- {{\"column\": [values]}}; NULL where no tileset was partitioned when it was logged.
         ALTER TABLE {schema}.change_log ADD COLUMN IF NOT EXISTS partitions jsonb;
         CREATE INDEX IF NOT EXISTS change_log_source ON {schema}.change_log (source);
         CREATE TABLE IF NOT EXISTS {schema}.consumers (
             output text PRIMARY KEY,
             snapshot pg_snapshot NOT NULL,
             updated_at timestamptz NOT NULL DEFAULT now());
         -- The zoom below which the output's tiles render slowly (a tile took 250 ms or more), as
         -- its runs found: `watch` renders those zooms apart from commits from its first cycle.
         ALTER TABLE {schema}.consumers ADD COLUMN IF NOT EXISTS slow_below smallint;
         CREATE OR REPLACE FUNCTION {schema}.capture_truncate() RETURNS trigger LANGUAGE plpgsql AS {truncate};
",
        compression = dollar_quote(&compression_sql(schema)),
        truncate = dollar_quote(&format!(
            "
         BEGIN
             INSERT INTO {schema}.change_log (source, everything) VALUES (TG_RELID, true);
             {notify};
             RETURN NULL;
         END"
        )),
    );
    sql.push_str(&coverage::captured_table_sql(schema));
    let names = coverage::trigger_names(&config.change_schema);
    for (watched, widening) in tables.iter().zip(widenings) {
        let function = function_name(schema, &watched.table);
        sql.push_str(&coverage::record_since(
            &config.change_schema,
            &watched.table,
        ));
        sql.push_str(&compared::record_sql(schema, &watched.table, widening));
        sql.push_str(&coverage::drop_owned_triggers(
            &config.change_schema,
            &watched.table,
        ));
        sql.push_str(&table_triggers_sql(
            schema, watched, &function, notify, &names,
        ));
        sql.push_str(&coverage::enable_always(
            &config.change_schema,
            &watched.table,
        ));
    }
    // The earlier notify trigger's function, unless a table this config no longer names still
    // uses it (its next install or uninstall drops that trigger).
    let drop_notifier = dollar_quote(&format!(
        " BEGIN
             DROP FUNCTION IF EXISTS {schema}.notify_change();
         EXCEPTION WHEN dependent_objects_still_exist THEN NULL;
         END"
    ));
    sql.push_str(&format!("DO {drop_notifier};\n"));
    sql
}

/// The trigger functions and the four triggers of one watched table, `function` the prefix of its
/// functions' names and `names` the triggers' (insert, update, delete, truncate).
fn table_triggers_sql(
    schema: &str,
    watched: &Watched,
    function: &str,
    notify: &str,
    names: &[String; 4],
) -> String {
    let [insert_trigger, update_trigger, delete_trigger, truncate_trigger] = names;
    format!(
        "DROP FUNCTION IF EXISTS {function}();
         CREATE OR REPLACE FUNCTION {function}_insert() RETURNS trigger LANGUAGE plpgsql{text_form} AS {insert};
         CREATE OR REPLACE FUNCTION {function}_delete() RETURNS trigger LANGUAGE plpgsql{text_form} AS {delete};
         CREATE OR REPLACE FUNCTION {function}_update() RETURNS trigger LANGUAGE plpgsql{text_form} AS {update};
         DROP TRIGGER IF EXISTS {insert_trigger} ON {table};
         CREATE TRIGGER {insert_trigger} AFTER INSERT ON {table}
             REFERENCING NEW TABLE AS oar_new
             FOR EACH STATEMENT EXECUTE FUNCTION {function}_insert();
         DROP TRIGGER IF EXISTS {update_trigger} ON {table};
         CREATE TRIGGER {update_trigger} AFTER UPDATE ON {table}
             REFERENCING OLD TABLE AS oar_old NEW TABLE AS oar_new
             FOR EACH STATEMENT EXECUTE FUNCTION {function}_update();
         DROP TRIGGER IF EXISTS {delete_trigger} ON {table};
         CREATE TRIGGER {delete_trigger} AFTER DELETE ON {table}
             REFERENCING OLD TABLE AS oar_old
             FOR EACH STATEMENT EXECUTE FUNCTION {function}_delete();
         DROP TRIGGER IF EXISTS {truncate_trigger} ON {table};
         CREATE TRIGGER {truncate_trigger} AFTER TRUNCATE ON {table}
             FOR EACH STATEMENT EXECUTE FUNCTION {schema}.capture_truncate();
",
        table = watched.table,
        text_form = text_form_clause(watched),
        insert = dollar_quote(&one_side_body(schema, watched, "oar_new", "new_geoms", notify)),
        delete = dollar_quote(&one_side_body(schema, watched, "oar_old", "old_geoms", notify)),
        update = dollar_quote(&update_body(schema, watched, notify)),
    )
}

/// A trigger function's body: `single` when the statement changed at most one row, with that row
/// in the record `o` (from `oar_old`) or `n` (from `oar_new`) as `rows` name them, else `bulk`
/// (whose `$1` is the table's oid) and `notify` when it logged a row; `single` notifies itself.
///
/// PL/pgSQL keeps the plan of a static statement for the session, planned once for the size of
/// the transition tables at its first run; a plan made for a bulk statement then served every
/// single-row write after it (JIT-compiled on each call once the estimate passed `jit_above_cost`,
/// about 30,000 rows), and the generic-or-custom choice could settle on planning the statement
/// anew on every call. Even a plan made for one row costs a single-row statement about twice
/// what a row trigger did when it inserts into the log from a query over the transition tables.
/// So a single row is read into a record, compared and logged with `INSERT ... VALUES`, as the
/// row trigger of the first design did, into the columns `old_geom` and `new_geom` it wrote; a
/// bulk statement is planned for its own size each time (`EXECUTE`), which costs little next to
/// its rows. It runs with JIT off: the transition tables have no statistics, so past about
/// 25,000 rows the estimate crosses `jit_above_cost` and 15-20 ms went to compiling a statement
/// that runs once. The application's own setting is put back right after, so its next statements
/// in the transaction plan as it chose (an error rolls the setting back with the rest).
fn dispatch(rows: &[&str], single: &str, bulk: &str, notify: &str) -> String {
    let declare: String = rows
        .iter()
        .map(|table| format!(" {} record;", record(table)))
        .collect();
    let read: String = rows
        .iter()
        .map(|table| {
            format!(
                "                     SELECT * INTO {} FROM {table};\n",
                record(table)
            )
        })
        .collect();
    format!(
        "             DECLARE{declare} logged bigint; jit_was text;
             BEGIN
                 PERFORM FROM {first} LIMIT 1 OFFSET 1;
                 IF NOT FOUND THEN
{read}                     IF FOUND THEN
{single};
                     END IF;
                 ELSE
                     jit_was := current_setting('jit');
                     PERFORM set_config('jit', 'off', true);
                     EXECUTE {bulk} USING TG_RELID;
                     GET DIAGNOSTICS logged = ROW_COUNT;
                     PERFORM set_config('jit', jit_was, true);
                     IF logged > 0 THEN
                         {notify};
                     END IF;
                 END IF;
                 RETURN NULL;
             END",
        first = rows[0],
        bulk = dollar_quote(&format!("\n{bulk}")),
    )
}

/// The DDL that stores the change log's arrays of geometries compressed with LZ4 where the server
/// has it, else uncompressed: aggregating and inserting the log row of a 20,000-point statement
/// took about 26 ms of server CPU with pglz, 11 with LZ4 and 13 uncompressed (PostgreSQL 15,
/// timed inside an UPDATE's trigger, three runs, load 4.5).
fn compression_sql(schema: &str) -> String {
    let columns = |how: &str| {
        format!(
            "ALTER TABLE {schema}.change_log ALTER COLUMN old_geoms SET {how}, ALTER COLUMN new_geoms SET {how}"
        )
    };
    format!(
        "
         BEGIN
             EXECUTE {};
         EXCEPTION WHEN feature_not_supported OR invalid_parameter_value OR syntax_error THEN
             EXECUTE {};
         END",
        quote_literal(&columns("COMPRESSION lz4")),
        quote_literal(&columns("STORAGE EXTERNAL")),
    )
}

/// The record a single row of the transition table `rows` is read into.
fn record(rows: &str) -> &'static str {
    if rows == "oar_old" {
        "o"
    } else {
        "n"
    }
}

/// ` SET DateStyle = … SET …` when the table's log rows carry partition values: the values' text
/// forms must be the tool's whatever the application's session has set, and a function's own
/// settings are restored when it returns, so the application's transaction never sees them.
fn text_form_clause(watched: &Watched) -> String {
    if watched.partitions.is_empty() {
        return String::new();
    }
    crate::db::TEXT_FORM_SETTINGS
        .iter()
        .map(|(name, value)| format!(" SET {name} = {}", quote_literal(value)))
        .collect()
}

/// `, partitions` when the table's log rows carry partition values, else nothing.
fn partition_column(watched: &Watched) -> &'static str {
    if watched.partitions.is_empty() {
        ""
    } else {
        ", partitions"
    }
}

/// The body of the INSERT (`rows` = `oar_new`, into `column` `new_geoms`) or DELETE (`oar_old`,
/// `old_geoms`) trigger, which runs `notify` when it logged.
/// The watched geometry column as the log stores it, to be read from a row (`o.` + this).
fn logged_geometry(watched: &Watched) -> String {
    let column = quote_ident(&watched.geometry);
    if watched.geography {
        format!("{column}::geometry")
    } else {
        column
    }
}

fn one_side_body(
    schema: &str,
    watched: &Watched,
    rows: &str,
    column: &str,
    notify: &str,
) -> String {
    let geometry = logged_geometry(watched);
    let record = record(rows);
    let partition_column = partition_column(watched);
    let single_partitions = single_row_partitions(watched, |column, array| {
        value_sql(&format!("{record}.{column}"), array)
    });
    let single = format!(
        "                         INSERT INTO {schema}.change_log (source, {single_column}{partition_column})
                         VALUES (TG_RELID, {record}.{geometry}{single_partitions});
                         {notify}",
        single_column = column.trim_end_matches('s'),
    );
    let bulk = format!(
        "                     INSERT INTO {schema}.change_log (source, {column}{partition_column})
                     SELECT $1, array_agg(t.{geometry}){partitions} FROM {rows} t HAVING count(*) > 0",
        partitions = partition_values_sql(&watched.partitions, rows),
    );
    dispatch(&[rows], &single, &bulk, notify)
}

/// `, <jsonb>` of the values each partition column holds in the transition table `rows`, for the
/// log row's `partitions`; empty when the table has no partition column.
fn partition_values_sql(partitions: &[(String, bool)], rows: &str) -> String {
    if partitions.is_empty() {
        return String::new();
    }
    let objects: Vec<String> = partitions
        .iter()
        .map(|(column, array)| {
            let values = value_sql(&format!("t.{}", quote_ident(column)), *array);
            values_object(column, &format!("{rows} t"), &values)
        })
        .collect();
    format!(", {}", objects.join(" || "))
}

/// `{"column": [the distinct non-NULL values of SELECT values over from]}`.
fn values_object(column: &str, from: &str, values: &str) -> String {
    format!(
        "jsonb_build_object({}, ARRAY(SELECT DISTINCT x.v FROM {from}, \
         LATERAL (SELECT {values}) x(v) WHERE x.v IS NOT NULL))",
        quote_literal(column)
    )
}

/// `, <jsonb>` of a single row's partition values for its log row, each column's from `values`
/// (given the quoted column and whether it is an array); empty when the table has none.
fn single_row_partitions(watched: &Watched, values: impl Fn(&str, bool) -> String) -> String {
    if watched.partitions.is_empty() {
        return String::new();
    }
    let objects: Vec<String> = watched
        .partitions
        .iter()
        .map(|(name, array)| single_row_object(name, &values(&quote_ident(name), *array)))
        .collect();
    format!(", {}", objects.join(" || "))
}

/// `{"column": [the distinct non-NULL values of SELECT values]}`, `values` reading the columns of
/// the one row (or pair) the query is at.
fn single_row_object(column: &str, values: &str) -> String {
    format!(
        "jsonb_build_object({}, ARRAY(SELECT DISTINCT x.v FROM (SELECT {values}) x(v) WHERE x.v IS NOT NULL))",
        quote_literal(column)
    )
}

/// The text form of a partition column's value (an array's elements, one row each).
fn value_sql(column: &str, array: bool) -> String {
    if array {
        format!("unnest({column})::text")
    } else {
        format!("{column}::text")
    }
}

#[cfg(test)]
mod tests;
