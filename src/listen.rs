//! The HTTP listeners of `serve` and `watch`, bounded by what the process can afford. Every open
//! connection holds a file descriptor, and a process out of descriptors can open neither a
//! connection to PostgreSQL nor an output's file: 1,100 clients under `ulimit -n 1024` once left a
//! watcher without its database for eleven minutes. So:
//!
//! - connections are capped below the open-file limit, keeping descriptors for the process's own
//!   work (the database pool and LISTEN connections, outputs, store and CDN requests);
//! - a connection that does not send a complete request head within [`HEADER_TIMEOUT`] of opening,
//!   or of its previous answer, is dropped: a half-sent request and an idle keep-alive connection
//!   alike (hyper starts its header-read timer again whenever a connection goes idle);
//! - every 503 closes its connection (`Connection: close`), so a refused client does not keep it;
//! - a new connection past the cap takes the place of the one that has waited longest for a
//!   request (as nginx reuses its idle keep-alive connections when it runs out), so a client that
//!   asks for something, a `/health` probe say, gets in while others hold connections and say
//!   nothing; a connection in the middle of an answer (an event stream) is never closed for it;
//! - when every connection is in the middle of an answer, a few spare connections are each
//!   answered once, within a shorter timeout: the paths the caller names (`watch`'s `/health` and
//!   `/metrics`), and 503 for anything else; past those, a connection is closed as soon as it is
//!   accepted.
//!
//! Both listeners also answer alike here: a plain-text [`problem`], and a changes feed's document
//! ([`feed_document`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The error of a listener that could not take `address` (a port in use, an address this
/// machine does not have), one for `serve` and `watch` alike: the operating system refused, so
/// both exit 1, the code of every runtime failure, and say where another address is chosen.
pub fn cannot_listen(
    address: std::net::SocketAddr,
    serving: &str,
    choose: &str,
    source: std::io::Error,
) -> crate::error::Error {
    crate::error::Error::System {
        what: format!("cannot listen on {address} for {serving} (choose another with {choose})"),
        source,
    }
}

/// A plain-text answer of one line with `status`: how `serve` and `watch` alike say what a request
/// cannot have.
pub fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    let mut message = message.into();
    message.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

/// The answer to a request for a changes feed's document, which `serve` and `watch` both publish,
/// from the feed's `read` of it: the JSON with `cache_control`; 404 saying `missing` where the
/// feed has no such document; 500 with the error where it could not be read.
pub fn feed_document(
    read: crate::error::Result<Option<Vec<u8>>>,
    cache_control: &'static str,
    missing: String,
) -> Response {
    match read {
        Ok(Some(bytes)) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, cache_control),
            ],
            bytes,
        )
            .into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, missing),
        Err(err) => problem(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// How long a connection may take to send a complete request head, from its opening or from its
/// previous answer.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The same for a spare connection: it exists only while the cap is full, for one quick request.
const SPARE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections answered once each beyond the cap.
pub const SPARE_CONNECTIONS: usize = 16;
/// Connections served however low the open-file limit (with a warning): fewer serve no one.
const MIN_CONNECTIONS: usize = 16;
/// How long a newcomer waits for the seat of the connection it replaces.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// How often, at most, the log says that connections were refused.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// What a listener serves at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more go to the spare connections, then are closed.
    pub connections: usize,
    /// Paths a spare connection answers; it answers anything else 503.
    pub spare_paths: &'static [&'static str],
    /// How long a stop waits for the answers under way before it drops them.
    pub drain: Duration,
}

impl Limits {
    /// Connections capped below the open-file limit: `reserved` descriptors kept for the
    /// process's own work, and [`SPARE_CONNECTIONS`]. `command` names the listener in the warning
    /// given when the limit leaves fewer than [`MIN_CONNECTIONS`].
    pub fn below_open_file_limit(reserved: u64, command: &str) -> Limits {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let connections = connections_within(limit, reserved);
        if connections == MIN_CONNECTIONS {
            tracing::warn!(
                "{command}: the open-file limit {limit} leaves too few descriptors for clients \
                 beside the {reserved} kept for its own work; serving {MIN_CONNECTIONS} \
                 connections, which may leave it short of them (raise the limit with `ulimit -n` \
                 or the service's LimitNOFILE)"
            );
        }
        Limits {
            connections,
            spare_paths: &[],
            drain: Duration::ZERO,
        }
    }
}

/// The connection cap an open-file `limit` leaves beside `reserved` descriptors and the spares.
fn connections_within(limit: u64, reserved: u64) -> usize {
    let room = limit.saturating_sub(reserved.saturating_add(SPARE_CONNECTIONS as u64));
    // A semaphore counts at most this many, and a stop takes every seat back in one call.
    let most = Semaphore::MAX_PERMITS.min(u32::MAX as usize);
    usize::try_from(room)
        .unwrap_or(most)
        .clamp(MIN_CONNECTIONS, most)
}

/// Serves `app` on `listener` within `limits` until `stop` completes; then stops accepting, asks
/// each connection to close once its answer is sent, and waits up to `limits.drain` for them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let app = app.layer(axum::middleware::map_response(close_after_unavailable));
    let spare_paths = limits.spare_paths;
    let spare_app = app.clone().layer(axum::middleware::from_fn(
        move |request: Request, next: Next| only_paths(spare_paths, request, next),
    ));
    let seats = Arc::new(Semaphore::new(limits.connections));
    let spares = Arc::new(Semaphore::new(SPARE_CONNECTIONS));
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let mut refusals = Refusals::default();
    let waiting = Arc::new(Mutex::new(Waiting::default()));
    let spare_waiting = Arc::new(Mutex::new(Waiting::default()));
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let seat = match seats.clone().try_acquire_owned() {
            Ok(seat) => Some(seat),
            Err(_) => {
                refusals.note(limits.connections);
                take_place_of_oldest(&waiting, &seats).await
            }
        };
        let (app, timeout, keep_alive, among, seat) = match seat {
            Some(seat) => (app.clone(), HEADER_TIMEOUT, true, &waiting, seat),
            None => match spares.clone().try_acquire_owned() {
                // Not among those a newcomer may replace: that would free no seat under the cap.
                Ok(seat) => (
                    spare_app.clone(),
                    SPARE_HEADER_TIMEOUT,
                    false,
                    &spare_waiting,
                    seat,
                ),
                // Closed at once: the client sees its connection reset.
                Err(_) => continue,
            },
        };
        let connection = Connection {
            app,
            timeout,
            keep_alive,
            stop: stopped.clone(),
            place: Place::new(among),
            _seat: seat,
        };
        tokio::spawn(connection.serve(stream));
    }
    let _ = stopping.send(true);
    let all = u32::try_from(limits.connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.drain, seats.acquire_many(all)).await;
}

/// A seat under the cap, freed by closing the connection that has waited longest for a request;
/// `None` when none waits (every connection is in the middle of an answer).
async fn take_place_of_oldest(
    waiting: &Mutex<Waiting>,
    seats: &Arc<Semaphore>,
) -> Option<OwnedSemaphorePermit> {
    let oldest = lock(waiting).by_age.pop_first()?;
    oldest.1.notify_one();
    // Its task gives the seat back as soon as it runs: the connection is closed, not drained.
    // Bounded all the same, so the listener never waits on a connection that does not end.
    let seat = tokio::time::timeout(EVICTION_WAIT, seats.clone().acquire_owned()).await;
    seat.ok()?.ok()
}

/// One accepted connection and what it may do.
struct Connection {
    app: Router,
    timeout: Duration,
    keep_alive: bool,
    stop: tokio::sync::watch::Receiver<bool>,
    place: Arc<Place>,
    /// Its place under the cap (or among the spares), given back when it closes.
    _seat: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream) {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.timeout)
            .keep_alive(self.keep_alive);
        let inner = TowerToHyperService::new(self.app.clone());
        let place = self.place.clone();
        // A request makes the connection busy until its answer's body is sent (or dropped).
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            place.busy();
            let answering = inner.call(request);
            let place = place.clone();
            async move {
                let response = answering.await?;
                Ok::<_, Infallible>(response.map(|body| {
                    axum::body::Body::new(Answering {
                        body,
                        _place: WaitsAfter(place),
                    })
                }))
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!("HTTP connection ended: {err}");
                }
            }
            () = self.place.evicted.notified() => {}
            () = stopping(&mut self.stop) => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
        self.place.gone();
    }
}

/// The connections waiting for a request head (idle, or reading one), oldest first.
#[derive(Default)]
struct Waiting {
    next: u64,
    by_age: BTreeMap<u64, Arc<Notify>>,
}

fn lock(waiting: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    waiting
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One connection's entry among the [`Waiting`]: its key while it waits, and how to close it.
struct Place {
    waiting: Arc<Mutex<Waiting>>,
    /// `Some(key)` while it waits; `Err(())` once closed, so an answer dropped after the
    /// connection ended does not put it back.
    key: Mutex<Result<Option<u64>, ()>>,
    evicted: Arc<Notify>,
}

impl Place {
    /// A new connection, waiting for its first request.
    fn new(waiting: &Arc<Mutex<Waiting>>) -> Arc<Place> {
        let place = Arc::new(Place {
            waiting: waiting.clone(),
            key: Mutex::new(Ok(None)),
            evicted: Arc::new(Notify::new()),
        });
        place.waits();
        place
    }

    fn key(&self) -> std::sync::MutexGuard<'_, Result<Option<u64>, ()>> {
        self.key
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn waits(&self) {
        let mut key = self.key();
        let Ok(None) = *key else { return };
        let mut waiting = lock(&self.waiting);
        let next = waiting.next;
        waiting.next += 1;
        waiting.by_age.insert(next, self.evicted.clone());
        *key = Ok(Some(next));
    }

    fn busy(&self) {
        let mut key = self.key();
        if let Ok(Some(waited)) = *key {
            lock(&self.waiting).by_age.remove(&waited);
            *key = Ok(None);
        }
    }

    fn gone(&self) {
        self.busy();
        *self.key() = Err(());
    }
}

/// Puts its connection back among the waiting when dropped: its answer is sent.
struct WaitsAfter(Arc<Place>);

impl Drop for WaitsAfter {
    fn drop(&mut self) {
        self.0.waits();
    }
}

/// An answer's body, which marks its connection as waiting again once sent.
struct Answering {
    body: axum::body::Body,
    _place: WaitsAfter,
}

impl http_body::Body for Answering {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Completes when the listener stops (or is gone).
async fn stopping(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// A spare connection answers only `paths`: the listener is full.
async fn only_paths(paths: &'static [&'static str], request: Request, next: Next) -> Response {
    if paths.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::RETRY_AFTER, "10"),
        ],
        "this server has as many clients as its open-file limit allows; try again later\n",
    )
        .into_response()
}

/// A 503 ends its connection: a client refused for want of room must not keep holding some.
async fn close_after_unavailable(mut response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A failed `accept`: a client that left before it was accepted is nothing; anything else (the
/// process out of descriptors after all) is retried after a pause, not in a busy loop.
async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!("cannot accept an HTTP connection: {err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Connections past the cap, counted between log lines.
#[derive(Default)]
struct Refusals {
    since: u64,
    logged: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, cap: usize) {
        self.since += 1;
        if self
            .logged
            .is_some_and(|logged| logged.elapsed() < REFUSALS_LOGGED_EVERY)
        {
            return;
        }
        tracing::warn!(
            "{} HTTP connection(s) came past the cap of {cap} open connections: each took the \
             place of the connection that had waited longest for a request, or was answered 503 \
             or closed when none waited; the cap keeps file descriptors for the database and the \
             outputs (raise the open-file limit to serve more clients)",
            self.since
        );
        self.since = 0;
        self.logged = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_the_reserve_and_the_spares_below_the_open_file_limit() {
        assert_eq!(
            connections_within(1024, 256),
            1024 - 256 - SPARE_CONNECTIONS
        );
        assert_eq!(connections_within(100, 256), MIN_CONNECTIONS);
        assert_eq!(
            connections_within(u64::MAX, 256),
            Semaphore::MAX_PERMITS.min(u32::MAX as usize)
        );
    }
}
