//! Recording, before a run reads the log, what happened to a table's capture since it was
//! recorded: triggers disabled and enabled again (their catalog rows rewritten), or the table's
//! `captured` row deleted. Either means changes may be missing from the log, so `since` moves to
//! now, once: every output (and cluster cell table) older than it is rendered whole by its next
//! run, and later runs trust the log again.

use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use super::{table_captures, Ledger, TableCapture};
use crate::db::quote_ident;
use crate::error::{pg_message, Result};

/// Brings `schema`'s record of each of `tables` (quoted) up to date with its triggers as they
/// are: a gap found moves `since` to now, and says so at WARN. Tables whose triggers are gone or
/// disabled are left to the check that follows, which refuses them. On a read-only standby, or
/// without the right to write the record, nothing is written and the check renders whole.
pub(in crate::state::capture) async fn reconcile(
    client: &impl GenericClient,
    schema: &str,
    tables: &[String],
) -> Result<()> {
    let ledger = Ledger::read(client, schema).await?;
    if !ledger.since || !ledger.digests {
        // An earlier version's install: the check asks for `changes install`.
        return Ok(());
    }
    let captures = table_captures(client, schema, ledger, tables, None).await?;
    let stale: Vec<&TableCapture> = captures
        .iter()
        .filter(|c| c.firing == 4 && (!c.row || c.recorded.is_none() || c.altered()))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let standby: bool = client
        .query_typed_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .get(0);
    if standby {
        tracing::warn!(
            "change capture of {} (schema `{schema}`) had a gap or lost its record, and this \
             server is a read-only standby where it cannot be recorded: runs here render whole \
             until a run against the primary (or `oar-tiles changes install`) records it",
            stale[0].table
        );
        return Ok(());
    }
    for capture in stale {
        if let Err(err) = record(client, schema, capture).await {
            tracing::warn!(
                "cannot record the change capture state of {} in schema `{schema}` ({}): runs \
                 render its outputs whole until `oar-tiles changes install` (or a role that may \
                 update `{schema}.captured`) records it",
                capture.table,
                pg_message(&err)
            );
        }
    }
    Ok(())
}

/// Writes one table's record, guarded by what was read, so of two runs finding the same gap
/// one records it and says so.
async fn record(
    client: &impl GenericClient,
    schema: &str,
    capture: &TableCapture,
) -> std::result::Result<(), tokio_postgres::Error> {
    let captured = format!("{}.captured", quote_ident(schema));
    let table = &capture.table;
    let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 3] = [
        (table, Type::TEXT),
        (&capture.digest, Type::TEXT),
        (&capture.recorded, Type::TEXT),
    ];
    if !capture.row {
        let sql = format!(
            "INSERT INTO {captured} (source, since, triggers)
             SELECT to_regclass($1)::oid, pg_current_snapshot(), $2 WHERE $3::text IS NULL
             ON CONFLICT (source) DO NOTHING"
        );
        if client.execute_typed(&sql, &params).await? == 1 {
            tracing::warn!(
                "the record of when change capture of {table} started (its row in \
                 {captured}) was deleted, so whether the log misses changes is unknown: it is \
                 recorded again from now, and each output of the table is rendered whole once \
                 (`oar-tiles changes install` records it the same way)"
            );
        }
        return Ok(());
    }
    if capture.recorded.is_none() {
        // Recorded by a version that kept no digest: trusted as before, from now on checked.
        let sql = format!(
            "UPDATE {captured} SET triggers = $2
             WHERE source = to_regclass($1)::oid AND triggers IS NOT DISTINCT FROM $3"
        );
        client.execute_typed(&sql, &params).await?;
        return Ok(());
    }
    let sql = format!(
        "UPDATE {captured} SET since = pg_current_snapshot(), installed_at = now(), triggers = $2
         WHERE source = to_regclass($1)::oid AND triggers IS NOT DISTINCT FROM $3"
    );
    if client.execute_typed(&sql, &params).await? == 1 {
        tracing::warn!(
            "the change capture triggers of {table} (schema `{schema}`) were disabled and \
             enabled again, or re-created, since their state was recorded: writes made meanwhile \
             may be in no log, so capture is counted from now and each output of the table (and \
             its cluster cells) is rendered whole once. To bulk-load without this, keep the \
             triggers enabled (the log then takes one row per statement); `ALTER TABLE … \
             DISABLE TRIGGER`, `pg_restore --disable-triggers` and the like cost one whole \
             reseed each"
        );
    }
    Ok(())
}
