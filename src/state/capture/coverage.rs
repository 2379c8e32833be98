//! What a change schema's capture covers, so an output is never reseeded as if its changes were
//! all logged when some were not.
//!
//! Two things can leave changes out of a schema's log while `seed --dirty` would otherwise say
//! "0 changed": an output seeded before the capture of one of its tables was installed (the
//! README's order: `seed`, later `changes install`), and triggers that are gone (dropped by hand,
//! or by an earlier version's install of another schema, whose triggers had fixed names). So each
//! schema keeps, per table, the snapshot from which its triggers caught every change
//! (`captured.since`), and every read of the log first checks both: the triggers must be there,
//! calling this schema's functions, and the output's watermark must see everything `since` saw.
//!
//! Each schema names its triggers after itself ([`trigger_names`]), so any number of schemas
//! capture one table side by side, installed and removed independently.

use md5::{Digest, Md5};
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use crate::db::{dollar_quote, quote_ident, quote_literal};
use crate::error::{DbError, Error, Result};

/// The change schema whose triggers keep the names of earlier versions.
const DEFAULT_SCHEMA: &str = "oar_tiles";

/// What each trigger of a table watches, in the order of [`trigger_names`].
const EVENTS: [&str; 4] = ["insert", "update", "delete", "truncate"];

/// Names earlier versions gave their triggers whatever the schema, and the row trigger and
/// notifying trigger of the first designs: a schema drops those only where they call its own
/// functions, so it never removes another schema's.
const LEGACY_NAMES: [&str; 6] = [
    "oar_tiles_capture_insert",
    "oar_tiles_capture_update",
    "oar_tiles_capture_delete",
    "oar_tiles_capture_truncate",
    "oar_tiles_capture",
    "oar_tiles_notify",
];

/// The names of the insert, update, delete and truncate triggers the change schema `schema` puts
/// on each source table. The default schema keeps the names earlier versions used; any other
/// schema's carry a digest of its name (a schema name may be 63 bytes, a trigger's too), so two
/// schemas never replace each other's triggers.
pub(super) fn trigger_names(schema: &str) -> [String; 4] {
    let suffix = if schema == DEFAULT_SCHEMA {
        String::new()
    } else {
        format!("_{}", hex::encode(&Md5::digest(schema.as_bytes())[..4]))
    };
    EVENTS.map(|event| format!("oar_tiles_capture_{event}{suffix}"))
}

/// A `name[]` literal of `names`.
fn name_array(names: &[impl AsRef<str>]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| quote_literal(n.as_ref())).collect();
    format!("ARRAY[{}]::name[]", quoted.join(", "))
}

mod repair;

pub(super) use repair::reconcile;

/// `aggregate` over the triggers among `names` of `table` (`table` and `schema` as SQL
/// expressions of text) that call a function of `schema`, aliased `tg`.
fn over_owned_triggers(aggregate: &str, table: &str, schema: &str, names: &str) -> String {
    format!(
        "(SELECT {aggregate} FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
          WHERE tg.tgrelid = to_regclass({table}) AND tg.tgname = ANY({names})
            AND p.pronamespace = to_regnamespace({schema}))"
    )
}

/// Counts triggers that fire for the sessions writing a table: 'O' (origin and local sessions)
/// or 'A' (always, replica sessions too); 'D' (disabled) and 'R' (replica sessions only) let
/// ordinary writes through unlogged, so they count as missing.
const FIRING: &str = "count(*) FILTER (WHERE tg.tgenabled IN ('O', 'A'))";

/// Counts triggers that fire in every session, `session_replication_role = replica` included.
const ALWAYS: &str = "count(*) FILTER (WHERE tg.tgenabled = 'A')";

/// A digest of the triggers' catalog rows as they stand: every `ALTER TABLE … ENABLE/DISABLE
/// TRIGGER` (and every re-creation) rewrites a trigger's `pg_trigger` row, so its `xmin` changes,
/// even when a disable was undone by an enable; nothing else this tool relies on rewrites it
/// (VACUUM FREEZE keeps the raw `xmin` readable).
pub(super) const DIGEST: &str = "md5(string_agg(tg.tgname::text || ' ' || tg.xmin::text || ' ' \
     || tg.tgenabled::text, ',' ORDER BY tg.tgname))";

/// The triggers' digest ([`DIGEST`]) of `table` (quoted) as the schema's install leaves them, as
/// an SQL expression.
pub(super) fn triggers_digest(schema: &str, table: &str) -> String {
    over_owned_triggers(
        DIGEST,
        &quote_literal(table),
        &quote_literal(&quote_ident(schema)),
        &name_array(&trigger_names(schema)),
    )
}

/// DDL dropping, from `table` (quoted), every trigger named like one of the schema's own or an
/// earlier version's that calls a function of `schema`, and no other schema's.
pub(super) fn drop_owned_triggers(schema: &str, table: &str) -> String {
    let mut names: Vec<String> = LEGACY_NAMES.iter().map(|n| n.to_string()).collect();
    names.extend(trigger_names(schema));
    let table_text = quote_literal(table);
    let body = format!(
        " DECLARE t record;
         BEGIN
             FOR t IN SELECT tg.tgname FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
                      WHERE tg.tgrelid = to_regclass({table_text}) AND tg.tgname = ANY({names})
                        AND p.pronamespace = to_regnamespace({schema_text})
             LOOP
                 EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, {table_text});
             END LOOP;
         END",
        names = name_array(&names),
        schema_text = quote_literal(&quote_ident(schema)),
    );
    format!("DO {};\n", dollar_quote(&body))
}

/// DDL of the table that records, per source table, from which snapshot the schema's triggers
/// caught every change.
pub(super) fn captured_table_sql(quoted_schema: &str) -> String {
    format!(
        "SELECT set_config('{LEDGER_EXISTED}', (to_regclass({ledger}) IS NOT NULL)::text, true);
         CREATE TABLE IF NOT EXISTS {quoted_schema}.captured (
             source oid PRIMARY KEY,
             -- Every change a transaction made that this snapshot does not see is in the log.
             -- NULL: installed by a version that did not record it, trusted as before.
             since pg_snapshot,
             installed_at timestamptz NOT NULL DEFAULT now());
         -- The triggers' catalog rows when `since` was recorded (a digest of their xmin and
         -- state): when they change, capture may have had a gap, and `since` is moved on.
         ALTER TABLE {quoted_schema}.captured ADD COLUMN IF NOT EXISTS triggers text;
",
        ledger = quote_literal(&format!("{quoted_schema}.captured")),
    )
}

/// DDL run before `table`'s triggers are (re)created: locks the table against writes until the
/// install commits, then records the snapshot its capture starts from, unless the schema's four
/// triggers were already all there, firing, and untouched since their state was recorded (a
/// refresh, which loses nothing). Under the lock, every transaction that wrote the table has
/// ended, so whatever `since` does not see writes later, through the new triggers.
///
/// A table without a row (deleted by hand) gets one from now, so its outputs are rendered whole
/// once; only where the `captured` table itself is new (an earlier version's install, which
/// recorded nothing) are complete triggers trusted from before.
pub(super) fn record_since(schema: &str, table: &str) -> String {
    let quoted_schema = quote_ident(schema);
    let complete = over_owned_triggers(
        FIRING,
        &quote_literal(table),
        &quote_literal(&quoted_schema),
        &name_array(&trigger_names(schema)),
    );
    let digest = triggers_digest(schema, table);
    format!(
        "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE;
         INSERT INTO {quoted_schema}.captured AS c (source, since)
         SELECT to_regclass({table_text})::oid,
                CASE WHEN {complete} = 4 AND NOT current_setting('{LEDGER_EXISTED}')::bool
                     THEN NULL ELSE pg_current_snapshot() END
         ON CONFLICT (source) DO UPDATE SET since = pg_current_snapshot(), installed_at = now()
             WHERE {complete} < 4 OR (c.triggers IS NOT NULL AND c.triggers IS DISTINCT FROM {digest});
",
        table_text = quote_literal(table),
    )
}

/// The setting, local to the install's transaction, that says whether the `captured` table was
/// there before it.
const LEDGER_EXISTED: &str = "oar_tiles.captured_existed";

/// DDL run once `table`'s triggers are created: makes them fire in every session, those with
/// `session_replication_role = replica` (logical replication's apply, some bulk loaders)
/// included, and records their catalog rows' digest, against which every run checks that
/// nobody disabled them since.
pub(super) fn enable_always(schema: &str, table: &str) -> String {
    let mut sql = String::new();
    for name in trigger_names(schema) {
        sql.push_str(&format!(
            "ALTER TABLE {table} ENABLE ALWAYS TRIGGER {};\n",
            quote_ident(&name)
        ));
    }
    sql.push_str(&format!(
        "UPDATE {}.captured SET triggers = {} WHERE source = to_regclass({})::oid;\n",
        quote_ident(schema),
        triggers_digest(schema, table),
        quote_literal(table)
    ));
    sql
}

/// How a schema's capture stands for an output's watermark.
#[derive(Debug, Default)]
pub struct Coverage {
    /// Tables whose capture started after the watermark: changes between the two are in no log,
    /// so the output must be reseeded whole. Each with when its capture was installed.
    pub uncovered: Vec<(String, String)>,
    /// Other gaps in capture since the watermark, each saying what happened to which table.
    pub gaps: Vec<String>,
}

impl Coverage {
    /// Why a reseed must render everything, if it must.
    pub fn reason(&self) -> Option<String> {
        if let Some(gap) = self.gaps.first() {
            return Some(gap.clone());
        }
        let (table, installed) = self.uncovered.first()?;
        let more = match self.uncovered.len() {
            1 => String::new(),
            n => format!(" (and {} other table(s))", n - 1),
        };
        Some(format!(
            "the output was seeded before change capture of {table}{more} was installed \
             ({installed}), so changes made in between are in no log"
        ))
    }
}

/// What the schema's `captured` table holds: nothing of an earlier version's install, and no
/// trigger digests of a later one's.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ledger {
    /// Whether the `captured` table exists.
    pub(super) since: bool,
    /// Whether it has the `triggers` column.
    pub(super) digests: bool,
}

impl Ledger {
    pub(super) async fn read(client: &impl GenericClient, schema: &str) -> Result<Ledger> {
        let row = client
            .query_typed_one(
                "SELECT to_regclass($1) IS NOT NULL,
                        EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1)
                                AND attname = 'triggers' AND NOT attisdropped)",
                &[(&format!("{}.captured", quote_ident(schema)), Type::TEXT)],
            )
            .await
            .map_err(DbError::during(format!(
                "reading the capture records of schema `{schema}`"
            )))?;
        Ok(Ledger {
            since: row.get(0),
            digests: row.get(1),
        })
    }
}

/// How one table's capture stands: its triggers and what `captured` recorded of them.
#[derive(Debug)]
pub(super) struct TableCapture {
    pub(super) table: String,
    /// The schema's triggers on the table that fire for ordinary sessions (of four).
    pub(super) firing: i64,
    /// Those that fire in replica sessions too.
    pub(super) always: i64,
    /// Those there at all, whatever their state.
    pub(super) present: i64,
    /// The triggers' digest now ([`DIGEST`]).
    pub(super) digest: Option<String>,
    /// Whether `captured` has a row for the table.
    pub(super) row: bool,
    /// The digest recorded with `since` (`None`: not recorded, by an earlier version).
    pub(super) recorded: Option<String>,
    /// `covered` when the snapshot asked about sees everything `since` saw, else when capture
    /// started; `None` without a row.
    pub(super) since: Option<String>,
}

impl TableCapture {
    /// Whether the triggers were re-created, disabled or enabled since `since` was recorded.
    pub(super) fn altered(&self) -> bool {
        self.recorded.is_some() && self.recorded != self.digest
    }

    /// Why the log may miss a change the snapshot asked about did not see, other than triggers
    /// that are gone or disabled now.
    fn gap(&self, ledger: Ledger, schema: &str) -> Option<String> {
        let table = &self.table;
        if ledger.since && !self.row {
            return Some(format!(
                "the record of when change capture of {table} started (its row in schema \
                 `{schema}`'s `captured` table) was deleted, so whether changes are missing \
                 from the log is unknown; a run against the primary, or `oar-tiles changes \
                 install`, records it from now"
            ));
        }
        if self.altered() {
            return Some(format!(
                "the change capture triggers of {table} were disabled, re-enabled or re-created \
                 since their state was recorded, so changes made meanwhile may be in no log; a \
                 run against the primary, or `oar-tiles changes install`, records it from now"
            ));
        }
        None
    }
}

/// The capture of each of `tables` (quoted) by `schema`, with whether `snapshot` sees everything
/// its `since` saw (`None`: not asked).
pub(super) async fn table_captures(
    client: &impl GenericClient,
    schema: &str,
    ledger: Ledger,
    tables: &[String],
    snapshot: Option<&str>,
) -> Result<Vec<TableCapture>> {
    let quoted_schema = quote_ident(schema);
    let captured = match ledger {
        Ledger { since: false, .. } => "(SELECT NULL::oid AS source, NULL::pg_snapshot AS since, \
             NULL::timestamptz AS installed_at, NULL::text AS triggers)"
            .to_string(),
        Ledger { digests: false, .. } => format!(
            "(SELECT source, since, installed_at, NULL::text AS triggers \
              FROM {quoted_schema}.captured)"
        ),
        _ => format!("{quoted_schema}.captured"),
    };
    let names = trigger_names(schema);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let rows = client
        .query_typed(
            &format!(
                "SELECT t.name, tr.firing, tr.always, tr.present, tr.digest,
                        c.source IS NOT NULL, c.triggers,
                        CASE WHEN c.source IS NULL THEN NULL
                             WHEN c.since IS NULL THEN 'covered'
                             WHEN pg_snapshot_xmax(c.since) <= pg_snapshot_xmax($4::text::pg_snapshot)
                                  AND NOT EXISTS (SELECT 1 FROM pg_snapshot_xip($4::text::pg_snapshot) x
                                                  WHERE pg_visible_in_snapshot(x, c.since))
                             THEN 'covered' ELSE c.installed_at::text END
                 FROM unnest($1::text[]) t(name)
                 CROSS JOIN LATERAL (SELECT {FIRING} AS firing, {ALWAYS} AS always,
                                            count(*) AS present, {DIGEST} AS digest
                                     FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
                                     WHERE tg.tgrelid = to_regclass(t.name)
                                       AND tg.tgname = ANY($2::name[])
                                       AND p.pronamespace = to_regnamespace($3)) tr
                 LEFT JOIN {captured} c ON c.source = to_regclass(t.name)::oid"
            ),
            &[
                (&tables, Type::TEXT_ARRAY),
                (&names, Type::TEXT_ARRAY),
                (&quoted_schema, Type::TEXT),
                (&snapshot, Type::TEXT),
            ],
        )
        .await
        .map_err(DbError::during(format!(
            "checking the change capture of schema `{schema}`"
        )))?;
    Ok(rows
        .iter()
        .map(|row| TableCapture {
            table: row.get(0),
            firing: row.get(1),
            always: row.get(2),
            present: row.get(3),
            digest: row.get(4),
            row: row.get(5),
            recorded: row.get(6),
            since: row.get(7),
        })
        .collect())
}

/// Checks, on the connection that reads the log, that `schema` captures each of `tables` (quoted)
/// with all its triggers firing, and which of them it captured only after `snapshot` (an output's
/// watermark) or with a gap since. Triggers that are gone or disabled are an error naming the
/// command that puts them back.
pub(super) async fn check(
    client: &impl GenericClient,
    schema: &str,
    tables: &[String],
    snapshot: &str,
) -> Result<Coverage> {
    let ledger = Ledger::read(client, schema).await?;
    let captures = table_captures(client, schema, ledger, tables, Some(snapshot)).await?;
    let not_firing: Vec<&TableCapture> = captures.iter().filter(|c| c.firing < 4).collect();
    if !not_firing.is_empty() {
        return Err(not_firing_error(schema, &not_firing));
    }
    let mut coverage = Coverage::default();
    for capture in captures {
        if capture.always < 4 {
            tracing::warn!(
                "change capture of {} (schema `{schema}`) was installed by an earlier version, \
                 whose triggers do not fire in sessions with session_replication_role = replica \
                 (logical replication, some bulk loaders): run `oar-tiles changes install` to \
                 make them fire always",
                capture.table
            );
        }
        if let Some(gap) = capture.gap(ledger, schema) {
            coverage.gaps.push(gap);
            continue;
        }
        match capture.since {
            Some(since) if since == "covered" => {}
            Some(installed) => coverage.uncovered.push((capture.table, installed)),
            None => coverage
                .uncovered
                .push((capture.table, "at a time not recorded".to_string())),
        }
    }
    if !ledger.since {
        tracing::warn!(
            "change schema `{schema}` was installed by an earlier version, which did not record \
             from when it captures each table: run `oar-tiles changes install` to record it"
        );
    }
    Ok(coverage)
}

/// Why the log of `schema` misses a change to `table` (quoted) that `snapshot` (a cluster cell
/// table's own watermark) did not see, or may: triggers gone or disabled, capture started after
/// it, or a gap since. `None`: the log holds every such change.
pub(super) async fn gap_since(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
    snapshot: &str,
) -> Result<Option<String>> {
    let ledger = Ledger::read(client, schema).await?;
    let tables = [table.to_string()];
    let captures = table_captures(client, schema, ledger, &tables, Some(snapshot)).await?;
    let Some(capture) = captures.first() else {
        return Ok(None);
    };
    if capture.firing < 4 {
        return Ok(Some(not_firing_error(schema, &[capture]).to_string()));
    }
    if let Some(gap) = capture.gap(ledger, schema) {
        return Ok(Some(gap));
    }
    Ok(match capture.since.as_deref() {
        None | Some("covered") => None,
        Some(installed) => Some(format!(
            "change capture of {table} started ({installed}) after they were last summed"
        )),
    })
}

/// What is wrong with `schema`'s capture of `table` (quoted), as `changes status` says it;
/// `None`: nothing, or its triggers are all gone (status lists the capturing schemas).
pub(super) async fn trouble(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Option<String>> {
    let ledger = Ledger::read(client, schema).await?;
    let tables = [table.to_string()];
    let captures = table_captures(client, schema, ledger, &tables, None).await?;
    let Some(capture) = captures.first() else {
        return Ok(None);
    };
    let fix = "run `oar-tiles changes install`";
    Ok(match capture {
        c if c.present == 0 => None,
        c if c.firing < c.present => Some(format!(
            "NOT captured: {} of its 4 triggers are disabled (or fire for replica sessions only), \
             so writes go unlogged: {fix}, and expect one whole reseed",
            c.present - c.firing
        )),
        c if c.present < 4 => Some(format!(
            "NOT captured: {} of its 4 triggers are gone: {fix}",
            4 - c.present
        )),
        c if c.always < 4 => Some(format!(
            "captured, but not in sessions with session_replication_role = replica (installed \
             by an earlier version): {fix}"
        )),
        c if c.altered() => Some(
            "its triggers were disabled and enabled again (or re-created) since their state was \
             recorded: the next run records it and renders its outputs whole once"
                .to_string(),
        ),
        c if ledger.since && !c.row => Some(
            "its record of when capture started was deleted: the next run (or `oar-tiles \
             changes install`) records it, and its outputs are rendered whole once"
                .to_string(),
        ),
        _ => None,
    })
}

/// The error of tables whose triggers are gone, or there but not firing.
fn not_firing_error(schema: &str, captures: &[&TableCapture]) -> Error {
    let names: Vec<&str> = captures.iter().map(|c| c.table.as_str()).collect();
    let names = names.join(", ");
    let disabled = captures.iter().any(|c| c.present > c.firing);
    let what = if disabled {
        "its triggers are disabled (`ALTER TABLE … DISABLE TRIGGER`, or enabled for replica \
         sessions only), or some are gone; writes meanwhile are in no log. Keep them enabled \
         during bulk loads; run `oar-tiles changes install` with this config to enable them \
         again"
    } else {
        "its triggers are gone (dropped, or replaced by another install); changes since then are \
         in no log. Run `oar-tiles changes install` with this config"
    };
    Error::State {
        missing: format!("change capture of {names} (schema `{schema}`)"),
        message: format!(
            "change capture of {names} under schema `{schema}` is incomplete: {what}: the next \
             reseed then renders the output whole"
        ),
    }
}

/// Every change schema whose triggers capture `table` (quoted), from the functions they call.
pub(super) async fn capturing_schemas(
    client: &impl GenericClient,
    table: &str,
) -> Result<Vec<String>> {
    let rows = client
        .query_typed(
            "SELECT DISTINCT p.pronamespace::regnamespace::text
             FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
             WHERE tg.tgrelid = to_regclass($1) AND tg.tgname LIKE 'oar\\_tiles\\_capture\\_%'
             ORDER BY 1",
            &[(&table, Type::TEXT)],
        )
        .await
        .map_err(DbError::during(format!(
            "listing the change schemas capturing {table}"
        )))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schema_names_its_own_triggers() {
        assert_eq!(
            trigger_names("oar_tiles")[0],
            "oar_tiles_capture_insert",
            "the default schema keeps the names of earlier versions"
        );
        let a = trigger_names("tiles_public");
        let b = trigger_names("tiles_internal");
        assert_ne!(a, b);
        assert!(a.iter().all(|n| n.len() <= 63));
        assert!(a[3].starts_with("oar_tiles_capture_truncate_"));
    }
}
