//! The watermark an output keeps: the database snapshot its tiles reflect, the zooms and area they
//! cover, and a digest of the settings that decided their bytes.

use serde::{Deserialize, Serialize};

/// What an output records about the data it reflects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// `pg_current_snapshot()` as text, taken before the seed read any row.
    pub snapshot: String,
    /// A digest of the settings that decide what tiles hold (layers, extent, buffer): a reseed
    /// under other settings must redo every tile, not only the changed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
    /// The zooms (`A-B`) and bbox (`W,S,E,N`) whose tiles all reflect `snapshot`; `None` in states
    /// of earlier versions, which meant the tileset's configured zooms and bbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zooms: Option<String>,
    /// See `zooms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<String>,
}

impl Watermark {
    /// The JSON kept in the output.
    pub fn to_state(&self) -> String {
        serde_json::to_string(self).expect("watermarks serialize")
    }

    /// Reads the JSON kept in the output.
    pub fn from_state(state: &str) -> Option<Watermark> {
        serde_json::from_str(state).ok()
    }
}
