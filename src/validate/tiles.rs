//! Every stored tile read once, in `agg_tiles_hash` order: each checked as MVT 2.1 (through
//! [`super::mvt`]), hashed, and summed up into what the metadata must agree with (zooms, bounds,
//! layers and their fields).

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde_json::Value;

use super::mvt::{check_tile, MIXED};
use super::{Problem, Problems};
use crate::error::Result;
use crate::sink::agg_hash::{hash_pending, AggHasher, TileDigest, TILE_DIGEST_KEY};
use crate::sink::OutputReader;
use crate::tile::{BBox, Coverage, TileCoord};

/// Where a layer appears in the tiles, and the attributes it carries.
#[derive(Debug, Default)]
pub(super) struct LayerSeen {
    /// Shallowest and deepest zoom holding it.
    zooms: Option<(u8, u8)>,
    /// Attribute keys and their type names, as TileJSON's `vector_layers` writes them.
    fields: BTreeMap<String, String>,
    /// A tile holding it, for messages.
    example: Option<TileCoord>,
}

/// What reading every tile found.
#[derive(Debug, Default)]
pub(super) struct TileScan {
    /// Tiles stored.
    pub tiles: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Every stored tile.
    pub stored: BTreeSet<TileCoord>,
    /// The hash of the tiles as martin's `mbtiles` computes it.
    pub agg_tiles_hash: String,
    /// The tiles' [`TileDigest`], which a tree or prefix names where a run that changed some
    /// tiles kept it without reading the others.
    pub digest: TileDigest,
    layers: BTreeMap<String, LayerSeen>,
    zooms: Option<(u8, u8)>,
    /// Tiles stored gzip-compressed and plain.
    gzip: (u64, u64),
}

/// Reads every tile of `reader` in `(zoom, column, TMS row)` order.
pub(super) async fn scan(reader: &OutputReader, problems: &mut Problems) -> Result<TileScan> {
    let mut tiles: Vec<TileCoord> = reader
        .tile_sizes()
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    tiles.sort_by_key(|t| (t.z(), t.x(), t.tms_row()));
    let mut scan = TileScan::default();
    let mut hasher = AggHasher::new();
    let mut digest = TileDigest::new();
    let mut read = reader.read_many(tiles);
    while let Some(next) = read.next().await {
        let (tile, bytes) = next?;
        let Some(bytes) = bytes else {
            // Listed a moment ago and gone now: a run replaced the output meanwhile.
            problems.push(Problem::tile(
                tile,
                "tile",
                "listed but gone when read (did a run change the output meanwhile?)",
            ));
            continue;
        };
        hasher.add(tile, &bytes);
        digest.add(tile, &bytes);
        scan.add(tile, &bytes, problems);
    }
    scan.agg_tiles_hash = hasher.finish();
    scan.digest = digest;
    Ok(scan)
}

impl TileScan {
    fn add(&mut self, tile: TileCoord, bytes: &[u8], problems: &mut Problems) {
        self.tiles += 1;
        self.bytes += bytes.len() as u64;
        self.stored.insert(tile);
        let z = tile.z();
        self.zooms = Some(match self.zooms {
            None => (z, z),
            Some((low, high)) => (low.min(z), high.max(z)),
        });
        if bytes.is_empty() {
            problems.push(Problem::tile(tile, "tile", "empty tile stored (0 bytes)"));
            return;
        }
        let report = check_tile(bytes);
        if report.gzipped {
            self.gzip.0 += 1;
        } else {
            self.gzip.1 += 1;
        }
        for problem in report.problems {
            problems.push(Problem::tile(tile, "mvt", problem));
        }
        if report.layers.iter().all(|l| l.features == 0) {
            problems.push(Problem::tile(
                tile,
                "tile",
                "empty tile stored (no features): a missing tile would say the same for less",
            ));
        }
        for layer in report.layers {
            let seen = self.layers.entry(layer.name).or_default();
            seen.zooms = Some(match seen.zooms {
                None => (z, z),
                Some((low, high)) => (low.min(z), high.max(z)),
            });
            seen.example.get_or_insert(tile);
            for (key, kind) in layer.fields {
                match seen.fields.get(&key) {
                    Some(known) if known != &kind => {
                        seen.fields.insert(key, MIXED.to_string());
                    }
                    Some(_) => {}
                    None => {
                        seen.fields.insert(key, kind);
                    }
                }
            }
        }
    }

    /// Checks the output's metadata (MBTiles metadata, TileJSON or PMTiles metadata and header, as
    /// [`OutputReader::metadata`] reads them) against what the tiles hold.
    pub(super) fn check_metadata(&self, metadata: &Value, problems: &mut Problems) {
        let declared = Declared::read(metadata);
        if let (Some(digest), false) = (&declared.digest, hash_pending(metadata)) {
            if !digest.eq_ignore_ascii_case(&self.digest.to_hex()) {
                problems.push(Problem::output(
                    "metadata",
                    format!(
                        "{TILE_DIGEST_KEY} {digest}, but the tiles digest to {}: tiles changed \
                         without it; a full seed names it again",
                        self.digest.to_hex()
                    ),
                ));
            }
        }
        match &declared.agg_tiles_hash {
            // Tiles changed since the hash was computed, and the output says so: the hash
            // declared, if any, is the old one, and the new one follows (`watch` when idle).
            _ if hash_pending(metadata) => {}
            // A run that changed some tiles of a tree or prefix named the digest it could keep
            // without reading the others, checked above; the hash is this scan's.
            None if declared.digest.is_some() => {}
            None => problems.push(Problem::output(
                "metadata",
                "no agg_tiles_hash: two copies of the output cannot be compared",
            )),
            Some(hash) if !hash.eq_ignore_ascii_case(&self.agg_tiles_hash) => {
                problems.push(Problem::output(
                    "metadata",
                    format!(
                        "agg_tiles_hash {hash}, but the tiles hash to {}: tiles changed without it",
                        self.agg_tiles_hash
                    ),
                ))
            }
            Some(_) => {}
        }
        if self.gzip.0 > 0 && self.gzip.1 > 0 {
            problems.push(Problem::output(
                "tile",
                format!(
                    "{} tile(s) gzip-compressed and {} plain: a client decodes only one of them",
                    self.gzip.0, self.gzip.1
                ),
            ));
        }
        let Some((shallowest, deepest)) = self.zooms else {
            return;
        };
        if let Some(min) = declared.minzoom {
            if min > shallowest {
                problems.push(Problem::output(
                    "metadata",
                    format!("minzoom {min}, but tiles are stored from zoom {shallowest}"),
                ));
            }
        } else {
            problems.push(Problem::output("metadata", "no minzoom"));
        }
        match declared.maxzoom {
            Some(max) if max != deepest => problems.push(Problem::output(
                "metadata",
                format!(
                    "maxzoom {max}, but the deepest tiles are at zoom {deepest}: clients {}",
                    if max > deepest {
                        "ask for tiles that are not there instead of overzooming"
                    } else {
                        "never ask for the deepest tiles"
                    }
                ),
            )),
            Some(_) => {}
            None => problems.push(Problem::output("metadata", "no maxzoom")),
        }
        self.check_bounds(declared.bounds, deepest, problems);
        self.check_layers(declared.vector_layers, problems);
    }

    /// Bounds must hold every tile, and claim no more than the tiles cover (see `Coverage`).
    fn check_bounds(&self, bounds: Option<[f64; 4]>, deepest: u8, problems: &mut Problems) {
        let Some([west, south, east, north]) = bounds else {
            problems.push(Problem::output("metadata", "no bounds"));
            return;
        };
        let Ok(bbox) = BBox::new(west, south, east, north) else {
            problems.push(Problem::output(
                "metadata",
                format!("bounds {west},{south},{east},{north} are not a valid box"),
            ));
            return;
        };
        // A tile holds features up to its buffer beyond its edge, so the tiles next to the
        // bounds' own may hold some.
        let outside: Vec<TileCoord> = self
            .stored
            .iter()
            .filter(|tile| {
                let range = bbox.tile_range(tile.z());
                tile.x() + 1 < range.min_x
                    || tile.x() > range.max_x + 1
                    || tile.y() + 1 < range.min_y
                    || tile.y() > range.max_y + 1
            })
            .copied()
            .collect();
        if let Some(first) = outside.first() {
            problems.push(Problem::tile(
                *first,
                "metadata",
                format!(
                    "{} tile(s) lie outside the bounds {bbox} (this one among them){}",
                    outside.len(),
                    grafted_hint(&self.stored)
                ),
            ));
        }
        // What the tiles cover by the rule every output declares its bounds by (the deepest
        // zoom's tiles, reaching into every shallower one), less a hair: bounds on a tile edge
        // are rounded outwards to 1e-7 degrees, as PMTiles keeps them.
        let mut coverage = Coverage::default();
        for tile in &self.stored {
            coverage.add(*tile);
        }
        let Some(covered) = coverage.bbox(&BBox::WORLD) else {
            return;
        };
        let hair = 1e-6;
        if west + hair < covered.west
            || south + hair < covered.south
            || east - hair > covered.east
            || north - hair > covered.north
        {
            problems.push(Problem::output(
                "metadata",
                format!(
                    "bounds {bbox} claim more than the tiles cover ({covered}: the zoom-{deepest} \
                     tiles' box, reaching into every shallower tile); write the bounds again with \
                     a seed of the output"
                ),
            ));
        }
    }

    /// `vector_layers` must name every layer the tiles hold, with its fields and their types,
    /// at the zooms it appears, and nothing the tiles do not hold.
    fn check_layers(&self, declared: Option<Vec<Value>>, problems: &mut Problems) {
        let Some(declared) = declared else {
            problems.push(Problem::output("metadata", "no vector_layers"));
            return;
        };
        let mut named = BTreeMap::new();
        for layer in &declared {
            let Some(id) = layer["id"].as_str() else {
                problems.push(Problem::output(
                    "metadata",
                    format!("a vector_layers entry without an id: {layer}"),
                ));
                continue;
            };
            if named.insert(id.to_string(), layer).is_some() {
                problems.push(Problem::output(
                    "metadata",
                    format!("vector_layers names `{id}` twice"),
                ));
            }
        }
        for (name, seen) in &self.layers {
            let example = seen.example.expect("a seen layer has a tile");
            let Some(layer) = named.get(name) else {
                problems.push(Problem::tile(
                    example,
                    "metadata",
                    format!("layer `{name}` is in the tiles but not in vector_layers"),
                ));
                continue;
            };
            let (low, high) = seen.zooms.expect("a seen layer has zooms");
            let min = number(&layer["minzoom"]);
            let max = number(&layer["maxzoom"]);
            if min.is_some_and(|m| m > f64::from(low)) || max.is_some_and(|m| m < f64::from(high)) {
                problems.push(Problem::output(
                    "metadata",
                    format!(
                        "layer `{name}` is declared at zooms {}-{} but appears at {low}-{high}",
                        layer["minzoom"], layer["maxzoom"]
                    ),
                ));
            }
            let fields = layer["fields"].as_object();
            for (key, kind) in &seen.fields {
                match fields.and_then(|f| f.get(key)).and_then(Value::as_str) {
                    None => problems.push(Problem::tile(
                        example,
                        "metadata",
                        format!(
                            "layer `{name}`: field `{key}` ({kind}) is in the tiles but not in \
                             vector_layers"
                        ),
                    )),
                    Some(declared) if declared != kind && kind != MIXED => {
                        problems.push(Problem::output(
                            "metadata",
                            format!(
                                "layer `{name}`: field `{key}` is declared {declared} but the \
                                 tiles hold {kind} values"
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        for name in named.keys() {
            if !self.layers.contains_key(name) && self.tiles > 0 {
                problems.push(Problem::output(
                    "metadata",
                    format!("vector_layers declares `{name}`, which no tile holds"),
                ));
            }
        }
    }
}

/// What an output's metadata declares, from whichever form its kind writes.
#[derive(Debug, Default)]
struct Declared {
    minzoom: Option<u8>,
    maxzoom: Option<u8>,
    bounds: Option<[f64; 4]>,
    vector_layers: Option<Vec<Value>>,
    agg_tiles_hash: Option<String>,
    digest: Option<String>,
}

impl Declared {
    fn read(metadata: &Value) -> Declared {
        // A PMTiles header's zooms are what readers use; its metadata may repeat them.
        let zoom = |key: &str| {
            number(&metadata["pmtiles"][key])
                .or_else(|| number(&metadata[key]))
                .filter(|z| z.fract() == 0.0 && (0.0..=30.0).contains(z))
                .map(|z| z as u8)
        };
        let bounds = crate::inspect::bounds(metadata)
            .and_then(|b| <[f64; 4]>::try_from(b).ok())
            .filter(|b| b.iter().all(|v| v.is_finite()));
        let vector_layers = metadata["vector_layers"]
            .as_array()
            .or_else(|| metadata["json"]["vector_layers"].as_array())
            .cloned();
        Declared {
            minzoom: zoom("minzoom"),
            maxzoom: zoom("maxzoom"),
            bounds,
            vector_layers,
            agg_tiles_hash: metadata["agg_tiles_hash"].as_str().map(str::to_string),
            digest: metadata[TILE_DIGEST_KEY].as_str().map(str::to_string),
        }
    }
}

/// A number written as a JSON number (TileJSON, PMTiles) or as text (MBTiles metadata).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Earlier builds let `seed --dirty` render a changed row's tiles at zooms the output was never
/// seeded with, and took the bounds from those few deep tiles. Such grafted zooms hold fewer
/// tiles than the zoom above them, which a seeded zoom of points, lines or polygons never does, so
/// they name the repair: seeding them whole writes every tile and the bounds again.
fn grafted_hint(stored: &BTreeSet<TileCoord>) -> String {
    let mut per_zoom = BTreeMap::<u8, usize>::new();
    for tile in stored {
        *per_zoom.entry(tile.z()).or_default() += 1;
    }
    let counts: Vec<(u8, usize)> = per_zoom.into_iter().collect();
    let Some(start) = counts
        .windows(2)
        .find(|pair| pair[1].1 < pair[0].1)
        .map(|pair| pair[1].0)
    else {
        return String::new();
    };
    let (deepest, _) = counts[counts.len() - 1];
    format!(
        "; zooms {start}-{deepest} hold fewer tiles than zoom {}, as when a reseed rendered zooms \
         the output was never seeded with: `oar-tiles seed --zoom {start}-{deepest}` renders them \
         whole and writes the bounds again",
        start - 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiles(list: &[(u8, u32, u32)]) -> BTreeSet<TileCoord> {
        list.iter()
            .map(|&(z, x, y)| TileCoord::new(z, x, y).unwrap())
            .collect()
    }

    /// A zoom with fewer tiles than the one above is named with the seed that repairs it; a
    /// pyramid whose counts never fall gets no hint.
    #[test]
    fn grafted_zooms_are_named_with_the_seed_that_repairs_them() {
        let seeded = [
            (0, 0, 0),
            (1, 0, 0),
            (1, 1, 0),
            (2, 0, 0),
            (2, 1, 0),
            (2, 3, 1),
        ];
        assert_eq!(grafted_hint(&tiles(&seeded)), "");
        let grafted = tiles(&[&seeded[..], &[(3, 0, 0), (4, 0, 0)]].concat());
        let hint = grafted_hint(&grafted);
        assert!(
            hint.contains("zooms 3-4 hold fewer tiles than zoom 2"),
            "{hint}"
        );
        assert!(hint.contains("`oar-tiles seed --zoom 3-4`"), "{hint}");
    }
}
