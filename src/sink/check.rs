//! Container checks: whether an output's *container* (the MBTiles database, the TileJSON beside a
//! tree or remote prefix, the PMTiles archive) keeps its format's rules. What the tiles hold is checked
//! elsewhere; here a damaged container must come out as findings that name what is at fault, so an
//! operator learns everything wrong in one pass instead of one opaque error at a time.
//!
//! Each kind's checks live in its folder (`mbtiles/check.rs`, `pmtiles/check.rs`) and the TileJSON
//! check beside its writer (`tilejson.rs`); the rules the formats share (zooms, bounds, a centre)
//! are here, so every format words them alike.

use std::collections::HashMap;

use serde_json::Value;

use super::kind_of;
use super::read::ReaderOptions;
use super::OutputTarget;
use crate::config::StoreConfig;
use crate::error::Result;
use crate::tile::{BBox, TileCoord};

/// One thing wrong with an output's container.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The tile at fault, when there is one.
    pub tile: Option<TileCoord>,
    /// What is wrong, naming the table, key, field or entry at fault.
    pub message: String,
    /// Said but not counted as a problem: what the seed that wrote the output warned of too (a
    /// tree's relative tile URL), so seed and validate judge it alike.
    pub warning: bool,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tile {
            Some(tile) => write!(f, "{tile}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Checks the container of `output` (as the user gave it, for messages) at `target` against its
/// format's rules. `Err` only when the output cannot be read at all (a missing file, an unreachable
/// bucket); anything wrong inside it is a [`Finding`].
pub async fn check_container(
    output: &str,
    target: &OutputTarget,
    store_settings: &StoreConfig,
    extension: &str,
) -> Result<Vec<Finding>> {
    kind_of(target)
        .check_container(ReaderOptions {
            output,
            store_settings,
            extension,
        })
        .await
}

/// Most findings kept per rule: a damaged file can break one rule for every tile, and the first
/// few name the problem as well as a million would.
const PER_RULE: usize = 20;

/// Findings as a check gathers them, at most [`PER_RULE`] per rule; the rest are counted.
#[derive(Default)]
pub(crate) struct Findings {
    list: Vec<Finding>,
    /// Per rule: how many broke it, and the summary to print for those not listed.
    rules: HashMap<&'static str, (usize, &'static str)>,
    /// The rules in the order first broken, so the summary lines keep that order.
    order: Vec<&'static str>,
}

impl Findings {
    /// A finding about the container as a whole.
    pub(crate) fn add(&mut self, message: impl Into<String>) {
        self.list.push(Finding {
            tile: None,
            message: message.into(),
            warning: false,
        });
    }

    /// A warning about the container as a whole: said, never counted as a problem.
    pub(crate) fn warn(&mut self, message: impl Into<String>) {
        self.list.push(Finding {
            tile: None,
            message: message.into(),
            warning: true,
        });
    }

    /// A finding under `rule` (a short phrase, such as "tiles out of order"), about `tile` when
    /// there is one; the message is built only for the findings kept.
    pub(crate) fn under(
        &mut self,
        rule: &'static str,
        tile: Option<TileCoord>,
        message: impl FnOnce() -> String,
    ) {
        let entry = self.rules.entry(rule).or_insert_with(|| {
            self.order.push(rule);
            (0, rule)
        });
        entry.0 += 1;
        if entry.0 <= PER_RULE {
            self.list.push(Finding {
                tile,
                message: message(),
                warning: false,
            });
        }
    }

    /// Whether nothing was found yet.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The findings, with one line per rule that was broken more often than listed.
    pub(crate) fn finish(mut self) -> Vec<Finding> {
        for rule in &self.order {
            let (count, summary) = self.rules[rule];
            if count > PER_RULE {
                self.list.push(Finding {
                    tile: None,
                    message: format!("{} more like the above: {summary}", count - PER_RULE),
                    warning: false,
                });
            }
        }
        self.list
    }
}

/// The highest zoom TileJSON allows, and the one checked for every format.
pub(crate) const MAX_SPEC_ZOOM: u8 = 30;

/// Checks a zoom range as `source` (such as "metadata", "the header") states it.
pub(crate) fn check_zooms(findings: &mut Findings, source: &str, min: u8, max: u8) {
    for (name, zoom) in [("minzoom", min), ("maxzoom", max)] {
        if zoom > MAX_SPEC_ZOOM {
            findings.add(format!(
                "{source} {name} {zoom} is above {MAX_SPEC_ZOOM}, the highest zoom there is"
            ));
        }
    }
    if min > max {
        findings.add(format!("{source} minzoom {min} is above its maxzoom {max}"));
    }
}

/// Checks bounds (west, south, east, north in degrees); returns them when they are valid.
pub(crate) fn check_bounds(
    findings: &mut Findings,
    source: &str,
    bounds: [f64; 4],
) -> Option<BBox> {
    let [west, south, east, north] = bounds;
    match BBox::new(west, south, east, north) {
        Ok(bbox) => Some(bbox),
        Err(e) => {
            findings.add(format!(
                "{source} bounds {west},{south},{east},{north} are not valid: {e}"
            ));
            None
        }
    }
}

/// Checks a centre (longitude, latitude, zoom) against the bounds and zooms it must lie within.
pub(crate) fn check_center(
    findings: &mut Findings,
    source: &str,
    (lon, lat, zoom): (f64, f64, f64),
    bounds: Option<BBox>,
    (min, max): (u8, u8),
) {
    if let Some(b) = bounds {
        if !(b.west..=b.east).contains(&lon) || !(b.south..=b.north).contains(&lat) {
            findings.add(format!(
                "{source} center {lon},{lat} lies outside its bounds {},{},{},{}",
                b.west, b.south, b.east, b.north
            ));
        }
    }
    if zoom.fract() != 0.0 || zoom < f64::from(min) || zoom > f64::from(max) {
        findings.add(format!(
            "{source} center zoom {zoom} is not a zoom between its minzoom {min} and maxzoom {max}"
        ));
    }
}

/// `vector_layers` of `name` (TileJSON, MBTiles' `json`, PMTiles' metadata): required for vector
/// tiles; each layer an object with a unique `id` and a `fields` object of descriptions, its
/// zooms within the tileset's `zooms` when they are known.
pub(crate) fn check_vector_layers(
    findings: &mut Findings,
    name: &str,
    layers: &Value,
    zooms: Option<(u8, u8)>,
) {
    let layers = match layers {
        Value::Null => {
            findings.add(format!(
                "{name} has no `vector_layers` (it is required for vector tiles: clients and \
                 style editors learn the layers and their fields from it)"
            ));
            return;
        }
        Value::Array(layers) => layers,
        other => {
            findings.add(format!("{name} `vector_layers` is {other}, not an array"));
            return;
        }
    };
    let mut ids = std::collections::HashSet::new();
    for (i, layer) in layers.iter().enumerate() {
        let at = format!("{name} `vector_layers[{i}]`");
        let Some(object) = layer.as_object() else {
            findings.add(format!("{at} is {layer}, not an object"));
            continue;
        };
        match object.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => {
                if !ids.insert(id) {
                    findings.add(format!("{at} repeats the layer id `{id}`"));
                }
            }
            _ => findings.add(format!("{at} has no `id` naming the layer")),
        }
        match object.get("fields") {
            Some(Value::Object(fields)) => {
                for (field, description) in fields {
                    if !description.is_string() {
                        findings.add(format!(
                            "{at} field `{field}` is described by {description}, not a string"
                        ));
                    }
                }
            }
            Some(other) => findings.add(format!("{at} `fields` is {other}, not an object")),
            None => findings.add(format!(
                "{at} has no `fields` (an empty object when the layer has none)"
            )),
        }
        let Some((min, max)) = zooms else {
            continue;
        };
        for (key, inside) in [
            (
                "minzoom",
                &(|z: u64| z >= u64::from(min)) as &dyn Fn(u64) -> bool,
            ),
            ("maxzoom", &|z: u64| z <= u64::from(max)),
        ] {
            if let Some(value) = object.get(key) {
                if !value.as_u64().is_some_and(inside) {
                    findings.add(format!(
                        "{at} `{key}` {value} is not a zoom within the tileset's {min}-{max}"
                    ));
                }
            }
        }
    }
}

/// Compressions a stored tile's first bytes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Magic {
    Gzip,
    Zlib,
    Zstd,
    Png,
    Jpeg,
    Webp,
    /// None of the above (uncompressed MVT, or something unknown).
    Other,
}

impl Magic {
    /// What the bytes start with.
    pub(crate) fn of(bytes: &[u8]) -> Magic {
        match bytes {
            [0x1f, 0x8b, ..] => Magic::Gzip,
            // zlib: CM 8 and a header checksum that divides by 31.
            [cmf, flg, ..]
                if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0 =>
            {
                Magic::Zlib
            }
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Magic::Zstd,
            [0x89, b'P', b'N', b'G', ..] => Magic::Png,
            [0xff, 0xd8, 0xff, ..] => Magic::Jpeg,
            [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Magic::Webp,
            _ => Magic::Other,
        }
    }

    /// The name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Magic::Gzip => "gzip",
            Magic::Zlib => "zlib",
            Magic::Zstd => "zstd",
            Magic::Png => "PNG",
            Magic::Jpeg => "JPEG",
            Magic::Webp => "WebP",
            Magic::Other => "uncompressed (or unrecognised) data",
        }
    }
}

/// Whether the start of a gzip stream inflates to what an MVT starts with: a `layers` field
/// (field 3, length-delimited), or nothing at all. `None` when the start cannot be inflated, which
/// the tile check reports with the reason.
pub(crate) fn gzip_holds_mvt(bytes: &[u8]) -> Option<bool> {
    use std::io::Read;
    let mut first = [0u8; 1];
    let mut decoder = flate2::read::GzDecoder::new(bytes);
    match decoder.read(&mut first) {
        Ok(0) => Some(true),
        Ok(_) => Some(first[0] == 0x1a),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_past_the_limit_of_a_rule_are_counted_not_listed() {
        let mut findings = Findings::default();
        for i in 0..25 {
            findings.under("a rule", None, || format!("tile {i}"));
        }
        findings.add("whole file");
        let list = findings.finish();
        assert_eq!(list.len(), PER_RULE + 2);
        assert_eq!(
            list.last().unwrap().message,
            "5 more like the above: a rule"
        );
    }

    #[test]
    fn a_centre_outside_its_bounds_or_zooms_is_found() {
        let mut findings = Findings::default();
        let bounds = check_bounds(&mut findings, "metadata", [0.0, 0.0, 10.0, 10.0]);
        check_center(&mut findings, "metadata", (5.0, 5.0, 3.0), bounds, (0, 5));
        assert!(findings.is_empty());
        check_center(&mut findings, "metadata", (50.0, 5.0, 6.0), bounds, (0, 5));
        let list = findings.finish();
        assert_eq!(list.len(), 2, "{list:?}");
        assert!(list[0].message.contains("outside its bounds"));
        assert!(list[1].message.contains("center zoom 6"));
    }

    #[test]
    fn bounds_across_the_antimeridian_or_out_of_range_are_found() {
        let mut findings = Findings::default();
        assert!(check_bounds(&mut findings, "x", [170.0, 0.0, -170.0, 10.0]).is_none());
        assert!(check_bounds(&mut findings, "x", [0.0, -95.0, 10.0, 10.0]).is_none());
        check_zooms(&mut findings, "x", 5, 3);
        check_zooms(&mut findings, "x", 0, 31);
        assert_eq!(findings.finish().len(), 4);
    }

    #[test]
    fn magic_numbers_tell_compressions_and_images_apart() {
        assert_eq!(Magic::of(&[0x1f, 0x8b, 8]), Magic::Gzip);
        assert_eq!(Magic::of(&[0x78, 0x9c]), Magic::Zlib);
        assert_eq!(Magic::of(&[0x89, b'P', b'N', b'G']), Magic::Png);
        assert_eq!(Magic::of(&[0x1a, 0x05]), Magic::Other);
        let gzipped = crate::encode::gzip(&[0x1a, 0x00], 6);
        assert_eq!(gzip_holds_mvt(&gzipped), Some(true));
        let png = crate::encode::gzip(&[0x89, b'P'], 6);
        assert_eq!(gzip_holds_mvt(&png), Some(false));
    }
}
