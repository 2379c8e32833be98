//! What a shared change schema's UPDATE triggers compare: the union of what every config installed
//! under it renders from each table, kept in `SCHEMA.compared`, so installing one config never
//! stops the logging of a column another config renders.
//!
//! Each install adds its own entry per table (the columns it renders, whether a layer filters the
//! table, its partition columns) and builds the triggers from the union of every entry. Entries are
//! only ever added: one that no config uses any more costs some needless log rows, while one
//! removed too early would leave an output silently stale. `changes uninstall` removes them with
//! the schema. When an install compares more than the entries before it did, changes of the added
//! columns made until then are in no log, so the table's capture is recorded as starting anew
//! (`captured.since`), as a first install does, and outputs seeded earlier are reseeded whole once.

use std::collections::BTreeSet;

use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use super::Watched;
use crate::db::{quote_ident, quote_literal};
use crate::error::{DbError, Error, Result};

/// One config's entry for one table, as recorded.
pub(in crate::state::capture) struct Entry {
    columns: Vec<String>,
    filtered: bool,
    partitions: Vec<String>,
    geometry: String,
    config: String,
}

/// DDL creating the entries' table and locking it until the install commits, so two installs
/// into one schema run one after the other and neither builds its triggers from a union that
/// misses the other's entry.
pub(in crate::state::capture) fn table_sql(quoted_schema: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted_schema};
         CREATE TABLE IF NOT EXISTS {quoted_schema}.compared (
             source oid NOT NULL,
             columns text[] NOT NULL,
             filtered boolean NOT NULL,
             partitions text[] NOT NULL,
             geometry text NOT NULL,
             config text NOT NULL,
             installed_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (source, columns, filtered, partitions));
         LOCK TABLE {quoted_schema}.compared IN SHARE ROW EXCLUSIVE MODE;
"
    )
}

/// The entries recorded for `table` (quoted) in the schema.
pub(in crate::state::capture) async fn recorded(
    client: &impl GenericClient,
    quoted_schema: &str,
    table: &str,
) -> Result<Vec<Entry>> {
    let rows = client
        .query_typed(
            &format!(
                "SELECT columns, filtered, partitions, geometry, config FROM {quoted_schema}.compared
                 WHERE source = to_regclass($1)::oid ORDER BY installed_at, config"
            ),
            &[(&table, Type::TEXT)],
        )
        .await
        .map_err(DbError::during(format!(
            "reading the columns {quoted_schema}.compared records for {table}"
        )))?;
    Ok(rows
        .iter()
        .map(|row| Entry {
            columns: row.get(0),
            filtered: row.get(1),
            partitions: row.get(2),
            geometry: row.get(3),
            config: row.get(4),
        })
        .collect())
}

/// What the install of `config` (its file) adds for one table: its own entry, and whether the
/// union of the entries grows with it (always, when there are none yet).
pub(in crate::state::capture) struct Widening {
    own: Entry,
    /// The union compares what the recorded entries did not: capture of the table starts anew.
    pub(in crate::state::capture) grows: bool,
}

/// Widens `watched` (this config's columns of one table) to the union of `entries`, refusing an
/// entry that logs another geometry column (the log holds one geometry per change, so the other
/// config's reseeds would look in the wrong places).
pub(in crate::state::capture) fn widen(
    watched: &mut Watched,
    entries: &[Entry],
    config: &str,
) -> Result<Widening> {
    let own = Entry {
        columns: sorted(watched.columns.iter()),
        filtered: watched.filtered,
        partitions: sorted(watched.partitions.iter().map(|(c, _)| c)),
        geometry: watched.geometry.clone(),
        config: config.to_string(),
    };
    if let Some(other) = entries.iter().find(|e| e.geometry != own.geometry) {
        return Err(Error::setting(
            "geometry_column",
            format!(
                "table {} is captured under this `[changes] schema` for {} with its geometry \
                 column `{}`, and this config renders `{}`: one change log holds one geometry per \
                 change, so give one of the configs a `[changes] schema` of its own",
                watched.table, other.config, other.geometry, own.geometry
            ),
        ));
    }
    let filtered_before = entries.iter().any(|e| e.filtered);
    let columns_before: BTreeSet<&String> = entries.iter().flat_map(|e| &e.columns).collect();
    let partitions_before: BTreeSet<&String> = entries.iter().flat_map(|e| &e.partitions).collect();
    // A filtered table's rows are compared whole, so every column is compared already.
    let grows = entries.is_empty()
        || (own.filtered && !filtered_before)
        || (!filtered_before && own.columns.iter().any(|c| !columns_before.contains(c)))
        || own
            .partitions
            .iter()
            .any(|p| !partitions_before.contains(p));
    for entry in entries {
        for column in &entry.columns {
            if !watched.columns.contains(column) {
                watched.columns.push(column.clone());
                watched
                    .borrowed
                    .push((column.clone(), entry.config.clone()));
            }
        }
        for column in &entry.partitions {
            if !watched.partitions.iter().any(|(c, _)| c == column) {
                watched.partitions.push((column.clone(), false));
            }
        }
        watched.filtered |= entry.filtered;
    }
    Ok(Widening { own, grows })
}

fn sorted<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let set: BTreeSet<&String> = names.collect();
    set.into_iter().cloned().collect()
}

/// DDL recording `widening`'s own entry for `table` (quoted) and, when the union grew, that the
/// table's capture starts from now (run after `captured` has its row and the table is locked).
pub(in crate::state::capture) fn record_sql(
    quoted_schema: &str,
    table: &str,
    widening: &Widening,
) -> String {
    let array = |names: &[String]| {
        let quoted: Vec<String> = names.iter().map(|n| quote_literal(n)).collect();
        format!("ARRAY[{}]::text[]", quoted.join(", "))
    };
    let own = &widening.own;
    let source = format!("to_regclass({})::oid", quote_literal(table));
    let mut sql = format!(
        "INSERT INTO {quoted_schema}.compared (source, columns, filtered, partitions, geometry, config)
         VALUES ({source}, {}, {}, {}, {}, {})
         ON CONFLICT (source, columns, filtered, partitions) DO UPDATE
             SET config = EXCLUDED.config, installed_at = now();
",
        array(&own.columns),
        own.filtered,
        array(&own.partitions),
        quote_literal(&own.geometry),
        quote_literal(&own.config),
    );
    if widening.grows {
        sql.push_str(&format!(
            "UPDATE {quoted_schema}.captured SET since = pg_current_snapshot(), installed_at = now()
             WHERE source = {source};
"
        ));
    }
    sql
}

/// The union of the columns the schema's entries compare for `table` (quoted), sorted; `["*"]`
/// when a layer filters it (its rows are compared whole). Empty when nothing is recorded (an
/// install by an earlier version, which compared the columns of the config installed last).
pub(in crate::state::capture) async fn compared_columns(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Vec<String>> {
    let quoted_schema = quote_ident(schema);
    let exists: bool = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&format!("{quoted_schema}.compared"), Type::TEXT)],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let entries = recorded(client, &quoted_schema, table).await?;
    if entries.iter().any(|e| e.filtered) {
        return Ok(vec!["*".to_string()]);
    }
    Ok(sorted(entries.iter().flat_map(|e| &e.columns)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    /// The one table `attributes` (a TOML array) renders, as a config watches it.
    fn watched(attributes: &str, geometry: &str) -> Watched {
        let text = format!(
            "[database]\nurl = \"postgresql://x/y\"\n[[tileset]]\nname = \"t\"\nlayer = [{{ name = \"f\", \
             table = \"public.sites\", geometry_column = \"{geometry}\", attributes = {attributes} }}]\n"
        );
        let config = Config::parse(Path::new("c.toml"), &text, None).unwrap();
        super::super::watched_tables(&config).remove(0)
    }

    #[test]
    fn a_later_install_widens_to_every_entry_and_never_narrows() {
        let mut b = watched(r#"["label", "kind"]"#, "pt");
        let first = widen(&mut b, &[], "b.toml").unwrap();
        assert!(first.grows, "a first install starts the capture");
        let mut a = watched(r#"["label"]"#, "pt");
        let second = widen(&mut a, &[first.own], "a.toml").unwrap();
        assert!(!second.grows, "a's columns were compared already");
        assert!(
            a.columns.contains(&"kind".to_string()),
            "b's column stays compared"
        );
        assert_eq!(a.borrowed, [("kind".to_string(), "b.toml".to_string())]);
        let mut c = watched(r#"["score"]"#, "pt");
        assert!(widen(&mut c, &[second.own], "c.toml").unwrap().grows);
        let mut elsewhere = watched(r#"["label"]"#, "centroid");
        let own = widen(&mut watched("[]", "pt"), &[], "b.toml").unwrap().own;
        let refused = widen(&mut elsewhere, &[own], "a.toml")
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.contains("`[changes] schema` of its own"),
            "{refused}"
        );
    }
}
