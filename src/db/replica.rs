//! The read replica a shard renders from (`[database] replicas`): connected like the primary, named
//! in every error by its place in the list and its host (never its password), and waited for after
//! the run wrote on the primary, so the tiles it renders see what was written.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_postgres::types::Type;

use super::conninfo::{self, ConnInfo};
use crate::config::DatabaseConfig;
use crate::error::{pg_message, Error, Result};

/// How often the replica's replay position is read while waiting for it.
const POLL: Duration = Duration::from_millis(25);

/// A connected replica.
pub struct Replica {
    /// Its pool, which renders, probes and counts rows.
    pub pool: Pool,
    /// `replica I (user@host:port/database)`, as errors name it.
    pub name: String,
    /// Whether it is a hot standby (in recovery); a server that is not is used as it is.
    pub standby: bool,
}

/// Checks that every entry of `database.replicas` is a connection string oar-tiles can use, so a
/// typo fails every shard, not only the one it would have served.
pub fn check_all(database: &DatabaseConfig) -> Result<()> {
    for (index, url) in database.replicas.iter().enumerate() {
        ConnInfo::resolve(url, &conninfo::process_env)
            .map_err(|err| replica_setting(index, err))?;
    }
    Ok(())
}

impl Replica {
    /// Connects a pool of at most `size` connections to replica `index` of `database.replicas`,
    /// with the same libpq conventions and settings as the primary, and checks it is a copy of the
    /// primary (same system identifier), as the run's snapshot must be of the primary's
    /// transactions.
    pub async fn connect(
        database: &DatabaseConfig,
        index: usize,
        size: usize,
        primary: &Pool,
    ) -> Result<Replica> {
        let url = database.replicas.get(index).ok_or_else(|| {
            Error::setting(
                "database.replicas",
                format!("database.replicas has no entry {index}"),
            )
        })?;
        let target = ConnInfo::resolve(url, &conninfo::process_env)
            .map_err(|err| replica_setting(index, err))?
            .target();
        let name = format!("replica {index} ({target})");
        let config = DatabaseConfig {
            url: url.clone(),
            url_from_env: false,
            ..database.clone()
        };
        let pool = super::connect(&config, size)
            .await
            .map_err(|err| match err {
                Error::Connect { message, .. } => Error::Connect {
                    target: name.clone(),
                    message,
                },
                err @ (Error::Usage(_) | Error::Setting { .. }) => replica_setting(index, err),
                other => other,
            })?;
        let failed = |what: &str, err: tokio_postgres::Error| Error::Connect {
            target: name.clone(),
            message: format!("{what}: {}", pg_message(&err)),
        };
        let client = pool.get().await.map_err(|err| Error::Connect {
            target: name.clone(),
            message: crate::error::pool_message(&err),
        })?;
        let row = client
            .query_typed_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|e| failed("cannot ask whether it is a standby", e))?;
        let standby: bool = row.get(0);
        let theirs = system_identifier(&client).await;
        let ours = match primary.get().await {
            Ok(client) => system_identifier(&client).await,
            Err(_) => None,
        };
        if let (Some(theirs), Some(ours)) = (theirs, ours) {
            if theirs != ours {
                return Err(Error::setting(
                    format!("database.replicas[{index}]"),
                    format!(
                        "{name} is not a copy of the primary (system identifier {theirs}, the \
                     primary's is {ours}): a replica must be a physical standby of `url`, or \
                     the primary itself"
                    ),
                ));
            }
        }
        tracing::info!(
            "rendering from {name}{}",
            if standby {
                ", a hot standby"
            } else {
                ", which is not in recovery (taken to be the primary itself)"
            }
        );
        Ok(Replica {
            pool,
            name,
            standby,
        })
    }

    /// Waits until the replica has replayed the primary's WAL up to its current position, so what
    /// the run wrote there (cluster cells) and every commit the run's snapshot counts as seen are
    /// visible to the queries that follow; fails naming the replica after `timeout`. Nothing to wait
    /// for on a server that is not in recovery.
    pub async fn catch_up(&self, primary: &Pool, timeout: Duration) -> Result<()> {
        if !self.standby {
            return Ok(());
        }
        // The insert position, not the write position `pg_current_wal_lsn()`: with
        // `synchronous_commit = off` a commit returns before its record is written, and waiting
        // for the write position could then pass before the standby has that commit.
        let at_primary: String = {
            let client = super::get(primary).await?;
            client
                .query_typed_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await?
                .get(0)
        };
        let client = super::get(&self.pool).await?;
        let started = Instant::now();
        loop {
            let row = client
                .query_typed_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, true),
                            pg_last_wal_replay_lsn()::text",
                    &[(&at_primary, Type::TEXT)],
                )
                .await
                .map_err(|err| Error::Connect {
                    target: self.name.clone(),
                    message: format!("cannot read its replay position: {}", pg_message(&err)),
                })?;
            if row.get::<_, bool>(0) {
                tracing::debug!(
                    "{} replayed the primary's WAL up to {at_primary} after {:?}",
                    self.name,
                    started.elapsed()
                );
                return Ok(());
            }
            if started.elapsed() >= timeout {
                let replayed: Option<String> = row.get(1);
                return Err(Error::Connect {
                    target: self.name.clone(),
                    message: format!(
                        "it has not replayed the primary's WAL up to {at_primary} within {} \
                         (it stands at {}): is replication running? the wait is bounded by \
                         database.statement_timeout",
                        humantime::format_duration(timeout),
                        replayed.as_deref().unwrap_or("no position")
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The server's system identifier, shared by a primary and its physical standbys; `None` when it
/// cannot be read (the function may be revoked), which skips the check.
async fn system_identifier(client: &deadpool_postgres::Client) -> Option<i64> {
    match client
        .query_typed_one("SELECT system_identifier FROM pg_control_system()", &[])
        .await
    {
        Ok(row) => Some(row.get(0)),
        Err(err) => {
            tracing::debug!("cannot read the system identifier: {}", pg_message(&err));
            None
        }
    }
}

/// A replica entry's setting error, naming the entry.
fn replica_setting(index: usize, err: Error) -> Error {
    let setting = format!("database.replicas[{index}]");
    Error::setting(&setting, format!("{setting}: {err}"))
}
