//! TileJSON 3.0 documents describing a directory or S3 tileset, written beside its tiles.

use serde_json::{json, Value};

use super::{OutputSettings, TilesetMetadata};

/// Name of the TileJSON document beside the tiles.
pub const TILEJSON_NAME: &str = "tiles.json";

/// The TileJSON 3.0 document of a tileset whose tiles are served under `public_base` (the URL of
/// the folder holding `tiles.json`, when the output knows it). The tile URL is `tiles_url` when the
/// config sets one, else absolute under `public_base`, else relative as a last resort; see
/// [`tiles_url`].
pub fn tilejson(
    metadata: &TilesetMetadata,
    settings: &OutputSettings,
    public_base: Option<&str>,
) -> Value {
    tilejson_with_tiles(metadata, &tiles_url(settings, public_base))
}

/// The TileJSON 3.0 document of a tileset whose tiles are at `url`: a `{z}/{x}/{y}` template, or a
/// PMTiles archive's `pmtiles://` address.
pub fn tilejson_with_tiles(metadata: &TilesetMetadata, url: &str) -> Value {
    let bounds = metadata.bounds;
    let (lon, lat, zoom) = metadata.center();
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

/// The tile URL template TileJSON names. Map clients (MapLibre GL JS among them) resolve a relative
/// template against the page that shows the map, not against the TileJSON's address, so a relative
/// one only works for a page served from the tiles' own folder: callers warn when they fall back.
pub fn tiles_url(settings: &OutputSettings, public_base: Option<&str>) -> String {
    let relative = format!("{{z}}/{{x}}/{{y}}.{}", settings.tile_extension);
    match (&settings.tiles_url, public_base) {
        (Some(url), _) => url.clone(),
        (None, Some(base)) => format!("{}/{relative}", base.trim_end_matches('/')),
        (None, None) => relative,
    }
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
        let document = tilejson(
            &metadata,
            &OutputSettings::default(),
            Some("https://b.s3.eu-west-1.amazonaws.com/f/v3"),
        );
        assert_eq!(document["tilejson"], "3.0.0");
        assert_eq!(
            document["tiles"][0],
            "https://b.s3.eu-west-1.amazonaws.com/f/v3/{z}/{x}/{y}.pbf"
        );
        assert_eq!(document["maxzoom"], 14);
        assert_eq!(document["attribution"], "OAR");
        assert!(document["vector_layers"].is_array());
    }

    #[test]
    fn a_configured_tiles_url_wins_over_the_outputs_own_address() {
        let settings = OutputSettings {
            tiles_url: Some("https://cdn.example.org/t/{z}/{x}/{y}.mvt".into()),
            ..OutputSettings::default()
        };
        assert_eq!(
            tiles_url(&settings, Some("https://bucket.example.org/t")),
            "https://cdn.example.org/t/{z}/{x}/{y}.mvt"
        );
        assert_eq!(
            tiles_url(&OutputSettings::default(), None),
            "{z}/{x}/{y}.pbf",
            "only an output that cannot know its address falls back to a relative URL"
        );
    }
}
