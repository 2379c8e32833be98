//! TileJSON 3.0 documents describing a directory or S3 tileset, written beside its tiles, and
//! the check of such a document against the TileJSON 3.0.0 spec
//! (<https://github.com/mapbox/tilejson-spec/tree/master/3.0.0>).

use serde_json::{json, Value};

use super::agg_hash::{AGG_TILES_HASH_KEY, TILE_DIGEST_KEY};
use super::check::{
    check_bounds, check_center, check_vector_layers, check_zooms, Finding, Findings, MAX_SPEC_ZOOM,
};
use super::{OutputSettings, TilesetMetadata};

/// Name of the TileJSON document beside the tiles.
pub const TILEJSON_NAME: &str = "tiles.json";

/// Warns that the document at `address` names relative URLs, once per process: `watch` opens its
/// outputs again every cycle, and a warning that cannot change between cycles would drown the
/// ones that do.
pub(crate) fn warn_relative_once(address: &str, message: impl FnOnce() -> String) {
    static WARNED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::LazyLock::new(Default::default);
    let first = WARNED
        .lock()
        .map(|mut warned| warned.insert(address.to_string()))
        .unwrap_or(true);
    if first {
        tracing::warn!("{}", message());
    }
}

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
    let bounds = metadata.shown_bounds();
    let (lon, lat, zoom) = metadata.center();
    let mut document = json!({
        "tilejson": "3.0.0",
        "name": metadata.name,
        "scheme": "xyz",
        "tiles": [url],
        "minzoom": metadata.shown_zooms().min,
        "maxzoom": metadata.shown_zooms().max,
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

/// Whether a new TileJSON document says more than `previous` (the stored one, if any) with its
/// `agg_tiles_hash` aside: what a finish that leaves the hash pending announces, as the hash it
/// drops is named again, and announced then, once the hash is refreshed.
pub fn changes_beyond_hash(previous: Option<&[u8]>, document: &Value) -> bool {
    !says_the_same(previous, document, true)
}

/// Whether the stored document `previous` says what `document` says (with `hash_aside`, its
/// `agg_tiles_hash` left out), compared as JSON, not as text: a number read back from the stored
/// text (bounds a run keeps) and written again may differ in its last digit, and a document that
/// says the same is neither written nor purged again.
pub fn says_the_same(previous: Option<&[u8]>, document: &Value, hash_aside: bool) -> bool {
    let without_hash = |value: &Value| {
        let mut value = value.clone();
        if let (true, Some(object)) = (hash_aside, value.as_object_mut()) {
            object.remove(AGG_TILES_HASH_KEY);
            object.remove(TILE_DIGEST_KEY);
        }
        value
    };
    previous
        .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
        .is_some_and(|previous| same_json(&without_hash(&previous), &without_hash(document)))
}

/// JSON equality where two numbers are one when they differ only in their last digits (a relative
/// 1e-12: far below what a coordinate or zoom can mean).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
            _ => a == b,
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, value)| b.get(key).is_some_and(|other| same_json(value, other)))
        }
        _ => a == b,
    }
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

/// Checks the TileJSON document beside a tree's or S3 prefix's tiles (`None`: there is none)
/// against TileJSON 3.0.0: the version, absolute tile URLs with their placeholders, the vector
/// layers, zooms, bounds and centre.
pub fn check_tilejson(document: Option<&[u8]>) -> Vec<Finding> {
    let mut findings = Findings::default();
    let name = TILEJSON_NAME;
    let Some(bytes) = document else {
        findings.add(format!(
            "there is no {name} beside the tiles: map clients learn the tile URLs, zooms and \
             layers from it"
        ));
        return findings.finish();
    };
    let document: Value = match serde_json::from_slice(bytes) {
        Ok(Value::Object(object)) => Value::Object(object),
        Ok(_) => {
            findings.add(format!("{name} is not a JSON object"));
            return findings.finish();
        }
        Err(e) => {
            findings.add(format!("{name} is not valid JSON: {e}"));
            return findings.finish();
        }
    };
    match &document["tilejson"] {
        Value::String(version) if version == "3.0.0" => {}
        Value::Null => findings.add(format!("{name} has no `tilejson` version (it is required)")),
        other => findings.add(format!("{name} `tilejson` is {other}, not \"3.0.0\"")),
    }
    check_tiles(&mut findings, &document["tiles"]);
    let zoom = |key: &str, default: u8, findings: &mut Findings| match &document[key] {
        Value::Null => default,
        value => match value.as_u64().and_then(|z| u8::try_from(z).ok()) {
            Some(z) => z,
            None => {
                findings.add(format!("{name} `{key}` {value} is not a zoom level"));
                default
            }
        },
    };
    let (min, max) = (
        zoom("minzoom", 0, &mut findings),
        zoom("maxzoom", MAX_SPEC_ZOOM, &mut findings),
    );
    check_zooms(&mut findings, name, min, max);
    check_vector_layers(
        &mut findings,
        name,
        &document["vector_layers"],
        Some((min, max)),
    );
    let bounds = match numbers(&document["bounds"]) {
        None => None,
        Some(Ok([west, south, east, north])) => {
            check_bounds(&mut findings, name, [west, south, east, north])
        }
        Some(_) => {
            findings.add(format!(
                "{name} `bounds` {} is not four numbers (west, south, east, north)",
                document["bounds"]
            ));
            None
        }
    };
    match numbers(&document["center"]) {
        None => {}
        Some(Ok([lon, lat, zoom])) => {
            check_center(&mut findings, name, (lon, lat, zoom), bounds, (min, max));
        }
        Some(_) => findings.add(format!(
            "{name} `center` {} is not three numbers (longitude, latitude, zoom)",
            document["center"]
        )),
    }
    match &document["scheme"] {
        Value::Null => {}
        Value::String(scheme) if scheme == "xyz" || scheme == "tms" => {}
        other => findings.add(format!(
            "{name} `scheme` is {other}, not \"xyz\" or \"tms\""
        )),
    }
    findings.finish()
}

/// `tiles`: required, a non-empty array of absolute URLs, each with `{z}`, `{x}` and `{y}`.
/// Whether a URL's host is a link-local address (169.254.0.0/16, fe80::/10): a machine's own
/// segment, such as a cloud's metadata service, never where map clients fetch tiles.
fn is_link_local(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => (ip.segments()[0] & 0xffc0) == 0xfe80,
        _ => false,
    }
}

fn check_tiles(findings: &mut Findings, tiles: &Value) {
    let name = TILEJSON_NAME;
    let urls = match tiles {
        Value::Null => {
            findings.add(format!(
                "{name} has no `tiles` (it is required: the tile URLs map clients fetch)"
            ));
            return;
        }
        Value::Array(urls) if urls.is_empty() => {
            findings.add(format!(
                "{name} `tiles` is empty: it needs at least one tile URL"
            ));
            return;
        }
        Value::Array(urls) => urls,
        other => {
            findings.add(format!("{name} `tiles` is {other}, not an array of URLs"));
            return;
        }
    };
    for (i, url) in urls.iter().enumerate() {
        let Some(url) = url.as_str() else {
            findings.add(format!("{name} `tiles[{i}]` is {url}, not a URL"));
            continue;
        };
        // TileJSON 3.0.0, 3.2: "All endpoint urls MUST be absolute".
        match url::Url::parse(url) {
            // A warning, as the seed that wrote it warns: a tree cannot know its address, and a
            // map page served from the tree's own folder does find the tiles.
            Err(_) => findings.warn(format!(
                "{name} `tiles[{i}]` `{url}` is not an absolute URL, which TileJSON 3.0 requires: \
                 map clients (MapLibre GL JS) resolve a relative one against their page, not \
                 against {name}; set tiles_url in the tileset to where the tiles are served"
            )),
            Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => findings.add(format!(
                "{name} `tiles[{i}]` `{url}` is a {}: URL: map clients fetch tiles over http(s) \
                 only; set tiles_url in the tileset to where the tiles are served",
                parsed.scheme()
            )),
            Ok(parsed) if is_link_local(&parsed) => findings.add(format!(
                "{name} `tiles[{i}]` `{url}` names a link-local address, which no map client \
                 elsewhere reaches; set tiles_url in the tileset to where the tiles are served"
            )),
            Ok(_) => {}
        }
        let missing: Vec<&str> = ["{z}", "{x}", "{y}"]
            .into_iter()
            .filter(|part| !url.contains(part))
            .collect();
        if !missing.is_empty() {
            findings.add(format!(
                "{name} `tiles[{i}]` `{url}` has no {} placeholder: it cannot address a tile",
                missing.join(", ")
            ));
        }
    }
}

/// An array of exactly `N` numbers: `None` when the key is absent, `Some(Err)` when malformed.
fn numbers<const N: usize>(value: &Value) -> Option<Result<[f64; N], ()>> {
    match value {
        Value::Null => None,
        Value::Array(items) if items.len() == N => {
            let mut out = [0.0; N];
            for (slot, item) in out.iter_mut().zip(items) {
                match item.as_f64() {
                    Some(number) => *slot = number,
                    None => return Some(Err(())),
                }
            }
            Some(Ok(out))
        }
        _ => Some(Err(())),
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
            covered: None,
            covered_zooms: None,
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
    fn a_document_that_differs_only_in_its_hash_is_not_announced() {
        let document = json!({"tilejson": "3.0.0", "agg_tiles_hash": "A"});
        let stored = |value: Value| serde_json::to_vec_pretty(&value).unwrap();
        let same = stored(json!({"agg_tiles_hash": "B", "tilejson": "3.0.0"}));
        assert!(!changes_beyond_hash(Some(&same), &document));
        let other = stored(json!({"tilejson": "2.2.0", "agg_tiles_hash": "A"}));
        assert!(changes_beyond_hash(Some(&other), &document));
        assert!(changes_beyond_hash(None, &document));
        assert!(changes_beyond_hash(Some(b"not json"), &document));
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

    fn messages(document: &Value) -> Vec<String> {
        check_tilejson(Some(&serde_json::to_vec(document).unwrap()))
            .into_iter()
            .map(|f| f.message)
            .collect()
    }

    fn written(public_base: Option<&str>) -> Value {
        let metadata = TilesetMetadata::bare(
            "f",
            BBox::new(10.0, 20.0, 11.0, 21.0).unwrap(),
            ZoomRange::new(0, 9).unwrap(),
        );
        tilejson(&metadata, &OutputSettings::default(), public_base)
    }

    #[test]
    fn the_document_written_with_an_address_passes_its_check() {
        let document = written(Some("https://tiles.example.org/f"));
        assert_eq!(messages(&document), Vec::<String>::new());
    }

    #[test]
    fn a_relative_missing_or_empty_tile_url_is_found() {
        let relative = messages(&written(None));
        assert_eq!(relative.len(), 1, "{relative:?}");
        assert!(relative[0].contains("not an absolute URL"), "{relative:?}");
        let found = check_tilejson(Some(&serde_json::to_vec(&written(None)).unwrap()));
        assert!(
            found[0].warning,
            "a warning, as the seed that wrote it says"
        );
        let mut document = written(Some("https://t.example.org"));
        document["tiles"] = json!([]);
        assert!(messages(&document)[0].contains("`tiles` is empty"));
        document["tiles"] = json!(["https://t.example.org/{z}/{x}.pbf"]);
        assert!(messages(&document)[0].contains("no {y} placeholder"));
        document.as_object_mut().unwrap().remove("tiles");
        assert!(messages(&document)[0].contains("has no `tiles`"));
        for (url, said) in [
            ("file:///srv/tiles/{z}/{x}/{y}.pbf", "is a file: URL"),
            ("ftp://t.example.org/{z}/{x}/{y}.pbf", "is a ftp: URL"),
            ("http://169.254.169.254/{z}/{x}/{y}.pbf", "link-local"),
            ("http://[fe80::1]/{z}/{x}/{y}.pbf", "link-local"),
        ] {
            document["tiles"] = json!([url]);
            let found = messages(&document);
            assert!(
                found.len() == 1 && found[0].contains(said),
                "{url}: {found:?}"
            );
        }
        document["tiles"] = json!(["http://10.0.0.5:8080/t/{z}/{x}/{y}.pbf"]);
        assert_eq!(messages(&document), Vec::<String>::new());
    }

    #[test]
    fn layers_zooms_and_centre_are_checked() {
        let mut document = written(Some("https://t.example.org"));
        document["vector_layers"] =
            json!([{"id": "a", "fields": {"n": 1}, "maxzoom": 12}, {"fields": {}}]);
        document["center"] = json!([0.0, 0.0, 3]);
        document["tilejson"] = json!("2.2.0");
        let found = messages(&document);
        assert_eq!(found.len(), 5, "{found:?}");
        document.as_object_mut().unwrap().remove("vector_layers");
        assert!(messages(&document)
            .iter()
            .any(|m| m.contains("has no `vector_layers`")));
        assert!(check_tilejson(None)[0].message.contains("no tiles.json"));
        assert!(check_tilejson(Some(b"{"))[0]
            .message
            .contains("not valid JSON"));
    }
}
