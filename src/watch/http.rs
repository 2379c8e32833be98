//! `/metrics` (Prometheus text), `/health` and the changes feeds (`super::feed`) for a running
//! watcher, on axum.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::shared::Shared;
use crate::error::Result;

/// The server, on a thread and runtime of its own: a cycle that keeps the watcher's thread busy
/// (planning a bulk change, writing thousands of tiles) must not leave `/health` unanswered, nor
/// event streams stalled. It stops, closing every connection, when this is dropped.
pub(super) struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds `address` and serves the endpoints in the background.
pub(super) async fn serve(address: SocketAddr, shared: Arc<Shared>) -> Result<Server> {
    let cannot = |e: std::io::Error| {
        crate::listen::cannot_listen(
            address,
            "/metrics and /health",
            "--listen or watch.listen",
            e,
        )
    };
    let listener = std::net::TcpListener::bind(address).map_err(cannot)?;
    listener.set_nonblocking(true).map_err(cannot)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(cannot)?;
    tracing::info!(
        "serving /metrics and /health on http://{address}, at most {} connections",
        shared.listener.connections
    );
    // A map's page comes from elsewhere (a CDN, `serve`): the feeds, which name only public
    // tiles, may be read by any page, as a CDN serves the static feed to any page.
    let feeds = Router::new()
        .route("/changes/{tileset}/events", get(super::feed::events))
        .route("/changes/{tileset}/{file}", get(super::feed::document))
        .layer(axum::middleware::map_response(readable_by_any_page));
    let limits = shared.listener;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .merge(feeds)
        .with_state(shared);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("watch-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(err) => return tracing::warn!("the /metrics server cannot start: {err}"),
                };
                let stopped = async {
                    let _ = stopped.await;
                };
                crate::listen::serve(listener, app, limits, stopped).await;
            });
        })
        .map_err(cannot)?;
    Ok(Server {
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        shared.metrics.text(),
    )
}

/// 200 when the database is reachable, the last cycle succeeded, no notified change has waited
/// for a cycle longer than `watch.max_change_wait` and none in an outbox longer than
/// `watch.max_outbox_age`; 503 otherwise, saying which.
async fn health(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    let database = shared.database_up.load(Ordering::Relaxed);
    let cycle = shared.cycle_ok.load(Ordering::Relaxed);
    let now = std::time::SystemTime::now();
    let stale: Vec<String> = shared
        .outbox_oldest
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .filter_map(|(output, made)| {
            let age = now.duration_since(*made).unwrap_or_default();
            (age > shared.max_outbox_age).then(|| format!("{output} ({} s)", age.as_secs()))
        })
        .collect();
    let overdue = shared.change_overdue();
    if database && cycle && stale.is_empty() && overdue.is_none() {
        return (StatusCode::OK, "ok\n".into());
    }
    let mut body = format!(
        "database reachable: {database}, last cycle succeeded: {cycle}, changes waiting for a CDN longer than {} s: {}\n",
        shared.max_outbox_age.as_secs(),
        if stale.is_empty() { "none".to_string() } else { stale.join(", ") }
    );
    if let Some(waited) = overdue {
        body.push_str(&format!(
            "a change has waited {} s and no cycle has covered it (over watch.max_change_wait, {} s): \
             a cycle hangs or cannot start; see the log\n",
            waited.as_secs(),
            shared.max_change_wait.as_secs()
        ));
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

/// `Access-Control-Allow-Origin: *`: a page of any origin may read the answer (an `EventSource`
/// or a `fetch` without credentials), as it may read the same feed from a CDN.
async fn readable_by_any_page(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
