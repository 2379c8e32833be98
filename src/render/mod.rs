//! Rendering: one prepared statement per zoom, executed per tile on a bounded pool of connections.
//! The scheduler drives any [`Renderer`]; [`TilesetRenderer`] on its [`Connections`] is the PostGIS one.
//!
//! A tile's statement returns its MVT bytes and, per child, whether any source row lies inside the
//! child's buffered envelope for the layers of deeper zooms. That answer, not the emptiness of the
//! bytes, steers the pyramid walk: a geometry too small to survive `ST_AsMVTGeom` at one zoom may
//! appear at the next.

//!
//! The tiles' bytes travel as [`Mvt`] (`mvt.rs`); the run's pipelined connections are in
//! `connections.rs`; the tileset's statements and how their rows become tiles in `tileset.rs`.

mod connections;
pub mod count;
mod culprit;
mod mvt;
pub mod row_set;
pub mod source;
pub mod sql;
mod tileset;

pub use connections::Connections;
pub use mvt::Mvt;
pub use tileset::TilesetRenderer;

use std::future::Future;
use std::time::Duration;

use crate::error::Result;
pub use crate::plan::Mode;
use crate::tile::TileCoord;
use source::LayerSource;

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

/// How far beyond a tile its rows are fetched at zoom `z`, in tile widths
/// ([`crate::config::fetch_margin`] over the layers' configs).
pub fn fetch_margin(layers: &[LayerSource], z: u8, extent: u32, buffer: u32) -> f64 {
    crate::config::fetch_margin(layers.iter().map(|l| &l.config), z, extent, buffer)
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
