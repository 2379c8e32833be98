//! `oar-tiles inspect`: what an output holds — metadata or TileJSON, tiles and bytes per zoom, the
//! largest tiles, bounds — read without changing anything, through [`OutputReader`], which `serve`
//! reads outputs with too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::config::S3Config;
use crate::error::{Error, Result};
use crate::report::human_bytes;
use crate::sink::tilejson::TILEJSON_NAME;
use crate::sink::{s3, OutputTarget};
use crate::tile::TileCoord;

/// Tiles and bytes of one zoom.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ZoomInventory {
    /// Zoom level.
    pub zoom: u8,
    /// Tiles stored.
    pub tiles: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// The largest tile, `z/x/y`.
    pub largest_tile: String,
    /// Its size.
    pub largest_bytes: u64,
}

/// What an output holds.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The output as given.
    pub output: String,
    /// MBTiles metadata (with `json` expanded) or the TileJSON document; null when absent.
    pub metadata: Value,
    /// Bounds `[west, south, east, north]` from the metadata, when it has them.
    pub bounds: Option<Vec<f64>>,
    /// Tiles stored in all.
    pub tiles: u64,
    /// Bytes stored in all.
    pub bytes: u64,
    /// Per-zoom figures, lowest zoom first.
    pub zooms: Vec<ZoomInventory>,
}

#[derive(Default)]
struct Counter {
    zooms: BTreeMap<u8, ZoomInventory>,
}

impl Counter {
    fn add(&mut self, tile: TileCoord, bytes: u64) {
        let zoom = self.zooms.entry(tile.z()).or_insert_with(|| ZoomInventory {
            zoom: tile.z(),
            ..Default::default()
        });
        zoom.tiles += 1;
        zoom.bytes += bytes;
        if bytes > zoom.largest_bytes || zoom.largest_tile.is_empty() {
            zoom.largest_bytes = bytes;
            zoom.largest_tile = tile.to_string();
        }
    }

    fn into_inventory(self, output: &str, metadata: Value) -> Inventory {
        let bounds = bounds(&metadata);
        let zooms: Vec<ZoomInventory> = self.zooms.into_values().collect();
        Inventory {
            output: output.to_string(),
            tiles: zooms.iter().map(|z| z.tiles).sum(),
            bytes: zooms.iter().map(|z| z.bytes).sum(),
            metadata,
            bounds,
            zooms,
        }
    }
}

/// Bounds `[west, south, east, north]` from metadata, as MBTiles (text) or TileJSON (numbers)
/// writes them.
pub fn bounds(metadata: &Value) -> Option<Vec<f64>> {
    match &metadata["bounds"] {
        Value::Array(values) => values.iter().map(|v| v.as_f64()).collect(),
        Value::String(text) => text.split(',').map(|v| v.trim().parse().ok()).collect(),
        _ => None,
    }
}

/// Reads an output's inventory.
pub async fn inspect(
    output: &str,
    target: &OutputTarget,
    s3_config: &S3Config,
    extension: &str,
) -> Result<Inventory> {
    let reader = OutputReader::open(output, target, s3_config, extension).await?;
    let metadata = reader.metadata().await?;
    Ok(inventory(output, metadata, reader.tile_sizes().await?))
}

/// The inventory of an output whose metadata and tile sizes were read (see [`OutputReader`]).
pub fn inventory(output: &str, metadata: Value, sizes: Vec<(TileCoord, u64)>) -> Inventory {
    let mut counter = Counter::default();
    for (tile, bytes) in sizes {
        counter.add(tile, bytes);
    }
    counter.into_inventory(output, metadata)
}

/// An output opened for reading only: its metadata, the size of every tile, one tile's bytes.
/// `inspect` and `serve` read every kind of output through it.
pub enum OutputReader {
    /// An MBTiles file, opened read-only for each read.
    Mbtiles(PathBuf),
    /// A PMTiles archive, memory-mapped.
    Pmtiles {
        /// The archive.
        path: PathBuf,
        /// Its reader, shared by concurrent reads.
        reader: Arc<pmtiles::AsyncPmTilesReader<pmtiles::MmapBackend>>,
    },
    /// A `{z}/{x}/{y}.ext` tree.
    Directory {
        /// The tree's root.
        root: PathBuf,
        /// Tile file extension.
        extension: String,
    },
    /// `{prefix}/{z}/{x}/{y}.ext` objects.
    S3 {
        /// The output as given, for errors.
        output: String,
        /// The client.
        client: aws_sdk_s3::Client,
        /// Bucket name.
        bucket: String,
        /// Key prefix.
        prefix: String,
        /// Tile object extension.
        extension: String,
        /// Attempts per request.
        attempts: u32,
    },
}

impl OutputReader {
    /// Opens an output for reading; fails when it is not there or is not of its kind.
    pub async fn open(
        output: &str,
        target: &OutputTarget,
        s3_config: &S3Config,
        extension: &str,
    ) -> Result<OutputReader> {
        Ok(match target {
            OutputTarget::Mbtiles(path) => {
                if !path.is_file() {
                    return Err(Error::output(path, "no such MBTiles file"));
                }
                OutputReader::Mbtiles(path.clone())
            }
            OutputTarget::Pmtiles(path) => {
                if !path.is_file() {
                    return Err(Error::output(path, "no such PMTiles file"));
                }
                let reader = pmtiles::AsyncPmTilesReader::new_with_path(path)
                    .await
                    .map_err(pmtiles_error(path))?;
                OutputReader::Pmtiles {
                    path: path.clone(),
                    reader: Arc::new(reader),
                }
            }
            OutputTarget::Directory(root) => {
                if !root.is_dir() {
                    return Err(Error::output(root, "no such directory"));
                }
                OutputReader::Directory {
                    root: root.clone(),
                    extension: extension.to_string(),
                }
            }
            OutputTarget::S3Pmtiles { bucket, key } => {
                s3_archive(output, bucket, key, s3_config).await?
            }
            OutputTarget::S3 { bucket, prefix } => OutputReader::S3 {
                output: output.to_string(),
                client: s3::client(s3_config).await,
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                extension: extension.to_string(),
                attempts: s3_config.max_attempts,
            },
        })
    }

    /// MBTiles metadata (with `json` expanded), the PMTiles metadata and header, or the TileJSON
    /// document beside directory and S3 tiles; null when there is none.
    pub async fn metadata(&self) -> Result<Value> {
        match self {
            OutputReader::Mbtiles(path) => mbtiles_metadata(path),
            OutputReader::Pmtiles { path, reader } => pmtiles_metadata(path, reader).await,
            OutputReader::Directory { root, .. } => match std::fs::read(root.join(TILEJSON_NAME)) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    Error::output(root.join(TILEJSON_NAME), format!("not valid JSON: {e}"))
                }),
                Err(_) => Ok(Value::Null),
            },
            OutputReader::S3 { prefix, output, .. } => {
                let key = if prefix.is_empty() {
                    TILEJSON_NAME.to_string()
                } else {
                    format!("{prefix}/{TILEJSON_NAME}")
                };
                match self.s3_object(&key).await? {
                    Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                        Error::output(output, format!("{key} is not valid JSON: {e}"))
                    }),
                    None => Ok(Value::Null),
                }
            }
        }
    }

    /// Every stored tile with its size in bytes.
    pub async fn tile_sizes(&self) -> Result<Vec<(TileCoord, u64)>> {
        match self {
            OutputReader::Mbtiles(path) => mbtiles_sizes(path),
            OutputReader::Pmtiles { path, reader } => pmtiles_sizes(path, reader).await,
            OutputReader::Directory { root, extension } => directory_sizes(root, extension),
            OutputReader::S3 {
                output,
                client,
                bucket,
                prefix,
                extension,
                attempts,
            } => {
                let tiles = s3::list_tiles(client, bucket, prefix, extension, *attempts)
                    .await
                    .map_err(|e| Error::output_caused(output, e))?;
                Ok(tiles
                    .into_iter()
                    .map(|(tile, _, size)| (tile, size.max(0) as u64))
                    .collect())
            }
        }
    }

    /// One tile's stored bytes, or `None` when the output does not hold it.
    pub async fn tile(&self, tile: TileCoord) -> Result<Option<Vec<u8>>> {
        match self {
            OutputReader::Mbtiles(path) => {
                let owned = path.clone();
                // SQLite blocks; a server keeps answering other requests meanwhile.
                tokio::task::spawn_blocking(move || mbtiles_tile(&owned, tile))
                    .await
                    .map_err(|e| Error::output(path, format!("reading {tile}: {e}")))?
            }
            OutputReader::Pmtiles { path, reader } => {
                let id = pmtiles::TileCoord::new(tile.z(), tile.x(), tile.y())
                    .map_err(pmtiles_error(path))?;
                Ok(reader
                    .get_tile(id)
                    .await
                    .map_err(pmtiles_error(path))?
                    .map(|bytes| bytes.to_vec()))
            }
            OutputReader::Directory { root, extension } => {
                // The path is built from validated numbers only, so it cannot leave the tree.
                let path = root
                    .join(tile.z().to_string())
                    .join(tile.x().to_string())
                    .join(format!("{}.{extension}", tile.y()));
                match tokio::fs::read(&path).await {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::output(path, format!("cannot read it: {e}"))),
                }
            }
            OutputReader::S3 {
                prefix, extension, ..
            } => {
                self.s3_object(&s3::tile_object_key(prefix, tile, extension))
                    .await
            }
        }
    }

    async fn s3_object(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let OutputReader::S3 {
            output,
            client,
            bucket,
            attempts,
            ..
        } = self
        else {
            return Ok(None);
        };
        s3::get_if_exists(client, bucket, key, *attempts)
            .await
            .map_err(|e| Error::output_caused(output, e))
    }
}

/// A PMTiles archive on S3, downloaded to a private temporary file (a name no other user can
/// guess or plant a link at, readable by this user alone) and read as a local one. The file is
/// removed once mapped: the mapping keeps its pages until the reader goes.
async fn s3_archive(
    output: &str,
    bucket: &str,
    key: &str,
    config: &S3Config,
) -> Result<OutputReader> {
    let client = s3::client(config).await;
    let mut file = tempfile::Builder::new()
        .prefix("oar-tiles-read-")
        .suffix(".pmtiles")
        .tempfile()
        .map_err(|e| {
            Error::output(
                std::env::temp_dir(),
                format!("cannot create a temporary file to download {output} into: {e}"),
            )
        })?;
    let path = file.path().to_path_buf();
    let downloaded = s3::download_into(
        &client,
        bucket,
        key,
        file.as_file_mut(),
        config.max_attempts,
    )
    .await
    .map_err(|e| Error::output_caused(output, e));
    let opened = match downloaded {
        Ok(_) => pmtiles::AsyncPmTilesReader::new_with_path(&path)
            .await
            .map_err(pmtiles_error(&path)),
        Err(err) => Err(err),
    };
    drop(file);
    Ok(OutputReader::Pmtiles {
        path: PathBuf::from(output),
        reader: Arc::new(opened?),
    })
}

fn pmtiles_error(path: &Path) -> impl Fn(pmtiles::PmtError) -> Error + '_ {
    move |e| Error::output(path, format!("cannot read it as PMTiles: {e}"))
}

/// The JSON metadata of a PMTiles archive, with the header's bounds, zooms, tile type,
/// compression and clustering under `pmtiles`.
async fn pmtiles_metadata(
    path: &Path,
    reader: &pmtiles::AsyncPmTilesReader<pmtiles::MmapBackend>,
) -> Result<Value> {
    let header = reader.get_header();
    let mut metadata: Value =
        serde_json::from_str(&reader.get_metadata().await.map_err(pmtiles_error(path))?)
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

async fn pmtiles_sizes(
    path: &Path,
    reader: &Arc<pmtiles::AsyncPmTilesReader<pmtiles::MmapBackend>>,
) -> Result<Vec<(TileCoord, u64)>> {
    use futures::StreamExt;
    let mut sizes = Vec::new();
    let mut entries = reader.clone().entries();
    while let Some(entry) = entries.next().await {
        let entry = entry.map_err(pmtiles_error(path))?;
        for id in entry.iter_coords() {
            let coord = pmtiles::TileCoord::from(id);
            let tile = TileCoord::new(coord.z(), coord.x(), coord.y())
                .map_err(|e| Error::output(path, format!("the archive holds {e}")))?;
            let bytes = reader
                .get_tile(id)
                .await
                .map_err(pmtiles_error(path))?
                .map_or(0, |b| b.len());
            sizes.push((tile, bytes as u64));
        }
    }
    Ok(sizes)
}

fn mbtiles_connection(path: &Path) -> Result<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(mbtiles_error(path))
}

fn mbtiles_error(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::output(path, format!("cannot read it as MBTiles: {e}"))
}

fn mbtiles_metadata(path: &Path) -> Result<Value> {
    let fail = mbtiles_error(path);
    let connection = mbtiles_connection(path)?;
    let mut metadata = serde_json::Map::new();
    let mut statement = connection
        .prepare("SELECT name, value FROM metadata")
        .map_err(&fail)?;
    let rows = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
        })
        .map_err(&fail)?;
    for row in rows {
        let (name, value) = row.map_err(&fail)?;
        let value = value.unwrap_or_default();
        let parsed = if name == "json" {
            serde_json::from_str(&value).unwrap_or(Value::String(value))
        } else {
            Value::String(value)
        };
        metadata.insert(name, parsed);
    }
    Ok(Value::Object(metadata))
}

fn mbtiles_sizes(path: &Path) -> Result<Vec<(TileCoord, u64)>> {
    let fail = mbtiles_error(path);
    let connection = mbtiles_connection(path)?;
    let mut statement = connection
        .prepare("SELECT zoom_level, tile_column, tile_row, length(tile_data) FROM tiles")
        .map_err(&fail)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, u64>(3)?,
            ))
        })
        .map_err(&fail)?;
    let mut sizes = Vec::new();
    for row in rows {
        let (z, x, tms_row, bytes) = row.map_err(&fail)?;
        let tile = TileCoord::from_tms(z, x, tms_row).map_err(|e| Error::output_caused(path, e))?;
        sizes.push((tile, bytes));
    }
    Ok(sizes)
}

fn mbtiles_tile(path: &Path, tile: TileCoord) -> Result<Option<Vec<u8>>> {
    use rusqlite::OptionalExtension;
    let connection = mbtiles_connection(path)?;
    connection
        .query_row(
            "SELECT tile_data FROM tiles WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3",
            (tile.z(), tile.x(), tile.tms_row()),
            |row| row.get::<_, Vec<u8>>(0),
        )
        .optional()
        .map_err(mbtiles_error(path))
}

fn directory_sizes(root: &Path, extension: &str) -> Result<Vec<(TileCoord, u64)>> {
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
                    sizes.push((tile, y_entry.metadata().map(|m| m.len()).unwrap_or(0)));
                }
            }
        }
    }
    Ok(sizes)
}

impl Inventory {
    /// The inventory as an operator reads it.
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n", self.output);
        match &self.metadata {
            Value::Object(map) => {
                for (key, value) in map {
                    if key == "json" || key == "vector_layers" {
                        continue;
                    }
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.push_str(&format!("  {key}: {text}\n"));
                }
                let layers = map
                    .get("vector_layers")
                    .or_else(|| map.get("json").and_then(|j| j.get("vector_layers")));
                if let Some(Value::Array(layers)) = layers {
                    for layer in layers {
                        let fields: Vec<String> = layer["fields"]
                            .as_object()
                            .map(|f| {
                                f.iter()
                                    .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or("?")))
                                    .collect()
                            })
                            .unwrap_or_default();
                        out.push_str(&format!(
                            "  layer {} (zoom {}-{}): {}\n",
                            layer["id"].as_str().unwrap_or("?"),
                            layer["minzoom"],
                            layer["maxzoom"],
                            fields.join(", ")
                        ));
                    }
                }
            }
            _ => out.push_str("  (no metadata)\n"),
        }
        out.push_str(&format!(
            "{:>5} {:>10} {:>12} {:>24}\n",
            "zoom", "tiles", "bytes", "largest tile"
        ));
        for zoom in &self.zooms {
            out.push_str(&format!(
                "{:>5} {:>10} {:>12} {:>24}\n",
                zoom.zoom,
                zoom.tiles,
                human_bytes(zoom.bytes),
                format!("{} {}", zoom.largest_tile, human_bytes(zoom.largest_bytes))
            ));
        }
        out.push_str(&format!(
            "{:>5} {:>10} {:>12}\n",
            "total",
            self.tiles,
            human_bytes(self.bytes)
        ));
        out
    }
}
