//! Where tiles go. The render side hands finished (compressed) tiles to a [`Sink`] and never learns
//! which kind it feeds.
//!
//! Lifecycle: [`open`] a sink for a target, [`Sink::write_tile`] any number of times from one writer
//! thread, then either [`Sink::finish`] with the tileset's metadata, which makes the output visible, or
//! [`Sink::abort`], which leaves nothing half-written behind.

pub mod mbtiles;

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::tile::{BBox, TileCoord, ZoomRange};

/// An output location as the operator wrote it, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// A single MBTiles 1.3 file.
    Mbtiles(PathBuf),
}

impl OutputTarget {
    /// Classifies an output string: `*.mbtiles` is an MBTiles file.
    pub fn parse(output: &str) -> Result<Self> {
        let output = output.trim();
        if output.is_empty() {
            return Err(Error::Usage("the output is empty".into()));
        }
        if output.ends_with(".mbtiles") && !output.contains("://") {
            return Ok(OutputTarget::Mbtiles(PathBuf::from(output)));
        }
        Err(Error::Usage(format!(
            "output `{output}` is not supported: expected a path ending in .mbtiles"
        )))
    }

    /// A short name for logs and summaries.
    pub fn describe(&self) -> String {
        match self {
            OutputTarget::Mbtiles(path) => format!("{} (MBTiles)", path.display()),
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
    /// A default view: the bbox centre at a zoom between min and max.
    pub fn center(&self) -> (f64, f64, u8) {
        let (lon, lat) = self.bounds.center();
        (lon, lat, self.zooms.min.max(self.zooms.max.min(2)))
    }
}

/// A destination for tiles. Implementations are driven from one thread.
pub trait Sink: Send {
    /// Stores one tile's encoded bytes, replacing any tile already there.
    fn write_tile(&mut self, tile: TileCoord, data: &[u8]) -> Result<()>;

    /// Writes the metadata and makes the output visible and complete.
    fn finish(self: Box<Self>, metadata: &TilesetMetadata) -> Result<()>;

    /// Gives up: removes whatever this sink created and leaves any earlier output untouched.
    fn abort(self: Box<Self>);
}

/// Opens a sink for a target; fails early when the target cannot be written.
pub fn open(target: &OutputTarget) -> Result<Box<dyn Sink>> {
    match target {
        OutputTarget::Mbtiles(path) => Ok(Box::new(mbtiles::MbtilesSink::create(path)?)),
    }
}
