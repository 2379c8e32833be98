//! What a run declares about its tileset: its name, the area and zooms it walked, what the stored
//! tiles turned out to cover, and each layer's fields. Every output records it when it finishes,
//! and a shard's part carries it to `finalize`.

use serde::{Deserialize, Serialize};

use crate::job::TilesetJob;
use crate::render::source::{FieldType, LayerSource};
use crate::tile::{BBox, Coverage, ZoomRange};

/// One entry of `vector_layers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TilesetMetadata {
    /// Tileset name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Attribution text.
    pub attribution: Option<String>,
    /// The area the run was given: where it may sweep stale tiles.
    pub bounds: BBox,
    /// What the stored tiles cover (see [`Coverage`]), once the sink knows: written as the
    /// output's `bounds` instead of the area walked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered: Option<BBox>,
    /// The zooms the stored tiles are at, once the sink knows: written as the output's
    /// `minzoom` and `maxzoom` instead of the zooms walked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_zooms: Option<ZoomRange>,
    /// Zooms rendered.
    pub zooms: ZoomRange,
    /// Layers and their fields.
    pub vector_layers: Vec<VectorLayer>,
}

impl TilesetMetadata {
    /// The metadata of a tileset named `name` without layers, description or attribution, over
    /// `bounds` at `zooms`, whose stored tiles' coverage is not known yet.
    pub fn bare(name: &str, bounds: BBox, zooms: ZoomRange) -> TilesetMetadata {
        TilesetMetadata {
            name: name.into(),
            description: None,
            attribution: None,
            bounds,
            covered: None,
            covered_zooms: None,
            zooms,
            vector_layers: Vec::new(),
        }
    }

    /// The metadata of a tileset's run: its zooms and area, and each layer's fields over the zooms
    /// where the layer appears.
    pub fn for_job(tileset: &TilesetJob, layers: &[LayerSource]) -> TilesetMetadata {
        TilesetMetadata {
            name: tileset.tileset.name.clone(),
            description: tileset.tileset.description.clone(),
            attribution: tileset.tileset.attribution.clone(),
            bounds: tileset.bbox,
            covered: None,
            covered_zooms: None,
            zooms: tileset.zooms,
            vector_layers: layers
                .iter()
                .map(|layer| {
                    let range = layer.config.zooms.unwrap_or(tileset.zooms);
                    VectorLayer {
                        id: layer.config.name.clone(),
                        fields: layer.fields(),
                        minzoom: range.min.max(tileset.zooms.min),
                        maxzoom: range.max.min(tileset.zooms.max),
                    }
                })
                .collect(),
        }
    }

    /// The name/value pairs of an MBTiles `metadata` table (also tippecanoe's `metadata.json`).
    pub fn mbtiles_rows(&self) -> Vec<(&'static str, String)> {
        let bounds = self.shown_bounds();
        let (lon, lat, zoom) = self.center();
        let json = serde_json::json!({ "vector_layers": self.vector_layers });
        let mut rows = vec![
            ("name", self.name.clone()),
            ("format", "pbf".into()),
            // Converters such as `pmtiles convert` read it to label the tiles' compression.
            ("compression", "gzip".into()),
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
            ("minzoom", self.shown_zooms().min.to_string()),
            ("maxzoom", self.shown_zooms().max.to_string()),
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

    /// The bounds an output declares: what its tiles cover, else the area walked.
    pub fn shown_bounds(&self) -> BBox {
        self.covered.unwrap_or(self.bounds)
    }

    /// The zooms an output declares: those its tiles are at, else the zooms walked.
    pub fn shown_zooms(&self) -> ZoomRange {
        self.covered_zooms.unwrap_or(self.zooms)
    }

    /// Records what the tiles `coverage` counted cover, within the area walked. Each layer's zooms
    /// shrink to those stored: generalisation can leave a tileset's lowest zooms without a tile,
    /// and TileJSON readers (and `validate`) hold a layer's zooms to the tileset's.
    pub fn cover(&mut self, coverage: &Coverage) {
        self.covered = coverage.bbox(&self.bounds);
        self.covered_zooms = coverage.zooms();
        self.clamp_layers();
    }

    /// Records what the tiles cover when a run in place deleted none: what the output declared
    /// (`zooms` and `bounds`), widened by the tiles this run wrote (see [`Coverage::widen`]), so a
    /// finish need not read the stored tiles.
    pub fn cover_widened(&mut self, zooms: ZoomRange, bounds: BBox, written: &Coverage) {
        self.covered = Some(
            written
                .widen((zooms.max, bounds), &self.bounds)
                .unwrap_or(bounds),
        );
        let widened = written
            .zooms()
            .and_then(|added| {
                ZoomRange::new(zooms.min.min(added.min), zooms.max.max(added.max)).ok()
            })
            .unwrap_or(zooms);
        self.covered_zooms = Some(widened);
        self.clamp_layers();
    }

    /// Holds each layer's zooms to the stored ones.
    fn clamp_layers(&mut self) {
        if let Some(stored) = self.covered_zooms {
            for layer in &mut self.vector_layers {
                layer.minzoom = layer.minzoom.clamp(stored.min, stored.max);
                layer.maxzoom = layer.maxzoom.clamp(layer.minzoom, stored.max);
            }
        }
    }

    /// A default view: the centre of the bounds at a zoom between min and max.
    pub fn center(&self) -> (f64, f64, u8) {
        let (lon, lat) = self.shown_bounds().center();
        let zooms = self.shown_zooms();
        (lon, lat, zooms.min.max(zooms.max.min(2)))
    }
}
