//! What identifies a tileset's summary: the tileset, output and zooms, how the run ended and, for
//! a reseed, what it read and which way it took each zoom.

use serde::Serialize;

use crate::plan::ZoomWay;

/// What identifies a summary.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryHeader {
    /// Tileset name.
    pub tileset: String,
    /// Output description.
    pub output: String,
    /// Zoom range as text.
    pub zooms: String,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// Whether every planned tile was rendered (false after --max-duration ran out).
    pub complete: bool,
    /// Changed geometries read for a reseed (an update counts its old and its new position).
    pub changes_read: Option<u64>,
    /// When the changes a complete reseed applied were committed (seconds since the Unix epoch),
    /// for change-to-tile latencies; not part of the JSON summary.
    #[serde(skip)]
    pub committed: Vec<f64>,
    /// The digest of the tile settings the run rendered with, which `validate --against-db`
    /// compares with the one the output recorded; not part of the JSON summary.
    #[serde(skip)]
    pub settings: Option<String>,
    /// How a reseed took each zoom (listed or walked), where it weighed the two.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ways: Vec<ZoomWay>,
}

impl SummaryHeader {
    /// The header of a complete run of `tileset` into `output` over `zooms` that read no changes
    /// and weighed no ways: what a run that only delivers, or a test, starts from.
    pub fn complete(tileset: String, output: String, zooms: String) -> SummaryHeader {
        SummaryHeader {
            tileset,
            output,
            zooms,
            dry_run: false,
            complete: true,
            changes_read: None,
            committed: Vec::new(),
            settings: None,
            ways: Vec::new(),
        }
    }
}
