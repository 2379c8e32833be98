//! Rendering: one prepared statement per zoom, executed per tile on a bounded pool of connections.
//!
//! A tile's statement returns its MVT bytes and, per child, whether any source row lies inside the
//! child's buffered envelope for the layers of deeper zooms. That answer, not the emptiness of the
//! bytes, steers the pyramid walk: a geometry too small to survive `ST_AsMVTGeom` at one zoom may
//! appear at the next.

pub mod pool;
pub mod source;
pub mod sql;

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use crate::error::{pg_message, Error, Result};
use crate::tile::{TileCoord, ZoomRange};
use source::LayerSource;
use sql::TileQuery;

/// Whether a tile is rendered or only probed for content below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Produce the tile's bytes.
    Render,
    /// Only decide whether its children need visiting.
    Probe,
}

/// The outcome of one tile's statement.
#[derive(Debug)]
pub struct Rendered {
    /// The tile.
    pub tile: TileCoord,
    /// Uncompressed MVT bytes; empty when the tile holds nothing (or was only probed).
    pub mvt: Vec<u8>,
    /// Whether each child (in [`TileCoord::children`] order) may hold features.
    pub children: [bool; 4],
    /// Time from asking for a connection to having the bytes.
    pub elapsed: Duration,
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

/// Renders the tiles of one tileset.
pub struct TilesetRenderer {
    pool: Pool,
    tileset: String,
    /// Per zoom, how far beyond a tile (in tile widths) its rows are fetched.
    margins: Vec<f64>,
    render: Vec<TileQuery>,
    probe: Vec<TileQuery>,
}

impl TilesetRenderer {
    /// Prepares the statements of every zoom in `zooms` for the described layers.
    pub fn new(
        pool: Pool,
        tileset: &str,
        layers: &[LayerSource],
        zooms: ZoomRange,
        extent: u32,
        buffer: u32,
    ) -> Self {
        let levels = 0..=zooms.max;
        Self {
            pool,
            tileset: tileset.to_string(),
            margins: (0..=zooms.max + 1)
                .map(|z| fetch_margin(layers, z, extent, buffer))
                .collect(),
            render: levels
                .clone()
                .map(|z| sql::render_query(layers, z, zooms, extent, buffer))
                .collect(),
            probe: levels.map(|z| sql::probe_query(layers, z, zooms)).collect(),
        }
    }

    /// Checks every statement with the server (syntax, filters, permissions) before the job starts.
    pub async fn check(&self) -> Result<()> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| Error::Database(pool::pool_message(&e)))?;
        for query in self.render.iter().chain(&self.probe) {
            client
                .prepare_typed_cached(&query.sql, &query.types)
                .await
                .map_err(|err| Error::Source {
                    tileset: self.tileset.clone(),
                    layer: query.layer_names.join(", "),
                    message: format!("the tile statement is refused: {}", pg_message(&err)),
                })?;
        }
        Ok(())
    }

    /// Runs one tile's statement.
    pub async fn render(&self, tile: TileCoord, mode: Mode) -> Result<Rendered> {
        let started = Instant::now();
        let query = match mode {
            Mode::Render => &self.render[usize::from(tile.z())],
            Mode::Probe => &self.probe[usize::from(tile.z())],
        };
        let fail = |message: String| Error::Render {
            tileset: self.tileset.clone(),
            tile,
            message,
        };
        let (z, x, y) = (i32::from(tile.z()), tile.x() as i32, tile.y() as i32);
        let envelopes = self.envelopes(tile);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&z, &x, &y];
        params.extend(envelopes.iter().map(|v| v as &(dyn ToSql + Sync)));
        params.extend(query.layer_names.iter().map(|n| n as &(dyn ToSql + Sync)));

        let client = self
            .pool
            .get()
            .await
            .map_err(|e| fail(pool::pool_message(&e)))?;
        let statement = client
            .prepare_typed_cached(&query.sql, &query.types)
            .await
            .map_err(|e| fail(pg_message(&e)))?;
        let row = client
            .query_one(&statement, &params)
            .await
            .map_err(|e| fail(pg_message(&e)))?;
        let flags: Vec<bool> = row.get(1);
        let mut children = [false; 4];
        for (slot, flag) in children.iter_mut().zip(flags) {
            *slot = flag;
        }
        Ok(Rendered {
            tile,
            mvt: row.get(0),
            children,
            elapsed: started.elapsed(),
        })
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
