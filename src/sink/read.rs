//! Outputs opened for reading only: `inspect` and `serve` read every kind through [`OutputReader`];
//! each kind's reader lives in its folder beside its writer.

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use serde_json::Value;

use super::kind_of;
use super::OutputTarget;
use crate::config::StoreConfig;
use crate::error::Result;
use crate::tile::TileCoord;

/// What a reader needs besides the output's address.
pub struct ReaderOptions<'a> {
    /// The output as the user gave it, for messages.
    pub output: &'a str,
    /// The remote stores' settings (the `[store]` table), for outputs in one.
    pub store_settings: &'a StoreConfig,
    /// The tile file extension of trees and remote prefixes.
    pub extension: &'a str,
}

/// What reading one kind of output takes.
pub trait ReadTiles: Send + Sync {
    /// MBTiles metadata (with `json` expanded), the PMTiles metadata and header, or the TileJSON
    /// document beside tree and prefix tiles; null when there is none.
    fn metadata(&self) -> BoxFuture<'_, Result<Value>>;

    /// Every stored tile with its size in bytes.
    fn tile_sizes(&self) -> BoxFuture<'_, Result<Vec<(TileCoord, u64)>>>;

    /// One tile's stored bytes, or `None` when the output does not hold it.
    fn tile(&self, tile: TileCoord) -> BoxFuture<'_, Result<Option<Vec<u8>>>>;

    /// The job state (watermark) the output's last complete run recorded, read without taking
    /// the output's lock: what `seed --dirty --dry-run` plans from.
    fn state(&self) -> BoxFuture<'_, Result<Option<String>>>;

    /// Many tiles' stored bytes, in the order given: by default a few reads in flight at once
    /// (requests, for remote outputs); a kind that reads faster in one pass overrides it.
    fn read_many(
        &self,
        tiles: Vec<TileCoord>,
    ) -> BoxStream<'_, Result<(TileCoord, Option<Vec<u8>>)>> {
        futures::stream::iter(tiles)
            .map(move |tile| async move { Ok((tile, self.tile(tile).await?)) })
            .buffered(READS_IN_FLIGHT)
            .boxed()
    }
}

/// Tile reads in flight at once in [`ReadTiles::read_many`]: enough to hide a remote store request's round
/// trip, few enough not to be throttled.
const READS_IN_FLIGHT: usize = 16;

/// An output opened for reading only: its metadata, the size of every tile, one tile's bytes.
pub struct OutputReader(Box<dyn ReadTiles>);

impl OutputReader {
    /// Wraps one kind's reader.
    pub fn new(reader: impl ReadTiles + 'static) -> OutputReader {
        OutputReader(Box::new(reader))
    }

    /// Opens an output for reading; fails when it is not there or is not of its kind. `output` is
    /// the output as the user gave it, for messages; `extension` the tile file extension of trees
    /// and remote prefixes.
    pub async fn open(
        output: &str,
        target: &OutputTarget,
        store_settings: &StoreConfig,
        extension: &str,
    ) -> Result<OutputReader> {
        kind_of(target)
            .open_reader(ReaderOptions {
                output,
                store_settings,
                extension,
            })
            .await
    }

    /// See [`ReadTiles::metadata`].
    pub async fn metadata(&self) -> Result<Value> {
        self.0.metadata().await
    }

    /// See [`ReadTiles::tile_sizes`].
    pub async fn tile_sizes(&self) -> Result<Vec<(TileCoord, u64)>> {
        self.0.tile_sizes().await
    }

    /// See [`ReadTiles::tile`].
    pub async fn tile(&self, tile: TileCoord) -> Result<Option<Vec<u8>>> {
        self.0.tile(tile).await
    }

    /// See [`ReadTiles::read_many`].
    pub fn read_many(
        &self,
        tiles: Vec<TileCoord>,
    ) -> BoxStream<'_, Result<(TileCoord, Option<Vec<u8>>)>> {
        self.0.read_many(tiles)
    }

    /// See [`ReadTiles::state`].
    pub async fn state(&self) -> Result<Option<String>> {
        self.0.state().await
    }
}
