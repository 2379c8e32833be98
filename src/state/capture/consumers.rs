//! The outputs that consume the change log: the snapshot each has applied, what it has not
//! applied yet, and pruning what every consumer has seen.

use deadpool_postgres::Pool;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use super::{installed, read_only_standby};
use crate::db::quote_ident;
use crate::error::{pg_message, DbError, Result};
use crate::state::watermark::Watermark;

/// Drops outputs that no longer consume the change log themselves (a partitioned tileset's
/// partitions, whose tileset consumes it for them) from its consumers, so they no longer hold
/// back pruning.
pub async fn forget_consumers(pool: &Pool, schema: &str, consumers: &[String]) -> Result<()> {
    if consumers.is_empty() || !installed(pool, schema).await? || read_only_standby(pool).await? {
        return Ok(());
    }
    let client = crate::db::get(pool).await?;
    client
        .execute_typed(
            &format!(
                "DELETE FROM {}.consumers WHERE output = ANY($1)",
                quote_ident(schema)
            ),
            &[(&consumers, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(DbError::during("forgetting outputs in the change log"))?;
    Ok(())
}

/// How many changes to `tables` (quoted) the output `consumer` has not applied yet, by the
/// snapshot it last recorded in the consumers table; every logged change when it recorded none.
pub async fn pending(pool: &Pool, schema: &str, consumer: &str, tables: &[String]) -> Result<i64> {
    let client = crate::db::get(pool).await?;
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
    forget_consumers(pool, schema, &[consumer.to_string()]).await
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
    let client = crate::db::get(pool).await?;
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
