//! Where tiles go. The render side hands finished (compressed) tiles to a [`Sink`] and never learns
//! which kind it feeds.
//!
//! Lifecycle: [`open`] a sink for a target, [`Sink::write_tile`] any number of times from one writer
//! thread, then either [`Sink::finish`] with the tileset's metadata, which makes the output visible, or
//! [`Sink::abort`], which leaves nothing half-written behind.

pub mod changes;
pub mod directory;
pub mod journal;
pub mod lock;
pub mod mbtiles;
pub mod s3;
pub mod tilejson;

pub use changes::ChangeLog;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::S3Config;
use crate::error::{Error, Result};
use crate::tile::{BBox, TileCoord, ZoomRange};

/// An output location as the operator wrote it, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// A single MBTiles 1.3 file.
    Mbtiles(PathBuf),
    /// A `{z}/{x}/{y}.ext` tree under a directory.
    Directory(PathBuf),
    /// `{prefix}/{z}/{x}/{y}.ext` objects in an S3 bucket.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix without leading or trailing slash; may be empty.
        prefix: String,
    },
}

impl OutputTarget {
    /// Classifies an output: `s3://bucket/prefix`, `dir:path` or `path/` (a directory tree), or
    /// `path.mbtiles`.
    pub fn parse(output: &str) -> Result<Self> {
        let output = output.trim();
        if output.is_empty() {
            return Err(Error::Usage("the output is empty".into()));
        }
        if let Some(rest) = output.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !valid_bucket {
                return Err(Error::Usage(format!(
                    "output `{output}`: `{bucket}` is not a valid S3 bucket name (3-63 lowercase letters, digits, `-`, `.`)"
                )));
            }
            return Ok(OutputTarget::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if output.contains("://") {
            return Err(Error::Usage(format!(
                "output `{output}` is not supported: expected path.mbtiles, dir:PATH, PATH/ or s3://bucket/prefix"
            )));
        }
        if let Some(path) = output.strip_prefix("dir:") {
            return Ok(OutputTarget::Directory(PathBuf::from(path)));
        }
        if output.ends_with('/') || Path::new(output).is_dir() {
            return Ok(OutputTarget::Directory(PathBuf::from(output)));
        }
        if output.ends_with(".mbtiles") {
            return Ok(OutputTarget::Mbtiles(PathBuf::from(output)));
        }
        Err(Error::Usage(format!(
            "output `{output}` is not supported: expected path.mbtiles, dir:PATH, PATH/ or s3://bucket/prefix"
        )))
    }

    /// A short name for logs and summaries.
    pub fn describe(&self) -> String {
        match self {
            OutputTarget::Mbtiles(path) => format!("{} (MBTiles)", path.display()),
            OutputTarget::Directory(path) => format!("{} (directory)", path.display()),
            OutputTarget::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// The type of a feature property, as TileJSON's `vector_layers` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FieldType {
    /// Any numeric column.
    Number,
    /// A boolean column.
    Boolean,
    /// Text, and anything else (rendered as its text form).
    String,
}

/// One entry of `vector_layers`.
#[derive(Debug, Clone, Serialize)]
pub struct VectorLayer {
    /// Layer name inside the tiles.
    pub id: String,
    /// Property names and their types.
    pub fields: std::collections::BTreeMap<String, FieldType>,
    /// Lowest zoom at which the layer appears.
    pub minzoom: u8,
    /// Highest zoom at which the layer appears.
    pub maxzoom: u8,
}

/// What a finished output records about its tileset.
#[derive(Debug, Clone)]
pub struct TilesetMetadata {
    /// Tileset name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Attribution text.
    pub attribution: Option<String>,
    /// Area covered.
    pub bounds: BBox,
    /// Zooms rendered.
    pub zooms: ZoomRange,
    /// Layers and their fields.
    pub vector_layers: Vec<VectorLayer>,
}

impl TilesetMetadata {
    /// The name/value pairs of an MBTiles `metadata` table (also tippecanoe's `metadata.json`).
    pub fn mbtiles_rows(&self) -> Vec<(&'static str, String)> {
        let bounds = self.bounds;
        let (lon, lat, zoom) = self.center();
        let json = serde_json::json!({ "vector_layers": self.vector_layers });
        let mut rows = vec![
            ("name", self.name.clone()),
            ("format", "pbf".into()),
            ("type", "overlay".into()),
            ("version", "1".into()),
            (
                "bounds",
                format!(
                    "{},{},{},{}",
                    bounds.west, bounds.south, bounds.east, bounds.north
                ),
            ),
            ("center", format!("{lon},{lat},{zoom}")),
            ("minzoom", self.zooms.min.to_string()),
            ("maxzoom", self.zooms.max.to_string()),
            ("json", json.to_string()),
            (
                "generator",
                format!("oar-tiles {}", env!("CARGO_PKG_VERSION")),
            ),
        ];
        if let Some(description) = &self.description {
            rows.push(("description", description.clone()));
        }
        if let Some(attribution) = &self.attribution {
            rows.push(("attribution", attribution.clone()));
        }
        rows
    }

    /// A default view: the bbox centre at a zoom between min and max.
    pub fn center(&self) -> (f64, f64, u8) {
        let (lon, lat) = self.bounds.center();
        (lon, lat, self.zooms.min.max(self.zooms.max.min(2)))
    }
}

/// How a tileset's tiles are stored, beyond where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSettings {
    /// File extension of directory and S3 tiles.
    pub tile_extension: String,
    /// Whether directory and S3 tiles are gzip-compressed (MBTiles tiles always are).
    pub compress: bool,
    /// Gzip level, 1 (fastest) to 9 (smallest).
    pub compression_level: u32,
    /// `Cache-Control` of S3 tile objects.
    pub cache_control: String,
    /// Tile URL template for TileJSON; default relative `{z}/{x}/{y}.ext`.
    pub tiles_url: Option<String>,
}

impl Default for OutputSettings {
    fn default() -> Self {
        Self {
            tile_extension: "pbf".into(),
            compress: true,
            compression_level: crate::encode::DEFAULT_LEVEL,
            cache_control: DEFAULT_CACHE_CONTROL.into(),
            tiles_url: None,
        }
    }
}

/// Suits tiles that get reseeded: caches revalidate hourly and may serve a stale tile for a day
/// while they do.
pub const DEFAULT_CACHE_CONTROL: &str = "public, max-age=3600, stale-while-revalidate=86400";

impl OutputTarget {
    /// Whether tiles for this target are stored gzip-compressed.
    pub fn stores_gzip(&self, settings: &OutputSettings) -> bool {
        matches!(self, OutputTarget::Mbtiles(_)) || settings.compress
    }
}

/// What a sink did, counted when it finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SinkReport {
    /// Tiles stored that were new or different.
    pub changed: u64,
    /// Tiles whose stored bytes already matched, so nothing was written.
    pub unchanged: u64,
    /// Tiles removed: emptied, or (after a full seed) no longer produced.
    pub deleted: u64,
}

/// What an interrupted walk left for the next run of the same job.
#[derive(Debug, Default)]
pub struct Resume {
    /// Finished tiles (by [`tile_key`]) and which of their children hold rows.
    pub done: std::collections::HashMap<u64, [bool; 4]>,
    /// The watermark the interrupted run started from.
    pub watermark: Option<String>,
}

/// A destination for tiles. Implementations are driven from one thread.
pub trait Sink: Send {
    /// Stores one tile's encoded bytes, replacing any tile already there.
    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()>;

    /// Removes a tile that has become empty; a tile that is not there is fine.
    fn delete_tile(&mut self, tile: TileCoord) -> Result<()>;

    /// The job state (change watermark) the output recorded when it was last finished.
    fn state(&self) -> Option<String>;

    /// Starts (or, after an interruption, picks up) the journal of a pyramid walk: returns the tiles
    /// an interrupted run of the same job already finished and the watermark that run started from;
    /// otherwise records `watermark` and returns nothing done. Sinks without a journal return `None`.
    fn begin_journal(&mut self, _watermark: Option<&str>) -> Result<Option<Resume>> {
        Ok(None)
    }

    /// Learns, before the first tile and the journal, how many tiles the run may write at most
    /// (`None`: a walk of the whole pyramid), so a sink can choose how to stage them. It may block.
    fn prepare(&mut self, _planned: Option<usize>) -> Result<()> {
        Ok(())
    }

    /// Records that a walked tile is finished and which of its children hold rows; durable together
    /// with the tile it wrote, if any.
    fn journal(&mut self, _tile: TileCoord, _children: [bool; 4], _written: bool) -> Result<()> {
        Ok(())
    }

    /// Writes the metadata and makes the output complete. With `sweep`, tiles inside the metadata's
    /// zoom range and bounds that this run did not write are deleted: a full seed leaves exactly its
    /// own tiles there. `state`, when given, is recorded last, once every tile is durable.
    fn finish(
        self: Box<Self>,
        metadata: &TilesetMetadata,
        sweep: bool,
        state: Option<&str>,
    ) -> Result<SinkReport>;

    /// Gives up: removes whatever this sink created and leaves any earlier output untouched, or at
    /// least readable with every tile it held before or was given since.
    fn abort(self: Box<Self>);
}

/// Opens a sink for a target; fails early when the target cannot be written.
pub async fn open(
    target: &OutputTarget,
    settings: &OutputSettings,
    s3: &S3Config,
    changes: ChangeLog,
    journal: Option<&str>,
) -> Result<Box<dyn Sink>> {
    Ok(match target {
        OutputTarget::Mbtiles(path) => {
            Box::new(mbtiles::MbtilesSink::create(path, changes, journal)?)
        }
        OutputTarget::Directory(path) => Box::new(directory::DirectorySink::create(
            path, settings, changes, journal,
        )?),
        OutputTarget::S3 { bucket, prefix } => {
            Box::new(s3::S3Sink::create(bucket, prefix, s3, settings, changes, journal).await?)
        }
    })
}

/// Packs a tile into one integer, for compact sets of tiles.
pub fn tile_key(tile: TileCoord) -> u64 {
    (u64::from(tile.z()) << 58) | (u64::from(tile.x()) << 29) | u64::from(tile.y())
}

/// The tile a [`tile_key`] packs; `None` for a number no tile packs to.
pub fn tile_from_key(key: u64) -> Option<TileCoord> {
    let mask = (1u64 << 29) - 1;
    let z = u8::try_from(key >> 58).ok()?;
    let x = u32::try_from((key >> 29) & mask).ok()?;
    let y = u32::try_from(key & mask).ok()?;
    TileCoord::new(z, x, y).ok()
}

/// Whether a tile lies within a zoom range and the tile ranges of a bbox.
pub fn in_scope(tile: TileCoord, zooms: ZoomRange, bounds: &BBox) -> bool {
    zooms.contains(tile.z()) && bounds.tile_range(tile.z()).contains(tile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_keys_unpack_to_their_tile() {
        for tile in [(0, 0, 0), (14, 12307, 7075), (24, (1 << 24) - 1, 5)] {
            let tile = TileCoord::new(tile.0, tile.1, tile.2).unwrap();
            assert_eq!(tile_from_key(tile_key(tile)), Some(tile));
        }
        assert_eq!(tile_from_key(u64::MAX), None);
    }
}
