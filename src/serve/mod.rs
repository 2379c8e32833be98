//! `oar-tiles serve`: shows outputs in a browser before they go to a CDN. Each output is one tileset,
//! read through [`OutputReader`] (the reader `inspect` uses), never written. The page is MapLibre GL
//! JS, vendored into the binary so that it works with no network at all.
//!
//! Routes: `/` the page, `/index.json` the tilesets, `/{tileset}/tiles.json` a TileJSON whose tile
//! URLs are absolute under the request's `Host`, `/{tileset}/stats.json` the per-zoom figures of
//! `inspect` with the tiles over the size budget, `/{tileset}/{z}/{x}/{y}.pbf` the stored bytes
//! (204 when the output holds no such tile), `/{tileset}/changes/head.json` and
//! `/{tileset}/changes/N.json` the output's changes feed (`coordination::feed`), which the page follows to
//! refresh changed tiles in place (with `live.js`, `/assets/oar-tiles-live.js`: by `watch`'s events
//! when `--watch` names its listener), `/assets/…` the vendored files and that module. Every route answers
//! only requests naming an allowed `Host` ([`host`]).

mod host;
mod tile;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, uri::Authority, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::config::StoreConfig;
use crate::coordination::feed::{self, FeedStore};
use crate::error::{Error, Result};
use crate::inspect;
use crate::listen::{self, problem, Limits};
use crate::sink::{self, OutputReader, OutputTarget};
use crate::tile::TileCoord;
pub use host::{AllowedHosts, PublicHost};

const PAGE: &str = include_str!("page.html");
const MAPLIBRE_JS: &[u8] = include_bytes!("assets/maplibre-gl.js");
const MAPLIBRE_CSS: &[u8] = include_bytes!("assets/maplibre-gl.css");
const MAPLIBRE_LICENSE: &[u8] = include_bytes!("assets/maplibre-gl-LICENSE.txt");
/// The changes feed's follower, an ES module the page imports and maps elsewhere can take.
const LIVE_MODULE: &[u8] = include_bytes!("live.js");
const LIVE_MODULE_NAME: &str = "oar-tiles-live.js";

/// File descriptors kept for everything but the listener's connections: the outputs' files and
/// their readers' pools, store requests.
const RESERVED_DESCRIPTORS: u64 = 64;
/// How long a stop waits for the answers under way.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Over-budget tiles listed per zoom, the largest first: enough to find every zoom's hot spots,
/// bounded for a huge output.
const OVER_BUDGET_LISTED: u64 = 100;

/// One output being served.
struct Tileset {
    /// The name in URLs.
    name: String,
    /// The output as given.
    output: String,
    reader: OutputReader,
    /// Where the output publishes its changes feed (which may not exist).
    feed: FeedStore,
    /// The metadata as read at start, for the name the config gives the tileset.
    metadata: Value,
    /// The figures `stats.json` answers, with the output's state and metadata they were read
    /// under: read on first request (listing a large S3 prefix must not delay start-up), and again
    /// once a run changed the output, so a page open beside `watch` follows it.
    stats: Mutex<Option<(String, Value)>>,
}

/// The outputs being served and what the page needs to judge them.
pub struct Server {
    tilesets: Vec<Tileset>,
    size_budget: u64,
    /// The listener of the `watch` keeping the outputs fresh (`--watch`), whose Server-Sent
    /// Events the page prefers to polling the feed.
    watch: Option<url::Url>,
}

impl Server {
    /// Opens every output read-only and reads its metadata; fails naming the output at fault.
    pub async fn open(
        outputs: &[String],
        store_settings: &StoreConfig,
        extension: &str,
        size_budget: u64,
    ) -> Result<Server> {
        let mut tilesets: Vec<Tileset> = Vec::new();
        for output in outputs {
            let target = OutputTarget::parse(output)?;
            let reader = OutputReader::open(output, &target, store_settings, extension).await?;
            let metadata = reader.metadata().await?;
            let feed = sink::kind_of(&target).home().feed(store_settings).await?;
            let mut name = url_name(metadata["name"].as_str().unwrap_or_default(), &target);
            let base = name.clone();
            let mut n = 1;
            while tilesets.iter().any(|t| t.name == name) {
                n += 1;
                name = format!("{base}-{n}");
            }
            tilesets.push(Tileset {
                name,
                output: output.clone(),
                reader,
                feed,
                metadata,
                stats: Mutex::default(),
            });
        }
        Ok(Server {
            tilesets,
            size_budget,
            watch: None,
        })
    }

    /// The same server, telling the page where `watch` streams the outputs' changes.
    pub fn following_watch(mut self, listener: Option<&url::Url>) -> Server {
        self.watch = listener.cloned();
        self
    }

    /// `watch`'s event stream of a tileset: `/changes/{tileset}/events` on its listener, the
    /// tileset named as the config names it (its metadata's `name`).
    fn events_url(&self, tileset: &Tileset) -> Option<String> {
        let name = tileset.metadata["name"].as_str().unwrap_or(&tileset.name);
        let mut url = self.watch.clone()?;
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .extend(["changes", name, "events"]);
        Some(url.to_string())
    }

    /// `tileset /NAME/ ← OUTPUT` for each tileset, for the start-up message.
    pub fn describe(&self) -> Vec<String> {
        self.tilesets
            .iter()
            .map(|t| format!("tileset /{}/ ← {}", t.name, t.output))
            .collect()
    }

    fn find(&self, name: &str) -> Option<&Tileset> {
        self.tilesets.iter().find(|t| t.name == name)
    }
}

/// A URL path segment for a tileset: its metadata name, else the output's file or prefix name,
/// limited to characters that need no escaping and kept clear of the page's own routes.
fn url_name(metadata_name: &str, target: &OutputTarget) -> String {
    let fallback = target.short_name();
    let raw = if metadata_name.trim().is_empty() {
        fallback
    } else {
        metadata_name.to_string()
    };
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('-').to_string();
    match cleaned.as_str() {
        "" => "tileset".into(),
        "assets" | "index" => format!("{cleaned}-tiles"),
        _ => cleaned,
    }
}

/// Binds the listening socket; a port of 0 takes any free port.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| crate::listen::cannot_listen(listen, "the map", "--listen", e))
}

/// Serves until SIGINT or SIGTERM, answering requests that name its listening address,
/// `localhost` or one of the `public` hosts.
pub async fn run(
    server: Server,
    listener: tokio::net::TcpListener,
    public: &[PublicHost],
) -> Result<()> {
    let address = listener.local_addr().map_err(|e| Error::File {
        path: "serve".into(),
        message: format!("cannot read the listening address: {e}"),
    })?;
    let hosts = AllowedHosts::new(address, public);
    let limits = Limits {
        drain: DRAIN,
        ..Limits::below_open_file_limit(RESERVED_DESCRIPTORS, "serve")
    };
    tracing::info!("serving at most {} connections", limits.connections);
    let app = router(Arc::new(server), Arc::new(hosts));
    crate::listen::serve(listener, app, limits, stopped()).await;
    Ok(())
}

async fn stopped() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn router(server: Arc<Server>, hosts: Arc<AllowedHosts>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/index.json", get(index))
        .route("/assets/{file}", get(asset))
        .route("/{tileset}/tiles.json", get(tilejson))
        .route("/{tileset}/stats.json", get(stats))
        .route("/{tileset}/changes/{file}", get(changes))
        .route("/{tileset}/{z}/{x}/{y}", get(tile))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::from_fn(refuse_traversal))
        .layer(axum::middleware::from_fn_with_state(
            hosts,
            refuse_other_hosts,
        ))
        .with_state(server)
}

/// Answers only requests naming a host the server is reached by: a page elsewhere that rebinds its
/// own name to this address gets nothing (not the local paths `/index.json` shows).
async fn refuse_other_hosts(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    match host {
        Some(host) if hosts.allows(&host) => next.run(request).await,
        Some(host) if host::is_host(&host) => problem(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer for host `{}`; start it with --public-host NAME to \
                 allow a name",
                host.escape_default()
            ),
        ),
        _ => problem(
            StatusCode::BAD_REQUEST,
            "a Host header naming host[:port] is needed",
        ),
    }
}

/// Refuses any path with a `..` segment, raw or percent-encoded, before routing: no route reads a
/// file by a name from the URL, and none ever should through a path like that.
async fn refuse_traversal(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    if decoded.split(['/', '\\']).any(|segment| segment == "..") {
        return problem(StatusCode::BAD_REQUEST, "path traversal refused");
    }
    next.run(request).await
}

fn json_response(value: &Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        value.to_string(),
    )
        .into_response()
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "maplibre-gl.js" => (MAPLIBRE_JS, "text/javascript; charset=utf-8"),
        "maplibre-gl.css" => (MAPLIBRE_CSS, "text/css; charset=utf-8"),
        "maplibre-gl-LICENSE.txt" => (MAPLIBRE_LICENSE, "text/plain; charset=utf-8"),
        LIVE_MODULE_NAME => (LIVE_MODULE, "text/javascript; charset=utf-8"),
        _ => return problem(StatusCode::NOT_FOUND, format!("no asset `{file}`")),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn index(State(server): State<Arc<Server>>) -> Response {
    let tilesets: Vec<Value> = server
        .tilesets
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "output": t.output,
                "tilejson": format!("/{}/tiles.json", t.name),
                "stats": format!("/{}/stats.json", t.name),
                "events": server.events_url(t),
            })
        })
        .collect();
    json_response(&json!({ "tilesets": tilesets, "size_budget": server.size_budget }))
}

async fn tilejson(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(tileset) = server.find(&name) else {
        return problem(StatusCode::NOT_FOUND, format!("no tileset `{name}`"));
    };
    // Map clients resolve tile URLs against the page, so they must be absolute, and only the
    // request knows the address the browser reached us at (a forwarded port, a host name).
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<Authority>().ok())
        // user@host would put credentials into every tile URL.
        .filter(|authority| !authority.as_str().contains('@'));
    let Some(host) = host else {
        return problem(
            StatusCode::BAD_REQUEST,
            "a Host header naming host[:port] is needed to build the tile URLs",
        );
    };
    let url = format!("http://{host}/{}/{{z}}/{{x}}/{{y}}.pbf", tileset.name);
    // Read now, not at start: a run may have changed the zooms or bounds since.
    match tileset.reader.metadata().await {
        Ok(metadata) => json_response(&tilejson_document(&tileset.name, &metadata, &url)),
        Err(e) => failed(&e),
    }
}

/// A TileJSON 3.0 document from whatever metadata the output has (MBTiles rows, a TileJSON file,
/// PMTiles metadata and header).
fn tilejson_document(name: &str, metadata: &Value, url: &str) -> Value {
    let number = |value: &Value| match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let zoom = |key: &str, default: u8| {
        number(&metadata[key])
            .or_else(|| number(&metadata["pmtiles"][key]))
            .filter(|z| (0.0..=f64::from(crate::tile::MAX_ZOOM)).contains(z))
            .map_or(default, |z| z as u8)
    };
    let (minzoom, maxzoom) = (zoom("minzoom", 0), zoom("maxzoom", 14));
    let bounds = inspect::bounds(metadata)
        .filter(|b| b.len() == 4)
        .unwrap_or_else(|| vec![-180.0, -85.051_128_78, 180.0, 85.051_128_78]);
    let center: Vec<f64> = match &metadata["center"] {
        Value::Array(values) => values.iter().filter_map(number).collect(),
        Value::String(text) => text
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect(),
        _ => Vec::new(),
    };
    let center = if center.len() == 3 {
        center
    } else {
        vec![
            (bounds[0] + bounds[2]) / 2.0,
            (bounds[1] + bounds[3]) / 2.0,
            f64::from(minzoom.max(maxzoom.min(2))),
        ]
    };
    let layers = metadata
        .get("vector_layers")
        .or_else(|| metadata.get("json").and_then(|j| j.get("vector_layers")))
        .cloned()
        .unwrap_or_else(|| json!([]));
    let mut document = json!({
        "tilejson": "3.0.0",
        "name": metadata["name"].as_str().unwrap_or(name),
        "scheme": "xyz",
        "tiles": [url],
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": bounds,
        "center": center,
        "vector_layers": layers,
    });
    for key in ["description", "attribution"] {
        if let Some(text) = metadata[key].as_str() {
            document[key] = json!(text);
        }
    }
    document
}

/// A document of the output's changes feed: the head, which changes with every publication
/// (kept one second), or a segment, which never changes.
async fn changes(
    State(server): State<Arc<Server>>,
    Path((name, file)): Path<(String, String)>,
) -> Response {
    let Some(tileset) = server.find(&name) else {
        return problem(StatusCode::NOT_FOUND, format!("no tileset `{name}`"));
    };
    let cache_control = match feed::document_named(&file) {
        Some(feed::Document::Head) => "public, max-age=1",
        Some(feed::Document::Segment) => feed::SEGMENT_CACHE_CONTROL,
        None => return problem(StatusCode::NOT_FOUND, format!("no feed document `{file}`")),
    };
    let missing = format!("the changes feed of `{name}` has no `{file}`");
    listen::feed_document(tileset.feed.read(&file).await, cache_control, missing)
}

async fn stats(State(server): State<Arc<Server>>, Path(name): Path<String>) -> Response {
    let Some(tileset) = server.find(&name) else {
        return problem(StatusCode::NOT_FOUND, format!("no tileset `{name}`"));
    };
    match tileset.current_stats(server.size_budget).await {
        Ok(stats) => json_response(&stats),
        Err(e) => failed(&e),
    }
}

impl Tileset {
    /// The output's per-zoom figures and its tiles over `budget`, read again only when the
    /// output's state, metadata or feed head changed since they were last read: a run lists its
    /// tiles in the feed as it stores them, before its end records the state.
    async fn current_stats(&self, budget: u64) -> Result<Value> {
        let metadata = self.reader.metadata().await?;
        let head = self.feed.read(feed::HEAD).await.ok().flatten();
        let version = format!(
            "{:?} {metadata} {}",
            self.reader.state().await?,
            String::from_utf8_lossy(head.as_deref().unwrap_or_default())
        );
        let mut cached = self.stats.lock().await;
        if let Some((read_under, stats)) = cached.as_ref() {
            if *read_under == version {
                return Ok(stats.clone());
            }
        }
        let sizes = self.reader.tile_sizes().await?;
        let mut over: Vec<(TileCoord, u64)> = sizes
            .iter()
            .filter(|(_, bytes)| *bytes > budget)
            .copied()
            .collect();
        let total = over.len();
        over.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
        let mut per_zoom: BTreeMap<u8, u64> = BTreeMap::new();
        over.retain(|(tile, _)| {
            let seen = per_zoom.entry(tile.z()).or_default();
            *seen += 1;
            *seen <= OVER_BUDGET_LISTED
        });
        let inventory = inspect::inventory(&self.output, metadata, sizes);
        let stats = json!({
            "inventory": inventory,
            "size_budget": budget,
            "over_budget_total": total,
            "over_budget_per_zoom": per_zoom,
            "over_budget": over
                .iter()
                .map(|(tile, bytes)| json!({ "tile": tile.to_string(), "bytes": bytes }))
                .collect::<Vec<_>>(),
        });
        *cached = Some((version, stats.clone()));
        Ok(stats)
    }
}

fn failed(error: &Error) -> Response {
    tracing::warn!("{error}");
    problem(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

async fn tile(
    State(server): State<Arc<Server>>,
    Path((name, z, x, y)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(tileset) = server.find(&name) else {
        return problem(StatusCode::NOT_FOUND, format!("no tileset `{name}`"));
    };
    let coord = match tile::parse_tile(&z, &x, &y) {
        Ok(coord) => coord,
        Err(bad) => return problem(StatusCode::BAD_REQUEST, bad.to_string()),
    };
    match tileset.reader.tile(coord).await {
        Ok(bytes) => tile::answer(bytes, &headers),
        Err(e) => failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tileset_names_fit_in_a_url_and_miss_the_pages_routes() {
        let mbtiles = OutputTarget::parse("/tmp/a b.mbtiles").unwrap();
        assert_eq!(url_name("", &mbtiles), "a-b");
        assert_eq!(url_name("Facilities (v3)", &mbtiles), "Facilities--v3");
        assert_eq!(url_name("assets", &mbtiles), "assets-tiles");
        assert_eq!(url_name("../..", &mbtiles), "tileset");
        let s3 = OutputTarget::parse("s3://bucket/f/v3").unwrap();
        assert_eq!(url_name("", &s3), "v3");
    }

    #[test]
    fn tilejson_comes_from_mbtiles_rows_or_a_tilejson_file() {
        let mbtiles = json!({
            "name": "facilities", "minzoom": "0", "maxzoom": "9",
            "bounds": "-10,-20,30,40", "center": "10,10,2",
            "json": { "vector_layers": [{ "id": "sites" }] },
        });
        let document = tilejson_document("f", &mbtiles, "http://h:1/f/{z}/{x}/{y}.pbf");
        assert_eq!(document["tiles"][0], "http://h:1/f/{z}/{x}/{y}.pbf");
        assert_eq!(document["maxzoom"], 9);
        assert_eq!(document["bounds"], json!([-10.0, -20.0, 30.0, 40.0]));
        assert_eq!(document["center"], json!([10.0, 10.0, 2.0]));
        assert_eq!(document["vector_layers"][0]["id"], "sites");
        let none = tilejson_document("f", &Value::Null, "u");
        assert_eq!(none["name"], "f");
        assert_eq!(none["center"][2], 2.0);
    }
}
