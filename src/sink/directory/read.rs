//! Reading a `{z}/{x}/{y}.ext` tree and the TileJSON beside its tiles.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::sink::agg_hash::HASH_PENDING_KEY;
use crate::sink::read::ReadTiles;
use crate::sink::tilejson::TILEJSON_NAME;
use crate::store::document::{read_capped, DOCUMENT_CAP, TILE_FILE_CAP};
use crate::tile::TileCoord;

/// A tree opened for reading.
pub struct TreeReader {
    /// The tree's root.
    pub root: PathBuf,
    /// Tile file extension.
    pub extension: String,
}

impl ReadTiles for TreeReader {
    fn metadata(&self) -> BoxFuture<'_, Result<Value>> {
        let path = self.root.join(TILEJSON_NAME);
        let metadata = match read_capped(&path, DOCUMENT_CAP) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::output(&path, format!("not valid JSON: {e}"))),
            Ok(None) => Ok(Value::Null),
            Err(e) => Err(e),
        };
        // The stale marker is the tree's word that its hash is pending.
        let metadata = metadata.map(|mut metadata| {
            if let (Value::Object(fields), true) =
                (&mut metadata, self.root.join(super::STALE_NAME).exists())
            {
                fields.insert(HASH_PENDING_KEY.to_string(), Value::Bool(true));
            }
            metadata
        });
        std::future::ready(metadata).boxed()
    }

    fn tile_sizes(&self) -> BoxFuture<'_, Result<Vec<(TileCoord, u64)>>> {
        async move {
            // A walk of a large tree takes seconds; `serve` runs on one thread and keeps
            // answering tiles meanwhile.
            let (root, extension) = (self.root.clone(), self.extension.clone());
            tokio::task::spawn_blocking(move || sizes(&root, &extension))
                .await
                .map_err(|e| Error::output(&self.root, format!("listing the tiles stopped: {e}")))?
        }
        .boxed()
    }

    fn tile(&self, tile: TileCoord) -> BoxFuture<'_, Result<Option<Vec<u8>>>> {
        async move {
            // The path is built from validated numbers only, so it cannot leave the tree.
            let path = self
                .root
                .join(tile.z().to_string())
                .join(tile.x().to_string())
                .join(format!("{}.{}", tile.y(), self.extension));
            tokio::task::spawn_blocking(move || read_capped(&path, TILE_FILE_CAP))
                .await
                .map_err(|e| Error::output(&self.root, format!("reading {tile} stopped: {e}")))?
        }
        .boxed()
    }

    fn state(&self) -> BoxFuture<'_, Result<Option<String>>> {
        let path = self.root.join(super::STATE_NAME);
        let state = read_capped(&path, DOCUMENT_CAP).and_then(|bytes| {
            bytes
                .map(String::from_utf8)
                .transpose()
                .map_err(|e| Error::output(&path, format!("is not UTF-8 text: {e}")))
        });
        std::future::ready(state).boxed()
    }
}

/// Every tile file under `root` with its size.
pub(super) fn sizes(root: &Path, extension: &str) -> Result<Vec<(TileCoord, u64)>> {
    walk(root, extension, true)
}

/// The tree's tiles, from its directory entries alone (no file is opened or stat'ed).
pub(super) fn tiles(root: &Path, extension: &str) -> Result<Vec<TileCoord>> {
    Ok(walk(root, extension, false)?
        .into_iter()
        .map(|(tile, _)| tile)
        .collect())
}

/// Every tile below `root`, with its size when `sized` (else 0).
fn walk(root: &Path, extension: &str, sized: bool) -> Result<Vec<(TileCoord, u64)>> {
    let mut sizes = Vec::new();
    let list = |dir: &Path| -> Result<Vec<std::fs::DirEntry>> {
        std::fs::read_dir(dir)
            .and_then(|entries| entries.collect())
            .map_err(|e| Error::output(dir, format!("cannot list it: {e}")))
    };
    // Folders and files that are not numbers (tiles.json, a journal) are not tiles.
    let number = |entry: &std::fs::DirEntry, suffix: &str| {
        let name = entry.file_name();
        name.to_str()
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u32>().ok())
    };
    let suffix = format!(".{extension}");
    for z_entry in list(root)? {
        let Some(z) = number(&z_entry, "").and_then(|z| u8::try_from(z).ok()) else {
            continue;
        };
        for x_entry in list(&z_entry.path())? {
            let Some(x) = number(&x_entry, "") else {
                continue;
            };
            for y_entry in list(&x_entry.path())? {
                let tile = number(&y_entry, &suffix).and_then(|y| TileCoord::new(z, x, y).ok());
                if let Some(tile) = tile {
                    let size = if sized {
                        y_entry.metadata().map(|m| m.len()).unwrap_or(0)
                    } else {
                        0
                    };
                    sizes.push((tile, size));
                }
            }
        }
    }
    Ok(sizes)
}
