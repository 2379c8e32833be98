//! Who a cluster cell table belongs to, and the dropping of the tables an owner no longer uses.

use md5::{Digest, Md5};
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use crate::db::quote_ident;
use crate::error::pg_message;
use crate::render::source::{quoted_table, LayerSource};

/// Who a layer's cell table belongs to: `tileset/layer on table [digest]`. The source is part of
/// it because configs that share a change schema (its default is one per database) may give layers
/// over different tables the same names; the digest, of what decides which rows and values a layer
/// shows (not of its grid), because two configs of one table may name their tilesets and layers
/// alike and render other attributes, and each run would otherwise drop the table the other's
/// run is reading. A regridded layer keeps its owner, so its old table goes at once.
pub(super) fn owner(tileset: &str, layer: &LayerSource) -> String {
    let config = &layer.config;
    let rows = format!(
        "{:?}",
        (
            &config.geometry_column,
            &config.id_column,
            &config.attributes,
            &config.filter
        )
    );
    format!(
        "{tileset}/{} on {} [{}]",
        config.name,
        quoted_table(config),
        hex::encode(&Md5::digest(rows.as_bytes())[..4])
    )
}

/// Drops the cell tables `owner` had under earlier configs, all but `current`, and those of the
/// same tileset, layer and source whose rows were other (another config's, or this one's before
/// its attributes changed) once no run has refreshed them for a day; a failure only warns, as such
/// tables merely hold back pruning.
pub(super) async fn drop_stale(
    client: &impl GenericClient,
    quoted_schema: &str,
    owner: &str,
    current: &str,
) {
    let base = owner.rsplit_once(" [").map_or(owner, |(base, _)| base);
    let stale = match client
        .query_typed(
            &format!(
                "SELECT cells FROM {quoted_schema}.cell_state
                 WHERE cells <> $2
                   AND (owner = $1 OR owner = $3
                        OR (starts_with(owner, $3 || ' [') AND updated_at < now() - interval '1 day'))"
            ),
            &[(&owner, Type::TEXT), (&current, Type::TEXT), (&base, Type::TEXT)],
        )
        .await
    {
        Ok(stale) => stale,
        Err(err) => {
            tracing::warn!(
                "cannot look for cell tables of earlier configs: {}",
                pg_message(&err)
            );
            return;
        }
    };
    for row in stale {
        let name: String = row.get(0);
        tracing::info!(
            "dropping {quoted_schema}.{name}, the cluster cells of an earlier config of {owner}"
        );
        let dropped = async {
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {quoted_schema}.{}",
                    quote_ident(&name)
                ))
                .await?;
            client
                .execute_typed(
                    &format!("DELETE FROM {quoted_schema}.cell_state WHERE cells = $1"),
                    &[(&name, Type::TEXT)],
                )
                .await?;
            client
                .execute_typed(
                    &format!("DELETE FROM {quoted_schema}.consumers WHERE output = $1"),
                    &[(&consumer_name(&name), Type::TEXT)],
                )
                .await
        };
        if let Err(err) = dropped.await {
            tracing::warn!("cannot drop {quoted_schema}.{name}: {}", pg_message(&err));
        }
    }
}

/// How a cell table appears among the change log's consumers.
pub(super) fn consumer_name(table: &str) -> String {
    format!("cluster cells {table}")
}
