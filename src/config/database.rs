//! The `[database]` table: how to reach PostgreSQL, checked key by key.

use std::ops::Range;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::duration_key;
use crate::error::{Error, Result};

/// Attempts per tile unless `max_attempts` says.
const DEFAULT_MAX_ATTEMPTS: u32 = 6;

/// How to reach PostgreSQL.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Database")]
pub(super) struct RawDatabase {
    /// PostgreSQL connection URL or libpq `key=value` string, with libpq's TLS settings (`sslmode`,
    /// `sslrootcert`, `sslcert`, `sslkey`). The `DATABASE_URL` environment variable overrides it;
    /// what it leaves out comes from `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
    /// `PGSSLMODE`, ... and `~/.pgpass`, as for psql; without it, from those alone. Keep secrets
    /// out of the file: passwords are never printed.
    url: Option<String>,
    /// Connections in the pool, which is also how many tiles render at once (`--concurrency`
    /// overrides it), 1 to 256. Default: the number of CPU cores here.
    pool_size: Option<usize>,
    /// Longest one tile's statement may run before PostgreSQL cancels it (a duration: "500ms",
    /// "30s", "2m").
    #[schemars(with = "Option<String>", extend("default" = "60s"), regex(pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+(\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+)*\s*$"))]
    statement_timeout: Option<Spanned<String>>,
    /// Longest a connection attempt may take (a duration). A `connect_timeout` in the database
    /// URL (or `PGCONNECT_TIMEOUT`) wins for the attempt itself, but the pool still gives up on a
    /// new connection at this key plus 1 s, so a longer timeout in the URL is cut there.
    #[schemars(with = "Option<String>", extend("default" = "10s"), regex(pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+(\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+)*\s*$"))]
    connect_timeout: Option<Spanned<String>>,
    /// Longest a task may wait for a free connection of the pool (a duration); past it the run
    /// fails with a message naming the pool's size, rather than hanging.
    #[schemars(with = "Option<String>", extend("default" = "5m"), regex(pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+(\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+)*\s*$"))]
    pool_wait_timeout: Option<Spanned<String>>,
    /// How much longer than `statement_timeout` the tool waits for the server to say anything
    /// after a request (a duration). Past it the connection counts as broken (a hung server or
    /// proxy, a partitioned network: TCP keepalives alone do not notice a proxy that answers them)
    /// and the statements on it fail, naming the server. Idle connections are never cut.
    #[schemars(with = "Option<String>", extend("default" = "10s"), regex(pattern = r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+(\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+)*\s*$"))]
    answer_margin: Option<Spanned<String>>,
    /// Attempts per tile before it counts as failed (1 to 20): dropped connections, a restarting
    /// server and statement timeouts are retried with exponential backoff.
    #[schemars(extend("default" = DEFAULT_MAX_ATTEMPTS), range(min = 1, max = 20))]
    max_attempts: Option<u32>,
    /// `transaction` when a transaction pooler (PgBouncer with `pool_mode = transaction`) stands
    /// between oar-tiles and PostgreSQL: no prepared statement or session setting outlives a
    /// transaction then.
    #[schemars(extend("default" = "session"))]
    pool_mode: Option<PoolMode>,
    /// Where `watch` LISTENs for change notifications when `url` goes through a transaction
    /// pooler, which cannot deliver them: a direct URL to the primary. Default: a connection of
    /// its own to `url`.
    listen_url: Option<String>,
    /// Read replicas a sharded run renders from: shard I reads from replica I mod R, while
    /// everything that writes stays on `url`. Same libpq rules as `url`. Default: none (every shard
    /// uses `url`).
    replicas: Option<Vec<String>>,
}

/// How the server side pools connections, which decides where session settings and statements live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A connection is one server session (direct, or PgBouncer in session mode): settings are sent
    /// once at connection time and tile statements are prepared once per zoom.
    #[default]
    Session,
    /// A transaction pooler (PgBouncer `pool_mode = transaction`): consecutive transactions may run
    /// in different server sessions, so no named statement or session setting is relied upon.
    Transaction,
}

/// How to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Connection URL or libpq `key=value` string; empty when the `PG*` environment alone says where
    /// to connect. May hold a password, so it is never printed as is.
    pub url: String,
    /// Whether `url` came from the `DATABASE_URL` environment variable rather than the config: a
    /// connection error says so, since the config's own `url` was then never tried.
    pub url_from_env: bool,
    /// Whether a transaction pooler stands between us and the server.
    pub pool_mode: PoolMode,
    /// Connections in the pool; also the default number of tiles rendered at once.
    pub pool_size: usize,
    /// Longest one tile's statement may run before it is cancelled.
    pub statement_timeout: Duration,
    /// Longest a wait for a free pooled connection may last.
    pub pool_wait_timeout: Duration,
    /// Longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// How much longer than `statement_timeout` a server may stay silent after a request before
    /// its connection counts as broken.
    pub answer_margin: Duration,
    /// Attempts per tile before it is reported as failed (transient errors only).
    pub max_attempts: u32,
    /// Where `watch` holds its LISTEN session when `url` goes through a transaction pooler, which
    /// cannot deliver notifications; `None`: a connection of its own to `url`.
    pub listen_url: Option<String>,
    /// Servers a sharded run renders from, as URLs or `key=value` strings like `url` (so they may
    /// hold a password too, and are never printed as is): shard I reads from replica I mod R.
    /// Empty: every shard renders from `url`.
    pub replicas: Vec<String>,
}

/// The `[database]` table checked, with `DATABASE_URL` (`env_url`) applied.
pub(super) fn resolve_database(
    raw: RawDatabase,
    env_url: Option<String>,
    at: &impl Fn(Option<Range<usize>>, String) -> Error,
) -> Result<DatabaseConfig> {
    let url_from_env = env_url.is_some();
    // Without a URL, libpq's environment (PGHOST, PGUSER, ...) says where to connect, as for psql.
    let url = env_url.or(raw.url).unwrap_or_default();
    let duration = |value: Option<Spanned<String>>, key: &str, default: Duration| {
        duration_key(value, &format!("database.{key}"), default, at)
    };
    let max_attempts = raw.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=20).contains(&max_attempts) {
        return Err(at(
            None,
            format!("database.max_attempts {max_attempts} must lie in 1..=20"),
        ));
    }
    let replicas = raw.replicas.unwrap_or_default();
    if let Some(index) = replicas.iter().position(|r| r.trim().is_empty()) {
        // `url` may be empty to mean the PG* environment; a replica so given would be the primary.
        return Err(at(
            None,
            format!(
                "database.replicas[{index}] is empty: give each replica a URL or key=value string"
            ),
        ));
    }
    let pool_size = raw.pool_size.unwrap_or_else(default_pool_size);
    if !(1..=256).contains(&pool_size) {
        return Err(at(
            None,
            format!("database.pool_size {pool_size} must lie in 1..=256"),
        ));
    }
    Ok(DatabaseConfig {
        url,
        url_from_env,
        pool_mode: raw.pool_mode.unwrap_or_default(),
        pool_size,
        statement_timeout: duration(
            raw.statement_timeout,
            "statement_timeout",
            Duration::from_secs(60),
        )?,
        connect_timeout: duration(
            raw.connect_timeout,
            "connect_timeout",
            Duration::from_secs(10),
        )?,
        pool_wait_timeout: duration(
            raw.pool_wait_timeout,
            "pool_wait_timeout",
            Duration::from_secs(300),
        )?,
        answer_margin: duration(raw.answer_margin, "answer_margin", Duration::from_secs(10))?,
        max_attempts,
        listen_url: raw.listen_url.filter(|u| !u.is_empty()),
        replicas,
    })
}

/// One connection per core: rendering is CPU-bound on the database side.
fn default_pool_size() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
