//! The shape's tiles against an independent reckoning: points sampled densely along its lines and
//! over its area, each dirtying the tiles whose buffered envelopes hold it.

use std::collections::BTreeSet;

use super::*;
use crate::tile::{mercator, BBox, EARTH_RADIUS};

/// WKB of a geometry of `kind` holding `body`, little- or big-endian.
fn wkb(little: bool, kind: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![u8::from(little)];
    bytes.extend(if little {
        kind.to_le_bytes()
    } else {
        kind.to_be_bytes()
    });
    bytes.extend_from_slice(body);
    bytes
}

fn points_body(little: bool, points: &[(f64, f64)]) -> Vec<u8> {
    let mut body = Vec::new();
    let count = points.len() as u32;
    body.extend(if little {
        count.to_le_bytes()
    } else {
        count.to_be_bytes()
    });
    // Degrees in the tests, metres in the WKB, as PostGIS projects them (inside the square).
    for (lon, lat) in points {
        let (x, y) = mercator(*lon, *lat);
        for v in [x, y] {
            body.extend(if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            });
        }
    }
    body
}

fn line(little: bool, points: &[(f64, f64)]) -> Vec<u8> {
    wkb(little, 2, &points_body(little, points))
}

fn polygon(rings: &[&[(f64, f64)]]) -> Vec<u8> {
    let mut body = (rings.len() as u32).to_le_bytes().to_vec();
    for ring in rings {
        body.extend(points_body(true, ring));
    }
    wkb(true, 3, &body)
}

fn multi(kind: u32, members: &[Vec<u8>]) -> Vec<u8> {
    let mut body = (members.len() as u32).to_le_bytes().to_vec();
    for member in members {
        body.extend_from_slice(member);
    }
    wkb(true, kind, &body)
}

/// The tiles of zooms `0..=max` the shape dirties, over the world.
fn tiles_of(shape: &Shape, max: u8, margin: f64) -> BTreeSet<TileCoord> {
    let ranges: Vec<TileRange> = (0..=max).map(|z| BBox::WORLD.tile_range(z)).collect();
    let mut found = BTreeSet::new();
    let descent = Descent {
        max_zoom: max,
        margin,
        ranges: &ranges,
        wanted: &|_| true,
        fetched: &|_| true,
    };
    assert!(shape.tiles(&descent, &mut |t| {
        found.insert(t);
        true
    }));
    found
}

/// The tiles of zoom `z` whose envelopes, grown by `margin` of their size, hold `(lon, lat)`.
fn tiles_holding(lon: f64, lat: f64, z: u8, margin: f64) -> Vec<TileCoord> {
    let (x, y) = mercator(lon, lat);
    let n = 1u32 << z;
    let size = 2.0 * MERCATOR_HALF_WORLD / f64::from(n);
    let index = |v: f64| (v / size).floor().clamp(0.0, f64::from(n - 1)) as u32;
    let m = margin * size;
    let (x0, x1) = (
        index(x - m + MERCATOR_HALF_WORLD),
        index(x + m + MERCATOR_HALF_WORLD),
    );
    let (y0, y1) = (
        index(MERCATOR_HALF_WORLD - y - m),
        index(MERCATOR_HALF_WORLD - y + m),
    );
    (x0..=x1)
        .flat_map(|tx| (y0..=y1).map(move |ty| TileCoord::new(z, tx, ty).unwrap()))
        .collect()
}

#[test]
fn wkb_of_every_kind_and_byte_order_parses() {
    let a = [(10.0, 20.0), (11.0, 21.0)];
    for little in [true, false] {
        let shape = Shape::from_wkb(&line(little, &a), true).unwrap();
        assert_eq!(
            shape.lines,
            vec![vec![mercator(10.0, 20.0), mercator(11.0, 21.0)]]
        );
    }
    let ring: &[(f64, f64)] = &[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 0.0)];
    let collection = multi(
        7,
        &[
            multi(6, &[polygon(&[ring]), polygon(&[ring, ring])]),
            multi(5, &[line(true, &a)]),
            wkb(
                true,
                1,
                &[1.5f64.to_le_bytes(), 2.5f64.to_le_bytes()].concat(),
            ),
            wkb(
                true,
                1,
                &[f64::NAN.to_le_bytes(), f64::NAN.to_le_bytes()].concat(),
            ),
        ],
    );
    let shape = Shape::from_wkb(&collection, true).unwrap();
    assert_eq!(shape.polygons.len(), 2);
    assert_eq!(shape.polygons[1].len(), 2);
    assert_eq!(
        shape.lines.len(),
        2,
        "the line and the point; the empty point is nothing"
    );
    // Truncated bytes, trailing bytes, a vertex count beyond the bytes, a member of another kind.
    let bytes = line(true, &a);
    assert!(Shape::from_wkb(&bytes[..bytes.len() - 1], true).is_none());
    assert!(Shape::from_wkb(&[bytes.clone(), vec![0]].concat(), true).is_none());
    let mut huge = bytes.clone();
    huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(Shape::from_wkb(&huge, true).is_none());
    assert!(Shape::from_wkb(&multi(6, &[line(true, &a)]), true).is_none());
    assert!(
        Shape::from_wkb(&wkb(true, 1002, &points_body(true, &a)), true).is_none(),
        "3D is refused"
    );
}

#[test]
fn a_diagonal_line_dirties_the_tiles_along_it_not_its_box() {
    let (from, to) = ((-170.0, -60.0), (150.0, 70.0));
    let shape = Shape::from_wkb(&line(true, &[from, to]), true).unwrap();
    let margin = 64.0 / 4096.0;
    let found = tiles_of(&shape, 7, margin);
    let along = |t: f64| {
        // Straight in Web Mercator, as the tiles draw it.
        let (x0, y0) = mercator(from.0, from.1);
        let (x1, y1) = mercator(to.0, to.1);
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        let lon = (x / EARTH_RADIUS).to_degrees();
        let lat = (y / EARTH_RADIUS).sinh().atan().to_degrees();
        (lon, lat)
    };
    for z in 0..=7 {
        let expected: BTreeSet<TileCoord> = (0..=20_000)
            .flat_map(|i| {
                let (lon, lat) = along(f64::from(i) / 20_000.0);
                tiles_holding(lon, lat, z, margin)
            })
            .collect();
        let at_z: BTreeSet<TileCoord> = found.iter().copied().filter(|t| t.z() == z).collect();
        assert!(
            expected.is_subset(&at_z),
            "zoom {z}: a tile on the line is missing"
        );
        // Sampling misses only tiles the line grazes at a corner of their buffer.
        assert!(
            at_z.len() <= expected.len() + expected.len() / 10 + 2,
            "zoom {z}"
        );
    }
    let box_tiles = BBox::new(-170.0, -60.0, 150.0, 70.0).unwrap().tile_range(7);
    let boxed = u64::from(box_tiles.max_x - box_tiles.min_x + 1)
        * u64::from(box_tiles.max_y - box_tiles.min_y + 1);
    let at_7 = found.iter().filter(|t| t.z() == 7).count() as u64;
    assert!(at_7 * 20 < boxed, "{at_7} tiles against the box's {boxed}");
}

#[test]
fn a_polygon_dirties_its_area_but_not_its_hole() {
    let outer: &[(f64, f64)] = &[
        (0.0, 0.0),
        (40.0, 0.0),
        (40.0, 40.0),
        (0.0, 40.0),
        (0.0, 0.0),
    ];
    let hole: &[(f64, f64)] = &[
        (10.0, 10.0),
        (30.0, 10.0),
        (30.0, 30.0),
        (10.0, 30.0),
        (10.0, 10.0),
    ];
    let shape = Shape::from_wkb(&polygon(&[outer, hole]), true).unwrap();
    let margin = 64.0 / 4096.0;
    let found = tiles_of(&shape, 6, margin);
    let has = |lon: f64, lat: f64, z: u8| {
        tiles_holding(lon, lat, z, 0.0)
            .iter()
            .all(|t| found.contains(t))
    };
    for z in 3..=6 {
        assert!(
            has(5.0, 5.0, z) && has(35.0, 20.0, z),
            "zoom {z}: inside the ring"
        );
    }
    assert!(!has(20.0, 20.0, 6), "the hole's middle");
    assert!(!has(-20.0, 20.0, 6), "outside");
    // Every point of the area (not the hole) dirties its tiles.
    for i in 0..=80 {
        for j in 0..=80 {
            let (lon, lat) = (f64::from(i) * 0.5, f64::from(j) * 0.5);
            if (10.0..=30.0).contains(&lon) && (10.0..=30.0).contains(&lat) {
                continue;
            }
            for tile in tiles_holding(lon, lat, 6, margin) {
                assert!(found.contains(&tile), "{tile} holds ({lon}, {lat})");
            }
        }
    }
}

#[test]
fn only_wanted_zooms_are_reported_and_a_refusal_stops_the_descent() {
    let shape = Shape::from_wkb(&line(true, &[(-10.0, -10.0), (10.0, 10.0)]), true).unwrap();
    let ranges: Vec<TileRange> = (0..=8).map(|z| BBox::WORLD.tile_range(z)).collect();
    let mut zooms = BTreeSet::new();
    let descent = |wanted: &'static dyn Fn(u8) -> bool| Descent {
        max_zoom: 8,
        margin: 0.0,
        ranges: &ranges,
        wanted,
        fetched: &|_| true,
    };
    assert!(shape.tiles(&descent(&|z| z % 2 == 0), &mut |t| {
        zooms.insert(t.z());
        true
    }));
    assert_eq!(zooms.into_iter().collect::<Vec<_>>(), [0, 2, 4, 6, 8]);
    let mut seen = 0;
    assert!(!shape.tiles(&descent(&|_| true), &mut |_| {
        seen += 1;
        seen < 5
    }));
    assert_eq!(seen, 5);
}

/// A ring winding twice around a square: even-odd calls its inside outside, but `ST_AsMVTGeom`
/// may keep it once it makes the polygon valid, so an invalid polygon covers where a ring winds.
#[test]
fn an_invalid_polygon_covers_wherever_a_ring_winds() {
    let twice: &[(f64, f64)] = &[
        (0.0, 0.0),
        (20.0, 0.0),
        (20.0, 20.0),
        (0.0, 20.0),
        (0.0, 0.0),
        (20.0, 0.0),
        (20.0, 20.0),
        (0.0, 20.0),
        (0.0, 0.0),
    ];
    let middle = tiles_holding(10.0, 10.0, 6, 0.0);
    let valid = tiles_of(&Shape::from_wkb(&polygon(&[twice]), true).unwrap(), 6, 0.0);
    assert!(middle.iter().all(|t| !valid.contains(t)), "even-odd");
    let invalid = tiles_of(&Shape::from_wkb(&polygon(&[twice]), false).unwrap(), 6, 0.0);
    assert!(middle.iter().all(|t| invalid.contains(t)), "winding");
    // A bow tie's two halves wind opposite ways; both are covered.
    let bow_tie: &[(f64, f64)] = &[
        (0.0, 0.0),
        (20.0, 20.0),
        (20.0, 0.0),
        (0.0, 20.0),
        (0.0, 0.0),
    ];
    let invalid = tiles_of(
        &Shape::from_wkb(&polygon(&[bow_tie]), false).unwrap(),
        6,
        0.0,
    );
    for (lon, lat) in [(2.0, 10.0), (18.0, 10.0)] {
        let inside = tiles_holding(lon, lat, 6, 0.0);
        assert!(inside.iter().all(|t| invalid.contains(t)), "({lon}, {lat})");
    }
}
