//! TileJSON 3.0 documents describing a directory or S3 tileset, written beside its tiles.

use serde_json::{json, Value};

use super::{OutputSettings, TilesetMetadata};

/// Name of the TileJSON document beside the tiles.
pub const TILEJSON_NAME: &str = "tiles.json";

/// The TileJSON 3.0 document of a tileset.
pub fn tilejson(metadata: &TilesetMetadata, settings: &OutputSettings) -> Value {
    let bounds = metadata.bounds;
    let (lon, lat, zoom) = metadata.center();
    let url = settings
        .tiles_url
        .clone()
        .unwrap_or_else(|| format!("{{z}}/{{x}}/{{y}}.{}", settings.tile_extension));
    let mut document = json!({
        "tilejson": "3.0.0",
        "name": metadata.name,
        "scheme": "xyz",
        "tiles": [url],
        "minzoom": metadata.zooms.min,
        "maxzoom": metadata.zooms.max,
        "bounds": [bounds.west, bounds.south, bounds.east, bounds.north],
        "center": [lon, lat, zoom],
        "vector_layers": metadata.vector_layers,
    });
    if let Some(description) = &metadata.description {
        document["description"] = json!(description);
    }
    if let Some(attribution) = &metadata.attribution {
        document["attribution"] = json!(attribution);
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tile::{BBox, ZoomRange};

    #[test]
    fn the_document_names_the_tiles_and_their_layers() {
        let metadata = TilesetMetadata {
            name: "f".into(),
            description: None,
            attribution: Some("OAR".into()),
            bounds: BBox::WORLD,
            zooms: ZoomRange::new(0, 14).unwrap(),
            vector_layers: vec![],
        };
        let document = tilejson(&metadata, &OutputSettings::default());
        assert_eq!(document["tilejson"], "3.0.0");
        assert_eq!(document["tiles"][0], "{z}/{x}/{y}.pbf");
        assert_eq!(document["maxzoom"], 14);
        assert_eq!(document["attribution"], "OAR");
        assert!(document["vector_layers"].is_array());
    }
}
