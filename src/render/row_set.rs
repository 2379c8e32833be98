//! Row sets of partitions: each rendering session copies a partition's rows into a temporary
//! table of its own, with its own spatial index, before it renders the partition's tiles, which
//! then read only those rows.
//!
//! Reading the table instead, filtered by the value, a tile's statement finds the value's rows as
//! the intersection of two index scans (the value's, and the tile's box over every value's rows):
//! one statement plan serves every value, so it cannot know that a small value is better found by
//! the value alone. A world tile of a partition of 15 rows then walked the spatial index over all
//! 100,000 rows of the sample, 9 ms where its copy takes 0.3 ms, and a partition's low zooms cost
//! more than all its other tiles.
//!
//! Statements name the tables, not the values, so every partition of a tileset still shares one
//! set of prepared statements; emptying the table makes the server plan them again (about 1 ms a
//! statement), once per partition and session.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use deadpool_postgres::{Object, Pool};
use md5::{Digest, Md5};
use tokio::sync::{RwLock, RwLockReadGuard};

use super::source::LayerSource;
use super::sql::{row_set_sql, RowSetSql};
use crate::error::Result;

/// The most rows a value may hold and be copied, per layer, into each rendering session: beyond
/// it the copies would grow with the table (in temporary files of every session), and a value
/// that large finds its tiles' rows through the table's spatial index about as well.
pub const MAX_ROWS: i64 = 100_000;

/// The row set of layer `layer` of partitioned tileset `tileset`: one name per layer and
/// tileset, so sessions keep each table for the whole run and two tilesets' never mix.
pub fn table_name(tileset: &str, layer: usize) -> String {
    let digest = Md5::digest(format!("{tileset}\u{0}{layer}").as_bytes());
    format!("__oar_rows_{}", &hex::encode(digest)[..16])
}

/// Whether sessions of `pool` may keep row sets: temporary tables are allowed (not a hot standby,
/// not read-only, the TEMP privilege granted). Behind a transaction pooler a session's tables are
/// not the next transaction's, so the caller must not ask then.
pub async fn available(pool: &Pool) -> Result<bool> {
    let client = crate::db::get(pool).await?;
    let row = client
        .query_one(
            "SELECT has_database_privilege(current_database(), 'TEMP') \
             AND NOT pg_is_in_recovery() \
             AND current_setting('transaction_read_only') = 'off'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Renderers are numbered so that a session knows whose rows it holds.
static NEXT_RENDERER: AtomicU64 = AtomicU64::new(1);

/// The row sets one renderer (one partition, in one run) reads, one per layer.
#[derive(Debug)]
pub struct RowSets {
    renderer: u64,
    sets: Vec<RowSetSql>,
    value: String,
}

impl RowSets {
    /// The row sets of `layers`, if their partition has any.
    pub fn of(layers: &[LayerSource]) -> Option<RowSets> {
        let value = layers
            .iter()
            .find_map(|layer| layer.config.partition.as_ref())?
            .value
            .clone();
        let sets: Vec<RowSetSql> = layers.iter().filter_map(row_set_sql).collect();
        (!sets.is_empty()).then(|| RowSets {
            renderer: NEXT_RENDERER.fetch_add(1, Ordering::Relaxed),
            sets,
            value,
        })
    }

    /// Creates the (empty) tables in `client`'s session, if it has not got them.
    pub async fn create(&self, client: &Object) -> std::result::Result<(), tokio_postgres::Error> {
        for set in &self.sets {
            client.batch_execute(&set.create).await?;
        }
        Ok(())
    }

    /// Replaces what the session's tables hold with this partition's rows.
    async fn fill(&self, client: &Object) -> std::result::Result<(), tokio_postgres::Error> {
        for set in &self.sets {
            client.batch_execute(&set.empty).await?;
            client.execute(&set.fill, &[&self.value]).await?;
        }
        Ok(())
    }
}

/// What the session of one of the run's connections holds.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The client it was loaded on: a connection swapped for a fresh one holds nothing.
    client: Weak<Object>,
    /// Row set tables created in that session.
    created: HashSet<String>,
    /// The renderer whose rows the tables hold (0: none, or a copy that failed).
    renderer: u64,
}

/// Waits until the session of `client` holds `sets`, loading them if it holds another renderer's
/// (or nothing), and returns a guard to hold until the statement that reads them is sent: a
/// load for another renderer waits for it.
pub async fn hold<'a>(
    loaded: &'a RwLock<Loaded>,
    client: &Arc<Object>,
    sets: &RowSets,
) -> std::result::Result<RwLockReadGuard<'a, Loaded>, tokio_postgres::Error> {
    let this = Arc::downgrade(client);
    loop {
        let held = loaded.read().await;
        if held.renderer == sets.renderer && Weak::ptr_eq(&held.client, &this) {
            return Ok(held);
        }
        drop(held);
        let mut loading = loaded.write().await;
        if !Weak::ptr_eq(&loading.client, &this) {
            *loading = Loaded {
                client: this.clone(),
                ..Loaded::default()
            };
        }
        if loading.renderer != sets.renderer {
            loading.renderer = 0;
            for set in &sets.sets {
                if !loading.created.contains(&set.name) {
                    client.batch_execute(&set.create).await?;
                    loading.created.insert(set.name.clone());
                }
            }
            sets.fill(client).await?;
            loading.renderer = sets.renderer;
        }
    }
}
