//! The run's pooled, pipelined connections, and a broken one swapped for a fresh one.

use std::future::Future;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::RowStream;

use super::row_set::Loaded;
use super::sql::TileQuery;
use crate::config::{DatabaseConfig, PoolMode};
use crate::error::{pool_message, Error, Result};
use crate::retry::Policy;

/// A fixed set of pooled connections shared by all renders of a run. Each carries several
/// statements at once: tokio-postgres pipelines them, so the network round trip no longer leaves the
/// server idle between tiles. A broken connection is swapped for a fresh one from the pool.
///
/// Behind a transaction pooler a tile's statement runs in its own transaction that first sets the
/// session settings locally, and a connection carries one such transaction at a time.
pub struct Connections {
    pool: Pool,
    slots: Arc<Vec<Slot>>,
    /// The one slot of a lane ([`Connections::lanes`]); `None`: all of them.
    lane: Option<usize>,
    pub(super) max_attempts: u32,
    /// `BEGIN; SET LOCAL …` when statements go through a transaction pooler.
    begin: Option<String>,
}

pub(super) struct Slot {
    client: std::sync::RwLock<Arc<Object>>,
    busy: AtomicUsize,
    /// Held for a whole transaction behind a transaction pooler, so two never interleave.
    transaction: tokio::sync::Mutex<()>,
    /// The partition rows the session holds ([`super::row_set`]).
    pub(super) rows: tokio::sync::RwLock<Loaded>,
}

/// Marks a slot busy while a statement runs on it.
pub struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    /// Takes `count` connections from the pool, waiting with backoff while the server is unreachable.
    pub async fn open(pool: &Pool, count: usize, database: &DatabaseConfig) -> Result<Connections> {
        let max_attempts = database.max_attempts;
        // Together: each new connection waits for its TLS handshake, authentication and a backend
        // to start, a few milliseconds that a run with little to do notices.
        let clients =
            futures::future::try_join_all((0..count).map(|_| get_with_retries(pool, max_attempts)))
                .await?;
        let slots = clients
            .into_iter()
            .map(|client| Slot {
                client: std::sync::RwLock::new(Arc::new(client)),
                busy: AtomicUsize::new(0),
                transaction: tokio::sync::Mutex::new(()),
                rows: tokio::sync::RwLock::default(),
            })
            .collect();
        let begin = (database.pool_mode == PoolMode::Transaction).then(|| {
            let settings: String = crate::db::session_settings(database)
                .iter()
                .map(|(name, value)| format!("; SET LOCAL {name} = '{value}'"))
                .collect();
            format!("BEGIN{settings}")
        });
        Ok(Connections {
            pool: pool.clone(),
            slots: Arc::new(slots),
            lane: None,
            max_attempts,
            begin,
        })
    }

    /// One set per connection, each using only its own: runs that must not share a session
    /// (partitions, whose row sets live in it) run side by side, one on each.
    pub fn lanes(&self) -> Vec<Connections> {
        (0..self.slots.len())
            .map(|index| Connections {
                pool: self.pool.clone(),
                slots: Arc::clone(&self.slots),
                lane: Some(index),
                max_attempts: self.max_attempts,
                begin: self.begin.clone(),
            })
            .collect()
    }

    /// How many connections renders may use.
    pub fn count(&self) -> usize {
        self.usable().len()
    }

    fn usable(&self) -> &[Slot] {
        match self.lane {
            Some(index) => &self.slots[index..=index],
            None => &self.slots,
        }
    }

    /// The least busy connection, marked busy until the guard drops.
    pub(super) fn pick(&self) -> (Busy<'_>, &Slot, Arc<Object>) {
        let slot = self
            .usable()
            .iter()
            .min_by_key(|s| s.busy.load(Ordering::Relaxed))
            .expect("a run has at least one connection");
        slot.busy.fetch_add(1, Ordering::Relaxed);
        let client = slot
            .client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (Busy(&slot.busy), slot, client)
    }

    /// Runs a tile statement on `client` and hands its rows to `consume` as they arrive: prepared
    /// once per connection and zoom, or, behind a transaction pooler, unnamed inside a transaction
    /// of its own (BEGIN, statement and COMMIT are sent together, so the transaction waits for no
    /// extra round trip).
    pub(super) async fn query<T, C, Fut>(
        &self,
        slot: &Slot,
        client: &Object,
        query: &TileQuery,
        params: &[&(dyn ToSql + Sync)],
        consume: C,
    ) -> std::result::Result<T, tokio_postgres::Error>
    where
        C: FnOnce(RowStream) -> Fut,
        Fut: Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        let Some(begin) = &self.begin else {
            let statement = client
                .prepare_typed_cached(&query.sql, &query.types)
                .await?;
            let rows = client.query_raw(&statement, params.iter().copied()).await?;
            return consume(rows).await;
        };
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
            .iter()
            .copied()
            .zip(query.types.iter().cloned())
            .collect();
        let _alone = slot.transaction.lock().await;
        let (began, consumed, committed) = tokio::join!(
            client.batch_execute(begin),
            async {
                let rows = client.query_typed_raw(&query.sql, typed).await?;
                consume(rows).await
            },
            client.batch_execute("COMMIT"),
        );
        began?;
        let consumed = consumed?;
        committed?;
        Ok(consumed)
    }

    /// Swaps a broken connection for a new one, once, whichever render noticed first.
    pub(super) async fn replace(&self, broken: &Arc<Object>) {
        let Some(slot) = self
            .slots
            .iter()
            .find(|s| Arc::ptr_eq(&s.client.read().unwrap_or_else(|p| p.into_inner()), broken))
        else {
            return;
        };
        if let Ok(fresh) = self.pool.get().await {
            let mut current = slot.client.write().unwrap_or_else(|p| p.into_inner());
            if Arc::ptr_eq(&current, broken) {
                *current = Arc::new(fresh);
            }
        }
    }
}

async fn get_with_retries(pool: &Pool, max_attempts: u32) -> Result<Object> {
    Policy::database(max_attempts)
        .run(
            || "cannot get a database connection".to_string(),
            || pool.get(),
            |_| true,
            pool_message,
        )
        .await
        .map_err(|failed| Error::from(failed.error))
}
