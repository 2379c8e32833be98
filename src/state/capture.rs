//! Change capture in PostGIS, for reseeds that re-render only what changed.
//!
//! `changes install` creates the schema `oar_tiles` with a change log and statement triggers on every
//! source table: INSERT, UPDATE and DELETE record the old and new geometries of the rows they touched
//! (an UPDATE only of rows whose geometry, id or a rendered attribute changed, or any column when a
//! layer filters the table), and TRUNCATE marks that everything must be reseeded. Each trigger reads
//! the statement's transition tables and writes one log row holding the arrays of old and new
//! geometries, so a bulk statement pays for one insert into the log, not one per row; a statement
//! of one row takes a path of its own, which costs a little more than a row trigger did (see
//! `dispatch`, and the README's Benchmark).
//! Each change carries the id of the transaction that made it.
//! A trigger that logs a change also sends one `pg_notify` on the channel [`channel`], so `watch`
//! wakes within a moment of a commit (a statement that changes nothing rendered wakes nobody); the
//! log, not the notification, remains the truth.
//!
//! The watermark an output keeps is the PostgreSQL snapshot taken when its last seed started. The next
//! reseed reads, under a new snapshot, the changes that snapshot did not see: a change committed late
//! with a smaller sequence number than ones already applied is still picked up, because visibility,
//! not numbering, decides.

use std::collections::BTreeMap;

use deadpool_postgres::Pool;
use md5::{Digest, Md5};
use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use super::watermark::Watermark;
use crate::config::{Config, LayerConfig};
use crate::db::{quote_ident, quote_literal};
use crate::error::{pg_message, DbError, Error, Result};
use crate::plan::ChangedBox;
use crate::render::source::quoted_table;
use crate::render::sql;

/// Takes the snapshot a seed starting now reflects at least, on the server the seed renders from.
///
/// A hot standby's snapshots are made of the primary's transaction ids, so the primary's change log
/// can be tested against one; but `pg_current_snapshot()` there leaves out the transactions still
/// running (the standby keeps them where that function does not look), which would make a later
/// reseed skip their changes. On a standby the running ones are therefore listed from the commit
/// log: every id between the snapshot's bounds that is not committed.
pub async fn current_watermark(pool: &Pool) -> Result<Watermark> {
    let client = pool.get().await?;
    let row = client
        .query_typed_one(
            "SELECT pg_current_snapshot()::text, pg_is_in_recovery()",
            &[],
        )
        .await?;
    let (snapshot, standby): (String, bool) = (row.get(0), row.get(1));
    if !standby {
        return Ok(Watermark {
            snapshot,
            ..Watermark::default()
        });
    }
    // A transaction that commits while this runs counts as seen: every tile query starts later and
    // sees it too, once the standby has replayed its commit (see `crate::db::Replica::catch_up`).
    let row = client
        .query_typed_one(
            "SELECT format('%s:%s:%s', pg_snapshot_xmin(s), pg_snapshot_xmax(s),
                    coalesce((SELECT string_agg(x::text, ',' ORDER BY x)
                              FROM generate_series(pg_snapshot_xmin(s)::text::bigint,
                                                   pg_snapshot_xmax(s)::text::bigint - 1) x
                              WHERE pg_xact_status(x::text::xid8) IS DISTINCT FROM 'committed'), ''))
             FROM (SELECT $1::text::pg_snapshot AS s) taken",
            &[(&snapshot, Type::TEXT)],
        )
        .await?;
    Ok(Watermark {
        snapshot: row.get(0),
        ..Watermark::default()
    })
}

/// Whether the server is a read-only standby, where nothing may be written: the watermark then
/// lives in the output alone, and the change log is pruned by runs against the primary.
pub async fn read_only_standby(pool: &Pool) -> Result<bool> {
    let client = pool.get().await?;
    let row = client
        .query_typed_one("SELECT pg_is_in_recovery()", &[])
        .await?;
    Ok(row.get(0))
}

/// Whether change capture is installed in the database.
pub async fn installed(pool: &Pool, schema: &str) -> Result<bool> {
    let client = pool.get().await?;
    let row = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&format!("{}.change_log", quote_ident(schema)), Type::TEXT)],
        )
        .await?;
    Ok(row.get(0))
}

/// A source table and what its trigger must watch.
struct Watched {
    table: String,
    geometry: String,
    id: String,
    columns: Vec<String>,
    filtered: bool,
    /// Columns some tileset is partitioned by, each with whether it is an array (read at install).
    partitions: Vec<(String, bool)>,
}

/// The source tables of a config, each once, with the union of what its layers render.
fn watched_tables(config: &Config) -> Vec<Watched> {
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
                columns: Vec::new(),
                filtered: false,
                partitions: Vec::new(),
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

/// The triggers `changes install` puts on each source table.
const TRIGGERS: [&str; 4] = [
    "oar_tiles_capture_insert",
    "oar_tiles_capture_update",
    "oar_tiles_capture_delete",
    "oar_tiles_capture_truncate",
];

/// Triggers of earlier versions, removed by `changes install` and `changes uninstall`: the row
/// trigger of the first design, and the statement trigger that only notified.
const EARLIER_TRIGGERS: [&str; 2] = ["oar_tiles_capture", "oar_tiles_notify"];

/// `DROP TRIGGER IF EXISTS` for each of `triggers` on `table`.
fn drop_triggers(triggers: &[&str], table: &str) -> String {
    triggers
        .iter()
        .map(|trigger| format!("DROP TRIGGER IF EXISTS {trigger} ON {table};\n"))
        .collect()
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

/// The DDL that installs change capture; running it twice is harmless.
fn install_sql(config: &Config, tables: &[Watched]) -> String {
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
         -- Per partition column of the table, the values of the rows the statement changed, as
         -- {{\"column\": [values]}}; NULL where no tileset was partitioned when it was logged.
         ALTER TABLE {schema}.change_log ADD COLUMN IF NOT EXISTS partitions jsonb;
         CREATE INDEX IF NOT EXISTS change_log_source ON {schema}.change_log (source);
         CREATE TABLE IF NOT EXISTS {schema}.consumers (
             output text PRIMARY KEY,
             snapshot pg_snapshot NOT NULL,
             updated_at timestamptz NOT NULL DEFAULT now());
         CREATE OR REPLACE FUNCTION {schema}.capture_truncate() RETURNS trigger LANGUAGE plpgsql AS {truncate};
",
        truncate = dollar_quote(&format!(
            "
         BEGIN
             INSERT INTO {schema}.change_log (source, everything) VALUES (TG_RELID, true);
             {notify};
             RETURN NULL;
         END"
        )),
    );
    for watched in tables {
        let function = function_name(schema, &watched.table);
        sql.push_str(&drop_triggers(&EARLIER_TRIGGERS, &watched.table));
        sql.push_str(&format!(
            "DROP FUNCTION IF EXISTS {function}();
             CREATE OR REPLACE FUNCTION {function}_insert() RETURNS trigger LANGUAGE plpgsql AS {insert};
             CREATE OR REPLACE FUNCTION {function}_delete() RETURNS trigger LANGUAGE plpgsql AS {delete};
             CREATE OR REPLACE FUNCTION {function}_update() RETURNS trigger LANGUAGE plpgsql AS {update};
             DROP TRIGGER IF EXISTS oar_tiles_capture_insert ON {table};
             CREATE TRIGGER oar_tiles_capture_insert AFTER INSERT ON {table}
                 REFERENCING NEW TABLE AS oar_new
                 FOR EACH STATEMENT EXECUTE FUNCTION {function}_insert();
             DROP TRIGGER IF EXISTS oar_tiles_capture_update ON {table};
             CREATE TRIGGER oar_tiles_capture_update AFTER UPDATE ON {table}
                 REFERENCING OLD TABLE AS oar_old NEW TABLE AS oar_new
                 FOR EACH STATEMENT EXECUTE FUNCTION {function}_update();
             DROP TRIGGER IF EXISTS oar_tiles_capture_delete ON {table};
             CREATE TRIGGER oar_tiles_capture_delete AFTER DELETE ON {table}
                 REFERENCING OLD TABLE AS oar_old
                 FOR EACH STATEMENT EXECUTE FUNCTION {function}_delete();
             DROP TRIGGER IF EXISTS oar_tiles_capture_truncate ON {table};
             CREATE TRIGGER oar_tiles_capture_truncate AFTER TRUNCATE ON {table}
                 FOR EACH STATEMENT EXECUTE FUNCTION {schema}.capture_truncate();
",
            table = watched.table,
            insert = dollar_quote(&one_side_body(schema, watched, "oar_new", "new_geoms", notify)),
            delete = dollar_quote(&one_side_body(schema, watched, "oar_old", "old_geoms", notify)),
            update = dollar_quote(&update_body(schema, watched, notify)),
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
/// its rows.
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
        "             DECLARE{declare} logged bigint;
             BEGIN
                 PERFORM FROM {first} LIMIT 1 OFFSET 1;
                 IF NOT FOUND THEN
{read}                     IF FOUND THEN
{single};
                     END IF;
                 ELSE
                     EXECUTE {bulk} USING TG_RELID;
                     GET DIAGNOSTICS logged = ROW_COUNT;
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

/// `body` as a dollar-quoted string whose tag occurs nowhere in it: the bodies hold schema, table
/// and column names, which may contain any text, `$f$` included.
fn dollar_quote(body: &str) -> String {
    let tag = (0..)
        .map(|n| {
            if n == 0 {
                "$f$".to_string()
            } else {
                format!("$f{n}$")
            }
        })
        .find(|tag| !body.contains(tag.as_str()))
        .expect("some tag is not in the body");
    format!("{tag}{body}\n{tag}")
}

/// The record a single row of the transition table `rows` is read into.
fn record(rows: &str) -> &'static str {
    if rows == "oar_old" {
        "o"
    } else {
        "n"
    }
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
fn one_side_body(
    schema: &str,
    watched: &Watched,
    rows: &str,
    column: &str,
    notify: &str,
) -> String {
    let geometry = quote_ident(&watched.geometry);
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

/// The body of a table's UPDATE trigger: the old and new positions of the rows whose watched
/// columns changed and, for partitioned tables, the partition values those rows left and joined;
/// it runs `notify` when it logged.
///
/// In a bulk statement old and new rows are paired on the id column: a row whose id changed, or an
/// id that is not unique, pairs with nothing or with more than its own version, which logs more
/// positions than needed but never fewer. The watched columns are compared one by one rather than
/// as `ROW(...)` values built in subqueries, which cost more to set up on every statement.
fn update_body(schema: &str, watched: &Watched, notify: &str) -> String {
    let geometry = quote_ident(&watched.geometry);
    let id = quote_ident(&watched.id);
    let changed = if watched.filtered {
        // A filter may use any column, so any change may move a row in or out of a layer.
        "ROW(o.*) IS DISTINCT FROM ROW(n.*)".to_string()
    } else {
        let side = |t: &str| {
            let columns: Vec<String> = watched
                .columns
                .iter()
                .map(|c| format!("{t}.{}", quote_ident(c)))
                .collect();
            format!("({})", columns.join(", "))
        };
        format!("{} IS DISTINCT FROM {}", side("o"), side("n"))
    };
    let paired = format!("oar_old o FULL JOIN oar_new n ON o.{id} = n.{id} WHERE {changed}");
    let partition_column = partition_column(watched);
    let single_partitions = single_row_partitions(watched, |column, array| {
        format!(
            "{} UNION ALL SELECT {}",
            value_sql(&format!("o.{column}"), array),
            value_sql(&format!("n.{column}"), array)
        )
    });
    // One row: its old and new version, whatever its id, are compared directly (a changed id is
    // a changed watched column).
    let single = format!(
        "                         IF {single_changed} THEN
                             INSERT INTO {schema}.change_log (source, old_geom, new_geom{partition_column})
                             VALUES (TG_RELID, o.{geometry}, n.{geometry}{single_partitions});
                             {notify};
                         END IF",
        single_changed = if watched.filtered {
            "o IS DISTINCT FROM n"
        } else {
            &changed
        },
    );
    if watched.partitions.is_empty() {
        let bulk = format!(
            "                     INSERT INTO {schema}.change_log (source, old_geoms, new_geoms)
                     SELECT $1, array_agg(o.{geometry}) FILTER (WHERE o.{geometry} IS NOT NULL),
                            array_agg(n.{geometry}) FILTER (WHERE n.{geometry} IS NOT NULL)
                     FROM {paired}
                     HAVING count(*) > 0"
        );
        return dispatch(&["oar_old", "oar_new"], &single, &bulk, notify);
    }
    let carried: String = watched
        .partitions
        .iter()
        .enumerate()
        .map(|(i, (column, _))| {
            let column = quote_ident(column);
            format!(", o.{column} AS op{i}, n.{column} AS np{i}")
        })
        .collect();
    let objects: Vec<String> = watched
        .partitions
        .iter()
        .enumerate()
        .map(|(i, (column, array))| {
            let values = format!(
                "{} UNION ALL SELECT {}",
                value_sql(&format!("d.op{i}"), *array),
                value_sql(&format!("d.np{i}"), *array),
            );
            values_object(column, "d", &values)
        })
        .collect();
    let bulk = format!(
        "                     WITH d AS MATERIALIZED (
                         SELECT o.{geometry} AS og, n.{geometry} AS ng{carried}
                         FROM {paired})
                     INSERT INTO {schema}.change_log (source, old_geoms, new_geoms, partitions)
                     SELECT $1, array_agg(d.og) FILTER (WHERE d.og IS NOT NULL),
                            array_agg(d.ng) FILTER (WHERE d.ng IS NOT NULL), {}
                     FROM d HAVING count(*) > 0",
        objects.join(" || ")
    );
    dispatch(&["oar_old", "oar_new"], &single, &bulk, notify)
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

/// Runs DDL in one transaction, so a failure leaves nothing half-installed.
async fn run_ddl(pool: &Pool, sql: &str, what: &str) -> Result<()> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    // `IF NOT EXISTS` and `IF EXISTS` each say they skipped something: noise for whoever installs.
    transaction
        .batch_execute(&format!("SET LOCAL client_min_messages = warning; {sql}"))
        .await
        .map_err(DbError::during(format!("cannot {what}")))?;
    transaction.commit().await.map_err(Error::from)
}

/// Installs (or refreshes) change capture for every source table of the config.
pub async fn install(pool: &Pool, config: &Config) -> Result<Vec<String>> {
    within_name_limit(pool, &config.change_schema).await?;
    let tables = with_partition_types(pool, watched_tables(config)).await?;
    run_ddl(
        pool,
        &install_sql(config, &tables),
        "install change capture (it needs rights to create a schema and ownership of the source tables)",
    )
    .await?;
    Ok(watched_tables(config)
        .into_iter()
        .map(|w| w.table)
        .collect())
}

/// Refuses, before any DDL, a change schema whose name the server would cut: the schema would be
/// created under the cut name while the triggers notify the whole name as a channel, which
/// PostgreSQL rejects, failing every write to the source tables. Every other name the install
/// derives (functions, triggers, indexes) is of a fixed, short length.
async fn within_name_limit(pool: &Pool, schema: &str) -> Result<()> {
    let client = pool.get().await?;
    let limit: i32 = client
        .query_one("SELECT current_setting('max_identifier_length')::int", &[])
        .await
        .map_err(DbError::during("reading max_identifier_length"))?
        .get(0);
    if schema.len() > usize::try_from(limit).unwrap_or(0) {
        return Err(Error::Usage(format!(
            "[changes] schema `{schema}` is {} bytes long; this server allows names (and \
             notification channels) of at most {limit} bytes: choose a shorter name",
            schema.len()
        )));
    }
    Ok(())
}

/// Reads whether each partition column is an array, whose elements are the values: an array type's
/// name starts with an underscore, the test `render::source` makes too. (A `LIKE '\\_%'` pattern
/// read every type as an array in a session with `standard_conforming_strings = off`.)
async fn with_partition_types(pool: &Pool, mut tables: Vec<Watched>) -> Result<Vec<Watched>> {
    let client = pool.get().await?;
    for watched in &mut tables {
        for (column, array) in &mut watched.partitions {
            let row = client
                .query_typed_opt(
                    "SELECT left(t.typname::text, 1) = '_' FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                     WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
                    &[(&watched.table, Type::TEXT), (&column.as_str(), Type::TEXT)],
                )
                .await
                .map_err(DbError::during(format!("reading the columns of {}", watched.table)))?;
            *array = row
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "partition_by column `{column}` does not exist in table {} (or the table does not)",
                        watched.table
                    ))
                })?
                .get(0);
        }
    }
    Ok(tables)
}

/// Removes the triggers and the change schema.
pub async fn uninstall(pool: &Pool, config: &Config) -> Result<()> {
    let schema = quote_ident(&config.change_schema);
    let mut sql = String::new();
    for watched in watched_tables(config) {
        sql.push_str(&drop_triggers(&TRIGGERS, &watched.table));
        sql.push_str(&drop_triggers(&EARLIER_TRIGGERS, &watched.table));
    }
    sql.push_str(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE;"));
    run_ddl(pool, &sql, "uninstall change capture").await
}

/// Pending changes per source table, and the outputs that consume them.
#[derive(Debug, Serialize)]
pub struct Status {
    /// `table: changes in the log`.
    pub tables: Vec<(String, i64)>,
    /// `output: snapshot, last update`.
    pub consumers: Vec<(String, String, String)>,
}

/// What the change log holds.
pub async fn status(pool: &Pool, config: &Config) -> Result<Status> {
    if !installed(pool, &config.change_schema).await? {
        return Err(Error::Usage(
            "change capture is not installed: run `oar-tiles changes install`".into(),
        ));
    }
    let schema = quote_ident(&config.change_schema);
    let client = pool.get().await?;
    let mut tables = Vec::new();
    for watched in watched_tables(config) {
        let row = client
            .query_typed_one(
                &format!(
                    "SELECT count(*) FROM {schema}.change_log WHERE source = to_regclass($1)::oid"
                ),
                &[(&watched.table, Type::TEXT)],
            )
            .await?;
        tables.push((watched.table, row.get(0)));
    }
    let rows = client
        .query_typed(
            &format!("SELECT output, snapshot::text, updated_at::text FROM {schema}.consumers ORDER BY output"),
            &[],
        )
        .await
        ?;
    let consumers = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(Status { tables, consumers })
}

/// The changes of a set of layers since a watermark, as geographic boxes.
#[derive(Debug, Default)]
pub struct ChangeSet {
    /// Whether a TRUNCATE means everything must be reseeded.
    pub everything: bool,
    /// Old and new geometries, per layer name.
    pub boxes: BTreeMap<String, Vec<ChangedBox>>,
    /// Changed geometries read (an update counts its old and its new position).
    pub rows: u64,
    /// When each change read was committed, in seconds since the Unix epoch: the commit timestamp
    /// when the server tracks them (`track_commit_timestamp`), else the time the row changed.
    pub committed: Vec<f64>,
}

/// Reads, under one snapshot, the changes to the layers' tables that `since` did not see, and
/// returns them with the snapshot they were read under (the next watermark).
pub async fn read_since(
    pool: &Pool,
    schema: &str,
    layers: &[LayerConfig],
    since: &Watermark,
) -> Result<(ChangeSet, Watermark)> {
    if !installed(pool, schema).await? {
        return Err(Error::Usage(
            "change capture is not installed: run `oar-tiles changes install` before `seed --dirty`".into(),
        ));
    }
    let mut client = pool.get().await?;
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let snapshot: String = transaction
        .query_typed_one("SELECT pg_current_snapshot()::text", &[])
        .await?
        .get(0);
    let mut changes = ChangeSet::default();
    for layer in layers {
        let (everything, boxes) =
            changed_boxes(&*transaction, schema, layer, &since.snapshot).await?;
        changes.rows += boxes.len() as u64 + u64::from(everything);
        changes.everything |= everything;
        changes
            .boxes
            .entry(layer.name.clone())
            .or_default()
            .extend(boxes);
    }
    let tables: std::collections::BTreeSet<String> = layers.iter().map(quoted_table).collect();
    let tables: Vec<String> = tables.into_iter().collect();
    changes.committed = commit_times(&*transaction, schema, &tables, &since.snapshot).await?;
    transaction.commit().await?;
    Ok((
        changes,
        Watermark {
            snapshot,
            ..Watermark::default()
        },
    ))
}

/// The changes to the layer's table that the snapshot `since` did not see and the client's current
/// snapshot does: whether it was truncated, and the boxes of the old and new geometries and of
/// their representative points (where clustered zooms place them). A layer of one partition reads only the statements that touched
/// rows of its value, and those logged before its column's values were (`partitions` lacks it).
pub async fn changed_boxes(
    client: &impl GenericClient,
    schema: &str,
    layer: &LayerConfig,
    since: &str,
) -> Result<(bool, Vec<ChangedBox>)> {
    let table = quoted_table(layer);
    let column = layer.partition.as_ref().map(|p| p.column.as_str());
    let value = layer.partition.as_ref().map(|p| p.value.as_str());
    // Most reads find nothing (a reseed or watch cycle with no change to this table). Asking first
    // without PostGIS spares such a run loading PostGIS into a fresh backend (about 15 ms).
    let any = client
        .query_typed_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {}.change_log c
                 WHERE c.source = to_regclass($1)::oid
                   AND NOT pg_visible_in_snapshot(c.xid, $2::text::pg_snapshot))",
                quote_ident(schema)
            ),
            &[(&table, Type::TEXT), (&since, Type::TEXT)],
        )
        .await
        .map_err(DbError::during("reading the change log"))?;
    if !any.get::<_, bool>(0) {
        return Ok((false, Vec::new()));
    }
    let rows = client
        .query_typed(
            &format!("SELECT c.everything, ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b),
                    ST_XMin(p), ST_YMin(p), ST_XMax(p), ST_YMax(p)
             FROM {}.change_log c
             CROSS JOIN LATERAL (SELECT c.old_geom UNION ALL SELECT c.new_geom
                                 UNION ALL SELECT unnest(c.old_geoms) UNION ALL SELECT unnest(c.new_geoms)) AS v(g)
             CROSS JOIN LATERAL (SELECT CASE WHEN v.g IS NULL THEN NULL
                                             WHEN ST_SRID(v.g) = 4326 THEN v.g::box2d
                                             ELSE ST_Transform(ST_Envelope(v.g), 4326)::box2d END AS b) e
             CROSS JOIN LATERAL (SELECT CASE WHEN v.g IS NULL THEN NULL
                                             WHEN ST_SRID(v.g) = 4326 THEN ({point})::box2d
                                             ELSE ST_Transform({point}, 4326)::box2d END AS p) r
             WHERE c.source = to_regclass($1)::oid
               AND NOT pg_visible_in_snapshot(c.xid, $2::text::pg_snapshot)
               AND (c.everything OR v.g IS NOT NULL)
               AND ($3::text IS NULL OR c.partitions IS NULL OR NOT c.partitions ? $3
                    OR c.partitions -> $3 ? $4)", quote_ident(schema), point = sql::representative_point("v.g")),
            &[(&table, Type::TEXT), (&since, Type::TEXT), (&column, Type::TEXT), (&value, Type::TEXT)],
        )
        .await
        .map_err(DbError::during("reading the change log"))?;
    let mut everything = false;
    let mut boxes = Vec::with_capacity(rows.len());
    for row in rows {
        if row.get::<_, bool>(0) {
            everything = true;
            continue;
        }
        let corners = |first: usize| -> Option<[f64; 4]> {
            let corner = |i: usize| row.get::<_, Option<f64>>(first + i);
            Some([corner(0)?, corner(1)?, corner(2)?, corner(3)?])
        };
        if let Some(whole) = corners(1) {
            // A geometry with a box has a point on it; its box stands in should PostGIS find none.
            let point = corners(5).unwrap_or(whole);
            boxes.push(ChangedBox { whole, point });
        }
    }
    Ok((everything, boxes))
}

/// When each change to `tables` (quoted) that `since` did not see was committed, in seconds since
/// the Unix epoch. Without `track_commit_timestamp` the row's own clock stands in: at most the
/// transaction's length earlier than its commit, so latencies measured from it err on the long side.
async fn commit_times(
    client: &impl GenericClient,
    schema: &str,
    tables: &[String],
    since: &str,
) -> Result<Vec<f64>> {
    let rows = client
        .query_typed(
            &format!(
                "SELECT extract(epoch FROM CASE WHEN current_setting('track_commit_timestamp')::bool
                     THEN coalesce(pg_xact_commit_timestamp(c.xid::xid), c.changed_at)
                     ELSE c.changed_at END)::float8
                 FROM {}.change_log c
                 WHERE c.source IN (SELECT to_regclass(t)::oid FROM unnest($1::text[]) t)
                   AND NOT pg_visible_in_snapshot(c.xid, $2::text::pg_snapshot)",
                quote_ident(schema)
            ),
            &[(&tables, Type::TEXT_ARRAY), (&since, Type::TEXT)],
        )
        .await
        .map_err(DbError::during("reading the change log's commit times"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// How many changes to `tables` (quoted) the output `consumer` has not applied yet, by the
/// snapshot it last recorded in the consumers table; every logged change when it recorded none.
pub async fn pending(pool: &Pool, schema: &str, consumer: &str, tables: &[String]) -> Result<i64> {
    let client = pool.get().await?;
    let row = client
        .query_typed_one(
            &format!(
                "SELECT count(*) FROM {schema}.change_log c
                 WHERE c.source IN (SELECT to_regclass(t)::oid FROM unnest($1::text[]) t)
                   AND NOT coalesce((SELECT pg_visible_in_snapshot(c.xid, k.snapshot)
                                     FROM {schema}.consumers k WHERE k.output = $2), false)",
                schema = quote_ident(schema)
            ),
            &[(&tables, Type::TEXT_ARRAY), (&consumer, Type::TEXT)],
        )
        .await
        .map_err(DbError::during("counting pending changes"))?;
    Ok(row.get(0))
}

/// Drops an output that no longer exists from the change log's consumers, so it no longer holds
/// back pruning; nothing to do when change capture is not installed.
pub async fn forget_consumer(pool: &Pool, schema: &str, consumer: &str) -> Result<()> {
    if !installed(pool, schema).await? || read_only_standby(pool).await? {
        return Ok(());
    }
    let client = pool.get().await?;
    client
        .execute_typed(
            &format!(
                "DELETE FROM {}.consumers WHERE output = $1",
                quote_ident(schema)
            ),
            &[(&consumer, Type::TEXT)],
        )
        .await
        .map_err(DbError::during("forgetting an output in the change log"))?;
    Ok(())
}

/// Records in the consumers table (`quoted_schema` already quoted) that `consumer` has applied
/// every change `snapshot` saw, so pruning may drop those.
pub async fn record_consumer(
    client: &impl GenericClient,
    quoted_schema: &str,
    consumer: &str,
    snapshot: &str,
) -> std::result::Result<u64, tokio_postgres::Error> {
    client
        .execute_typed(
            &format!("INSERT INTO {quoted_schema}.consumers (output, snapshot) VALUES ($1, $2::text::pg_snapshot)
             ON CONFLICT (output) DO UPDATE SET snapshot = EXCLUDED.snapshot, updated_at = now()"),
            &[(&consumer, Type::TEXT), (&snapshot, Type::TEXT)],
        )
        .await
}

/// Records that `output` reflects everything up to `watermark`, then drops the changes every
/// recorded output has seen. Needs write rights on the `oar_tiles` schema; without them the log is
/// left as it is, with a warning.
pub async fn advance_and_prune(
    pool: &Pool,
    schema: &str,
    output: &str,
    watermark: &Watermark,
) -> Result<u64> {
    if !installed(pool, schema).await? {
        return Ok(0);
    }
    if read_only_standby(pool).await? {
        tracing::info!(
            "{output}: the server is a read-only standby, so the watermark is kept in the output \
             only and the change log is left for a run against the primary to prune"
        );
        return Ok(0);
    }
    let schema = quote_ident(schema);
    let client = pool.get().await?;
    let result = record_consumer(&**client, &schema, output, &watermark.snapshot).await;
    if let Err(err) = result {
        tracing::warn!("cannot record the watermark of {output} in {schema}.consumers, the change log is not pruned: {}", pg_message(&err));
        return Ok(0);
    }
    let pruned = client
        .execute_typed(
            &format!("DELETE FROM {schema}.change_log c WHERE NOT EXISTS (
                 SELECT 1 FROM {schema}.consumers k WHERE NOT pg_visible_in_snapshot(c.xid, k.snapshot))"),
            &[],
        )
        .await
        .map_err(DbError::during("pruning the change log"))?;
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn triggers_watch_each_table_once_with_every_rendered_column() {
        let text = r#"
[database]
url = "postgresql://x/y"
[[tileset]]
name = "a"
layer = [{ name = "f", table = "public.facilities", geometry_column = "location", attributes = ["name"] }]
[[tileset]]
name = "b"
layer = [{ name = "f", table = "public.facilities", geometry_column = "location", attributes = ["country_code"] }]
"#;
        let config = Config::parse(Path::new("c.toml"), text, None).unwrap();
        let sql = install_sql(&config, &watched_tables(&config));
        assert_eq!(
            sql.matches("CREATE TRIGGER oar_tiles_capture_update AFTER UPDATE")
                .count(),
            1
        );
        // One notification per statement that logged, on the change schema's channel, sent by
        // the capture functions (each path of insert, update and delete, and truncate); the
        // earlier trigger that only notified is dropped.
        assert_eq!(
            sql.matches("PERFORM pg_notify(E'oar_tiles', TG_TABLE_SCHEMA")
                .count(),
            7
        );
        assert!(!sql.contains("CREATE TRIGGER oar_tiles_notify"));
        assert!(
            sql.contains("DROP TRIGGER IF EXISTS oar_tiles_notify ON \"public\".\"facilities\"")
        );
        assert!(sql.contains(
            "(o.\"name\", o.\"id\", o.\"location\", o.\"country_code\") IS DISTINCT FROM (n.\"name\", n.\"id\", n.\"location\", n.\"country_code\")"
        ));
        // A single row is never aggregated; a bulk statement is planned for its own size.
        assert_eq!(
            sql.matches("PERFORM FROM oar_old LIMIT 1 OFFSET 1").count(),
            2
        );
        assert!(sql.contains(
            "IF (o.\"name\", o.\"id\", o.\"location\", o.\"country_code\") IS DISTINCT FROM"
        ));
        assert_eq!(sql.matches("EXECUTE $f$").count(), 3);
        // A body holding the tags quotes itself with one it does not hold.
        assert_eq!(dollar_quote("a $f$ b $f1$"), "$f2$a $f$ b $f1$\n$f2$");
        let watermark = Watermark {
            snapshot: "5:9:7".into(),
            settings: Some("abc".into()),
            zooms: Some("0-14".into()),
            bbox: Some("-180,-85,180,85".into()),
        };
        assert_eq!(
            Watermark::from_state(&watermark.to_state()),
            Some(watermark)
        );
        // Outputs of earlier versions recorded only the snapshot.
        assert_eq!(
            Watermark::from_state(r#"{"snapshot":"5:9:7"}"#).map(|w| w.settings),
            Some(None)
        );
    }
}
