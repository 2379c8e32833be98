//! Cluster cell pyramids: for each clustered layer, a table of its grid cells at every clustered
//! zoom (member count, centimetre sums for the centroid, member extent, and the one member's id and
//! attributes), kept in the change-capture schema.
//!
//! Without it a clustered tile aggregates every row beneath it, so the few low-zoom tiles a reseed
//! touches cost as much as a large part of a full seed. With it a tile reads the few dozen cells it
//! shows. Before each seed the table is brought up to date from the change log: only cells holding
//! a changed geometry's representative point (old or new position; see
//! [`crate::render::sql::representative_point`]) are summed again from their rows at the deepest
//! clustered zoom, and from those cells upwards at the coarser zooms. Too many changes, or changes
//! whose cells would be too many to list, sum every cell again instead, so neither memory nor work
//! grows with a geometry's width. Cell values are exact (integer
//! sums, minima, maxima, counts), so tiles come out byte for byte as when aggregated from rows.
//!
//! The table's own watermark is a snapshot taken before it reads the change log, and it registers as
//! a consumer of the log, so pruning keeps the changes it has not applied. A change committed while a
//! refresh runs may be applied twice (harmless: cells are recomputed, not adjusted) but is never
//! skipped. Change capture not installed, or no right to write its schema: clustered tiles are
//! aggregated from rows as before.

mod changed;
mod owner;

use deadpool_postgres::Pool;
use md5::{Digest, Md5};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::GenericClient;

use crate::config::ClusterConfig;
use crate::db::quote_ident;
use crate::error::{pg_message, pool_message, DbError, Error, Result};
use crate::render::source::{quoted_table, LayerSource};
use crate::render::sql;
use crate::state::capture;
use changed::{cell_envelopes, cell_params, changed_cells, log_gap, split};
use owner::{consumer_name, drop_stale, owner};

/// Above this many changed geometries, summing every cell again is cheaper than finding them.
const FULL_REBUILD_CHANGES: usize = 50_000;

/// The maintained cell table of one clustered layer.
#[derive(Debug, Clone)]
pub struct CellTable {
    /// Index of the layer in the tileset.
    pub layer: usize,
    /// Unquoted table name inside the schema.
    pub name: String,
    /// Schema-qualified, quoted name.
    pub qualified: String,
    /// `tileset/layer on table [digest of the rows' settings]` ([`owner`]): a table built for an
    /// earlier config of the same owner is dropped.
    pub owner: String,
}

/// The table a layer's cells live in: named after everything that decides their values (source,
/// columns, filter, grid), so a changed config never reads cells built for another.
fn table_name(layer: &LayerSource, extent: u32) -> String {
    let config = &layer.config;
    let key = format!(
        "{:?}",
        (
            quoted_table(config),
            &config.geometry_column,
            layer.srid,
            &config.id_column,
            &config.attributes,
            &config.filter,
            config.cluster.as_ref().map(|c| (c.maxzoom, c.cell)),
            &config.cluster_breakdown,
            extent,
            // The table's own layout: a new one gets a table of its own.
            sql::cell_display_columns("c"),
        )
    );
    // Cells store attributes as tiles show them; arrays became lists later, and cells of layers
    // with array attributes made before then must not be read.
    let lists = layer.list_properties();
    let key = if lists.is_empty() {
        key
    } else {
        format!("{key} lists {lists:?}")
    };
    let digest = Md5::digest(key.as_bytes());
    format!("cells_{}", hex::encode(&digest[..8]))
}

/// Creates the cell tables of the tileset's clustered layers where missing (empty; [`refresh`]
/// fills them) and returns, per layer, the table its clustered zooms read. `None` everywhere when
/// change capture is not installed in `schema` or its schema cannot be written.
///
/// A table left by an earlier config of the same owner is dropped, with its watermark and its
/// place among the change log's consumers, so it does not hold back pruning forever.
pub async fn ensure(
    pool: &Pool,
    schema: &str,
    tileset: &str,
    layers: &[LayerSource],
    extent: u32,
) -> Result<Vec<Option<CellTable>>> {
    let mut tables = vec![None; layers.len()];
    if !layers.iter().any(|l| l.config.cluster.is_some())
        || !capture::installed(pool, schema).await?
    {
        return Ok(tables);
    }
    if capture::read_only_standby(pool).await? {
        // Cells replayed from the primary may lag the rows this standby shows; rows are the truth.
        tracing::info!(
            "tileset `{tileset}`: the server is a read-only standby, so clustered tiles aggregate \
             rows instead of reading maintained cluster cells"
        );
        return Ok(tables);
    }
    let client = crate::db::get(pool).await?;
    let quoted_schema = quote_ident(schema);
    for (index, layer) in layers.iter().enumerate() {
        let Some(cluster) = &layer.config.cluster else {
            continue;
        };
        let name = table_name(layer, extent);
        let qualified = format!("{quoted_schema}.{}", quote_ident(&name));
        let owner = owner(tileset, layer);
        if !usable(
            &**client,
            &quoted_schema,
            layer,
            cluster,
            &qualified,
            extent,
        )
        .await?
        {
            continue;
        }
        drop_stale(&**client, &quoted_schema, &owner, &name).await;
        tables[index] = Some(CellTable {
            layer: index,
            name,
            qualified,
            owner,
        });
    }
    Ok(tables)
}

/// Creates the layer's cell table where missing and says whether this role may keep it up to date;
/// when not, clustered tiles aggregate rows instead, and a warning says why.
async fn usable(
    client: &impl GenericClient,
    quoted_schema: &str,
    layer: &LayerSource,
    cluster: &ClusterConfig,
    qualified: &str,
    extent: u32,
) -> Result<bool> {
    let exists: bool = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&qualified, Type::TEXT)],
        )
        .await?
        .get(0);
    if !exists {
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {quoted_schema}.cell_state (
                 cells text PRIMARY KEY, owner text NOT NULL, snapshot pg_snapshot NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE {qualified} AS SELECT 0::int2 AS __oar_z, c.*, {} FROM ({}) c WITH NO DATA;
             ALTER TABLE {qualified} ADD PRIMARY KEY (__oar_z, __oar_cx, __oar_cy);",
            sql::cell_display_columns("c"),
            deepest_cells(layer, cluster, extent, false)
        );
        if let Err(err) = client.batch_execute(&ddl).await {
            tracing::warn!(
                "layer `{}`: cannot create its cluster cell table in schema {quoted_schema}, so \
                 clustered tiles aggregate rows (slower): {}",
                layer.config.name,
                pg_message(&err)
            );
            return Ok(false);
        }
    }
    // Seeding needs only SELECT rights: a role that may not keep the cells up to date renders
    // clustered tiles from rows instead of reading cells that could be stale.
    let writable: bool = client
        .query_typed_one(
            "SELECT has_table_privilege($1, 'INSERT, DELETE')
                AND has_table_privilege($2, 'INSERT, UPDATE')
                AND has_table_privilege($3, 'INSERT, UPDATE')",
            &[
                (&qualified, Type::TEXT),
                (&format!("{quoted_schema}.cell_state"), Type::TEXT),
                (&format!("{quoted_schema}.consumers"), Type::TEXT),
            ],
        )
        .await?
        .get(0);
    if !writable {
        tracing::warn!(
            "layer `{}`: no right to update its cluster cells in {qualified}, so clustered \
             tiles aggregate rows (slower)",
            layer.config.name
        );
        return Ok(false);
    }
    Ok(true)
}

/// The cells of the deepest clustered zoom from the layer's rows; with `dirty`, only rows inside the
/// envelopes `$1..$8` (arrays: degrees w, s, e, n then metres) and only the cells `$9, $10` (arrays
/// of cx, cy).
fn deepest_cells(layer: &LayerSource, cluster: &ClusterConfig, extent: u32, dirty: bool) -> String {
    let config = &layer.config;
    let filter = config
        .filter
        .as_ref()
        .map(|f| format!(" WHERE ({f})"))
        .unwrap_or_default();
    let rows = if dirty {
        // The rows in the dirty cells' envelopes, each once (the envelopes overlap by a hair): an
        // index scan per cell.
        let degrees = ["e.w", "e.s", "e.e", "e.n"].map(String::from);
        let metres = ["e.mw", "e.ms", "e.me", "e.mn"].map(String::from);
        let id = quote_ident(&config.id_column);
        format!(
            "SELECT DISTINCT ON (t.{id}) {} FROM unnest($1::float8[], $2::float8[], $3::float8[], \
             $4::float8[], $5::float8[], $6::float8[], $7::float8[], $8::float8[]) \
             AS e(w, s, e, n, mw, ms, me, mn) JOIN {} t ON {} && {}{filter} ORDER BY t.{id}",
            sql::cluster_row_columns(layer).join(", "),
            quoted_table(config),
            layer.geometry_of("t"),
            sql::envelope_in_srid(layer, &degrees, &metres)
        )
    } else {
        // OFFSET 0: projected once per row, not once per aggregate that reads the projection.
        format!(
            "SELECT {} FROM {} t{filter} OFFSET 0",
            sql::cluster_row_columns(layer).join(", "),
            quoted_table(config)
        )
    };
    let grouped = format!(
        "WITH s AS ({rows}) {}",
        sql::cells_from_rows(layer, cluster, "s", &cluster.maxzoom.to_string(), extent)
    );
    if dirty {
        // Rows near a dirty cell's edge also group into its neighbours, which stay as they are.
        format!(
            "SELECT * FROM ({grouped}) g WHERE (g.__oar_cx, g.__oar_cy) IN \
             (SELECT * FROM unnest($9::int8[], $10::int8[]))"
        )
    } else {
        // NULL and empty geometries have no point, so no cell; tiles never fetch them either.
        format!("SELECT * FROM ({grouped}) g WHERE g.__oar_cx IS NOT NULL")
    }
}

/// The cells of zoom `z` summed from those of `z + 1`; with `dirty`, only the cells `$1, $2`, each
/// from its four children found through the primary key.
fn coarser_cells(layer: &LayerSource, table: &str, z: u8, dirty: bool) -> String {
    let finer = z + 1;
    let from = if dirty {
        format!(
            "unnest($1::int8[], $2::int8[]) AS p(x, y) JOIN {table} f ON f.__oar_z = {finer} \
             AND f.__oar_cx BETWEEN p.x * 2 AND p.x * 2 + 1 AND f.__oar_cy BETWEEN p.y * 2 AND p.y * 2 + 1"
        )
    } else {
        format!("{table} f WHERE f.__oar_z = {finer}")
    };
    let summed = format!(
        "SELECT {z}::int2 AS __oar_z, {} FROM {from} GROUP BY 2, 3",
        sql::cell_rollup(layer, "f").join(", ")
    );
    let summed = if layer.config.cluster_breakdown.is_some() {
        // The breakdown sums per value, so it is summed apart and joined to its cell.
        let [values, counts] = sql::BREAKDOWN_COLUMNS;
        format!(
            "SELECT s.*, b.{values}, b.{counts} FROM ({summed}) s JOIN ({}) b \
             ON b.cx = s.__oar_cx AND b.cy = s.__oar_cy",
            sql::breakdown_rollup(&from, "f")
        )
    } else {
        summed
    };
    format!(
        "INSERT INTO {table} SELECT r.*, {} FROM ({summed}) r",
        sql::cell_display_columns("r"),
    )
}

/// Deletes the cells `$1, $2` (arrays of cx, cy) of zoom `z`.
fn delete_cells(table: &str, z: u8) -> String {
    format!(
        "DELETE FROM {table} k USING unnest($1::int8[], $2::int8[]) AS d(x, y) \
         WHERE k.__oar_z = {z} AND k.__oar_cx = d.x AND k.__oar_cy = d.y"
    )
}

/// Brings the cell tables up to date with the source tables: cells of changed geometries since each
/// table's watermark are summed again, or every cell when the table is new, a source was truncated or
/// too much changed.
pub async fn refresh(
    pool: &Pool,
    schema: &str,
    layers: &[LayerSource],
    tables: &[Option<CellTable>],
    extent: u32,
    rebuild: bool,
) -> Result<()> {
    for table in tables.iter().flatten() {
        let layer = &layers[table.layer];
        let Some(cluster) = &layer.config.cluster else {
            continue;
        };
        let started = std::time::Instant::now();
        refresh_one(pool, schema, layer, cluster, table, extent, rebuild)
            .await
            .map_err(|err| {
                let what = format!(
                    "layer `{}`: updating its cluster cells in {}",
                    layer.config.name, table.qualified
                );
                // A statement's failure stays the driver's error, under what it was doing.
                match err {
                    RefreshError::Statement(source) => {
                        Error::Database(DbError::During { what, source })
                    }
                    other => Error::Database(DbError::Unexpected(format!("{what}: {other}"))),
                }
            })?;
        tracing::debug!(
            "layer `{}`: cluster cells up to date in {:.0?}",
            layer.config.name,
            started.elapsed()
        );
    }
    Ok(())
}

/// Why a cell table could not be brought up to date.
#[derive(Debug, thiserror::Error)]
enum RefreshError {
    /// No connection could be had from the pool.
    #[error("{}", pool_message(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("{}", pg_message(.0))]
    Statement(#[from] tokio_postgres::Error),
    /// The change log could not be read.
    #[error("{0}")]
    Changes(#[source] Error),
}

async fn refresh_one(
    pool: &Pool,
    schema: &str,
    layer: &LayerSource,
    cluster: &ClusterConfig,
    table: &CellTable,
    extent: u32,
    rebuild: bool,
) -> std::result::Result<(), RefreshError> {
    let quoted_schema = quote_ident(schema);
    let mut client = crate::db::get(pool).await.map_err(RefreshError::Changes)?;
    let transaction = client.transaction().await?;
    // One refresh at a time per table; the snapshot is taken once the lock is held, before the
    // change log is read, so nothing committed later can be counted as applied.
    transaction
        .execute_typed(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[(&table.qualified, Type::TEXT)],
        )
        .await?;
    let snapshot: String = transaction
        .query_typed_one("SELECT pg_current_snapshot()::text", &[])
        .await?
        .get(0);
    let since: Option<String> = transaction
        .query_typed_opt(
            &format!("SELECT snapshot::text FROM {quoted_schema}.cell_state WHERE cells = $1"),
            &[(&table.name, Type::TEXT)],
        )
        .await?
        .map(|row| row.get(0));
    let gap = match &since {
        Some(since) if !rebuild => log_gap(&*transaction, schema, layer, since)
            .await
            .map_err(RefreshError::Changes)?,
        _ => None,
    };
    let dirty = match &since {
        _ if rebuild || gap.is_some() => None,
        None => None,
        Some(since) => {
            let read = capture::changed_boxes(
                &*transaction,
                schema,
                &layer.config,
                since,
                (None, Some(FULL_REBUILD_CHANGES)),
            )
            .await
            .map_err(RefreshError::Changes)?;
            // A row's cells are those of its old and new representative points, however wide
            // the geometry.
            let points: Vec<[f64; 4]> = read.boxes.iter().map(|b| b.point).collect();
            if read.truncated || read.past_cap {
                None
            } else {
                changed_cells(&points, cluster, extent).map(|cells| (points.len(), cells))
            }
        }
    };
    match dirty {
        None => sum_all_cells(&*transaction, layer, cluster, table, extent).await?,
        Some((_, cells)) if cells.is_empty() => {}
        Some((changes, cells)) => {
            tracing::debug!(
                "layer `{}`: {changes} changed geometries touch {} cells at zoom {}",
                layer.config.name,
                cells.len(),
                cluster.maxzoom
            );
            sum_changed_cells(&*transaction, layer, cluster, table, extent, cells).await?
        }
    }
    transaction
        .execute_typed(
            &format!(
                "INSERT INTO {quoted_schema}.cell_state (cells, owner, snapshot)
                 VALUES ($1, $2, $3::text::pg_snapshot)
                 ON CONFLICT (cells) DO UPDATE SET owner = EXCLUDED.owner,
                     snapshot = EXCLUDED.snapshot, updated_at = now()"
            ),
            &[
                (&table.name, Type::TEXT),
                (&table.owner, Type::TEXT),
                (&snapshot, Type::TEXT),
            ],
        )
        .await?;
    // As a consumer of the change log, the table keeps the changes it has not applied from pruning.
    capture::record_consumer(
        &*transaction,
        &quoted_schema,
        &consumer_name(&table.name),
        &snapshot,
    )
    .await?;
    Ok(transaction.commit().await?)
}

/// Sums every cell again from the rows, deepest clustered zoom first.
async fn sum_all_cells(
    transaction: &impl GenericClient,
    layer: &LayerSource,
    cluster: &ClusterConfig,
    table: &CellTable,
    extent: u32,
) -> std::result::Result<(), RefreshError> {
    let qualified = &table.qualified;
    tracing::info!(
        "layer `{}`: summing every cluster cell into {qualified}",
        layer.config.name
    );
    transaction
        .batch_execute(&format!(
            "DELETE FROM {qualified};
             INSERT INTO {qualified} SELECT {}::int2 AS __oar_z, c.*, {} FROM ({}) c;",
            cluster.maxzoom,
            sql::cell_display_columns("c"),
            deepest_cells(layer, cluster, extent, false)
        ))
        .await?;
    for z in (0..cluster.maxzoom).rev() {
        transaction
            .batch_execute(&coarser_cells(layer, qualified, z, false))
            .await?;
    }
    Ok(())
}

/// Sums again only `cells` of the deepest clustered zoom (those holding a changed geometry's old or
/// new representative point) from rows, and at each coarser zoom the cells above them from the
/// finer cells.
async fn sum_changed_cells(
    transaction: &impl GenericClient,
    layer: &LayerSource,
    cluster: &ClusterConfig,
    table: &CellTable,
    extent: u32,
    mut cells: std::collections::BTreeSet<(i64, i64)>,
) -> std::result::Result<(), RefreshError> {
    let qualified = &table.qualified;
    let envelopes = cell_envelopes(&cells, cluster, extent);
    let (xs, ys) = split(&cells);
    transaction
        .execute_typed(
            &delete_cells(qualified, cluster.maxzoom),
            &cell_params(&xs, &ys),
        )
        .await?;
    let insert = format!(
        "INSERT INTO {qualified} SELECT {}::int2 AS __oar_z, c.*, {} FROM ({}) c",
        cluster.maxzoom,
        sql::cell_display_columns("c"),
        deepest_cells(layer, cluster, extent, true)
    );
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = envelopes
        .iter()
        .map(|v| (v as _, Type::FLOAT8_ARRAY))
        .collect();
    params.extend(cell_params(&xs, &ys));
    transaction.execute_typed(&insert, &params).await?;
    for z in (0..cluster.maxzoom).rev() {
        cells = cells.iter().map(|(x, y)| (x >> 1, y >> 1)).collect();
        let (xs, ys) = split(&cells);
        transaction
            .execute_typed(&delete_cells(qualified, z), &cell_params(&xs, &ys))
            .await?;
        transaction
            .execute_typed(
                &coarser_cells(layer, qualified, z, true),
                &cell_params(&xs, &ys),
            )
            .await?;
    }
    Ok(())
}
