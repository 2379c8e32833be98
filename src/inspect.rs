//! `oar-tiles inspect`: what an output holds — metadata or TileJSON, tiles and bytes per zoom, the
//! largest tiles, bounds — read without changing anything.

use std::collections::BTreeMap;
use std::path::Path;

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
        let bounds = match &metadata["bounds"] {
            Value::Array(values) => values
                .iter()
                .map(|v| v.as_f64())
                .collect::<Option<Vec<f64>>>(),
            Value::String(text) => text.split(',').map(|v| v.trim().parse().ok()).collect(),
            _ => None,
        };
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

/// Reads an output's inventory.
pub async fn inspect(
    output: &str,
    target: &OutputTarget,
    s3_config: &S3Config,
    extension: &str,
) -> Result<Inventory> {
    match target {
        OutputTarget::Mbtiles(path) => inspect_mbtiles(output, path),
        OutputTarget::Pmtiles(path) => inspect_pmtiles(output, path).await,
        OutputTarget::Directory(path) => inspect_directory(output, path, extension),
        OutputTarget::S3 { bucket, prefix } => {
            inspect_s3(output, bucket, prefix, s3_config, extension).await
        }
        OutputTarget::S3Pmtiles { bucket, key } => {
            inspect_s3_pmtiles(output, bucket, key, s3_config).await
        }
    }
}

/// A PMTiles archive on S3, downloaded to a temporary file and read as a local one.
async fn inspect_s3_pmtiles(
    output: &str,
    bucket: &str,
    key: &str,
    config: &S3Config,
) -> Result<Inventory> {
    let client = s3::client(config).await;
    let file = std::env::temp_dir().join(format!(
        "oar-tiles-inspect-{}-{}",
        std::process::id(),
        key.rsplit('/').next().unwrap_or("archive")
    ));
    let downloaded = s3::download(&client, bucket, key, &file, config.max_attempts)
        .await
        .map_err(|e| Error::output_caused(output, e));
    let inventory = match downloaded {
        Ok(_) => inspect_pmtiles(output, &file).await,
        Err(err) => Err(err),
    };
    let _ = std::fs::remove_file(&file);
    inventory
}

/// A PMTiles archive, read with the `pmtiles` crate: its JSON metadata, with the header's bounds,
/// zooms, tile type, compression and clustering under `pmtiles`.
async fn inspect_pmtiles(output: &str, path: &Path) -> Result<Inventory> {
    use futures::StreamExt;
    if !path.is_file() {
        return Err(Error::output(path, "no such PMTiles file"));
    }
    let fail =
        |e: pmtiles::PmtError| Error::output(path, format!("cannot read it as PMTiles: {e}"));
    let reader = std::sync::Arc::new(
        pmtiles::AsyncPmTilesReader::new_with_path(path)
            .await
            .map_err(fail)?,
    );
    let header = reader.get_header();
    let mut metadata: Value =
        serde_json::from_str(&reader.get_metadata().await.map_err(fail)?).unwrap_or(Value::Null);
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
    let mut counter = Counter::default();
    let mut entries = reader.clone().entries();
    while let Some(entry) = entries.next().await {
        let entry = entry.map_err(fail)?;
        for id in entry.iter_coords() {
            let coord = pmtiles::TileCoord::from(id);
            let tile = TileCoord::new(coord.z(), coord.x(), coord.y())
                .map_err(|e| Error::output(path, format!("the archive holds {e}")))?;
            let bytes = reader
                .get_tile(id)
                .await
                .map_err(fail)?
                .map_or(0, |b| b.len());
            counter.add(tile, bytes as u64);
        }
    }
    Ok(counter.into_inventory(output, metadata))
}

fn inspect_mbtiles(output: &str, path: &Path) -> Result<Inventory> {
    if !path.is_file() {
        return Err(Error::output(path, "no such MBTiles file"));
    }
    let fail = |e: rusqlite::Error| Error::output(path, format!("cannot read it as MBTiles: {e}"));
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(fail)?;
    let mut metadata = serde_json::Map::new();
    let mut statement = connection
        .prepare("SELECT name, value FROM metadata")
        .map_err(fail)?;
    let rows = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
        })
        .map_err(fail)?;
    for row in rows {
        let (name, value) = row.map_err(fail)?;
        let value = value.unwrap_or_default();
        let parsed = if name == "json" {
            serde_json::from_str(&value).unwrap_or(Value::String(value))
        } else {
            Value::String(value)
        };
        metadata.insert(name, parsed);
    }
    let mut counter = Counter::default();
    let mut statement = connection
        .prepare("SELECT zoom_level, tile_column, tile_row, length(tile_data) FROM tiles")
        .map_err(fail)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, u64>(3)?,
            ))
        })
        .map_err(fail)?;
    for row in rows {
        let (z, x, tms_row, bytes) = row.map_err(fail)?;
        let tile = TileCoord::from_tms(z, x, tms_row).map_err(|e| Error::output_caused(path, e))?;
        counter.add(tile, bytes);
    }
    Ok(counter.into_inventory(output, Value::Object(metadata)))
}

fn inspect_directory(output: &str, root: &Path, extension: &str) -> Result<Inventory> {
    if !root.is_dir() {
        return Err(Error::output(root, "no such directory"));
    }
    let metadata = match std::fs::read(root.join(TILEJSON_NAME)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::output(root.join(TILEJSON_NAME), format!("not valid JSON: {e}")))?,
        Err(_) => Value::Null,
    };
    let mut counter = Counter::default();
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
                    counter.add(tile, y_entry.metadata().map(|m| m.len()).unwrap_or(0));
                }
            }
        }
    }
    Ok(counter.into_inventory(output, metadata))
}

async fn inspect_s3(
    output: &str,
    bucket: &str,
    prefix: &str,
    config: &S3Config,
    extension: &str,
) -> Result<Inventory> {
    let client = s3::client(config).await;
    let tiles = s3::list_tiles(&client, bucket, prefix, extension, config.max_attempts)
        .await
        .map_err(|e| Error::output_caused(output, e))?;
    let mut counter = Counter::default();
    for (tile, _, size) in tiles {
        counter.add(tile, size.max(0) as u64);
    }
    let key = if prefix.is_empty() {
        TILEJSON_NAME.to_string()
    } else {
        format!("{prefix}/{TILEJSON_NAME}")
    };
    let metadata = match s3::get_if_exists(&client, bucket, &key, config.max_attempts)
        .await
        .map_err(|e| Error::output_caused(output, e))?
    {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::output(output, format!("{key} is not valid JSON: {e}")))?,
        None => Value::Null,
    };
    Ok(counter.into_inventory(output, metadata))
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
