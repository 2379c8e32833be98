//! The bounded pool of PostgreSQL connections every renderer shares.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

use crate::config::DatabaseConfig;
use crate::error::{pg_message, pool_message, Error, Result};

/// `user@host:port/database` of a connection URL: everything but the password.
pub fn redacted_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or("");
    format!("{user}{host}:{port}/{dbname}")
}

/// Parses the database URL, with `PGPASSWORD` filling in a missing password.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|err| {
        // The parser's message never repeats the URL, so no password can leak through it.
        Error::Usage(format!("the database URL is not valid: {err}"))
    })?;
    if config.get_password().is_none() {
        if let Ok(password) = std::env::var("PGPASSWORD") {
            config.password(password);
        }
    }
    Ok(config)
}

/// Opens a pool of at most `size` connections and checks that one can be made.
///
/// Each session uses generic plans (one plan per prepared statement, not one per tile), no JIT (it
/// costs more than it saves on small tile queries), and the configured statement timeout.
pub async fn connect(database: &DatabaseConfig, size: usize) -> Result<Pool> {
    let mut config = parse_url(&database.url)?;
    let target = redacted_target(&config);
    let options = format!(
        "-c statement_timeout={} -c plan_cache_mode=force_generic_plan -c jit=off",
        database.statement_timeout.as_millis()
    );
    config
        .options(&options)
        .application_name("oar-tiles")
        .connect_timeout(database.connect_timeout);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(database.connect_timeout + Duration::from_secs(1)))
        .build()
        .map_err(|err| Error::Connect {
            target: target.clone(),
            message: err.to_string(),
        })?;
    let client = pool.get().await.map_err(|err| Error::Connect {
        target: target.clone(),
        message: pool_message(&err),
    })?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|err| Error::Connect {
            target,
            message: pg_message(&err),
        })?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_never_shows_the_password() {
        let config = parse_url("postgresql://oar:s3cret@db.example:6543/tiles").unwrap();
        let target = redacted_target(&config);
        assert_eq!(target, "oar@db.example:6543/tiles");
        assert!(!target.contains("s3cret"));
    }

    #[test]
    fn a_malformed_url_does_not_echo_the_password() {
        let err = parse_url("postgresql://oar:s3cret@db:notaport/tiles")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
