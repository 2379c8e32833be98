//! Change capture in PostGIS, for reseeds that re-render only what changed.
//!
//! `changes install` creates the schema `oar_tiles` with a change log and statement triggers on every
//! source table: INSERT, UPDATE and DELETE record the old and new geometries of the rows they touched
//! (an UPDATE only of rows whose geometry, id or a rendered attribute changed, or any column when a
//! layer filters the table), and TRUNCATE marks that everything must be reseeded. Each trigger reads
//! the statement's transition tables and writes one log row holding the arrays of old and new
//! geometries, so a bulk statement pays for one insert into the log, not one per row; a statement
//! of one row takes a path of its own, which costs a little more than a row trigger did (see
//! `dispatch`; `scripts/bench.sh --sections capture` measures it).
//! Each change carries the id of the transaction that made it.
//! A trigger that logs a change also sends one `pg_notify` on the channel [`channel`], so `watch`
//! wakes within a moment of a commit (a statement that changes nothing rendered wakes nobody); the
//! log, not the notification, remains the truth.
//!
//! The watermark an output keeps is the PostgreSQL snapshot taken when its last seed started. The next
//! reseed reads, under a new snapshot, the changes that snapshot did not see: a change committed late
//! with a smaller sequence number than ones already applied is still picked up, because visibility,
//! not numbering, decides.
//!
//! The trigger DDL is built in `triggers.rs`; reading the log is in `log.rs`, the consumers'
//! bookkeeping in `consumers.rs`.

mod consumers;
mod coverage;
mod log;
mod triggers;

pub use consumers::{
    advance_and_prune, forget, forget_consumers, pending, record_consumer, record_slow_zooms,
    slow_zooms,
};
pub use log::{changed_boxes, read_since, read_touched, Compare, Touched};
pub use triggers::channel;
use triggers::{
    compared_columns, compared_table_sql, install_sql, recorded, watched_tables, widen, Watched,
};

use deadpool_postgres::Pool;
use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use super::watermark::Watermark;
use crate::config::{Config, LayerConfig};
use crate::db::quote_ident;
use crate::error::{DbError, Error, Result};
use crate::render::source::quoted_table;

/// Takes the snapshot a seed starting now reflects at least, on the server the seed renders from.
///
/// A hot standby's snapshots are made of the primary's transaction ids, so the primary's change log
/// can be tested against one; but `pg_current_snapshot()` there leaves out the transactions still
/// running (the standby keeps them where that function does not look), which would make a later
/// reseed skip their changes. On a standby the running ones are therefore listed from the commit
/// log: every id between the snapshot's bounds that is not committed.
pub async fn current_watermark(pool: &Pool) -> Result<Watermark> {
    let client = crate::db::get(pool).await?;
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
    let client = crate::db::get(pool).await?;
    let row = client
        .query_typed_one("SELECT pg_is_in_recovery()", &[])
        .await?;
    Ok(row.get(0))
}

/// Whether change capture is installed in the database.
pub async fn installed(pool: &Pool, schema: &str) -> Result<bool> {
    installed_on(&**crate::db::get(pool).await?, schema).await
}

/// [`installed`], asked on a connection the caller holds: a caller that takes a second
/// connection of the pool while it holds one deadlocks once the pool's other connections are
/// all busy (`seed -j 1`: one rendering, one reading the change log).
pub(crate) async fn installed_on(client: &tokio_postgres::Client, schema: &str) -> Result<bool> {
    let row = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&format!("{}.change_log", quote_ident(schema)), Type::TEXT)],
        )
        .await?;
    Ok(row.get(0))
}

/// Records, before a full seed takes its watermark, any gap in the capture of `layers`' tables
/// (triggers disabled and enabled again, a deleted record), so the output's watermark sees the
/// new start of capture and its next reseed trusts the log; does nothing where capture is not
/// installed.
pub async fn record_gaps(pool: &Pool, schema: &str, layers: &[LayerConfig]) -> Result<()> {
    let client = crate::db::get(pool).await?;
    if !installed_on(&client, schema).await? {
        return Ok(());
    }
    let tables: std::collections::BTreeSet<String> = layers.iter().map(quoted_table).collect();
    let tables: Vec<String> = tables.into_iter().collect();
    coverage::reconcile(&**client, schema, &tables).await
}

/// Why the log of `schema` may miss a change to `table` (quoted) that `snapshot` did not see:
/// its triggers are gone or disabled, its capture started later, or had a gap since. `None`:
/// the log holds every such change. What a cluster cell table asks before it trusts the log.
pub async fn capture_gap(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
    snapshot: &str,
) -> Result<Option<String>> {
    coverage::gap_since(client, schema, table, snapshot).await
}

/// Runs DDL in one transaction, so a failure leaves nothing half-installed.
async fn run_ddl(pool: &Pool, sql: &str, what: &str) -> Result<()> {
    let mut client = crate::db::get(pool).await?;
    let transaction = client.transaction().await?;
    // `IF NOT EXISTS` and `IF EXISTS` each say they skipped something: noise for whoever installs.
    transaction
        .batch_execute(&format!("SET LOCAL client_min_messages = warning; {sql}"))
        .await
        .map_err(DbError::during(format!("cannot {what}")))?;
    transaction.commit().await.map_err(Error::from)
}

/// Installs (or refreshes) change capture for every source table of the config, comparing on
/// UPDATE what this config renders and what every other config installed under the same change
/// schema does (see `triggers/compared.rs`), in one transaction, so a failure leaves nothing
/// half-installed.
pub async fn install(pool: &Pool, config: &Config) -> Result<Vec<String>> {
    const WHAT: &str = "install change capture (it needs rights to create a schema and ownership of the source tables)";
    within_name_limit(pool, &config.change_schema).await?;
    let schema = quote_ident(&config.change_schema);
    let config_file = std::fs::canonicalize(&config.path)
        .unwrap_or_else(|_| config.path.clone())
        .display()
        .to_string();
    // One connection for all of it: `changes` connects a pool of one.
    let mut client = crate::db::get(pool).await?;
    let transaction = client.transaction().await?;
    // `IF NOT EXISTS` and `IF EXISTS` each say they skipped something: noise for whoever installs.
    transaction
        .batch_execute(&format!(
            "SET LOCAL client_min_messages = warning; {}",
            compared_table_sql(&schema)
        ))
        .await
        .map_err(DbError::during(format!("cannot {WHAT}")))?;
    let mut tables = watched_tables(config);
    let mut widenings = Vec::new();
    for watched in &mut tables {
        let entries = recorded(&*transaction, &schema, &watched.table).await?;
        widenings.push(widen(watched, &entries, &config_file)?);
    }
    let tables = with_column_types(&*transaction, tables).await?;
    transaction
        .batch_execute(&install_sql(config, &tables, &widenings))
        .await
        .map_err(DbError::during(format!("cannot {WHAT}")))?;
    transaction.commit().await?;
    Ok(tables.into_iter().map(|w| w.table).collect())
}

/// Refuses, before any DDL, a change schema whose name the server would cut: the schema would be
/// created under the cut name while the triggers notify the whole name as a channel, which
/// PostgreSQL rejects, failing every write to the source tables. Every other name the install
/// derives (functions, triggers, indexes) is of a fixed, short length.
async fn within_name_limit(pool: &Pool, schema: &str) -> Result<()> {
    let client = crate::db::get(pool).await?;
    let limit: i32 = client
        .query_one("SELECT current_setting('max_identifier_length')::int", &[])
        .await
        .map_err(DbError::during("reading max_identifier_length"))?
        .get(0);
    if schema.len() > usize::try_from(limit).unwrap_or(0) {
        return Err(Error::setting(
            "[changes] schema",
            format!(
                "[changes] schema `{schema}` is {} bytes long; this server allows names (and \
             notification channels) of at most {limit} bytes: choose a shorter name",
                schema.len()
            ),
        ));
    }
    Ok(())
}

/// Base types whose `=` the triggers compare watched columns with as they are; any other type
/// (`json`, `point`, `xml`, a type of an extension) is compared by its text form, which never
/// fails (a change of the text alone logs a change, rendered and found unchanged).
const PLAIN_EQUALITY: [&str; 24] = [
    "bool",
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "text",
    "varchar",
    "bpchar",
    "name",
    "char",
    "uuid",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "bytea",
    "oid",
    "jsonb",
    "inet",
    "citext",
];

/// Reads whether each partition column is an array, whose elements are the values: an array type's
/// name starts with an underscore, the test `render::source` makes too. (A `LIKE '\\_%'` pattern
/// read every type as an array in a session with `standard_conforming_strings = off`.) Reads too
/// whether the id column's type has a collation.
///
/// Every watched column must exist, or the triggers would fail every UPDATE of the table; and
/// one whose type (a domain's base type, an array's element type) is not one whose equality the
/// triggers can rely on is compared by its text form ([`PLAIN_EQUALITY`]).
async fn with_column_types(
    client: &impl GenericClient,
    mut tables: Vec<Watched>,
) -> Result<Vec<Watched>> {
    const COLUMN: &str = "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                          WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped";
    for watched in &mut tables {
        let table = watched.table.clone();
        let reading = || DbError::during(format!("reading the columns of {table}"));
        // Checked first: every column of a missing table is missing too, and naming one of them
        // would send the operator looking for a column instead of the table.
        let exists = client
            .query_typed_opt(
                "SELECT 1 WHERE to_regclass($1) IS NOT NULL",
                &[(&table, Type::TEXT)],
            )
            .await
            .map_err(reading())?;
        if exists.is_none() {
            return Err(Error::setting(
                "table",
                format!(
                    "table {table} does not exist (or is not on the search_path): change capture \
                     watches the tables the layers render, so it is not installed; create or load \
                     the table first, or fix the layer's `table`"
                ),
            ));
        }
        let id = client
            .query_typed_opt(
                &format!("SELECT a.attcollation <> 0 {COLUMN}"),
                &[(&table, Type::TEXT), (&watched.id.as_str(), Type::TEXT)],
            )
            .await
            .map_err(reading())?;
        watched.id_collatable = id.is_some_and(|row| row.get(0));
        let geometry = watched.geometry().to_string();
        let kind = client
            .query_typed_opt(
                &format!("SELECT t.typname = 'geography' {COLUMN}"),
                &[(&table, Type::TEXT), (&geometry.as_str(), Type::TEXT)],
            )
            .await
            .map_err(reading())?;
        watched.geography = kind.is_some_and(|row| row.get(0));
        for column in watched.columns() {
            let row = client
                .query_typed_opt(
                    &format!(
                        "SELECT CASE WHEN t.typtype = 'd'
                                     THEN (SELECT b.typname FROM pg_type b WHERE b.oid = t.typbasetype)
                                     ELSE t.typname END::text {COLUMN}"
                    ),
                    &[(&table, Type::TEXT), (&column.as_str(), Type::TEXT)],
                )
                .await
                .map_err(reading())?;
            let Some(row) = row else {
                if watched.forget_borrowed(&column) {
                    continue;
                }
                return Err(missing_column(&table, &column));
            };
            let type_name: String = row.get(0);
            let element = type_name.strip_prefix('_').unwrap_or(&type_name);
            if column != geometry && !PLAIN_EQUALITY.contains(&element) {
                watched.text_compared.push(column);
            }
        }
        for (column, array) in &mut watched.partitions {
            let row = client
                .query_typed_opt(
                    &format!("SELECT left(t.typname::text, 1) = '_' {COLUMN}"),
                    &[(&table, Type::TEXT), (&column.as_str(), Type::TEXT)],
                )
                .await
                .map_err(reading())?;
            *array = row
                .ok_or_else(|| {
                    Error::setting("partition_by", format!(
                        "partition_by column `{column}` does not exist in table {table} (or the table does not)"
                    ))
                })?
                .get(0);
        }
    }
    Ok(tables)
}

/// The error of a column `column` this config renders that `table` lacks.
fn missing_column(table: &str, column: &str) -> Error {
    Error::setting(
        "attributes",
        format!(
            "table {table} has no column `{column}`, which a layer renders (or names as its id, \
             geometry or partition column): a trigger watching it would fail every UPDATE of the \
             table, so change capture is not installed"
        ),
    )
}

/// Removes the triggers and the change schema.
pub async fn uninstall(pool: &Pool, config: &Config) -> Result<()> {
    let schema = quote_ident(&config.change_schema);
    let mut sql = String::new();
    for watched in watched_tables(config) {
        sql.push_str(&coverage::drop_owned_triggers(
            &config.change_schema,
            &watched.table,
        ));
    }
    sql.push_str(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE;"));
    run_ddl(pool, &sql, "uninstall change capture").await
}

/// How change capture stands for one source table.
#[derive(Debug, Serialize)]
pub struct TableStatus {
    /// The table, quoted.
    pub table: String,
    /// Changes in this schema's log.
    pub changes: i64,
    /// Every change schema whose triggers capture the table, this one included when they are there.
    pub schemas: Vec<String>,
    /// When this schema's capture of the table started (`None`: not recorded, by an earlier version).
    pub since: Option<String>,
    /// What is wrong with this schema's capture of the table (triggers disabled or partly gone,
    /// not firing in replica sessions, a gap not yet recorded), and what to do.
    pub trouble: Option<String>,
    /// The columns its UPDATE trigger compares, for every config installed under the schema
    /// (`["*"]`: a layer filters the table, so rows are compared whole; empty: not recorded, by an
    /// earlier version).
    pub compared: Vec<String>,
}

/// Pending changes per source table, and the outputs that consume them.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The schema asked about.
    pub schema: String,
    /// Each source table of the config.
    pub tables: Vec<TableStatus>,
    /// `output: snapshot, last update`.
    pub consumers: Vec<(String, String, String)>,
    /// The outputs that have not read the log for longer than `[changes] stale_consumer_after`.
    pub stale: Vec<String>,
    /// That time, as the config wrote it.
    pub stale_after: String,
}

/// What the change log holds.
pub async fn status(pool: &Pool, config: &Config) -> Result<Status> {
    if !installed(pool, &config.change_schema).await? {
        return Err(Error::State {
            missing: format!("change capture (schema `{}`)", config.change_schema),
            message: "change capture is not installed: run `oar-tiles changes install`".into(),
        });
    }
    let schema = quote_ident(&config.change_schema);
    let client = crate::db::get(pool).await?;
    let recorded: bool = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&format!("{schema}.captured"), Type::TEXT)],
        )
        .await?
        .get(0);
    let since = if recorded {
        format!("(SELECT installed_at::text FROM {schema}.captured WHERE source = to_regclass($1)::oid)")
    } else {
        "NULL::text".to_string()
    };
    let mut tables = Vec::new();
    for watched in watched_tables(config) {
        let row = client
            .query_typed_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {schema}.change_log WHERE source = to_regclass($1)::oid), {since}"
                ),
                &[(&watched.table, Type::TEXT)],
            )
            .await?;
        tables.push(TableStatus {
            schemas: coverage::capturing_schemas(&**client, &watched.table).await?,
            trouble: coverage::trouble(&**client, &config.change_schema, &watched.table).await?,
            compared: compared_columns(&**client, &config.change_schema, &watched.table).await?,
            table: watched.table,
            changes: row.get(0),
            since: row.get(1),
        });
    }
    let stale_seconds = config.stale_consumer_after.as_secs_f64();
    let rows = client
        .query_typed(
            &format!(
                "SELECT output, snapshot::text, updated_at::text,
                             updated_at < now() - make_interval(secs => $1)
                      FROM {schema}.consumers ORDER BY output"
            ),
            &[(&stale_seconds, Type::FLOAT8)],
        )
        .await?;
    let consumers = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let stale = rows
        .iter()
        .filter(|r| r.get::<_, bool>(3))
        .map(|r| r.get(0))
        .collect();
    Ok(Status {
        schema: config.change_schema.clone(),
        tables,
        consumers,
        stale,
        stale_after: humantime::format_duration(config.stale_consumer_after).to_string(),
    })
}
