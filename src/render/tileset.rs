//! The renderer of one tileset: its prepared statements per zoom, and how their rows become tiles.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::TryStreamExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::RowStream;

use super::connections::Connections;
use super::culprit;
use super::mvt::{pass_pieces, Mvt, Piece, ARRIVING_PIECES};
use super::row_set::{self, RowSets};
use super::source::LayerSource;
use super::sql::{self, TileQuery};
use super::{fetch_margin, is_transient, PostgisRenderer, Rendered};
use crate::config::PoolMode;
use crate::error::{pg_message, DbError, Error, Result};
pub use crate::plan::Mode;
use crate::retry::Policy;
use crate::tile::{TileCoord, ZoomRange};

/// Parameters of a tile statement before the layer names: z, the tiles' x and y, their envelopes.
const FIRST_LAYER_PARAM: usize = 3 + sql::ENVELOPES * 8;

/// A statement that failed after its retries, and whether its connection was lost (the message
/// then holds for every tile of it).
pub(super) struct Failed {
    error: Error,
    lost_connection: Option<String>,
}

/// A tile statement's arguments for a batch of tiles of one zoom: the zoom, the tiles' x and y,
/// and their envelopes, a column each.
struct Arguments {
    z: i32,
    xs: Vec<i32>,
    ys: Vec<i32>,
    envelopes: Vec<Vec<f64>>,
}

impl Arguments {
    /// The statement's parameters in order: the arguments, then `query`'s layer names and its
    /// partition's value.
    fn params<'a>(&'a self, query: &'a TileQuery) -> Vec<&'a (dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.z, &self.xs, &self.ys];
        params.extend(self.envelopes.iter().map(|v| v as &(dyn ToSql + Sync)));
        params.extend(query.layer_names.iter().map(|n| n as &(dyn ToSql + Sync)));
        if let Some(value) = &query.partition_value {
            params.push(value);
        }
        params
    }
}

/// Renders the tiles of one tileset.
pub struct TilesetRenderer {
    pool: Pool,
    pool_mode: PoolMode,
    tileset: String,
    /// Row estimates of the layers rendered unclustered at zoom 0.
    pub(super) unclustered_rows: f64,
    /// Per zoom, how far beyond a tile (in tile widths) its rows are fetched.
    margins: Vec<f64>,
    render: Vec<TileQuery>,
    probe: Vec<TileQuery>,
    /// The layers, searched for the rows that make a tile fail.
    layers: Vec<LayerSource>,
    /// A partition's row sets, loaded into each session before its first statement.
    row_sets: Option<RowSets>,
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
            layers: layers.to_vec(),
            row_sets: RowSets::of(layers),
        }
    }

    /// Checks every statement with the server (syntax, filters, permissions) before the job starts.
    pub async fn check(&self) -> Result<()> {
        let mut client = crate::db::get(&self.pool).await?;
        if let Some(sets) = &self.row_sets {
            sets.create(&client).await.map_err(|err| Error::Source {
                tileset: self.tileset.clone(),
                layer: self
                    .layers
                    .iter()
                    .map(|l| l.config.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                message: format!(
                    "cannot create the partition's row set: {}",
                    pg_message(&err)
                ),
            })?;
        }
        for (z, query) in self.render.iter().enumerate() {
            tracing::debug!(
                "tileset `{}` zoom {z} statement: {}",
                self.tileset,
                query.sql
            );
        }
        // Zooms that render alike share one statement text, and are checked (and planned) once.
        let mut seen = std::collections::HashSet::new();
        let refused = |query: &TileQuery, err: tokio_postgres::Error| {
            Error::source_refused(
                &self.tileset,
                query.layer_names.join(", "),
                "the tile statement is refused",
                &err,
            )
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
            Err(failed) if tiles.len() == 1 => vec![Err(failed.error)],
            // The connection, not a tile, failed, after every retry: each tile alone would wait
            // out the same backoff again (a batch of 13 took 13 times 16 s while the server was
            // down, and the run noticed nothing meanwhile).
            Err(Failed {
                lost_connection: Some(message),
                ..
            }) => tiles
                .iter()
                .map(|tile| {
                    Err(Error::Render {
                        tileset: self.tileset.clone(),
                        tile: *tile,
                        message: message.clone(),
                    })
                })
                .collect(),
            Err(failed) => {
                tracing::debug!(
                    "a batch of {} tiles failed, trying each alone: {}",
                    tiles.len(),
                    failed.error
                );
                let mut results = Vec::with_capacity(tiles.len());
                for tile in tiles {
                    let alone = self
                        .run_statement(&[*tile], mode, connections, finish)
                        .await;
                    results.push(
                        alone
                            .map(|mut finished| finished.remove(0))
                            .map_err(|failed| failed.error),
                    );
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
    ) -> std::result::Result<Vec<T>, Failed>
    where
        F: Fn(Rendered) -> Fut,
        Fut: Future<Output = T>,
    {
        let first = tiles[0];
        let query = match mode {
            Mode::Render => &self.render[usize::from(first.z())],
            Mode::Probe => &self.probe[usize::from(first.z())],
        };
        let arguments = self.arguments(tiles);
        let params = arguments.params(query);
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
                    let outcome = async {
                        let _rows = match &self.row_sets {
                            Some(sets) => Some(row_set::hold(&slot.rows, &client, sets).await?),
                            None => None,
                        };
                        connections
                            .query(slot, &client, query, &params, consume)
                            .await
                    }
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
        let failed = match outcome {
            Ok(finished) => {
                return finished.map_err(|error| Failed {
                    error,
                    lost_connection: None,
                })
            }
            Err(failed) => failed,
        };
        Err(self
            .failure(failed, (query, &params), first, batch, connections)
            .await)
    }

    /// The statement's arguments for `tiles`, all of one zoom.
    fn arguments(&self, tiles: &[TileCoord]) -> Arguments {
        let mut envelopes: Vec<Vec<f64>> = (0..sql::ENVELOPES * 8)
            .map(|_| Vec::with_capacity(tiles.len()))
            .collect();
        for tile in tiles {
            for (column, value) in envelopes.iter_mut().zip(self.envelopes(*tile)) {
                column.push(value);
            }
        }
        Arguments {
            z: i32::from(tiles[0].z()),
            xs: tiles.iter().map(|t| t.x() as i32).collect(),
            ys: tiles.iter().map(|t| t.y() as i32).collect(),
            envelopes,
        }
    }

    /// What a statement that failed after its retries reports: for a tile alone that a row's
    /// data fails, the rows at fault; whether the connection was lost.
    async fn failure(
        &self,
        failed: crate::retry::Failed<tokio_postgres::Error>,
        (query, params): (&TileQuery, &[&(dyn ToSql + Sync)]),
        first: TileCoord,
        batch: bool,
        connections: &Connections,
    ) -> Failed {
        let mut message = pg_message(&failed.error);
        // No SQLSTATE (the socket closed), a connection exception, or the server going away.
        let lost = failed
            .error
            .code()
            .is_none_or(|code| code.code().starts_with("08") || code.code().starts_with("57P"));
        // A tile alone (a failed batch's tiles are each tried alone) that a row's data fails:
        // the error names the rows, which only this path searches for.
        if !batch && culprit::from_row_data(&failed.error) {
            let layers: Vec<&LayerSource> = self
                .layers
                .iter()
                .filter(|layer| query.layer_names.contains(&layer.config.name))
                .collect();
            let statement = culprit::Statement {
                params: &params[..FIRST_LAYER_PARAM],
            };
            let culprits = culprit::find(connections, &layers, first.z(), &statement).await;
            if !culprits.is_empty() {
                let named: Vec<String> = culprits.iter().map(ToString::to_string).collect();
                message = format!("{}: {message}", named.join("; "));
            }
        }
        let message = format!("{message} (after {} attempt(s))", failed.attempts);
        Failed {
            error: Error::Render {
                tileset: self.tileset.clone(),
                tile: first,
                message: message.clone(),
            },
            lost_connection: lost.then_some(message),
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
