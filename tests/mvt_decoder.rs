//! Tests of the MVT test-support decoder in `tests/common/mvt.rs`.

use std::io::Write;

use crate::common::mvt::tile::{Feature, GeomType, Layer, Value};
use crate::common::mvt::*;
use prost::Message;

/// MoveTo/LineTo/ClosePath command integer.
fn cmd(id: u32, count: u32) -> u32 {
    id | (count << 3)
}

/// Zigzag-encodes a parameter.
fn zz(n: i32) -> u32 {
    ((n << 1) ^ (n >> 31)) as u32
}

fn string_value(s: &str) -> Value {
    Value {
        string_value: Some(s.to_string()),
        ..Default::default()
    }
}

fn encode(layers: Vec<Layer>) -> Vec<u8> {
    Tile { layers }.encode_to_vec()
}

fn layer(name: &str, keys: &[&str], values: Vec<Value>, features: Vec<Feature>) -> Layer {
    Layer {
        version: 2,
        name: name.to_string(),
        features,
        keys: keys.iter().map(|k| k.to_string()).collect(),
        values,
        extent: Some(4096),
    }
}

fn feature(id: Option<u64>, geom: GeomType, tags: Vec<u32>, geometry: Vec<u32>) -> Feature {
    Feature {
        id,
        tags,
        r#type: Some(geom as i32),
        geometry,
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn hex_decode(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// A point layer with every value type and one feature without id.
fn sample_tile() -> Vec<u8> {
    let values = vec![
        string_value("Acme"),
        Value {
            float_value: Some(1.5),
            ..Default::default()
        },
        Value {
            double_value: Some(2.25),
            ..Default::default()
        },
        Value {
            int_value: Some(-3),
            ..Default::default()
        },
        Value {
            uint_value: Some(u64::MAX),
            ..Default::default()
        },
        Value {
            sint_value: Some(-42),
            ..Default::default()
        },
        Value {
            bool_value: Some(true),
            ..Default::default()
        },
    ];
    let keys = ["name", "f", "d", "i", "u", "s", "b"];
    let all_tags = (0..7).flat_map(|i| [i, i]).collect();
    let features = vec![
        feature(
            Some(7),
            GeomType::Point,
            all_tags,
            vec![cmd(1, 1), zz(25), zz(17)],
        ),
        // Multipoint without id: (5,7) then (3,2), the second as a delta.
        feature(
            None,
            GeomType::Point,
            vec![0, 0],
            vec![cmd(1, 2), zz(5), zz(7), zz(-2), zz(-5)],
        ),
        feature(Some(0), GeomType::Point, vec![], vec![cmd(1, 1), 0, 0]),
    ];
    encode(vec![layer("facilities", &keys, values, features)])
}

#[test]
fn decodes_points_ids_and_all_value_types() {
    let layers = decode_tile(&sample_tile()).unwrap();
    assert_eq!(layers.len(), 1);
    let l = &layers[0];
    assert_eq!(
        (l.name.as_str(), l.extent, l.version),
        ("facilities", 4096, 2)
    );
    assert_eq!(l.features.len(), 3);

    let f = &l.features[0];
    assert_eq!(f.id, Some(7));
    assert_eq!(f.geom_type, GeomType::Point as i32);
    assert_eq!(f.points, vec![(25, 17)]);
    let expected = [
        ("name", PropValue::String("Acme".into())),
        ("f", PropValue::Float(1.5)),
        ("d", PropValue::Double(2.25)),
        ("i", PropValue::Int(-3)),
        ("u", PropValue::UInt(u64::MAX)),
        ("s", PropValue::Int(-42)),
        ("b", PropValue::Bool(true)),
    ];
    assert_eq!(f.props.len(), expected.len());
    for (k, v) in expected {
        assert_eq!(f.props.get(k), Some(&v), "property {k}");
    }

    let multi = &l.features[1];
    assert_eq!(multi.id, None, "absent id must decode as None");
    assert_eq!(multi.points, vec![(5, 7), (3, 2)]);
    assert_eq!(
        multi.props.get("name"),
        Some(&PropValue::String("Acme".into()))
    );

    assert_eq!(
        l.features[2].id,
        Some(0),
        "explicit id 0 must stay distinguishable"
    );
    assert!(l.features[2].props.is_empty());
}

#[test]
fn decodes_lines_and_polygons_with_negative_deltas() {
    // Line (10,10) -> (4,12) -> (-1,0) and a second part from (-3,-3).
    #[rustfmt::skip]
    let line = vec![
        cmd(1, 1), zz(10), zz(10),
        cmd(2, 2), zz(-6), zz(2), zz(-5), zz(-12),
        cmd(1, 1), zz(-2), zz(-3),
        cmd(2, 1), zz(1), zz(1),
    ];
    // Square ring (0,0) (8,0) (8,8) (0,8), closed; the cursor carries over.
    #[rustfmt::skip]
    let poly = vec![
        cmd(1, 1), 0, 0,
        cmd(2, 3), zz(8), 0, 0, zz(8), zz(-8), 0,
        cmd(7, 1),
    ];
    let features = vec![
        feature(None, GeomType::Linestring, vec![], line),
        feature(Some(1), GeomType::Polygon, vec![], poly),
    ];
    let mut l = layer("shapes", &[], vec![], features);
    l.extent = None;
    let layers = decode_tile(&encode(vec![l])).unwrap();
    let l = &layers[0];
    assert_eq!(l.extent, 4096, "absent extent defaults to 4096");
    assert_eq!(l.features[0].geom_type, GeomType::Linestring as i32);
    assert_eq!(
        l.features[0].points,
        vec![(10, 10), (4, 12), (-1, 0), (-3, -3), (-2, -2)]
    );
    assert_eq!(l.features[1].geom_type, GeomType::Polygon as i32);
    assert_eq!(l.features[1].points, vec![(0, 0), (8, 0), (8, 8), (0, 8)]);
}

#[test]
fn decodes_gzip_input_and_multiple_layers() {
    let mut bytes = sample_tile();
    bytes.extend(encode(vec![layer("empty", &[], vec![], vec![])]));
    let gz = gzip(&bytes);
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    assert_eq!(gunzip_if_needed(&gz), bytes);
    assert_eq!(gunzip_if_needed(&bytes), bytes);
    let layers = decode_tile(&gz).unwrap();
    assert_eq!(layers, decode_tile(&bytes).unwrap());
    let names: Vec<_> = layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["facilities", "empty"]);
}

#[test]
fn empty_input_is_an_empty_tile() {
    assert_eq!(decode_tile(&[]).unwrap(), vec![]);
}

fn decode_err(f: Feature, values: Vec<Value>) -> String {
    let bytes = encode(vec![layer("l", &["k"], values, vec![f])]);
    decode_tile(&bytes).unwrap_err()
}

#[test]
fn rejects_bad_input() {
    let point = || vec![cmd(1, 1), 0, 0];
    let v = || vec![string_value("x")];
    #[rustfmt::skip]
    let cases = [
        (feature(None, GeomType::Point, vec![0], point()), v(), "odd number of tags"),
        (feature(None, GeomType::Point, vec![1, 0], point()), v(), "key index 1 out of range"),
        (feature(None, GeomType::Point, vec![0, 1], point()), v(), "value index 1 out of range"),
        (feature(None, GeomType::Point, vec![0, 0, 0, 0], point()), v(), "duplicate property key"),
        (feature(None, GeomType::Point, vec![], vec![cmd(3, 1), 0, 0]), v(), "unknown geometry command 3"),
        (feature(None, GeomType::Point, vec![], vec![cmd(1, 2), 0, 0]), v(), "truncated"),
        (feature(None, GeomType::Point, vec![], vec![cmd(1, 0)]), v(), "count 0"),
        (feature(None, GeomType::Point, vec![], vec![cmd(1, 1), 0, 0, cmd(2, 1), 2, 2]), v(), "LineTo in a point"),
        (feature(None, GeomType::Polygon, vec![], vec![cmd(7, 2)]), v(), "ClosePath with count 2"),
        (feature(None, GeomType::Point, vec![], point()), vec![Value::default()], "no field set"),
        (
            feature(None, GeomType::Point, vec![], point()),
            vec![Value { int_value: Some(1), bool_value: Some(false), ..Default::default() }],
            "more than one field set",
        ),
    ];
    for (f, values, want) in cases {
        let err = decode_err(f, values);
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }

    let err = decode_tile(&[0x1a, 0x05, 0x0a]).unwrap_err();
    assert!(err.contains("invalid MVT protobuf"), "{err}");
    let mut gz = gzip(&sample_tile());
    gz.truncate(gz.len() / 2);
    let err = decode_tile(&gz).unwrap_err();
    assert!(err.contains("invalid gzip"), "{err}");
}

/// Expected tile pixel of `(lon, lat)` in tile `z/x/y` (Web Mercator, y down).
fn expected_pixel(lon: f64, lat: f64, z: u32, x: u32, y: u32, extent: u32) -> (f64, f64) {
    let n = f64::from(1u32 << z);
    let lat = lat.to_radians();
    let fx = (lon + 180.0) / 360.0 * n;
    let fy = (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n;
    let e = f64::from(extent);
    ((fx - f64::from(x)) * e, (fy - f64::from(y)) * e)
}

/// Output of PostGIS 3.3.2 (captured once with psql; no live database needed) for
/// `SELECT encode(ST_AsMVT(q, 'facilities', 4096, 'geom'), 'hex') FROM (SELECT 7::int AS id,
/// 'Acme'::text AS name, 3::int AS n, true AS b, 2.5::float8 AS d,
/// ST_AsMVTGeom(ST_Transform(ST_SetSRID(ST_MakePoint(90.4, 23.8), 4326), 3857),
/// ST_TileEnvelope(10, 769, 442), 4096, 64, true) AS geom) q`.
/// (lon 90.4 / lat 23.8 lies in tile 10/769/442; PostGIS placed it at pixel (564, 1093).)
const POSTGIS_TILE_HEX: &str = "1a5a0a0a666163696c69746965731215120a000001010202030304041801220509e8088a111a0269641a046e616d651a016e1a01621a01642202280722060a0441636d65220228032202380122091900000000000004402880207802";

/// Same query with `feature_id_name = 'id'`:
/// `ST_AsMVT(q, 'facilities', 4096, 'geom', 'id')`.
const POSTGIS_TILE_WITH_ID_HEX: &str = "1a520a0a666163696c697469657312150807120800000101020203031801220509e8088a111a046e616d651a016e1a01621a016422060a0441636d65220228032202380122091900000000000004402880207802";

fn check_postgis_feature(hex: &str, with_id: bool) {
    let layers = decode_tile(&hex_decode(hex)).unwrap();
    assert_eq!(layers.len(), 1);
    let l = &layers[0];
    assert_eq!(
        (l.name.as_str(), l.extent, l.version),
        ("facilities", 4096, 2)
    );
    assert_eq!(l.features.len(), 1);
    let f = &l.features[0];
    assert_eq!(f.geom_type, GeomType::Point as i32);
    assert_eq!(f.points.len(), 1);
    let (px, py) = f.points[0];
    let (ex, ey) = expected_pixel(90.4, 23.8, 10, 769, 442, 4096);
    assert!((px as f64 - ex).abs() <= 1.0, "x {px} vs expected {ex}");
    assert!((py as f64 - ey).abs() <= 1.0, "y {py} vs expected {ey}");

    let mut props = vec![
        ("name", PropValue::String("Acme".into())),
        ("n", PropValue::UInt(3)), // PostGIS writes non-negative ints as uint_value
        ("b", PropValue::Bool(true)),
        ("d", PropValue::Double(2.5)),
    ];
    if with_id {
        assert_eq!(f.id, Some(7));
    } else {
        assert_eq!(f.id, None);
        props.push(("id", PropValue::UInt(7)));
    }
    assert_eq!(f.props.len(), props.len(), "{:?}", f.props);
    for (k, v) in props {
        assert_eq!(f.props.get(k), Some(&v), "property {k}");
    }
}

#[test]
fn decodes_real_postgis_tile() {
    check_postgis_feature(POSTGIS_TILE_HEX, false);
}

#[test]
fn decodes_real_postgis_tile_with_feature_id() {
    check_postgis_feature(POSTGIS_TILE_WITH_ID_HEX, true);
}
