//! Rendering: one prepared statement per zoom, executed per tile on a bounded pool of connections.
//! The scheduler drives any [`Renderer`]; [`TilesetRenderer`] on its [`Connections`] is the PostGIS one.
//!
//! A tile's statement returns its MVT bytes and, per child, whether any source row lies inside the
//! child's buffered envelope for the layers of deeper zooms. That answer, not the emptiness of the
//! bytes, steers the pyramid walk: a geometry too small to survive `ST_AsMVTGeom` at one zoom may
//! appear at the next.

pub mod count;
pub mod source;
pub mod sql;

use std::future::Future;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use futures::TryStreamExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, RowStream};

use crate::config::{DatabaseConfig, PoolMode};
use crate::error::{pg_message, pool_message, DbError, Error, Result};
pub use crate::plan::Mode;
use crate::retry::Policy;
use crate::tile::{TileCoord, ZoomRange};
use source::LayerSource;
use sql::TileQuery;

/// Renders batches of tiles of one zoom. The scheduler drives it and never learns how tiles are made,
/// so its policies (batching, keep-going, deadlines, heavy tiles) can be tested with tiles from memory.
pub trait Renderer {
    /// Renders `tiles` (all of one zoom) in `mode`: one result per tile, in the same order. Each
    /// tile goes through `finish` as soon as it is complete, before the rest of its statement has
    /// arrived: the scheduler compresses it there, so a batch in flight holds its tiles' stored
    /// bytes rather than all of their result rows. A tile in several pieces goes through `finish`
    /// while its later pieces still arrive ([`Mvt::is_arriving`]), so it is never held whole.
    fn render_batch<T, F, Fut>(
        &self,
        tiles: &[TileCoord],
        mode: Mode,
        finish: &F,
    ) -> impl Future<Output = Vec<Result<T>>>
    where
        F: Fn(Rendered) -> Fut,
        Fut: Future<Output = T>;

    /// Estimated unclustered features at the top zoom, which decides how heavy tiles are scheduled.
    fn unclustered_rows(&self) -> f64;
}

/// The outcome of one tile's statement.
#[derive(Debug)]
pub struct Rendered {
    /// The tile.
    pub tile: TileCoord,
    /// Uncompressed MVT bytes; empty when the tile holds nothing (or was only probed).
    pub mvt: Mvt,
    /// Whether each child (in [`TileCoord::children`] order) may hold features.
    pub children: [bool; 4],
    /// Server time spent on the tile (for a batch, since the previous tile of it was done).
    pub elapsed: Duration,
}

/// A tile's MVT bytes where they arrived: in the result rows, piece by piece, so a tile of tens of
/// megabytes is never copied into one buffer before it is compressed. A large tile's later pieces
/// may still be arriving when it is handed on (see [`Mvt::for_each_piece`]).
#[derive(Debug, Default)]
pub struct Mvt {
    held: Vec<Piece>,
    /// The pieces after the held ones, in order, while they arrive; closed after the last.
    arriving: Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
}

#[derive(Debug)]
enum Piece {
    Row(Row),
    Bytes(Vec<u8>),
}

/// Column of the MVT piece in a tile statement's rows.
const CHUNK_COLUMN: usize = 3;

/// Pieces of a large tile that may wait between the statement's rows and whoever takes them:
/// enough that reading rows and compressing overlap, few enough that a tile of 100 MB is never
/// held whole.
const ARRIVING_PIECES: usize = 2;

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Row(row) => row.get::<_, &[u8]>(CHUNK_COLUMN),
            Piece::Bytes(bytes) => bytes.as_slice(),
        }
    }
}

impl Mvt {
    /// Bytes made elsewhere (a renderer that does not read rows, such as a test's).
    pub fn from_bytes(bytes: Vec<u8>) -> Mvt {
        Mvt::from_pieces(vec![bytes])
    }

    /// Pieces made elsewhere, in order (a test's).
    pub fn from_pieces(pieces: Vec<Vec<u8>>) -> Mvt {
        Mvt {
            held: pieces.into_iter().map(Piece::Bytes).collect(),
            arriving: None,
        }
    }

    /// Held pieces followed by the pieces `arriving` will bring (a test's, or a large tile's).
    pub fn arriving(pieces: Vec<Vec<u8>>, arriving: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Mvt {
        Mvt {
            arriving: Some(arriving),
            ..Mvt::from_pieces(pieces)
        }
    }

    /// The bytes, when they arrived in one piece: compressed from where they lie, with no copy.
    pub fn single(&self) -> Option<&[u8]> {
        match (self.held.as_slice(), &self.arriving) {
            ([piece], None) => Some(piece.bytes()),
            _ => None,
        }
    }

    /// Whether more pieces are still to arrive: taking them blocks (see [`Mvt::for_each_piece`]).
    pub fn is_arriving(&self) -> bool {
        self.arriving.is_some()
    }

    /// Hands every piece to `take`, in order, releasing each before the next arrives. Waits for
    /// arriving pieces, so it must not run on an async task when [`Mvt::is_arriving`].
    pub fn for_each_piece(self, mut take: impl FnMut(&[u8])) {
        for piece in &self.held {
            take(piece.bytes());
        }
        drop(self.held);
        if let Some(mut arriving) = self.arriving {
            while let Some(piece) = arriving.blocking_recv() {
                take(&piece);
            }
        }
    }

    /// The bytes in one buffer (for outputs that store tiles uncompressed).
    pub fn into_bytes(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len());
        self.for_each_piece(|piece| bytes.extend_from_slice(piece));
        bytes
    }

    /// Length in bytes of the pieces held (all of them unless [`Mvt::is_arriving`]).
    pub fn len(&self) -> usize {
        self.held.iter().map(|piece| piece.bytes().len()).sum()
    }

    /// Whether the tile holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && !self.is_arriving()
    }

    /// Releases the bytes once they are encoded.
    pub fn take(&mut self) -> Mvt {
        std::mem::take(self)
    }
}

/// How far beyond a tile its rows are fetched at zoom `z`, in tile widths: the buffer, or, where a
/// layer is clustered, whole grid cells around the tile, so every cell reaching into the buffer is
/// aggregated from all of its members. Never larger at a deeper zoom, so a child's fetch envelope stays
/// inside its parent's and pruning stays sound.
pub fn fetch_margin(layers: &[LayerSource], z: u8, extent: u32, buffer: u32) -> f64 {
    let pixels = layers
        .iter()
        .filter_map(|layer| layer.config.cluster_at(z))
        .map(|cluster| buffer.div_ceil(cluster.cell) * cluster.cell)
        .fold(buffer, u32::max);
    f64::from(pixels) / f64::from(extent)
}

/// Whether a failed statement may succeed when tried again: the connection broke, the server is
/// restarting or overloaded, or the statement ran out of time.
fn is_transient(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        None => true,
        Some(code) => {
            let code = code.code();
            code.starts_with("08") // connection exception
                || code.starts_with("57") // operator intervention: shutdown, query_canceled (timeout)
                || code.starts_with("53") // insufficient resources, too many connections
                || code == "40001"
                || code == "40P01"
        }
    }
}

/// A fixed set of pooled connections shared by all renders of a run. Each carries several
/// statements at once: tokio-postgres pipelines them, so the network round trip no longer leaves the
/// server idle between tiles. A broken connection is swapped for a fresh one from the pool.
///
/// Behind a transaction pooler a tile's statement runs in its own transaction that first sets the
/// session settings locally, and a connection carries one such transaction at a time.
pub struct Connections {
    pool: Pool,
    slots: Vec<Slot>,
    max_attempts: u32,
    /// `BEGIN; SET LOCAL …` when statements go through a transaction pooler.
    begin: Option<String>,
}

struct Slot {
    client: std::sync::RwLock<Arc<Object>>,
    busy: AtomicUsize,
    /// Held for a whole transaction behind a transaction pooler, so two never interleave.
    transaction: tokio::sync::Mutex<()>,
}

/// Marks a slot busy while a statement runs on it.
pub struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    /// Takes `count` connections from the pool, waiting with backoff while the server is unreachable.
    pub async fn open(pool: &Pool, count: usize, database: &DatabaseConfig) -> Result<Connections> {
        let max_attempts = database.max_attempts;
        // Together: each new connection waits for its TLS handshake, authentication and a backend
        // to start, a few milliseconds that a run with little to do notices.
        let clients =
            futures::future::try_join_all((0..count).map(|_| get_with_retries(pool, max_attempts)))
                .await?;
        let slots = clients
            .into_iter()
            .map(|client| Slot {
                client: std::sync::RwLock::new(Arc::new(client)),
                busy: AtomicUsize::new(0),
                transaction: tokio::sync::Mutex::new(()),
            })
            .collect();
        let begin = (database.pool_mode == PoolMode::Transaction).then(|| {
            let settings: String = crate::db::session_settings(database)
                .iter()
                .map(|(name, value)| format!("; SET LOCAL {name} = '{value}'"))
                .collect();
            format!("BEGIN{settings}")
        });
        Ok(Connections {
            pool: pool.clone(),
            slots,
            max_attempts,
            begin,
        })
    }

    /// The least busy connection, marked busy until the guard drops.
    fn pick(&self) -> (Busy<'_>, &Slot, Arc<Object>) {
        let slot = self
            .slots
            .iter()
            .min_by_key(|s| s.busy.load(Ordering::Relaxed))
            .expect("a run has at least one connection");
        slot.busy.fetch_add(1, Ordering::Relaxed);
        let client = slot
            .client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (Busy(&slot.busy), slot, client)
    }

    /// Runs a tile statement on `client` and hands its rows to `consume` as they arrive: prepared
    /// once per connection and zoom, or, behind a transaction pooler, unnamed inside a transaction
    /// of its own (BEGIN, statement and COMMIT are sent together, so the transaction waits for no
    /// extra round trip).
    async fn query<T, C, Fut>(
        &self,
        slot: &Slot,
        client: &Object,
        query: &TileQuery,
        params: &[&(dyn ToSql + Sync)],
        consume: C,
    ) -> std::result::Result<T, tokio_postgres::Error>
    where
        C: FnOnce(RowStream) -> Fut,
        Fut: Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        let Some(begin) = &self.begin else {
            let statement = client
                .prepare_typed_cached(&query.sql, &query.types)
                .await?;
            let rows = client.query_raw(&statement, params.iter().copied()).await?;
            return consume(rows).await;
        };
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
            .iter()
            .copied()
            .zip(query.types.iter().cloned())
            .collect();
        let _alone = slot.transaction.lock().await;
        let (began, consumed, committed) = tokio::join!(
            client.batch_execute(begin),
            async {
                let rows = client.query_typed_raw(&query.sql, typed).await?;
                consume(rows).await
            },
            client.batch_execute("COMMIT"),
        );
        began?;
        let consumed = consumed?;
        committed?;
        Ok(consumed)
    }

    /// Swaps a broken connection for a new one, once, whichever render noticed first.
    async fn replace(&self, broken: &Arc<Object>) {
        let Some(slot) = self
            .slots
            .iter()
            .find(|s| Arc::ptr_eq(&s.client.read().unwrap_or_else(|p| p.into_inner()), broken))
        else {
            return;
        };
        if let Ok(fresh) = self.pool.get().await {
            let mut current = slot.client.write().unwrap_or_else(|p| p.into_inner());
            if Arc::ptr_eq(&current, broken) {
                *current = Arc::new(fresh);
            }
        }
    }
}

/// Sends a large tile's pieces, from `second` on, to whoever takes them as they arrive; returns the
/// first row of the next tile (or the end) and the server's clock at the last piece. The pieces are
/// copied out of their rows: a row keeps the whole read buffer it arrived in, about twice the piece.
/// When the taker is gone (it failed, or only probes), the pieces are read and dropped.
async fn pass_pieces(
    second: Row,
    mut rows: std::pin::Pin<&mut RowStream>,
    sender: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> std::result::Result<(Option<Row>, f64), tokio_postgres::Error> {
    let mut row = second;
    loop {
        let done: f64 = row.get(5);
        // An error only means the taker is gone; the rows must still be read to the end.
        let _ = sender
            .send(row.get::<_, &[u8]>(CHUNK_COLUMN).to_vec())
            .await;
        match rows.try_next().await? {
            Some(next) if next.get::<_, i32>(2) > 0 => row = next,
            after => return Ok((after, done)),
        }
    }
}

async fn get_with_retries(pool: &Pool, max_attempts: u32) -> Result<Object> {
    Policy::database(max_attempts)
        .run(
            || "cannot get a database connection".to_string(),
            || pool.get(),
            |_| true,
            pool_message,
        )
        .await
        .map_err(|failed| Error::from(failed.error))
}

/// A [`TilesetRenderer`] bound to the connections of a run.
pub struct PostgisRenderer<'a> {
    renderer: &'a TilesetRenderer,
    connections: &'a Connections,
}

impl Renderer for PostgisRenderer<'_> {
    async fn render_batch<T, F, Fut>(
        &self,
        tiles: &[TileCoord],
        mode: Mode,
        finish: &F,
    ) -> Vec<Result<T>>
    where
        F: Fn(Rendered) -> Fut,
        Fut: Future<Output = T>,
    {
        self.renderer
            .render_batch(tiles, mode, self.connections, finish)
            .await
    }

    fn unclustered_rows(&self) -> f64 {
        self.renderer.unclustered_rows
    }
}

/// Renders the tiles of one tileset.
pub struct TilesetRenderer {
    pool: Pool,
    pool_mode: PoolMode,
    tileset: String,
    /// Row estimates of the layers rendered unclustered at zoom 0.
    unclustered_rows: f64,
    /// Per zoom, how far beyond a tile (in tile widths) its rows are fetched.
    margins: Vec<f64>,
    render: Vec<TileQuery>,
    probe: Vec<TileQuery>,
}

impl TilesetRenderer {
    /// Prepares the statements of every zoom in `zooms` for the described layers; clustered layers
    /// with a maintained cell table (`cell_tables`, per layer) read their cells from it.
    pub fn new(
        (pool, pool_mode): (Pool, PoolMode),
        tileset: &str,
        layers: &[LayerSource],
        cell_tables: &[Option<String>],
        zooms: ZoomRange,
        (extent, buffer): (u32, u32),
    ) -> Self {
        let levels = 0..=zooms.max;
        Self {
            pool,
            pool_mode,
            tileset: tileset.to_string(),
            unclustered_rows: layers
                .iter()
                .filter(|layer| layer.config.cluster_at(0).is_none())
                .map(|layer| layer.estimated_rows)
                .sum(),
            margins: (0..=zooms.max + 1)
                .map(|z| fetch_margin(layers, z, extent, buffer))
                .collect(),
            render: levels
                .clone()
                .map(|z| sql::render_query(layers, cell_tables, z, zooms, (extent, buffer)))
                .collect(),
            probe: levels.map(|z| sql::probe_query(layers, z, zooms)).collect(),
        }
    }

    /// Checks every statement with the server (syntax, filters, permissions) before the job starts.
    pub async fn check(&self) -> Result<()> {
        let mut client = self.pool.get().await?;
        for (z, query) in self.render.iter().enumerate() {
            tracing::debug!(
                "tileset `{}` zoom {z} statement: {}",
                self.tileset,
                query.sql
            );
        }
        // Zooms that render alike share one statement text, and are checked (and planned) once.
        let mut seen = std::collections::HashSet::new();
        let refused = |query: &TileQuery, err: tokio_postgres::Error| Error::Source {
            tileset: self.tileset.clone(),
            layer: query.layer_names.join(", "),
            message: format!("the tile statement is refused: {}", pg_message(&err)),
        };
        let distinct: Vec<&TileQuery> = self
            .render
            .iter()
            .chain(&self.probe)
            .filter(|query| seen.insert(&query.sql))
            .collect();
        if self.pool_mode == PoolMode::Transaction {
            // Behind a transaction pooler a named statement exists only inside the transaction
            // that made it, so each is checked there and closed before it ends.
            let transaction = client.transaction().await?;
            for query in &distinct {
                let statement = transaction.prepare_typed(&query.sql, &query.types).await;
                drop(statement.map_err(|err| refused(query, err))?);
            }
            transaction.rollback().await?;
        } else {
            for query in &distinct {
                client
                    .prepare_typed_cached(&query.sql, &query.types)
                    .await
                    .map_err(|err| refused(query, err))?;
            }
        }
        tracing::debug!(
            "tileset `{}`: {} distinct statements",
            self.tileset,
            seen.len()
        );
        Ok(())
    }

    /// This renderer on a run's connections, as the scheduler drives it.
    pub fn on<'a>(&'a self, connections: &'a Connections) -> PostgisRenderer<'a> {
        PostgisRenderer {
            renderer: self,
            connections,
        }
    }

    /// Renders tiles of one zoom and mode, as one statement where possible. When a batch of several
    /// fails, each of its tiles is tried alone, so an error (or `--keep-going`) names the tile at fault.
    pub async fn render_batch<T, F, Fut>(
        &self,
        tiles: &[TileCoord],
        mode: Mode,
        connections: &Connections,
        finish: &F,
    ) -> Vec<Result<T>>
    where
        F: Fn(Rendered) -> Fut,
        Fut: Future<Output = T>,
    {
        match self.run_statement(tiles, mode, connections, finish).await {
            Ok(finished) => finished.into_iter().map(Ok).collect(),
            Err(err) if tiles.len() == 1 => vec![Err(err)],
            Err(err) => {
                tracing::debug!(
                    "a batch of {} tiles failed, trying each alone: {err}",
                    tiles.len()
                );
                let mut results = Vec::with_capacity(tiles.len());
                for tile in tiles {
                    let alone = self
                        .run_statement(&[*tile], mode, connections, finish)
                        .await;
                    results.push(alone.map(|mut finished| finished.remove(0)));
                }
                results
            }
        }
    }

    /// Runs one statement for `tiles` on the least busy connection, retrying transient failures (a
    /// dropped connection, a restarting server, a statement timeout) with exponential backoff. A
    /// batch that runs out of time is not retried whole: its tiles are better tried one by one.
    async fn run_statement<T, F, Fut>(
        &self,
        tiles: &[TileCoord],
        mode: Mode,
        connections: &Connections,
        finish: &F,
    ) -> Result<Vec<T>>
    where
        F: Fn(Rendered) -> Fut,
        Fut: Future<Output = T>,
    {
        let first = tiles[0];
        let query = match mode {
            Mode::Render => &self.render[usize::from(first.z())],
            Mode::Probe => &self.probe[usize::from(first.z())],
        };
        let z = i32::from(first.z());
        let xs: Vec<i32> = tiles.iter().map(|t| t.x() as i32).collect();
        let ys: Vec<i32> = tiles.iter().map(|t| t.y() as i32).collect();
        let mut envelopes: Vec<Vec<f64>> = (0..sql::ENVELOPES * 8)
            .map(|_| Vec::with_capacity(tiles.len()))
            .collect();
        for tile in tiles {
            for (column, value) in envelopes.iter_mut().zip(self.envelopes(*tile)) {
                column.push(value);
            }
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&z, &xs, &ys];
        params.extend(envelopes.iter().map(|v| v as &(dyn ToSql + Sync)));
        params.extend(query.layer_names.iter().map(|n| n as &(dyn ToSql + Sync)));
        let place = || {
            if tiles.len() == 1 {
                format!("tile {first}")
            } else {
                format!("a batch of {} tiles from {first}", tiles.len())
            }
        };

        let batch = tiles.len() > 1;
        let outcome = Policy::database(connections.max_attempts)
            .run(
                place,
                || async {
                    let (busy, slot, client) = connections.pick();
                    let consume = |rows| self.finish_rows(first.z(), tiles.len(), rows, finish);
                    let outcome = connections
                        .query(slot, &client, query, &params, consume)
                        .await;
                    drop(busy);
                    if outcome.is_err() && client.is_closed() {
                        connections.replace(&client).await;
                    }
                    outcome
                },
                // A batch that ran out of time is not retried whole: its tiles go one by one.
                |err| {
                    is_transient(err) && !(batch && err.code() == Some(&SqlState::QUERY_CANCELED))
                },
                pg_message,
            )
            .await;
        match outcome {
            Ok(finished) => finished,
            Err(failed) => Err(Error::Render {
                tileset: self.tileset.clone(),
                tile: first,
                message: format!(
                    "{} (after {} attempt(s))",
                    pg_message(&failed.error),
                    failed.attempts
                ),
            }),
        }
    }

    /// The tiles of a statement's rows as they arrive (a tile's pieces are consecutive, the first
    /// numbered 0), each with the server time since the previous tile was done, put through
    /// `finish` as soon as the next tile starts. A tile in several pieces is put through `finish`
    /// at its second piece, and the rest follow while `finish` runs, so it is never held whole.
    /// The outer error is the database's (retried as such); the inner one, rows no tile statement
    /// returns.
    async fn finish_rows<T, F, Fut>(
        &self,
        z: u8,
        expected: usize,
        rows: RowStream,
        finish: &F,
    ) -> std::result::Result<Result<Vec<T>>, tokio_postgres::Error>
    where
        F: Fn(Rendered) -> Fut,
        Fut: Future<Output = T>,
    {
        let mut rows = std::pin::pin!(rows);
        let mut finished: Vec<T> = Vec::with_capacity(expected);
        let mut current: Option<Rendered> = None;
        let mut previous = 0.0;
        let mut next = rows.try_next().await?;
        while let Some(row) = next.take() {
            let done: f64 = row.get(5);
            let part: i32 = row.get(2);
            // A later piece of the tile before it: that tile is large.
            if let Some(mut large) = current.take_if(|_| part > 0) {
                large.elapsed += Duration::from_secs_f64((done - previous).max(0.0));
                let first = large
                    .mvt
                    .held
                    .pop()
                    .map_or_else(Vec::new, |piece| piece.bytes().to_vec());
                let (sender, receiver) = tokio::sync::mpsc::channel(ARRIVING_PIECES);
                large.mvt = Mvt::arriving(vec![first], receiver);
                let rest = pass_pieces(row, rows.as_mut(), sender);
                let (output, passed) = tokio::join!(finish(large), rest);
                finished.push(output);
                let (after, last_done) = passed?;
                previous = last_done;
                next = after;
                continue;
            }
            if let Some(complete) = current.take() {
                finished.push(finish(complete).await);
            }
            let (x, y): (i32, i32) = (row.get(0), row.get(1));
            let tile = match TileCoord::new(z, x as u32, y as u32) {
                Ok(tile) => tile,
                Err(e) => {
                    return Ok(Err(Error::Database(DbError::Unexpected(format!(
                        "the tile statement returned {e}"
                    )))))
                }
            };
            let flags: Vec<bool> = row.get(4);
            let mut children = [false; 4];
            for (child, flag) in children.iter_mut().zip(flags) {
                *child = flag;
            }
            current = Some(Rendered {
                tile,
                mvt: Mvt {
                    held: vec![Piece::Row(row)],
                    arriving: None,
                },
                children,
                elapsed: Duration::from_secs_f64((done - previous).max(0.0)),
            });
            previous = done;
            next = rows.try_next().await?;
        }
        if let Some(complete) = current.take() {
            finished.push(finish(complete).await);
        }
        if finished.len() != expected {
            return Ok(Err(Error::Database(DbError::Unexpected(format!(
                "tileset `{}`: a statement for {expected} tiles returned {} rows",
                self.tileset,
                finished.len()
            )))));
        }
        Ok(Ok(finished))
    }

    /// The buffered envelopes of a tile and its children, each in degrees then metres, as the
    /// statement's `$4..$43` expect.
    fn envelopes(&self, tile: TileCoord) -> Vec<f64> {
        let children: Vec<TileCoord> = tile.children().collect();
        let mut values = Vec::with_capacity(sql::ENVELOPES * 8);
        for index in 0..sql::ENVELOPES {
            // At the deepest zoom children are never asked about; any envelope fills their slots.
            let which = if index == 0 {
                tile
            } else {
                children.get(index - 1).copied().unwrap_or(tile)
            };
            // A hair of slack so float rounding never drops a row that ST_AsMVTGeom would keep.
            let margin = self.margins[usize::from(which.z())];
            let mercator = which.mercator_envelope(margin).grown(1e-9);
            let degrees = mercator.mercator_to_lonlat();
            values.extend([degrees.west, degrees.south, degrees.east, degrees.north]);
            values.extend([mercator.west, mercator.south, mercator.east, mercator.north]);
        }
        values
    }
}
