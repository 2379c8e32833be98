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
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{Host, TargetSessionAttrs};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::watchdog::{Silence, Watchdog};
use crate::error::{Error, Result};

/// A connection's socket, watched.
type Watched = Watchdog<Box<dyn Stream>>;

/// A connection over a watched socket, TLS or not.
pub(super) type WatchedConnection =
    tokio_postgres::Connection<Watched, <MakeRustlsConnect as MakeTlsConnect<Watched>>::Stream>;

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

/// Connects as tokio-postgres does, but on the connection runtime (the socket belongs to its I/O
/// driver, and the task that then drives the connection runs on its threads) and through a
/// [`Watchdog`], so a server that goes silent breaks the connection instead of holding it.
pub(super) struct OffThreadConnect {
    pub(super) tls: MakeRustlsConnect,
    pub(super) runtime: Handle,
    /// How long the server may stay silent after a request.
    pub(super) silence: Duration,
    /// The settings that make up `silence`, for its error.
    pub(super) settings: String,
}

impl Connect for OffThreadConnect {
    fn connect(
        &self,
        config: &Config,
    ) -> BoxFuture<'_, std::result::Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let config = config.clone();
        Box::pin(async move {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let tls = self.tls.clone();
            let (silence, settings) = (self.silence, self.settings.clone());
            let task = self.runtime.spawn(async move {
                match connect_watched(&config, tls, silence, settings).await {
                    Ok((client, connection)) => {
                        // Nobody waits any more (the pool's create timeout passed): dropping
                        // the client ends the connection below.
                        if sender.send(Ok(client)).is_ok() {
                            if let Err(err) = connection.await {
                                warn_ended(&err);
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

/// A connection's end is news only when the watchdog ended it: the statements that waited on it
/// see just "connection closed", so the reason is told here.
pub(super) fn warn_ended(err: &tokio_postgres::Error) {
    let silent = std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
    if silent {
        tracing::warn!("{}", crate::error::pg_message(err));
    } else {
        tracing::debug!("connection ended: {err}");
    }
}

/// Any stream a connection may run over: TCP or a Unix socket.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// A connection whose socket is watched, opened like tokio-postgres opens one: each host in turn
/// (`hostaddr` before `host`), TCP keepalives and `tcp_user_timeout` as configured, and a server
/// skipped whose sessions are not what `target_session_attrs` asks for (`read-write` skips a
/// read-only one, `read-only` a writable one). When no socket opens at all,
/// tokio-postgres's own attempt reports why, in the words its errors always had.
pub(super) async fn connect_watched(
    config: &Config,
    tls: MakeRustlsConnect,
    bound: Duration,
    settings: String,
) -> std::result::Result<(Client, WatchedConnection), tokio_postgres::Error> {
    let mut tls = tls;
    let mut last = None;
    let mut unopened = None;
    for target in targets(config) {
        let socket = match open_socket(config, &target).await {
            Ok(socket) => socket,
            Err(err) => {
                unopened = Some(err);
                continue;
            }
        };
        let silence = Silence {
            bound,
            server: target.server(),
            settings: settings.clone(),
        };
        let Ok(tls) = MakeTlsConnect::<Watched>::make_tls_connect(&mut tls, &target.hostname);
        let raw: BoxFuture<'_, _> =
            Box::pin(config.connect_raw(Watchdog::new(socket, silence), tls));
        match raw.await {
            Ok((client, connection)) => {
                let wanted = config.get_target_session_attrs();
                if wanted == TargetSessionAttrs::Any {
                    return Ok((client, connection));
                }
                let (client, connection) = match session_fits(client, connection, wanted).await {
                    Ok(Some(pair)) => pair,
                    Ok(None) => continue,
                    Err(err) => {
                        last = Some(err);
                        continue;
                    }
                };
                return Ok((client, connection));
            }
            Err(err) => last = Some(err),
        }
    }
    match last {
        Some(err) => Err(err),
        None => Err(socket_error(config, unopened).await),
    }
}

/// Only tokio-postgres makes its errors: a stream that fails at once with the socket's error
/// turns it into one.
async fn socket_error(config: &Config, err: Option<std::io::Error>) -> tokio_postgres::Error {
    let err = err.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host to connect to")
    });
    let mut err = Some(err);
    loop {
        // A stream that fails every read and write never completes a startup.
        let raw: BoxFuture<'_, _> = Box::pin(config.connect_raw(Unopened(err.take()), NoTls));
        if let Err(err) = raw.await {
            return err;
        }
    }
}

/// The stream of [`socket_error`]: every read and write fails with the socket's error.
struct Unopened(Option<std::io::Error>);

impl Unopened {
    fn fail<T>(&mut self) -> Poll<std::io::Result<T>> {
        Poll::Ready(Err(self.0.take().unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotConnected, "no socket")
        })))
    }
}

impl AsyncRead for Unopened {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.get_mut().fail()
    }
}

impl AsyncWrite for Unopened {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().fail()
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().fail()
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One address to try: a TCP host (by `hostaddr` when given) or a Unix socket's directory.
struct Target {
    /// Where the socket goes: an IP or host name, or a directory.
    addr: Host,
    /// The name TLS checks the certificate against.
    hostname: String,
    port: u16,
}

impl Target {
    fn server(&self) -> String {
        match &self.addr {
            Host::Tcp(name) => format!("{name}:{}", self.port),
            Host::Unix(dir) => dir
                .join(format!(".s.PGSQL.{}", self.port))
                .display()
                .to_string(),
        }
    }
}

/// The hosts in the order tokio-postgres tries them.
fn targets(config: &Config) -> Vec<Target> {
    let (hosts, addrs, ports) = (
        config.get_hosts(),
        config.get_hostaddrs(),
        config.get_ports(),
    );
    (0..hosts.len().max(addrs.len()))
        .filter_map(|i| {
            let host = hosts.get(i);
            let addr = match addrs.get(i) {
                Some(ip) => Host::Tcp(ip.to_string()),
                None => host?.clone(),
            };
            let hostname = match host {
                Some(Host::Tcp(name)) => name.clone(),
                _ => String::new(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            Some(Target {
                addr,
                hostname,
                port,
            })
        })
        .collect()
}

/// The socket to `target`, with the connection's TCP settings: no delay, keepalives and
/// `tcp_user_timeout`, so a peer that vanished ends the connection too.
async fn open_socket(config: &Config, target: &Target) -> std::io::Result<Box<dyn Stream>> {
    let timeout = config.get_connect_timeout().copied();
    let dir = match &target.addr {
        Host::Tcp(name) => {
            let mut last = None;
            for addr in tokio::net::lookup_host((name.clone(), target.port)).await? {
                match within(timeout, tokio::net::TcpStream::connect(addr)).await {
                    Ok(stream) => {
                        tcp_settings(config, &stream)?;
                        return Ok(Box::new(stream));
                    }
                    Err(err) => last = Some(err),
                }
            }
            return Err(last.unwrap_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{name} has no address"),
                )
            }));
        }
        Host::Unix(dir) => dir,
    };
    let path = dir.join(format!(".s.PGSQL.{}", target.port));
    let stream = within(timeout, tokio::net::UnixStream::connect(path)).await?;
    Ok(Box::new(stream))
}

/// `opening`, failed as timed out past `timeout`.
async fn within<T>(
    timeout: Option<Duration>,
    opening: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    let Some(timeout) = timeout else {
        return opening.await;
    };
    tokio::time::timeout(timeout, opening)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out",
            ))
        })
}

fn tcp_settings(config: &Config, stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(stream);
    if let Some(timeout) = config.get_tcp_user_timeout() {
        socket.set_tcp_user_timeout(Some(*timeout))?;
    }
    if config.get_keepalives() {
        let mut keepalive = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
        if let Some(interval) = config.get_keepalives_interval() {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(retries) = config.get_keepalives_retries() {
            keepalive = keepalive.with_retries(retries);
        }
        socket.set_tcp_keepalive(&keepalive)?;
    }
    Ok(())
}

/// The connection, if its server's sessions are `wanted` (read-write or read-only), as libpq's
/// `target_session_attrs` asks.
async fn session_fits(
    client: Client,
    mut connection: WatchedConnection,
    wanted: TargetSessionAttrs,
) -> std::result::Result<Option<(Client, WatchedConnection)>, tokio_postgres::Error> {
    let answer = {
        // Boxed as `Send`: the compiler cannot prove it of the borrowing future by itself.
        let mut query: BoxFuture<'_, _> =
            Box::pin(client.simple_query("SHOW transaction_read_only"));
        tokio::select! {
            answer = &mut query => answer,
            ended = &mut connection => {
                ended?;
                query.await
            }
        }
    }?;
    let read_only = answer
        .iter()
        .any(|message| matches!(message, SimpleQueryMessage::Row(row) if row.get(0) == Some("on")));
    let fits = read_only == (wanted == TargetSessionAttrs::ReadOnly);
    Ok(fits.then_some((client, connection)))
}
