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

/// The count of `names` among `table`'s triggers (`table` and `schema` as SQL expressions of
/// text) that call a function of `schema`.
fn owned_triggers_count(table: &str, schema: &str, names: &str) -> String {
    format!(
        "(SELECT count(*) FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
          WHERE tg.tgrelid = to_regclass({table}) AND tg.tgname = ANY({names})
            AND p.pronamespace = to_regnamespace({schema}))"
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
        "CREATE TABLE IF NOT EXISTS {quoted_schema}.captured (
             source oid PRIMARY KEY,
             -- Every change a transaction made that this snapshot does not see is in the log.
             -- NULL: installed by a version that did not record it, trusted as before.
             since pg_snapshot,
             installed_at timestamptz NOT NULL DEFAULT now());
"
    )
}

/// DDL run before `table`'s triggers are (re)created: locks the table against writes until the
/// install commits, then records the snapshot its capture starts from, unless the schema's four
/// triggers were already all there (a refresh, which loses nothing). Under the lock, every
/// transaction that wrote the table has ended, so whatever `since` does not see writes later,
/// through the new triggers.
pub(super) fn record_since(schema: &str, table: &str) -> String {
    let quoted_schema = quote_ident(schema);
    let complete = owned_triggers_count(
        &quote_literal(table),
        &quote_literal(&quoted_schema),
        &name_array(&trigger_names(schema)),
    );
    format!(
        "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE;
         INSERT INTO {quoted_schema}.captured AS c (source, since)
         SELECT to_regclass({table_text})::oid,
                CASE WHEN {complete} = 4 THEN NULL ELSE pg_current_snapshot() END
         ON CONFLICT (source) DO UPDATE SET since = EXCLUDED.since, installed_at = now()
             WHERE EXCLUDED.since IS NOT NULL;
",
        table_text = quote_literal(table),
    )
}

/// How a schema's capture stands for an output's watermark.
#[derive(Debug, Default)]
pub struct Coverage {
    /// Tables whose capture started after the watermark: changes between the two are in no log,
    /// so the output must be reseeded whole. Each with when its capture was installed.
    pub uncovered: Vec<(String, String)>,
}

impl Coverage {
    /// Why a reseed must render everything, if it must.
    pub fn reason(&self) -> Option<String> {
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

/// Checks, on the connection that reads the log, that `schema` captures each of `tables` (quoted)
/// with all its triggers, and which of them it captured only after `snapshot` (an output's
/// watermark). Triggers that are gone are an error naming the command that puts them back.
pub(super) async fn check(
    client: &impl GenericClient,
    schema: &str,
    tables: &[String],
    snapshot: &str,
) -> Result<Coverage> {
    let quoted_schema = quote_ident(schema);
    let recorded: bool = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&format!("{quoted_schema}.captured"), Type::TEXT)],
        )
        .await?
        .get(0);
    let names = trigger_names(schema);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let since = if recorded {
        format!(
            "(SELECT CASE WHEN c.since IS NULL THEN 'covered'
                          WHEN pg_snapshot_xmax(c.since) <= pg_snapshot_xmax($4::text::pg_snapshot)
                               AND NOT EXISTS (SELECT 1 FROM pg_snapshot_xip($4::text::pg_snapshot) x
                                               WHERE pg_visible_in_snapshot(x, c.since))
                          THEN 'covered' ELSE c.installed_at::text END
              FROM {quoted_schema}.captured c WHERE c.source = to_regclass(t.name)::oid)"
        )
    } else {
        "'covered'".to_string()
    };
    let rows = client
        .query_typed(
            &format!(
                "SELECT t.name, {owned}, {since}
                 FROM unnest($1::text[]) t(name)",
                owned = owned_triggers_count("t.name", "$3", "$2::name[]"),
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
    let mut coverage = Coverage::default();
    let mut missing = Vec::new();
    for row in rows {
        let (table, triggers, since): (String, i64, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        match since.as_deref() {
            _ if triggers < 4 => missing.push(table),
            Some("covered") => {}
            Some(installed) => coverage.uncovered.push((table, installed.to_string())),
            // Triggers there but no record of when they started: trust nothing before now.
            None => coverage
                .uncovered
                .push((table, "at a time not recorded".to_string())),
        }
    }
    if !missing.is_empty() {
        return Err(Error::State {
            missing: format!(
                "change capture of {} (schema `{schema}`)",
                missing.join(", ")
            ),
            message: format!(
                "change capture of {} under schema `{schema}` is incomplete: its triggers are \
                 gone (dropped, or replaced by another install); changes since then are in no \
                 log. Run `oar-tiles changes install` with this config: the next reseed then \
                 renders the output whole",
                missing.join(", ")
            ),
        });
    }
    if !recorded {
        tracing::warn!(
            "change schema `{schema}` was installed by an earlier version, which did not record \
             from when it captures each table: run `oar-tiles changes install` to record it"
        );
    }
    Ok(coverage)
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
