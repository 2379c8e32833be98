//! `oar-tiles inspect`: what an output holds — metadata or TileJSON, tiles and bytes per zoom, the
//! largest tiles, bounds — read without changing anything, through [`OutputReader`], which `serve`
//! reads outputs with too.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::config::StoreConfig;
use crate::error::Result;
use crate::report::human_bytes;
use crate::sink::{OutputReader, OutputTarget};
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
    store_settings: &StoreConfig,
    extension: &str,
) -> Result<Inventory> {
    let reader = OutputReader::open(output, target, store_settings, extension).await?;
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
