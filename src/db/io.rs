//! Where the pooled connections' own work runs: reading the socket, TLS, and parsing the server's
//! messages. tokio-postgres does that in a task per connection, which deadpool spawns on the runtime
//! that asks for the connection: the command's single-threaded runtime, whose one thread also
//! drives every render. Measured on a 100k-facility z0-14 seed, that thread carried about half of
//! the tool's CPU, so one process could keep only about seven database cores busy. Here each
//! connection's task runs on a multi-threaded runtime of its own, whose threads scale with the
//! client's cores; the renders still see the same `Client` and the same pipelining.

use std::sync::Mutex;

use deadpool_postgres::Connect;
use futures::future::BoxFuture;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The runtime the connections' tasks run on, started on first use and kept for the process's life
/// (a pool may outlive the runtime of the command that made it, as in tests).
pub(super) fn connection_runtime() -> Result<Handle> {
    static RUNTIME: Mutex<Option<Handle>> = Mutex::new(None);
    let mut started = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(handle) = started.as_ref() {
        return Ok(handle.clone());
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("oar-tiles-db")
        .enable_all()
        .build()
        .map_err(|source| Error::System {
            what: "cannot start the database connections' threads".into(),
            source,
        })?;
    // Never dropped: dropping a runtime inside another one's task is refused, and the process
    // ends with it anyway.
    let runtime: &'static Runtime = Box::leak(Box::new(runtime));
    *started = Some(runtime.handle().clone());
    Ok(runtime.handle().clone())
}

/// Connects as tokio-postgres does, but on the connection runtime: the socket belongs to its I/O
/// driver, and the task that then drives the connection runs on its threads.
pub(super) struct OffThreadConnect {
    pub(super) tls: MakeRustlsConnect,
    pub(super) runtime: Handle,
}

impl Connect for OffThreadConnect {
    fn connect(
        &self,
        config: &Config,
    ) -> BoxFuture<'_, std::result::Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let tls = self.tls.clone();
        let config = config.clone();
        Box::pin(async move {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let task = self.runtime.spawn(async move {
                match config.connect(tls).await {
                    Ok((client, connection)) => {
                        // Nobody waits any more (the pool's create timeout passed): dropping
                        // the client ends the connection below.
                        if sender.send(Ok(client)).is_ok() {
                            if let Err(err) = connection.await {
                                tracing::debug!("connection ended: {err}");
                            }
                        }
                    }
                    Err(err) => {
                        let _ = sender.send(Err(err));
                    }
                }
            });
            match receiver.await {
                Ok(Ok(client)) => Ok((client, task)),
                Ok(Err(err)) => Err(err),
                // The task ended without an answer: it panicked, and the panic is a bug to see.
                Err(_) => match task.await {
                    Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                    _ => unreachable!("the connection runtime is never shut down"),
                },
            }
        })
    }
}
