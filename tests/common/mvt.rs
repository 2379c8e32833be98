//! Minimal Mapbox Vector Tile (MVT 2.1) decoder for integration tests.
//!
//! The prost message types mirror the official `vector_tile.proto` of the
//! vector-tile-spec, version 2.1 (proto2), field for field. [`decode_tile`]
//! turns a (possibly gzip-compressed) tile into a friendlier representation
//! and validates tags and the geometry command stream on the way.

use std::collections::BTreeMap;
use std::io::Read;

use prost::Message;

/// Root message of a vector tile (`message Tile` in `vector_tile.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tile {
    /// The layers of the tile.
    #[prost(message, repeated, tag = "3")]
    pub layers: Vec<tile::Layer>,
}

/// Messages and enums nested in `Tile`, laid out the way prost-build would.
pub mod tile {
    /// Geometry type of a feature (`Tile.GeomType`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum GeomType {
        /// Unknown geometry type.
        Unknown = 0,
        /// Point or multipoint.
        Point = 1,
        /// Linestring or multilinestring.
        Linestring = 2,
        /// Polygon or multipolygon.
        Polygon = 3,
    }

    /// Variant-typed property value (`Tile.Value`); exactly one field must be set.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// `optional string string_value = 1`
        #[prost(string, optional, tag = "1")]
        pub string_value: Option<String>,
        /// `optional float float_value = 2`
        #[prost(float, optional, tag = "2")]
        pub float_value: Option<f32>,
        /// `optional double double_value = 3`
        #[prost(double, optional, tag = "3")]
        pub double_value: Option<f64>,
        /// `optional int64 int_value = 4`
        #[prost(int64, optional, tag = "4")]
        pub int_value: Option<i64>,
        /// `optional uint64 uint_value = 5`
        #[prost(uint64, optional, tag = "5")]
        pub uint_value: Option<u64>,
        /// `optional sint64 sint_value = 6`
        #[prost(sint64, optional, tag = "6")]
        pub sint_value: Option<i64>,
        /// `optional bool bool_value = 7`
        #[prost(bool, optional, tag = "7")]
        pub bool_value: Option<bool>,
    }

    /// A feature of a layer (`Tile.Feature`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Feature {
        /// `optional uint64 id = 1 [default = 0]`; `None` when absent.
        #[prost(uint64, optional, tag = "1", default = "0")]
        pub id: Option<u64>,
        /// `repeated uint32 tags = 2 [packed = true]`: key/value index pairs.
        #[prost(uint32, repeated, packed = "true", tag = "2")]
        pub tags: Vec<u32>,
        /// `optional GeomType type = 3 [default = UNKNOWN]`
        #[prost(enumeration = "GeomType", optional, tag = "3", default = "Unknown")]
        pub r#type: Option<i32>,
        /// `repeated uint32 geometry = 4 [packed = true]`: the command stream.
        #[prost(uint32, repeated, packed = "true", tag = "4")]
        pub geometry: Vec<u32>,
    }

    /// A named layer (`Tile.Layer`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Layer {
        /// `required uint32 version = 15 [default = 1]`
        #[prost(uint32, required, tag = "15", default = "1")]
        pub version: u32,
        /// `required string name = 1`
        #[prost(string, required, tag = "1")]
        pub name: String,
        /// `repeated Feature features = 2`
        #[prost(message, repeated, tag = "2")]
        pub features: Vec<Feature>,
        /// `repeated string keys = 3`: dictionary of property keys.
        #[prost(string, repeated, tag = "3")]
        pub keys: Vec<String>,
        /// `repeated Value values = 4`: dictionary of property values.
        #[prost(message, repeated, tag = "4")]
        pub values: Vec<Value>,
        /// `optional uint32 extent = 5 [default = 4096]`
        #[prost(uint32, optional, tag = "5", default = "4096")]
        pub extent: Option<u32>,
    }
}

/// A decoded property value. `sint_value` is reported as [`PropValue::Int`].
#[derive(Debug, Clone, PartialEq)]
pub enum PropValue {
    /// `string_value`
    String(String),
    /// `float_value`
    Float(f32),
    /// `double_value`
    Double(f64),
    /// `int_value` or `sint_value`
    Int(i64),
    /// `uint_value`
    UInt(u64),
    /// `bool_value`
    Bool(bool),
}

/// A decoded feature.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedFeature {
    /// Feature id; `None` when the id field is absent from the tile.
    pub id: Option<u64>,
    /// Raw geometry type (see [`tile::GeomType`]); 0 when absent.
    pub geom_type: i32,
    /// Points: every MoveTo position. Lines/polygons: every vertex in order.
    /// Coordinates are absolute tile coordinates (y pointing down).
    pub points: Vec<(i64, i64)>,
    /// Properties resolved through the layer's key/value dictionaries.
    pub props: BTreeMap<String, PropValue>,
}

/// A decoded layer.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedLayer {
    /// Layer name.
    pub name: String,
    /// Tile extent (4096 when the field is absent).
    pub extent: u32,
    /// MVT version of the layer.
    pub version: u32,
    /// Features in tile order.
    pub features: Vec<DecodedFeature>,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const CMD_MOVE_TO: u32 = 1;
const CMD_LINE_TO: u32 = 2;
const CMD_CLOSE_PATH: u32 = 7;

/// Returns the gunzipped bytes if `bytes` start with the gzip magic
/// (`1f 8b`), otherwise a copy of `bytes`.
///
/// # Panics
/// Panics if the input looks like gzip but cannot be decompressed.
pub fn gunzip_if_needed(bytes: &[u8]) -> Vec<u8> {
    try_gunzip_if_needed(bytes).unwrap_or_else(|e| panic!("{e}"))
}

fn try_gunzip_if_needed(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| format!("invalid gzip data: {e}"))?;
    Ok(out)
}

/// Decodes an MVT tile (raw or gzip-compressed) into its layers.
///
/// Fails on protobuf errors, odd-length or out-of-range tags, duplicate
/// property keys in a feature, values with no field set, and malformed
/// geometry command streams (unknown command, truncated parameters, ...).
pub fn decode_tile(bytes: &[u8]) -> Result<Vec<DecodedLayer>, String> {
    let raw = try_gunzip_if_needed(bytes)?;
    let tile = Tile::decode(raw.as_slice()).map_err(|e| format!("invalid MVT protobuf: {e}"))?;
    tile.layers.iter().map(decode_layer).collect()
}

fn decode_layer(layer: &tile::Layer) -> Result<DecodedLayer, String> {
    let ctx = |i: usize| format!("layer {:?}, feature #{i}", layer.name);
    let values = layer
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            decode_value(v).map_err(|e| format!("layer {:?}, value #{i}: {e}", layer.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let features = layer
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| {
            decode_feature(f, &layer.keys, &values).map_err(|e| format!("{}: {e}", ctx(i)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DecodedLayer {
        name: layer.name.clone(),
        extent: layer.extent(),
        version: layer.version,
        features,
    })
}

fn decode_value(v: &tile::Value) -> Result<PropValue, String> {
    let candidates = [
        v.string_value.clone().map(PropValue::String),
        v.float_value.map(PropValue::Float),
        v.double_value.map(PropValue::Double),
        v.int_value.map(PropValue::Int),
        v.uint_value.map(PropValue::UInt),
        v.sint_value.map(PropValue::Int),
        v.bool_value.map(PropValue::Bool),
    ];
    let mut set = candidates.into_iter().flatten();
    match (set.next(), set.next()) {
        (Some(value), None) => Ok(value),
        (None, _) => Err("value has no field set".to_string()),
        (Some(_), Some(_)) => Err("value has more than one field set".to_string()),
    }
}

fn decode_feature(
    f: &tile::Feature,
    keys: &[String],
    values: &[PropValue],
) -> Result<DecodedFeature, String> {
    if !f.tags.len().is_multiple_of(2) {
        return Err(format!("odd number of tags ({})", f.tags.len()));
    }
    let mut props = BTreeMap::new();
    for pair in f.tags.chunks_exact(2) {
        let (k, v) = (pair[0] as usize, pair[1] as usize);
        let key = keys
            .get(k)
            .ok_or_else(|| format!("key index {k} out of range ({} keys)", keys.len()))?;
        let value = values
            .get(v)
            .ok_or_else(|| format!("value index {v} out of range ({} values)", values.len()))?;
        if props.insert(key.clone(), value.clone()).is_some() {
            return Err(format!("duplicate property key {key:?}"));
        }
    }
    let geom_type = f.r#type.unwrap_or(tile::GeomType::Unknown as i32);
    let points = decode_geometry(&f.geometry, geom_type)?;
    Ok(DecodedFeature {
        id: f.id,
        geom_type,
        points,
        props,
    })
}

/// Decodes a zigzag-encoded parameter integer.
fn zigzag(n: u32) -> i64 {
    i64::from(n >> 1) ^ -i64::from(n & 1)
}

/// Walks the command stream and returns the MoveTo/LineTo positions in order.
fn decode_geometry(geometry: &[u32], geom_type: i32) -> Result<Vec<(i64, i64)>, String> {
    let is_point = geom_type == tile::GeomType::Point as i32;
    let mut points = Vec::new();
    let (mut x, mut y) = (0i64, 0i64);
    let mut i = 0;
    while i < geometry.len() {
        let (id, count) = (geometry[i] & 0x7, (geometry[i] >> 3) as usize);
        i += 1;
        match id {
            CMD_MOVE_TO | CMD_LINE_TO => {
                if count == 0 {
                    return Err(format!("command {id} with count 0 at index {}", i - 1));
                }
                if is_point && id == CMD_LINE_TO {
                    return Err("LineTo in a point geometry".to_string());
                }
                let params = geometry
                    .get(i..i + 2 * count)
                    .ok_or_else(|| format!("command {id} at index {} truncated", i - 1))?;
                for d in params.chunks_exact(2) {
                    x += zigzag(d[0]);
                    y += zigzag(d[1]);
                    points.push((x, y));
                }
                i += 2 * count;
            }
            CMD_CLOSE_PATH => {
                if count != 1 {
                    return Err(format!("ClosePath with count {count} at index {}", i - 1));
                }
                if is_point {
                    return Err("ClosePath in a point geometry".to_string());
                }
            }
            other => {
                return Err(format!(
                    "unknown geometry command {other} at index {}",
                    i - 1
                ));
            }
        }
    }
    Ok(points)
}

/// The paths of a line or polygon feature's command stream, each in absolute tile coordinates: a
/// MoveTo starts the next path (a line of a multi-line, or a ring), so the caller can tell rings
/// apart, which [`DecodedFeature::points`] flattens. A ring's closing point is not repeated.
pub fn paths(geometry: &[u32]) -> Result<Vec<Vec<(i64, i64)>>, String> {
    let mut paths: Vec<Vec<(i64, i64)>> = Vec::new();
    let (mut x, mut y) = (0i64, 0i64);
    let mut i = 0;
    while i < geometry.len() {
        let (id, count) = (geometry[i] & 0x7, (geometry[i] >> 3) as usize);
        i += 1;
        match id {
            CMD_MOVE_TO | CMD_LINE_TO => {
                let params = geometry
                    .get(i..i + 2 * count)
                    .ok_or_else(|| format!("command {id} at index {} truncated", i - 1))?;
                for d in params.chunks_exact(2) {
                    x += zigzag(d[0]);
                    y += zigzag(d[1]);
                    if id == CMD_MOVE_TO {
                        paths.push(Vec::new());
                    }
                    paths
                        .last_mut()
                        .ok_or("LineTo before any MoveTo")?
                        .push((x, y));
                }
                i += 2 * count;
            }
            CMD_CLOSE_PATH => {}
            other => return Err(format!("unknown geometry command {other}")),
        }
    }
    Ok(paths)
}
