//! Waiting for a connection of the pool: bounded by `[database] pool_wait_timeout`, and ended by
//! the first SIGINT or SIGTERM, so a run whose connections are all busy (or lost) neither hangs
//! for ever nor ignores the operator's request to stop.

use deadpool_postgres::{Object, Pool, PoolError, TimeoutType};
use tokio::sync::watch;

use crate::error::{DbError, Error, Result};

/// Ends every wait for a pooled connection and every store request, now and later (with
/// [`Error::Stopped`], or an output error that exits as the signal): called when `signal` asks
/// the process to stop.
pub fn stop_waits(signal: &'static str) {
    crate::error::stop_signal().send_replace(Some(signal));
}

/// A connection of `pool`, or why none came: the wait timed out (naming the pool's size and the
/// setting that bounds it), the server refused, or a signal asked the run to stop.
pub async fn get(pool: &Pool) -> Result<Object> {
    get_unless(pool, crate::error::stop_signal().subscribe()).await
}

/// [`get`], ended by `stop` rather than the process's signals.
async fn get_unless(
    pool: &Pool,
    mut stop: watch::Receiver<Option<&'static str>>,
) -> Result<Object> {
    if let Some(signal) = *stop.borrow() {
        return Err(Error::Stopped { signal });
    }
    tokio::select! {
        got = pool.get() => got.map_err(|err| wait_error(pool, err)),
        signal = stop.wait_for(Option::is_some) => match signal {
            Ok(signal) => Err(Error::Stopped { signal: signal.unwrap_or("a signal") }),
            // The sender lives for the process; without it, wait for the pool alone.
            Err(_) => pool.get().await.map_err(|err| wait_error(pool, err)),
        },
    }
}

fn wait_error(pool: &Pool, err: PoolError) -> Error {
    match err {
        PoolError::Timeout(TimeoutType::Wait) => {
            let status = pool.status();
            let waited = pool.timeouts().wait.unwrap_or_default();
            Error::Database(DbError::Unexpected(format!(
                "no connection of the pool came free within {} (its {} connection(s) were all \
                 busy): raise [database] pool_wait_timeout, or pool_size (--concurrency)",
                humantime::format_duration(waited),
                status.max_size
            )))
        }
        other => Error::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_ends_every_wait() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A server that takes the connection and never answers: the wait lasts until the stop.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let manager = deadpool_postgres::Manager::new(
            format!("host=127.0.0.1 port={port} user=nobody")
                .parse()
                .unwrap(),
            tokio_postgres::NoTls,
        );
        let pool = Pool::builder(manager)
            .max_size(1)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .unwrap();
        let (stop, receiver) = watch::channel(None);
        let got = runtime.block_on(async {
            let held = tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                stop.send_replace(Some("SIGTERM"));
                stop
            });
            let got = get_unless(&pool, receiver).await;
            drop(held);
            got
        });
        assert!(
            matches!(got, Err(Error::Stopped { signal: "SIGTERM" })),
            "{:?}",
            got.err()
        );
    }
}
