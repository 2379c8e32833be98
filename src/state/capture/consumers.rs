//! The outputs that consume the change log: the snapshot each has applied, what it has not
//! applied yet, and pruning what every consumer has seen.

use deadpool_postgres::Pool;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use std::path::{Component, Path, PathBuf};

use super::{installed, read_only_standby};
use crate::config::{self, OutputTarget, Scheme};
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

/// `changes forget OUTPUT`: drops the consumer `output` names (its consumer name as `changes
/// status` lists it, or the output as a config gives it, taken from this folder), so it no longer
/// holds back pruning. Returns the names dropped; none when no consumer has them.
pub async fn forget(pool: &Pool, schema: &str, output: &str) -> Result<Vec<String>> {
    if !installed(pool, schema).await? {
        return Ok(Vec::new());
    }
    let mut names = vec![output.to_string()];
    if let Ok(target) = OutputTarget::parse(output) {
        names.extend([target.consumer_name(), target.describe()]);
    }
    let client = crate::db::get(pool).await?;
    let rows = client
        .query_typed(
            &format!(
                "DELETE FROM {}.consumers WHERE output = ANY($1) RETURNING output",
                quote_ident(schema)
            ),
            &[(&names, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(DbError::during("forgetting an output in the change log"))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
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

/// Records that `target` reflects everything up to `watermark`, then drops the changes every
/// recorded output has seen. Needs write rights on the `oar_tiles` schema; without them the log is
/// left as it is, with a warning.
pub async fn advance_and_prune(
    pool: &Pool,
    schema: &str,
    target: &OutputTarget,
    watermark: &Watermark,
) -> Result<u64> {
    let output = target.describe();
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
    let consumer = target.consumer_name();
    let client = crate::db::get(pool).await?;
    let result = match fold_aliases(&**client, &schema, &consumer).await {
        Ok(()) => record_consumer(&**client, &schema, &consumer, &watermark.snapshot).await,
        Err(err) => Err(err),
    };
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

/// The zoom below which `target`'s tiles rendered slowly, as its runs recorded it
/// ([`record_slow_zooms`]); `None` when none did, or the change log was installed by a version
/// that kept no such record (`changes install` adds it).
pub async fn slow_zooms(pool: &Pool, schema: &str, target: &OutputTarget) -> Option<u8> {
    let consumer = target.consumer_name();
    let client = crate::db::get(pool).await.ok()?;
    let read = client
        .query_typed_opt(
            &format!(
                "SELECT slow_below FROM {}.consumers WHERE output = $1",
                quote_ident(schema)
            ),
            &[(&consumer, Type::TEXT)],
        )
        .await;
    match read {
        Ok(row) => row
            .and_then(|row| row.get::<_, Option<i16>>(0))
            .and_then(|below| u8::try_from(below).ok())
            .filter(|below| *below > 0),
        Err(err) => {
            tracing::debug!(
                "{consumer}: no record of slow zooms ({}); `oar-tiles changes install` adds it",
                pg_message(&err)
            );
            None
        }
    }
}

/// Records that `target`'s tiles below zoom `below` render slowly, for the first cycle of a later
/// `watch`: a run over the whole output states it (`whole`), any other only raises it. Best
/// effort: without the record a watcher learns it from its first cycles, as it did before.
pub async fn record_slow_zooms(
    pool: &Pool,
    schema: &str,
    target: &OutputTarget,
    below: u8,
    whole: bool,
) {
    if !installed(pool, schema).await.unwrap_or(false)
        || read_only_standby(pool).await.unwrap_or(true)
    {
        return;
    }
    let consumer = target.consumer_name();
    let Ok(client) = crate::db::get(pool).await else {
        return;
    };
    let recorded = client
        .execute_typed(
            &format!(
                "UPDATE {}.consumers SET slow_below = CASE WHEN $3 THEN $2
                     ELSE greatest(coalesce(slow_below, 0), $2) END
                 WHERE output = $1",
                quote_ident(schema)
            ),
            &[
                (&consumer, Type::TEXT),
                (&i16::from(below), Type::INT2),
                (&whole, Type::BOOL),
            ],
        )
        .await;
    if let Err(err) = recorded {
        tracing::debug!(
            "{consumer}: slow zooms not recorded ({}); `oar-tiles changes install` adds the record",
            pg_message(&err)
        );
    }
}

/// Folds the consumers named by another path of the output `consumer` names (by an earlier
/// version, which named an output as its config gave it) into `consumer`'s row, keeping the
/// oldest watermark among them, so a stale name no longer holds back pruning.
async fn fold_aliases(
    client: &impl GenericClient,
    quoted_schema: &str,
    consumer: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    let rows = client
        .query_typed(
            &format!("SELECT output FROM {quoted_schema}.consumers WHERE output <> $1"),
            &[(&consumer, Type::TEXT)],
        )
        .await?;
    let aliases: Vec<String> = rows
        .iter()
        .map(|row| row.get::<_, String>(0))
        .filter(|name| names_same_output(name, consumer))
        .collect();
    if aliases.is_empty() {
        return Ok(());
    }
    tracing::info!(
        "the change log's consumers {} are the output {consumer}: folded into it",
        aliases.join(", ")
    );
    client
        .execute_typed(
            &format!(
                "WITH named AS (SELECT output, snapshot, updated_at FROM {quoted_schema}.consumers
                                WHERE output = ANY($1) OR output = $2),
                      oldest AS (SELECT snapshot, updated_at FROM named
                                 ORDER BY pg_snapshot_xmin(snapshot) LIMIT 1),
                      gone AS (DELETE FROM {quoted_schema}.consumers WHERE output = ANY($1))
                 INSERT INTO {quoted_schema}.consumers (output, snapshot, updated_at)
                 SELECT $2, snapshot, updated_at FROM oldest
                 ON CONFLICT (output) DO UPDATE SET snapshot = EXCLUDED.snapshot,
                                                    updated_at = EXCLUDED.updated_at"
            ),
            &[(&aliases, Type::TEXT_ARRAY), (&consumer, Type::TEXT)],
        )
        .await?;
    Ok(())
}

/// Whether the consumer `name` (as an earlier version wrote it: the output as its config gave it,
/// with a kind after it, as in `tiles/a.mbtiles (MBTiles)`) is the output whose consumer name is
/// `canonical`. A relative name is taken from this folder; one that names no file here is the
/// output when it ends its canonical path (a run from the config's own folder wrote it).
fn names_same_output(name: &str, canonical: &str) -> bool {
    let bare = [" (MBTiles)", " (PMTiles)", " (directory)"]
        .iter()
        .find_map(|kind| name.strip_suffix(kind))
        .unwrap_or(name);
    if Scheme::of(bare).is_some() || Scheme::of(canonical).is_some() {
        return bare == canonical;
    }
    let path = Path::new(bare);
    if path.is_absolute() || path.exists() {
        return config::output::canonical(path) == Path::new(canonical);
    }
    if path.components().any(|part| part == Component::ParentDir) {
        return false;
    }
    let trimmed: PathBuf = path
        .components()
        .filter(|part| *part != Component::CurDir)
        .collect();
    !trimmed.as_os_str().is_empty() && Path::new(canonical).ends_with(trimmed)
}
