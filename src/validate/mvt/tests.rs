//! Each rule against a small tile built with the same messages, valid and then broken one way.

use std::io::Write;

use prost::Message;

use super::proto::{self, Feature, Layer, Tile, Value};
use super::*;

fn command(id: u32, count: u32) -> u32 {
    id | (count << 3)
}

fn zz(n: i32) -> u32 {
    ((n << 1) ^ (n >> 31)) as u32
}

/// A command stream from absolute vertices: MoveTo the first, LineTo the rest, ClosePath if asked.
fn path(vertices: &[(i32, i32)], close: bool, cursor: &mut (i32, i32)) -> Vec<u32> {
    let mut out = Vec::new();
    for (n, &(x, y)) in vertices.iter().enumerate() {
        if n == 0 {
            out.push(command(1, 1));
        } else if n == 1 {
            out.push(command(2, vertices.len() as u32 - 1));
        }
        out.extend([zz(x - cursor.0), zz(y - cursor.1)]);
        *cursor = (x, y);
    }
    if close {
        out.push(command(7, 1));
    }
    out
}

/// Rings of a polygon feature, each from its absolute vertices.
fn polygon(rings: &[&[(i32, i32)]]) -> Vec<u32> {
    let mut cursor = (0, 0);
    rings
        .iter()
        .flat_map(|ring| path(ring, true, &mut cursor))
        .collect()
}

/// Clockwise on screen (y down): positive area, an exterior ring.
const SQUARE: &[(i32, i32)] = &[(0, 0), (10, 0), (10, 10), (0, 10)];
const HOLE: &[(i32, i32)] = &[(2, 2), (2, 8), (8, 8), (8, 2)];

fn string(s: &str) -> Value {
    Value {
        string_value: Some(s.to_string()),
        ..Value::default()
    }
}

fn feature(id: Option<u64>, kind: i32, tags: Vec<u32>, geometry: Vec<u32>) -> Feature {
    Feature {
        id,
        tags,
        r#type: Some(kind),
        geometry,
    }
}

fn point(id: Option<u64>) -> Feature {
    feature(
        id,
        proto::POINT,
        vec![],
        vec![command(1, 1), zz(25), zz(17)],
    )
}

fn layer(name: &str, features: Vec<Feature>) -> Layer {
    Layer {
        version: Some(2),
        name: Some(name.to_string()),
        features,
        keys: vec![],
        values: vec![],
        extent: Some(4096),
    }
}

fn tile(layers: Vec<Layer>) -> Vec<u8> {
    Tile { layers }.encode_to_vec()
}

fn problems(layers: Vec<Layer>) -> Vec<String> {
    check_tile(&tile(layers)).problems
}

/// The one problem a tile has, which must mention `needle`.
fn assert_one_problem(layers: Vec<Layer>, needle: &str) {
    let found = problems(layers);
    assert_eq!(found.len(), 1, "one problem expected: {found:?}");
    assert!(
        found[0].contains(needle),
        "{:?} should mention {needle:?}",
        found[0]
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A layer with points, lines, a polygon with a hole and a multipolygon, every value type and ids.
fn valid_layer() -> Layer {
    let mut cursor = (0, 0);
    let mut two_lines = path(&[(1, 1), (5, 1), (5, 9)], false, &mut cursor);
    two_lines.extend(path(&[(20, 20), (30, 30)], false, &mut cursor));
    let values = vec![
        string("Acme"),
        Value {
            float_value: Some(1.5),
            ..Value::default()
        },
        Value {
            double_value: Some(2.5),
            ..Value::default()
        },
        Value {
            int_value: Some(-3),
            ..Value::default()
        },
        Value {
            uint_value: Some(7),
            ..Value::default()
        },
        Value {
            sint_value: Some(-9),
            ..Value::default()
        },
        Value {
            bool_value: Some(true),
            ..Value::default()
        },
    ];
    let far: Vec<(i32, i32)> = SQUARE.iter().map(|&(x, y)| (x + 100, y)).collect();
    let features = vec![
        feature(
            Some(1),
            proto::POINT,
            vec![0, 0, 1, 1, 2, 6],
            vec![command(1, 1), zz(25), zz(17)],
        ),
        feature(
            None,
            proto::POINT,
            vec![0, 3],
            vec![command(1, 2), zz(5), zz(7), zz(-2), zz(-5)],
        ),
        feature(Some(2), proto::LINESTRING, vec![0, 2, 1, 4], two_lines),
        feature(
            Some(3),
            proto::POLYGON,
            vec![1, 5],
            polygon(&[SQUARE, HOLE]),
        ),
        feature(
            Some(4),
            proto::POLYGON,
            vec![],
            polygon(&[SQUARE, HOLE, &far]),
        ),
    ];
    Layer {
        keys: vec!["name".into(), "size".into(), "open".into()],
        values,
        ..layer("facilities", features)
    }
}

#[test]
fn a_valid_tile_has_no_problems_and_is_summarized() {
    let bytes = tile(vec![valid_layer(), layer("other", vec![point(Some(1))])]);
    let report = check_tile(&bytes);
    assert_eq!(report.problems, Vec::<String>::new());
    assert!(!report.gzipped);
    assert_eq!(report.layers.len(), 2);
    let facilities = &report.layers[0];
    assert_eq!(
        (
            facilities.name.as_str(),
            facilities.extent,
            facilities.features
        ),
        ("facilities", 4096, 5)
    );
    assert_eq!(
        facilities.fields,
        BTreeMap::from([
            ("name".to_string(), MIXED.to_string()),
            ("size".to_string(), "Number".to_string()),
            ("open".to_string(), "Boolean".to_string()),
        ])
    );
    assert_eq!(
        facilities.geometry_types,
        BTreeSet::from(["Point", "LineString", "Polygon"])
    );
    assert_eq!(report.layers[1].name, "other");
    assert!(report.layers[1].fields.is_empty());
}

#[test]
fn a_key_seen_with_one_type_keeps_it() {
    let mut layer = layer("l", vec![point(None), point(None)]);
    layer.keys = vec!["name".into()];
    layer.values = vec![string("a"), string("b")];
    layer.features[0].tags = vec![0, 0];
    layer.features[1].tags = vec![0, 1];
    let report = check_tile(&tile(vec![layer]));
    assert_eq!(report.layers[0].fields["name"], "String");
}

#[test]
fn gzip_is_inflated_and_a_cut_or_corrupt_stream_is_a_problem() {
    let bytes = gzip(&tile(vec![valid_layer()]));
    let report = check_tile(&bytes);
    assert!(report.gzipped);
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.layers.len(), 1);

    let cut = check_tile(&bytes[..bytes.len() - 5]);
    assert!(cut.gzipped && cut.layers.is_empty());
    assert_eq!(cut.problems.len(), 1);
    assert!(cut.problems[0].contains("gzip"), "{:?}", cut.problems);

    let mut corrupt = bytes.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x55;
    assert!(!check_tile(&corrupt).problems.is_empty());
}

#[test]
fn a_tile_that_inflates_past_the_limit_is_a_problem() {
    let bytes = gzip(&vec![0; (3 << 20) + 1]);
    assert_eq!(
        inflate(&bytes, (3 << 20) + 1).map(|out| out.len()),
        Ok((3 << 20) + 1)
    );
    assert_eq!(
        inflate(&bytes, 3 << 20).map_err(|e| e.to_string()),
        Err("the tile inflates past the 3 MiB cap: refused as a possible gzip bomb".to_string())
    );
}

#[test]
fn bytes_that_are_not_a_protobuf_are_a_problem() {
    let report = check_tile(b"<html>not found</html>");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("protobuf"));
    assert!(check_tile(&gzip(b"\xff\xff\xff")).problems[0].contains("protobuf"));
}

#[test]
fn empty_tiles_are_left_to_the_caller() {
    assert_eq!(check_tile(b""), TileReport::default());
    assert!(check_tile(&gzip(b"")).problems.is_empty());
}

#[test]
fn a_layer_must_be_version_2() {
    let mut missing = layer("l", vec![point(None)]);
    missing.version = None;
    assert_one_problem(vec![missing], "no version");
    let mut old = layer("l", vec![point(None)]);
    old.version = Some(1);
    assert_one_problem(vec![old], "version 1");
    let mut unknown = layer("l", vec![point(None)]);
    unknown.version = Some(3);
    assert_one_problem(vec![unknown], "version 3");
}

#[test]
fn a_layer_must_write_a_positive_extent() {
    let mut missing = layer("l", vec![point(None)]);
    missing.extent = None;
    assert_one_problem(vec![missing.clone()], "no extent");
    assert_eq!(check_tile(&tile(vec![missing])).layers[0].extent, 4096);
    let mut zero = layer("l", vec![point(None)]);
    zero.extent = Some(0);
    assert_one_problem(vec![zero], "extent of 0");
    let mut other = layer("l", vec![point(None)]);
    other.extent = Some(512);
    assert_eq!(check_tile(&tile(vec![other])).layers[0].extent, 512);
}

#[test]
fn a_layer_must_have_a_name_unique_in_the_tile() {
    let mut unnamed = layer("", vec![point(None)]);
    assert_one_problem(vec![unnamed.clone()], "must have a name");
    unnamed.name = None;
    assert_one_problem(vec![unnamed], "layer #0 (no name)");
    assert_one_problem(
        vec![layer("a", vec![]), layer("b", vec![]), layer("a", vec![])],
        "layer \"a\" appears twice",
    );
}

#[test]
fn a_layer_without_features_is_not_a_problem() {
    assert!(problems(vec![layer("l", vec![])]).is_empty());
}

#[test]
fn feature_ids_when_set_are_unique_in_their_layer() {
    assert!(problems(vec![layer(
        "l",
        vec![point(None), point(None), point(Some(0))]
    )])
    .is_empty());
    assert!(problems(vec![
        layer("a", vec![point(Some(5))]),
        layer("b", vec![point(Some(5))])
    ])
    .is_empty());
    assert_one_problem(
        vec![layer(
            "l",
            vec![point(Some(5)), point(Some(6)), point(Some(5))],
        )],
        "layer \"l\": 2 features share id 5 (#0, #2)",
    );
    let mut many: Vec<Feature> = (0..8).map(|_| point(Some(0))).collect();
    many.push(point(Some(1)));
    many.push(point(Some(1)));
    let found = problems(vec![layer("l", many)]);
    assert_eq!(
        found,
        [
            "layer \"l\": 8 features share id 0 (#0, #1, #2, #3, #4, ...); ids should be unique in a layer",
            "layer \"l\": 2 features share id 1 (#8, #9); ids should be unique in a layer",
        ]
    );
}

#[test]
fn tags_come_in_pairs_of_indexes_in_range_with_each_key_once() {
    let with_tags = |tags: Vec<u32>| {
        let mut layer = layer("l", vec![point(None)]);
        layer.keys = vec!["a".into(), "b".into()];
        layer.values = vec![string("x")];
        layer.features[0].tags = tags;
        vec![layer]
    };
    assert!(problems(with_tags(vec![0, 0, 1, 0])).is_empty());
    assert_one_problem(with_tags(vec![0, 0, 1]), "odd number of tags");
    assert_one_problem(with_tags(vec![2, 0]), "key #2, past the layer's 2 keys");
    assert_one_problem(with_tags(vec![0, 1]), "value #1, past the layer's 1 values");
    assert_one_problem(with_tags(vec![0, 0, 0, 0]), "the key \"a\" twice");
}

#[test]
fn a_value_sets_exactly_one_field() {
    let with_value = |value: Value| {
        let mut layer = layer("l", vec![point(None)]);
        layer.values = vec![value];
        vec![layer]
    };
    assert_one_problem(with_value(Value::default()), "value #0 has none");
    assert_one_problem(
        with_value(Value {
            int_value: Some(1),
            bool_value: Some(false),
            ..Value::default()
        }),
        "value #0 has 2 fields set",
    );
}

#[test]
fn a_feature_has_a_defined_geometry_type_and_unknown_is_allowed() {
    let mut untyped = point(None);
    untyped.r#type = None;
    assert_one_problem(vec![layer("l", vec![untyped])], "no geometry type");
    let mut strange = point(None);
    strange.r#type = Some(8);
    assert_one_problem(vec![layer("l", vec![strange])], "geometry type 8");
    let mut unknown = point(None);
    unknown.r#type = Some(proto::UNKNOWN);
    let report = check_tile(&tile(vec![layer("l", vec![unknown])]));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.layers[0].geometry_types, BTreeSet::from(["Unknown"]));
}

fn geometry_problem(kind: i32, geometry: Vec<u32>) -> Vec<String> {
    problems(vec![layer(
        "l",
        vec![feature(Some(1), kind, vec![], geometry)],
    )])
}

#[test]
fn commands_must_parse_whatever_the_type() {
    for kind in [
        proto::UNKNOWN,
        proto::POINT,
        proto::LINESTRING,
        proto::POLYGON,
    ] {
        let found = geometry_problem(kind, vec![]);
        assert!(found[0].contains("the geometry is empty"), "{found:?}");
        let found = geometry_problem(kind, vec![command(3, 1), 0, 0]);
        assert!(found[0].contains("unknown command id 3"), "{found:?}");
        let found = geometry_problem(kind, vec![command(1, 1), 2]);
        assert!(
            found[0].contains("announces 2 parameters but only 1"),
            "{found:?}"
        );
        let found = geometry_problem(kind, vec![command(1, 0)]);
        assert!(found[0].contains("count of 0"), "{found:?}");
        // A count as large as the format allows, with nothing behind it, is read without allocating.
        let found = geometry_problem(kind, vec![command(1, (1 << 29) - 1), 2, 2]);
        assert!(
            found[0].contains("announces 1073741822 parameters"),
            "{found:?}"
        );
    }
    let found = geometry_problem(
        proto::POLYGON,
        [polygon(&[SQUARE]), vec![command(7, 2)]].concat(),
    );
    assert!(
        found[0].contains("ClosePath(2) at index 11 must have a count of 1"),
        "{found:?}"
    );
}

#[test]
fn a_point_is_one_move_to() {
    assert!(geometry_problem(proto::POINT, vec![command(1, 3), 2, 2, 4, 4, 0, 0]).is_empty());
    let found = geometry_problem(proto::POINT, vec![command(1, 1), 0, 0, command(1, 1), 0, 0]);
    assert!(
        found[0].contains("MoveTo(1) at index 3 follows it"),
        "{found:?}"
    );
    let found = geometry_problem(proto::POINT, vec![command(2, 1), 2, 2]);
    assert!(found[0].contains("not LineTo(1)"), "{found:?}");
}

#[test]
fn a_line_is_move_to_then_line_to_repeated_without_zero_length_segments() {
    let mut cursor = (0, 0);
    let line = path(&[(1, 1), (5, 1)], false, &mut cursor);
    assert!(geometry_problem(proto::LINESTRING, line.clone()).is_empty());
    let found = geometry_problem(proto::LINESTRING, vec![command(1, 1), 2, 2]);
    assert!(
        found[0].contains("line 1 ends without its LineTo"),
        "{found:?}"
    );
    let found = geometry_problem(
        proto::LINESTRING,
        vec![command(1, 2), 2, 2, 4, 4, command(2, 1), 2, 2],
    );
    assert!(
        found[0].contains("needs MoveTo(1), found MoveTo(2)"),
        "{found:?}"
    );
    let found = geometry_problem(
        proto::LINESTRING,
        [line.clone(), vec![command(7, 1)]].concat(),
    );
    assert!(
        found[0].contains("line 2 needs MoveTo(1), found ClosePath"),
        "{found:?}"
    );
    let found = geometry_problem(
        proto::LINESTRING,
        [line, vec![command(2, 1), 2, 2]].concat(),
    );
    assert!(
        found[0].contains("line 2 needs MoveTo(1), found LineTo(1)"),
        "{found:?}"
    );
    let found = geometry_problem(
        proto::LINESTRING,
        vec![command(1, 1), 2, 2, command(2, 2), 4, 4, 0, 0],
    );
    assert!(found[0].contains("repeats a vertex"), "{found:?}");
}

#[test]
fn a_polygon_is_rings_of_move_to_line_to_close_path() {
    assert!(geometry_problem(proto::POLYGON, polygon(&[SQUARE, HOLE])).is_empty());
    let found = geometry_problem(proto::POLYGON, polygon(&[&SQUARE[..2]]));
    assert!(
        found[0].contains("ring 1 needs LineTo(>=2), found LineTo(1)"),
        "{found:?}"
    );
    let mut cursor = (0, 0);
    let unclosed = path(SQUARE, false, &mut cursor);
    let found = geometry_problem(proto::POLYGON, unclosed);
    assert!(
        found[0].contains("ring 1 ends without its ClosePath"),
        "{found:?}"
    );
    let found = geometry_problem(proto::POLYGON, [polygon(&[SQUARE]), vec![3]].concat());
    assert!(found[0].contains("unknown command id 3"), "{found:?}");
    let closed_twice: Vec<(i32, i32)> = [SQUARE, &[(0, 0)]].concat();
    let found = geometry_problem(proto::POLYGON, polygon(&[&closed_twice]));
    assert!(found[0].contains("repeats its first vertex"), "{found:?}");
}

#[test]
fn the_first_ring_winds_clockwise_and_no_ring_is_flat() {
    let reversed: Vec<(i32, i32)> = SQUARE.iter().rev().copied().collect();
    let found = geometry_problem(proto::POLYGON, polygon(&[&reversed]));
    assert!(
        found[0].contains("ring 1 winds counter-clockwise"),
        "{found:?}"
    );
    // A hole (negative) after its exterior, and a second polygon (positive) after that, are fine.
    assert!(geometry_problem(proto::POLYGON, polygon(&[SQUARE, &reversed, SQUARE])).is_empty());
    let flat: &[(i32, i32)] = &[(0, 0), (5, 5), (10, 10)];
    let found = geometry_problem(proto::POLYGON, polygon(&[SQUARE, flat]));
    assert!(found[0].contains("ring 2 has zero area"), "{found:?}");
}

#[test]
fn coordinates_past_32_bits_do_not_overflow_the_checks() {
    let far = vec![
        command(1, 1),
        zz(i32::MAX),
        0,
        command(2, 3),
        zz(i32::MAX),
        0,
        0,
        zz(i32::MAX),
        zz(-i32::MAX),
        0,
        command(7, 1),
    ];
    assert!(geometry_problem(proto::POLYGON, far).is_empty());
}

#[test]
fn problems_past_the_limit_are_counted() {
    let features = (0..MAX_PROBLEMS + 30)
        .map(|_| feature(None, proto::POINT, vec![], vec![]))
        .collect();
    let found = problems(vec![layer("l", features)]);
    assert_eq!(found.len(), MAX_PROBLEMS + 1);
    assert_eq!(found[MAX_PROBLEMS], "... and 30 more problems");
}
