//! Reading a PMTiles archive, memory-mapped; an archive on S3 is downloaded first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use crate::config::S3Config;
use crate::error::{Error, Result};
use crate::sink::read::ReadTiles;
use crate::sink::s3;
use crate::tile::TileCoord;

type Archive = pmtiles::AsyncPmTilesReader<pmtiles::MmapBackend>;

/// A PMTiles archive opened for reading.
pub struct PmtilesReader {
    /// The archive (or, downloaded from S3, its URL), for messages.
    path: PathBuf,
    /// Its reader, shared by concurrent reads.
    reader: Arc<Archive>,
}

impl PmtilesReader {
    /// Opens a local archive.
    pub async fn open(path: &Path) -> Result<PmtilesReader> {
        if !path.is_file() {
            return Err(Error::output(path, "no such PMTiles file"));
        }
        let reader = Archive::new_with_path(path)
            .await
            .map_err(read_error(path))?;
        Ok(PmtilesReader {
            path: path.to_path_buf(),
            reader: Arc::new(reader),
        })
    }

    /// An archive on S3, downloaded to a private temporary file (a name no other user can guess
    /// or plant a link at, readable by this user alone) and read as a local one. The file is
    /// removed once mapped: the mapping keeps its pages until the reader goes.
    pub async fn download(
        output: &str,
        bucket: &str,
        key: &str,
        config: &S3Config,
    ) -> Result<PmtilesReader> {
        let downloaded = download_to_private_file(output, bucket, key, config).await;
        let file = downloaded?;
        let path = file.path().to_path_buf();
        let opened = Archive::new_with_path(&path)
            .await
            .map_err(read_error(&path));
        drop(file);
        Ok(PmtilesReader {
            path: PathBuf::from(output),
            reader: Arc::new(opened?),
        })
    }
}

/// Downloads an archive on S3 into a private temporary file (a name no other user can guess or
/// plant a link at, readable by this user alone), removed when the handle is dropped.
pub(super) async fn download_to_private_file(
    output: &str,
    bucket: &str,
    key: &str,
    config: &S3Config,
) -> Result<tempfile::NamedTempFile> {
    let client = s3::client(config).await;
    let mut file = tempfile::Builder::new()
        .prefix("oar-tiles-")
        .suffix(".pmtiles")
        .tempfile()
        .map_err(|e| {
            Error::output(
                std::env::temp_dir(),
                format!("cannot create a temporary file to download {output} into: {e}"),
            )
        })?;
    s3::download_into(
        &client,
        bucket,
        key,
        file.as_file_mut(),
        config.max_attempts,
    )
    .await
    .map_err(|e| Error::output_caused(output, e))?;
    Ok(file)
}

fn read_error(path: &Path) -> impl Fn(pmtiles::PmtError) -> Error + '_ {
    move |e| Error::output(path, format!("cannot read it as PMTiles: {e}"))
}

impl ReadTiles for PmtilesReader {
    /// The JSON metadata, with the header's bounds, zooms, tile type, compression and clustering
    /// under `pmtiles`.
    fn metadata(&self) -> BoxFuture<'_, Result<Value>> {
        async move {
            let (path, reader) = (&self.path, &self.reader);
            let header = reader.get_header();
            let mut metadata: Value =
                serde_json::from_str(&reader.get_metadata().await.map_err(read_error(path))?)
                    .unwrap_or(Value::Null);
            if !metadata.is_object() {
                metadata = serde_json::json!({});
            }
            metadata["bounds"] = serde_json::json!([
                header.min_longitude,
                header.min_latitude,
                header.max_longitude,
                header.max_latitude
            ]);
            metadata["pmtiles"] = serde_json::json!({
                "clustered": header.clustered(),
                "tile_type": format!("{:?}", header.tile_type).to_lowercase(),
                "tile_compression": format!("{:?}", header.tile_compression).to_lowercase(),
                "minzoom": header.min_zoom,
                "maxzoom": header.max_zoom,
                "addressed_tiles": header.n_addressed_tiles().map(|n| n.get()),
                "tile_contents": header.n_tile_contents().map(|n| n.get()),
            });
            Ok(metadata)
        }
        .boxed()
    }

    fn tile_sizes(&self) -> BoxFuture<'_, Result<Vec<(TileCoord, u64)>>> {
        async move {
            use futures::StreamExt;
            let (path, reader) = (&self.path, &self.reader);
            let mut sizes = Vec::new();
            let mut entries = reader.clone().entries();
            while let Some(entry) = entries.next().await {
                let entry = entry.map_err(read_error(path))?;
                for id in entry.iter_coords() {
                    let coord = pmtiles::TileCoord::from(id);
                    let tile = TileCoord::new(coord.z(), coord.x(), coord.y())
                        .map_err(|e| Error::output(path, format!("the archive holds {e}")))?;
                    let bytes = reader
                        .get_tile(id)
                        .await
                        .map_err(read_error(path))?
                        .map_or(0, |b| b.len());
                    sizes.push((tile, bytes as u64));
                }
            }
            Ok(sizes)
        }
        .boxed()
    }

    fn tile(&self, tile: TileCoord) -> BoxFuture<'_, Result<Option<Vec<u8>>>> {
        async move {
            let id = pmtiles::TileCoord::new(tile.z(), tile.x(), tile.y())
                .map_err(read_error(&self.path))?;
            Ok(self
                .reader
                .get_tile(id)
                .await
                .map_err(read_error(&self.path))?
                .map(|bytes| bytes.to_vec()))
        }
        .boxed()
    }
    fn state(&self) -> BoxFuture<'_, Result<Option<String>>> {
        async move {
            let metadata = self.metadata().await?;
            Ok(metadata[super::ARCHIVE_STATE_KEY]
                .as_str()
                .map(str::to_string))
        }
        .boxed()
    }
}
