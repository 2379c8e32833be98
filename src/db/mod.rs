//! The bounded pool of PostgreSQL connections every renderer shares, reached the way libpq reaches
//! a server: [`conninfo`] resolves the target (URL, `key=value`, environment, `~/.pgpass`),
//! [`tls`] secures it with libpq's sslmodes; a sharded run's read replica is a [`Replica`].

pub mod conninfo;
mod io;
mod pgpass;
mod quote;
mod replica;
pub mod tls;
mod wait;
mod watchdog;
pub use quote::{dollar_quote, quote_ident, quote_literal};
pub use wait::{get, stop_waits};

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};

use crate::config::{DatabaseConfig, PoolMode};
use crate::error::{pool_message, Error, Result};
use conninfo::{ConnInfo, SslMode};
pub use replica::{check_all as check_replicas, Replica};

/// The settings that decide a value's text form (`value::text`) and how text is read back as a
/// value: a partition's value travels as text, read by the tool and logged by the capture
/// triggers in the application's own sessions, so both sides pin them rather than inherit the
/// server's or a client's `DateStyle`, `TimeZone` or `extra_float_digits`.
pub const TEXT_FORM_SETTINGS: [(&str, &str); 4] = [
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "1"),
];

/// The session settings of a tile statement: generic plans (one plan per prepared statement, not
/// one per tile), no JIT (it costs more than it saves on small tile queries), the configured
/// statement timeout and [`TEXT_FORM_SETTINGS`]. Sent once per connection, or per transaction
/// behind a transaction pooler.
pub fn session_settings(database: &DatabaseConfig) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        (
            "statement_timeout",
            database.statement_timeout.as_millis().to_string(),
        ),
        ("plan_cache_mode", "force_generic_plan".to_string()),
        ("jit", "off".to_string()),
    ];
    settings.extend(
        TEXT_FORM_SETTINGS
            .iter()
            .map(|(name, value)| (*name, value.to_string())),
    );
    settings
}

/// Begins a transaction on `client` whose text forms are [`TEXT_FORM_SETTINGS`], whatever the
/// connection was opened with (behind a transaction pooler, startup options are not sent).
pub async fn text_form_transaction(
    client: &mut deadpool_postgres::Object,
) -> std::result::Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let settings: String = TEXT_FORM_SETTINGS
        .iter()
        .map(|(name, value)| format!("SET LOCAL {name} = {};", quote_literal(value)))
        .collect();
    transaction.batch_execute(&settings).await?;
    Ok(transaction)
}

/// The count a query returns given one text parameter `$1`, read with the tool's text forms.
pub async fn query_with_text_forms(
    pool: &Pool,
    sql: &str,
    value: &str,
) -> std::result::Result<i64, crate::error::DbError> {
    let mut client = pool.get().await?;
    let transaction = text_form_transaction(&mut client).await?;
    let row = transaction
        .query_typed_one(sql, &[(&value, tokio_postgres::types::Type::TEXT)])
        .await?;
    Ok(row.get(0))
}

/// Opens a pool of at most `size` connections and checks that one can be made.
pub async fn connect(database: &DatabaseConfig, size: usize) -> Result<Pool> {
    let info = ConnInfo::resolve(&database.url, &conninfo::process_env)?;
    let mut config = connection_config(&info, database);
    if database.pool_mode == PoolMode::Session {
        // A transaction pooler refuses startup options; there they are set per transaction.
        let ours: Vec<String> = session_settings(database)
            .iter()
            // Startup options split at spaces; a backslash keeps one inside a value.
            .map(|(name, value)| format!("-c {name}={}", value.replace(' ', "\\ ")))
            .collect();
        let options = match config.get_options() {
            Some(theirs) => format!("{theirs} {}", ours.join(" ")),
            None => ours.join(" "),
        };
        config.options(&options);
    }
    let connector = tls::connector(&info.tls)?;
    let pool = build(config.clone(), connector.clone(), size, database)?;
    match check(&pool).await {
        Ok(()) => Ok(pool),
        // `allow`: plain first, and TLS when the server turns a plain connection away.
        Err(PoolError::Backend(err)) if info.tls.mode == SslMode::Allow && err.code().is_some() => {
            tracing::debug!("a plain connection was refused, trying TLS (sslmode=allow)");
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let pool = build(config, connector, size, database)?;
            check(&pool)
                .await
                .map_err(|err| connect_error(&info, database, &err))?;
            Ok(pool)
        }
        Err(err) => Err(connect_error(&info, database, &err)),
    }
}

fn build(
    config: tokio_postgres::Config,
    connector: tokio_postgres_rustls::MakeRustlsConnect,
    size: usize,
    database: &DatabaseConfig,
) -> Result<Pool> {
    let target = conninfo::redacted_target(&config);
    let connect = io::OffThreadConnect {
        tls: connector,
        runtime: io::connection_runtime()?,
        silence: silence_bound(database),
        settings: SILENCE_SETTINGS.into(),
    };
    let manager = Manager::from_connect(
        config,
        connect,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(database.connect_timeout + Duration::from_secs(1)))
        .wait_timeout(Some(database.pool_wait_timeout))
        .build()
        .map_err(|err| Error::Connect {
            target,
            message: err.to_string(),
        })
}

/// The settings that make up [`silence_bound`], as its error names them.
const SILENCE_SETTINGS: &str = "[database] statement_timeout plus [database] answer_margin";

/// How long a server may stay silent after a request: longer than any statement it runs, so a
/// server that answers, even with its own timeout, always does so first.
fn silence_bound(database: &DatabaseConfig) -> Duration {
    database.statement_timeout + database.answer_margin
}

/// The target's settings with the tool's defaults where the connection string leaves them out:
/// the connect timeout, and TCP keepalives that notice a vanished peer within about a minute
/// rather than the kernel's two hours (libpq's keys `keepalives_idle`, `keepalives_interval`,
/// `keepalives_retries` and `tcp_user_timeout` in the string win).
fn connection_config(info: &ConnInfo, database: &DatabaseConfig) -> tokio_postgres::Config {
    let mut config = info.config.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(database.connect_timeout);
    }
    // tokio-postgres's own default idle time, which a string cannot ask for by name.
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(Duration::from_secs(30));
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(Duration::from_secs(10));
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(60));
    }
    config
}

async fn check(pool: &Pool) -> std::result::Result<(), PoolError> {
    let client = pool.get().await?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(PoolError::Backend)?;
    Ok(())
}

/// One line naming the server and what failed, with a hint where the cause is a known one.
fn connect_error(info: &ConnInfo, database: &DatabaseConfig, err: &PoolError) -> Error {
    let host_port = conninfo::host_port(&info.config);
    let mut message = match err {
        PoolError::Backend(pg) => tls::describe_failure(pg, &host_port, info.tls.mode)
            .unwrap_or_else(|| pool_message(err)),
        other => pool_message(other),
    };
    if message.contains("unsupported startup parameter") && database.pool_mode == PoolMode::Session
    {
        message.push_str(
            " (a connection pooler such as PgBouncer in transaction mode? set pool_mode = \
             \"transaction\" in [database])",
        );
    }
    if message.contains("password missing") {
        message.push_str(
            " (the server asks for a password and none was given: put it in the URL, in \
             PGPASSWORD, or in ~/.pgpass with mode 0600)",
        );
    }
    if database.url_from_env {
        // The config's own `url` was never tried: an operator reading it would look in vain.
        message.push_str("; this URL came from DATABASE_URL, which overrides database.url");
    }
    Error::Connect {
        target: info.target(),
        message,
    }
}

/// A session connection of its own that LISTENs on a channel: notifications need a session, which
/// neither a pooled connection nor a transaction pooler keeps.
pub struct Listener {
    _client: tokio_postgres::Client,
    /// When each notification arrived; closed once the connection is gone.
    pub notifications: tokio::sync::mpsc::UnboundedReceiver<std::time::Instant>,
}

impl Listener {
    /// Connects to `database.listen_url` (else `database.url`) as libpq would, and LISTENs on
    /// `channel`.
    pub async fn connect(database: &DatabaseConfig, channel: &str) -> Result<Listener> {
        use futures::StreamExt;
        let url = database.listen_url.as_deref().unwrap_or(&database.url);
        let info = ConnInfo::resolve(url, &conninfo::process_env)?;
        let config = connection_config(&info, database);
        let connector = tls::connector(&info.tls)?;
        let opened = io::connect_watched(
            &config,
            connector,
            silence_bound(database),
            SILENCE_SETTINGS.into(),
        );
        let (client, mut connection) = tokio::time::timeout(database.connect_timeout, opened)
            .await
            .map_err(|_| Error::Connect {
                target: info.target(),
                message: format!(
                    "no answer within {}: raise [database] connect_timeout if the server is only \
                     slow",
                    humantime::format_duration(database.connect_timeout)
                ),
            })?
            .map_err(|err| connect_error(&info, database, &PoolError::Backend(err)))?;
        let (sender, notifications) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                        if sender.send(std::time::Instant::now()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(
                            "the LISTEN connection ended: {}",
                            crate::error::pg_message(&err)
                        );
                        break;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
            .await
            .map_err(crate::error::DbError::during(format!(
                "LISTEN on {channel}"
            )))?;
        Ok(Listener {
            _client: client,
            notifications,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_never_shows_the_password() {
        let info =
            ConnInfo::resolve("postgresql://oar:s3cret@db.example:6543/tiles", &|_| None).unwrap();
        let target = info.target();
        assert_eq!(target, "oar@db.example:6543/tiles");
        assert!(!target.contains("s3cret"));
    }
}
