//! The messages of MVT 2.1's `vector_tile.proto`, written out for prost without a build script.
//!
//! They differ from what prost-build would make in one deliberate way: every field the spec says a
//! layer or feature MUST carry (`version`, `name`, `extent`, `type`) is an `Option`, so the checks
//! can tell a field that was never written from one that holds the proto2 default.

/// A whole tile (`message Tile`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tile {
    /// `repeated Layer layers = 3`
    #[prost(message, repeated, tag = "3")]
    pub layers: Vec<Layer>,
}

/// A named layer (`Tile.Layer`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Layer {
    /// `required uint32 version = 15 [default = 1]`
    #[prost(uint32, optional, tag = "15")]
    pub version: Option<u32>,
    /// `required string name = 1`
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// `repeated Feature features = 2`
    #[prost(message, repeated, tag = "2")]
    pub features: Vec<Feature>,
    /// `repeated string keys = 3`: the layer's dictionary of attribute keys.
    #[prost(string, repeated, tag = "3")]
    pub keys: Vec<String>,
    /// `repeated Value values = 4`: the layer's dictionary of attribute values.
    #[prost(message, repeated, tag = "4")]
    pub values: Vec<Value>,
    /// `optional uint32 extent = 5 [default = 4096]`
    #[prost(uint32, optional, tag = "5")]
    pub extent: Option<u32>,
}

/// A feature of a layer (`Tile.Feature`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Feature {
    /// `optional uint64 id = 1 [default = 0]`
    #[prost(uint64, optional, tag = "1")]
    pub id: Option<u64>,
    /// `repeated uint32 tags = 2 [packed = true]`: key and value indexes, in pairs.
    #[prost(uint32, repeated, packed = "true", tag = "2")]
    pub tags: Vec<u32>,
    /// `optional GeomType type = 3 [default = UNKNOWN]`, kept as the raw number so an
    /// out-of-range type can be reported rather than refused by the decoder.
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
    /// `repeated uint32 geometry = 4 [packed = true]`: the command stream.
    #[prost(uint32, repeated, packed = "true", tag = "4")]
    pub geometry: Vec<u32>,
}

/// An attribute value (`Tile.Value`); exactly one field must be set.
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

/// `GeomType` numbers (`Tile.GeomType`).
pub const UNKNOWN: i32 = 0;
/// A point or multipoint.
pub const POINT: i32 = 1;
/// A linestring or multilinestring.
pub const LINESTRING: i32 = 2;
/// A polygon or multipolygon.
pub const POLYGON: i32 = 3;
