//! Reading `{prefix}/{z}/{x}/{y}.ext` objects and the TileJSON beside them.

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::sink::read::ReadTiles;
use crate::sink::tilejson::TILEJSON_NAME;
use crate::store::document::DOCUMENT_CAP;
use crate::store::ObjectStore;
use crate::tile::TileCoord;

/// A prefix of a remote store opened for reading.
pub struct ObjectReader {
    /// The output as given, for errors.
    pub output: String,
    /// The store holding the prefix.
    pub store: std::sync::Arc<dyn ObjectStore>,
    /// Key prefix.
    pub prefix: String,
    /// Tile object extension.
    pub extension: String,
}

impl ObjectReader {
    async fn object(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.store
            .get(key, crate::store::document::TILE_FILE_CAP)
            .await
            .map_err(|e| Error::output_caused(&self.output, e))
    }

    /// A document beside the tiles, refused past the cap on documents.
    async fn document(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.store
            .get(key, DOCUMENT_CAP)
            .await
            .map_err(|e| Error::output_caused(&self.output, e))
    }
}

impl ReadTiles for ObjectReader {
    fn metadata(&self) -> BoxFuture<'_, Result<Value>> {
        async move {
            let key = super::object_key(&self.prefix, TILEJSON_NAME);
            match self.document(&key).await? {
                Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    Error::output(&self.output, format!("{key} is not valid JSON: {e}"))
                }),
                None => Ok(Value::Null),
            }
        }
        .boxed()
    }

    fn tile_sizes(&self) -> BoxFuture<'_, Result<Vec<(TileCoord, u64)>>> {
        async move {
            let tiles = super::list_tiles(self.store.as_ref(), &self.prefix, &self.extension)
                .await
                .map_err(|e| Error::output_caused(&self.output, e))?;
            Ok(tiles
                .into_iter()
                .map(|(tile, _, size)| (tile, size))
                .collect())
        }
        .boxed()
    }

    fn tile(&self, tile: TileCoord) -> BoxFuture<'_, Result<Option<Vec<u8>>>> {
        async move {
            self.object(&super::tile_object_key(&self.prefix, tile, &self.extension))
                .await
        }
        .boxed()
    }
    fn state(&self) -> BoxFuture<'_, Result<Option<String>>> {
        async move {
            let key = super::object_key(&self.prefix, super::STATE_NAME);
            let bytes = self.document(&key).await?;
            Ok(bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
        }
        .boxed()
    }
}
